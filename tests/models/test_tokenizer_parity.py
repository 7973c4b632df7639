"""Hearth's token ids equal llama.cpp's own tokenizer's (Gemma needs BOS = 2)."""

import pytest

from configs import load_settings
from models import get_card
from tests.support import LLM, MODELS_DIR, ensure_models

PROMPTS = ["Hello world", "  leading spaces", "Ünïcödé ✓ 123", "<start_of_turn>user\nhi",
           "line\n\nbreaks\ttabs"]


@pytest.fixture(scope="module")
def backend():
    from engine.backends.llamacpp import LlamaCppBackend

    ensure_models()
    settings = load_settings("test", env={"HEARTH_MODELS_DIR": str(MODELS_DIR)})
    b = LlamaCppBackend(settings, get_card(LLM))
    b.load()
    yield b
    b.close()


@pytest.fixture(scope="module")
def reference():
    from llama_cpp import Llama

    path = MODELS_DIR / get_card(LLM).file
    return Llama(model_path=str(path), vocab_only=True, verbose=False)


@pytest.mark.parametrize("text", PROMPTS)
def test_token_ids_match_llama_cpp(backend, reference, text):
    ours = backend.tokenize(text, add_bos=True, parse_special=True)
    theirs = reference.tokenize(text.encode(), add_bos=True, special=True)
    assert ours == theirs
    assert ours[0] == 2


def test_content_tokenized_without_special_tokens(backend):
    inert = backend.tokenize("<start_of_turn>", add_bos=False, parse_special=False)
    special = backend.tokenize("<start_of_turn>", add_bos=False, parse_special=True)
    assert len(special) == 1 and len(inert) > 1
