"""Per-request records, run summaries, and the one result format of every benchmark.

A *result* is one flat-ish JSON object: ``{"benchmark", "time", "git_sha", "machine", "model",
"backend", "settings", "figures"}``. It is appended as one line to a results file (JSON Lines)
and as one row to the DuckDB table ``results`` (same columns, ``settings`` and ``figures`` as
JSON), so runs on different days and machines can be compared with SQL. The README's table is
rendered from the results file by :func:`markdown_table`.

Times are seconds in records and milliseconds in figures (``*_ms``); throughputs are per second.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import platform
import subprocess
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

PERCENTILES = (50, 90, 95, 99)


@dataclass
class RequestRecord:
    """What one request did, as the client saw it. ``status`` 0 means no HTTP response."""

    index: int
    start_s: float  # relative to the start of the run
    status: int = 0
    ttft_s: float | None = None
    e2e_s: float | None = None
    itl_s: list[float] = field(default_factory=list)  # gaps between content chunks
    prompt_tokens: int | None = None
    output_tokens: int = 0
    finish_reason: str | None = None
    error: str | None = None
    schema_valid: bool | None = None  # None: no schema was set
    text: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300 and self.error is None

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first: (e2e - ttft) / (tokens - 1)."""
        if self.ttft_s is None or self.e2e_s is None or self.output_tokens < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (self.output_tokens - 1)


@dataclass(frozen=True)
class SLO:
    """Service-level objectives for goodput; None = not checked. Seconds."""

    ttft_s: float | None = None
    tpot_s: float | None = None
    e2e_s: float | None = None

    def met(self, r: RequestRecord) -> bool:
        if not r.ok:
            return False
        checks = ((self.ttft_s, r.ttft_s), (self.tpot_s, r.tpot_s), (self.e2e_s, r.e2e_s))
        return all(lim is None or (v is not None and v <= lim) for lim, v in checks)

    def as_dict(self) -> dict[str, float | None]:
        return asdict(self)


def distribution(values: Sequence[float], *, scale: float = 1000.0) -> dict[str, float | None]:
    """mean, median, p90/p95/p99, min, max of ``values`` × ``scale`` (seconds → ms by default)."""
    if not values:
        return {"mean": None, "median": None, "p90": None, "p95": None, "p99": None}
    a = np.asarray(values, dtype=np.float64) * scale
    pct = np.percentile(a, PERCENTILES)
    out = {"mean": float(a.mean()), "median": float(pct[0])}
    out.update({f"p{p}": float(v) for p, v in zip(PERCENTILES[1:], pct[1:], strict=True)})
    out.update({"min": float(a.min()), "max": float(a.max())})
    return {k: round(v, 3) for k, v in out.items()}


def summarize(
    records: Sequence[RequestRecord], duration_s: float, slo: SLO | None = None
) -> dict[str, Any]:
    """The figures of one run. Throughputs divide by the run's wall time ``duration_s``."""
    ok = [r for r in records if r.ok]
    out_tokens = sum(r.output_tokens for r in ok)
    in_tokens = sum(r.prompt_tokens or 0 for r in ok)
    slo = slo or SLO()
    good = [r for r in ok if slo.met(r)]
    validity = [r.schema_valid for r in ok if r.schema_valid is not None]
    figures: dict[str, Any] = {
        "requests": len(records),
        "completed": len(ok),
        "failed": len(records) - len(ok),
        "errors_by_status": dict(Counter(str(r.status) for r in records if not r.ok)),
        "finish_reasons": dict(Counter(str(r.finish_reason) for r in ok)),
        "duration_s": round(duration_s, 3),
        "input_tokens": in_tokens,
        "output_tokens": out_tokens,
        "request_throughput": round(len(ok) / duration_s, 4) if duration_s > 0 else None,
        "output_throughput": round(out_tokens / duration_s, 3) if duration_s > 0 else None,
        "total_token_throughput": (
            round((in_tokens + out_tokens) / duration_s, 3) if duration_s > 0 else None
        ),
        "ttft_ms": distribution([r.ttft_s for r in ok if r.ttft_s is not None]),
        "tpot_ms": distribution([t for r in ok if (t := r.tpot_s) is not None]),
        "itl_ms": distribution([g for r in ok for g in r.itl_s]),
        "e2e_ms": distribution([r.e2e_s for r in ok if r.e2e_s is not None]),
        "slo": slo.as_dict(),
        "goodput": round(len(good) / duration_s, 4) if duration_s > 0 else None,
        "good_fraction": round(len(good) / len(records), 4) if records else None,
    }
    if validity:
        figures["schema_valid_fraction"] = round(sum(validity) / len(validity), 4)
    return figures


# ---- the result row ---------------------------------------------------------------------------


