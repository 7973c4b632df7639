"""Schema-driven extraction: constrained decoding, field confidences, spans, validators, fallbacks.

The model writes a JSON object under the schema's grammar (greedy). For each top-level property:

- **confidence** is the probability of the value's tokens as generated: ``exp(sum of logprobs)``
  of the tokens that overlap the value's text in the output;
- **span** is where the value occurs in the input (``[start, end)`` characters), when it does;
- a **validator** for its field type (email, phone, money, date, order id; see
  :mod:`engine.tasks.fallbacks`) checks and normalizes the value; a value that is empty or fails
  is replaced by the first match of the type's regex in the input, marked ``source="fallback"``.

The returned object is checked against the schema after the fallbacks; a fallback that would make it
invalid is not applied. The model is a small base model: the schema-validity and the fallbacks are
what make the results dependable.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import jsonschema

from engine.errors import InvalidRequestError, UnprocessableError
from engine.tasks.fallbacks import Found, field_type_for
from engine.tasks.llm import Completion, TaskLLM

logger = logging.getLogger(__name__)

Source = Literal["model", "fallback", "input", "none"]
MAX_PROPERTIES = 64


@dataclass
class FieldResult:
    value: Any
    confidence: float | None
    span: tuple[int, int] | None
    source: Source
    valid: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "confidence": None if self.confidence is None else round(self.confidence, 6),
            "span": list(self.span) if self.span else None,
            "source": self.source,
            "valid": self.valid,
        }


@dataclass
class Extraction:
    object: dict[str, Any]
    fields: dict[str, FieldResult]
    valid: bool  # the object validates against the schema
    raw: str  # the model's output text ("" when the model was not asked)
    usage: dict[str, float] = field(default_factory=dict)

    @property
    def fallbacks(self) -> list[str]:
        return [name for name, f in self.fields.items() if f.source == "fallback"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "object": self.object,
            "fields": {k: v.to_dict() for k, v in self.fields.items()},
            "valid": self.valid,
            "fallbacks": self.fallbacks,
            "raw": self.raw,
        }


# ---- schema checks -----------------------------------------------------------------------------


def check_schema(schema: object, param: str = "schema") -> dict[str, Any]:
    """An extraction schema: a JSON Schema object with ``properties`` (400 otherwise)."""
    if not isinstance(schema, dict):
        raise InvalidRequestError(f"{param} must be a JSON Schema object", param=param)
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InvalidRequestError(
            f"{param} is not a valid JSON Schema: {exc.message}", param=param
        ) from None
    props = schema.get("properties")
    if schema.get("type") != "object" or not isinstance(props, dict) or not props:
        raise InvalidRequestError(
            f'{param} must have "type": "object" and at least one property', param=param
        )
    if len(props) > MAX_PROPERTIES:
        raise InvalidRequestError(f"{param}: at most {MAX_PROPERTIES} properties", param=param)
    return schema


def _validator(schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def is_valid(schema: dict[str, Any], obj: Any) -> bool:
    return _validator(schema).is_valid(obj)


# ---- prompt ------------------------------------------------------------------------------------


def _describe(name: str, prop: dict[str, Any]) -> str:
    kind = prop.get("type", "value")
    kind = "/".join(kind) if isinstance(kind, list) else kind
    note = f": {prop['description']}" if isinstance(prop.get("description"), str) else ""
    return f"- {name} ({kind}){note}"


def build_prompt(text: str, schema: dict[str, Any], instructions: str | None) -> str:
    """A plain completion prompt (base models follow a worked pattern better than a chat turn)."""
    fields = "\n".join(_describe(k, v) for k, v in schema["properties"].items())
    guide = f"{instructions.strip()}\n" if instructions else ""
    return (
        "Extract these fields from the text as JSON. Use null when a field is not in the text.\n"
        f"{guide}Fields:\n{fields}\n\nText: {text.strip()}\nJSON: "
    )


# ---- spans and confidences ---------------------------------------------------------------------


def value_offsets(raw: str) -> dict[str, tuple[int, int]]:
    """Character ranges ``[start, end)`` of each top-level value in the JSON object text ``raw``."""
    decoder = json.JSONDecoder()
    out: dict[str, tuple[int, int]] = {}
    i = raw.find("{")
    if i < 0:
        return out
    i += 1
    while True:
        i = _skip(raw, i, " \t\r\n,")
        if i >= len(raw) or raw[i] != '"':
            return out
        try:
            key, i = decoder.raw_decode(raw, i)
            i = _skip(raw, i, " \t\r\n")
            if i >= len(raw) or raw[i] != ":":
                return out
            start = _skip(raw, i + 1, " \t\r\n")
            _, end = decoder.raw_decode(raw, start)
        except json.JSONDecodeError:
            return out
        out[str(key)] = (start, end)
        i = end


def _skip(text: str, i: int, chars: str) -> int:
    while i < len(text) and text[i] in chars:
        i += 1
    return i


def value_confidence(completion: Completion, char_range: tuple[int, int]) -> float | None:
    """exp(sum of logprobs) of the generated tokens overlapping ``char_range`` of the output."""
    if not completion.tokens:
        return None
    start = len(completion.text[: char_range[0]].encode())
    end = len(completion.text[: char_range[1]].encode())
    total, pos, hit = 0.0, 0, False
    for token in completion.tokens:
        token_end = pos + len(token.bytes)
        if token_end > start and pos < end:
            total += token.logprob
            hit = True
        pos = token_end
        if pos >= end:
            break
    return math.exp(total) if hit else None


def find_span(text: str, value: Any) -> tuple[int, int] | None:
    """Where ``value`` (a string or number) occurs in ``text``: exact, then case-insensitive."""
    if isinstance(value, bool) or value is None:
        return None
    needles = [value.strip()] if isinstance(value, str) else _number_forms(value)
    for needle in needles:
        if not needle:
            continue
        at = text.find(needle)
        if at < 0:
            at = text.lower().find(needle.lower())
        if at >= 0:
            return (at, at + len(needle))
    return None


def _number_forms(value: Any) -> list[str]:
    if not isinstance(value, int | float):
        return []
    forms = [str(value)]
    if isinstance(value, float) and value.is_integer():
        forms += [str(int(value)), f"{int(value):,}"]
    return forms


# ---- the extraction ----------------------------------------------------------------------------


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _fit_type(value: Any, prop: dict[str, Any]) -> Any:
    """A fallback value in the property's declared type (money as a string when it is a string)."""
    kinds = prop.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    if isinstance(value, float) and value.is_integer() and "integer" in kinds:
        return int(value)
    if not isinstance(value, str) and "string" in kinds and not {"number", "integer"} & set(kinds):
        return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    return value


