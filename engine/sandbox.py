"""Untrusted work in a killable, memory-limited child process.

Grammar compilation and PDF text extraction run third-party code on tenant input; how long it
takes and how much memory it needs depend on that input. A thread that overruns cannot be stopped
(a timeout only stops waiting for it) and shares the server's memory. ``Sandbox.run`` forks one
child per job instead: the child limits its address space (``RLIMIT_AS``: what the parent had
mapped at the fork plus the job's budget), runs the function, sends the pickled result through a
pipe and exits. The parent waits on the pipe in a thread until the deadline, then kills the child
with SIGKILL. Either way the child is reaped before ``run`` returns; nothing outlives a job. A
child also dies with the server: it asks the kernel for SIGKILL when its forking thread (which
waits for it) goes (``PR_SET_PDEATHSIG``), so even a ``kill -9`` of the server leaves no child.

Fork rather than spawn: the child starts in microseconds with the parent's state (a grammar
tokenizer, loaded modules) and needs none of it pickled. It runs only the job's Python on the
forking thread; it never touches the parent's other threads' objects (backends, DuckDB).

Errors: ``DeadlineExceeded`` (killed at the deadline), ``OutOfMemory`` (the job hit its memory
limit: ``MemoryError`` or an allocator abort), ``WorkerCrashed`` (died without a result). An
exception the function raises is raised again in the parent (``HearthError``s keep their param).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import pickle
import resource
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

R = TypeVar("R")
_MAX_RESULT_BYTES = 256 << 20


@dataclass(frozen=True)
class Budget:
    """``timeout_s``: wall-clock deadline of one job; ``memory_bytes``: address space the child
    may map beyond what the parent had mapped when it forked."""

    timeout_s: float
    memory_bytes: int


class SandboxError(Exception):
    """A job did not produce a result."""


class DeadlineExceeded(SandboxError):
    pass


class OutOfMemory(SandboxError):
    pass


class WorkerCrashed(SandboxError):
    pass


class Sandbox:
    """Runs jobs in forked children under one budget; ``close`` kills any still running."""

    def __init__(self, budget: Budget, name: str) -> None:
        self.budget = budget
        self.name = name
        self._children: set[int] = set()

    async def run(self, fn: Callable[..., R], *args: Any) -> R:
        """``fn(*args)`` in a child process; its result (pickled) or its exception."""
        return await asyncio.to_thread(self.run_sync, fn, *args)

    def run_sync(self, fn: Callable[..., R], *args: Any) -> R:
        """Blocking form of :meth:`run` (waits at most the budget's deadline, plus a reap)."""
        read_fd, write_fd = os.pipe()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            os.close(read_fd)
            _die_with_parent(parent)
            _child(fn, args, write_fd, self.budget.memory_bytes)
        os.close(write_fd)
        self._children.add(pid)
        try:
            data, timed_out = _read_until(read_fd, time.monotonic() + self.budget.timeout_s)
        finally:
            os.close(read_fd)
            if data is None or timed_out:
                _kill(pid)
            status = _reap(pid)
            self._children.discard(pid)
        if timed_out:
            raise DeadlineExceeded(f"{self.name}: killed after {self.budget.timeout_s:g} s")
        return _outcome(self.name, data, status, self.budget.memory_bytes)

    def close(self) -> None:
        for pid in list(self._children):
            _kill(pid)


def _die_with_parent(parent: int) -> None:
    """Linux: SIGKILL this child when the thread that forked it ends (the server dies)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the parent's close() still kills children
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(70)


_PR_SET_PDEATHSIG = 1


def _child(fn: Callable[..., Any], args: tuple, write_fd: int, memory_bytes: int) -> None:
    code = 0
    try:
        _close_inherited(keep=write_fd)
        mapped = _mapped_bytes()
        limit = mapped + memory_bytes
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        try:
            result: tuple[str, Any] = ("ok", fn(*args))
        except MemoryError:
            result = ("oom", None)
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the parent
            result = ("error", exc)
        try:
            payload = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # noqa: BLE001 - an unpicklable result or exception
            payload = pickle.dumps(("error", RuntimeError(f"unpicklable result: {exc!r}")))
        view = memoryview(payload)
        while view:
            view = view[os.write(write_fd, view) :]
    except BaseException:  # noqa: BLE001 - nothing may escape a forked child
        code = 70
    finally:
        os._exit(code)


def _close_inherited(keep: int) -> None:
    """Close what the fork copied (other jobs' pipes among them: a copy of another job's write end
    would hold back that job's end of file), except stdio and this job's pipe."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd != keep:
            try:
                os.close(fd)
            except OSError:
                pass


def _mapped_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _read_until(fd: int, deadline: float) -> tuple[bytes | None, bool]:
    """Everything the child writes, until EOF; (None, True) when the deadline passes first."""
    chunks: list[bytes] = []
    size = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None, True
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return (b"".join(chunks) if chunks else None), False
        size += len(chunk)
        if size > _MAX_RESULT_BYTES:
            return None, False
        chunks.append(chunk)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _reap(pid: int) -> int:
    try:
        return os.waitpid(pid, 0)[1]
    except ChildProcessError:
        return 0


def _outcome(name: str, data: bytes | None, status: int, memory_bytes: int) -> Any:
    budget_mib = memory_bytes >> 20
    if data is None:
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) in (signal.SIGABRT, signal.SIGSEGV):
            # Native allocators abort (Rust) or fault when the address-space limit refuses them.
            raise OutOfMemory(f"{name}: needed more than {budget_mib} MiB")
        raise WorkerCrashed(f"{name}: the worker process died (status {status})")
    kind, value = pickle.loads(data)
    if kind == "oom":
        raise OutOfMemory(f"{name}: needed more than {budget_mib} MiB")
    if kind == "error":
        raise value
    return value