def git_sha(repo: Path | None = None) -> str:
    """The checkout's commit (``-dirty`` if tracked files changed); ``unknown`` outside git."""
    cwd = repo or Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def machine() -> dict[str, Any]:
    """What the figures ran on: CPU model, cores, memory, OS."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    return {
        "host": platform.node(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": mem_gib,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def result_row(
    benchmark: str,
    *,
    model: str,
    backend: str,
    settings: dict[str, Any],
    figures: dict[str, Any],
) -> dict[str, Any]:
    return {
        "benchmark": benchmark,
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git_sha": git_sha(),
        "machine": machine(),
        "model": model,
        "backend": backend,
        "settings": settings,
        "figures": figures,
    }


_DDL = """
CREATE TABLE IF NOT EXISTS results (
    benchmark VARCHAR, time TIMESTAMPTZ, git_sha VARCHAR, machine JSON, model VARCHAR,
    backend VARCHAR, settings JSON, figures JSON
)
"""


def append_result(
    row: dict[str, Any], results_file: Path | None, db_file: Path | None = None
) -> None:
    """Append ``row`` as one JSON line to ``results_file`` and one row to ``db_file``'s table.

    Either may be None (not written). The JSON line is also printed to stdout: benchmark
    scripts' result lines are their output.
    """
    line = json.dumps(row, sort_keys=False, default=str)
    print(line, flush=True)
    if results_file is not None:
        results_file.parent.mkdir(parents=True, exist_ok=True)
        with results_file.open("a", encoding="utf-8") as f:
            f.write(line + "\n")
    if db_file is not None:
        import duckdb

        db_file.parent.mkdir(parents=True, exist_ok=True)
        with duckdb.connect(str(db_file)) as con:
            con.execute(_DDL)
            con.execute(
                "INSERT INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    row["benchmark"],
                    row["time"],
                    row["git_sha"],
                    json.dumps(row["machine"]),
                    row["model"],
                    row["backend"],
                    json.dumps(row["settings"], default=str),
                    json.dumps(row["figures"], default=str),
                ],
            )


def read_results(results_file: Path) -> list[dict[str, Any]]:
    if not results_file.is_file():
        return []
    lines = results_file.read_text(encoding="utf-8").splitlines()
    return [json.loads(ln) for ln in lines if ln.strip()]


# ---- the README table -------------------------------------------------------------------------

_COLUMNS = (
    ("label", "run"),
    ("backend", "backend"),
    ("concurrency", "conc."),
    ("output_throughput", "out tok/s"),
    ("request_throughput", "req/s"),
    ("ttft_p50", "TTFT p50 ms"),
    ("ttft_p99", "TTFT p99 ms"),
    ("tpot_p50", "TPOT p50 ms"),
    ("e2e_p50", "E2E p50 ms"),
    ("goodput", "goodput req/s"),
    ("failed", "errors"),
)


def _table_cells(row: dict[str, Any]) -> dict[str, Any]:
    f, s = row["figures"], row["settings"]
    return {
        "label": s.get("label") or row["benchmark"],
        "backend": row["backend"],
        "concurrency": s.get("concurrency") or f"{s.get('request_rate')}/s",
        "output_throughput": f.get("output_throughput"),
        "request_throughput": f.get("request_throughput"),
        "ttft_p50": (f.get("ttft_ms") or {}).get("median"),
        "ttft_p99": (f.get("ttft_ms") or {}).get("p99"),
        "tpot_p50": (f.get("tpot_ms") or {}).get("median"),
        "e2e_p50": (f.get("e2e_ms") or {}).get("median"),
        "goodput": f.get("goodput"),
        "failed": f.get("failed"),
    }


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"
    return str(v)


def _latest(rows: list[dict[str, Any]], benchmark: str, sha: str | None) -> list[dict[str, Any]]:
    rows = [r for r in rows if r.get("benchmark") == benchmark]
    if not rows:
        return []
    want = (sha or rows[-1]["git_sha"]).removesuffix("-dirty")
    return [r for r in rows if r["git_sha"].removesuffix("-dirty").startswith(want)]


def markdown_table(
    rows: Iterable[dict[str, Any]], *, benchmark: str = "serve", sha: str | None = None
) -> str:
    """Markdown tables of the ``benchmark`` rows of one commit (default: the latest in the file)
    with the machine they ran on, then the ratios of the ``-compare`` rows of that commit."""
    rows = list(rows)
    mine = _latest(rows, benchmark, sha)
    if not mine:
        return "(no results)"
    m = mine[-1]["machine"]
    head = [title for _, title in _COLUMNS]
    lines = [
        f"Commit `{mine[-1]['git_sha']}`, {m.get('cpu')}, {m.get('cores')} cores, "
        f"{m.get('memory_gib')} GiB, model `{mine[-1]['model']}`.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
    ]
    for r in mine:
        cells = _table_cells(r)
        lines.append("| " + " | ".join(_fmt(cells[k]) for k, _ in _COLUMNS) + " |")
    ratios = _latest(rows, f"{benchmark}-compare", mine[-1]["git_sha"])
    if ratios:
        lines += [
            "",
            "| run | A / B | conc. | out tok/s | TTFT p50 | TPOT p50 | E2E p50 |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in ratios:
            x, s = r["figures"]["ratios"], r["settings"]
            lines.append(
                f"| {s.get('label') or ''} | {r['backend']} | {s.get('concurrency')} | "
                + " | ".join(
                    f"{_fmt(x.get(k))}×"
                    for k in ("output_throughput", "ttft_p50", "tpot_p50", "e2e_p50")
                )
                + " |"
            )
    return "\n".join(lines)
