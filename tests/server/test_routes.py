"""The HTTP layer on a stand-in model (``tests.server.fakes``): SSE framing, every error class and
its status, one body decoder for every route, readiness, and a client disconnect aborting the
engine's sequences. Real Litestar app, real DuckDB and FAISS; no model files; seconds."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar, get
from litestar.testing import TestClient

from engine import (
    AuthenticationError,
    BackendError,
    ConflictError,
    ContextLengthError,
    HearthError,
    InsufficientStorageError,
    InvalidRequestError,
    NotFoundError,
    NotReadyError,
    OverloadedError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RequestTimeoutError,
    ShuttingDownError,
    TooManyRequestsError,
    UnprocessableError,
    UnsupportedMediaTypeError,
)
from server.app import create_app
from server.errors import EXCEPTION_HANDLERS, send_error
from tests.server.fakes import REPLY, FakeParts, fake_settings

MODEL = "gemma-3-270m-q4km"
MSG = [{"role": "user", "content": "hi"}]


def wait_ready(client: TestClient) -> None:
    deadline = time.monotonic() + 60
    while client.get("/ready").status_code != 200:
        assert time.monotonic() < deadline, "the app did not become ready"
        time.sleep(0.02)


@pytest.fixture
def app_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Litestar, FakeParts]:
    monkeypatch.setenv("HEARTH_ADMIN_KEY", "adm")
    settings = fake_settings(tmp_path)
    parts = FakeParts(settings)
    return create_app(settings, open_services=parts.open, exit_on_start_failure=False), parts


@pytest.fixture
def client(app_parts: tuple[Litestar, FakeParts]) -> Iterator[TestClient]:
    with TestClient(app_parts[0], base_url="http://testclient") as c:
        wait_ready(c)
        yield c


def sse_events(text: str) -> list[str]:
    """The ``data:`` payloads of an SSE body, checking the framing on the way."""
    assert text.endswith("\n\n")
    frames = text[:-2].split("\n\n")
    assert all(f.startswith("data: ") for f in frames), frames
    return [f[len("data: ") :] for f in frames]


# ---- responses and SSE framing --------------------------------------------------------------


def test_chat_collected(client: TestClient) -> None:
    body = client.post("/v1/chat/completions", json={"model": MODEL, "messages": MSG}).json()
    assert body["object"] == "chat.completion" and body["model"] == MODEL
    assert body["choices"][0]["message"] == {"role": "assistant", "content": REPLY}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] == len(REPLY) + 1  # the reply, then EOS


def test_chat_stream_framing_and_usage(client: TestClient) -> None:
    r = client.post(
        "/v1/chat/completions",
        json={
            "model": MODEL,
            "messages": MSG,
            "n": 2,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert [c["choices"][0]["delta"] for c in chunks[:2]] == [
        {"role": "assistant", "content": ""}
    ] * 2
    for index in (0, 1):
        text = "".join(
            c["choices"][0]["delta"].get("content", "")
            for c in chunks
            if c["choices"] and c["choices"][0]["index"] == index
        )
        assert text == REPLY
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 2 * (
        len(REPLY) + 1
    )


def test_completions_stream_and_collected(client: TestClient) -> None:
    body = {"model": MODEL, "prompt": ["a", "b"], "max_tokens": 5}
    collected = client.post("/v1/completions", json=body).json()
    assert [c["text"] for c in collected["choices"]] == [REPLY[:5]] * 2
    assert [c["finish_reason"] for c in collected["choices"]] == ["length"] * 2
    streamed = client.post("/v1/completions", json=body | {"stream": True})
    assert streamed.headers["content-type"].startswith("text/event-stream")
    events = sse_events(streamed.text)
    assert events[-1] == "[DONE]"
    text = "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1])
    assert sorted(text) == sorted(REPLY[:5] * 2)


def test_metrics_count_each_request_once(client: TestClient) -> None:
    client.post("/v1/chat/completions", json={"model": MODEL, "messages": MSG})
    client.post("/v1/chat/completions", json={"model": "nope", "messages": MSG})
    text = client.get("/metrics").text
    assert 'hearth_requests_total{endpoint="chat",status="200"} 1.0' in text
    assert 'hearth_generation_tokens_total{endpoint="chat"}' in text


# ---- errors -------------------------------------------------------------------------------------

ERRORS = [
    (InvalidRequestError("x", param="p"), 400, "invalid_request_error", False),
    (ContextLengthError("x"), 400, "invalid_request_error", False),
    (AuthenticationError("x"), 401, "authentication_error", False),
    (PermissionDeniedError("x"), 403, "permission_error", False),
    (NotFoundError("x"), 404, "not_found_error", False),
    (ConflictError("x"), 409, "conflict_error", False),
    (PayloadTooLargeError("x"), 413, "invalid_request_error", False),
    (UnsupportedMediaTypeError("x"), 415, "invalid_request_error", False),
    (RequestTimeoutError("x"), 408, "timeout_error", False),
    (UnprocessableError("x"), 422, "invalid_request_error", False),
    (TooManyRequestsError("x", retry_after=3), 429, "rate_limit_error", True),
    (OverloadedError("x", retry_after=3), 503, "overloaded_error", True),
    (NotReadyError("x", retry_after=3), 503, "not_ready_error", True),
    (ShuttingDownError("x", retry_after=3), 503, "unavailable_error", True),
    (InsufficientStorageError("x"), 507, "insufficient_storage_error", False),
    (BackendError("x"), 500, "server_error", False),
    (RuntimeError("boom"), 500, "server_error", False),
]


@pytest.mark.parametrize(
    ("exc", "status", "kind", "retry"), ERRORS, ids=[type(e[0]).__name__ for e in ERRORS]
)
def test_each_error_class_maps_to_its_status(
    exc: Exception, status: int, kind: str, retry: bool
) -> None:
    @get("/boom")
    async def boom() -> None:
        raise exc

    with TestClient(Litestar([boom], exception_handlers=EXCEPTION_HANDLERS)) as c:  # type: ignore[arg-type]
        r = c.get("/boom")
    assert r.status_code == status
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["type"] == kind
    assert ("retry-after" in r.headers) == retry
    if retry:
        assert r.headers["retry-after"] == "3"
    if isinstance(exc, HearthError):
        assert err["message"] == exc.message and err["param"] == exc.param


@pytest.mark.parametrize(
    "exc", [e[0] for e in ERRORS if isinstance(e[0], HearthError)], ids=lambda e: type(e).__name__
)
def test_middleware_answers_through_the_same_table(exc: HearthError) -> None:
    """Auth, browser safety and the drain answer before routing with ``send_error``: the same
    status, body and headers as a handler raising the error."""

    @get("/boom")
    async def boom() -> None:
        raise exc

    async def middleware_app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await send_error(send, exc)
            return
        while (await receive())["type"] == "lifespan.startup":  # the test client's lifespan
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})

    with TestClient(Litestar([boom], exception_handlers=EXCEPTION_HANDLERS)) as c:  # type: ignore[arg-type]
        handled = c.get("/boom")
    with TestClient(middleware_app) as c:  # type: ignore[arg-type]
        early = c.get("/boom")
    assert early.status_code == handled.status_code == exc.status
    assert early.json() == handled.json()
    for name in ("retry-after", "www-authenticate", "content-type"):
        assert early.headers.get(name) == handled.headers.get(name), name


# ---- one body decoder: the same mistake, the same answer, on every route ----------------------

ROUTES = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/collections",
    "/v1/retrieve",
    "/v1/classify",
    "/v1/extract",
    "/v1/admin/tenants",
]
ADMIN = {"Authorization": "Bearer adm"}


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize(
    "raw",
    [b'{"\xff\xfe": 1}', b"{", b"not json", b""],
    ids=["invalid-utf8", "truncated", "malformed", "empty"],
)
def test_bad_json_is_the_same_400_everywhere(client: TestClient, path: str, raw: bytes) -> None:
    r = client.post(path, content=raw, headers={"content-type": "application/json", **ADMIN})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["code"] == "invalid_json"


DEEP = b"[" * 10000 + b"]" * 10000


@pytest.mark.parametrize(
    ("path", "raw"),
    [
        ("/v1/chat/completions", b'{"model": "m", "messages": [], "response_format": {"a": '),
        ("/v1/collections", b'{"name": "c", "metadata": {"a": '),
        ("/v1/retrieve", b'{"query": "q", "filter": {"a": '),
        ("/v1/extract", b'{"input": "x", "schema": {"a": '),
    ],
)
def test_deep_nesting_is_the_same_400_everywhere(client: TestClient, path: str, raw: bytes) -> None:
    r = client.post(path, content=raw + DEEP + b"}}", headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_json"
    assert "nested too deeply" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/chat/completions", {"model": MODEL, "messages": MSG, "n": "two"}, "n"),
        ("/v1/completions", {"model": MODEL, "prompt": "x", "echo": 1}, "echo"),
        ("/v1/collections", {"name": 5}, "name"),
        ("/v1/retrieve", {"query": "x", "top_k": "many"}, "top_k"),
        ("/v1/classify", {"classifier": "c", "input": "x", "top_k": "many"}, "top_k"),
        ("/v1/admin/tenants", {"name": ["a"]}, "name"),
        ("/v1/collections", {"name": "ok", "colour": "red"}, "colour"),
    ],
)
def test_wrong_type_or_unknown_field_is_a_400_naming_it(
    client: TestClient, path: str, body: dict[str, Any], param: str
) -> None:
    r = client.post(path, json=body, headers=ADMIN)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_validation_after_decoding_names_the_field(client: TestClient) -> None:
    cases = [
        ({"model": MODEL, "messages": MSG, "temperature": 5}, "temperature"),
        ({"model": MODEL, "messages": []}, "messages"),
        ({"model": "nope", "messages": MSG}, "model"),
        ({"model": MODEL, "messages": MSG, "session_id": "s"}, "session_id"),
        ({"model": MODEL, "messages": MSG, "retrieval": {"colour": 1}}, "retrieval.colour"),
    ]
    for body, param in cases:
        r = client.post("/v1/chat/completions", json=body)
        assert r.status_code in (400, 404), r.text
        assert r.json()["error"]["param"] == param


# ---- readiness: one answer while the services start ------------------------------------------


def test_every_route_is_503_until_the_services_are_up(tmp_path: Path) -> None:
    async def never(_: Any) -> Any:
        await asyncio.Event().wait()

    app = create_app(fake_settings(tmp_path), open_services=never, exit_on_start_failure=False)
    with TestClient(app) as c:
        assert c.get("/health").status_code == 200
        for method, path in [
            ("GET", "/ready"),
            ("GET", "/v1/models"),
            ("POST", "/v1/chat/completions"),
            ("GET", "/v1/collections"),
            ("GET", "/v1/classifiers"),
        ]:
            r = c.request(method, path, json={})
            assert r.status_code == 503 and r.headers["retry-after"], path
            assert r.json()["error"]["type"] == "not_ready_error"


def test_rag_on_a_missing_collection_is_404(client: TestClient) -> None:
    body = {"model": "rag/nothing", "messages": MSG}
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"


# ---- a client that goes away aborts its sequences in the engine -------------------------------


@contextlib.asynccontextmanager
async def running(app: Litestar) -> AsyncIterator[None]:
    """The app's lifespan on this event loop (the engine's outputs come back to this loop)."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    task = asyncio.create_task(app(scope, inbox.get, outbox.put))  # type: ignore[arg-type]
    await inbox.put({"type": "lifespan.startup"})
    assert (await outbox.get())["type"] == "lifespan.startup.complete"
    try:
        yield
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await outbox.get()
        await task


