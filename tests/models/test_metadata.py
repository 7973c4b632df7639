"""models.metadata: what a GGUF file, a Hugging Face folder and a sentence-transformers folder say
about themselves, read without loading weights; anything else is a clear NotAModelError."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.metadata import NotAModelError, read_metadata
from tests.models.ggufs import TEMPLATE, write_gguf
from tests.support import MODELS_DIR


def test_gguf_header(tmp_path: Path) -> None:
    meta = read_metadata(write_gguf(tmp_path / "tiny model.gguf"))
    assert meta.format == "gguf" and meta.architecture == "llama" and meta.name == "Tiny Test"
    assert meta.context_length == 4096 and meta.quantization == "Q4_K_M"
    assert meta.chat_template == TEMPLATE
    assert (meta.bos_token, meta.eos_token, meta.end_of_turn_tokens) == (
        "<s>",
        "</s>",
        ("<|eot_id|>",),
    )
    assert meta.stop_tokens == ("</s>", "<|eot_id|>") and meta.add_bos_token
    assert meta.capabilities == ("completion", "chat")
    assert meta.size_bytes == (tmp_path / "tiny model.gguf").stat().st_size


def test_real_ggufs() -> None:
    from models import get_card, install_model

    smol = read_metadata(install_model(get_card("smollm2-135m-instruct"), MODELS_DIR))
    assert (smol.architecture, smol.context_length, smol.quantization) == ("llama", 8192, "Q4_1")
    assert smol.chat_template and "<|im_start|>" in smol.chat_template
    assert smol.stop_tokens == ("<|im_end|>",) and not smol.add_bos_token
    gemma = read_metadata(install_model(get_card("gemma-3-270m-q4km"), MODELS_DIR))
    assert (gemma.architecture, gemma.quantization, gemma.chat_template) == (
        "gemma3",
        "Q4_K_M",
        None,
    )
    assert gemma.bos_token == "<bos>" and gemma.add_bos_token


def test_hf_folder(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "architectures": ["Qwen2ForCausalLM"],
                "max_position_embeddings": 32768,
                "torch_dtype": "bfloat16",
            }
        )
    )
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "chat_template": "{{ messages }}",
                "eos_token": {"content": "<|im_end|>"},
                "bos_token": None,
            }
        )
    )
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 16)
    meta = read_metadata(tmp_path)
    assert (meta.format, meta.architecture, meta.context_length) == (
        "hf",
        "Qwen2ForCausalLM",
        32768,
    )
    assert meta.chat_template == "{{ messages }}" and meta.eos_token == "<|im_end|>"
    assert meta.weights_file == "model.safetensors" and meta.quantization == "bfloat16"


def test_sentence_transformers_folder_has_its_dimension() -> None:
    from models import get_card, install_model

    meta = read_metadata(install_model(get_card("all-minilm-l6-v2"), MODELS_DIR))
    assert meta.format == "sentence-transformers" and meta.embedding_dim == 384
    assert meta.capabilities == ("embedding",) and meta.context_length == 256


def test_not_models(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("GGUX hello")
    with pytest.raises(NotAModelError, match="is not a GGUF file"):
        read_metadata(text)
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotAModelError, match="needs config.json and weights"):
        read_metadata(tmp_path / "empty")
    good = write_gguf(tmp_path / "good.gguf")
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(good.read_bytes()[:200])
    with pytest.raises(NotAModelError, match="truncated or corrupt"):
        read_metadata(cut)
    with pytest.raises(NotAModelError, match="does not exist"):
        read_metadata(tmp_path / "missing.gguf")
