"""``python -m benchmarks serve|table|bandwidth``.

``eval`` runs models on Hearth's tasks over small labelled sets (``benchmarks/evaluate.py``).
``serve`` measures one server (``--url`` or ``--launch``) and optionally others beside it
(``--compare-url``/``--compare-launch``, ``--offline`` for Hearth's engine without HTTP). Runs are
interleaved A/B/A/B over ``--rounds`` at every load level so slow drifts of a shared machine hit
every server alike; each server's rounds are pooled into one result line, and the ratios of the
first server over each other one are printed and stored. Examples::

    # Hearth (started here) against llama.cpp's llama-server and Hearth's engine offline
    python -m benchmarks serve --launch hearth --compare-launch llama-server --offline \\
        --concurrency 1,8 --input-tokens 150 --output-tokens 128 --rounds 2

    # any OpenAI-compatible server, Poisson arrivals, goodput against SLOs
    python -m benchmarks serve --url http://127.0.0.1:8000 --model m --rate 2,4 \\
        --slo-ttft-ms 1000 --slo-tpot-ms 100

    # constrained vs unconstrained decoding, both servers, interleaved in one run
    python -m benchmarks serve --launch hearth --compare-launch llama-server \\
        --schema benchmarks/schemas/grocery.json --schema-ab --concurrency 1,8

    python -m benchmarks table   # the README table from the results file
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import plots
from benchmarks.bandwidth import achieved_bandwidth, probe_bandwidth
from benchmarks.driver import LoadShape, Target, measure, warm_up
from benchmarks.launch import HearthServer, LaunchError, LlamaServer
from benchmarks.report import (
    SLO,
    RequestRecord,
    append_result,
    markdown_table,
    read_results,
    result_row,
    summarize,
)
from benchmarks.workload import (
    Workload,
    estimate_tokens,
    gguf_token_counter,
    prompts_from_file,
    synthetic_prompts,
)

log = logging.getLogger("benchmarks")

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_RESULTS = RESULTS_DIR / "serve.jsonl"
DEFAULT_DB = Path("data") / "benchmarks" / "results.duckdb"
EVAL_DATA = Path(__file__).resolve().parent / "data" / "eval"


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _path_or_none(text: str) -> Path | None:
    return Path(text) if text else None


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="latency/throughput/goodput of OpenAI-compatible servers")
    g = s.add_argument_group("servers")
    g.add_argument("--url", help="the server to measure (base URL, without /v1)")
    g.add_argument("--launch", choices=("hearth", "llama-server"), help="start it instead")
    g.add_argument("--name", help="label of the first server (default: hearth or the URL)")
    g.add_argument("--compare-url", action="append", default=[], help="a server to compare with")
    g.add_argument(
        "--compare-model",
        help="model name sent to the --compare-url servers (default: --model); e.g. Hearth on "
        "vLLM serving the bf16 conversion against Hearth on llama.cpp serving the GGUF",
    )
    g.add_argument(
        "--compare-launch",
        action="append",
        default=[],
        choices=("hearth", "llama-server"),
        help="start a server to compare with",
    )
    g.add_argument(
        "--offline", action="store_true", help="also drive Hearth's engine in-process (no HTTP)"
    )
    g.add_argument("--model", help="model name sent in requests (default: the profile's model)")
    g.add_argument(
        "--profile",
        default="cpu",
        help="Hearth profile (launch and --offline); default: the server's own default, cpu",
    )
    g.add_argument(
        "--gguf",
        type=Path,
        help="GGUF for llama-server and token counts (default: the profile model's file)",
    )
    g.add_argument("--threads", type=int, default=2)
    g.add_argument("--slots", type=int, default=8, help="parallel sequences of every server")
    g.add_argument("--api-key", help="bearer token for --url servers")
    g.add_argument("--server-log-dir", type=Path, default=Path("data") / "benchmarks" / "logs")
    w = s.add_argument_group("workload")
    w.add_argument("--api", choices=("completions", "chat"), default="completions")
    w.add_argument("--input-tokens", type=int, default=150)
    w.add_argument("--output-tokens", type=int, default=128)
    w.add_argument(
        "--num-prompts",
        type=int,
        default=64,
        help="distinct synthetic prompts (raised so that no two runs share one)",
    )
    w.add_argument("--prompts-file", type=Path, help=".jsonl (prompt|messages) or text lines")
    w.add_argument(
        "--no-fixed-output",
        action="store_true",
        help="do not send ignore_eos/min_tokens (outputs may end early)",
    )
    w.add_argument("--temperature", type=float, default=0.0)
    w.add_argument("--schema", type=Path, help="JSON Schema file: send it as response_format")
    w.add_argument(
        "--schema-ab",
        action="store_true",
        help="with --schema: run every server with and without it, interleaved, and store the"
        " constrained/unconstrained ratio per server",
    )
    w.add_argument("--seed", type=int, default=0)
    ld = s.add_argument_group("load")
    ld.add_argument(
        "--concurrency",
        type=_ints,
        default=[1, 8],
        help="comma list of concurrent clients, e.g. 1,2,4,8,16",
    )
    ld.add_argument(
        "--rate",
        type=_floats,
        default=[],
        help="comma list of Poisson request rates (req/s); replaces --concurrency",
    )
    ld.add_argument("--max-concurrency", type=int, help="cap on in-flight requests with --rate")
    ld.add_argument("--requests", type=int, help="requests per run (default: max(8, 3×conc.))")
    ld.add_argument("--rounds", type=int, default=2, help="interleaved rounds per load level")
    slo = s.add_argument_group("goodput SLOs")
    slo.add_argument("--slo-ttft-ms", type=float)
    slo.add_argument("--slo-tpot-ms", type=float)
    slo.add_argument("--slo-e2e-ms", type=float)
    o = s.add_argument_group("output")
    o.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    o.add_argument("--db", type=_path_or_none, default=DEFAULT_DB, help="DuckDB file ('' = none)")
    o.add_argument(
        "--plots", type=_path_or_none, default=RESULTS_DIR, help="PNG folder ('' = none)"
    )
    o.add_argument("--label", help="free text stored with every result")
    o.add_argument("--no-progress", action="store_true")
    o.add_argument("--no-bandwidth", action="store_true", help="skip the bandwidth probe")

    t = sub.add_parser("table", help="print the Markdown table of the latest results")
    t.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    t.add_argument("--benchmark", default="serve")
    t.add_argument("--sha", help="rows of this commit (default: the latest in the file)")
    t.add_argument(
        "--write",
        type=Path,
        help="replace the table between the results markers of "
        "this Markdown file (docs/benchmarks.md) instead of printing it",
    )
    b = sub.add_parser("bandwidth", help="print the memory-bandwidth probe (GB/s)")
    b.add_argument("--threads", type=int, default=2)
    e = sub.add_parser("eval", help="accuracy of models on Hearth's tasks (labelled sets)")
    e.add_argument("--models", required=True, help="card ids, comma-separated")
    e.add_argument("--tasks", default="speed,extract,rag,classify,follow")
    e.add_argument(
        "--data", type=Path, default=EVAL_DATA, help="folder of <task>.jsonl labelled sets"
    )
    e.add_argument("--limit", type=int, help="first N examples of each set")
    e.add_argument("--results", type=Path, default=RESULTS_DIR / "eval.jsonl")
    return ap


# ---- serve --------------------------------------------------------------------------------------


def _card_and_gguf(args: argparse.Namespace, data_dir: Path):
    """Settings of the offline engine (its own ``data_dir``, so it never contends for the
    DuckDB file of a running Hearth; models from the usual models directory), card and GGUF."""
    from configs import load_settings
    from models import get_card, model_path

    env = dict(os.environ)
    env.setdefault("HEARTH_MODELS_DIR", str(load_settings(args.profile).models_dir.resolve()))
    settings = load_settings(
        args.profile, env=env, overrides=_hearth_overrides(args), data_dir=data_dir
    )
    try:  # the served model named by --model (any installed card), for its GGUF and tokens
        card = get_card(getattr(args, "model", None) or settings.llm.model)
    except KeyError:  # not a card (e.g. rag/<collection>): the profile's model
        card = get_card(settings.llm.model)
    gguf = args.gguf or model_path(card, settings.models_dir)
    return settings, card, gguf


def _hearth_overrides(args: argparse.Namespace) -> dict[str, dict[str, object]]:
    return {"llm": {"n_threads": args.threads, "max_running": args.slots}}


def _hearth_env(args: argparse.Namespace) -> dict[str, str]:
    return {"HEARTH_LLM_N_THREADS": str(args.threads), "HEARTH_LLM_MAX_RUNNING": str(args.slots)}


def _workload(args: argparse.Namespace, gguf: Path | None) -> Workload:
    count = estimate_tokens
    if gguf is not None and Path(gguf).is_file():
        count = gguf_token_counter(gguf)
    if args.prompts_file:
        prompts = prompts_from_file(args.prompts_file, count=count)
    else:
        n = max(args.num_prompts, prompts_needed(args))
        prompts = synthetic_prompts(n, args.input_tokens, seed=args.seed, count=count)
    fmt = None
    if args.schema:
        schema = json.loads(args.schema.read_text())
        fmt = {"type": "json_schema", "json_schema": {"name": args.schema.stem, "schema": schema}}
    return Workload(
        prompts=prompts,
        api=args.api,
        output_tokens=args.output_tokens,
        fixed_output=not args.no_fixed_output,
        temperature=args.temperature,
        response_format=fmt,
    )


def _prompt_sets(args: argparse.Namespace) -> int:
    """Prompt sets per round: a ``--schema-ab`` twin shares its server's prefix cache, so it gets
    prompts of its own."""
    return 2 if args.schema_ab else 1


def prompts_needed(args: argparse.Namespace) -> int:
    """Distinct prompts for every measured request of every round and level, plus warm-up's."""
    return sum(load.n_requests for _, load in _loads(args)) * args.rounds * _prompt_sets(args) + 1


