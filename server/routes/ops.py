"""Operational routes: liveness, readiness, tokenizer utilities."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, post

from engine import InvalidRequestError
from server import convert
from server.auth import is_admin
from server.errors import error_body
from server.routes.common import read_body
from server.state import services, state_of
from server.wire import DetokenizeRequest, TokenizeRequest


@get("/health")
async def health(request: Request) -> dict[str, Any]:
    """Alive: the process answers; ``engine`` says where the models stand: ``starting``,
    ``ready``, ``recovering`` (a step loop died and is being restarted) or ``failed``;
    ``draining`` is true once a SIGTERM started the graceful shutdown (``server.drain``)."""
    state = state_of(request.app)
    hearth = state.hearth
    if state.start_error is not None:
        engine = "failed"
    elif hearth is None:
        engine = "starting"
    else:
        engine = "ready" if hearth.ready else "recovering"
    return {"status": "ok", "engine": engine, "draining": state.drain.draining}


@get("/ready")
async def ready(request: Request) -> Response:
    """200 once the models are loaded and the engine is stepping; 503 (Retry-After) before. The
    engine's figures (sequences in flight, KV use) mix every tenant's traffic: once tenant keys
    exist they are shown to the admin key only."""
    state = state_of(request.app)
    hearth, failure = state.hearth, state.start_error
    if state.drain.draining:
        body = error_body("not ready: shutting down", "unavailable_error", None, "draining")
        body.status = "draining"
        return Response(body, status_code=503, headers={"Retry-After": "5"})
    if hearth is not None and hearth.ready:
        health = hearth.engine.health()
        if hearth.tenancy.auth_required and not is_admin(request.scope["headers"]):
            health = {k: health[k] for k in ("ready", "model", "backend", "embedding_model")}
        return Response({"status": "ready", **health}, status_code=200)
    message = f"not ready: {failure}" if failure else "not ready: the models are loading"
    body = error_body(message, "not_ready_error", None, "not_ready")
    body.status = "loading"
    return Response(body, status_code=503, headers={"Retry-After": "2"})


@post("/tokenize", status_code=200)
async def tokenize(request: Request) -> dict[str, Any]:
    engine = services(request).engine
    req = await read_body(request, TokenizeRequest)
    if req.model is not None:
        convert.resolve_model(engine, req.model, "completion")
    if (req.prompt is None) == (req.messages is None):
        raise InvalidRequestError("give exactly one of prompt or messages", param="prompt")
    if req.messages is not None:
        ids, _ = engine.tokenize_chat(convert.chat_messages(req.messages))
    else:
        ids = engine.tokenize_prompt(req.prompt or "", add_special_tokens=req.add_special_tokens)
    body: dict[str, Any] = {
        "tokens": ids,
        "count": len(ids),
        "max_model_len": engine.max_model_len,
    }
    if req.return_token_strs:
        body["token_strs"] = [engine.token_text(t) for t in ids]
    return body


@post("/detokenize", status_code=200)
async def detokenize(request: Request) -> dict[str, Any]:
    engine = services(request).engine
    req = await read_body(request, DetokenizeRequest)
    if req.model is not None:
        convert.resolve_model(engine, req.model, "completion")
    return {"prompt": engine.detokenize(req.tokens)}


ROUTES = [health, ready, tokenize, detokenize]
