"""Structured-output benchmark: coverage, grammar correctness, compliance, mask cost, throughput.

``python -m benchmarks.structured --bench DIR --suite DIR [--parts ...]`` where ``--bench`` is
JSONSchemaBench's dev sample (``<split>/<id>.json`` + ``.tests.json``, ``manifest.jsonl``) and
``--suite`` the JSON Schema Test Suite (``tests/draft2020-12/*.json``). Each part prints one JSON
result line (``benchmarks.report`` format) and appends it to ``--results``:

- ``coverage``: share of schemas Hearth accepts (check + compile), rejections by code; grammar
  correctness as MaskBench measures it (every valid instance accepted and every invalid one
  rejected by the compiled constraint alone) and the same with the post-generation validation
  Hearth adds; time to first mask (check + compile + first mask) and per-token mask time p50/p99.
- ``keywords``: per keyword family of the test suite, share of groups accepted and of tests decided
  right (constraint plus validation).
- ``compliance``: the real model on a sample of accepted schemas: share that ends ``stop`` with
  output valid under python-jsonschema (Draft 2020-12, formats checked), and how many end otherwise.
- ``throughput``: Hearth's engine in-process, constrained vs unconstrained, at 1 and 8 concurrent
  requests, interleaved over ``--rounds``; each unconstrained request is made exactly as long as
  its constrained twin (``ignore_eos``), so the ratio is the constraint's cost alone.

Over HTTP, Hearth and llama.cpp's own ``llama-server``, each with and without the same schema,
interleaved, are measured by the serving harness::

    python -m benchmarks serve --launch hearth --compare-launch llama-server \\
        --schema benchmarks/schemas/grocery.json --schema-ab --concurrency 1,8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np

from benchmarks.report import append_result, distribution, result_row
from engine.errors import HearthError
from engine.grammar import GrammarCompiler, build_spec
from engine.grammar.compiler import CompiledGrammar
from engine.grammar.report import validation_errors

log = logging.getLogger("benchmarks.structured")

MODEL = "gemma-3-270m-q4km"
GGUF = "gemma-3-270m-q4km/gemma-3-270m-Q4_K_M.gguf"
EOS = frozenset({1, 106, 212})
# A schema with room for long output, for the throughput part (benchmarks/schemas/grocery.json).
THROUGHPUT_SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "qty": {"type": "integer"},
                    "note": {"type": "string"},
                },
                "required": ["name", "qty", "note"],
                "additionalProperties": False,
            },
            "minItems": 4,  # long enough answers that decoding, not the prompt, dominates
        },
    },
    "required": ["title", "items"],
    "additionalProperties": False,
}


def _spec(schema: Any):
    return build_spec(
        response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}
    )


def _compact(instance: Any) -> str:
    return json.dumps(instance, ensure_ascii=False, separators=(",", ":"))


class Judge:
    """Compiles schemas and decides instances with the real vocabulary."""

    def __init__(self, compiler: GrammarCompiler) -> None:
        self.c = compiler
        self.ttfm_s: list[float] = []
        self.mask_s: list[float] = []

    def compile(self, schema: Any) -> tuple[CompiledGrammar | None, str | None]:
        t0 = time.perf_counter()
        try:
            compiled = self.c.compile_sync(_spec(schema))
        except HearthError as exc:
            return None, exc.code or type(exc).__name__
        except (ValueError, RecursionError) as exc:
            return None, f"error:{type(exc).__name__}"
        self.ttfm_s.append(time.perf_counter() - t0)
        return compiled, None

    def grammar_accepts(self, compiled: CompiledGrammar, instance: Any, timed: bool) -> bool:
        con = self.c.constraint(compiled, None)
        for tok in self.c.tokenizer.tokenize_str(_compact(instance)):
            if timed:
                t0 = time.perf_counter()
                con.prepare()
                self.mask_s.append(time.perf_counter() - t0)
            if not con.matcher.consume_token(tok):
                return False
            con._mask_valid = False  # the next prepare computes a fresh mask
        return con.matcher.is_accepting()

    def decide(self, compiled: CompiledGrammar, instance: Any, timed: bool) -> tuple[bool, bool]:
        """(accepted by the grammar alone, accepted by grammar and validation)."""
        g = self.grammar_accepts(compiled, instance, timed)
        return g, g and not validation_errors(compiled.spec.schema, instance)


def part_coverage(judge: Judge, bench: Path, limit: int | None) -> dict[str, Any]:
    rows = [json.loads(line) for line in (bench / "manifest.jsonl").read_text().splitlines()]
    rows = rows[:limit] if limit else rows
    accepted, correct_g, correct_v = 0, 0, 0
    rejected: Counter[str] = Counter()
    by_split: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for row in rows:
        schema = json.loads((bench / row["schema"]).read_text())
        tests = json.loads((bench / row["tests"]).read_text())["tests"]
        compiled, why = judge.compile(schema)
        by_split[row["split"]][0] += 1
        if compiled is None:
            rejected[why or "?"] += 1
            continue
        accepted += 1
        by_split[row["split"]][1] += 1
        ok_g = ok_v = True
        for t in tests:
            g, v = judge.decide(compiled, t["data"], timed=t["valid"])
            ok_g &= g == t["valid"]
            ok_v &= v == t["valid"]
        correct_g += ok_g
        correct_v += ok_v
        by_split[row["split"]][2] += ok_v
    n = len(rows)
    ttfm = distribution(judge.ttfm_s, scale=1000.0)
    mask = distribution(judge.mask_s, scale=1e6)
    return {
        "schemas": n,
        "declared_coverage": round(accepted / n, 4),
        "grammar_correct": round(correct_g / n, 4),
        "grammar_correct_of_accepted": round(correct_g / max(accepted, 1), 4),
        "correct_with_validation": round(correct_v / n, 4),
        "rejected_by_code": dict(rejected.most_common()),
        "ttfm_p50_ms": ttfm["median"],
        "ttfm_p99_ms": ttfm["p99"],
        "mask_p50_us": mask["median"],
        "mask_p99_us": mask["p99"],
        "by_split": {
            k: {"n": v[0], "accepted": v[1], "correct": v[2]} for k, v in by_split.items()
        },
    }


def part_keywords(judge: Judge, suite: Path) -> dict[str, Any]:
    families: dict[str, dict[str, int]] = {}
    for path in sorted((suite / "tests" / "draft2020-12").glob("*.json")):
        fam = {"groups": 0, "accepted": 0, "tests": 0, "correct": 0}
        for group in json.loads(path.read_text()):
            fam["groups"] += 1
            fam["tests"] += len(group["tests"])
            compiled, _ = judge.compile(group["schema"])
            if compiled is None:
                continue
            fam["accepted"] += 1
            for t in group["tests"]:
                try:
                    _, v = judge.decide(compiled, t["data"], timed=False)
                except (ValueError, RecursionError):
                    continue
                fam["correct"] += v == t["valid"]
        families[path.stem] = fam
    groups = sum(f["groups"] for f in families.values())
    tests = sum(f["tests"] for f in families.values())
    return {
        "families": len(families),
        "groups_accepted": round(sum(f["accepted"] for f in families.values()) / groups, 4),
        "tests_correct": round(sum(f["correct"] for f in families.values()) / tests, 4),
        "per_family": {
            k: {
                "accepted": round(f["accepted"] / max(f["groups"], 1), 3),
                "correct": round(f["correct"] / max(f["tests"], 1), 3),
            }
            for k, f in families.items()
        },
    }


async def _generate(engine: Any, spec: Any, prompt: str, max_tokens: int, **kw: Any):
    from engine.types import ChoiceDelta, GenerateRequest, GenerationDone, SamplingParams
    from models.chat_templates import ChatMessage

    params = SamplingParams(
        max_tokens=max_tokens,
        temperature=kw.get("temperature", 0.7),
        seed=kw.get("seed"),
        ignore_eos=kw.get("ignore_eos", False),
    )
    req = GenerateRequest(
        f"sb-{uuid.uuid4().hex[:10]}",
        MODEL,
        params,
        messages=[ChatMessage("user", prompt)],
        response_format=spec,
    )
    text, finish, outcome, tokens = "", None, None, 0
    async for ev in engine.generate(req):
        if isinstance(ev, ChoiceDelta):
            text += ev.text
            finish = ev.finish_reason or finish
            outcome = ev.structured or outcome
        elif isinstance(ev, GenerationDone):
            tokens = ev.usage.completion_tokens
    return text, str(finish), outcome, tokens


async def part_compliance(
    engine: Any, judge: Judge, bench: Path, n: int, max_tokens: int, only: set[str] | None = None
):
    rows = [json.loads(line) for line in (bench / "manifest.jsonl").read_text().splitlines()]
    random.Random(0).shuffle(rows)
    if only:  # re-run named schemas (e.g. the last run's failures)
        rows = [r for r in rows if r["schema"] in only]
    counts: Counter[str] = Counter()
    others: dict[str, str] = {}  # schema → outcome, for every schema not ending stop + valid
    tried = 0
    for row in rows:
        if tried >= n:
            break
        schema = json.loads((bench / row["schema"]).read_text())
        if judge.compile(schema)[0] is None:
            continue
        tried += 1
        prompt = "Write one JSON instance of this JSON Schema:\n" + json.dumps(schema)[:4000]
        text, finish, _, _ = await _generate(engine, _spec(schema), prompt, max_tokens, seed=1)
        outcome = _judge_output(schema, text, finish)
        counts[outcome] += 1
        if outcome != "stop_valid":
            others[row["schema"]] = outcome
    return {
        "schemas": tried,
        "max_tokens": max_tokens,
        "compliance": round(counts["stop_valid"] / max(tried, 1), 4),
        "stop_invalid": counts["stop_invalid"],
        "outcomes": dict(counts),
        "not_stop_valid": others,
    }


def _judge_output(schema: Any, text: str, finish: str) -> str:
    """``stop_valid``, ``stop_invalid`` or the finish reason (python-jsonschema, Draft 2020-12,
    formats checked)."""
    if finish != "stop":
        return finish
    try:
        v = jsonschema.Draft202012Validator(
            schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
        )
        return "stop_valid" if v.is_valid(json.loads(text)) else "stop_invalid"
    except (ValueError, jsonschema.SchemaError):
        return "stop_invalid"


async def part_throughput(engine: Any, rounds: int, max_tokens: int) -> dict[str, Any]:
    spec = _spec(THROUGHPUT_SCHEMA)
    prompt = "List the items of a grocery order as JSON with a title."
    rates: dict[str, list[float]] = defaultdict(list)
    await _generate(engine, spec, prompt, 8)  # warm-up: compile and tokenizer
    for _ in range(rounds):
        for conc in (1, 8):
            # Constrained first; then the unconstrained twin makes each request exactly as long
            # as its constrained one (ignore_eos, max_tokens = that length), so both runs decode
            # the same tokens in the same ragged batch and only the constraint's cost differs.
            lengths: list[int] = []
            for label in ("constrained", "unconstrained"):
                twin = label == "unconstrained"
                t0 = time.perf_counter()
                outs = await asyncio.gather(
                    *(
                        _generate(
                            engine,
                            None if twin else spec,
                            prompt,
                            max(lengths[i], 1) if twin else max_tokens,
                            seed=i,
                            ignore_eos=twin,
                        )
                        for i in range(conc)
                    )
                )
                lengths = [o[3] for o in outs]
                rates[f"{label}_c{conc}"].append(sum(lengths) / (time.perf_counter() - t0))
                rates[f"{label}_tokens_c{conc}"].append(sum(lengths))
    fig = {k: round(float(np.median(v)), 2) for k, v in rates.items()}
    for conc in (1, 8):
        fig[f"ratio_c{conc}"] = round(
            fig[f"constrained_c{conc}"] / fig[f"unconstrained_c{conc}"], 3
        )
    fig["unit"] = "completion tokens/s (aggregate), median of rounds"
    return fig


def _emit(part: str, settings: dict[str, Any], figures: dict[str, Any], results: Path | None):
    row = result_row(
        f"structured.{part}",
        model=MODEL,
        backend="llamacpp+llguidance",
        settings=settings,
        figures=figures,
    )
    append_result(row, results)


async def _model_parts(args: argparse.Namespace, judge: Judge) -> None:
    from benchmarks.offline import started_engine
    from configs import load_settings

    settings = load_settings(args.profile, data_dir=args.data_dir)
    async with started_engine(settings) as engine:
        if "throughput" in args.parts:
            fig = await part_throughput(engine, args.rounds, args.output_tokens)
            _emit(
                "throughput",
                {"rounds": args.rounds, "output_tokens": args.output_tokens},
                fig,
                args.results,
            )
        if "compliance" in args.parts:
            fig = await part_compliance(
                engine, judge, args.bench, args.compliance_n, args.max_tokens, args.schemas
            )
            knobs = {"n": args.compliance_n, "max_tokens": args.max_tokens}
            if args.schemas:
                knobs["schemas"] = sorted(args.schemas)
            _emit("compliance", knobs, fig, args.results)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bench", type=Path, required=True, help="jsonschemabench-dev folder")
    p.add_argument("--suite", type=Path, required=True, help="json-schema-test-suite folder")
    p.add_argument("--models-dir", type=Path, default=Path("data/models"))
    p.add_argument("--data-dir", type=Path, default=None, help="engine data dir (model parts)")
    p.add_argument("--profile", default="test")
    p.add_argument("--parts", default="coverage,keywords,compliance,throughput")
    p.add_argument("--limit", type=int, default=None, help="first N bench schemas (coverage)")
    p.add_argument("--compliance-n", type=int, default=30)
    p.add_argument("--max-tokens", type=int, default=384, help="compliance output budget")
    p.add_argument(
        "--schemas", default=None, help="compliance on these schemas only (comma-separated paths)"
    )
    p.add_argument("--output-tokens", type=int, default=96, help="throughput output length")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--results", type=Path, default=Path("benchmarks/results/structured.jsonl"))
    args = p.parse_args(argv)
    args.parts = set(args.parts.split(","))
    args.schemas = set(args.schemas.split(",")) if args.schemas else None
    logging.basicConfig(level=logging.WARNING)
    compiler = GrammarCompiler.from_gguf(args.models_dir / GGUF, EOS)
    judge = Judge(compiler)
    if "coverage" in args.parts:
        fig = part_coverage(judge, args.bench, args.limit)
        _emit("coverage", {"limit": args.limit}, fig, args.results)
    if "keywords" in args.parts:
        _emit("keywords", {}, part_keywords(Judge(compiler), args.suite), args.results)
    if args.parts & {"compliance", "throughput"}:
        asyncio.run(_model_parts(args, judge))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
