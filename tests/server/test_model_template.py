"""A user model's own chat template on the HTTP path (stand-in backend): the prompt is the
template's rendering, and a template that refuses the conversation is a 400 naming the message,
never a 500."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar.testing import TestClient

from configs import load_settings
from models.registry import add_model
from server.app import create_app
from tests.models.ggufs import write_gguf
from tests.server.fakes import BOS, FakeParts
from tests.server.test_routes import wait_ready

# A template that writes its own BOS and refuses two user turns in a row.
TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if loop.index0 > 0 and m.role == messages[loop.index0 - 1].role %}"
    "{{ raise_exception('roles must alternate') }}{% endif %}"
    "<|{{ m.role }}|>{{ m.content }}{{ eos_token }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture
def setup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[TestClient, FakeParts]]:
    card = add_model(write_gguf(tmp_path / "own.gguf", chat_template=TEMPLATE), data_dir=tmp_path)
    monkeypatch.setenv("HEARTH_DATA_DIR", str(tmp_path))
    settings = load_settings("test", env={"HEARTH_LLM_MODEL": card.id}, data_dir=tmp_path)
    parts = FakeParts(settings)
    app = create_app(settings, open_services=parts.open, exit_on_start_failure=False)
    with TestClient(app, base_url="http://testclient") as client:
        wait_ready(client)
        yield client, parts


def test_prompt_is_the_models_own_template(setup: tuple[TestClient, FakeParts]) -> None:
    client, parts = setup
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    r = client.post("/v1/chat/completions", json={"model": "own", "messages": messages})
    assert r.status_code == 200, r.text
    prompt = parts.backend.submitted[-1].prompt_tokens
    # The fake vocabulary is bytes (+ BOS); the template wrote "<s>" as text, so no BOS is added.
    assert BOS not in prompt
    text = bytes(t for t in prompt if t < 256).decode()
    assert text == "<s><|system|>Be brief.</s><|user|>Hi</s><|assistant|>"


def test_template_error_is_a_400_naming_the_message(setup: tuple[TestClient, FakeParts]) -> None:
    client, _ = setup
    messages = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    r = client.post("/v1/chat/completions", json={"model": "own", "messages": messages})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "messages[1]"
    assert "messages[1] (user)" in error["message"] and "roles must alternate" in error["message"]
