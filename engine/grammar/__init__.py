"""Grammar-constrained decoding: JSON Schema, regex, choice, Lark/GBNF grammars and tool calls.

Request fields → ``build_spec`` (400 on malformed input) → ``GrammarCompiler.compile`` (checks the
schema, compiles off the event loop, caches) → ``GrammarCompiler.constraint`` per sequence (the
backend's ``TokenConstraint``) → ``finalize`` after generation (validation, ``schema_report``,
tool calls).
"""

from engine.grammar.compiler import CompiledGrammar, GrammarCompiler
from engine.grammar.constraint import GrammarConstraint
from engine.grammar.report import Outcome, SchemaReport, finalize
from engine.grammar.spec import StructuredSpec, ToolSpec, build_spec
from engine.grammar.tools import (
    ToolCall,
    ToolDelta,
    ToolStreamParser,
    parse_tool_output,
    tools_prompt,
)

__all__ = [
    "CompiledGrammar",
    "GrammarCompiler",
    "GrammarConstraint",
    "Outcome",
    "SchemaReport",
    "StructuredSpec",
    "ToolCall",
    "ToolDelta",
    "ToolSpec",
    "ToolStreamParser",
    "build_spec",
    "finalize",
    "parse_tool_output",
    "tools_prompt",
]
