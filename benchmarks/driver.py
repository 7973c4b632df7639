"""Drive an OpenAI-compatible server over HTTP (httpx, streamed) and time every request.

Load shapes: a fixed number of concurrent clients each sending its next request when the last
finished (``concurrency``), or Poisson arrivals at ``rate`` requests/s (optionally capped by
``concurrency``). Each request streams (SSE) so TTFT and inter-token gaps are seen as a client
sees them; usage comes from the final chunk (``stream_options.include_usage``) when the server
sends it, else the number of content chunks is taken as the token count.

Importable by other benchmarks: ``await run_load(target, workload, LoadShape(...))`` returns the
records and the wall time; :func:`measure` adds the summary and the server-metrics deltas.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from benchmarks.report import SLO, RequestRecord, summarize
from benchmarks.workload import Workload, request_body

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    """A server to measure. ``name`` labels it in results (e.g. ``hearth``, ``llama-server``)."""

    name: str
    base_url: str  # up to and excluding /v1, e.g. http://127.0.0.1:8123
    model: str
    api_key: str | None = None
    backend: str = "unknown"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


@dataclass(frozen=True)
class LoadShape:
    """How many requests and how they arrive. ``rate`` None = closed loop at ``concurrency``."""

    n_requests: int
    concurrency: int | None = 1
    rate: float | None = None  # requests/s, Poisson arrivals
    seed: int = 0
    # Index of the first request: runs that must not share prompts (and so prefix caches) start
    # at different indices of the workload's prompt list.
    first_index: int = 0
    timeout_s: float = 600.0

    def settings(self) -> dict[str, Any]:
        return {
            "n_requests": self.n_requests,
            "concurrency": self.concurrency,
            "request_rate": self.rate,
            "seed": self.seed,
        }


@dataclass
class RunResult:
    records: list[RequestRecord]
    duration_s: float


# ---- one request ------------------------------------------------------------------------------


def _content(chunk: dict[str, Any]) -> tuple[str, str | None]:
    """(text, finish_reason) of the first choice of a streamed chunk (chat or completions)."""
    choices = chunk.get("choices") or []
    if not choices:
        return "", None
    c = choices[0]
    text = c.get("text")
    if text is None:
        text = (c.get("delta") or {}).get("content") or ""
    return text, c.get("finish_reason")


async def send_one(
    client: httpx.AsyncClient,
    target: Target,
    workload: Workload,
    index: int,
    t0: float,
) -> RequestRecord:
    """Send request ``index`` of the workload and time it; never raises for server errors."""
    path = "/v1/chat/completions" if workload.api == "chat" else "/v1/completions"
    body = request_body(workload, index, target.model)
    start = time.perf_counter()
    rec = RequestRecord(index=index, start_s=start - t0)
    try:
        async with client.stream(
            "POST", target.base_url + path, json=body, headers=target.headers()
        ) as resp:
            rec.status = resp.status_code
            if not 200 <= resp.status_code < 300:
                rec.error = _error_message(await resp.aread())
                rec.e2e_s = time.perf_counter() - start
                return rec
            await _read_stream(resp, rec, start)
    except httpx.HTTPError as exc:
        rec.error = f"{type(exc).__name__}: {exc}"
    rec.e2e_s = time.perf_counter() - start
    _check_schema(rec, workload)
    return rec


async def _read_stream(resp: httpx.Response, rec: RequestRecord, start: float) -> None:
    last = None
    chunks = 0
    parts: list[str] = []
    usage = None
    async for line in resp.aiter_lines():
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            break
        chunk = json.loads(data)
        if "error" in chunk:  # an error after the stream started
            rec.error = _error_message(data.encode())
            break
        now = time.perf_counter()
        text, finish = _content(chunk)
        if text:
            if last is None:
                rec.ttft_s = now - start
            else:
                rec.itl_s.append(now - last)
            last = now
            chunks += 1
            parts.append(text)
        if finish:
            rec.finish_reason = finish
        usage = chunk.get("usage") or usage
    rec.text = "".join(parts)
    if usage:
        rec.prompt_tokens = usage.get("prompt_tokens")
        rec.output_tokens = int(usage.get("completion_tokens") or chunks)
    else:
        rec.output_tokens = chunks


def _error_message(raw: bytes) -> str:
    try:
        err = json.loads(raw)
        if isinstance(err, dict) and isinstance(err.get("error"), dict):
            return str(err["error"].get("message"))
        return str(err)[:500]
    except ValueError:
        return raw.decode("utf-8", errors="replace")[:500]


def _check_schema(rec: RequestRecord, workload: Workload) -> None:
    """Sets ``schema_valid`` when the workload asked for JSON output."""
    rf = workload.response_format
    if not rec.ok or not rf or rf.get("type") not in ("json_schema", "json_object"):
        return
    try:
        doc = json.loads(rec.text)
    except ValueError:
        rec.schema_valid = False
        return
    schema = (rf.get("json_schema") or {}).get("schema")
    if schema is None:
        rec.schema_valid = isinstance(doc, dict)
        return
    import jsonschema

    rec.schema_valid = jsonschema.Draft202012Validator(schema).is_valid(doc)


# ---- a run ------------------------------------------------------------------------------------


def _client(load: LoadShape) -> httpx.AsyncClient:
    n = max(load.concurrency or 1, 1) if load.rate is None else 1000
    limits = httpx.Limits(max_connections=n + 4, max_keepalive_connections=n + 4)
    return httpx.AsyncClient(timeout=httpx.Timeout(load.timeout_s), limits=limits)


async def run_load(
    target: Target, workload: Workload, load: LoadShape, *, progress: bool = True
) -> RunResult:
    """Send ``load.n_requests`` requests of ``workload`` to ``target``; returns records in order."""
    async with _client(load) as client:

        async def send(i: int, t0: float) -> RequestRecord:
            return await send_one(client, target, workload, i, t0)

        return await run_requests(send, load, name=target.name, progress=progress)


async def run_requests(
    send: Callable[[int, float], Awaitable[RequestRecord]],
    load: LoadShape,
    *,
    name: str = "run",
    progress: bool = True,
) -> RunResult:
    """Call ``send(i, t0)`` for every request index in the load's shape (any transport)."""
    bar = _progress(load.n_requests, name, progress)
    t0 = time.perf_counter()

    async def one(i: int) -> RequestRecord:
        rec = await send(i, t0)
        bar.update(1)
        return rec

    try:
        records = await (_closed_loop(one, load) if load.rate is None else _poisson(one, load))
    finally:
        bar.close()
    duration = time.perf_counter() - t0
    return RunResult(sorted(records, key=lambda r: r.index), duration)


