"""``server`` imports with the heavy libraries unavailable: it only touches the engine's facade."""

from __future__ import annotations

import subprocess
import sys

from tests.support import ROOT

BLOCKED = ["llama_cpp", "torch", "vllm", "faiss", "sentence_transformers", "transformers"]


def test_server_imports_without_heavy_libraries():
    code = (
        "import sys\n"
        f"for name in {BLOCKED!r}:\n"
        "    sys.modules[name] = None  # any import of it now raises ImportError\n"
        "import server.app, server.cli, engine, engine.backends.base\n"
        "from configs import load_settings\n"
        "app = server.app.create_app(load_settings('test'))\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
