"""The OpenAPI 3.1 document of every route, served at ``GET /openapi.json`` (JSON only: no UI,
nothing fetched from a CDN).

Handlers decode their bodies with the one decoder (``routes/common.py: read_body(request, T)``),
so the request body of an operation is read from its handler: the type ``T`` of its
``read_body`` call, turned into JSON Schema by msgspec (the same type that validates the body,
so the document cannot drift from the code). Path parameters come from the route; every
operation answers the OpenAI error body on failure.
"""

from __future__ import annotations

import ast
import inspect
import logging
import textwrap
from typing import Any

import msgspec
from litestar import Litestar, Request, get
from litestar.routes import HTTPRoute

from server.wire import ErrorBody

log = logging.getLogger(__name__)

_SKIP_METHODS = frozenset({"HEAD", "OPTIONS"})
_OPEN = frozenset({"/health", "/ready", "/openapi.json", "/v1/auth/login", "/v1/auth/refresh"})


def body_type(fn: Any) -> Any | None:
    """The type a handler decodes its JSON body into (``read_body(request, T)``), or None."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError):
        return None
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", None) == "read_body"
            and len(node.args) >= 2
        ):
            source = ast.unparse(node.args[1])
            try:
                return eval(source, fn.__globals__)  # noqa: S307 - our own source, not input
            except Exception:  # noqa: BLE001 - a type we cannot resolve: no schema
                log.warning("no body schema for %s: cannot resolve %s", fn.__name__, source)
                return None
    return None


def build_document(app: Litestar) -> dict[str, Any]:
    operations: list[tuple[str, str, Any, dict[str, Any]]] = []
    bodies: list[Any] = []
    used: set[str] = set()
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        path = route.path_format
        parameters = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": {"type": "string", "minLength": 1, "maxLength": 200},
            }
            for name in route.path_parameters
        ]
        for handler in route.route_handlers:
            if getattr(handler, "include_in_schema", True) is False:
                continue
            for method in sorted(handler.http_methods - _SKIP_METHODS):
                fn = handler.fn
                kind = body_type(fn)
                op_id = f"{handler.handler_name}_{method.lower()}"
                if op_id in used:  # the same handler name in two route modules
                    op_id = f"{fn.__module__.rsplit('.', 1)[-1]}_{op_id}"
                used.add(op_id)
                op: dict[str, Any] = {
                    "operationId": op_id,
                    "summary": (inspect.getdoc(fn) or handler.handler_name).split("\n")[0],
                    "parameters": parameters,
                    "responses": {
                        str(handler.status_code or 200): {"description": "success"},
                        "default": {
                            "description": "an error (OpenAI error body)",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/ErrorBody"}
                                }
                            },
                        },
                    },
                }
                if path not in _OPEN:
                    op["security"] = [{"bearer": []}]
                operations.append((path, method.lower(), kind, op))
                if kind is not None:
                    bodies.append(kind)
    schemas, components = msgspec.json.schema_components(
        [ErrorBody, *bodies], ref_template="#/components/schemas/{name}"
    )
    by_type = dict(zip([ErrorBody, *bodies], schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for path, method, kind, op in operations:
        if kind is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": by_type[kind]}},
            }
        paths.setdefault(path, {})[method] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Hearth",
            "version": "1",
            "description": "Local inference: OpenAI-compatible routes, documents and retrieval, "
            "tasks, agents, jobs, tenants (docs/security.md).",
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


@get("/openapi.json", media_type="application/vnd.oai.openapi+json")
async def openapi_json(request: Request) -> dict[str, Any]:
    """The OpenAPI document of every route (built once per app)."""
    app = request.app
    cached = getattr(app.state, "openapi_document", None)
    if cached is None:
        cached = build_document(app)
        app.state.openapi_document = cached
    return cached


ROUTES = [openapi_json]
