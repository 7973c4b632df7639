"""The backend contract: every backend behind ``engine.backends.base.Backend`` passes these.

Parametrized over backends by the ``started`` fixture (conftest.py): llama.cpp on the GGUF, vLLM
on the converted Hugging Face folder. Token-level only: text, chat templates and stop strings are
the engine's business, tested once above the backends.
"""

from __future__ import annotations

import itertools
import json
import math

import pytest

from engine.types import BackendRequest, FinishReason, SamplingParams

pytestmark = pytest.mark.slow

PROMPT = "The capital of France is"
_ids = itertools.count()


def submit(started, prompt: str = PROMPT, *, eos=None, constraint=None, **params):
    """Submit one sequence; returns its request id."""
    backend = started.backend
    rid = f"{started.name}-{next(_ids)}"
    tokens = backend.tokenize(prompt, add_bos=True, parse_special=True)
    eos = backend.eos_token_ids if eos is None else frozenset(eos)
    request = BackendRequest(rid, tokens, SamplingParams(**params), eos, constraint)
    backend.submit(request)
    return rid


def generate(started, prompt: str = PROMPT, **params):
    return started.sink.wait(submit(started, prompt, **params))


def greedy(started, n: int = 8, prompt: str = PROMPT):
    return generate(started, prompt, max_tokens=n, temperature=0.0, ignore_eos=True)


def test_facts(started):
    backend = started.backend
    assert backend.n_vocab == 262_144
    assert backend.bos_token_id == 2
    assert 1 in backend.eos_token_ids
    assert backend.max_model_len == 1024
    assert backend.is_stepping()


def test_tokenize_and_pieces(started):
    backend = started.backend
    ids = backend.tokenize("Hello world", add_bos=True, parse_special=True)
    assert ids[0] == 2
    assert b"".join(backend.token_bytes(t) for t in ids[1:]) == b"Hello world"
    assert backend.token_bytes(2) == b""  # control tokens add no text
    markup = backend.tokenize("<start_of_turn>", add_bos=False, parse_special=True)
    plain = backend.tokenize("<start_of_turn>", add_bos=False, parse_special=False)
    assert markup == [105]
    assert len(plain) > 1 and 105 not in plain


def test_greedy_is_deterministic_and_stops_at_max_tokens(started):
    first, second = greedy(started), greedy(started)
    assert len(first.tokens) == 8
    assert first.finish_reason == FinishReason.LENGTH
    assert all(t.finish_reason is None for t in first.tokens[:-1])
    assert first.token_ids == second.token_ids
    text = b"".join(started.backend.token_bytes(t) for t in first.token_ids).decode()
    assert "France" in text or "Paris" in text  # the base model continues on topic


def test_streams_tokens_over_several_steps(started):
    run = greedy(started, n=6)
    assert run.batches >= 2  # tokens arrive as they are decoded, not all at the end


def test_stop_token_ends_with_that_token(started):
    reference = greedy(started).token_ids
    stop = reference[2]
    run = generate(started, max_tokens=8, temperature=0.0, ignore_eos=True, stop_token_ids=(stop,))
    assert run.finish_reason == FinishReason.STOP
    assert run.token_ids == reference[: reference.index(stop) + 1]


def test_eos_ends_the_sequence_unless_ignored(started):
    bias = {1: 100.0}  # make EOS (token 1) the likeliest token
    run = generate(started, max_tokens=8, temperature=0.0, logit_bias=bias)
    assert run.finish_reason == FinishReason.STOP
    assert run.token_ids == [1]
    held = generate(started, max_tokens=8, temperature=0.0, logit_bias=bias, min_tokens=3)
    assert len(held.tokens) == 4 and held.token_ids[-1] == 1
    assert 1 not in held.token_ids[:3]
    ignored = generate(started, max_tokens=5, temperature=0.0, logit_bias=bias, ignore_eos=True)
    assert ignored.finish_reason == FinishReason.LENGTH
    assert len(ignored.tokens) == 5


def test_seed_reproduces_a_sampled_sequence(started):
    params = {"max_tokens": 12, "temperature": 1.0, "ignore_eos": True}
    a = generate(started, seed=1234, **params).token_ids
    b = generate(started, seed=1234, **params).token_ids
    others = [generate(started, seed=s, **params).token_ids for s in (1, 2, 3)]
    assert a == b
    assert any(o != a for o in others)


def test_concurrent_sequences_each_finish(started):
    # n choices reach a backend as n sequences submitted together, seeds seed + i.
    rids = [
        submit(started, max_tokens=10, temperature=1.0, seed=7 + i, ignore_eos=True)
        for i in range(3)
    ]
    runs = [started.sink.wait(r) for r in rids]
    assert all(len(r.tokens) == 10 for r in runs)
    assert all(r.finish_reason == FinishReason.LENGTH for r in runs)
    assert len({tuple(r.token_ids) for r in runs}) > 1