def resolve_field(
    name: str, prop: dict[str, Any], model_value: Any, text: str, schema_ok: Any
) -> tuple[Any, Source, bool, Found | None]:
    """Validate the model's value for a typed field and fall back to the text's regex match.

    Returns (value, source, valid, found) where ``found`` carries the regex span when it was used.
    ``schema_ok(value)`` says whether the object stays schema-valid with this value.
    """
    kind = field_type_for(name, prop)
    if kind is None:
        return model_value, ("none" if _empty(model_value) else "model"), True, None
    normalized = None if _empty(model_value) else kind.validate(model_value)
    if normalized is not None and kind.grounded(normalized, text):
        fitted = _fit_type(normalized, prop)
        if schema_ok(fitted):
            return fitted, "model", True, None
    found = kind.find(text)
    if found is not None:
        fitted = _fit_type(found.value, prop)
        if schema_ok(fitted):
            return fitted, "fallback", True, found
    if schema_ok(None):  # nothing dependable: say so rather than keep an invented value
        return None, "none", _empty(model_value), None
    return model_value, ("none" if _empty(model_value) else "model"), False, None


def _allows_null(prop: dict[str, Any]) -> bool:
    return jsonschema.Draft202012Validator(prop).is_valid(None)


def assemble(
    text: str, schema: dict[str, Any], model_obj: dict[str, Any], completion: Completion | None
) -> Extraction:
    """Apply validators/fallbacks to the model's object and attach confidences and spans.

    Each value is checked against its own property schema (so one field's fallback does not
    depend on the others); a required property the model left out is null when it may be.
    """
    offsets = value_offsets(completion.text) if completion else {}
    obj = dict(model_obj)
    fields: dict[str, FieldResult] = {}
    required = set(schema.get("required") or ())
    for name, prop in schema["properties"].items():
        prop = prop if isinstance(prop, dict) else {}
        prop_validator = jsonschema.Draft202012Validator(
            prop, format_checker=jsonschema.FormatChecker()
        )
        value, source, valid, found = resolve_field(
            name, prop, obj.get(name), text, prop_validator.is_valid
        )
        if name in obj or value is not None or (name in required and _allows_null(prop)):
            obj[name] = value
        confidence = None
        if source == "model" and completion is not None and name in offsets:
            confidence = value_confidence(completion, offsets[name])
        span = (found.start, found.end) if found else find_span(text, value)
        fields[name] = FieldResult(value, confidence, span, source, valid)
    return Extraction(obj, fields, is_valid(schema, obj), completion.text if completion else "")