def _loads(args: argparse.Namespace) -> list[tuple[str, LoadShape]]:
    """(label, shape) of every load level of the sweep."""
    if args.rate:
        n = args.requests or 32
        return [
            (f"{r:g}/s", LoadShape(n, concurrency=args.max_concurrency, rate=r, seed=args.seed))
            for r in args.rate
        ]
    return [
        (f"c{c}", LoadShape(args.requests or max(8, 3 * c), concurrency=c, seed=args.seed))
        for c in args.concurrency
    ]


class _Runner:
    """One measured thing: an HTTP target or the offline engine; ``workload`` replaces the run's
    workload (the unconstrained twin of a ``--schema-ab`` pair)."""

    def __init__(self, name: str, backend: str, settings: dict[str, Any], target=None, engine=None):
        self.name, self.backend, self.settings = name, backend, settings
        self.target: Target | None = target
        self.engine = engine
        self.workload: Workload | None = None

    @property
    def is_twin(self) -> bool:
        """The unconstrained twin of a ``--schema-ab`` pair."""
        return self.workload is not None

    async def warm_up(self, workload: Workload, model: str) -> None:
        if self.target is not None:
            await warm_up(self.target, workload)
        else:
            from benchmarks.offline import run_offline

            short = Workload(workload.prompts[-1:], api=workload.api, output_tokens=8)
            await run_offline(self.engine, short, LoadShape(2), model=model, progress=False)

    async def run(self, workload: Workload, load: LoadShape, slo: SLO, model: str, progress: bool):
        workload = self.workload or workload
        if self.target is not None:
            figures, run = await measure(self.target, workload, load, slo=slo, progress=progress)
            return run, figures.get("server_metrics")
        from benchmarks.offline import run_offline

        run = await run_offline(self.engine, workload, load, model=model, progress=progress)
        return run, None


