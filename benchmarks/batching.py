"""Aggregate decode throughput of the llama.cpp backend at 1 and N streams, interleaved rounds.

    python -m benchmarks.batching --streams 8 --rounds 2 [--no-batch-invariant]

Drives the backend directly (no engine, no HTTP) so the figure is the batching efficiency of the
step loop itself. Prints one result line (``benchmarks.report``): tok/s per round and their ratio.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from pathlib import Path

from benchmarks.report import append_result, result_row
from configs import load_settings
from engine.backends.llamacpp import LlamaCppBackend
from engine.types import BackendRequest, SamplingParams
from models import get_card


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--output-tokens", type=int, default=128)
    ap.add_argument("--prompt-words", type=int, default=45)
    ap.add_argument("--no-batch-invariant", action="store_true")
    ap.add_argument("--results", type=Path, help="also append the result line to this file")
    args = ap.parse_args()
    invariant = not args.no_batch_invariant
    env = dict(os.environ, HEARTH_LLM_BATCH_INVARIANT=str(invariant).lower())
    settings = load_settings(args.profile, env=env)
    backend = LlamaCppBackend(settings, get_card(settings.llm.model))
    finished: set[str] = set()
    done = threading.Condition()

    def sink(outputs) -> None:
        with done:
            finished.update(o.request_id for o in outputs if getattr(o, "finish_reason", None))
            done.notify_all()

    backend.start(sink)
    params = SamplingParams(max_tokens=args.output_tokens, temperature=1.0, ignore_eos=True)

    def run(n: int, tag: str) -> float:
        reqs = [
            BackendRequest(f"{tag}-{i}", backend.tokenize(
                f"Story {tag} {i}: " + "the river runs " * args.prompt_words,
                add_bos=True, parse_special=False), params)
            for i in range(n)
        ]
        start = time.perf_counter()
        for r in reqs:
            backend.submit(r)
        with done:
            done.wait_for(lambda: all(r.request_id in finished for r in reqs))
        return n * args.output_tokens / (time.perf_counter() - start)

    run(1, "warmup")
    one, many = [], []
    for k in range(args.rounds):
        one.append(run(1, f"one{k}"))
        many.append(run(args.streams, f"many{k}"))
    backend.close()
    row = result_row(
        "batching",
        model=settings.llm.model,
        backend="llamacpp",
        settings={
            "batch_invariant": invariant,
            "streams": args.streams,
            "output_tokens": args.output_tokens,
            "threads": settings.llm.n_threads,
        },
        figures={
            "tok_s_1": [round(x, 1) for x in one],
            f"tok_s_{args.streams}": [round(x, 1) for x in many],
            "ratio": round(sum(many) / sum(one), 2),
        },
    )
    append_result(row, args.results)

if __name__ == "__main__":
    main()