@pytest.mark.parametrize("stream", [False, True])
def test_client_disconnect_aborts_the_generation(
    app_parts: tuple[Litestar, FakeParts], stream: bool
) -> None:
    app, parts = app_parts
    parts.backend.hold = True  # every sequence stays running after its first token
    body = json.dumps({"model": MODEL, "messages": MSG, "stream": stream}).encode()

    async def call(path: str, receive: Any, send: Any, method: str = "POST") -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"content-type", b"application/json")],
            "client": ("127.0.0.1", 5000),
            "server": ("testserver", 80),
            "state": {},
        }
        await app(scope, receive, send)  # type: ignore[arg-type]

    async def ready() -> bool:
        status: list[int] = []

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        await call("/ready", receive, send, "GET")
        return status == [200]

    async def scenario() -> None:
        async with running(app):
            while not await ready():
                await asyncio.sleep(0.02)
            got_body = asyncio.Event()
            leave = asyncio.Event()

            async def receive() -> dict[str, Any]:
                if not got_body.is_set():
                    got_body.set()
                    return {"type": "http.request", "body": body, "more_body": False}
                await leave.wait()
                return {"type": "http.disconnect"}

            async def send(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.body" and message.get("body"):
                    leave.set()  # streaming: the client read a chunk, then left

            if not stream:  # collected: leave once the sequence runs in the backend
                asyncio.get_running_loop().call_later(0.3, leave.set)
            try:
                await asyncio.wait_for(call("/v1/chat/completions", receive, send), 30)
            except asyncio.CancelledError:  # the collected request's task ends cancelled
                assert not stream

    asyncio.run(scenario())
    assert parts.backend.submitted
    assert [r.request_id for r in parts.backend.submitted] == parts.backend.aborted


def test_embeddings_input_type_applies_the_prompt_side_or_is_a_400(client: TestClient) -> None:
    """``input_type`` reaches the embedder ("query"/"document"); anything else names the field."""
    model = client.get("/health").json().get("embedding_model") or "all-minilm-l6-v2"
    body = {"model": model, "input": ["a b"]}
    for side in ("query", "document"):
        ok = client.post("/v1/embeddings", json=body | {"input_type": side})
        assert ok.status_code == 200, ok.text
        assert len(ok.json()["data"][0]["embedding"]) == 8
    bad = client.post("/v1/embeddings", json=body | {"input_type": "passage"})
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "input_type"
    assert "query" in bad.json()["error"]["message"]
