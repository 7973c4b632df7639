"""Tools: a name, a JSON schema for the arguments, and an async callable returning
``{success, data, message}``. A tool that raises returns ``success: false`` with the error as its
message: a failing tool never crashes a run.
"""

from __future__ import annotations

import ast
import logging
import operator
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ToolResult:
    success: bool
    data: Any = None
    message: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"success": self.success, "data": self.data, "message": self.message}


ToolFn = Callable[[str, dict[str, Any]], Awaitable[ToolResult]]  # (tenant, arguments)


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of an object: the arguments
    fn: ToolFn

    async def call(self, tenant: str, arguments: dict[str, Any]) -> ToolResult:
        problem = check_arguments(self.parameters, arguments)
        if problem:
            return ToolResult(False, None, f"bad arguments for {self.name}: {problem}")
        try:
            return await self.fn(tenant, arguments)
        except Exception as exc:  # a tool's failure goes back to the model, not up the stack
            log.info("tool %s failed: %s", self.name, exc)
            return ToolResult(False, None, f"{type(exc).__name__}: {exc}")


_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "object": dict,
    "array": list,
}


def check_arguments(schema: dict[str, Any], args: Any) -> str | None:
    """Validate again what the grammar produced (required keys, property types, enums)."""
    if not isinstance(args, dict):
        return "arguments must be an object"
    for key in schema.get("required", []):
        if key not in args:
            return f"missing {key!r}"
    for key, value in args.items():
        prop = schema.get("properties", {}).get(key)
        if prop is None:
            if schema.get("additionalProperties") is False:
                return f"unknown argument {key!r}"
            continue
        want = _TYPES.get(prop.get("type", ""))
        if want is not None and (
            not isinstance(value, want) or isinstance(value, bool) and prop.get("type") != "boolean"
        ):
            return f"{key!r} must be {prop['type']}"
        if "enum" in prop and value not in prop["enum"]:
            return f"{key!r} must be one of {prop['enum']}"
    return None


# ---- calculator (no eval) --------------------------------------------------------------------

_OPS: dict[type, Callable[..., Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


def calculate(expression: str) -> float:
    """Arithmetic over numbers only (+ - * / // % **, parentheses); anything else is refused."""
    if len(expression) > 200:
        raise ValueError("expression longer than 200 characters")

    def walk(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > 100:
                raise ValueError("exponent too large")
            return _OPS[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.operand))
        raise ValueError("only numbers and + - * / // % ** ( ) are allowed")

    return walk(ast.parse(expression, mode="eval"))


async def _calculator(tenant: str, args: dict[str, Any]) -> ToolResult:
    value = calculate(str(args["expression"]))
    return ToolResult(True, {"value": value}, f"{args['expression']} = {value}")


CALCULATOR = Tool(
    "calculator",
    "Evaluate an arithmetic expression, e.g. 12*(3+4).",
    {
        "type": "object",
        "properties": {"expression": {"type": "string", "maxLength": 120}},
        "required": ["expression"],
        "additionalProperties": False,
    },
    _calculator,
)


def retrieve_tool(retrieval: Any) -> Tool:
    """``retrieve``: the top passages of one of the tenant's collections for a query."""

    async def run(tenant: str, args: dict[str, Any]) -> ToolResult:
        hits = (
            await retrieval.retrieve(tenant, [args["collection"]], [args["query"]], 3, "hybrid")
        )[0]
        data = [{"document_id": h.document_id, "text": h.text[:400]} for h in hits]
        return ToolResult(True, data, f"{len(data)} passage(s)")

    return Tool(
        "retrieve",
        "Search a document collection; returns the best passages.",
        {
            "type": "object",
            "properties": {
                "collection": {"type": "string", "maxLength": 64},
                "query": {"type": "string", "maxLength": 200},
            },
            "required": ["collection", "query"],
            "additionalProperties": False,
        },
        run,
    )


def builtin_tools(retrieval: Any | None) -> dict[str, Tool]:
    tools = {CALCULATOR.name: CALCULATOR}
    if retrieval is not None:
        tool = retrieve_tool(retrieval)
        tools[tool.name] = tool
    return tools
