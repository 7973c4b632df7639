"""Shared data of the task tests: a small intent fixture set and a stand-in LLM."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from engine.tasks.classify import Example
from engine.tasks.llm import Completion, TokenLogprob

INTENTS: dict[str, list[str]] = {
    "billing": [
        "I was charged twice on my credit card this month",
        "Why is my invoice higher than usual?",
        "Please update the card used for my subscription payments",
        "I need a copy of last month's receipt",
        "The payment failed but money left my account",
        "How do I change my billing address on invoices?",
        "You billed me after I cancelled the plan",
        "Can I pay the invoice by bank transfer?",
    ],
    "shipping": [
        "My parcel has not arrived yet, where is it?",
        "How long does delivery to Germany take?",
        "The courier left the package at the wrong address",
        "Can I get express shipping for my order?",
        "Tracking says delivered but I have no box",
        "Do you ship internationally to Japan?",
        "My delivery is a week late",
        "Can I change the delivery date of my order?",
    ],
    "account": [
        "I forgot my password and cannot log in",
        "How do I change the email on my account?",
        "Please delete my account and all my data",
        "Two-factor authentication codes are not arriving",
        "My account got locked after too many attempts",
        "How can I add a second user to my profile?",
        "I want to change my username",
        "The login page keeps logging me out",
    ],
}

IN_SCOPE_PROBES = {
    "I was billed twice for one order, please refund the extra charge": "billing",
    "where is my package? it should have arrived on monday": "shipping",
    "I can't sign in, the password reset link doesn't work": "account",
}
OUT_OF_SCOPE_PROBES = [
    "What is the capital of Australia?",
    "Write me a poem about autumn leaves falling in the park",
    "The recipe needs two eggs and a cup of flour",
]


def examples() -> list[Example]:
    return [Example(text, label) for label, texts in INTENTS.items() for text in texts]


class ScriptedLLM:
    """A stand-in TaskLLM: completions return a fixed JSON object with a logprob per character
    chunk; ``score`` prefers continuations containing ``preferred``."""

    def __init__(self, obj: dict[str, Any] | None = None, preferred: str = "") -> None:
        self.obj = obj or {}
        self.preferred = preferred
        self.calls = 0

    async def complete(
        self, prompt: str, *, schema: dict[str, Any] | None = None, max_tokens: int = 256
    ) -> Completion:
        self.calls += 1
        props = (schema or {}).get("properties")
        obj = {k: v for k, v in self.obj.items() if props is None or k in props}
        text = json.dumps(obj)
        tokens = [TokenLogprob(text[i : i + 3].encode(), -0.05) for i in range(0, len(text), 3)]
        return Completion(
            text,
            tokens,
            prompt_tokens=len(prompt) // 4,
            completion_tokens=len(tokens),
            seconds=0.01,
            finish_reason="stop",
        )

    async def score(self, prompt: str, continuations: Sequence[str]) -> tuple[list[float], int]:
        self.calls += 1
        return [-1.0 if self.preferred in c else -4.0 for c in continuations], len(prompt) // 4
