"""Hearth's own work against llama.cpp's ``llama-server``: RAG answers, extraction, summaries.

``python -m benchmarks.hearth_work [--streams 1,8] [--requests 3,16] [--rounds 2]``

The prompts are built with Hearth's own prompt builders (``engine.rag`` context blocks and
instruction, ``engine.tasks.extract.build_prompt``, the analysis ``piece`` ask) over this
repository's documents, so they have the shape Hearth sends its model:

- **rag**: numbered context blocks totalling ~1,500 tokens, the RAG instruction, a question; an
  answer of ``--answer-tokens`` tokens (``ignore_eos``, so both servers generate the same count);
- **extract**: a field list from a JSON schema, then ~900 tokens of a document; the output is
  constrained to the schema (Hearth: ``response_format``; llama-server: its ``json_schema``
  field) and stops when the object is complete;
- **summary**: the summary ask, then ~1,100 tokens of a document; ``--answer-tokens`` tokens.

Both servers get the same text on ``/v1/completions`` (one tokenizer, the same GGUF, so the same
prompt tokens), streamed. At each stream count the servers take turns (A, B, A, B over
``--rounds``); every round uses prompts no earlier round used, and within a round both servers
get the same prompts, so a prompt cache helps only with what the workload itself repeats.
llama-server runs with its prompt cache on (``cache_prompt``, its default) and ``--no-repack``
(see ENVIRONMENT notes: its AMX path faults on some VMs).

One JSON line per (server, stream count) with requests/s, TTFT and end-to-end percentiles, output
tokens/s, per-kind TTFT p50, and the prompt-cache hit rate (Hearth: ``hearth_prefix_hit_tokens``
over ``hearth_prompt_tokens_total``; llama-server: the ``cache_n`` of its response timings), and a
ratio line (Hearth over llama-server) per stream count; appended to
``benchmarks/results/hearth_work.jsonl``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx

from benchmarks.driver import Target, scrape_metrics
from benchmarks.launch import HearthServer, LlamaServer
from benchmarks.report import RequestRecord, append_result, result_row, summarize
from configs import load_settings
from engine.rag import INSTRUCTION, _block
from engine.tasks.extract import build_prompt
from models import get_card, model_path

log = logging.getLogger("benchmarks.hearth_work")
ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "hearth_work.jsonl"
KINDS = ("rag", "extract", "summary")
QUESTIONS = (
    "How does the server keep one tenant's data away from another's?",
    "What happens when the engine is overloaded?",
    "Which models does the test profile use?",
    "How are benchmark results stored?",
    "What does the response cache key on?",
    "How does retrieval combine dense and lexical scores?",
)
SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "description": "the document's subject"},
        "components": {
            "type": "array",
            "items": {"type": "string"},
            "maxItems": 4,
            "description": "parts of the system the text names",
        },
        "has_limits": {"type": "boolean", "description": "whether the text states a limit"},
        "port": {"type": ["integer", "null"], "description": "a TCP port the text gives"},
    },
    "required": ["title", "components", "has_limits", "port"],
    "additionalProperties": False,
}
SUMMARY_ASK = "Summarize the text in two or three sentences."


@dataclass(frozen=True)
class Item:
    kind: str
    prompt: str
    schema: dict[str, Any] | None
    max_tokens: int
    fixed: bool  # ignore_eos: exactly max_tokens tokens


def _words() -> list[str]:
    names = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
    return " ".join(p.read_text(encoding="utf-8") for p in names).split()


class _Texts:
    """Windows of the documents' words, each starting where the last one ended (wrapping), so
    no two prompts of a run begin with the same words."""

    def __init__(self, words: list[str], count) -> None:
        self.words, self.count, self.pos = words, count, 0

    def take(self, tokens: int) -> str:
        n = max(8, int(tokens / 1.45))  # a first guess, then trimmed to the token count
        out = [self.words[(self.pos + i) % len(self.words)] for i in range(n)]
        while len(out) > 8 and self.count(" ".join(out)) > tokens:
            out = out[: int(len(out) * 0.97)]
        self.pos = (self.pos + len(out) + 101) % len(self.words)
        return " ".join(out)


def build_items(n: int, count, *, rag_tokens: int, doc_tokens: int, answer: int) -> list[Item]:
    """``n`` requests cycling rag, extract, summary."""
    texts = _Texts(_words(), count)
    items = []
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        if kind == "rag":
            blocks, used, k = [], 0, 1
            while used < rag_tokens - 120:
                text = texts.take(min(300, rag_tokens - 120 - used))
                hit = SimpleNamespace(document_id=f"doc-{i}-{k}", title=f"Section {i}.{k}",
                                      text=text)  # fmt: skip
                block = _block(k, hit)  # type: ignore[arg-type]
                blocks.append(block)
                used += count(block)
                k += 1
            question = QUESTIONS[i % len(QUESTIONS)]
            prompt = "\n".join(blocks) + f"\n\n{INSTRUCTION}\n\nQuestion: {question}\nAnswer:"
            items.append(Item(kind, prompt, None, answer, True))
        elif kind == "extract":
            items.append(Item(kind, build_prompt(texts.take(doc_tokens), SCHEMA, None), SCHEMA,
                              96, False))  # fmt: skip
        else:
            prompt = f"{SUMMARY_ASK}\n\nText:\n{texts.take(doc_tokens + 200)}\n\nSummary:"
            items.append(Item(kind, prompt, None, answer, True))
    return items


def _body(target: Target, item: Item) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": target.model,
        "prompt": item.prompt,
        "max_tokens": item.max_tokens,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if item.fixed:
        body["ignore_eos"] = True
        body["min_tokens"] = item.max_tokens
    if item.schema is not None:
        if target.backend == "llama-server":
            body["json_schema"] = item.schema  # its /v1/completions ignores response_format
        else:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "fields", "schema": item.schema},
            }
    return body


async def _send(client, target: Target, item: Item, index: int, t0: float):
    start = time.perf_counter()
    rec = RequestRecord(index=index, start_s=start - t0)
    cache_n = None
    try:
        async with client.stream(
            "POST", target.base_url + "/v1/completions", json=_body(target, item)
        ) as resp:
            rec.status = resp.status_code
            if resp.status_code != 200:
                rec.error = (await resp.aread()).decode(errors="replace")[:300]
            else:
                last, parts, usage = None, [], None
                async for line in resp.aiter_lines():
                    if not line.startswith("data:") or line[5:].strip() == "[DONE]":
                        continue
                    chunk = json.loads(line[5:])
                    now = time.perf_counter()
                    choices = chunk.get("choices") or []
                    text = choices[0].get("text") or "" if choices else ""
                    if text:
                        if last is None:
                            rec.ttft_s = now - start
                        else:
                            rec.itl_s.append(now - last)
                        last = now
                        parts.append(text)
                    if choices and choices[0].get("finish_reason"):
                        rec.finish_reason = choices[0]["finish_reason"]
                    usage = chunk.get("usage") or usage
                    if "timings" in chunk:
                        cache_n = chunk["timings"].get("cache_n")
                rec.text = "".join(parts)
                if usage:
                    rec.prompt_tokens = usage.get("prompt_tokens")
                    rec.output_tokens = int(usage.get("completion_tokens") or len(parts))
    except httpx.HTTPError as exc:
        rec.error = f"{type(exc).__name__}: {exc}"
    rec.e2e_s = time.perf_counter() - start
    if item.schema is not None and rec.ok:
        try:
            value = json.loads(rec.text)
            rec.schema_valid = isinstance(value, dict) and set(value) == set(SCHEMA["properties"])
        except ValueError:
            rec.schema_valid = False
    return rec, cache_n


async def run_level(target: Target, items: list[Item], streams: int):
    """Every item, ``streams`` in flight at a time (closed loop). Returns records, wall s,
    cached prompt tokens reported by llama-server (None from Hearth)."""
    queue = list(enumerate(items))
    results: list[tuple[Item, RequestRecord, int | None]] = []
    async with httpx.AsyncClient(timeout=httpx.Timeout(900.0)) as client:
        t0 = time.perf_counter()

        async def worker() -> None:
            while queue:
                i, item = queue.pop(0)
                rec, cache_n = await _send(client, target, item, i, t0)
                results.append((item, rec, cache_n))

        await asyncio.gather(*(worker() for _ in range(streams)))
        wall = time.perf_counter() - t0
    return results, wall


def _figures(results, wall: float, before, after) -> dict[str, Any]:
    recs = [r for _, r, _ in results]
    fig = summarize(recs, wall)
    fig = {
        k: fig[k]
        for k in (
            "requests", "completed", "failed", "errors_by_status", "duration_s", "input_tokens",
            "output_tokens", "request_throughput", "output_throughput", "ttft_ms", "e2e_ms",
            "schema_valid_fraction",
        )
        if k in fig
    }  # fmt: skip
    fig["ttft_p50_ms_by_kind"] = {
        kind: round(statistics.median(ts) * 1000, 1)
        for kind in KINDS
        if (ts := [r.ttft_s for it, r, _ in results if it.kind == kind and r.ttft_s])
    }
    errors = [f"{r.status}: {r.error}"[:200] for r in recs if not r.ok]
    if errors:
        fig["errors"] = errors[:3]
    prompt = sum(r.prompt_tokens or 0 for r in recs)
    served = [c for _, _, c in results if c is not None]
    if served:
        fig["prompt_cache_hit_tokens"] = sum(served)
    elif before is not None and after is not None:
        fig["prompt_cache_hit_tokens"] = int(
            after.get("hearth_prefix_hit_tokens", 0) - before.get("hearth_prefix_hit_tokens", 0)
        )
    if "prompt_cache_hit_tokens" in fig and prompt:
        fig["prompt_cache_hit_rate"] = round(fig["prompt_cache_hit_tokens"] / prompt, 4)
    return fig


def _pool(parts: list[tuple[list, float, Any, Any]]):
    results = [x for p in parts for x in p[0]]
    wall = sum(p[1] for p in parts)
    hits = 0
    for _, _, before, after in parts:
        if before is not None and after is not None:
            hits += after.get("hearth_prefix_hit_tokens", 0) - before.get(
                "hearth_prefix_hit_tokens", 0
            )
    return results, wall, ({"hearth_prefix_hit_tokens": 0}, {"hearth_prefix_hit_tokens": hits})


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _overrides(args) -> dict[str, str]:
    out = {}
    for kv in args.hearth_env:
        k, _, v = kv.partition("=")
        out[k] = v
    return out


async def main_async(args) -> int:
    settings = load_settings(args.profile)
    card = get_card(settings.llm.model)
    gguf = model_path(card, settings.models_dir)
    from benchmarks.workload import gguf_token_counter

    count = gguf_token_counter(gguf)
    streams, per_level = _ints(args.streams), _ints(args.requests)
    if len(per_level) != len(streams):
        raise SystemExit("--requests needs one count per --streams entry")
    total = sum(n * args.rounds for n in per_level) + 3
    items = build_items(
        total, count, rag_tokens=args.rag_tokens, doc_tokens=args.doc_tokens,
        answer=args.answer_tokens,
    )  # fmt: skip
    warm, items = items[-3:], items[:-3]
    log_dir = Path(args.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        hearth = stack.enter_context(
            HearthServer(profile=args.profile, overrides=_overrides(args),
                         log_file=log_dir / "hearth.log")
        )  # fmt: skip
        servers = [(Target("hearth", hearth.base_url, card.id, backend="hearth-llamacpp"), hearth)]
        if not args.no_peer:
            peer = stack.enter_context(
                LlamaServer(gguf, threads=settings.llm.n_threads, slots=settings.llm.max_running,
                            ctx_per_slot=settings.llm.max_model_len,
                    extra_args=tuple(args.peer_arg),
                            log_file=log_dir / "llama-server.log")
            )  # fmt: skip
            servers.append((Target("llama-server", peer.base_url, card.id,
                                   backend="llama-server"), peer))  # fmt: skip
        for target, _ in servers:  # one short request: loads, compiles, allocates
            await run_level(target, [Item("rag", warm[0].prompt[:400], None, 4, True)], 1)
        at = 0
        for s, n in zip(streams, per_level, strict=True):
            parts: dict[str, list] = {t.name: [] for t, _ in servers}
            for _round in range(args.rounds):
                chunk = items[at : at + n]
                at += n
                order = servers if _round % 2 == 0 else servers[::-1]
                for target, _ in order:
                    before = await scrape_metrics(target) if target.name == "hearth" else None
                    results, wall = await run_level(target, chunk, s)
                    after = await scrape_metrics(target) if target.name == "hearth" else None
                    parts[target.name].append((results, wall, before, after))
                    log.info("%s streams=%d round %d: %.1f s", target.name, s, _round, wall)
            rows = {}
            for target, srv in servers:
                results, wall, (b, a) = _pool(parts[target.name])
                figures = _figures(results, wall, b if target.name == "hearth" else None,
                                   a if target.name == "hearth" else None)  # fmt: skip
                settings_ = {
                    "profile": args.profile, "streams": s, "requests_per_round": n,
                    "rounds": args.rounds, "rag_tokens": args.rag_tokens,
                    "doc_tokens": args.doc_tokens, "answer_tokens": args.answer_tokens,
                    "server": srv.settings(), "mix": list(KINDS),
                }  # fmt: skip
                row = result_row("hearth_work", model=card.id, backend=target.backend,
                                 settings=settings_, figures=figures)  # fmt: skip
                rows[target.name] = row
                print(json.dumps(row), flush=True)
                append_result(row, Path(args.results))
            if "llama-server" in rows:
                h, p = rows["hearth"]["figures"], rows["llama-server"]["figures"]
                ratio = {
                    "requests_per_s": _ratio(h["request_throughput"], p["request_throughput"]),
                    "ttft_p50_vs_peer": _ratio(h["ttft_ms"]["median"], p["ttft_ms"]["median"]),
                    "e2e_p50_vs_peer": _ratio(h["e2e_ms"]["median"], p["e2e_ms"]["median"]),
                }
                row = result_row("hearth_work_ratio", model=card.id, backend="hearth/llama-server",
                                 settings={"streams": s, "requests_per_round": n,
                                           "rounds": args.rounds}, figures=ratio)  # fmt: skip
                print(json.dumps(row), flush=True)
                append_result(row, Path(args.results))
    return 0


def _ratio(a, b):
    return round(a / b, 3) if a and b else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="test")
    ap.add_argument("--streams", default="1,8")
    ap.add_argument("--requests", default="3,16", help="requests per round, one per stream count")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--rag-tokens", type=int, default=1500)
    ap.add_argument("--doc-tokens", type=int, default=900)
    ap.add_argument("--answer-tokens", type=int, default=48)
    ap.add_argument(
        "--hearth-env",
        action="append",
        default=[],
        metavar="HEARTH_X=V",
        help="an environment override for the Hearth server (repeatable)",
    )
    ap.add_argument("--no-peer", action="store_true", help="Hearth only (no llama-server)")
    ap.add_argument(
        "--peer-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="an extra llama-server argument (repeatable), e.g. --peer-arg=--spec-type "
        "--peer-arg=ngram-simple for its own prompt-lookup drafting",
    )
    ap.add_argument("--results", default=str(RESULTS))
    ap.add_argument("--log-dir", default="data/benchmarks/logs")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