async def _start_runners(
    args: argparse.Namespace, stack: contextlib.AsyncExitStack, model: str, gguf: Path, settings
) -> list[_Runner]:
    runners: list[_Runner] = []
    log_dir = args.server_log_dir
    log_dir.mkdir(parents=True, exist_ok=True)

    def launch(kind: str) -> _Runner:
        if kind == "hearth":
            srv = HearthServer(
                profile=args.profile, overrides=_hearth_env(args), log_file=log_dir / "hearth.log"
            )
            backend = "hearth-" + settings.llm.backend
        else:
            srv = LlamaServer(
                gguf, threads=args.threads, slots=args.slots, log_file=log_dir / "llama-server.log"
            )
            backend = "llama-server"
        stack.enter_context(srv)
        target = Target(kind, srv.base_url, model, backend=backend)
        return _Runner(kind, backend, {"launched": srv.settings()}, target=target)

    if args.launch:
        runners.append(launch(args.launch))
    elif args.url:
        name = args.name or "A"
        runners.append(
            _Runner(
                name,
                name,
                {"url": args.url},
                Target(name, args.url.rstrip("/"), model, args.api_key, name),
            )
        )
    for kind in args.compare_launch:
        runners.append(launch(kind))
    for i, url in enumerate(args.compare_url):
        name = f"B{i + 1}" if len(args.compare_url) > 1 else "B"
        runners.append(
            _Runner(
                name,
                name,
                {"url": url, "model": args.compare_model or model},
                Target(name, url.rstrip("/"), args.compare_model or model, args.api_key, name),
            )
        )
    if args.offline:
        from benchmarks.offline import started_engine

        engine = await stack.enter_async_context(started_engine(settings))
        runners.append(
            _Runner(
                "offline",
                "hearth-offline",
                {"profile": args.profile, **_hearth_overrides(args)},
                engine=engine,
            )
        )
    if args.name and runners:
        runners[0].name = args.name
    return runners


