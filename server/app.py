"""The app factory: ``create_app(settings)`` builds the Litestar app around one Engine.

The lifespan starts the engine in the background, so ``/health`` answers at once and ``/ready``
says 503 until the models are loaded and the engine is stepping; on shutdown it closes the engine.
A failed start stops the server: an appliance that cannot load its model must not look alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator

from litestar import Litestar
from litestar.config.cors import CORSConfig

from configs import Settings
from engine import Engine
from server.auth import TenantAuthMiddleware
from server.errors import EXCEPTION_HANDLERS
from server.metrics import Metrics, metrics_route
from server.routes import admin as admin_routes
from server.routes import documents as document_routes
from server.routes import openai as openai_routes
from server.routes import ops
from server.routes import tasks as task_routes

log = logging.getLogger(__name__)


def create_app(
    settings: Settings, engine: Engine | None = None, *, exit_on_start_failure: bool = True
) -> Litestar:
    engine = engine or Engine(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        app.state.engine = engine
        app.state.metrics = Metrics()
        app.state.start_error = None
        starting = asyncio.create_task(_start(app, engine, exit_on_start_failure))
        try:
            yield
        finally:
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await starting
            await engine.close()

    return Litestar(
        route_handlers=[
            *ops.ROUTES,
            *openai_routes.ROUTES,
            metrics_route,
            *document_routes.HANDLERS,  # collections, documents, jobs, /v1/retrieve, sessions
            *admin_routes.HANDLERS,  # tenants and API keys ($HEARTH_ADMIN_KEY)
            *task_routes.HANDLERS,  # classifiers, extract, workflows, analyze, usage
        ],
        # Tenant from the API key on every route but /health and /ready (see server.auth).
        middleware=[TenantAuthMiddleware],
        lifespan=[lifespan],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        request_max_body_size=settings.server.max_body_bytes,
        cors_config=CORSConfig(allow_origins=[]),
        openapi_config=None,
        debug=False,
    )


async def _start(app: Litestar, engine: Engine, exit_on_failure: bool) -> None:
    try:
        await engine.start()
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        app.state.start_error = str(exc)
        log.critical("engine failed to start: %s", exc)
        if exit_on_failure:
            os.kill(os.getpid(), signal.SIGTERM)
