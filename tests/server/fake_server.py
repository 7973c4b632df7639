"""A real Hearth server process (uvicorn, the same ``serve_app`` as ``hearth serve``) on the
stand-in model: ``python -m tests.server.fake_server DATA_DIR PORT``. While the file
``DATA_DIR/hold`` exists every sequence stops after its first token (a test removes the file to
let them finish), so tests of process-level behaviour (signals, draining) need no timing."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

from benchmarks.launch import _Process
from configs import Settings
from server.app import create_app
from server.cli import serve_app
from tests.server.fakes import FakeBackend, FakeParts, fake_settings


class FileHeldBackend(FakeBackend):
    """``hold`` is true while ``hold_file`` exists."""

    hold_file: Path

    @property  # type: ignore[override]
    def hold(self) -> bool:
        return self.hold_file.exists()

    @hold.setter
    def hold(self, value: bool) -> None:
        pass


class FakeServerProcess(_Process):
    """The fake server as a child process on a free port; ready when ``/ready`` is 200."""

    name = "fake hearth"
    health_paths = ("/ready",)

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        super().__init__(None, data_dir / "server.log", start_timeout_s=120)
        self.data_dir = data_dir
        self.extra_env = env or {}

    @property
    def hold_file(self) -> Path:
        return self.data_dir / "hold"

    def command(self) -> list[str]:
        module = "tests.server.fake_server"
        return [sys.executable, "-m", module, str(self.data_dir), str(self.port)]

    def env(self) -> dict[str, str]:
        return {**super().env(), **self.extra_env}


def settings_for(data_dir: Path, port: int) -> Settings:
    settings = fake_settings(data_dir)
    drain = float(os.environ.get("HEARTH_DRAIN_TIMEOUT_S", "30"))
    server = dataclasses.replace(settings.server, port=port, drain_timeout_s=drain)
    return dataclasses.replace(settings, server=server)


def main() -> None:
    data_dir, port = Path(sys.argv[1]), int(sys.argv[2])
    settings = settings_for(data_dir, port)
    parts = FakeParts(settings)
    backend = FileHeldBackend(parts.backend.card)
    backend.hold_file = data_dir / "hold"
    parts.backend = backend
    serve_app(create_app(settings, open_services=parts.open), settings)


if __name__ == "__main__":
    main()
