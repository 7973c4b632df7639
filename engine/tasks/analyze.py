"""Document intelligence: summaries (short, medium, detailed), action items and risks.

Long documents are split into pieces of at most ``piece_chars`` characters (on chunk or paragraph
boundaries); each piece is *mapped* to a partial summary, action items and risks, each generated
under its JSON Schema; the partial summaries are *reduced* to the three final summaries, the lists
are merged and de-duplicated. Each task's result is cached by (content hash, task).

Every result is valid against its schema: when the model's output is cut off or invalid (a small
base model often is) the step falls back to an extractive answer built from the text itself (lead
sentences, sentences that name an action or a risk), and the result says ``"fallback": true``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from engine.tasks.fallbacks import find_date
from engine.tasks.llm import Completion, TaskLLM

logger = logging.getLogger(__name__)

TASKS = ("summary", "action_items", "risks")
SEVERITIES = ("low", "medium", "high")

SUMMARY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "short": {"type": "string", "minLength": 1, "maxLength": 300},
        "medium": {"type": "string", "minLength": 1, "maxLength": 900},
        "detailed": {"type": "string", "minLength": 1, "maxLength": 2500},
    },
    "required": ["short", "medium", "detailed"],
    "additionalProperties": False,
}
PIECE_SUMMARY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"summary": {"type": "string", "minLength": 1, "maxLength": 600}},
    "required": ["summary"],
    "additionalProperties": False,
}
ACTION_ITEM: dict[str, Any] = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "minLength": 1, "maxLength": 200},
        "owner": {"type": ["string", "null"], "maxLength": 100},
        "due_date": {"type": ["string", "null"], "maxLength": 40},
    },
    "required": ["title", "owner", "due_date"],
    "additionalProperties": False,
}
ACTION_ITEMS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"action_items": {"type": "array", "items": ACTION_ITEM, "maxItems": 10}},
    "required": ["action_items"],
    "additionalProperties": False,
}
RISK: dict[str, Any] = {
    "type": "object",
    "properties": {
        "description": {"type": "string", "minLength": 1, "maxLength": 300},
        "severity": {"enum": list(SEVERITIES)},
    },
    "required": ["description", "severity"],
    "additionalProperties": False,
}
RISKS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"risks": {"type": "array", "items": RISK, "maxItems": 10}},
    "required": ["risks"],
    "additionalProperties": False,
}
#: The schema every stored result of a task satisfies.
RESULT_SCHEMAS = {
    "summary": SUMMARY_SCHEMA,
    "action_items": ACTION_ITEMS_SCHEMA,
    "risks": RISKS_SCHEMA,
}

Report = Callable[[int, int], Awaitable[None]]  # (steps done, steps total)


@dataclass
class StepUsage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    calls: int = 0

    def add(self, completion: Completion) -> None:
        self.prompt_tokens += completion.prompt_tokens
        self.completion_tokens += completion.completion_tokens
        self.seconds += completion.seconds
        self.calls += 1


@dataclass
class Analysis:
    results: dict[str, dict[str, Any]]  # task -> result (valid against RESULT_SCHEMAS[task])
    cached: list[str] = field(default_factory=list)
    usage: dict[str, StepUsage] = field(default_factory=dict)


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# ---- splitting ----------------------------------------------------------------------------------


def split_pieces(parts: Sequence[str], piece_chars: int) -> list[str]:
    """Group consecutive parts (chunks or paragraphs) into pieces of at most ``piece_chars``;
    a single part longer than that is cut at sentence ends."""
    pieces: list[str] = []
    current = ""
    for part in _bounded(parts, piece_chars):
        if current and len(current) + len(part) + 2 > piece_chars:
            pieces.append(current)
            current = ""
        current = f"{current}\n\n{part}" if current else part
    if current.strip():
        pieces.append(current)
    return pieces


def _bounded(parts: Sequence[str], limit: int) -> list[str]:
    out: list[str] = []
    for part in (p.strip() for p in parts):
        while len(part) > limit:
            cut = part.rfind(". ", 0, limit)
            cut = cut + 1 if cut > limit // 2 else limit
            out.append(part[:cut].strip())
            part = part[cut:].strip()
        if part:
            out.append(part)
    return out


def sentences(text: str) -> list[str]:
    found = re.split(r"(?<=[.!?])\s+|\n{2,}", text)
    return [s.strip() for s in found if len(s.strip()) > 2]


# ---- extractive fallbacks ----------------------------------------------------------------------


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def extractive_summary(text: str) -> dict[str, str]:
    lead = sentences(text) or [text.strip() or "(empty document)"]
    return {
        "short": _clip(lead[0], 300),
        "medium": _clip(" ".join(lead[:3]), 900),
        "detailed": _clip(" ".join(lead[:10]), 2500),
    }


_ACTION = re.compile(
    r"\b(?:action(?: item)?s?:|todo:?|to do:|must|needs? to|should|will|please|follow up|"
    r"deadline|due)\b",
    re.IGNORECASE,
)
_OWNER = re.compile(r"^([A-Z][a-z]+(?: [A-Z][a-z]+)?) (?:will|should|must|needs? to)\b")
_RISK = re.compile(
    r"\b(risk|danger|threat|delay|breach|vulnerab\w*|fail\w*|outage|shortage|overrun|"
    r"penalt\w*|liabilit\w*|uncertain\w*|concern)\b",
    re.IGNORECASE,
)
_HIGH = re.compile(r"\b(critical|severe|major|breach|outage|legal|penalt\w*|fatal)\b", re.I)
_LOW = re.compile(r"\b(minor|small|slight|low)\b", re.IGNORECASE)


def extractive_action_items(text: str) -> list[dict[str, Any]]:
    items = []
    for sentence in sentences(text):
        if not _ACTION.search(sentence):
            continue
        owner = _OWNER.match(sentence)
        due = find_date(sentence)
        items.append(
            {
                "title": _clip(sentence, 200),
                "owner": owner.group(1) if owner else None,
                "due_date": str(due.value) if due else None,
            }
        )
    return items[:10]


def severity_of(sentence: str) -> str:
    if _HIGH.search(sentence):
        return "high"
    return "low" if _LOW.search(sentence) else "medium"


def extractive_risks(text: str) -> list[dict[str, Any]]:
    found = [s for s in sentences(text) if _RISK.search(s)]
    return [{"description": _clip(s, 300), "severity": severity_of(s)} for s in found[:10]]


# ---- model steps --------------------------------------------------------------------------------


def _prompt(task: str, text: str) -> str:
    asks = {
        "piece": "Summarize the text in two or three sentences.",
        "action_items": "List the action items in the text: what must be done, who owns it "
        "(or null), and the due date (or null).",
        "risks": "List the risks the text mentions, each with a severity: low, medium or high.",
        "summary": "Write three summaries of the notes: short (one sentence), medium (a "
        "paragraph) and detailed (several paragraphs).",
    }
    return f"{asks[task]}\n\nText:\n{text.strip()}\n\nJSON: "


async def _ask(
    llm: TaskLLM, task: str, text: str, schema: dict[str, Any], usage: StepUsage, max_tokens: int
) -> dict[str, Any] | None:
    """The model's object, or None when it is not valid against ``schema``."""
    completion = await llm.complete(_prompt(task, text), schema=schema, max_tokens=max_tokens)
    usage.add(completion)
    try:
        value = json.loads(completion.text)
    except json.JSONDecodeError:
        logger.info("%s: output is not JSON (finish=%s)", task, completion.finish_reason)
        return None
    if not jsonschema.Draft202012Validator(schema).is_valid(value):
        logger.info("%s: output does not match the schema", task)
        return None
    return value


