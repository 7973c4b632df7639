from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support import HearthProcess

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def hearth(tmp_path_factory) -> Iterator[HearthProcess]:
    """One real server (test profile, real Gemma GGUF + MiniLM) shared by the e2e tests."""
    server = HearthProcess(tmp_path_factory.mktemp("hearth"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def client(hearth):
    from openai import OpenAI

    return OpenAI(base_url=f"{hearth.url}/v1", api_key="unused", max_retries=0, timeout=300)
