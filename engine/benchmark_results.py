"""Read-only view of the benchmark harness's output (``benchmarks/results``): the latest result
lines of each ``*.jsonl`` file and the PNG plots beside them. The harness writes these files;
nothing here writes. Lines that are not JSON objects are skipped (a run may be cut mid-write)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from engine.errors import NotFoundError

RESULTS_DIR = Path(__file__).resolve().parent.parent / "benchmarks" / "results"
LATEST_PER_FILE = 20
_PLOT_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}\.png$")


class BenchmarkResults:
    def __init__(self, directory: Path = RESULTS_DIR) -> None:
        self.directory = directory

    def latest(self, per_file: int = LATEST_PER_FILE) -> list[dict[str, Any]]:
        """The last ``per_file`` results of each file, newest file name order; each record gets
        ``suite`` (the file's stem)."""
        out: list[dict[str, Any]] = []
        for path in sorted(self.directory.glob("*.jsonl")):
            lines = path.read_text(errors="replace").splitlines()[-per_file:]
            for line in lines:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict):
                    out.append({"suite": path.stem, **record})
        return out

    def plots(self) -> list[str]:
        return sorted(p.name for p in self.directory.glob("*.png") if _PLOT_NAME.match(p.name))

    def plot(self, name: str) -> bytes:
        """One plot's PNG bytes; only a plain file name in the results folder (no path)."""
        if not _PLOT_NAME.match(name) or not (self.directory / name).is_file():
            raise NotFoundError(f"no benchmark plot named {name!r}", param="name")
        return (self.directory / name).read_bytes()
