"""Compilation, cache, constraint and outcome against Gemma's real 262,144-token vocabulary.

Sequences are sampled from random logits through the real mask: whatever the "model" prefers, a
``stop`` outcome must validate. Needs the GGUF file (vocabulary only is loaded).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time

import jsonschema
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import InvalidRequestError, UnprocessableError
from engine.grammar import GrammarCompiler, build_spec, finalize
from engine.grammar.compiler import CompiledGrammar
from engine.types import FinishReason
from tests.docfixtures import models_dir

GGUF = "gemma-3-270m-q4km/gemma-3-270m-Q4_K_M.gguf"
EOS = frozenset({1, 106, 212})
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3},
    },
    "required": ["name", "age", "tags"],
    "additionalProperties": False,
}
# Sixty patterned strings: a real lexer, cheap enough for the default limits.
BIG = {
    "type": "object",
    "properties": {
        f"p{i}": {"type": "string", "pattern": f"^[a-z]{{{i},{i + 40}}}[0-9]+$"} for i in range(60)
    },
}


@pytest.fixture(scope="module")
def compiler() -> GrammarCompiler:
    path = models_dir() / GGUF
    if not path.exists():
        pytest.skip(f"model file missing: {path} (run: python -m server install-models)")
    return GrammarCompiler.from_gguf(path, EOS)


def _json_spec(schema: object, **extra: object):
    return build_spec(
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "s", "schema": schema, **extra},
        }
    )


def _generate(compiler, compiled, con, tokens: list[int], budget: int, next_logits):
    """Greedy over ``next_logits()`` through the real mask until end or ``budget`` tokens;
    returns (text, outcome)."""
    reason = FinishReason.LENGTH
    while len(tokens) < budget:
        logits = next_logits()
        con.prepare()
        con.mask_logits(logits)
        tok = int(np.argmax(logits))
        assert np.isfinite(logits[tok])
        if tok in EOS:
            reason = FinishReason.STOP
            break
        tokens.append(tok)
        con.advance(tok)
        if con.is_complete():
            reason = FinishReason.STOP
            break
    text = compiler.tokenizer.decode_str(tokens)
    return text, finalize(compiled, con, text, reason)


def sample(compiler: GrammarCompiler, compiled: CompiledGrammar, budget: int, seed: int):
    """Random-logit generation through the real mask; returns (text, outcome)."""
    rng = np.random.default_rng(seed)
    con = compiler.constraint(compiled, budget)
    return _generate(
        compiler,
        compiled,
        con,
        [],
        budget,
        lambda: rng.standard_normal(compiler.n_vocab).astype(np.float32),
    )


def test_json_schema_outputs_validate(compiler: GrammarCompiler) -> None:
    compiled = compiler.compile_sync(_json_spec(PERSON))
    for seed in range(3):
        text, outcome = sample(compiler, compiled, 96, seed)
        assert outcome.finish_reason == FinishReason.STOP, text
        jsonschema.validate(json.loads(text), PERSON)
        assert outcome.report.valid and "maxLength" in outcome.report.enforced_by_grammar
        assert " " not in text.replace(json.loads(text)["name"], "")  # no whitespace padding


@pytest.mark.parametrize(
    ("field", "check"),
    [
        (
            {"regex": r"[0-9]{3}-[a-z]{2,4}"},
            lambda t: re.fullmatch(r"[0-9]{3}-[a-z]{2,4}", t) is not None,
        ),
        ({"choice": ["red", "green", 'say "x"']}, lambda t: t in ("red", "green", 'say "x"')),
        ({"grammar": 'root ::= "n=" [0-9] [0-9]?'}, lambda t: re.fullmatch(r"n=\d\d?", t)),
        ({"grammar": 'start: "v" NUM\nNUM: /[1-9]/'}, lambda t: re.fullmatch(r"v[1-9]", t)),
        ({"json_object": True}, lambda t: isinstance(json.loads(t), dict)),
    ],
)
def test_extras_constrain_output(compiler: GrammarCompiler, field: dict, check) -> None:
    compiled = compiler.compile_sync(build_spec(structured_outputs=field))
    text, outcome = sample(compiler, compiled, 64, 1)
    assert outcome.finish_reason == FinishReason.STOP and check(text), text


@pytest.mark.parametrize(
    ("field", "code"),
    [
        ({"regex": "(unclosed"}, "invalid_regex"),
        ({"grammar": "start: undefined_rule"}, "invalid_grammar"),
        ({"grammar": 'root ::= "a" ('}, "invalid_grammar"),
    ],
)
def test_bad_regex_and_grammar_are_400(compiler: GrammarCompiler, field: dict, code: str) -> None:
    with pytest.raises(InvalidRequestError) as exc:
        compiler.compile_sync(build_spec(structured_outputs=field))
    assert exc.value.code == code and exc.value.param.startswith("structured_outputs")


def test_schema_beyond_limits_is_422(compiler: GrammarCompiler) -> None:
    tight = GrammarCompiler(
        compiler.tokenizer,
        compiler.n_vocab,
        EOS,
        limits={"max_grammar_size": 50, "verbose_errors": False},
    )
    with pytest.raises(UnprocessableError) as exc:
        tight.compile_sync(_json_spec(BIG))
    assert "schema too complex" in exc.value.message and exc.value.status == 422


def test_compile_timeout_is_422_and_loop_stays_responsive(compiler: GrammarCompiler) -> None:
    slow = GrammarCompiler(compiler.tokenizer, compiler.n_vocab, EOS, timeout_s=1e-4)

    async def run() -> int:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        with pytest.raises(UnprocessableError) as exc:
            await slow.compile(_json_spec(BIG))
        task.cancel()
        assert exc.value.code == "schema_too_complex"
        return ticks

    assert asyncio.run(run()) > 0


def test_a_compile_past_its_deadline_is_killed_not_abandoned(
    compiler: GrammarCompiler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tenant-controlled work runs in a child process that the deadline kills: none of it
    runs on a thread of the server, which a timeout could only stop waiting for."""
    spins: list[int] = []
    main_pid = os.getpid()

    def pathological(self: GrammarCompiler, spec: object) -> None:
        stop = time.monotonic() + 10
        while time.monotonic() < stop:
            if os.getpid() == main_pid:
                spins.append(1)  # would mean the work runs in the server's process
        raise AssertionError("not killed")

    monkeypatch.setattr(GrammarCompiler, "_grammar_text", pathological)
    slow = GrammarCompiler(compiler.tokenizer, compiler.n_vocab, EOS, timeout_s=0.5)
    with pytest.raises(UnprocessableError) as exc:
        asyncio.run(slow.compile(_json_spec(PERSON)))
    assert exc.value.code == "schema_too_complex" and "longer than 0.5 s" in exc.value.message
    time.sleep(0.2)
    assert not spins
    slow.close()


