"""Compiles a ``StructuredSpec`` into an llguidance grammar, under a time and memory budget.

Compilation is attacker-controlled work, so:
- llguidance's own limits (``LLParserLimits``: lexer states ~1-2 kB each, grammar size, fuel per
  step) bound memory and per-token work; exceeding them is a 422 "schema too complex";
- ``compile`` first runs the untrusted part (schema checks, grammar text, the matcher and its first
  mask) in a forked child process (``engine.sandbox``) limited to ``timeout_s`` and ``memory_bytes``
  on top of the server's memory: a child past either is killed and the request is a 422, so no
  abandoned thread keeps computing and no schema can take the server's memory. Only a spec that
  compiled within bounds there is built again in the server, on a small thread pool (llguidance
  drops the GIL), for the matcher the sequences use;
- results are kept in a byte-bounded LRU keyed by the spec's hash, and concurrent requests with the
  same spec share one compilation (single flight).
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import llguidance
from llguidance.gbnf_to_lark import any_to_lark

from engine.errors import InvalidRequestError, UnprocessableError
from engine.grammar.constraint import ClosingSearch, ClosingTables, ClosingWords, GrammarConstraint
from engine.grammar.schema_check import SchemaAnalysis, check_schema, grammar_schema
from engine.grammar.spec import StructuredSpec
from engine.grammar.tools import JSON_OPTIONS, tools_lark
from engine.sandbox import Budget, DeadlineExceeded, Sandbox, SandboxError

logger = logging.getLogger(__name__)

DEFAULT_LIMITS = {
    "max_lexer_states": 50_000,  # ~100 MB at worst
    "max_grammar_size": 200_000,
    "initial_lexer_fuel": 2_000_000,
    "step_lexer_fuel": 200_000,
    "step_max_items": 50_000,
    "verbose_errors": False,
}
_LIMIT_WORDS = ("limit", "fuel", "too many", "too large", "too big", "exceeded", "max_")


@dataclass
class CompiledGrammar:
    """A compiled spec; ``template`` stays in its initial state (copies serve sequences)."""

    spec: StructuredSpec
    grammar: str
    template: llguidance.LLMatcher
    analysis: SchemaAnalysis | None
    tool_analyses: tuple[SchemaAnalysis, ...] = ()
    compile_s: float = 0.0
    nbytes: int = field(default=0)
    # The schema's words as token ids, for the budget-aware closing search.
    words: ClosingWords = field(default_factory=ClosingWords)


class GrammarCompiler:
    """Owns the llguidance tokenizer, the compile pool and the cache. One per engine."""

    def __init__(
        self,
        tokenizer: llguidance.LLTokenizer,
        n_vocab: int,
        eos: frozenset[int],
        *,
        cache_bytes: int = 64 << 20,
        timeout_s: float = 5.0,
        memory_bytes: int = 1 << 30,
        workers: int = 2,
        limits: dict[str, Any] | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.n_vocab = n_vocab
        self.eos = eos
        self.timeout_s = timeout_s
        self.limits = llguidance.LLParserLimits(**(limits or DEFAULT_LIMITS))
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[str, CompiledGrammar] = OrderedDict()
        self._cached_bytes = 0
        self._inflight: dict[str, asyncio.Future[CompiledGrammar]] = {}
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grammar")
        self._sandbox = Sandbox(Budget(timeout_s, memory_bytes), "grammar compilation")
        # Token tables of the budget-aware closing search, shared by every constraint.
        self._closing = ClosingTables.build(tokenizer, eos, (n_vocab + 31) // 32)
        self.compiles = 0  # compilations actually run (cache misses), for tests and metrics

    # ---- construction --------------------------------------------------------------------
    @classmethod
    def from_vocab(cls, vocab: Any, eos: frozenset[int], **kw: Any) -> GrammarCompiler:
        """From a llama.cpp ``llama_vocab_p`` (building the tokenizer takes ~1-3 s)."""
        import llama_cpp
        from llguidance.llamacpp import lltokenizer_from_vocab

        n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
        tok = lltokenizer_from_vocab(vocab, eos_token=sorted(eos))
        return cls(tok, n_vocab, eos, **kw)

    @classmethod
    def from_gguf(cls, path: Path, eos: frozenset[int], **kw: Any) -> GrammarCompiler:
        """Loads only the vocabulary of a GGUF model file (no weights)."""
        import llama_cpp

        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        if not model:
            raise FileNotFoundError(f"cannot load vocabulary from {path}")
        compiler = cls.from_vocab(llama_cpp.llama_model_get_vocab(model), eos, **kw)
        compiler._model = model  # keeps the vocab alive as long as the compiler
        return compiler

    def close(self) -> None:
        self._sandbox.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ---- public API ----------------------------------------------------------------------
    async def compile(self, spec: StructuredSpec) -> CompiledGrammar:
        """The compiled grammar for ``spec``; 400 on bad input, 422 when too complex or slow."""
        key = spec.key
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        pending = self._inflight.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._compile_once(key, spec))
            self._inflight[key] = pending
            pending.add_done_callback(lambda _f: self._inflight.pop(key, None))
        return await asyncio.shield(pending)

    def compile_sync(self, spec: StructuredSpec) -> CompiledGrammar:
        """Blocking compile with no cache and no timeout (benchmarks, tests)."""
        return self._build(spec)

    def constraint(
        self, compiled: CompiledGrammar, max_new_tokens: int | None
    ) -> GrammarConstraint:
        """A fresh per-sequence constraint (one per choice)."""
        spec = compiled.spec
        free_text = spec.kind == "tools" and spec.tool_choice == "auto" and spec.schema is None
        # Free text (tool_choice auto) is not closed early: a cut answer stays "length".
        closing = None if free_text else ClosingSearch(self._closing, compiled.words)
        return GrammarConstraint(
            compiled.template.deep_copy(), self.n_vocab, self.eos, closing, max_new_tokens
        )

    def cache_info(self) -> dict[str, int]:
        return {"entries": len(self._cache), "bytes": self._cached_bytes, "limit": self.cache_bytes}

    # ---- internals -----------------------------------------------------------------------
    async def _compile_once(self, key: str, spec: StructuredSpec) -> CompiledGrammar:
        try:
            checked = await self._sandbox.run(self._checked_text, spec)
        except DeadlineExceeded:
            raise self._too_slow(spec) from None
        except SandboxError as exc:
            raise self._too_complex(spec, str(exc)) from None
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(self._pool, self._build, spec, checked)
        try:
            compiled = await asyncio.wait_for(work, self.timeout_s)
        except TimeoutError:
            raise self._too_slow(spec) from None
        self._store(key, compiled)
        return compiled

    def _checked_text(self, spec: StructuredSpec) -> tuple[str, SchemaAnalysis | None, tuple]:
        """The grammar text, after the matcher and its first mask were built from it (in the
        sandboxed child: this is the part whose cost the tenant controls)."""
        grammar, analysis, tool_analyses = self._grammar_text(spec)
        self._probe(self._matcher(grammar, spec), spec)
        return grammar, analysis, tool_analyses

    def _too_slow(self, spec: StructuredSpec) -> UnprocessableError:
        return UnprocessableError(
            f"schema too complex: compiling took longer than {self.timeout_s:g} s",
            param=spec.param,
            code="schema_too_complex",
        )

    def _store(self, key: str, compiled: CompiledGrammar) -> None:
        if compiled.nbytes > self.cache_bytes:
            return
        self._cache[key] = compiled
        self._cached_bytes += compiled.nbytes
        while self._cached_bytes > self.cache_bytes:
            _, old = self._cache.popitem(last=False)
            self._cached_bytes -= old.nbytes

    def _build(
        self, spec: StructuredSpec, checked: tuple[str, SchemaAnalysis | None, tuple] | None = None
    ) -> CompiledGrammar:
        t0 = time.perf_counter()
        grammar, analysis, tool_analyses = checked or self._grammar_text(spec)
        self.compiles += 1
        template = self._matcher(grammar, spec)
        self._probe(template.deep_copy(), spec)  # builds the lexer for the first mask, off the loop
        words = ClosingWords.of(
            self.tokenizer, spec.schema, *(t.parameters for t in spec.tools or ())
        )
        nbytes = 4 * len(grammar) + 64 * 1024 + 64 * words.size
        return CompiledGrammar(
            spec,
            grammar,
            template,
            analysis,
            tool_analyses,
            time.perf_counter() - t0,
            nbytes,
            words,
        )

    def _probe(self, matcher: llguidance.LLMatcher, spec: StructuredSpec) -> None:
        mask = bytearray((self.n_vocab + 31) // 32 * 4)
        buf = (ctypes.c_char * len(mask)).from_buffer(mask)
        matcher.unsafe_compute_mask_ptr(ctypes.addressof(buf), len(mask))
        if matcher.is_error():
            raise self._too_complex(spec, matcher.get_error())

    def _grammar_text(self, spec: StructuredSpec) -> tuple[str, SchemaAnalysis | None, tuple]:
        M = llguidance.LLMatcher
        if spec.kind in ("json_object", "json_schema"):
            analysis = check_schema(spec.schema, param=spec.param, lenient=spec.lenient)
            if spec.schema is False:
                raise InvalidRequestError(
                    "schema is false: no output can be valid",
                    param=spec.param,
                    code="invalid_schema",
                )
            opts = {
                **JSON_OPTIONS,
                "lenient": analysis.needs_lenient_compile,
                "coerce_one_of": True,
            }
            try:
                schema = grammar_schema(spec.schema)
                return M.grammar_from_json_schema(schema, defaults=opts), analysis, ()
            except ValueError as exc:
                raise InvalidRequestError(
                    f"invalid JSON Schema: {exc}", param=spec.param, code="invalid_schema"
                ) from None
        if spec.kind == "regex":
            return M.grammar_from_regex(spec.pattern or ""), None, ()
        if spec.kind == "choice":
            alts = " | ".join(json.dumps(c, ensure_ascii=True) for c in spec.choices)
            return M.grammar_from_lark(f"start: {alts}"), None, ()
        if spec.kind == "grammar":
            text = spec.grammar or ""
            if "::=" in text:
                try:
                    text = any_to_lark(text)
                except Exception as exc:  # noqa: BLE001 - the converter raises plain exceptions
                    raise InvalidRequestError(
                        f"invalid GBNF grammar: {exc}", param=spec.param, code="invalid_grammar"
                    ) from None
            return M.grammar_from_lark(text), None, ()
        return self._tools_grammar(spec)

    def _tools_grammar(self, spec: StructuredSpec) -> tuple[str, SchemaAnalysis | None, tuple]:
        analyses = []
        for i, tool in enumerate(spec.tools):
            param = f"tools[{i}].function.parameters"
            analyses.append(check_schema(tool.parameters, param=param, lenient=spec.lenient))
        analysis = None
        if spec.schema is not None:
            analysis = check_schema(spec.schema, param="response_format", lenient=spec.lenient)
            analyses.append(analysis)
        lenient = any(a.needs_lenient_compile for a in analyses)
        grammar = llguidance.LLMatcher.grammar_from_lark(tools_lark(spec, lenient))
        return grammar, analysis, tuple(analyses[: len(spec.tools)])

    def _matcher(self, grammar: str, spec: StructuredSpec) -> llguidance.LLMatcher:
        matcher = llguidance.LLMatcher(self.tokenizer, grammar, log_level=0, limits=self.limits)
        if matcher.is_error():
            raise self._classify(spec, matcher.get_error())
        return matcher

    def _classify(self, spec: StructuredSpec, message: str) -> Exception:
        low = message.lower()
        if any(w in low for w in _LIMIT_WORDS):
            return self._too_complex(spec, message)
        what = {"regex": "regex", "grammar": "grammar", "choice": "choice"}.get(spec.kind, "schema")
        return InvalidRequestError(
            f"invalid {what}: {message[:500]}", param=spec.param, code=f"invalid_{what}"
        )

    @staticmethod
    def _too_complex(spec: StructuredSpec, message: str) -> UnprocessableError:
        return UnprocessableError(
            f"schema too complex: {message[:300]}", param=spec.param, code="schema_too_complex"
        )
