"""Extraction: validators, regex fallbacks marked as such, spans, confidences, schema validity."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from engine.errors import InvalidRequestError
from engine.tasks import extract as ex
from tests.engine.tasks.fixtures_tasks import ScriptedLLM

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": ["string", "null"]},
        "email": {"type": ["string", "null"]},
        "phone": {"type": ["string", "null"]},
        "budget": {"type": ["number", "null"]},
    },
    "required": ["name", "email", "phone", "budget"],
    "additionalProperties": False,
}
TEXT = "Hi, I'm Dana Lee. Mail dana@acme.io or call +1 415 555 0199. Budget is $40k."


def run(llm: Any, text: str = TEXT, schema: dict[str, Any] = SCHEMA) -> ex.Extraction:
    return asyncio.run(ex.extract(llm, text, schema))


def test_model_values_kept_with_confidence_and_span() -> None:
    llm = ScriptedLLM({"name": "Dana Lee", "email": "dana@acme.io", "phone": None, "budget": 40000})
    got = run(llm)
    assert got.valid and got.object["name"] == "Dana Lee"
    name = got.fields["name"]
    assert name.source == "model" and 0 < name.confidence <= 1
    assert TEXT[name.span[0] : name.span[1]] == "Dana Lee"
    assert got.fields["email"].source == "model"
    assert got.fields["budget"].source == "model" and got.object["budget"] == 40000


def test_invalid_or_invented_values_fall_back_to_the_text() -> None:
    llm = ScriptedLLM({"name": "Dana", "email": "not-an-email", "phone": "555", "budget": 99})
    got = run(llm)
    assert got.valid
    assert got.object["email"] == "dana@acme.io" and got.fields["email"].source == "fallback"
    assert got.object["phone"] == "+1 415 555 0199" and got.fields["phone"].source == "fallback"
    assert got.object["budget"] == 40000.0 and got.fields["budget"].source == "fallback"
    assert set(got.fallbacks) == {"email", "phone", "budget"}
    span = got.fields["email"].span
    assert TEXT[span[0] : span[1]] == "dana@acme.io"
    assert got.fields["email"].confidence is None  # no model probability behind a fallback


def test_unparseable_model_output_still_gives_a_valid_object() -> None:
    class Broken(ScriptedLLM):
        async def complete(self, prompt, *, schema=None, max_tokens=256):  # noqa: ANN001
            out = await super().complete(prompt, schema=schema, max_tokens=max_tokens)
            out.text = '{"name":"Da'
            return out

    got = run(Broken())
    assert got.valid and set(got.object) == {"name", "email", "phone", "budget"}
    assert got.object["name"] is None and got.object["email"] == "dana@acme.io"


def test_regex_only_path_without_a_model() -> None:
    got = run(None)
    assert got.valid and got.raw == ""
    assert got.object["email"] == "dana@acme.io" and got.object["name"] is None
    assert got.fields["name"].source == "none"


def test_fallback_that_breaks_the_property_schema_is_not_applied() -> None:
    schema = {
        "type": "object",
        "properties": {"email": {"type": "string", "maxLength": 5}},
        "required": ["email"],
    }
    got = run(ScriptedLLM({"email": "bad"}), schema=schema)
    assert got.object["email"] == "bad" and not got.fields["email"].valid


def test_model_schema_bounds_strings() -> None:
    bounded = ex.model_schema(SCHEMA)
    assert bounded["properties"]["email"]["maxLength"] == 254
    assert bounded["properties"]["name"]["maxLength"] == ex.DEFAULT_MAX_LENGTH
    assert "maxLength" not in bounded["properties"]["budget"]


def test_value_offsets_and_confidence() -> None:
    raw = '{"a": "xy", "b": 12, "c": {"d": [1, 2]}}'
    offs = ex.value_offsets(raw)
    assert raw[slice(*offs["a"])] == '"xy"' and raw[slice(*offs["c"])] == '{"d": [1, 2]}'
    llm = ScriptedLLM({"a": "xy"})
    completion = asyncio.run(llm.complete("p"))
    conf = ex.value_confidence(completion, ex.value_offsets(completion.text)["a"])
    assert conf is not None and 0 < conf < 1


@pytest.mark.parametrize(
    "schema",
    [None, [], {"type": "array"}, {"type": "object", "properties": {}}, {"type": 5}],
)
def test_bad_schemas_are_400(schema: Any) -> None:
    with pytest.raises(InvalidRequestError) as err:
        ex.check_schema(schema)
    assert err.value.param == "schema"


def test_empty_input_is_400() -> None:
    with pytest.raises(InvalidRequestError) as err:
        run(None, text="  ")
    assert err.value.param == "input"
