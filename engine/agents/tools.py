"""Tools: a name, a JSON schema for the arguments, and an async callable returning
``{success, data, message}``. A tool that raises returns ``success: false`` with the error as its
message: a failing tool never crashes a run.
"""

from __future__ import annotations

import ast
import asyncio
import logging
import operator
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from engine.agents.http import HttpCallError, HttpPolicy
from engine.agents.tables import QueryError, TableStore

log = logging.getLogger(__name__)

MAX_EXTRACT_FIELDS = 12


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


def sql_tool(tables: TableStore) -> Tool:
    """``sql_query``: read-only SQL over the tenant's own tables (a row and a time limit)."""

    async def run(tenant: str, args: dict[str, Any]) -> ToolResult:
        try:
            found = await asyncio.to_thread(tables.query, tenant, str(args["sql"]))
        except QueryError as exc:
            return ToolResult(False, None, str(exc))
        data = {"columns": found.columns, "rows": found.rows, "truncated": found.truncated}
        more = f" (first {len(found.rows)})" if found.truncated else ""
        return ToolResult(True, data, f"{len(found.rows)} row(s){more}")

    return Tool(
        "sql_query",
        "Run one read-only SQL query (DuckDB) over your tables; returns columns and rows.",
        {
            "type": "object",
            "properties": {"sql": {"type": "string", "maxLength": 400}},
            "required": ["sql"],
            "additionalProperties": False,
        },
        run,
    )


def classify_tool(classifiers: Any) -> Tool:
    """``classify``: one of the tenant's trained classifiers on a text (the top label)."""

    async def run(tenant: str, args: dict[str, Any]) -> ToolResult:
        found = await classifiers.classify(tenant, str(args["classifier"]), [str(args["text"])])
        top = found[0]
        return ToolResult(True, top, f"label {top['label']!r} ({top['confidence']:.2f})")

    return Tool(
        "classify",
        "Label a text with one of your classifiers; returns label and confidence.",
        {
            "type": "object",
            "properties": {
                "classifier": {"type": "string", "maxLength": 64},
                "text": {"type": "string", "maxLength": 1000},
            },
            "required": ["classifier", "text"],
            "additionalProperties": False,
        },
        run,
    )


def extract_tool(extraction: Any) -> Tool:
    """``extract``: named string fields out of a text (schema-constrained extraction)."""

    async def run(tenant: str, args: dict[str, Any]) -> ToolResult:
        names = [str(f) for f in args["fields"]][:MAX_EXTRACT_FIELDS]
        schema = {
            "type": "object",
            "properties": {n: {"type": ["string", "null"]} for n in names},
            "required": names,
        }
        found = (await extraction.extract(tenant, [str(args["text"])], schema))[0]
        return ToolResult(found.valid, found.object, "extracted" if found.valid else "invalid")

    return Tool(
        "extract",
        "Pull the named fields out of a text; returns an object of those fields.",
        {
            "type": "object",
            "properties": {
                "text": {"type": "string", "maxLength": 2000},
                "fields": {
                    "type": "array",
                    "items": {"type": "string", "maxLength": 40},
                    "minItems": 1,
                    "maxItems": MAX_EXTRACT_FIELDS,
                },
            },
            "required": ["text", "fields"],
            "additionalProperties": False,
        },
        run,
    )


def http_tool(policy: HttpPolicy) -> Tool:
    """``http_request``: GET or POST JSON to an allow-listed host (off when none is listed)."""

    async def run(tenant: str, args: dict[str, Any]) -> ToolResult:
        method = str(args.get("method", "GET"))
        try:
            status, body = await policy.call(method, str(args["url"]), args.get("body"))
        except HttpCallError as exc:
            return ToolResult(False, None, str(exc))
        return ToolResult(200 <= status < 300, body, f"HTTP {status}")

    return Tool(
        "http_request",
        "Call an allow-listed HTTP endpoint with JSON; returns its answer.",
        {
            "type": "object",
            "properties": {
                "method": {"enum": ["GET", "POST"]},
                "url": {"type": "string", "maxLength": 300},
                "body": {"type": "object"},
            },
            "required": ["method", "url"],
            "additionalProperties": False,
        },
        run,
    )


def webhook_tool(
    name: str,
    description: str,
    parameters: dict[str, Any],
    url: str,
    secret: str,
    policy: HttpPolicy,
) -> Tool:
    """A user-defined tool: its arguments POSTed as JSON to ``url``, signed with the tool's
    secret. The endpoint answers ``{success, data, message}`` (any other JSON is the data of a
    success); a non-2xx status, a refused host, the deadline, a too-big body or a redirect is
    ``success: false``."""

    async def run(tenant: str, args: dict[str, Any]) -> ToolResult:
        try:
            status, body = await policy.call(
                "POST", url, {"tool": name, "arguments": args}, secret=secret
            )
        except HttpCallError as exc:
            return ToolResult(False, None, str(exc))
        if not 200 <= status < 300:
            return ToolResult(False, body, f"HTTP {status}")
        if isinstance(body, dict) and isinstance(body.get("success"), bool):
            return ToolResult(body["success"], body.get("data"), str(body.get("message", "")))
        return ToolResult(True, body, f"HTTP {status}")

    return Tool(name, description, parameters, run)


def sql_template_tool(
    name: str,
    description: str,
    parameters: dict[str, Any],
    sql: str,
    write: bool,
    tables: TableStore,
) -> Tool:
    """A user-defined tool that runs one parameterized SQL statement over the tenant's tables:
    each ``$name`` in ``sql`` is bound to that argument (never spliced into the text)."""
    names = sql_params(sql)

    async def run(tenant: str, args: dict[str, Any]) -> ToolResult:
        bound = {n: args.get(n) for n in names}
        try:
            found = await asyncio.to_thread(tables.query, tenant, sql, bound, write=write)
        except QueryError as exc:
            return ToolResult(False, None, str(exc))
        rows = [dict(zip(found.columns, row, strict=True)) for row in found.rows]
        if not rows:
            return ToolResult(False, [], "no matching rows")
        return ToolResult(True, rows, f"{len(rows)} row(s)")

    return Tool(name, description, parameters, run)


def sql_params(sql: str) -> list[str]:
    """The ``$name`` parameters of a SQL text, in order of first use."""
    return list(dict.fromkeys(re.findall(r"\$([A-Za-z_][A-Za-z0-9_]*)", sql)))


def builtin_tools(
    retrieval: Any | None,
    *,
    tables: TableStore | None = None,
    classifiers: Any | None = None,
    extraction: Any | None = None,
    http: HttpPolicy | None = None,
) -> dict[str, Tool]:
    """Every built-in tool the given services allow; ``http_request`` only with an allow-list."""
    tools = [CALCULATOR]
    if retrieval is not None:
        tools.append(retrieve_tool(retrieval))
    if tables is not None:
        tools.append(sql_tool(tables))
    if classifiers is not None:
        tools.append(classify_tool(classifiers))
    if extraction is not None:
        tools.append(extract_tool(extraction))
    if http is not None and http.enabled:
        tools.append(http_tool(http))
    return {t.name: t for t in tools}
