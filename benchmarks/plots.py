"""PNG plots of a benchmark invocation (matplotlib, headless).

- ``latency_vs_throughput``: one curve per server: output tokens/s (x) against TTFT p50 and
  TPOT p50 (y), one point per load level of a sweep.
- ``distributions``: TTFT and TPOT histograms of every run, one colour per server.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from benchmarks.report import RequestRecord

log = logging.getLogger(__name__)

# (server name, load label, figures, records) of each measured run.
Run = tuple[str, str, dict, Sequence[RequestRecord]]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def latency_vs_throughput(runs: Sequence[Run], path: Path) -> Path:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for name in dict.fromkeys(r[0] for r in runs):
        mine = [r for r in runs if r[0] == name]
        xs = [r[2]["output_throughput"] for r in mine]
        for ax, key in zip(axes, ("ttft_ms", "tpot_ms"), strict=True):
            ys = [r[2][key]["median"] for r in mine]
            ax.plot(xs, ys, marker="o", label=name)
            for x, y, r in zip(xs, ys, mine, strict=True):
                ax.annotate(r[1], (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    for ax, title in zip(axes, ("TTFT p50 (ms)", "TPOT p50 (ms)"), strict=True):
        ax.set_xlabel("output tokens/s")
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def distributions(runs: Sequence[Run], path: Path) -> Path:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, label, _fig, records in runs:
        ok = [r for r in records if r.ok]
        ttft = [r.ttft_s * 1000 for r in ok if r.ttft_s is not None]
        tpot = [t * 1000 for r in ok if (t := r.tpot_s) is not None]
        for ax, data in zip(axes, (ttft, tpot), strict=True):
            if data:
                ax.hist(data, bins=30, alpha=0.5, label=f"{name} {label}")
    for ax, title in zip(axes, ("TTFT (ms)", "TPOT (ms)"), strict=True):
        ax.set_xlabel(title)
        ax.set_ylabel("requests")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    log.info("wrote %s", path)
    return path
