"""The web console in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright) against a
real server with tenant keys: sign-in, streamed chat, "copy as curl / Python", a built JSON schema
and its validated object, tool calls, upload with progress, the three search modes, a RAG citation
that opens its chunk and a refusal, a classifier from a CSV, extraction spans, a workflow run and
its stored rows, a document analysis, jobs and a dead letter's retry, usage and benchmark charts,
admin keys created once and revoked, every page at phone width with a label on every control.
Every request the page makes must go to Hearth itself and the page must log no JavaScript error.
The tests share one server and one page, in file order. Screenshots of each page go to
``tests/e2e/screenshots/`` (git-ignored).
"""

from __future__ import annotations

import ast
import json
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.engine.tasks.fixtures_tasks import examples
from tests.support import HearthProcess

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ADMIN_KEY = "console-admin-key-0123456789"
SHOTS = Path(__file__).resolve().parent / "screenshots"
FACT = "The Zanzibar project uses the code name BLUE HERON for all of its internal reports."
FILLER = (
    "Quarterly revenue grew by four percent, driven by subscriptions in the northern region. "
    "Employees must renew their parking permits before the end of January each year. "
)
TIMEOUT_MS = 240_000  # generation on a shared 2-core machine


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HearthProcess]:
    proc = HearthProcess(tmp_path_factory.mktemp("console"), env={"HEARTH_ADMIN_KEY": ADMIN_KEY})
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def api_key(server: HearthProcess) -> str:
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    r = httpx.post(f"{server.url}/v1/admin/tenants", json={"name": "acme"}, headers=admin)
    assert r.status_code == 201, r.text
    r = httpx.post(f"{server.url}/v1/admin/tenants/acme/keys", json={}, headers=admin)
    assert r.status_code == 201, r.text
    return r.json()["key"]


class Watch:
    """Every URL the page requested and every JavaScript error it logged."""

    def __init__(self) -> None:
        self.urls: list[str] = []
        self.errors: list[str] = []

    def attach(self, page) -> None:
        page.on("request", lambda req: self.urls.append(req.url))
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("console", self._console)

    def _console(self, msg) -> None:
        # A 4xx answer the page handles (the 401 before sign-in) is logged by Chromium itself as
        # "Failed to load resource"; that is not a script error.
        if msg.type == "error" and "Failed to load resource" not in msg.text:
            self.errors.append(f"console: {msg.text}")


@pytest.fixture(scope="module")
def browser_page(server: HearthProcess) -> Iterator[tuple[object, Watch]]:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing: `make browser` installs it")
    SHOTS.mkdir(exist_ok=True)
    watch = Watch()
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        watch.attach(page)
        yield page, watch
        context.close()
        browser.close()


