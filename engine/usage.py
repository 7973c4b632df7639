"""``UsageService``: one row per request of every route (chat, completions, embeddings, RAG,
tasks, ingestion) in DuckDB's ``usage`` table, with tenant, kind, model, tokens and seconds; and
the report behind ``GET /v1/usage``: per UTC day and model, with an estimated cost.

Prices come from ``[usage] prices``: ``"model=prompt/completion; ..."`` in ``currency`` per
million tokens (``"gemma-3-270m-q4km=0.10/0.20; all-minilm-l6-v2=0.02"``; one figure prices both
kinds). A model without a price costs 0. Recording never blocks the event loop: the row is
written on a worker thread, and a failed write is logged, never the request's error.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.errors import InvalidRequestError

if TYPE_CHECKING:
    from engine.storage import Database

log = logging.getLogger(__name__)

MAX_REPORT_DAYS = 366


@dataclass(frozen=True)
class Price:
    """Per million tokens."""

    prompt: float
    completion: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.prompt + completion_tokens * self.completion) / 1e6


def parse_prices(text: str) -> dict[str, Price]:
    """``"model=prompt/completion; model=both"`` → prices; ValueError naming the bad entry."""
    prices: dict[str, Price] = {}
    for entry in filter(None, (e.strip() for e in text.split(";"))):
        model, sep, figures = entry.partition("=")
        parts = figures.split("/")
        try:
            if not sep or not model.strip() or len(parts) > 2:
                raise ValueError
            values = [float(p) for p in parts]
            if any(v < 0 for v in values):
                raise ValueError
        except ValueError:
            raise ValueError(
                f"usage.prices: {entry!r} is not model=prompt/completion (per million tokens)"
            ) from None
        prices[model.strip()] = Price(values[0], values[-1])
    return prices


class UsageService:
    def __init__(self, db: Database, prices: dict[str, Price], currency: str = "USD") -> None:
        self._db = db
        self.prices = prices
        self.currency = currency
        self._pending: set[asyncio.Future[None]] = set()

    def record(
        self,
        tenant: str,
        kind: str,
        model: str,
        *,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        seconds: float = 0.0,
        items: int = 0,
    ) -> None:
        """Write one usage row on a worker thread (returns at once)."""
        args = (tenant, kind)
        figures = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "items": items,
            "model": model,
            "seconds": round(seconds, 4),
        }
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a script): write now
            self._write(args, figures)
            return
        done = loop.run_in_executor(None, self._write, args, figures)
        self._pending.add(done)
        done.add_done_callback(self._pending.discard)

    def _write(self, args: tuple[str, str], figures: dict[str, Any]) -> None:
        try:
            self._db.usage.record(*args, **figures)
        except Exception:  # noqa: BLE001 - bookkeeping must not fail the request
            log.exception("usage row for %s not recorded", args)

    async def flush(self) -> None:
        """Wait for the rows being written (tests, shutdown)."""
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def report(self, tenant: str, days: int = 30) -> dict[str, Any]:
        """``{"currency", "days": [{"date", "model", "requests", "prompt_tokens",
        "completion_tokens", "seconds", "cost"}], "total_cost"}`` over the last ``days``."""
        if not 1 <= days <= MAX_REPORT_DAYS:
            raise InvalidRequestError(
                f"days must be between 1 and {MAX_REPORT_DAYS}, got {days}", param="days"
            )
        await self.flush()
        rows = await asyncio.to_thread(self._db.usage.daily, tenant, days)
        out = []
        for day, model, requests, prompt, completion, seconds in rows:
            price = self.prices.get(model)
            cost = price.cost(int(prompt), int(completion)) if price else 0.0
            out.append(
                {
                    "date": day.isoformat(),
                    "model": model,
                    "requests": int(requests),
                    "prompt_tokens": int(prompt),
                    "completion_tokens": int(completion),
                    "seconds": round(float(seconds or 0), 3),
                    "cost": round(cost, 6),
                }
            )
        total = round(sum(d["cost"] for d in out), 6)
        return {"currency": self.currency, "days": out, "total_cost": total}
