"""The harness against a live Hearth (and llama-server when ``make bench-deps`` installed it):
tiny runs whose numbers must be present and agree with each other and with the server's own
metrics; errors the server returns are counted. No timing thresholds."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from benchmarks.driver import LoadShape, Target, measure
from benchmarks.launch import HearthServer, LaunchError, LlamaServer, llama_server_binary
from benchmarks.workload import Workload, gguf_token_counter, synthetic_prompts
from configs import load_settings
from models import get_card, model_path

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
MODEL = "gemma-3-270m-q4km"


def _gguf() -> Path:
    settings = load_settings("test")
    path = ROOT / model_path(get_card(MODEL), settings.models_dir)
    if not path.is_file():
        pytest.skip(f"{path} not installed (python -m server install-models --profile test)")
    return path


@pytest.fixture(scope="module")
def hearth(tmp_path_factory) -> Iterator[Target]:
    _gguf()
    log = tmp_path_factory.mktemp("hearth") / "server.log"
    with HearthServer(profile="test", log_file=log) as srv:
        yield Target("hearth", srv.base_url, MODEL, backend="hearth-llamacpp")


@pytest.fixture(scope="module")
def workload() -> Workload:
    prompts = synthetic_prompts(4, 24, seed=1, count=gguf_token_counter(_gguf()))
    return Workload(prompts=prompts, output_tokens=12)


def _metric(figures: dict, name: str) -> float:
    return figures["server_metrics"].get(name, 0.0)


def test_tiny_run_numbers_are_present_and_consistent(hearth, workload):
    figures, run = asyncio.run(measure(hearth, workload, LoadShape(4, concurrency=2)))
    assert figures["completed"] == 4 and figures["failed"] == 0
    for r in run.records:
        assert r.ok and r.finish_reason == "length"
        assert r.output_tokens == 12  # ignore_eos + min_tokens: exactly max_tokens
        assert r.prompt_tokens == workload.prompt(r.index).input_tokens  # same tokenizer
        assert 0 < r.ttft_s <= r.e2e_s and r.tpot_s > 0 and r.text
    assert figures["output_tokens"] == 48
    assert figures["output_throughput"] == pytest.approx(48 / run.duration_s, rel=1e-3)
    d = figures["ttft_ms"]
    assert d["min"] <= d["median"] <= d["p99"] <= figures["e2e_ms"]["max"]
    # The server counted what the client saw.
    assert _metric(figures, "hearth_generation_tokens_total{endpoint=completions}") == 48
    assert _metric(figures, "hearth_requests_total{endpoint=completions,status=200}") == 4
    assert _metric(figures, "hearth_time_to_first_token_seconds_count{endpoint=completions}") == 4


def test_generation_answers_200_as_openai_does(hearth, workload):
    w = Workload(prompts=workload.prompts[:1], output_tokens=2)
    for api in ("completions", "chat"):
        _, run = asyncio.run(measure(hearth, Workload(w.prompts, api=api, output_tokens=2),
                                     LoadShape(1)))  # fmt: skip
        assert run.records[0].status == 200, api


def test_chat_run(hearth, workload):
    chat = Workload(prompts=workload.prompts, api="chat", output_tokens=6)
    figures, run = asyncio.run(measure(hearth, chat, LoadShape(2, concurrency=2)))
    assert figures["completed"] == 2 and figures["output_tokens"] == 12
    assert _metric(figures, "hearth_generation_tokens_total{endpoint=chat}") == 12


def test_errors_the_server_returns_are_counted(hearth, workload):
    bad = Workload(prompts=workload.prompts, output_tokens=4, extra_body={"max_tokens": -3})
    figures, run = asyncio.run(measure(hearth, bad, LoadShape(3, concurrency=3)))
    assert figures["failed"] == 3 and figures["completed"] == 0
    assert figures["errors_by_status"] == {"400": 3}
    assert all("max_tokens" in (r.error or "") for r in run.records)
    assert figures["output_throughput"] == 0 and figures["goodput"] == 0


def test_cli_writes_result_lines_duckdb_rows_and_plots(hearth, tmp_path):
    results, db = tmp_path / "serve.jsonl", tmp_path / "r.duckdb"
    cmd = [
        sys.executable, "-m", "benchmarks", "serve", "--url", hearth.base_url,
        "--name", "hearth", "--profile", "test", "--model", MODEL, "--concurrency", "1,2", "--requests", "2", "--rounds", "1",
        "--input-tokens", "20", "--output-tokens", "6", "--num-prompts", "2",
        "--slo-ttft-ms", "600000", "--results", str(results), "--db", str(db),
        "--plots", str(tmp_path), "--no-progress", "--no-bandwidth",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert [ln["settings"]["load"] for ln in lines] == ["c1", "c2"]
    assert all(ln["figures"]["output_tokens"] == 12 for ln in lines)
    assert all(ln["figures"]["goodput"] == ln["figures"]["request_throughput"] for ln in lines)
    assert len(results.read_text().splitlines()) == 2
    with duckdb.connect(str(db)) as con:
        assert con.execute("SELECT count(*) FROM results").fetchone() == (2,)
    assert len(list(tmp_path.glob("serve-*-latency.png"))) == 1
    assert len(list(tmp_path.glob("serve-*-dist.png"))) == 1
    table = subprocess.run(
        [sys.executable, "-m", "benchmarks", "table", "--results", str(results)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert table.stdout.count("| hearth |") == 2


@pytest.mark.slow
def test_offline_engine_run(workload, tmp_path, monkeypatch):
    from benchmarks.offline import run_offline, started_engine
    from benchmarks.report import summarize

    monkeypatch.setenv("HEARTH_MODELS_DIR", str(_gguf().parents[1]))

    async def go():
        async with started_engine(load_settings("test", data_dir=tmp_path)) as engine:
            return await run_offline(engine, workload, LoadShape(2, concurrency=2), model=MODEL)

    run = asyncio.run(go())
    f = summarize(run.records, run.duration_s)
    assert f["completed"] == 2 and f["output_tokens"] == 24
    assert all(r.prompt_tokens == workload.prompt(r.index).input_tokens for r in run.records)


@pytest.mark.slow
def test_llama_server_run(workload, tmp_path):
    try:
        llama_server_binary()
    except LaunchError as exc:
        pytest.skip(str(exc))
    with LlamaServer(_gguf(), threads=2, slots=2, log_file=tmp_path / "ls.log") as srv:
        target = Target("llama-server", srv.base_url, MODEL, backend="llama-server")
        figures, run = asyncio.run(measure(target, workload, LoadShape(2, concurrency=2)))
    assert figures["completed"] == 2, [r.error for r in run.records]
    assert all(r.output_tokens == 12 for r in run.records)
    assert all(r.prompt_tokens == workload.prompt(r.index).input_tokens for r in run.records)
