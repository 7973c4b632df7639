"""Jobs: ``GET /v1/jobs[?status=&limit=]``, ``GET /v1/jobs/{id}``, ``POST /v1/jobs/{id}/cancel``,
``POST /v1/jobs/{id}/retry`` (dead letters) and ``GET /v1/jobs/{id}/events`` (SSE progress).

One shape for every job (ingestion, analysis, durable queue jobs): see docs/jobs.md. Another
tenant's job answers 404.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import msgspec
from litestar import Request, get, post
from litestar.response import ServerSentEvent, ServerSentEventMessage
from litestar.status_codes import HTTP_200_OK

from engine import InvalidRequestError
from server.auth import tenant_of
from server.state import services
from server.wire import JobInfo, ListOf

if TYPE_CHECKING:
    from engine import Job

STATUSES = ("queued", "running", "succeeded", "failed", "dead", "cancelled")
MAX_LIST = 500
_json = msgspec.json.Encoder()


def job_out(job: Job) -> JobInfo:
    return JobInfo(
        id=job.id,
        kind=job.kind,
        status=job.status,
        progress=job.progress,
        stage=job.stage,
        attempts=job.attempts,
        max_attempts=job.max_attempts,
        total=job.total,
        done=job.done,
        failed=job.failed,
        skipped=job.skipped,
        error=job.error,
        result=job.result,
        created_at=int(job.created_at.timestamp()),
        updated_at=int(job.updated_at.timestamp()),
    )


@get("/v1/jobs")
async def list_jobs(request: Request) -> ListOf[JobInfo]:
    """Newest first; ``?status=dead`` lists the dead letters."""
    status = request.query_params.get("status")
    if status is not None and status not in STATUSES:
        raise InvalidRequestError(f"status must be one of {', '.join(STATUSES)}", param="status")
    raw_limit = request.query_params.get("limit", "50")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIST:
        raise InvalidRequestError(f"limit must be an integer 1-{MAX_LIST}", param="limit")
    jobs = await services(request).jobs.list(tenant_of(request), status, int(raw_limit))
    return ListOf(data=[job_out(j) for j in jobs])


@get("/v1/jobs/{job_id:str}")
async def get_job(request: Request, job_id: str) -> JobInfo:
    return job_out(await services(request).jobs.get(tenant_of(request), job_id))


@post("/v1/jobs/{job_id:str}/cancel", status_code=HTTP_200_OK)
async def cancel_job(request: Request, job_id: str) -> JobInfo:
    """A queued job ends ``cancelled``; a running durable job stops at its next heartbeat."""
    return job_out(await services(request).jobs.cancel(tenant_of(request), job_id))


@post("/v1/jobs/{job_id:str}/retry", status_code=HTTP_200_OK)
async def retry_job(request: Request, job_id: str) -> JobInfo:
    """A dead (or cancelled) durable job goes back to ``queued`` with fresh attempts."""
    return job_out(await services(request).jobs.retry(tenant_of(request), job_id))


@get("/v1/jobs/{job_id:str}/events")
async def job_events(request: Request, job_id: str) -> ServerSentEvent:
    """``event: progress`` with the job as JSON at every change, ``event: done`` at the end."""
    events = await services(request).jobs.events(tenant_of(request), job_id)

    async def stream() -> AsyncIterator[ServerSentEventMessage]:
        async for job in events:
            if job is None:
                yield ServerSentEventMessage(comment="keep-alive")
                continue
            kind = "done" if job.finished else "progress"
            yield ServerSentEventMessage(data=_json.encode(job_out(job)).decode(), event=kind)

    return ServerSentEvent(stream())


HANDLERS = [list_jobs, get_job, cancel_job, retry_job, job_events]