#: Longest string the model may write for a field that sets no maxLength (bounds runaway output).
DEFAULT_MAX_LENGTH = 200
_TYPE_MAX_LENGTH = {"email": 254, "phone": 32, "order_id": 12, "date": 40, "money": 40}


def model_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema the model decodes under: string properties get a maxLength (a small model can
    repeat a character until max_tokens, which would cut the JSON)."""
    props = {}
    for name, prop in schema["properties"].items():
        prop = dict(prop) if isinstance(prop, dict) else {}
        kinds = prop.get("type")
        kinds = kinds if isinstance(kinds, list) else [kinds]
        if "string" in kinds and "maxLength" not in prop and "enum" not in prop:
            kind = field_type_for(name, prop)
            prop["maxLength"] = _TYPE_MAX_LENGTH.get(kind.name, 64) if kind else DEFAULT_MAX_LENGTH
        props[name] = prop
    return {**schema, "properties": props}


def _parse_object(raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        start, end = raw.find("{"), raw.rfind("}")
        try:
            value = json.loads(raw[start : end + 1]) if 0 <= start < end else {}
        except json.JSONDecodeError:
            value = {}
    return value if isinstance(value, dict) else {}


def max_tokens_for(schema: dict[str, Any]) -> int:
    return min(512, 48 + 40 * len(schema["properties"]))


async def extract(
    llm: TaskLLM | None,
    text: str,
    schema: dict[str, Any],
    instructions: str | None = None,
) -> Extraction:
    """Extract ``schema``'s fields from ``text``. With ``llm=None`` only the regex fallbacks run
    (the low-confidence path of workflows)."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidRequestError("input must be a non-empty string", param="input")
    completion = None
    model_obj: dict[str, Any] = {}
    if llm is not None:
        completion = await llm.complete(
            build_prompt(text, schema, instructions),
            schema=schema,
            max_tokens=max_tokens_for(schema),
        )
        model_obj = _parse_object(completion.text)
        if not model_obj and completion.finish_reason == "length":
            logger.warning("extraction output cut at max_tokens: %r", completion.text[:200])
    result = assemble(text, schema, model_obj, completion)
    if completion is not None:
        result.usage = {
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens,
            "seconds": completion.seconds,
        }
    return result


async def extract_many(
    llm: TaskLLM | None, texts: Sequence[str], schema: dict[str, Any], instructions: str | None
) -> list[Extraction]:
    """A batch: each input in turn (the engine batches concurrent requests itself)."""
    import asyncio

    return list(await asyncio.gather(*(extract(llm, t, schema, instructions) for t in texts)))


def require_valid(extraction: Extraction) -> Extraction:
    if not extraction.valid:
        raise UnprocessableError("the extracted object does not validate against the schema")
    return extraction
