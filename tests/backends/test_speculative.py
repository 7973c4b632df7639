"""Prompt-lookup speculative decoding in the llama.cpp backend: drafted spans are verified and
accepted, greedy output of a copying prompt equals plain decoding, and drafted tokens never
escape a JSON-schema grammar.

Not asserted: token identity for every prompt and seeded sampling. The verifying rows run in a
multi-row batch of one sequence, whose logits differ from a one-row decode by floating-point
rounding (measured up to ~0.05 nats on this build), so near-ties and sampled draws can diverge
(docs/benchmarks.md). That is why ``draft_tokens`` is off by default."""

from __future__ import annotations

import dataclasses
import itertools
import json

import pytest

from engine.types import BackendRequest, SamplingParams
from models.cards import get_card
from models.store import ModelFileError, verify_model

from .conftest import MODELS_DIR, Collector, _settings
from .test_contract import SCHEMA, _json_constraint

pytestmark = pytest.mark.slow

MODEL = "gemma-3-270m-q4km"
TEXT = (
    "Hearth keeps every document in one DuckDB file. The ingestion job splits each document "
    "into passages of about 300 tokens, embeds them with MiniLM and writes them to a FAISS "
    "index, while BM25 keeps the words. A query runs both searches and fuses the ranks."
)
PROMPTS = [
    f"Repeat the following text exactly.\n\n{TEXT}\n\nRepeated text:\n",
    f"Context:\n{TEXT}\n\nQuote the sentence about FAISS from the context.\nQuote:",
    f"{TEXT}\n\nSummary of the text above in one sentence:",
    "Count: one, two, three, four, five, six, seven, eight, nine, ten, one, two, three,",
    "def add(a, b):\n    return a + b\n\n\ndef add(a, b):\n",
    "The capital of France is",
]
_ids = itertools.count()


def _backend(draft_tokens: int):
    pytest.importorskip("llama_cpp")
    card = get_card(MODEL)
    try:
        verify_model(card, MODELS_DIR)
    except ModelFileError as exc:
        pytest.skip(f"model not installed: {exc}")
    from engine.backends.base import create_backend

    settings = _settings("llamacpp", MODEL)
    llm = dataclasses.replace(settings.llm, draft_tokens=draft_tokens)
    settings = dataclasses.replace(settings, llm=llm, model_dir=MODELS_DIR)
    backend = create_backend(settings, card)
    sink = Collector()
    backend.start(sink)
    return backend, sink


@pytest.fixture(scope="module")
def pair():
    plain, plain_sink = _backend(0)
    spec, spec_sink = _backend(8)
    try:
        yield (plain, plain_sink), (spec, spec_sink)
    finally:
        plain.close()
        spec.close()


def _run_all(backend, sink, cases) -> list[list[int]]:
    """Submit every case at once (one continuous batch) and return each one's tokens."""
    rids = []
    for prompt, params, schema in cases:
        rid = f"spec-{next(_ids)}"
        tokens = backend.tokenize(prompt, add_bos=True, parse_special=True)
        constraint = _json_constraint(backend, schema) if schema else None
        backend.submit(
            BackendRequest(rid, tokens, params, backend.eos_token_ids, constraint)
        )
        rids.append(rid)
    return [sink.wait(rid).token_ids for rid in rids]


def test_drafting_copies_spans_and_keeps_greedy_tokens(pair):
    (plain, plain_sink), (spec, spec_sink) = pair
    greedy = SamplingParams(max_tokens=32, temperature=0.0)
    case = [(PROMPTS[0], greedy, None)]
    before = spec.stats()
    got = _run_all(spec, spec_sink, case)[0]
    after = spec.stats()
    assert got == _run_all(plain, plain_sink, case)[0]
    assert after.draft_tokens > before.draft_tokens
    assert after.draft_accepted > before.draft_accepted  # drafting did skip steps


def test_drafted_tokens_obey_the_grammar(pair):
    (_plain, _), (spec, spec_sink) = pair
    before = spec.stats()
    prompt = 'Paris is the capital of France. As JSON: {"city": "Paris", "capital": true}\nAgain:'
    cases = [
        (prompt, SamplingParams(max_tokens=40, temperature=0.0), SCHEMA),
        (prompt, SamplingParams(max_tokens=40, temperature=0.8, seed=3), SCHEMA),
    ]
    for tokens in _run_all(spec, spec_sink, cases):
        value = json.loads(b"".join(spec.token_bytes(t) for t in tokens).decode())
        assert set(value) == {"city", "capital"} and isinstance(value["capital"], bool)
    assert spec.stats().draft_tokens > before.draft_tokens
