"""Start-up, readiness, model checks, and the network switched off."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import httpx
import pytest

from tests.support import LLM, MODELS_DIR, ROOT, HearthProcess, ensure_models

pytestmark = pytest.mark.e2e


def test_ready_is_503_until_models_load(tmp_path):
    server = HearthProcess(tmp_path)
    server.launch()
    try:
        seen = []
        import time

        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            try:
                health = httpx.get(f"{server.url}/health", timeout=2)
                ready = httpx.get(f"{server.url}/ready", timeout=2)
            except httpx.HTTPError:
                time.sleep(0.05)
                continue
            assert health.status_code == 200
            seen.append(ready.status_code)
            if ready.status_code == 503:
                assert ready.headers["Retry-After"]
                assert ready.json()["error"]["code"] == "not_ready"
            if ready.status_code == 200:
                break
            time.sleep(0.05)
        assert seen[0] == 503 and seen[-1] == 200
        assert httpx.get(f"{server.url}/ready").json()["model"] == LLM
    finally:
        server.stop()


def _serve(tmp_path, models_dir):
    env = {"HEARTH_MODELS_DIR": str(models_dir), "HEARTH_PORT": "0", "HF_HUB_OFFLINE": "1",
           "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-m", "server", "serve", "--profile", "test", "--data-dir", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )


def test_missing_model_file_is_a_clear_startup_error(tmp_path):
    result = _serve(tmp_path, tmp_path / "empty-models")
    assert result.returncode != 0
    assert "gemma-3-270m-Q4_K_M.gguf" in result.stderr and "does not exist" in result.stderr


def test_wrong_checksum_is_a_clear_startup_error(tmp_path):
    ensure_models()
    fake = tmp_path / "models"
    shutil.copytree(MODELS_DIR / "all-minilm-l6-v2", fake / "all-minilm-l6-v2")
    gguf = fake / "gemma-3-270m-q4km" / "gemma-3-270m-Q4_K_M.gguf"
    gguf.parent.mkdir(parents=True)
    gguf.write_bytes(b"GGUF not really a model")
    result = _serve(tmp_path, fake)
    assert result.returncode != 0
    assert "sha256" in result.stderr and str(gguf) in result.stderr


def test_bad_setting_names_the_field(tmp_path):
    env = {"HEARTH_LLM_N_THREADS": "many", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "server", "serve", "--profile", "test"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "llm.n_threads" in result.stderr


OFFLINE_PROBE = textwrap.dedent(
    """
    import socket, sys
    from pathlib import Path
    sys.path.insert(0, {root!r})
    from tests.support import HearthProcess
    # The network really is off in here.
    try:
        socket.create_connection(("1.1.1.1", 443), timeout=3)
        sys.exit("network reachable: the test would prove nothing")
    except OSError:
        pass
    server = HearthProcess(Path({data!r}))
    server.start()
    try:
        import httpx
        from openai import OpenAI
        c = OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        r = c.chat.completions.create(model={llm!r}, messages=[{{"role": "user", "content": "hi"}}],
                                      max_tokens=4)
        assert r.usage.completion_tokens >= 1
        e = c.embeddings.create(model="all-minilm-l6-v2", input="offline")
        assert len(e.data[0].embedding) == 384
        print("OFFLINE-OK")
    finally:
        server.stop()
    """
)


@pytest.mark.slow
def test_serves_with_network_off(tmp_path):
    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is needed to cut the network for this test")
    ensure_models()
    probe = tmp_path / "probe.py"
    probe.write_text(OFFLINE_PROBE.format(root=str(ROOT), data=str(tmp_path / "d"), llm=LLM))
    # A new network namespace with only loopback: nothing outside this machine exists.
    cmd = ["unshare", "--net", "--", "sh", "-c", f"ip link set lo up && {sys.executable} {probe}"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OFFLINE-OK" in result.stdout
