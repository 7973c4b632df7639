"""Glue between the Engine facade and the grammar layer, kept here so the engine needs few lines.

``GrammarSupport`` (one per engine) builds the ``GrammarCompiler`` from the tokenizer the backend
gives (``Backend.grammar_tokenizer``) on first use. ``bind`` compiles a request's
``response_format`` (a ``StructuredSpec``) into a ``BoundFormat``, adding the tool description to
the chat; the bound format makes one constraint per choice (``new_constraint``) and finishes each
choice (``observe`` rewrites the last delta's finish reason and attaches the ``Outcome``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from engine.errors import InvalidRequestError
from engine.grammar.compiler import CompiledGrammar, GrammarCompiler
from engine.grammar.constraint import GrammarConstraint
from engine.grammar.report import finalize
from engine.grammar.spec import StructuredSpec
from engine.grammar.tools import template_tools as tools_for_template
from engine.grammar.tools import tools_prompt
from engine.types import ChoiceDelta, FinishReason, GenerateRequest, GenerationEvent
from models.chat_templates import ChatMessage

if TYPE_CHECKING:
    from engine.backends.base import Backend

logger = logging.getLogger(__name__)


class BoundFormat:
    """A compiled format bound to one request: constraints per choice, and their outcomes."""

    def __init__(self, compiler: GrammarCompiler, compiled: CompiledGrammar) -> None:
        self.compiler = compiler
        self.compiled = compiled
        self.budget: int | None = None  # tokens each choice may produce (max_tokens or context)
        self.constraints: list[GrammarConstraint] = []
        self._texts: dict[int, list[str]] = {}

    @property
    def spec(self) -> StructuredSpec:
        return self.compiled.spec

    def new_constraint(self) -> GrammarConstraint:
        """The constraint of the next choice (choices call this in index order)."""
        constraint = self.compiler.constraint(self.compiled, self.budget)
        # The grammar text, for backends that enforce it with their own engine (vLLM).
        constraint.grammar = self.compiled.grammar
        self.constraints.append(constraint)
        return constraint

    def observe(self, event: GenerationEvent) -> GenerationEvent:
        """Collects each choice's text; on its last delta, decides its finish and attaches it."""
        if not isinstance(event, ChoiceDelta):
            return event
        self._texts.setdefault(event.index, []).append(event.text)
        if event.finish_reason is None or event.index >= len(self.constraints):
            return event
        text = "".join(self._texts[event.index])
        reason = FinishReason(event.finish_reason)
        outcome = finalize(self.compiled, self.constraints[event.index], text, reason)
        return dataclasses.replace(event, finish_reason=outcome.finish_reason, structured=outcome)


class GrammarSupport:
    """Per-engine owner of the compiler (built lazily: the tokenizer takes ~3 s to build)."""

    def __init__(self, **compiler_options: Any) -> None:
        self._compiler: GrammarCompiler | None = None
        self._lock = asyncio.Lock()
        self._options = compiler_options

    async def compiler(self, backend: Backend) -> GrammarCompiler:
        async with self._lock:
            if self._compiler is None:
                # Building the tokenizer takes 1-3 s: off the event loop, once per engine.
                tok = await asyncio.to_thread(backend.grammar_tokenizer)
                if tok is None:
                    raise InvalidRequestError(
                        f"structured output is not supported on the {backend.name} backend",
                        param="response_format",
                    )
                eos = frozenset(backend.eos_token_ids)
                self._compiler = GrammarCompiler(tok, backend.n_vocab, eos, **self._options)
            return self._compiler

    async def bind(
        self, req: GenerateRequest, backend: Backend, template_tools: bool = False
    ) -> tuple[GenerateRequest, BoundFormat | None]:
        """Compiles the request's spec (400/422 on failure): the request to run and its bound
        format (None when unconstrained). Tools reach the model through its own chat template
        when ``template_tools`` (the template renders ``tools``), else as Hearth's system
        message; either way the grammar constrains the calls to ``<tool_call>{...}``."""
        spec = req.response_format
        if spec is None:
            return req, None
        compiler = await self.compiler(backend)
        compiled = await compiler.compile(spec)
        if spec.kind == "tools" and req.messages is not None:
            if template_tools:
                req = dataclasses.replace(req, template_tools=tools_for_template(spec))
            else:
                messages = [ChatMessage("system", tools_prompt(spec)), *req.messages]
                req = dataclasses.replace(req, messages=messages)
        return req, BoundFormat(compiler, compiled)

    def close(self) -> None:
        if self._compiler is not None:
            self._compiler.close()