def test_a_compile_past_its_memory_budget_is_422(compiler: GrammarCompiler, monkeypatch) -> None:
    def greedy(self: GrammarCompiler, spec: object) -> None:
        bytearray(1 << 30)

    monkeypatch.setattr(GrammarCompiler, "_grammar_text", greedy)
    small = GrammarCompiler(compiler.tokenizer, compiler.n_vocab, EOS, memory_bytes=128 << 20)
    with pytest.raises(UnprocessableError) as exc:
        asyncio.run(small.compile(_json_spec(PERSON)))
    assert exc.value.code == "schema_too_complex" and "128 MiB" in exc.value.message


def test_cache_hits_single_flight_and_byte_bound(compiler: GrammarCompiler) -> None:
    local = GrammarCompiler(compiler.tokenizer, compiler.n_vocab, EOS)
    spec = _json_spec(PERSON)

    async def many() -> list[CompiledGrammar]:
        return await asyncio.gather(*(local.compile(spec) for _ in range(8)))

    results = asyncio.run(many())
    assert local.compiles == 1 and all(r is results[0] for r in results)
    asyncio.run(local.compile(_json_spec(PERSON)))
    assert local.compiles == 1
    small = GrammarCompiler(
        compiler.tokenizer, compiler.n_vocab, EOS, cache_bytes=results[0].nbytes * 2 + 1
    )
    for n in range(5):
        asyncio.run(small.compile(build_spec(structured_outputs={"regex": f"[a-z]{{{n + 1}}}"})))
    info = small.cache_info()
    assert info["bytes"] <= info["limit"] and info["entries"] < 5


