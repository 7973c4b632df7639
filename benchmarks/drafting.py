"""Prompt-lookup speculative decoding (``llm.draft_tokens``) on and off, in process, interleaved.

``python -m benchmarks.drafting [--streams 1,4] [--max-tokens 64] [--draft 8]``

Two llama.cpp backends on the same GGUF (one with drafting off, one on) take turns on the same
requests: RAG-style prompts of ~550 tokens built from this repository's docs that ask for a
quote, a summary or a copy of a passage, greedy, at each concurrency. Prints one JSON line per
(backend, concurrency) with output tokens/s, TTFT p50, draft acceptance, and the share of
requests whose tokens equal the plain run's; appends to ``benchmarks/results/drafting.jsonl``.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import threading
import time
from pathlib import Path

from benchmarks.report import append_result, result_row
from configs import load_settings
from engine.backends.base import create_backend
from engine.types import BackendRequest, SamplingParams, TokenOutput
from models.cards import get_card

ROOT = Path(__file__).resolve().parent.parent
ASKS = (
    "Copy the first paragraph of the context above word for word.",
    "Quote the sentence of the context above that mentions the batch.",
    "Summarize the context above in three sentences, quoting it where you can.",
)


def _contexts(n: int, words: int = 250) -> list[str]:
    text = " ".join(
        (ROOT / "docs" / name).read_text(encoding="utf-8")
        for name in ("architecture.md", "benchmarks.md", "structured_output.md")
    ).split()
    step = max(1, (len(text) - words) // max(1, n))
    return [" ".join(text[i * step : i * step + words]) for i in range(n)]


class _Sink:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.first: dict[str, float] = {}
        self.tokens: dict[str, list[int]] = {}
        self.done: dict[str, threading.Event] = {}

    def __call__(self, outputs) -> None:
        now = time.perf_counter()
        with self.lock:
            for out in outputs:
                rid = out.request_id
                if isinstance(out, TokenOutput):
                    self.first.setdefault(rid, now)
                    self.tokens.setdefault(rid, []).append(out.token_id)
                    if out.finish_reason is None:
                        continue
                self.done.setdefault(rid, threading.Event()).set()

    def event(self, rid: str) -> threading.Event:
        with self.lock:
            return self.done.setdefault(rid, threading.Event())


def _run(backend, sink: _Sink, prompts: list[list[int]], streams: int, max_tokens: int, tag):
    """Send every prompt, ``streams`` at a time; returns (wall s, ttfts, tokens per request)."""
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    rids = [f"{tag}-{i}" for i in range(len(prompts))]
    sent: dict[str, float] = {}
    t0 = time.perf_counter()
    for lo in range(0, len(prompts), streams):
        batch = list(zip(rids[lo : lo + streams], prompts[lo : lo + streams], strict=True))
        for rid, toks in batch:
            sent[rid] = time.perf_counter()
            backend.submit(BackendRequest(rid, toks, params, backend.eos_token_ids, None))
        for rid, _ in batch:
            sink.event(rid).wait(600)
    wall = time.perf_counter() - t0
    ttfts = [sink.first[r] - sent[r] for r in rids]
    return wall, ttfts, [sink.tokens[r] for r in rids]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="gemma-3-270m-q4km")
    ap.add_argument("--streams", default="1,4")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--draft", type=int, default=8)
    ap.add_argument("--groups", type=int, default=1, help="request groups per concurrency")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks/results/drafting.jsonl")
    args = ap.parse_args()
    base = load_settings("cpu", env=None)
    card = get_card(args.model)
    backends = {}
    for label, k in (("plain", 0), (f"draft{args.draft}", args.draft)):
        llm = dataclasses.replace(base.llm, model=args.model, draft_tokens=k)
        sink = _Sink()
        b = create_backend(dataclasses.replace(base, llm=llm), card)
        b.start(sink)
        backends[label] = (b, sink)
    try:
        for streams in (int(s) for s in args.streams.split(",")):
            n = max(3, streams) * args.groups
            ctx = _contexts(n)
            b0 = next(iter(backends.values()))[0]
            prompts = [
                b0.tokenize(f"Context:\n{ctx[i]}\n\n{ASKS[i % len(ASKS)]}\n", add_bos=True,
                            parse_special=False)
                for i in range(n)
            ]
            # Interleaved: each group of ``streams`` requests runs on one backend, then the
            # other, so a shared machine's load swings hit both alike.
            acc = {label: {"wall": 0.0, "ttfts": [], "toks": []} for label in backends}
            before = {label: b.stats() for label, (b, _) in backends.items()}
            for lo in range(0, n, streams):
                for label, (b, sink) in backends.items():
                    wall, ttfts, toks = _run(b, sink, prompts[lo : lo + streams], streams,
                                             args.max_tokens, f"{label}-{streams}-{lo}")
                    acc[label]["wall"] += wall
                    acc[label]["ttfts"] += ttfts
                    acc[label]["toks"] += toks
            plain_tokens = acc["plain"]["toks"]
            for label, (b, _) in backends.items():
                after = b.stats()
                drafted = after.draft_tokens - before[label].draft_tokens
                accepted = after.draft_accepted - before[label].draft_accepted
                toks, wall = acc[label]["toks"], acc[label]["wall"]
                out_tokens = sum(len(t) for t in toks)
                append_result(
                    result_row(
                        "drafting",
                        model=args.model,
                        backend=f"llamacpp-{label}",
                        settings={"streams": streams, "requests": n,
                                  "prompt_tokens_mean": round(statistics.mean(map(len, prompts))),
                                  "max_tokens": args.max_tokens, "draft_tokens":
                                  0 if label == "plain" else args.draft,
                                  "n_threads": base.llm.n_threads, "interleaved": True},
                        figures={
                            "output_tok_s": round(out_tokens / wall, 2),
                            "wall_s": round(wall, 2),
                            "ttft_p50_ms": round(statistics.median(acc[label]["ttfts"]) * 1000, 1),
                            "drafted": drafted,
                            "accepted": accepted,
                            "acceptance": round(accepted / drafted, 3) if drafted else None,
                            "same_tokens_as_plain": sum(
                                a == p for a, p in zip(toks, plain_tokens, strict=True)
                            ) / n,
                        },
                    ),
                    args.results,
                )
    finally:
        for b, _ in backends.values():
            b.close()


if __name__ == "__main__":
    main()
