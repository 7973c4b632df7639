"""Two tenants, one flooding: does the other still get answers in time?

Starts a Hearth server with an admin key, creates tenants ``flood`` and ``quiet`` with one key
each, then alternates two phases (``--rounds`` pairs, interleaved so machine noise hits both):

- idle: ``quiet`` sends ``--probes`` chat requests one after another, alone on the server;
- flood: the same while ``flood`` keeps ``--concurrency`` chat requests in flight (closed loop).

One JSON line per phase kind (git sha, machine, model, settings, figures: quiet's p50/p95
latency, flood's completed and refused requests), appended to
``benchmarks/results/tenant_flood.jsonl``; the flood line carries ``p95_ratio`` (flood/idle).

    python -m benchmarks.tenant_flood --concurrency 100 --probes 20 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.launch import HearthServer
from benchmarks.report import append_result, result_row

ADMIN_KEY = "tenant-flood-admin-key"
RESULTS = Path(__file__).parent / "results" / "tenant_flood.jsonl"


def _body(model: str, max_tokens: int, text: str) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": max_tokens,
        "temperature": 0.0,
    }


async def _keys(client: httpx.AsyncClient) -> dict[str, str]:
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    keys = {}
    for name in ("flood", "quiet"):
        r = await client.post("/v1/admin/tenants", json={"name": name}, headers=admin)
        r.raise_for_status()
        r = await client.post(f"/v1/admin/tenants/{name}/keys", json={}, headers=admin)
        keys[name] = r.json()["key"]
    return keys


async def _probe(client: httpx.AsyncClient, key: str, args: argparse.Namespace) -> list[float]:
    """``quiet``'s requests, one after another; their latencies in seconds."""
    latencies = []
    for i in range(args.probes):
        t0 = time.perf_counter()
        r = await client.post(
            "/v1/chat/completions",
            json=_body(args.model, args.max_tokens, f"Say hello number {i}."),
            headers={"Authorization": f"Bearer {key}"},
        )
        r.raise_for_status()
        latencies.append(time.perf_counter() - t0)
    return latencies


async def _flood(
    client: httpx.AsyncClient, key: str, args: argparse.Namespace, stop: asyncio.Event
) -> dict[str, int]:
    counts = {"ok": 0, "refused": 0, "other": 0}

    async def worker(w: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            body = _body(args.model, args.max_tokens, f"Write about topic {w}-{n}.")
            try:
                r = await client.post(
                    "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
                )
            except httpx.HTTPError:
                counts["other"] += 1
                continue
            kind = (
                "ok"
                if r.status_code == 200
                else "refused"
                if r.status_code in (429, 503)
                else "other"
            )
            counts[kind] += 1
            if r.status_code in (429, 503):
                await asyncio.sleep(float(r.headers.get("retry-after", "1")))

    await asyncio.gather(*(worker(w) for w in range(args.concurrency)))
    return counts


def _figures(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return {
        "probes": len(ordered),
        "p50_s": round(statistics.median(ordered), 4),
        "p95_s": round(p95, 4),
    }


async def run(url: str, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    limits = httpx.Limits(max_connections=args.concurrency + 8)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        keys = await _keys(client)
        await _probe(client, keys["quiet"], argparse.Namespace(**{**vars(args), "probes": 2}))
        idle: list[float] = []
        flooded: list[float] = []
        flood_counts = {"ok": 0, "refused": 0, "other": 0}
        for _ in range(args.rounds):
            idle += await _probe(client, keys["quiet"], args)
            stop = asyncio.Event()
            flood = asyncio.create_task(_flood(client, keys["flood"], args, stop))
            await asyncio.sleep(args.ramp_s)  # the flood fills the queue first
            flooded += await _probe(client, keys["quiet"], args)
            stop.set()
            for k, v in (await flood).items():
                flood_counts[k] += v
    idle_f, flood_f = _figures(idle), _figures(flooded)
    flood_f["p95_ratio"] = round(flood_f["p95_s"] / idle_f["p95_s"], 2)
    flood_f.update({f"flood_{k}": v for k, v in flood_counts.items()})
    return {"idle": idle_f, "flood": flood_f}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--model", default="gemma-3-270m-q4km")
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--probes", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--ramp-s", type=float, default=2.0)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    server = HearthServer(profile=args.profile, overrides={"HEARTH_ADMIN_KEY": ADMIN_KEY})
    with server:
        figures = asyncio.run(run(server.base_url, args))
    settings = {
        **server.settings(),
        "concurrency": args.concurrency,
        "probes": args.probes,
        "rounds": args.rounds,
        "max_tokens": args.max_tokens,
    }
    for phase, values in figures.items():
        row = result_row(
            f"tenant_flood_{phase}",
            model=args.model,
            backend="llamacpp",
            settings=settings,
            figures=values,
        )
        append_result(row, args.results)


if __name__ == "__main__":
    main()