def test_budget_aware_closing(compiler: GrammarCompiler) -> None:
    compiled = compiler.compile_sync(_json_spec(PERSON))
    for seed in range(3):
        text, outcome = sample(compiler, compiled, 24, seed)
        assert outcome.finish_reason == FinishReason.STOP, text
        jsonschema.validate(json.loads(text), PERSON)
    text, outcome = sample(compiler, compiled, 4, 0)
    assert outcome.finish_reason == FinishReason.LENGTH
    assert outcome.report.error == "truncated" and outcome.report.valid is False


def drive(
    compiler: GrammarCompiler, compiled: CompiledGrammar, prefix: str, favourite: str, budget: int
):
    """A "model" that wrote ``prefix`` and then always prefers the token of ``favourite`` (as a
    looping model does); returns (text, outcome)."""
    con = compiler.constraint(compiled, budget)
    tokens = compiler.tokenizer.tokenize_str(prefix)
    for tok in tokens:
        con.prepare()
        con.advance(tok)
    (fav,) = compiler.tokenizer.tokenize_str(favourite)

    def favour() -> np.ndarray:
        logits = np.zeros(compiler.n_vocab, dtype=np.float32)
        logits[fav] = 10.0
        return logits

    return _generate(compiler, compiled, con, tokens, budget, favour)


@pytest.mark.parametrize(
    ("schema", "prefix", "favourite"),
    [
        # An e-mail still in its local part: closing needs an "@" and a domain first.
        ({"type": "string", "format": "email"}, '"projects/98-02', "x"),
        # A pattern with literal parts after a looping class.
        ({"type": "string", "pattern": "^[a-z]+:[0-9]+/v[0-9]$"}, '"abc', "x"),
        # A number followed by required properties.
        (
            {
                "type": "object",
                "properties": {"a": {"type": "number"}, "b": {"type": "string"}},
                "required": ["a", "b"],
            },
            '{"a":1',
            "0",
        ),
    ],
)
def test_closing_writes_required_text_before_the_budget_ends(
    compiler: GrammarCompiler, schema: dict, prefix: str, favourite: str
) -> None:
    compiled = compiler.compile_sync(_json_spec(schema))
    text, outcome = drive(compiler, compiled, prefix, favourite, 40)
    assert outcome.finish_reason == FinishReason.STOP, text
    jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    ).validate(json.loads(text))


def test_closing_completes_a_begun_key_to_the_required_property(
    compiler: GrammarCompiler,
) -> None:
    """``{"kind`` could become the optional ``kindStamp`` (an unanchored pattern: any text, the
    search used to loop inside it) or the required ``kindType``: the search finishes the key as
    the schema's word."""
    schema = {
        "type": "object",
        "properties": {
            "kindStamp": {"type": "string", "pattern": "[0-9]{4}Z"},
            "kindType": {"enum": ["bonus", "charge"]},
        },
        "required": ["kindType"],
        "additionalProperties": False,
    }
    con = compiler.constraint(compiler.compile_sync(_json_spec(schema)), 100)
    prefix = '{"kind'
    assert con.matcher.consume_tokens(compiler.tokenizer.tokenize_str(prefix))
    path = con.closing.find(con.matcher, 30, True, False, explore=False, tail=prefix.encode())
    assert path is not None
    text = prefix + compiler.tokenizer.decode_str(path)
    assert json.loads(text) in ({"kindType": "bonus"}, {"kindType": "charge"}), text


def test_closing_writes_the_required_keys_a_generic_search_cannot_guess(
    compiler: GrammarCompiler,
) -> None:
    """Open objects (extra keys allowed) with a chain of required objects and enum values: the
    closing needs the schema's own words (a generic search writes anonymous keys forever)."""
    parts = ["populate", "evaluate", "crossover", "mutator", "selectPolicy", "indelPolicy"]
    schema = {
        "type": "object",
        "properties": {
            p: {
                "type": "object",
                "properties": {"class": {"enum": [f"{p}Fast", f"{p}Slow"]}},
                "required": ["class"],
            }
            for p in parts
        },
        "required": parts,
    }
    compiled = compiler.compile_sync(_json_spec(schema))
    prefix = '{"populate":{"class":"populateFast","id":"1'
    text, outcome = drive(compiler, compiled, prefix, "1", 120)
    assert outcome.finish_reason == FinishReason.STOP, text
    jsonschema.validate(json.loads(text), schema)


