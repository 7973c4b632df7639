"""A real Hearth server process for tests: free port, own data dir, shared model files."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = Path(os.environ.get("HEARTH_MODELS_DIR", ROOT / "data" / "models")).resolve()
LLM = "gemma-3-270m-q4km"
EMBEDDER = "all-minilm-l6-v2"
READY_TIMEOUT_S = 600  # a loaded 2-core machine can take minutes to import torch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_models() -> Path:
    """Install the two test models into MODELS_DIR (no-op once there)."""
    from models import get_card, install_model

    for model_id in (LLM, EMBEDDER):
        install_model(get_card(model_id), MODELS_DIR)
    return MODELS_DIR


class HearthProcess:
    """``python -m server serve`` as a child process. ``start()`` waits for /ready."""

    def __init__(
        self,
        data_dir: Path,
        *,
        profile: str = "test",
        env: Mapping[str, str] | None = None,
        prefix: Sequence[str] = (),
    ):
        self.data_dir = Path(data_dir)
        self.port = free_port()
        self.profile = profile
        self.extra_env = dict(env or {})
        self.prefix = list(prefix)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.data_dir / "server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def launch(self) -> None:
        ensure_models()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update(
            HEARTH_MODELS_DIR=str(MODELS_DIR),
            HF_HUB_OFFLINE="1",
            PYTHONPATH=str(ROOT),
        )
        env.update(self.extra_env)
        cmd = [*self.prefix, sys.executable, "-m", "server", "serve", "--profile", self.profile,
               "--data-dir", str(self.data_dir), "--port", str(self.port)]
        if getattr(self, "_log", None) is not None:
            self._log.close()  # the previous run was killed without stop()
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise TimeoutError(f"server not ready after {timeout}s:\n{self.log_tail()}")

    def start(self) -> HearthProcess:
        self.launch()
        self.wait_ready()
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        self._log.close()
        self.proc = None

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""
