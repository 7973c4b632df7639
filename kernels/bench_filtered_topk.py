"""Benchmark: the filtered top-k kernel against its PyTorch reference (matmul + mask + topk).

One JSON line per run. The kernel runs where Triton can compile it (a CUDA GPU); on CPU only the
reference is timed (the interpreter is for correctness, not speed). Achieved bandwidth is the
embedding matrix bytes read per call over the time: the kernel reads it once per query block.

Usage: ``python -m kernels.bench_filtered_topk --rows 1000000 --queries 32 --k 10``.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time

import torch

from kernels.filtered_topk import filtered_topk, filtered_topk_reference, triton_available


def _time(fn, repeats: int, sync) -> float:
    fn()  # warm-up (and compile)
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync()
    return (time.perf_counter() - start) / repeats


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=16)
    parser.add_argument("--tenants", type=int, default=8)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    g = torch.Generator().manual_seed(args.seed)
    e = torch.nn.functional.normalize(torch.randn(args.rows, args.dim, generator=g), dim=1)
    q = torch.nn.functional.normalize(torch.randn(args.queries, args.dim, generator=g), dim=1)
    rt = torch.randint(0, args.tenants, (args.rows,), generator=g, dtype=torch.int32)
    rm = torch.randint(0, 16, (args.rows,), generator=g, dtype=torch.int32)
    qt = torch.randint(0, args.tenants, (args.queries,), generator=g, dtype=torch.int32)
    qr = torch.ones(args.queries, dtype=torch.int32)
    inputs = [t.to(device) for t in (q, e, rt, rm, qt, qr)]
    ref_s = _time(lambda: filtered_topk_reference(*inputs, args.k), args.repeats, sync)
    result = {
        "bench": "filtered_topk",
        "git_sha": _git_sha(),
        "machine": platform.node(),
        "device": torch.cuda.get_device_name() if cuda else platform.processor() or "cpu",
        "settings": vars(args),
        "reference_ms": round(ref_s * 1e3, 3),
        "matrix_gb_per_s_reference": round(e.numel() * 4 / ref_s / 1e9, 1),
    }
    if cuda and triton_available():
        kern_s = _time(lambda: filtered_topk(*inputs, args.k), args.repeats, sync)
        result["kernel_ms"] = round(kern_s * 1e3, 3)
        result["speedup"] = round(ref_s / kern_s, 2)
        result["matrix_gb_per_s_kernel"] = round(e.numel() * 4 / kern_s / 1e9, 1)
    print(json.dumps(result))  # the one result line


def _git_sha() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


if __name__ == "__main__":
    main()