def _dedupe(items: list[dict[str, Any]], key: str, limit: int = 10) -> list[dict[str, Any]]:
    seen: set[str] = set()
    out = []
    for item in items:
        norm = re.sub(r"\W+", " ", str(item[key]).lower()).strip()
        if norm and norm not in seen:
            seen.add(norm)
            out.append(item)
    return out[:limit]


def _normalize_item(item: dict[str, Any]) -> dict[str, Any]:
    due = item.get("due_date")
    found = find_date(due) if isinstance(due, str) else None
    owner = item.get("owner")
    return {
        "title": item["title"].strip() or "(untitled)",
        "owner": owner.strip() if isinstance(owner, str) and owner.strip() else None,
        "due_date": str(found.value) if found else None,
    }


@dataclass
class Analyzer:
    """Runs the tasks over one document's text. ``llm=None`` gives the extractive answers only."""

    llm: TaskLLM | None
    piece_chars: int = 2400
    max_tokens: int = 320

    def plan(self, parts: Sequence[str], tasks: Sequence[str]) -> tuple[list[str], int]:
        """Pieces and the number of model steps (the progress total)."""
        pieces = split_pieces(parts, self.piece_chars)
        lists = sum(1 for t in tasks if t in ("action_items", "risks"))
        summary = "summary" in tasks
        # One piece: its summaries are written from the text directly (no map step for them).
        per_piece = lists + (1 if summary and len(pieces) > 1 else 0)
        return pieces, max(1, len(pieces) * per_piece + (1 if summary else 0))

    async def run(
        self, parts: Sequence[str], tasks: Sequence[str], report: Report | None = None
    ) -> Analysis:
        pieces, total = self.plan(parts, tasks)
        text = "\n\n".join(pieces)
        analysis = Analysis(results={}, usage={t: StepUsage() for t in tasks})
        done = 0

        async def step() -> None:
            nonlocal done
            done += 1
            if report is not None:
                await report(done, total)

        partial: list[str] = []
        items: list[dict[str, Any]] = []
        risks: list[dict[str, Any]] = []
        fallback = {t: self.llm is None for t in tasks}
        for piece in pieces:
            if "summary" in tasks and len(pieces) > 1:
                got = await self._piece_summary(piece, analysis.usage["summary"])
                fallback["summary"] |= got is None
                partial.append(got or " ".join(extractive_summary(piece)["medium"].split()))
                await step()
            if "action_items" in tasks:
                got = await self._list(piece, "action_items", ACTION_ITEMS_SCHEMA, analysis)
                fallback["action_items"] |= got is None
                items += got if got is not None else extractive_action_items(piece)
                await step()
            if "risks" in tasks:
                got = await self._list(piece, "risks", RISKS_SCHEMA, analysis)
                fallback["risks"] |= got is None
                risks += got if got is not None else extractive_risks(piece)
                await step()
        if "summary" in tasks:
            summary, used_fallback = await self._reduce(text, partial, analysis, len(pieces))
            analysis.results["summary"] = {**summary}
            fallback["summary"] |= used_fallback
            await step()
        if "action_items" in tasks:
            analysis.results["action_items"] = {
                "action_items": _dedupe([_normalize_item(i) for i in items], "title")
            }
        if "risks" in tasks:
            analysis.results["risks"] = {"risks": _dedupe(risks, "description")}
        return _finish(analysis, fallback, len(pieces))

    async def _piece_summary(self, piece: str, usage: StepUsage) -> str | None:
        if self.llm is None:
            return None
        got = await _ask(self.llm, "piece", piece, PIECE_SUMMARY_SCHEMA, usage, 200)
        return got["summary"] if got else None

    async def _list(
        self, piece: str, task: str, schema: dict[str, Any], analysis: Analysis
    ) -> list[dict[str, Any]] | None:
        if self.llm is None:
            return None
        got = await _ask(self.llm, task, piece, schema, analysis.usage[task], self.max_tokens)
        return got[task] if got else None

    async def _reduce(
        self, text: str, partial: list[str], analysis: Analysis, n_pieces: int
    ) -> tuple[dict[str, str], bool]:
        """Final summaries from the partial ones (one model call); extractive when that fails."""
        if self.llm is not None:
            notes = "\n".join(f"- {p}" for p in partial) if n_pieces > 1 else text
            got = await _ask(
                self.llm, "summary", notes, SUMMARY_SCHEMA, analysis.usage["summary"], 480
            )
            if got is not None:
                return got, False
        return extractive_summary(text if n_pieces == 1 else " ".join(partial)), True


def _finish(analysis: Analysis, fallback: dict[str, bool], n_pieces: int) -> Analysis:
    for task, result in analysis.results.items():
        jsonschema.validate(result, RESULT_SCHEMAS[task])  # a bug here, never the model's fault
        result_meta = {"fallback": bool(fallback.get(task)), "pieces": n_pieces}
        analysis.results[task] = {**result, "meta": result_meta}
    return analysis


def strip_meta(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k != "meta"}
