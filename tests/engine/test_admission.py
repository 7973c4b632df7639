"""A full engine refuses a request (503) before doing any of its work: no grammar compiled, no
prompt tokenized."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from engine import GenerateRequest, OverloadedError, SamplingParams, build_spec
from tests.server.fakes import FakeParts, fake_settings


def test_overload_is_refused_before_the_grammar_compiles(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path)
    llm = dataclasses.replace(settings.llm, max_running=1, max_waiting=1)
    settings = dataclasses.replace(settings, llm=llm)
    parts = FakeParts(settings)
    parts.backend.hold = True

    def request(i: int, **extra: object) -> GenerateRequest:
        return GenerateRequest(
            request_id=f"r{i}",
            model=settings.llm.model,
            params=SamplingParams(max_tokens=4),
            prompt="hi",
            **extra,  # type: ignore[arg-type]
        )

    async def main() -> None:
        hearth = await parts.open(settings)
        try:
            held = [
                asyncio.create_task(_drain(hearth.engine.generate(request(i)))) for i in range(2)
            ]
            while hearth.engine.models.default.inflight < 2:
                await asyncio.sleep(0.01)
            # The stand-in backend cannot compile grammars (that would be a 400): a 503 shows
            # the request was refused before its format was even looked at.
            spec = build_spec(response_format={"type": "json_object"})
            with pytest.raises(OverloadedError):
                await _drain(hearth.engine.generate(request(9, response_format=spec)))
            for task in held:
                task.cancel()
            await asyncio.gather(*held, return_exceptions=True)
        finally:
            await hearth.close()

    asyncio.run(main())


async def _drain(events) -> list:
    return [e async for e in events]
