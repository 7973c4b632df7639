"""Untrusted work in a forked child: its result or exception comes back; past the deadline or the
memory budget the child is killed and the caller gets a clear error; no child outlives a job."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.errors import InvalidRequestError
from engine.sandbox import Budget, DeadlineExceeded, OutOfMemory, Sandbox


def _pid_and_square(x: int) -> tuple[int, int]:
    return os.getpid(), x * x


def _raise_400() -> None:
    raise InvalidRequestError("bad field", param="response_format.x", code="invalid_schema")


def _spin(path: str) -> None:
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    while True:
        pass


def _allocate(n: int) -> int:
    return len(bytearray(n))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_result_comes_from_another_process() -> None:
    pid, value = Sandbox(Budget(10, 256 << 20), "job").run_sync(_pid_and_square, 7)
    assert value == 49 and pid != os.getpid()


def test_an_error_keeps_its_class_and_fields() -> None:
    with pytest.raises(InvalidRequestError) as err:
        Sandbox(Budget(10, 256 << 20), "job").run_sync(_raise_400)
    assert (err.value.param, err.value.code, err.value.message) == (
        "response_format.x",
        "invalid_schema",
        "bad field",
    )


def test_a_job_past_its_deadline_is_killed(tmp_path) -> None:
    path = tmp_path / "pid"
    with pytest.raises(DeadlineExceeded, match="killed after 0.5 s"):
        Sandbox(Budget(0.5, 256 << 20), "job").run_sync(_spin, str(path))
    assert not _alive(int(path.read_text()))  # killed and reaped, not left spinning


def test_a_job_past_its_memory_budget_fails_and_the_server_keeps_its_memory() -> None:
    box = Sandbox(Budget(30, 64 << 20), "job")
    with pytest.raises(OutOfMemory, match="more than 64 MiB"):
        box.run_sync(_allocate, 512 << 20)
    assert box.run_sync(_allocate, 1 << 20) == 1 << 20


def test_the_event_loop_runs_while_a_job_spins(tmp_path) -> None:
    async def main() -> int:
        ticks = 0
        job = asyncio.ensure_future(
            Sandbox(Budget(1.0, 256 << 20), "job").run(_spin, str(tmp_path / "pid"))
        )
        while not job.done():
            await asyncio.sleep(0.01)
            ticks += 1
        with pytest.raises(DeadlineExceeded):
            job.result()
        return ticks

    assert asyncio.run(main()) > 10  # the loop kept ticking every 10 ms meanwhile


_ORPHAN_SCRIPT = """
import os, sys, time
from engine.sandbox import Budget, Sandbox

def job(path):
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(600)

Sandbox(Budget(timeout_s=900, memory_bytes=1 << 30), "test").run_sync(job, sys.argv[1])
"""


def test_a_child_dies_with_a_killed_server(tmp_path) -> None:
    """kill -9 of the process that forked a job leaves no child behind."""
    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", _ORPHAN_SCRIPT, str(pid_file)])
    try:
        deadline = time.monotonic() + 120
        while not pid_file.exists() or not pid_file.read_text():
            assert parent.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        child = int(pid_file.read_text())
        assert Path(f"/proc/{child}").exists()
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 60
    while _alive(child):
        assert time.monotonic() < deadline, "the sandbox child outlived its server"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie is dead, waiting for init to reap it
