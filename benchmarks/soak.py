"""Soak: mixed traffic from several tenants for a long time; does the server's memory stay flat?

Starts a Hearth server with an admin key, creates ``--tenants`` tenants (a key and a collection
each), then keeps ``--concurrency`` clients busy for ``--minutes`` with a mix of chat (plain
and streamed, sampled so nothing is cached), embeddings, uploads of small documents (each
deleted again a few uploads later, so the corpus stays bounded), retrieval, tokenize and reads
(usage, audit, jobs). Every ``--sample-s`` seconds it reads the resident memory (RSS) of the
server process and its children from ``/proc``.

One JSON line (git sha, machine, model, settings, figures) appended to
``benchmarks/results/soak.jsonl``: requests per kind and status class, 5xx count, RSS after the
warm-up, at the end and at most, the mean RSS of the first and last quarter after the warm-up
and their difference (``rss_growth_mib``), and the least-squares slope (``rss_slope_mib_per_h``).

    python -m benchmarks.soak --minutes 30            # the full soak
    python -m benchmarks.soak --minutes 3 --warmup-s 30   # a short check
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from benchmarks.launch import HearthServer
from benchmarks.report import append_result, result_row

ADMIN_KEY = "soak-admin-key"
EMBEDDER = "all-minilm-l6-v2"
RESULTS = Path(__file__).parent / "results" / "soak.jsonl"
KINDS = ("chat", "stream", "embed", "upload", "retrieve", "tokenize", "read")
WEIGHTS = (4, 2, 2, 1, 2, 1, 2)


def rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` and its children (MiB), from /proc."""
    total = 0
    for p in [pid, *_children(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    out = []
    for child in (int(c) for c in text.split()):
        out += [child, *_children(child)]
    return out


def memory_figures(samples: list[tuple[float, float]]) -> dict[str, float]:
    """From (seconds, MiB) samples taken after the warm-up: first, last, max, the quarters'
    means and their difference, and the least-squares slope in MiB per hour."""
    if len(samples) < 2:
        raise ValueError("need at least two samples after the warm-up")
    ts = [t for t, _ in samples]
    ms = [m for _, m in samples]
    q = max(1, len(ms) // 4)
    first, last = sum(ms[:q]) / q, sum(ms[-q:]) / q
    mean_t, mean_m = sum(ts) / len(ts), sum(ms) / len(ms)
    var = sum((t - mean_t) ** 2 for t in ts)
    slope = sum((t - mean_t) * (m - mean_m) for t, m in samples) / var if var else 0.0
    return {
        "rss_start_mib": round(ms[0], 1),
        "rss_end_mib": round(ms[-1], 1),
        "rss_max_mib": round(max(ms), 1),
        "rss_first_quarter_mib": round(first, 1),
        "rss_last_quarter_mib": round(last, 1),
        "rss_growth_mib": round(last - first, 1),
        "rss_slope_mib_per_h": round(slope * 3600, 1),
        "samples": len(samples),
    }


class Tenant:
    def __init__(self, name: str, key: str) -> None:
        self.name = name
        self.headers = {"Authorization": f"Bearer {key}"}
        self.uploaded: list[str] = []
        self.n = 0


async def _setup(client: httpx.AsyncClient, count: int) -> list[Tenant]:
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    tenants = []
    for i in range(count):
        name = f"soak{i}"
        (
            await client.post("/v1/admin/tenants", json={"name": name}, headers=admin)
        ).raise_for_status()
        r = await client.post(f"/v1/admin/tenants/{name}/keys", json={}, headers=admin)
        r.raise_for_status()
        tenant = Tenant(name, r.json()["key"])
        r = await client.post("/v1/collections", json={"name": "kb"}, headers=tenant.headers)
        r.raise_for_status()
        tenants.append(tenant)
    return tenants


async def _one(client: httpx.AsyncClient, t: Tenant, kind: str, model: str) -> int:
    t.n += 1
    h = t.headers
    chat = {
        "model": model,
        "messages": [{"role": "user", "content": f"Tell me about item {t.n} of {t.name}."}],
        "max_tokens": 16,
        "temperature": 0.8,
    }
    if kind == "chat":
        return (await client.post("/v1/chat/completions", json=chat, headers=h)).status_code
    if kind == "stream":
        async with client.stream(
            "POST", "/v1/chat/completions", json={**chat, "stream": True}, headers=h
        ) as r:
            async for _ in r.aiter_lines():
                pass
            return r.status_code
    if kind == "embed":
        texts = [f"{t.name} sentence {t.n} {j}" for j in range(4)]
        body = {"input": texts, "model": EMBEDDER}
        return (await client.post("/v1/embeddings", json=body, headers=h)).status_code
    if kind == "upload":
        doc_id = f"d{t.n}"
        body = {"documents": [{"id": doc_id, "text": f"Document {t.n} of {t.name}. " * 40}]}
        r = await client.post("/v1/collections/kb/documents", json=body, headers=h)
        if r.status_code < 300:
            t.uploaded.append(doc_id)
        if len(t.uploaded) > 20:  # keep the corpus bounded: delete the oldest
            old = t.uploaded.pop(0)
            await client.delete(f"/v1/collections/kb/documents/{old}", headers=h)
        return r.status_code
    if kind == "retrieve":
        body = {"query": f"document {t.n}", "collection": "kb", "top_k": 3}
        return (await client.post("/v1/retrieve", json=body, headers=h)).status_code
    if kind == "tokenize":
        return (
            await client.post("/tokenize", json={"prompt": "hello " * 20}, headers=h)
        ).status_code
    path = random.choice(["/v1/usage", "/v1/audit", "/v1/jobs", "/v1/collections"])
    return (await client.get(path, headers=h)).status_code


async def run(server: HearthServer, args: argparse.Namespace) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=args.concurrency + 4)
    counts: Counter[str] = Counter()
    samples: list[tuple[float, float]] = []
    rng = random.Random(args.seed)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=300, limits=limits) as client:
        tenants = await _setup(client, args.tenants)
        started = time.monotonic()
        end = started + args.minutes * 60
        assert server.proc is not None
        pid = server.proc.pid

        async def worker(w: int) -> None:
            while time.monotonic() < end:
                tenant = tenants[w % len(tenants)]
                kind = rng.choices(KINDS, WEIGHTS)[0]
                try:
                    status = await _one(client, tenant, kind, args.model)
                except httpx.HTTPError:
                    status = 0
                counts[f"{kind}_{status // 100}xx" if status else f"{kind}_error"] += 1
                if status in (429, 503):
                    await asyncio.sleep(1.0)

        async def sampler() -> None:
            while time.monotonic() < end:
                now = time.monotonic() - started
                if now >= args.warmup_s:
                    samples.append((now, rss_mib(pid)))
                await asyncio.sleep(args.sample_s)

        await asyncio.gather(sampler(), *(worker(w) for w in range(args.concurrency)))
    figures: dict[str, Any] = memory_figures(samples)
    figures["requests"] = sum(counts.values())
    figures["errors_5xx"] = sum(v for k, v in counts.items() if k.endswith("_5xx"))
    figures["by_kind"] = dict(sorted(counts.items()))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--model", default="gemma-3-270m-q4km")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--warmup-s", type=float, default=120.0)
    parser.add_argument("--sample-s", type=float, default=10.0)
    parser.add_argument("--tenants", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    server = HearthServer(
        profile=args.profile,
        overrides={"HEARTH_ADMIN_KEY": ADMIN_KEY, "HEARTH_LLM_MODEL": args.model},
    )
    with server:
        figures = asyncio.run(run(server, args))
    settings = {
        **server.settings(),
        "minutes": args.minutes,
        "warmup_s": args.warmup_s,
        "tenants": args.tenants,
        "concurrency": args.concurrency,
        "mix": dict(zip(KINDS, WEIGHTS, strict=True)),
    }
    row = result_row(
        "soak", model=args.model, backend="llamacpp", settings=settings, figures=figures
    )
    append_result(row, args.results)


if __name__ == "__main__":
    main()
