"""The app factory: ``create_app(settings)`` builds the Litestar app around Hearth's services.

The lifespan calls the composition root (:func:`engine.open_hearth`) once, in the background, so
``/health`` answers at once and ``/ready`` (and every other route) says 503 until the models are
loaded and every service is up; the started :class:`engine.Hearth` is kept in the typed
:class:`server.state.ServerState`. On shutdown the services close in reverse order. A failed start
stops the server: an appliance that cannot load its model must not look alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable

from litestar import Litestar
from litestar.config.cors import CORSConfig

from configs import Settings
from engine import Hearth, open_hearth
from server import console, openapi
from server.audittrail import AuditTrail
from server.auth import ADMIN_KEY_ENV, TenantAuthMiddleware
from server.browser import browser_guard, names, open_mode_refusal
from server.deadlines import write_deadline
from server.drain import Drain, drain_gate
from server.errors import EXCEPTION_HANDLERS
from server.metrics import Metrics, metrics_route
from server.requestlog import RequestIds
from server.routes import admin as admin_routes
from server.routes import agents as agent_routes
from server.routes import benchmarks as benchmark_routes
from server.routes import conversations as conversation_routes
from server.routes import documents as document_routes
from server.routes import jobs as job_routes
from server.routes import openai as openai_routes
from server.routes import ops
from server.routes import tasks as task_routes
from server.routes import tools as tool_routes
from server.routes import users as user_routes
from server.routes import webhooks as webhook_routes
from server.state import ServerState

log = logging.getLogger(__name__)


ServicesFactory = Callable[[Settings], Awaitable[Hearth]]


def create_app(
    settings: Settings,
    *,
    open_services: ServicesFactory = open_hearth,
    exit_on_start_failure: bool = True,
) -> Litestar:
    """``open_services``: the composition root (tests pass one with a stand-in model)."""
    drain = Drain()

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        state = ServerState(settings, Metrics(), drain=drain)
        app.state.server = state
        starting = asyncio.create_task(
            _start(state, open_services, exit_on_start_failure), name="hearth-start"
        )
        try:
            yield
        finally:
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await starting
            if state.hearth is not None:
                hearth, state.hearth = state.hearth, None
                await hearth.close()

    app = Litestar(
        route_handlers=[
            *ops.ROUTES,
            *openai_routes.ROUTES,
            metrics_route,
            *document_routes.HANDLERS,  # collections, documents, /v1/retrieve, sessions
            *agent_routes.HANDLERS,  # agents and their runs
            *tool_routes.HANDLERS,  # agent tools, example tables, the audit log
            *conversation_routes.HANDLERS,  # memory for chat, RAG chat and agent runs
            *webhook_routes.HANDLERS,  # signed webhooks in, signed callbacks out
            *job_routes.HANDLERS,  # every background job: list, get, cancel, retry, SSE events
            *admin_routes.HANDLERS,  # tenants and API keys ($HEARTH_ADMIN_KEY)
            *user_routes.HANDLERS,  # users: login, refresh, the tenant's user management
            *task_routes.HANDLERS,  # classifiers, extract, workflows, analyze, usage
            *benchmark_routes.HANDLERS,  # benchmark results and plots, read-only
            *console.ROUTES,  # the web console's static page at /
            *openapi.ROUTES,  # GET /openapi.json: every route's schema, from the code
        ],
        # Tenant from the API key on every route but /health and /ready (see server.auth).
        # While draining for shutdown new requests are a 503 (server.drain). A slow reader's
        # writes time out (its stream ends, its sequences abort); browser
        # safety (Host, Origin, Content-Type); then auth and admission by the tenant's limits.
        middleware=[
            RequestIds,  # X-Request-Id in and out, the access log
            drain_gate(drain),  # SIGTERM: refuse new requests, finish or end those in flight
            write_deadline(settings.server.sse_write_timeout_s),
            browser_guard(settings.server.allowed_hosts, settings.server.cors_origins),
            TenantAuthMiddleware,
            AuditTrail,  # a row per admin action, user change and delete (server.audittrail)
        ],
        lifespan=[lifespan],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        request_max_body_size=settings.server.max_body_bytes,
        cors_config=_cors(settings),
        openapi_config=None,
        debug=False,
    )
    app.state.drain = drain  # for the server's SIGTERM handler (server.cli.serve_app)
    return app


def _cors(settings: Settings) -> CORSConfig | None:
    """No CORS unless origins are configured."""
    origins = sorted(names(settings.server.cors_origins))
    return CORSConfig(allow_origins=origins) if origins else None


async def _start(state: ServerState, open_services: ServicesFactory, exit_on_failure: bool) -> None:
    try:
        hearth = await open_services(state.settings)
        server = state.settings.server
        refusal = open_mode_refusal(
            server.host,
            server.insecure_open,
            hearth.tenancy.auth_required,
            bool(os.environ.get(ADMIN_KEY_ENV)),
        )
        if refusal is not None:
            await hearth.close()
            raise RuntimeError(refusal)
        state.hearth = hearth
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        state.start_error = str(exc)
        log.critical("engine failed to start: %s", exc)
        if exit_on_failure:
            os.kill(os.getpid(), signal.SIGTERM)