def shot(page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"))


def test_sign_in_with_a_key(server: HearthProcess, api_key: str, browser_page) -> None:
    page, _ = browser_page
    page.goto(server.url + "/#chat")
    page.get_by_role("heading", name="Sign in").wait_for()
    shot(page, "signin")
    page.get_by_label("API key").fill("hth_wrong_key")
    page.get_by_role("button", name="Sign in").click()
    page.locator("#error").get_by_text("invalid API key").wait_for()  # the API's own message
    page.get_by_label("API key").fill(api_key)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Chat playground").wait_for()
    options = page.get_by_label("Model").locator("option").all_text_contents()
    assert "gemma-3-270m-q4km" in options


def test_chat_streams_an_answer(browser_page) -> None:
    page, _ = browser_page
    page.get_by_label("Max tokens").fill("12")
    page.get_by_label("Seed").fill("7")
    page.get_by_label("Message").fill("Say hello in one word.")
    page.get_by_role("button", name="Send").click()
    stats = page.locator(".stats").last
    stats.get_by_text(re.compile("completion tokens")).wait_for()
    assert page.locator(".msg.assistant").last.inner_text().strip()
    assert re.search(r"TTFT \d+ ms", stats.inner_text())
    shot(page, "chat")


def test_copy_as_curl_and_python_give_the_exact_request(browser_page) -> None:
    page, _ = browser_page
    page.get_by_label("Message").fill("Name a colour.")
    page.get_by_role("button", name="Copy as curl").click()
    curl = page.get_by_label("curl command").inner_text()
    body = json.loads(re.search(r"-d '(.*)'$", curl, re.S).group(1))
    assert curl.startswith("curl http://127.0.0.1:") and "/v1/chat/completions" in curl
    assert body["max_tokens"] == 12 and body["seed"] == 7
    assert body["messages"][-1] == {"role": "user", "content": "Name a colour."}
    page.get_by_role("button", name="Copy as Python").click()
    python = page.get_by_label("Python code").inner_text()
    tree = ast.parse(python)  # valid Python, with the same body as the curl command
    call = next(
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "create"
    )
    assert ast.literal_eval(call.keywords[0].value) == body
    page.get_by_label("Message").fill("")


def test_json_schema_mode_shows_a_validated_object(browser_page) -> None:
    page, _ = browser_page
    page.get_by_text("Build a schema").click()  # build the schema rather than paste it
    page.get_by_label("Field 2 name").fill("inhabitants")
    page.get_by_role("button", name="Use built schema").click()
    expect(page.get_by_label("JSON schema")).to_have_value(re.compile('"inhabitants"'))
    expect(page.get_by_label("JSON-schema mode")).to_be_checked()
    page.get_by_label("Max tokens").fill("40")
    page.get_by_label("Message").fill("Give the city of Paris and its population.")
    page.get_by_role("button", name="Send").click()
    validated = page.locator("pre.validated")
    validated.wait_for()
    text = validated.inner_text()
    assert '"city"' in text and '"inhabitants"' in text, text
    assert json.loads(page.locator("pre.report").inner_text())["valid"] is True
    shot(page, "chat-json-schema")


def test_tool_calls_are_shown(browser_page) -> None:
    page, _ = browser_page
    page.get_by_label("JSON-schema mode").uncheck()
    page.get_by_role("button", name="Example tool").click()
    page.get_by_label("Tool choice").select_option("required")
    page.get_by_label("Max tokens").fill("40")
    page.get_by_label("Message").fill("What is the weather in Paris?")
    page.get_by_role("button", name="Send").click()
    calls = page.locator("pre.toolcalls")
    calls.wait_for()
    assert calls.inner_text().startswith("get_weather({"), calls.inner_text()
    assert json.loads(page.locator("pre.report").inner_text())["kind"] == "tools"
    shot(page, "chat-tools")
    page.get_by_label("Tools (JSON array, optional)").fill("")


def test_upload_shows_progress_and_the_document(browser_page, tmp_path: Path) -> None:
    page, _ = browser_page
    page.get_by_role("link", name="Documents").click()
    page.get_by_label("New collection").fill("handbook")
    page.get_by_role("button", name="Create").click()
    page.get_by_role("heading", name="Collection handbook").wait_for()
    doc = tmp_path / "memo.txt"
    doc.write_text(f"{FILLER}\n\n{FACT}\n\n{FILLER}")
    page.get_by_label("choose files").set_input_files(str(doc))
    page.locator(".pct").get_by_text(re.compile(r"^100% succeeded")).wait_for()
    assert page.get_by_label("Upload of memo.txt").get_attribute("value") == "100"
    # A second file dropped on the drop zone (a real DataTransfer in a drop event).
    page.locator(".drop").dispatch_event(
        "drop",
        {
            "dataTransfer": page.evaluate_handle(
                """() => { const dt = new DataTransfer();
                dt.items.add(new File(["The canteen serves risotto on Fridays."], "dropped.txt",
                                      {type: "text/plain"}));
                return dt; }"""
            )
        },
    )
    page.get_by_label("Upload of dropped.txt").and_(page.locator("[value='100']")).wait_for()
    page.locator("table.documents tbody tr").filter(has_text="dropped").wait_for()
    row = page.locator("table.documents tbody tr").filter(has_text="memo")
    row.wait_for()
    assert int(row.locator("td").nth(3).inner_text()) >= 1
    shot(page, "documents")


def test_search_modes_show_scores(browser_page) -> None:
    page, _ = browser_page
    page.get_by_label("Query").fill("Zanzibar code name")
    for mode in ("dense", "lexical", "hybrid"):
        page.get_by_label(mode, exact=True).check()
        page.get_by_role("button", name="Search").click()
        caption = page.locator("table.hits caption")
        caption.get_by_text(f"{mode} mode").wait_for()
        top = page.locator("table.hits tbody tr").first
        assert "BLUE HERON" in top.inner_text()
        assert float(top.locator("td.score").inner_text()) > 0
    shot(page, "search")


def test_rag_citation_opens_its_chunk(browser_page) -> None:
    page, _ = browser_page
    page.get_by_label("Question").fill("What code name does the Zanzibar project use?")
    page.get_by_role("button", name="Ask").click()
    cite = page.locator(".answer button.cite").first
    cite.wait_for()
    cite.click()
    mark = page.get_by_role("region", name="Cited chunk").locator("mark")
    mark.wait_for()
    assert mark.inner_text().strip()
    assert "BLUE HERON" in page.get_by_role("region", name="Cited chunk").inner_text()
    shot(page, "rag")


def test_rag_refusal_is_shown_as_such(browser_page) -> None:
    page, _ = browser_page
    page.get_by_label("Question").fill("How many moons does Jupiter have?")
    page.get_by_role("button", name="Ask").click()
    refusal = page.locator(".rag .msg.refusal")
    refusal.wait_for()
    assert refusal.inner_text().startswith("Refused:") and "evidence" in refusal.inner_text()


def test_classifier_from_csv_classifies(browser_page, tmp_path: Path) -> None:
    page, _ = browser_page
    page.get_by_role("link", name="Tasks").click()
    csv = tmp_path / "intents.csv"
    csv.write_text("text,label\n" + "\n".join(f'"{e.text}",{e.label}' for e in examples()))
    page.get_by_label("Name").fill("intents")
    page.get_by_label("CSV (text,label)").set_input_files(str(csv))
    page.get_by_role("button", name="Create classifier").click()
    page.locator(".created").wait_for()
    page.get_by_label("Try an input").fill("I was charged twice for my subscription")
    page.get_by_role("button", name="Classify").click()
    label = page.locator(".prediction .label")
    label.wait_for()
    assert label.inner_text() == "billing"
    confidence = float(page.locator(".prediction .confidence").inner_text().split()[-1])
    assert 0 < confidence <= 1
    labels = page.locator("table.scores tbody tr td:first-child").all_inner_texts()
    assert "billing" in labels and len(labels) >= 2
    shot(page, "tasks")


def test_extraction_shows_fields_with_source_spans(browser_page) -> None:
    page, _ = browser_page
    page.get_by_role("button", name="Extract").click()
    spans = page.get_by_role("region", name="Source spans")
    spans.locator("mark").first.wait_for()
    email = page.locator(".extraction table tbody tr").filter(has_text="email").first
    value = email.locator("td").nth(1).inner_text()
    assert "@example.com" in value, value  # the model's value or the regex fallback's
    assert value in page.get_by_label("Text", exact=True).input_value()
    assert value in spans.locator("mark").all_inner_texts()  # its span in the text is marked
    shot(page, "tasks-extraction")


def test_workflow_run_shows_its_stored_row(browser_page) -> None:
    page, _ = browser_page
    definition = {
        "name": "triage",
        "description": "Billing or delivery, and the sender's email address.",
        "text": "message",
        "classify": {
            "examples": [
                {"text": "I was charged twice this month", "label": "billing"},
                {"text": "Please refund my last invoice", "label": "billing"},
                {"text": "My parcel has not arrived yet", "label": "delivery"},
                {"text": "The courier left the box at the wrong door", "label": "delivery"},
            ]
        },
        "extract": {
            "schema": {
                "type": "object",
                "properties": {"email": {"type": ["string", "null"], "maxLength": 40}},
                "required": ["email"],
                "additionalProperties": False,
            }
        },
    }
    page.get_by_text("Save a workflow").click()
    page.get_by_label("Workflow definition (JSON)").fill(json.dumps(definition))
    page.get_by_role("button", name="Save workflow").click()
    expect(page.get_by_label("Workflow", exact=True)).to_have_value("triage")
    page.get_by_text("No stored runs yet.").wait_for()
    page.get_by_label("Input (JSON object)").fill(
        json.dumps({"message": "I was charged twice, write to ann@example.org"})
    )
    page.get_by_role("button", name="Run").click()
    response = page.locator("pre.wf-response")
    response.get_by_text('"intent"').wait_for()
    run_id = json.loads(response.inner_text())["id"]
    row = page.locator(".wf-rows tbody tr").filter(has_text=run_id)
    row.wait_for()
    assert "billing" in row.inner_text()


def test_document_analysis_shows_risks(browser_page) -> None:
    page, _ = browser_page
    expect(page.get_by_label("Collection", exact=True)).to_have_value("handbook")
    document = page.get_by_label("Document", exact=True)
    # the one-sentence document and one step keep it short
    document.select_option(
        document.locator("option", has_text="dropped.txt").get_attribute("value")
    )
    page.get_by_label("Summaries").uncheck()
    page.get_by_label("Action items").uncheck()
    page.get_by_role("button", name="Analyze").click()
    risks = page.get_by_role("heading", name=re.compile(r"^Risks \(\d+\)"))
    # up to 320 tokens of a small model on two shared cores: a generous bound, not a timing test
    risks.or_(page.locator("#error:not([hidden])")).first.wait_for(timeout=2 * TIMEOUT_MS)
    assert page.locator("#error").is_hidden(), page.locator("#error").inner_text()
    assert risks.is_visible()
    assert page.get_by_label("Analysis progress").get_attribute("value") == "100"
    shot(page, "tasks-analysis")


def test_jobs_show_progress_and_a_dead_letter_can_be_retried(browser_page) -> None:
    page, _ = browser_page
    # No public route makes a job die on purpose, so the dead-letter list is answered here with a
    # job the server does not have: the Retry button still calls the real route, and the page
    # shows the API's own 404 message.
    dead = {
        "id": "job_00000000000000000dead",
        "object": "job",
        "kind": "webhook",
        "status": "dead",
        "progress": 0,
        "stage": None,
        "attempts": 5,
        "max_attempts": 5,
        "total": 1,
        "done": 0,
        "failed": 1,
        "skipped": 0,
        "error": "connection refused",
        "result": None,
        "created_at": 1,
        "updated_at": 1,
    }
    dead_letters = re.compile(r".*/v1/jobs\?status=dead$")
    page.route(dead_letters, lambda route: route.fulfill(json={"object": "list", "data": [dead]}))
    try:
        page.get_by_role("link", name="Jobs", exact=True).click()
        page.get_by_role("heading", name="Jobs", exact=True).wait_for()
        ingest = page.locator("table.jobs tbody tr").filter(has_text="ingest").first
        ingest.wait_for()
        assert "succeeded" in ingest.inner_text()
        assert ingest.locator("progress").get_attribute("value") == "100"
        page.locator("ul.dead").get_by_text("connection refused").wait_for()
        page.get_by_role("button", name=f"Retry {dead['id']}").click()
        page.locator("#error:not([hidden])").wait_for()
        assert dead["id"] in page.locator("#error").inner_text()
        shot(page, "jobs")
    finally:
        page.unroute(dead_letters)


def test_usage_and_benchmarks_draw_charts(browser_page) -> None:
    page, _ = browser_page
    page.get_by_role("link", name="Usage", exact=True).click()
    chart = page.get_by_role("img", name="Tokens per day and model")
    chart.locator("rect.bar").first.wait_for()  # the chats above: bars per day and model
    assert "gemma-3-270m-q4km" in page.locator(".legend").inner_text()
    page.get_by_label("Chart").select_option("requests")
    page.get_by_role("img", name="Requests per day and model").wait_for()
    shot(page, "usage")
    page.get_by_role("link", name="Benchmarks", exact=True).click()
    page.get_by_role("heading", name="Latest results").wait_for()
    assert page.locator("table tbody tr").count() >= 1
    # drawn from the committed serve results: throughput vs concurrency, TTFT and TPOT spreads
    throughput = page.get_by_role("img", name="Output tokens/s vs concurrency (serve suite)")
    throughput.locator("circle").first.wait_for()  # one point per series and concurrency
    page.get_by_role("img", name=re.compile("Time to first token")).wait_for()
    page.get_by_role("img", name=re.compile("Time per output token")).wait_for()
    shot(page, "benchmarks")


def test_admin_creates_a_key_once_revokes_it_and_shows_the_engine(
    server: HearthProcess, browser_page
) -> None:
    page, _ = browser_page
    page.get_by_role("link", name="Admin", exact=True).click()
    page.get_by_label("Admin key").fill("not-the-admin-key")
    page.get_by_role("button", name="Unlock").click()
    page.locator("#error:not([hidden])").wait_for()  # the API's own message, not a blank page
    assert "admin" in page.locator("#error").inner_text().lower()
    page.get_by_label("Admin key").fill(ADMIN_KEY)
    page.get_by_role("button", name="Unlock").click()
    page.get_by_role("heading", name="Limits of acme").wait_for()
    assert page.locator("#error").is_hidden()
    facts = page.locator("dl.facts").inner_text()
    assert "queue depth" in facts and "running sequences" in facts, facts
    models = page.locator("table").filter(has_text="capabilities").first.inner_text()
    assert re.search(r"gemma-3-270m-q4km\s+loaded", models), models
    page.get_by_label("Name of a new key for acme").fill("temporary")
    page.get_by_role("button", name="Create key for acme").click()
    page.locator("pre.once:not([hidden])").wait_for()
    key = page.locator("pre.once").inner_text().removeprefix("New key (shown once): ")
    assert key.startswith("hth_")
    assert key not in page.locator("main").inner_text().replace(
        page.locator("pre.once").inner_text(), ""
    )
    models_url = f"{server.url}/v1/models"
    assert httpx.get(models_url, headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert "requests_per_min" in page.locator("pre.limits").first.inner_text()
    row = page.locator("table.keys tbody tr").filter(has_text="temporary")
    row.get_by_role("button", name=re.compile("^Revoke ")).click()
    row.get_by_text("revoked", exact=True).wait_for()
    assert httpx.get(models_url, headers={"Authorization": f"Bearer {key}"}).status_code == 401
    shot(page, "admin-unlocked")


# Every page, at phone width: nothing wider than the window, and a label on every control.
UNLABELLED = """() => [...document.querySelectorAll('main input, main select, main textarea')]
    .filter((c) => !(c.labels && c.labels.length) && !c.getAttribute('aria-label'))
    .map((c) => c.outerHTML.slice(0, 80))"""


def test_every_page_works_at_phone_width_with_labelled_controls(browser_page) -> None:
    page, _ = browser_page
    page.set_viewport_size({"width": 390, "height": 844})
    try:
        for name in ("Chat", "Documents", "Tasks", "Jobs", "Usage", "Benchmarks", "Admin"):
            page.get_by_role("link", name=name, exact=True).click()
            heading = "Chat playground" if name == "Chat" else name
            page.get_by_role("heading", name=heading, exact=True).wait_for()
            page.locator(f"body[data-view={name.lower()}]").wait_for(state="attached")  # rendered
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, (name, width)
            assert page.evaluate(UNLABELLED) == [], name
            shot(page, f"phone-{name.lower()}")
    finally:
        page.set_viewport_size({"width": 1280, "height": 800})


def public_api_paths() -> list[re.Pattern[str]]:
    """The server's public routes (those in its OpenAPI schema) as path patterns."""
    from server.app import create_app
    from tests.server.fakes import fake_settings

    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(fake_settings(Path(tmp)), exit_on_start_failure=False)
    public = [
        r.path
        for r in app.routes
        if any(h.include_in_schema is not False for h in getattr(r, "route_handlers", []))
        and not r.path.startswith("/console/")
    ]
    return [re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$") for path in public]


def test_only_hearth_was_contacted_and_no_script_error(server: HearthProcess, browser_page) -> None:
    page, watch = browser_page
    assert watch.urls, "the page made no request at all"
    # blob: URLs are bytes the page already fetched from Hearth (the benchmark plots), not requests
    local = (server.url + "/", "blob:" + server.url + "/")
    foreign = [u for u in watch.urls if not u.startswith(local)]
    assert foreign == []
    assert watch.errors == []
    # ... and only the public API: no route exists for the console alone
    api = public_api_paths()
    paths = {urlsplit(u).path for u in watch.urls if u.startswith(server.url)}
    private = [p for p in paths if p != "/" and not p.startswith("/console/")]
    private = [p for p in private if not any(pattern.match(p) for pattern in api)]
    assert private == []