UNCONSTRAINED = "/free"


def _schema_twins(runners: list[_Runner], workload: Workload) -> list[_Runner]:
    """Each runner followed by its twin that sends no response_format (name + ``/free``)."""
    free = dataclasses.replace(workload, response_format=None)
    out = []
    for r in runners:
        twin = _Runner(r.name + UNCONSTRAINED, r.backend, r.settings, r.target, r.engine)
        twin.workload = free
        out += [r, twin]
    return out


async def serve(args: argparse.Namespace) -> int:
    if not (args.url or args.launch or args.offline):
        log.error("give --url, --launch or --offline for what to measure")
        return 2
    scratch = tempfile.TemporaryDirectory(prefix="hearth-offline-")
    try:
        return await _serve(args, *_card_and_gguf(args, Path(scratch.name)))
    finally:
        scratch.cleanup()


async def _serve(args: argparse.Namespace, settings, card, gguf: Path) -> int:
    model = args.model or card.id
    workload = _workload(args, gguf)
    slo = SLO(
        *(
            None if v is None else v / 1000
            for v in (args.slo_ttft_ms, args.slo_tpot_ms, args.slo_e2e_ms)
        )
    )
    progress = not args.no_progress and sys.stderr.isatty()
    probe = None if args.no_bandwidth else probe_bandwidth(args.threads)
    db = args.db
    plot_runs: list = []

    def report(label: str, load: LoadShape, runners: list[_Runner], pooled: dict) -> None:
        """Write the level's rows as soon as it is measured (an interrupted sweep keeps them)."""
        rows = {}
        for r in runners:
            recs, dur, metrics = pooled[r.name]
            figures = _figures(recs, dur, metrics, slo, load, card, probe)
            settings_ = {
                "label": args.label, "server": r.name, "load": label, **load.settings(),
                "rounds": args.rounds, "threads": args.threads, "slots": args.slots,
                **(r.workload or workload).settings(), **r.settings,
            }  # fmt: skip
            row = result_row(
                "serve", model=card.id, backend=r.backend, settings=settings_, figures=figures
            )
            append_result(row, args.results, db)
            rows[r.name] = figures
            plot_runs.append((r.name, label, figures, recs))
        if args.schema_ab:  # each server with its schema over the same server without it
            for r in runners:
                if not r.is_twin:
                    _compare(args, [r.name, r.name + UNCONSTRAINED], label, load, rows, card.id, db)
        elif len(runners) > 1:
            _compare(args, [r.name for r in runners], label, load, rows, card.id, db)

    async with contextlib.AsyncExitStack() as stack:
        runners = await _start_runners(args, stack, model, gguf, settings)
        if args.schema_ab and workload.response_format is not None:
            runners = _schema_twins(runners, workload)
        for r in runners:
            await r.warm_up(workload, model)
        await _sweep(args, runners, workload, slo, model, progress, report)
    if args.plots is not None and plot_runs:
        stem = f"serve-{_stamp()}"
        plots.latency_vs_throughput(plot_runs, args.plots / f"{stem}-latency.png")
        plots.distributions(plot_runs, args.plots / f"{stem}-dist.png")
    return 0


def _figures(recs, dur, metrics, slo, load: LoadShape, card, probe) -> dict[str, Any]:
    figures = summarize(recs, dur, slo)
    if metrics:
        figures["server_metrics"] = metrics
    if load.concurrency == 1 and load.rate is None and card.weight_bytes:
        figures["bandwidth"] = achieved_bandwidth(
            card.weight_bytes, figures["tpot_ms"]["median"], probe
        )
    return figures


