"""The OpenAPI document covers every route with the body schema its handler decodes, and a
property-based fuzzer (schemathesis, offline) drives every operation of a real server process
(stand-in model, real DuckDB) with generated requests: no answer is a 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from litestar.routes import HTTPRoute

from server.app import create_app
from server.openapi import body_type, build_document
from tests.server.fake_server import FakeServerProcess
from tests.server.fakes import FakeParts, fake_settings

ADMIN_KEY = "fuzz-admin-key"
EXAMPLES = 10  # per operation


def test_the_document_has_every_route_and_its_body_schema(tmp_path: Path) -> None:
    settings = fake_settings(tmp_path)
    app = create_app(settings, open_services=FakeParts(settings).open, exit_on_start_failure=False)
    doc = build_document(app)
    seen = 0
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            if handler.include_in_schema is False:  # /metrics (Prometheus), the console's files
                continue
            for method in handler.http_methods - {"HEAD", "OPTIONS"}:
                op = doc["paths"][route.path_format][method.lower()]
                assert ("requestBody" in op) == (body_type(handler.fn) is not None)
                seen += 1
    assert seen >= 80
    chat = doc["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]
    ref = chat["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    assert "messages" in doc["components"]["schemas"][ref]["properties"]
    assert len({op["operationId"] for ops in doc["paths"].values() for op in ops.values()}) == seen


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeServerProcess]:
    proc = FakeServerProcess(tmp_path_factory.mktemp("fuzz"), {"HEARTH_ADMIN_KEY": ADMIN_KEY})
    proc.start()
    yield proc
    proc.stop()


def test_no_generated_request_is_a_server_error(server: FakeServerProcess) -> None:
    """Every operation, a few generated requests each (bounded, derandomized: the same on every
    run), sent with the admin key (tenant routes run as the default tenant)."""
    api = schemathesis.openapi.from_url(f"{server.base_url}/openapi.json")
    failures: list[str] = []
    operations = 0
    for result in api.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def run(case: schemathesis.Case) -> None:
            response = case.call(headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=60)
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path} {case.body!r:.200} -> "
                    f"{response.status_code}: {response.text[:200]}"
                )

        run()
    assert operations >= 80
    assert not failures, "\n".join(failures)


def test_the_server_survived_the_fuzzing(server: FakeServerProcess) -> None:
    assert httpx.get(server.base_url + "/health", timeout=10).json()["status"] == "ok"
    assert "Traceback" not in server.log_tail(100_000), server.log_tail(60)
