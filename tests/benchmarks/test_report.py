"""The report module: summaries, goodput, the result line and its DuckDB row, the README table."""

from __future__ import annotations

import json

import duckdb
import pytest

from benchmarks.driver import metrics_delta
from benchmarks.report import (
    SLO,
    RequestRecord,
    append_result,
    distribution,
    markdown_table,
    read_results,
    result_row,
    summarize,
)


def _ok(i: int, ttft: float, e2e: float, tokens: int) -> RequestRecord:
    gaps = [(e2e - ttft) / (tokens - 1)] * (tokens - 1)
    return RequestRecord(
        index=i, start_s=0.0, status=200, ttft_s=ttft, e2e_s=e2e, itl_s=gaps,
        prompt_tokens=10, output_tokens=tokens, finish_reason="length",
    )  # fmt: skip


def test_summary_counts_and_throughput_are_consistent():
    records = [_ok(0, 0.1, 1.1, 11), _ok(1, 0.3, 2.3, 11)]
    records.append(RequestRecord(index=2, start_s=0.0, status=503, error="overloaded", e2e_s=0.01))
    records.append(RequestRecord(index=3, start_s=0.0, status=0, error="ConnectError"))
    f = summarize(records, duration_s=2.0)
    assert (f["requests"], f["completed"], f["failed"]) == (4, 2, 2)
    assert f["errors_by_status"] == {"503": 1, "0": 1}
    assert f["output_tokens"] == 22 and f["input_tokens"] == 20
    assert f["output_throughput"] == pytest.approx(11.0)
    assert f["request_throughput"] == pytest.approx(1.0)
    assert f["ttft_ms"]["mean"] == pytest.approx(200.0)
    # TPOT = (e2e - ttft) / (tokens - 1): 100 ms and 200 ms
    assert f["tpot_ms"]["median"] == pytest.approx(150.0)
    assert f["finish_reasons"] == {"length": 2}


def test_goodput_counts_only_requests_meeting_every_slo():
    records = [_ok(0, 0.1, 1.1, 11), _ok(1, 0.3, 2.3, 11), _ok(2, 0.1, 4.1, 11)]
    f = summarize(records, duration_s=1.0, slo=SLO(ttft_s=0.2, tpot_s=0.15))
    assert f["goodput"] == pytest.approx(1.0)  # only request 0: request 2's TPOT is 400 ms
    assert f["good_fraction"] == pytest.approx(1 / 3, abs=1e-3)
    assert summarize(records, 1.0)["goodput"] == pytest.approx(3.0)  # no SLO: all good


def test_distribution_orders_percentiles():
    d = distribution([i / 1000 for i in range(1, 101)])
    assert d["min"] <= d["median"] <= d["p90"] <= d["p95"] <= d["p99"] <= d["max"]
    assert d["median"] == pytest.approx(50.5)
    assert distribution([])["mean"] is None


def test_result_goes_to_the_jsonl_file_and_the_duckdb_table(tmp_path, capsys):
    row = result_row(
        "serve", model="m", backend="b", settings={"concurrency": 8, "label": "x"},
        figures=summarize([_ok(0, 0.1, 1.1, 11)], 1.0),
    )  # fmt: skip
    results, db = tmp_path / "r.jsonl", tmp_path / "r.duckdb"
    append_result(row, results, db)
    append_result(row, results, db)
    assert json.loads(capsys.readouterr().out.splitlines()[0])["model"] == "m"
    rows = read_results(results)
    assert len(rows) == 2 and rows[0]["figures"]["output_tokens"] == 11
    assert rows[0]["git_sha"] and rows[0]["machine"]["cores"] >= 1
    with duckdb.connect(str(db)) as con:
        n, tokens = con.execute(
            "SELECT count(*), max(CAST(figures->>'output_tokens' AS INT)) FROM results"
        ).fetchone()
    assert (n, tokens) == (2, 11)
    table = markdown_table(rows)
    assert table.count("\n| x | b | 8 |") == 2


def test_metrics_delta_subtracts_counters_and_keeps_gauges():
    before = {"hearth_generation_tokens_total{endpoint=completions}": 10.0, "hearth_queue_depth": 3}
    after = {"hearth_generation_tokens_total{endpoint=completions}": 74.0, "hearth_queue_depth": 0}
    d = metrics_delta(before, after)
    assert d == {"hearth_generation_tokens_total{endpoint=completions}": 64.0,
                 "hearth_queue_depth": 0}  # fmt: skip
