"""``python -m benchmarks eval``: how well each model does Hearth's work, on small labelled sets.

Tasks (one JSON Lines file each, ``<data>/<task>.jsonl``; ``benchmarks/data/eval`` by default):

- ``extract``: field extraction, exact match of every field (``{"text", "schema", "expected"}``).
  Two variants: ``hearth`` (Hearth's extraction pipeline, ``engine.tasks.extract``: its prompt,
  decoding constrained by the JSON Schema, regex fallbacks) and ``chat`` (the same prompt as a
  user turn, unconstrained: how well the model follows it alone).
- ``rag``: an answer from numbered context blocks that cites the right block
  (``{"question", "blocks", "answer_block", "answer_contains"}``), with Hearth's RAG instruction
  and block format. Correct: the blocks Hearth would cite (the answer's [n] markers, else the block
  it quotes at least four words of, as ``engine/rag.py`` does) are exactly the right one; also the
  share with the right marker written by the model, and of answers that contain the fact.
- ``classify``: zero-shot choice of one label (``{"text", "labels", "label"}``).
- ``follow``: short instructions whose result a rule checks (``{"prompt", "check", "arg"}``).
- ``speed``: single-stream decode tokens/s (no labelled set).

Every model runs in-process through the engine (``engine.Engine``: its chat template, stop tokens
and sampling, greedy), one request at a time. Per model × task × variant one result line
(``benchmarks.report``) with the accuracy, the number of examples and the generated tokens/s; a
table is printed at the end::

    python -m benchmarks eval --models smollm2-135m-instruct,gemma-3-270m-q4km \\
        --tasks extract,rag,classify,follow
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.report import append_result, result_row

log = logging.getLogger(__name__)


RESULTS = Path(__file__).resolve().parent / "results" / "eval.jsonl"
TASKS = ("extract", "rag", "classify", "follow")


@dataclass(frozen=True)
class Prompt:
    """One request: chat ``messages`` or a completion ``text``; ``score`` grades the output.
    ``pipeline``: instead of one request, a Hearth task run on (engine, model) that returns
    (output text, completion tokens, seconds)."""

    messages: list[dict[str, str]] | None
    text: str | None
    max_tokens: int
    score: Callable[[str], dict[str, float]]
    pipeline: Callable[[Any, str], Awaitable[tuple[str, int, float]]] | None = None


# ---- tasks: examples -> prompts -------------------------------------------------------------


def _first_json(text: str) -> dict[str, Any] | None:
    start = text.find("{")
    while start >= 0:
        try:
            obj, _ = json.JSONDecoder().raw_decode(text[start:])
            return obj if isinstance(obj, dict) else None
        except ValueError:
            start = text.find("{", start + 1)
    return None


def _norm(value: Any) -> str:
    return re.sub(r"\s+", " ", str(value)).strip().lower()


def extract_prompts(example: dict[str, Any]) -> dict[str, Prompt]:
    from engine.tasks.extract import build_prompt

    text = build_prompt(example["text"], example["schema"], None)
    expected: dict[str, Any] = example["expected"]

    def score(output: str) -> dict[str, float]:
        got = _first_json(output) or {}
        fields = [_norm(got.get(k)) == _norm(v) for k, v in expected.items()]
        return {"correct": float(all(fields)), "fields": sum(fields) / len(fields)}

    async def hearth(engine: Any, model: str) -> tuple[str, int, float]:
        from engine.tasks.extract import extract
        from engine.tasks.llm import EngineLLM

        result = await extract(EngineLLM(engine, model), example["text"], example["schema"])
        usage = result.usage
        return json.dumps(result.object), int(usage.get("completion_tokens", 0)), usage["seconds"]

    return {
        "hearth": Prompt(None, None, 0, score, pipeline=hearth),
        "chat": Prompt([{"role": "user", "content": text}], None, 96, score),
    }


def rag_prompts(example: dict[str, Any]) -> dict[str, Prompt]:
    from engine.rag import INSTRUCTION

    context = "\n".join(
        f"<<<CONTEXT [{i}] source: handbook>>>\n{text}\n<<<END [{i}]>>>"
        for i, text in enumerate(example["blocks"], start=1)
    )
    content = f"{context}\n\n{INSTRUCTION}\n\nQuestion: {example['question']}"

    def score(output: str) -> dict[str, float]:
        right = example["answer_block"]
        markers = [int(n) for n in re.findall(r"\[(\d{1,2})\]", output)]
        cited = markers or _quoted_blocks(output, example["blocks"])
        contains = any(a.lower() in output.lower() for a in example["answer_contains"])
        return {
            "correct": float(bool(cited) and all(n == right for n in cited)),
            "marker": float(bool(markers) and all(n == right for n in markers)),
            "answer": float(contains),
        }

    return {"chat": Prompt([{"role": "user", "content": content}], None, 64, score)}


def _quoted_blocks(answer: str, blocks: Sequence[str]) -> list[int]:
    """What Hearth cites when an answer has no [n] marker (engine/rag.py): the block sharing the
    longest run of at least ``MIN_SPAN_WORDS`` words with the answer."""
    from engine.rag import MIN_SPAN_WORDS

    words = re.findall(r"\w+", answer.lower())
    best, chosen = 0, []
    for number, block in enumerate(blocks, start=1):
        b = re.findall(r"\w+", block.lower())
        run = max(
            (k for i in range(len(b)) for j in range(len(words)) for k in [_run(b, i, words, j)]),
            default=0,
        )
        if run >= MIN_SPAN_WORDS and run > best:
            best, chosen = run, [number]
    return chosen


def _run(a: Sequence[str], i: int, b: Sequence[str], j: int) -> int:
    n = 0
    while i + n < len(a) and j + n < len(b) and a[i + n] == b[j + n]:
        n += 1
    return n


def classify_prompts(example: dict[str, Any]) -> dict[str, Prompt]:
    labels = example["labels"]
    content = (
        f"Classify the support message into exactly one of these categories: "
        f"{', '.join(labels)}.\nAnswer with the category name only.\n\n"
        f"Message: {example['text']}\nCategory:"
    )

    def score(output: str) -> dict[str, float]:
        words = re.findall(r"[a-z]+", output.lower())
        first = next((w for w in words if w in labels), None)
        return {"correct": float(first == example["label"])}

    return {"chat": Prompt([{"role": "user", "content": content}], None, 8, score)}


def _words(text: str) -> list[str]:
    return re.findall(r"[\w'-]+", text)


def _follow_check(check: str, arg: Any, output: str) -> bool:
    out = output.strip()
    low = out.lower()
    if check == "one_word":
        return len(_words(out)) == 1 and _words(out)[0].lower() == arg
    if check == "yes_no":
        return low.rstrip(".!") in ("yes", "no")
    if check == "bullets":
        lines = [line for line in out.splitlines() if line.strip()]
        return len(lines) == arg and all(line.lstrip().startswith("- ") for line in lines)
    if check == "exact":
        return out.rstrip(".") == arg
    if check == "json_key":
        obj = _first_json(out)
        return obj is not None and _norm(obj.get(arg[0])) == arg[1]
    if check == "number":
        return re.fullmatch(r"\s*" + str(arg) + r"\.?\s*", out) is not None
    if check == "lowercase":
        return bool(out) and out == low and len(_words(out)) >= 3
    if check == "contains":
        return arg in out
    if check == "contains_any":
        return any(a in low for a in arg)
    if check == "max_words_contains":
        return len(_words(out)) <= arg[0] and arg[1] in low
    raise ValueError(f"unknown follow check {check!r}")


def follow_prompts(example: dict[str, Any]) -> dict[str, Prompt]:
    def score(output: str) -> dict[str, float]:
        return {"correct": float(_follow_check(example["check"], example.get("arg"), output))}

    return {"chat": Prompt([{"role": "user", "content": example["prompt"]}], None, 48, score)}


BUILDERS: dict[str, Callable[[dict[str, Any]], dict[str, Prompt]]] = {
    "extract": extract_prompts,
    "rag": rag_prompts,
    "classify": classify_prompts,
    "follow": follow_prompts,
}


def load_set(data_dir: Path, task: str) -> list[dict[str, Any]]:
    path = data_dir / f"{task}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


# ---- running ----------------------------------------------------------------------------------


async def _generate(engine: Any, model: str, prompt: Prompt) -> tuple[str, int, float]:
    """(text, completion tokens, seconds) of one greedy generation through the engine."""
    from engine.types import ChoiceDelta, GenerateRequest, GenerationDone, SamplingParams
    from models.chat_templates import ChatMessage

    if prompt.pipeline is not None:
        return await prompt.pipeline(engine, model)
    messages = (
        [ChatMessage(m["role"], m["content"]) for m in prompt.messages] if prompt.messages else None
    )
    req = GenerateRequest(
        request_id=f"eval-{uuid.uuid4().hex[:12]}",
        model=model,
        params=SamplingParams(max_tokens=prompt.max_tokens, temperature=0.0),
        prompt=prompt.text,
        messages=messages,
    )
    parts, tokens = [], 0
    start = time.perf_counter()
    async for event in engine.generate(req):
        if isinstance(event, ChoiceDelta):
            parts.append(event.text)
        elif isinstance(event, GenerationDone):
            tokens = event.usage.completion_tokens
    return "".join(parts), tokens, time.perf_counter() - start


async def evaluate_model(
    model: str, tasks: Sequence[str], data_dir: Path, limit: int | None
) -> list[dict[str, Any]]:
    """One row per task × variant for ``model``: mean of each score, tokens/s."""
    from benchmarks.offline import started_engine
    from configs import load_settings

    settings = load_settings("cpu", overrides={"llm": {"model": model, "max_model_len": 4096}})
    rows = []
    async with started_engine(settings) as engine:
        if "speed" in tasks:
            rows.append(await _speed_row(engine, model, settings))
        for task in (t for t in tasks if t != "speed"):
            examples = load_set(data_dir, task)[:limit]
            totals: dict[str, dict[str, float]] = {}
            speed: dict[str, list[float]] = {}
            for example in examples:
                for variant, prompt in BUILDERS[task](example).items():
                    text, tokens, seconds = await _generate(engine, model, prompt)
                    scores = prompt.score(text)
                    log.debug("%s %s/%s %s -> %r", model, task, variant, scores, text[:120])
                    acc = totals.setdefault(variant, {})
                    for key, value in scores.items():
                        acc[key] = acc.get(key, 0.0) + value
                    s = speed.setdefault(variant, [0.0, 0.0])
                    s[0], s[1] = s[0] + tokens, s[1] + seconds
            for variant, acc in totals.items():
                figures = {k: round(v / len(examples), 3) for k, v in acc.items()}
                figures["n"] = len(examples)
                figures["tokens_per_s"] = round(speed[variant][0] / max(speed[variant][1], 1e-9), 1)
                figures["seconds"] = round(speed[variant][1], 1)
                log.info("%s %s/%s: %s", model, task, variant, figures)
                rows.append(
                    result_row(
                        "eval",
                        model=model,
                        backend=settings.llm.backend,
                        settings={
                            "task": task,
                            "variant": variant,
                            "data": str(data_dir / f"{task}.jsonl"),
                            "n_threads": settings.llm.n_threads,
                            "temperature": 0.0,
                        },
                        figures=figures,
                    )
                )
    return rows


SPEED_TOKENS = 128
SPEED_RUNS = 3
SPEED_PROMPT = "Write a long story about a lighthouse keeper and her cat."


async def _speed_row(engine: Any, model: str, settings: Any) -> dict[str, Any]:
    """Single-stream decode speed: tokens after the first over the time after the first, for a
    short chat prompt and up to ``SPEED_TOKENS`` tokens (the model may stop earlier; EOS is not
    suppressed, which would take a slower sampling path); median of ``SPEED_RUNS`` runs after a
    warm-up."""
    from engine.types import ChoiceDelta, GenerateRequest, SamplingParams
    from models.chat_templates import ChatMessage

    async def once() -> tuple[float, int]:
        req = GenerateRequest(
            request_id=f"eval-speed-{uuid.uuid4().hex[:8]}",
            model=model,
            params=SamplingParams(max_tokens=SPEED_TOKENS, temperature=0.0),
            messages=[ChatMessage("user", SPEED_PROMPT)],
        )
        first = last = None
        n = 0
        async for event in engine.generate(req):
            if isinstance(event, ChoiceDelta) and event.token_ids:
                now = time.perf_counter()
                first = first if first is not None else now
                last, n = now, n + len(event.token_ids)
        if first is None or last is None or n < 2:
            return 0.0, n
        return (n - 1) / (last - first), n

    await once()
    runs = sorted([await once() for _ in range(SPEED_RUNS)])
    speed, tokens = runs[len(runs) // 2]
    return result_row(
        "eval",
        model=model,
        backend=settings.llm.backend,
        settings={
            "task": "speed",
            "variant": "decode",
            "max_tokens": SPEED_TOKENS,
            "runs": SPEED_RUNS,
            "n_threads": settings.llm.n_threads,
        },
        figures={
            "correct": None,
            "decode_tokens_per_s": round(speed, 1),
            "tokens": tokens,
            "n": SPEED_RUNS,
            "tokens_per_s": round(speed, 1),
        },
    )


def table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown: one line per model × task × variant."""
    lines = [
        "| model | task | variant | accuracy | other | n | tokens/s |",
        "| --- | --- | --- | ---: | --- | ---: | ---: |",
    ]
    for r in rows:
        f, s = r["figures"], r["settings"]
        skip = ("correct", "n", "tokens_per_s", "seconds", "decode_tokens_per_s")
        other = ", ".join(f"{k} {v}" for k, v in f.items() if k not in skip)
        lines.append(
            f"| {r['model']} | {s['task']} | {s['variant']} | {_accuracy(f['correct'])} | "
            f"{other} | {f['n']} | {f['tokens_per_s']} |"
        )
    return "\n".join(lines)


def _accuracy(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def run(args: Any) -> int:
    models = [m for m in args.models.split(",") if m]
    tasks = [t for t in args.tasks.split(",") if t]
    unknown = sorted(set(tasks) - set(TASKS) - {"speed"})
    if unknown:
        raise SystemExit(f"unknown task(s) {unknown}; choose from {list(TASKS)}")
    rows = []
    for model in models:
        for row in asyncio.run(evaluate_model(model, tasks, Path(args.data), args.limit)):
            append_result(row, args.results)
            rows.append(row)
    print(table(rows))  # noqa: T201 - the command's output
    return 0