async def _closed_loop(one, load: LoadShape) -> list[RequestRecord]:
    next_i = iter(range(load.first_index, load.first_index + load.n_requests))
    records: list[RequestRecord] = []

    async def worker() -> None:
        for i in next_i:
            records.append(await one(i))

    await asyncio.gather(*(worker() for _ in range(max(load.concurrency or 1, 1))))
    return records


async def _poisson(one, load: LoadShape) -> list[RequestRecord]:
    rng = random.Random(load.seed)
    cap = asyncio.Semaphore(load.concurrency) if load.concurrency else None

    async def capped(i: int) -> RequestRecord:
        if cap is None:
            return await one(i)
        async with cap:
            return await one(i)

    tasks = []
    for i in range(load.first_index, load.first_index + load.n_requests):
        tasks.append(asyncio.create_task(capped(i)))
        await asyncio.sleep(rng.expovariate(load.rate))
    return list(await asyncio.gather(*tasks))


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="req", disable=not enabled, leave=False)


# ---- server metrics ---------------------------------------------------------------------------


async def scrape_metrics(target: Target) -> dict[str, float] | None:
    """The server's Prometheus samples (no buckets), or None when it has no ``/metrics``."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        async with httpx.AsyncClient(timeout=10) as client:
            resp = await client.get(target.base_url + "/metrics", headers=target.headers())
    except httpx.HTTPError:
        return None
    if resp.status_code != 200:
        return None
    samples: dict[str, float] = {}
    for fam in text_string_to_metric_families(resp.text):
        if fam.name.startswith(("python_", "process_")):
            continue
        for s in fam.samples:
            if s.name.endswith(("_bucket", "_created")):
                continue
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}" if labels else s.name] = float(s.value)
    return samples


def metrics_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Counters (``_total``, ``_sum``, ``_count``) as differences, gauges as the value after."""
    out = {}
    for key, value in after.items():
        base = key.split("{", 1)[0]
        if base.endswith(("_total", "_sum", "_count")):
            d = value - before.get(key, 0.0)
            if d:
                out[key] = round(d, 6)
        else:
            out[key] = value
    return out


async def measure(
    target: Target,
    workload: Workload,
    load: LoadShape,
    *,
    slo: SLO | None = None,
    progress: bool = True,
) -> tuple[dict[str, Any], RunResult]:
    """One measured run: scrape metrics, run, scrape again. Returns (figures, run)."""
    before = await scrape_metrics(target)
    run = await run_load(target, workload, load, progress=progress)
    figures = summarize(run.records, run.duration_s, slo)
    after = await scrape_metrics(target) if before is not None else None
    if before is not None and after is not None:
        figures["server_metrics"] = metrics_delta(before, after)
    return figures, run


async def warm_up(target: Target, workload: Workload, n: int = 2) -> None:
    """A few short requests so the first measured one pays no start-up cost. They use the last
    prompt of the workload, which measured runs should leave unused (see ``prompts_needed``)."""
    short = Workload(
        prompts=workload.prompts[-1:], api=workload.api, output_tokens=8, fixed_output=True
    )
    await run_load(target, short, LoadShape(n_requests=n, concurrency=1), progress=False)
