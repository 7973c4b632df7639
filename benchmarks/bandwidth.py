"""Achieved memory bandwidth of single-stream decode, against a small measured probe.

Decoding one token of one stream reads every weight once, so ``weight_bytes × tokens/s`` is the
bandwidth the decoder achieves; the machine's streaming-read bandwidth bounds it. The probe sums
a buffer much larger than the caches from ``threads`` threads (NumPy releases the GIL in its
reductions) and keeps the best of a few repeats.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np


def probe_bandwidth(threads: int = 2, mib: int = 512, repeats: int = 5) -> float:
    """Streaming-read bandwidth in GB/s (10^9 bytes/s) with ``threads`` threads."""
    buf = np.ones(mib * 2**20 // 4, dtype=np.float32)
    parts = np.array_split(buf, threads)
    best = float("inf")
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for _ in range(repeats):
            t = time.perf_counter()
            list(pool.map(np.sum, parts))
            best = min(best, time.perf_counter() - t)
    return buf.nbytes / best / 1e9


def achieved_bandwidth(
    weight_bytes: int, tpot_ms: float | None, probe_gbs: float | None
) -> dict[str, Any]:
    """Figures for single-stream decode: tokens/s from TPOT, GB/s read, fraction of the probe."""
    if not tpot_ms:
        return {}
    tok_s = 1000.0 / tpot_ms
    gbs = weight_bytes * tok_s / 1e9
    out: dict[str, Any] = {
        "decode_tok_s": round(tok_s, 2),
        "weight_bytes": weight_bytes,
        "achieved_gb_s": round(gbs, 2),
    }
    if probe_gbs:
        out["probe_gb_s"] = round(probe_gbs, 2)
        out["bound_tok_s"] = round(probe_gbs * 1e9 / weight_bytes, 1)
        out["fraction_of_probe"] = round(gbs / probe_gbs, 3)
    return out