def test_closing_finishes_a_string_under_a_pattern_the_model_filled_with_text(
    compiler: GrammarCompiler,
) -> None:
    """Inside a pattern the model filled with unrelated text, every state allows the same
    characters, so only a match of the pattern (appended) can end the string."""
    schema = {
        "type": "object",
        "properties": {
            "cidr": {
                "type": "string",
                "pattern": "^([0-9]{1,3}\\.){3}[0-9]{1,3}/[0-9]+|0\\.0\\.0\\.0/0$",
            },
            "id": {"type": "string", "pattern": "^[a-z][a-z0-9-]+$"},
        },
        "required": ["cidr", "id"],
    }
    compiled = compiler.compile_sync(_json_spec(schema))
    text, outcome = drive(compiler, compiled, '{"cidr":"http://example.org/x', "x", 60)
    assert outcome.finish_reason == FinishReason.STOP, text
    jsonschema.validate(json.loads(text), schema)


@pytest.mark.parametrize(
    "pattern",
    [
        "^\\d{10}$",
        "^SBI-[0-9]{8}-[a-z|A-Z]+-.*$",
        "[0-9]{1,4}.[0-9]{1,4}.[0-9]{1,4}",
        "^(a|bc)+x?[^q]{2}$",
        "^(([0-9]|[1-9][0-9])\\.){3}([0-9]|[1-9][0-9])(/(\\d|[1-2]\\d))|0\\.0\\.0\\.0\\/0$",
        "\\s\\w\\W(?:ab){2,3}",
    ],
)
def test_shortest_matches_match(pattern: str) -> None:
    from engine.grammar.constraint import shortest_matches

    found = shortest_matches(pattern)
    assert found
    for text in found:
        assert re.search(pattern, text), (pattern, text)


def test_discriminating_if_then_pairs_are_enforced_by_the_grammar(
    compiler: GrammarCompiler,
) -> None:
    """``allOf`` of ``if {kind: const} then {...}`` pairs (a discriminator) is enforced while
    generating, not only validated afterwards: sampled outputs never fail validation."""
    schema = {
        "type": "object",
        "properties": {
            "kind": {"enum": ["a", "b"]},
            "x": {"type": "integer"},
            "y": {"type": "string", "maxLength": 3},
        },
        "required": ["kind"],
        "allOf": [
            {"if": {"properties": {"kind": {"const": "a"}}}, "then": {"required": ["x"]}},
            {"if": {"properties": {"kind": {"const": "b"}}}, "then": {"required": ["y"]}},
        ],
    }
    compiled = compiler.compile_sync(_json_spec(schema))

    def accepts(text: str) -> bool:
        m = compiler.constraint(compiled, None).matcher
        return m.consume_tokens(compiler.tokenizer.tokenize_str(text)) and m.is_accepting()

    assert accepts('{"kind":"a","x":1}') and accepts('{"kind":"b","y":"q"}')
    assert not accepts('{"kind":"a"}') and not accepts('{"kind":"b","x":1}')
    for seed in range(6):
        text, outcome = sample(compiler, compiled, 40, seed)
        assert outcome.finish_reason == FinishReason.STOP, text
        jsonschema.validate(json.loads(text), schema)


def test_keyword_validated_after_generation_fails_closed(compiler: GrammarCompiler) -> None:
    schema = {"type": "array", "items": {"type": "integer"}, "uniqueItems": True}
    compiled = compiler.compile_sync(_json_spec(schema))
    assert compiled.analysis is not None
    assert compiled.analysis.validated_after_generation == ("uniqueItems",)
    for text, want in (("[1,2]", FinishReason.STOP), ("[1,1]", FinishReason.CONTENT_FILTER)):
        con = compiler.constraint(compiled, 32)
        for tok in compiler.tokenizer.tokenize_str(text):
            con.advance(tok)
        outcome = finalize(compiled, con, text, FinishReason.STOP)
        assert outcome.finish_reason == want
        assert outcome.report.valid is (want == FinishReason.STOP)


