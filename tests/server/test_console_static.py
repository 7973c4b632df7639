"""The console's static page: served at / before the services are up, without a key, with a
Content-Security-Policy that allows only this origin; its assets are committed files."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from litestar.testing import TestClient

from server.app import create_app
from tests.server.fakes import fake_settings


def test_console_page_and_assets_are_open_and_self_contained(tmp_path: Path) -> None:
    async def never(_: Any) -> Any:
        await asyncio.Event().wait()

    app = create_app(fake_settings(tmp_path), open_services=never, exit_on_start_failure=False)
    with TestClient(app) as c:
        page = c.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert '<script src="/console/app.js"' in page.text
        for asset, kind in [("/console/app.js", "javascript"), ("/console/app.css", "css")]:
            r = c.get(asset)
            assert r.status_code == 200 and kind in r.headers["content-type"], asset
            # No CDN. The SVG namespace is a name that is never fetched, the only URL allowed.
            text = r.text.replace('"http://www.w3.org/2000/svg"', "")
            assert "http://" not in text and "https://" not in text, asset
        assert c.get("/console/missing.js").status_code == 404
        assert c.get("/v1/models").status_code == 503  # the API stays behind the middleware


def test_benchmark_results_reader(tmp_path: Path) -> None:
    from engine import BenchmarkResults, NotFoundError

    (tmp_path / "serve.jsonl").write_text('{"model": "m", "tok_s": 1.5}\nnot json\n[1]\n')
    (tmp_path / "serve.png").write_bytes(b"\x89PNG")
    results = BenchmarkResults(tmp_path)
    assert results.latest() == [{"suite": "serve", "model": "m", "tok_s": 1.5}]
    assert results.plots() == ["serve.png"]
    assert results.plot("serve.png") == b"\x89PNG"
    for bad in ["../serve.png", "missing.png", "serve.jsonl"]:
        try:
            results.plot(bad)
        except NotFoundError:
            continue
        raise AssertionError(f"{bad} was served")
