"""Schema checks before any engine work: meta-schema, $ref, recursion, size, keyword analysis."""

from __future__ import annotations

import jsonschema
import pytest

from engine.errors import InvalidRequestError
from engine.grammar import schema_check
from engine.grammar.schema_check import check_schema


def _reject(schema: object, code: str, **kw: object) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as exc:
        check_schema(schema, param="p", **kw)  # type: ignore[arg-type]
    assert exc.value.code == code
    assert exc.value.param == "p"
    return exc.value


def test_invalid_schema_fails_meta_check() -> None:
    err = _reject({"type": "object", "properties": {"a": {"type": "strnig"}}}, "invalid_schema")
    assert "/properties/a/type" in err.message


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"a": {"type": "string", "minLength": 2}}},
        {"$defs": {"x": {"items": {"prefixItems": [{"const": 1}]}}}, "$ref": "#/$defs/x"},
        {"properties": {"a": {"type": "strnig"}}},  # vocabulary: validation
        {"items": {"minLength": -1}},  # validation's $defs, reached through applicator
        {"dependencies": {"a": [1]}},  # the top meta-schema's own keywords
        {"dependentRequired": {"a": ["b", "b"]}},
        {"contentSchema": {"anyOf": []}},  # content → applicator
        {"unevaluatedProperties": {"$anchor": "no spaces allowed"}},  # unevaluated → core
        {"$defs": {"d": {"format": 5}}},  # format-annotation
        {"not": {"deprecated": "yes"}},  # meta-data
    ],
)
def test_flattened_2020_12_meta_schema_agrees_with_the_official_one(schema: dict) -> None:
    official = jsonschema.Draft202012Validator(jsonschema.Draft202012Validator.META_SCHEMA)
    flat = schema_check.meta_validator(jsonschema.Draft202012Validator)

    def errors(v: jsonschema.protocols.Validator) -> set[tuple[str, tuple]]:
        return {(e.message, tuple(e.path)) for e in v.iter_errors(schema)}

    assert errors(flat) == errors(official)


@pytest.mark.parametrize(
    "ref", ["http://example.com/s.json", "file:///etc/passwd", "other.json#/a", "//host/x"]
)
def test_remote_and_file_refs_are_rejected(ref: str) -> None:
    err = _reject({"type": "object", "properties": {"a": {"$ref": ref}}}, "remote_ref")
    assert "/properties/a/$ref" in err.message


def test_dangling_local_ref_is_rejected() -> None:
    _reject({"$ref": "#/$defs/missing"}, "invalid_schema")


def test_ref_cycle_without_descent_is_rejected() -> None:
    schema = {
        "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"anyOf": [{"$ref": "#/$defs/a"}]}},
        "$ref": "#/$defs/a",
    }
    err = _reject(schema, "recursive_schema")
    assert "unbounded recursion" in err.message


def test_structural_recursion_is_allowed() -> None:
    tree = {
        "$defs": {
            "node": {
                "type": "object",
                "properties": {"children": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
            }
        },
        "$ref": "#/$defs/node",
    }
    assert "$ref" in check_schema(tree, param="p").enforced_by_grammar


def test_oversized_and_deep_schemas_are_rejected() -> None:
    big = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(20_000)}}
    _reject(big, "schema_too_large")
    deep: dict = {"type": "object"}
    for _ in range(schema_check.MAX_SCHEMA_DEPTH):
        deep = {"type": "array", "items": deep}
    _reject(deep, "schema_too_large")


def test_keyword_analysis_sorts_keywords() -> None:
    schema = {
        "type": "array",
        "items": {"type": "string", "format": "date"},
        "uniqueItems": True,
        "maxItems": 3,
        "contains": {"const": "2020-01-01"},
    }
    a = check_schema(schema, param="p")
    assert {"type", "items", "maxItems", "format:date"} <= set(a.enforced_by_grammar)
    assert set(a.validated_after_generation) == {"uniqueItems", "contains"}
    assert a.needs_lenient_compile
    assert not check_schema({"type": "string"}, param="p").needs_lenient_compile


def test_unenforceable_keyword_is_rejected_with_its_pointer_unless_lenient() -> None:
    schema = {"type": "object", "properties": {"when": {"type": "string", "format": "x-custom"}}}
    err = _reject(schema, "unsupported_schema_keyword")
    assert "/properties/when/format" in err.message
    lenient = check_schema(schema, param="p", lenient=True)
    assert lenient.ignored and "/properties/when/format" in lenient.ignored[0]


def test_annotations_and_unknown_keywords_pass() -> None:
    schema = {"title": "t", "description": "d", "examples": [1], "x-vendor": 1, "type": "integer"}
    assert check_schema(schema, param="p").enforced_by_grammar == ("type",)
