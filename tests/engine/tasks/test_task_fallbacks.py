"""Validators and regex finders of common field types."""

from __future__ import annotations

import pytest

from engine.tasks import fallbacks as fb


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("mail me at jane.doe+x@example.co.uk today", "jane.doe+x@example.co.uk"),
        ("no address here", None),
    ],
)
def test_find_email(text: str, value: str | None) -> None:
    found = fb.find_email(text)
    assert (found.value if found else None) == value
    if found:
        assert text[found.start : found.end] == value


@pytest.mark.parametrize(
    ("text", "digits"),
    [
        ("call +1 (555) 123-4567 now", "15551234567"),
        ("phone: 020 7946 0958.", "02079460958"),
        ("order 12 items", None),
    ],
)
def test_find_phone(text: str, digits: str | None) -> None:
    found = fb.find_phone(text)
    got = "".join(c for c in found.value if c.isdigit()) if found else None
    assert got == digits


@pytest.mark.parametrize(
    ("text", "amount"),
    [
        ("budget is $25k for this", 25_000.0),
        ("around 1,500,000 USD", 1_500_000.0),
        ("€ 3.5 million", 3_500_000.0),
        ("we have 40000 dollars", 40_000.0),
        ("no money talk", None),
    ],
)
def test_find_money(text: str, amount: float | None) -> None:
    found = fb.find_money(text)
    assert (found.value if found else None) == amount


@pytest.mark.parametrize(
    ("raw", "iso"),
    [
        ("2026-03-04", "2026-03-04"),
        ("March 4th, 2026", "2026-03-04"),
        ("4 Mar 2026", "2026-03-04"),
        ("12/25/2026", "2026-12-25"),
        ("2026-02-30", None),
        ("soon", None),
    ],
)
def test_parse_date(raw: str, iso: str | None) -> None:
    assert fb.parse_date(raw) == iso


def test_validators_reject_and_normalize() -> None:
    assert fb.validate_email("not an email") is None
    assert fb.validate_phone("12") is None
    assert fb.validate_phone("call me") is None
    assert fb.validate_money("$1,200") == 1200.0
    assert fb.validate_money(-5) is None
    assert fb.validate_money(True) is None
    assert fb.validate_order_id("ord-1234") == "ORD-1234"
    assert fb.validate_order_id("ORD-12345") is None


def test_order_id_span() -> None:
    text = "Where is ORD-4821? It was due."
    found = fb.find_order_id(text)
    assert found is not None and text[found.start : found.end] == "ORD-4821"


def test_field_type_hints() -> None:
    assert fb.field_type_for("contact_email", {"type": "string"}).name == "email"
    assert fb.field_type_for("x", {"type": "string", "format": "email"}).name == "email"
    assert fb.field_type_for("when", {"type": "string", "x-type": "date"}).name == "date"
    assert fb.field_type_for("budget", {"type": "number"}).name == "money"
    assert fb.field_type_for("company", {"type": "string"}) is None
