"""The launcher's process handling, on small stand-in servers (``python -m http.server``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from benchmarks.launch import LaunchError, _Process

ROOT = Path(__file__).resolve().parents[2]


class _HttpServer(_Process):
    name = "http.server"
    health_paths = ("/",)

    def command(self) -> list[str]:
        return [sys.executable, "-m", "http.server", str(self.port), "--bind", "127.0.0.1"]


class _Crashing(_Process):
    name = "crashing"

    def command(self) -> list[str]:
        return [sys.executable, "-c", "raise SystemExit(3)"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); its state says it is gone.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def test_started_server_is_healthy_then_stopped(tmp_path):
    with _HttpServer(None, tmp_path / "log", 20.0) as srv:
        pid = srv.proc.pid
        assert httpx.get(srv.base_url + "/").status_code == 200
    assert srv.proc is None and not _alive(pid)
    srv.stop()  # idempotent


def test_a_server_that_dies_while_starting_raises(tmp_path):
    with pytest.raises(LaunchError, match="exited with 3"):
        _Crashing(None, None, 20.0).start()


def test_sigterm_to_the_harness_stops_what_it_started(tmp_path):
    """``python -m benchmarks`` turns SIGTERM into an unwind, so its servers are stopped."""
    pid_file = tmp_path / "pid"
    script = textwrap.dedent(f"""
        import signal, sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from benchmarks.__main__ import _interrupt
        from tests.benchmarks.test_launch import _HttpServer
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            with _HttpServer(None, None, 20.0) as srv:
                open({str(pid_file)!r}, "w").write(str(srv.proc.pid))
                time.sleep(60)
        except KeyboardInterrupt:
            sys.exit(130)
    """)
    harness = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    deadline = time.monotonic() + 30
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    child = int(pid_file.read_text())
    harness.send_signal(signal.SIGTERM)
    assert harness.wait(timeout=30) == 130
    assert not _alive(child)