def test_logprobs_of_sampled_and_top_tokens(started):
    run = generate(started, max_tokens=4, temperature=0.0, ignore_eos=True, logprobs=3)
    for out in run.tokens:
        assert out.logprob is not None and out.logprob <= 0.0
        assert len(out.top_logprobs) == 3
        values = [t.logprob for t in out.top_logprobs]
        assert values == sorted(values, reverse=True)
        # Greedy: the sampled token is the most likely one.
        assert out.top_logprobs[0].token_id == out.token_id
        assert math.isclose(out.top_logprobs[0].logprob, out.logprob, abs_tol=1e-3)
        assert sum(math.exp(v) for v in values) <= 1.0 + 1e-3


def test_prompt_logprobs(started):
    prompt_len = len(started.backend.tokenize(PROMPT, add_bos=True, parse_special=True))
    run = generate(
        started, max_tokens=1, temperature=0.0, logprobs=2, prompt_logprobs=True, ignore_eos=True
    )
    lp = run.prompt_logprobs
    assert lp is not None
    assert len(lp.logprobs) == prompt_len
    assert lp.logprobs[0] is None
    assert all(v is not None and v <= 0.0 for v in lp.logprobs[1:])
    assert all(len(top) == 2 for top in lp.top_logprobs[1:])


def test_abort_ends_a_running_sequence(started):
    rid = submit(started, max_tokens=400, temperature=1.0, ignore_eos=True)
    run = started.sink.run(rid)
    for _ in range(600):  # wait for the first token (up to 60 s)
        if run.tokens or run.done.wait(0.1):
            break
    started.backend.abort(rid)
    run = started.sink.wait(rid)
    assert run.finish_reason == FinishReason.ABORT
    assert len(run.tokens) < 400
    started.backend.abort("no-such-request")  # unknown ids are ignored
    assert greedy(started, n=2).finish_reason == FinishReason.LENGTH  # still serving


SCHEMA = {
    "type": "object",
    # Bounded, so that it ends well within max_tokens on every backend.
    "properties": {"city": {"type": "string", "maxLength": 20}, "capital": {"type": "boolean"}},
    "required": ["city", "capital"],
    "additionalProperties": False,
}


def _json_constraint(backend, schema: dict):
    """The engine's own compiled constraint for ``schema`` (as Engine.generate builds it)."""
    from engine.grammar.binding import BoundFormat
    from engine.grammar.compiler import GrammarCompiler
    from engine.grammar.spec import StructuredSpec

    eos = frozenset(backend.eos_token_ids)
    compiler = GrammarCompiler(backend.grammar_tokenizer(), backend.n_vocab, eos)
    spec = StructuredSpec(kind="json_schema", param="response_format", schema=schema)
    bound = BoundFormat(compiler, compiler.compile_sync(spec))
    bound.budget = 64
    return bound.new_constraint()


def test_structured_output_follows_the_schema(started):
    backend = started.backend
    constraint = _json_constraint(backend, SCHEMA)
    run = started.sink.wait(
        submit(
            started,
            'A JSON object about Paris: {"city": ',
            constraint=constraint,
            max_tokens=64,
            temperature=0.0,
        )
    )
    text = b"".join(backend.token_bytes(t) for t in run.token_ids).decode()
    assert run.finish_reason == FinishReason.STOP, text
    value = json.loads(text)
    assert set(value) == {"city", "capital"}
    assert isinstance(value["city"], str) and isinstance(value["capital"], bool)
    assert constraint.is_accepting  # the engine's view of the grammar saw every token


def test_prefix_cache_is_reused_only_within_one_salt(started):
    """Tenants never share KV: a cached prompt is reused for its own salt, not another's."""
    if started.name != "llamacpp":
        pytest.skip("prefix hit counts are the llama.cpp backend's")
    backend = started.backend
    tokens = backend.tokenize(
        "A long shared system prompt. " * 16, add_bos=True, parse_special=True
    )

    def run(salt: str) -> int:
        rid = f"salt-{next(_ids)}"
        params = SamplingParams(max_tokens=1, temperature=0.0)
        backend.submit(BackendRequest(rid, tokens, params, backend.eos_token_ids, cache_salt=salt))
        started.sink.wait(rid)
        return backend.stats().prefix_hit_tokens

    first = run("ten_a")
    assert run("ten_b") == first  # the same prompt of another tenant: no reuse
    assert run("ten_a") > first  # the same tenant again: its prefix is reused