async def _sweep(args, runners, workload, slo, model, progress, report) -> None:
    """A/B/A/B: at each load level, every runner once per round, records pooled per runner;
    ``report(label, load, runners, pooled)`` after each level."""
    offset = 0
    for label, load in _loads(args):
        pooled: dict[str, tuple[list[RequestRecord], float, dict]] = {}
        for rnd in range(args.rounds):
            order = runners if rnd % 2 == 0 else list(reversed(runners))
            # Every server gets the same prompts in a round, new ones each round: no run is
            # helped by a prefix cache filled by an earlier one. A --schema-ab twin shares its
            # server's cache, so it gets prompts of its own.
            shape = dataclasses.replace(load, first_index=offset)
            twin = dataclasses.replace(load, first_index=offset + load.n_requests)
            offset += load.n_requests * _prompt_sets(args)
            for r in order:
                log.info("round %d/%d, %s, %s", rnd + 1, args.rounds, label, r.name)
                run_shape = twin if r.is_twin else shape
                run, metrics = await r.run(workload, run_shape, slo, model, progress)
                recs, dur, m = pooled.get(r.name, ([], 0.0, {}))
                pooled[r.name] = (recs + run.records, dur + run.duration_s, _add(m, metrics or {}))
        report(label, load, runners, pooled)


def _add(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    keys = set(a) | set(b)
    return {k: round(a.get(k, 0.0) + b.get(k, 0.0), 6) for k in keys}


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def _compare(args, names: list[str], label, load, rows, model, db) -> None:
    """Ratios of the first runner's figures over each other one's (one ``serve-compare`` row
    each)."""
    first = names[0]
    a = rows[first]
    for other in names[1:]:
        b = rows[other]
        ratios = {
            "output_throughput": _ratio(a["output_throughput"], b["output_throughput"]),
            "ttft_p50": _ratio(a["ttft_ms"]["median"], b["ttft_ms"]["median"]),
            "tpot_p50": _ratio(a["tpot_ms"]["median"], b["tpot_ms"]["median"]),
            "e2e_p50": _ratio(a["e2e_ms"]["median"], b["e2e_ms"]["median"]),
        }
        log.info(
            "%s %s / %s: out tok/s %.1f / %.1f = %s×, TTFT p50 %s×, TPOT p50 %s×",
            label,
            first,
            other,
            a["output_throughput"] or 0,
            b["output_throughput"] or 0,
            ratios["output_throughput"],
            ratios["ttft_p50"],
            ratios["tpot_p50"],
        )
        row = result_row(
            "serve-compare",
            model=model,
            backend=f"{first}/{other}",
            settings={
                "label": args.label,
                "a": first,
                "b": other,
                "load": label,
                **load.settings(),
                "rounds": args.rounds,
            },
            figures={
                "ratios": ratios,
                "a_output_throughput": a["output_throughput"],
                "b_output_throughput": b["output_throughput"],
            },
        )
        append_result(row, args.results, db)


def _stamp() -> str:
    import datetime as dt

    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")


# ---- entry --------------------------------------------------------------------------------------


TABLE_START, TABLE_END = "<!-- results:start -->", "<!-- results:end -->"


def write_table(doc: Path, table: str) -> None:
    """Put ``table`` between the results markers of ``doc`` (both must be there)."""
    text = doc.read_text(encoding="utf-8")
    head, sep, rest = text.partition(TABLE_START)
    _, sep2, tail = rest.partition(TABLE_END)
    if not (sep and sep2):
        raise SystemExit(f"{doc}: no {TABLE_START} ... {TABLE_END} markers")
    doc.write_text(f"{head}{TABLE_START}\n{table}\n{TABLE_END}{tail}", encoding="utf-8")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr
    )
    args = build_parser().parse_args(argv)
    if args.command == "table":
        table = markdown_table(read_results(args.results), benchmark=args.benchmark, sha=args.sha)
        if args.write:
            write_table(args.write, table)
        else:
            print(table)
        return 0
    if args.command == "eval":
        from benchmarks.evaluate import run

        return run(args)
    if args.command == "bandwidth":
        print(
            json.dumps({"threads": args.threads, "gb_s": round(probe_bandwidth(args.threads), 2)})
        )
        return 0
    # SIGTERM/SIGHUP (timeout, a closed terminal) unwind like Ctrl-C, so servers started here stop.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    try:
        return asyncio.run(serve(args))
    except LaunchError as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        log.warning("interrupted; servers started here were stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