def test_tool_calls_are_constrained_and_parsed(compiler: GrammarCompiler) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "add",
                "parameters": {
                    "type": "object",
                    "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
                    "required": ["x", "y"],
                    "additionalProperties": False,
                },
            },
        }
    ]
    for choice in ("required", {"type": "function", "function": {"name": "add"}}):
        compiled = compiler.compile_sync(build_spec(tools=tools, tool_choice=choice))
        text, outcome = sample(compiler, compiled, 64, 3)
        assert outcome.finish_reason == FinishReason.TOOL_CALLS, text
        assert outcome.tool_calls and outcome.tool_calls[0].name == "add"
        assert set(json.loads(outcome.tool_calls[0].arguments)) == {"x", "y"}


def test_mask_is_fast_enough_to_overlap_decode(compiler: GrammarCompiler) -> None:
    """Records the per-token mask cost (no threshold: the machine is shared)."""
    compiled = compiler.compile_sync(_json_spec(PERSON))
    con = compiler.constraint(compiled, 64)
    t0 = time.perf_counter()
    con.prepare()
    assert con.mask_times and time.perf_counter() - t0 >= con.mask_times[0]


# ---- property: any schema, any logits → a stop outcome validates ------------------------------

_leaf = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("string")},
        optional={"maxLength": st.integers(0, 8), "minLength": st.integers(0, 3)},
    ),
    st.fixed_dictionaries(
        {"type": st.just("integer")},
        optional={"minimum": st.integers(-5, 5), "maximum": st.integers(6, 99)},
    ),
    st.fixed_dictionaries(
        {"type": st.just("number")}, optional={"exclusiveMinimum": st.integers(-5, 0)}
    ),
    st.just({"type": "boolean"}),
    st.just({"type": "null"}),
    st.lists(st.text("abc", min_size=1, max_size=3), min_size=1, max_size=3, unique=True).map(
        lambda xs: {"enum": xs}
    ),
)
_schema = st.recursive(
    _leaf,
    lambda inner: st.one_of(
        st.builds(
            lambda items, n: {"type": "array", "items": items, "maxItems": n},
            inner,
            st.integers(0, 3),
        ),
        st.dictionaries(
            st.sampled_from(["a", "b", "c", "d"]), inner, min_size=1, max_size=3
        ).flatmap(
            lambda props: st.builds(
                lambda req, extra: {
                    "type": "object",
                    "properties": props,
                    "required": sorted(req),
                    "additionalProperties": extra,
                },
                st.sets(st.sampled_from(sorted(props))),
                st.just(False),
            )
        ),
    ),
    max_leaves=6,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema=_schema, seed=st.integers(0, 2**16), budget=st.integers(8, 80))
def test_property_stop_outputs_validate(
    compiler: GrammarCompiler, schema: dict, seed: int, budget: int
) -> None:
    try:
        compiled = compiler.compile_sync(_json_spec(schema))
    except InvalidRequestError as exc:  # unsatisfiable schemas (minLength > maxLength) are 400
        assert "Unsatisfiable" in exc.message
        return
    text, outcome = sample(compiler, compiled, budget, seed)
    if outcome.finish_reason == FinishReason.STOP:
        jsonschema.Draft202012Validator(
            schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
        ).validate(json.loads(text))
    else:
        assert outcome.finish_reason == FinishReason.LENGTH and outcome.report.error == "truncated"


def test_free_text_under_auto_stays_length_when_cut(compiler: GrammarCompiler) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    compiled = compiler.compile_sync(build_spec(tools=tools, tool_choice="auto"))
    con = compiler.constraint(compiled, 4)
    assert con.closing is None  # free text is never closed early
    text = "Hello there"
    for tok in compiler.tokenizer.tokenize_str(text):
        con.prepare()
        con.advance(tok)
    outcome = finalize(compiled, con, text, FinishReason.LENGTH)
    assert outcome.finish_reason == FinishReason.LENGTH and outcome.content == text
    done = finalize(compiled, con, text, FinishReason.STOP)
    assert done.finish_reason == FinishReason.STOP and not done.tool_calls
