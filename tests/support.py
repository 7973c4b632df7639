"""A real Hearth server process for tests: free port, own data dir, shared model files."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from benchmarks.launch import HearthServer

ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = Path(os.environ.get("HEARTH_MODELS_DIR", ROOT / "data" / "models")).resolve()
LLM = "gemma-3-270m-q4km"
EMBEDDER = "all-minilm-l6-v2"
READY_TIMEOUT_S = 600  # a loaded 2-core machine can take minutes to import torch


def ensure_models() -> Path:
    """Install the two test models into MODELS_DIR (no-op once there)."""
    from models import get_card, install_model

    for model_id in (LLM, EMBEDDER):
        install_model(get_card(model_id), MODELS_DIR)
    return MODELS_DIR


class HearthProcess(HearthServer):
    """The real server of the e2e tests: ``benchmarks.launch.HearthServer`` on a free port with
    its own data dir (kept across restarts, log in ``server.log``) and the shared model files.
    ``start()`` installs the test models if needed and waits for /ready."""

    def __init__(
        self, data_dir: Path, *, profile: str = "test", env: Mapping[str, str] | None = None
    ):
        data_dir = Path(data_dir)
        super().__init__(
            profile=profile,
            overrides={
                "HEARTH_MODELS_DIR": str(MODELS_DIR),
                "HF_HUB_OFFLINE": "1",
                "PYTHONPATH": str(ROOT),
                **(env or {}),
            },
            log_file=data_dir / "server.log",
            start_timeout_s=READY_TIMEOUT_S,
            data_dir=data_dir,
            models_dir=MODELS_DIR,
        )

    @property
    def url(self) -> str:
        return self.base_url

    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"

    def launch(self) -> None:
        ensure_models()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        super().launch()
