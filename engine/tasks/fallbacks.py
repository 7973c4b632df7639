"""Validators and regex fallbacks for common field types: email, phone, money, dates, order ids.

Each field type has a *validator* (does a value the model produced look right; returns the
normalized value or None) and a *finder* (where in the input text does such a value occur). They
are pure functions over strings, with no model behind them, so extraction stays dependable when
the model is weak: a field the model left empty or invalid is filled from the text and marked as a
fallback.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass

EMAIL_RE = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# International or national numbers: an optional +, then 7-15 digits with spaces, dots, dashes or
# one pair of parentheses between groups.
PHONE_RE = re.compile(r"(?<![\w+])\+?\(?\d[\d\s().-]{5,20}\d(?!\w)")
_MONEY_AMOUNT = r"\d{1,3}(?:[,\s]\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
_MONEY_SUFFIX = r"\s?(?:[kK]|[mM]|thousand|million|bn|billion)?"
MONEY_RE = re.compile(
    r"(?:(?P<sym>[$€£¥])\s?(?P<a1>" + _MONEY_AMOUNT + r")(?P<s1>" + _MONEY_SUFFIX + r"))"
    r"|(?:(?P<a2>" + _MONEY_AMOUNT + r")(?P<s2>" + _MONEY_SUFFIX + r")\s?"
    r"(?P<cur>USD|EUR|GBP|JPY|CHF|dollars?|euros?|pounds?)\b)",
    re.IGNORECASE,
)
_MONTHS = (
    "january|february|march|april|may|june|july|august|september|october|november|december"
    "|jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec"
)
DATE_RE = re.compile(
    r"\b(?:\d{4}-\d{1,2}-\d{1,2}"
    r"|\d{1,2}/\d{1,2}/\d{2,4}"
    r"|\d{1,2}(?:st|nd|rd|th)?\s+(?:" + _MONTHS + r")\.?,?\s+\d{4}"
    r"|(?:" + _MONTHS + r")\.?\s+\d{1,2}(?:st|nd|rd|th)?,?\s+\d{4})\b",
    re.IGNORECASE,
)
ORDER_ID_RE = re.compile(r"\bORD-\d{4}\b")

_MULTIPLIERS = {"k": 1e3, "thousand": 1e3, "m": 1e6, "million": 1e6, "bn": 1e9, "billion": 1e9}


@dataclass(frozen=True)
class Found:
    """A value found in the text: normalized value and its character span ``[start, end)``."""

    value: object
    start: int
    end: int


# ---- validators: raw value -> normalized value, or None when invalid ---------------------------


def validate_email(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    text = value.strip()
    return text if EMAIL_RE.fullmatch(text) else None


def validate_phone(value: object) -> str | None:
    """A phone number has 7 to 15 digits (E.164); separators are kept as written."""
    if not isinstance(value, str | int):
        return None
    text = str(value).strip()
    digits = re.sub(r"\D", "", text)
    if not 7 <= len(digits) <= 15 or re.search(r"[^\d\s().+-]", text):
        return None
    return text


def parse_money(text: str) -> float | None:
    """``"$25k"``, ``"25,000 USD"``, ``"1.5 million"`` → a number; None when there is no amount."""
    match = MONEY_RE.search(text)
    if match:
        amount, suffix = match["a1"] or match["a2"], (match["s1"] or match["s2"] or "")
    else:
        bare = re.fullmatch(r"\s*(" + _MONEY_AMOUNT + r")(" + _MONEY_SUFFIX + r")\s*", text)
        if not bare:
            return None
        amount, suffix = bare.group(1), bare.group(2)
    number = float(re.sub(r"[,\s]", "", amount))
    return number * _MULTIPLIERS.get(suffix.strip().lower(), 1.0)


def validate_money(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if value >= 0 else None
    if isinstance(value, str):
        return parse_money(value)
    return None


def parse_date(text: str) -> str | None:
    """A date in any of the forms DATE_RE knows → ISO ``YYYY-MM-DD``; None when not a real date."""
    text = text.strip().rstrip(".")
    cleaned = re.sub(r"(\d)(st|nd|rd|th)\b", r"\1", text, flags=re.IGNORECASE).replace(",", "")
    cleaned = re.sub(r"\bsept\b", "sep", cleaned, flags=re.IGNORECASE)
    for fmt in ("%Y-%m-%d", "%m/%d/%Y", "%m/%d/%y", "%d %B %Y", "%d %b %Y", "%B %d %Y", "%b %d %Y"):
        try:
            return dt.datetime.strptime(cleaned, fmt).date().isoformat()
        except ValueError:
            continue
    return None


def validate_date(value: object) -> str | None:
    return parse_date(value) if isinstance(value, str) else None


def validate_order_id(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    text = value.strip().upper()
    return text if ORDER_ID_RE.fullmatch(text) else None


# ---- finders: text -> the first value of the type, with its span ------------------------------


def _first(
    pattern: re.Pattern[str], text: str, normalize: Callable[[str], object | None]
) -> Found | None:
    for match in pattern.finditer(text):
        value = normalize(match.group(0))
        if value is not None:
            return Found(value, match.start(), match.end())
    return None


def find_email(text: str) -> Found | None:
    return _first(EMAIL_RE, text, validate_email)


def find_phone(text: str) -> Found | None:
    return _first(PHONE_RE, text, lambda s: validate_phone(s.strip()))


def find_money(text: str) -> Found | None:
    return _first(MONEY_RE, text, parse_money)


def find_date(text: str) -> Found | None:
    return _first(DATE_RE, text, parse_date)


def find_order_id(text: str) -> Found | None:
    return _first(ORDER_ID_RE, text, validate_order_id)


# ---- grounding: does a (normalized) value actually occur in the text -------------------------


def _all(pattern: re.Pattern[str], text: str, normalize: Callable[[str], object | None]) -> list:
    return [v for m in pattern.finditer(text) if (v := normalize(m.group(0))) is not None]


def grounded_email(value: object, text: str) -> bool:
    return str(value).lower() in text.lower()


def grounded_phone(value: object, text: str) -> bool:
    digits = re.sub(r"\D", "", str(value))
    return bool(digits) and digits in re.sub(r"\D", "", text)


def grounded_money(value: object, text: str) -> bool:
    return value in _all(MONEY_RE, text, parse_money) or _number_in(value, text)


def _number_in(value: object, text: str) -> bool:
    if not isinstance(value, int | float):
        return False
    forms = {str(value)}
    if float(value).is_integer():
        forms |= {str(int(value)), f"{int(value):,}"}
    return any(re.search(rf"(?<![\d.,]){re.escape(f)}(?![\d])", text) for f in forms)


def grounded_date(value: object, text: str) -> bool:
    return value in _all(DATE_RE, text, parse_date)


def grounded_order_id(value: object, text: str) -> bool:
    return str(value).upper() in text.upper()


@dataclass(frozen=True)
class FieldType:
    """A known field type: check a value, find one in text, and tell whether a value is in it.

    A model's value for a typed field is kept only when it is valid *and* grounded: a small model
    invents plausible emails and budgets, and a value that is not in the text is not extracted.
    """

    name: str
    validate: Callable[[object], object | None]
    find: Callable[[str], Found | None]
    grounded: Callable[[object, str], bool]


FIELD_TYPES: dict[str, FieldType] = {
    "email": FieldType("email", validate_email, find_email, grounded_email),
    "phone": FieldType("phone", validate_phone, find_phone, grounded_phone),
    "money": FieldType("money", validate_money, find_money, grounded_money),
    "date": FieldType("date", validate_date, find_date, grounded_date),
    "order_id": FieldType("order_id", validate_order_id, find_order_id, grounded_order_id),
}

# Names and JSON Schema formats that imply a field type when the schema does not say ``x-type``.
_NAME_HINTS: tuple[tuple[str, str], ...] = (
    ("email", "email"),
    ("phone", "phone"),
    ("tel", "phone"),
    ("mobile", "phone"),
    ("budget", "money"),
    ("amount", "money"),
    ("price", "money"),
    ("cost", "money"),
    ("date", "date"),
    ("deadline", "date"),
    ("due", "date"),
    ("order_id", "order_id"),
)


def field_type_for(name: str, schema: dict[str, object]) -> FieldType | None:
    """A schema property's field type: its ``x-type``, else its ``format``, else its name."""
    explicit = schema.get("x-type")
    if isinstance(explicit, str) and explicit in FIELD_TYPES:
        return FIELD_TYPES[explicit]
    fmt = schema.get("format")
    if fmt == "email":
        return FIELD_TYPES["email"]
    if fmt == "date":
        return FIELD_TYPES["date"]
    lowered = name.lower()
    for hint, kind in _NAME_HINTS:
        if hint in lowered:
            return FIELD_TYPES[kind]
    return None
