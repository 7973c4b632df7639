"""The Hearth-workload benchmark's requests (fast; no server): Hearth's own prompt shapes, the
same prompt for both servers with each one's schema field, distinct prompt starts, and the
prompt-cache hit rate from each server's own figures."""

from __future__ import annotations

from benchmarks.driver import Target
from benchmarks.hearth_work import SCHEMA, _body, _figures, build_items
from benchmarks.report import RequestRecord
from engine.rag import INSTRUCTION


def _count(text: str) -> int:
    return 1 + round(len(text.split()) * 1.3)


def test_items_cycle_kinds_with_hearth_prompt_shapes():
    items = build_items(6, _count, rag_tokens=1500, doc_tokens=900, answer=48)
    assert [i.kind for i in items] == ["rag", "extract", "summary"] * 2
    rag, extract, summary = items[:3]
    assert INSTRUCTION in rag.prompt and "<<<CONTEXT [1]" in rag.prompt
    assert 1200 <= _count(rag.prompt) <= 1600
    assert extract.prompt.startswith("Extract these fields") and extract.schema == SCHEMA
    assert not extract.fixed and rag.fixed and summary.fixed
    assert summary.prompt.startswith("Summarize the text")
    # no two prompts begin alike past the shared instruction heads: caches see only real reuse
    texts = [i.prompt.split("Text:", 1)[-1][:200] for i in items]
    assert len(set(texts)) == len(texts)


def test_each_server_gets_its_own_schema_field_and_the_same_prompt():
    item = build_items(2, _count, rag_tokens=400, doc_tokens=200, answer=8)[1]
    hearth = _body(Target("hearth", "http://x", "m", backend="hearth-llamacpp"), item)
    peer = _body(Target("llama-server", "http://y", "m", backend="llama-server"), item)
    assert hearth["prompt"] == peer["prompt"]
    assert hearth["response_format"]["json_schema"]["schema"] == SCHEMA
    assert peer["json_schema"] == SCHEMA and "response_format" not in peer
    assert "ignore_eos" not in hearth  # extraction stops when the object is complete


def test_hit_rate_from_hearth_metrics_or_peer_timings():
    item = build_items(1, _count, rag_tokens=400, doc_tokens=200, answer=8)[0]
    rec = RequestRecord(index=0, start_s=0.0, status=200, ttft_s=0.5, e2e_s=1.0,
                        prompt_tokens=400, output_tokens=8)  # fmt: skip
    hearth = _figures([(item, rec, None)], 1.0, {"hearth_prefix_hit_tokens": 100.0},
                      {"hearth_prefix_hit_tokens": 200.0})  # fmt: skip
    assert hearth["prompt_cache_hit_tokens"] == 100
    assert hearth["prompt_cache_hit_rate"] == 0.25
    peer = _figures([(item, rec, 40)], 1.0, None, None)
    assert peer["prompt_cache_hit_rate"] == 0.1
    assert peer["ttft_p50_ms_by_kind"] == {"rag": 500.0}
