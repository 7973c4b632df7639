"""The HTTP driver against a small scripted OpenAI-style server (fast; the live runs are in
``test_live.py``): streamed timings, usage, error counting, schema validity, Poisson arrivals."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import uvicorn
from litestar import Litestar, Request, Response, get, post
from litestar.response import Stream

from benchmarks.driver import LoadShape, Target, measure, run_load
from benchmarks.launch import free_port
from benchmarks.report import SLO
from benchmarks.workload import Prompt, Workload, request_body, synthetic_prompts

SEEN: list[dict] = []


def _sse(obj: dict) -> bytes:
    return f"data: {json.dumps(obj)}\n\n".encode()


async def _chunks(body: dict, chat: bool) -> AsyncIterator[bytes]:
    n = body["max_tokens"]
    for i in range(n):
        await asyncio.sleep(0.002)
        text = '{"a": 1}'[i] if body.get("response_format") and i < 8 else "x"
        choice = {"index": 0, "finish_reason": "length" if i == n - 1 else None}
        choice.update({"delta": {"content": text}} if chat else {"text": text})
        yield _sse({"choices": [choice]})
    yield _sse({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": n}})
    yield b"data: [DONE]\n\n"


def _handler(chat: bool):
    async def handle(request: Request) -> Response | Stream:
        body = await request.json()
        SEEN.append(body)
        text = body.get("prompt") or body["messages"][-1]["content"]
        if "fail" in text:
            err = {"error": {"message": "busy", "type": "overloaded_error", "param": None}}
            return Response(err, status_code=503)
        return Stream(_chunks(body, chat), media_type="text/event-stream")

    return handle


@get("/metrics", sync_to_thread=False)
def _metrics() -> Response:
    n = sum(b["max_tokens"] for b in SEEN)
    return Response(f"hearth_generation_tokens_total {n}\n", media_type="text/plain")


@pytest.fixture(scope="module")
def stub() -> Iterator[Target]:
    app = Litestar(
        [post("/v1/completions", status_code=200)(_handler(False)),
         post("/v1/chat/completions", status_code=200)(_handler(True)),
         _metrics],
    )  # fmt: skip
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield Target("stub", f"http://127.0.0.1:{port}", "m")
    server.should_exit = True
    thread.join(timeout=10)


def _workload(texts: list[str], **kw) -> Workload:
    return Workload(prompts=tuple(Prompt(text=t) for t in texts), output_tokens=5, **kw)


def test_request_body_asks_for_fixed_length_and_usage():
    w = _workload(["hi"])
    body = request_body(w, 0, "m")
    assert body["ignore_eos"] is True and body["min_tokens"] == body["max_tokens"] == 5
    assert body["stream_options"] == {"include_usage": True} and body["prompt"] == "hi"
    chat = request_body(Workload(w.prompts, api="chat", fixed_output=False), 0, "m")
    assert chat["messages"] == [{"role": "user", "content": "hi"}] and "ignore_eos" not in chat


def test_synthetic_prompts_are_reproducible_and_sized():
    a = synthetic_prompts(4, 40, seed=3)
    assert a == synthetic_prompts(4, 40, seed=3)
    assert a != synthetic_prompts(4, 40, seed=4)
    assert len({p.text for p in a}) == 4 and all(p.input_tokens == 40 for p in a)


def test_closed_loop_run_times_every_request(stub):
    figures, run = asyncio.run(
        measure(stub, _workload(["a", "b"]), LoadShape(6, concurrency=3), progress=False)
    )
    assert [r.index for r in run.records] == list(range(6))
    for r in run.records:
        assert r.ok and r.output_tokens == 5 and r.prompt_tokens == 7 and r.text == "xxxxx"
        assert 0 < r.ttft_s <= r.e2e_s and len(r.itl_s) == 4 and r.finish_reason == "length"
    assert figures["completed"] == 6 and figures["output_tokens"] == 30
    assert figures["output_throughput"] == pytest.approx(30 / run.duration_s, rel=1e-3)
    assert figures["server_metrics"]["hearth_generation_tokens_total"] == 30


def test_errors_are_counted_by_status(stub):
    w = _workload(["ok", "please fail"])
    figures, run = asyncio.run(measure(stub, w, LoadShape(4, concurrency=2), progress=False))
    assert figures["failed"] == 2 and figures["errors_by_status"] == {"503": 2}
    failed = [r for r in run.records if not r.ok]
    assert {r.index for r in failed} == {1, 3} and all(r.error == "busy" for r in failed)
    assert figures["good_fraction"] == pytest.approx(0.5)


def test_unreachable_server_is_an_error_not_an_exception():
    dead = Target("dead", f"http://127.0.0.1:{free_port()}", "m")
    run = asyncio.run(run_load(dead, _workload(["a"]), LoadShape(2), progress=False))
    assert all(r.status == 0 and r.error for r in run.records)


def test_chat_with_schema_checks_validity(stub):
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}
    w = Workload((Prompt(text="q"),), api="chat", output_tokens=8, response_format=fmt)
    figures, run = asyncio.run(measure(stub, w, LoadShape(2), progress=False))
    assert all(r.text == '{"a": 1}' and r.schema_valid for r in run.records)
    assert figures["schema_valid_fraction"] == 1.0


def test_poisson_arrivals_spread_starts(stub):
    load = LoadShape(8, concurrency=None, rate=50.0, seed=1)
    figures, run = asyncio.run(measure(stub, _workload(["a"]), load, progress=False))
    starts = [r.start_s for r in run.records]
    assert figures["completed"] == 8 and starts == sorted(starts) and starts[-1] > 0
    assert figures["goodput"] == figures["request_throughput"]
    slo = summarize_tight(run)
    assert slo == 0.0


def summarize_tight(run) -> float:
    from benchmarks.report import summarize

    return summarize(run.records, run.duration_s, SLO(ttft_s=0.0))["goodput"]


def test_runs_can_start_at_another_prompt(stub):
    w = _workload(["p0", "p1", "p2", "p3", "p4"])
    _, run = asyncio.run(
        measure(stub, w, LoadShape(2, concurrency=2, first_index=3), progress=False)
    )
    assert [r.index for r in run.records] == [3, 4]
    assert [b["prompt"] for b in SEEN[-2:]] in (["p3", "p4"], ["p4", "p3"])


def test_every_round_and_level_gets_its_own_prompts():
    from benchmarks.__main__ import build_parser, prompts_needed

    args = build_parser().parse_args(
        ["serve", "--url", "http://x", "--concurrency", "1,8", "--requests", "5", "--rounds", "3"]
    )
    assert prompts_needed(args) == 2 * 5 * 3 + 1


def test_cli_sweep_with_a_compare_server_writes_rows_and_ratios(stub, tmp_path, capsys):
    from benchmarks.__main__ import main
    from benchmarks.report import read_results

    results = tmp_path / "r.jsonl"
    argv = [
        "serve", "--url", stub.base_url, "--name", "a", "--compare-url", stub.base_url,
        "--model", "m", "--gguf", str(tmp_path / "none.gguf"), "--concurrency", "1,2",
        "--requests", "2", "--rounds", "2", "--input-tokens", "8", "--output-tokens", "3",
        "--results", str(results), "--db", "", "--plots", str(tmp_path), "--no-bandwidth",
    ]  # fmt: skip
    assert main(argv) == 0
    rows = read_results(results)
    serve = [r for r in rows if r["benchmark"] == "serve"]
    ratios = [r for r in rows if r["benchmark"] == "serve-compare"]
    assert [(r["settings"]["server"], r["settings"]["load"]) for r in serve] == [
        ("a", "c1"),
        ("B", "c1"),
        ("a", "c2"),
        ("B", "c2"),
    ]
    assert all(
        r["figures"]["completed"] == 4 and r["figures"]["output_tokens"] == 12 for r in serve
    )
    assert [r["backend"] for r in ratios] == ["a/B", "a/B"]
    assert all(r["figures"]["ratios"]["output_throughput"] > 0 for r in ratios)
    # 2 levels x 2 rounds x 2 requests, each round on new prompts, plus the warm-up prompt
    prompts = [b["prompt"] for b in SEEN[-16:]]
    assert len(set(prompts)) == 8
    assert len(list(tmp_path.glob("serve-*.png"))) == 2


def test_cli_schema_ab_runs_each_server_with_and_without_the_schema(stub, tmp_path):
    from benchmarks.__main__ import main
    from benchmarks.report import read_results

    schema = tmp_path / "s.json"
    schema.write_text(json.dumps({"type": "object"}))
    results = tmp_path / "r.jsonl"
    argv = [
        "serve", "--url", stub.base_url, "--name", "a", "--model", "m", "--api", "chat",
        "--gguf", str(tmp_path / "none.gguf"), "--concurrency", "1", "--requests", "2",
        "--rounds", "2", "--input-tokens", "8", "--output-tokens", "3", "--schema", str(schema),
        "--schema-ab", "--results", str(results), "--db", "", "--no-bandwidth",
    ]  # fmt: skip
    assert main(argv) == 0
    rows = read_results(results)
    serve = {r["settings"]["server"]: r for r in rows if r["benchmark"] == "serve"}
    assert set(serve) == {"a", "a/free"}
    assert serve["a"]["settings"]["response_format"] is True
    assert serve["a/free"]["settings"]["response_format"] is False
    (ratio,) = [r for r in rows if r["benchmark"] == "serve-compare"]
    assert ratio["backend"] == "a/a/free" and ratio["figures"]["ratios"]["output_throughput"] > 0
    # warm-up + 2 rounds x 2 requests for each of the pair; half of the measured ones
    # constrained, and the twins (same server, same prefix cache) never share a prompt
    sent = SEEN[-8:]
    assert sum("response_format" in b for b in sent) == 4
    prompts = [b["messages"][-1]["content"] for b in sent]
    assert len(set(prompts)) == 8
