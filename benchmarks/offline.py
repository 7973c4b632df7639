"""The same workload straight into ``engine.Engine`` (no HTTP): the server's overhead is the gap.

Each request becomes one ``GenerateRequest`` (the text prompt or the messages, the workload's
sampling and output length); the first ``ChoiceDelta`` carrying tokens is the first token, later
deltas give the inter-token gaps, and ``GenerationDone.usage`` the token counts, exactly as the
HTTP driver reads them from the stream.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from benchmarks.driver import LoadShape, RunResult, run_requests
from benchmarks.report import RequestRecord
from benchmarks.workload import Workload

if TYPE_CHECKING:
    from configs import Settings

log = logging.getLogger(__name__)


@asynccontextmanager
async def started_engine(settings: Settings) -> AsyncIterator[Any]:
    """An ``Engine`` started on ``settings`` and closed on exit."""
    from engine.engine import Engine

    engine = Engine(settings)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.close()


def _generate_request(workload: Workload, i: int, model: str):
    from engine.types import GenerateRequest, SamplingParams

    p = workload.prompt(i)
    n = workload.max_tokens(i)
    params = SamplingParams(
        max_tokens=n,
        min_tokens=n if workload.fixed_output else 0,
        ignore_eos=workload.fixed_output,
        temperature=workload.temperature,
    )
    messages = None
    if workload.api == "chat":
        from models.chat_templates import ChatMessage

        raw = p.messages or ({"role": "user", "content": p.text or ""},)
        messages = [ChatMessage(role=m["role"], content=m["content"]) for m in raw]
    return GenerateRequest(
        request_id=f"bench-{uuid.uuid4().hex[:12]}",
        model=model,
        params=params,
        prompt=None if messages else p.text,
        messages=messages,
    )


async def send_offline(engine: Any, workload: Workload, i: int, t0: float, model: str):
    """Run request ``i`` through ``engine.generate`` and time it like the HTTP driver does."""
    from engine.errors import HearthError
    from engine.types import ChoiceDelta, GenerationDone

    start = time.perf_counter()
    rec = RequestRecord(index=i, start_s=start - t0, status=200)
    last = None
    parts: list[str] = []
    try:
        async for ev in engine.generate(_generate_request(workload, i, model)):
            now = time.perf_counter()
            if isinstance(ev, ChoiceDelta):
                if ev.token_ids or ev.text:
                    if last is None:
                        rec.ttft_s = now - start
                    else:
                        rec.itl_s.append(now - last)
                    last = now
                    parts.append(ev.text)
                if ev.finish_reason is not None:
                    rec.finish_reason = str(ev.finish_reason)
            elif isinstance(ev, GenerationDone):
                rec.prompt_tokens = ev.usage.prompt_tokens
                rec.output_tokens = ev.usage.completion_tokens
    except HearthError as exc:
        rec.status, rec.error = exc.status, exc.message
    rec.e2e_s = time.perf_counter() - start
    rec.text = "".join(parts)
    return rec


async def run_offline(
    engine: Any, workload: Workload, load: LoadShape, *, model: str, progress: bool = True
) -> RunResult:
    async def send(i: int, t0: float) -> RequestRecord:
        return await send_offline(engine, workload, i, t0, model)

    return await run_requests(send, load, name="offline", progress=progress)
