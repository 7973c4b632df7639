"""server.metrics: the timer's histograms and counters, engine gauges, the /metrics route."""

from __future__ import annotations

from types import SimpleNamespace

from litestar import Litestar
from litestar.datastructures import State
from litestar.testing import TestClient
from prometheus_client.parser import text_string_to_metric_families

from configs import load_settings
from engine.types import BackendStats
from server.metrics import Metrics, metrics_route
from server.state import ServerState


def _samples(text: str) -> dict[str, float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}"] = s.value
    return out


def test_timer_records_ttft_itl_e2e_tokens_and_status_once():
    m = Metrics()
    t = m.request_timer("chat")
    t.tokens(0)  # text-only chunk: nothing
    t.tokens(1)
    t.tokens(3)
    t.finish(200, prompt_tokens=12, completion_tokens=4)
    t.finish(500)  # ignored
    m.count_request("chat", 400)
    s = _samples(m.render().decode())
    assert s["hearth_time_to_first_token_seconds_count{endpoint=chat}"] == 1
    assert s["hearth_inter_token_latency_seconds_count{endpoint=chat}"] == 3
    assert s["hearth_e2e_request_latency_seconds_count{endpoint=chat}"] == 1
    assert s["hearth_prompt_tokens_total{endpoint=chat}"] == 12
    assert s["hearth_generation_tokens_total{endpoint=chat}"] == 4
    assert s["hearth_requests_total{endpoint=chat,status=200}"] == 1
    assert s["hearth_requests_total{endpoint=chat,status=400}"] == 1
    assert "hearth_requests_total{endpoint=chat,status=500}" not in s


def test_two_apps_do_not_share_metrics():
    a, b = Metrics(), Metrics()
    a.request_timer("completions").finish(200)
    assert 'status="200"' in a.render().decode()
    assert 'status="200"' not in b.render().decode()


class _Engine:
    def stats(self) -> BackendStats:
        return BackendStats(running=3, waiting=5, kv_cells_used=250, kv_cells_total=1000, steps=9,
                            draft_tokens=40, draft_accepted=30, prefix_hit_tokens=64)


class _Broken:
    def stats(self) -> BackendStats:
        raise RuntimeError("starting")


def _scrape(engine) -> dict[str, float]:
    hearth = SimpleNamespace(engine=engine) if engine is not None else None
    state = ServerState(load_settings("test"), Metrics(), hearth)  # type: ignore[arg-type]
    app = Litestar([metrics_route], state=State({"server": state}))
    with TestClient(app) as client:
        resp = client.get("/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    return _samples(resp.text)


def test_route_refreshes_engine_gauges_at_scrape_time():
    s = _scrape(_Engine())
    assert s["hearth_queue_depth{}"] == 5
    assert s["hearth_running_sequences{}"] == 3
    assert s["hearth_kv_cells_used{}"] == 250
    assert s["hearth_kv_cache_usage_ratio{}"] == 0.25
    assert s["hearth_draft_tokens{}"] == 40
    assert s["hearth_draft_accepted_tokens{}"] == 30
    assert s["hearth_prefix_hit_tokens{}"] == 64


def test_route_survives_an_engine_without_stats():
    assert _scrape(_Broken())["hearth_queue_depth{}"] == 0
    assert _scrape(None)["hearth_running_sequences{}"] == 0
