"""Benchmarks, read-only: ``GET /v1/benchmarks`` (latest result lines of each suite and the plot
names) and ``GET /v1/benchmarks/plots/{name}`` (one PNG). Any signed-in tenant may read them."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Response, get

from engine import BenchmarkResults

_RESULTS = BenchmarkResults()


@get("/v1/benchmarks")
async def list_benchmarks() -> dict[str, Any]:
    data = await asyncio.to_thread(_RESULTS.latest)
    plots = await asyncio.to_thread(_RESULTS.plots)
    return {"object": "list", "data": data, "plots": plots}


@get("/v1/benchmarks/plots/{name:str}")
async def benchmark_plot(name: str) -> Response[bytes]:
    return Response(await asyncio.to_thread(_RESULTS.plot, name), media_type="image/png")


HANDLERS = [list_benchmarks, benchmark_plot]
