"""The web console in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright) against a
real server with tenant keys: sign-in, streamed chat, JSON-schema mode, upload with progress, a
RAG citation that opens its chunk, a classifier from a CSV. Every request the page makes must go
to Hearth itself and the page must log no JavaScript error. Screenshots of each page go to
``tests/e2e/screenshots/`` (git-ignored).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.engine.tasks.fixtures_tasks import examples
from tests.support import HearthProcess

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

playwright_api = pytest.importorskip("playwright.sync_api")

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


def test_json_schema_mode_shows_a_validated_object(browser_page) -> None:
    page, _ = browser_page
    page.get_by_label("JSON-schema mode").check()
    page.get_by_label("Max tokens").fill("40")
    page.get_by_label("Message").fill("Give the city of Paris and its population.")
    page.get_by_role("button", name="Send").click()
    validated = page.locator("pre.validated")
    validated.wait_for()
    text = validated.inner_text()
    assert '"city"' in text and '"population"' in text, text
    assert "valid" in page.locator("pre.report").inner_text()
    shot(page, "chat-json-schema")


def test_upload_shows_progress_and_the_document(browser_page, tmp_path: Path) -> None:
    page, _ = browser_page
    page.get_by_role("link", name="Documents").click()
    page.get_by_label("New collection").fill("handbook")
    page.get_by_role("button", name="Create").click()
    page.get_by_role("heading", name="Collection handbook").wait_for()
    doc = tmp_path / "memo.txt"
    doc.write_text(f"{FILLER}\n\n{FACT}\n\n{FILLER}")
    page.get_by_label("choose files").set_input_files(str(doc))
    page.locator(".pct").get_by_text(re.compile(r"^100%")).wait_for()
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
    shot(page, "tasks")


def test_other_pages_render(browser_page) -> None:
    page, _ = browser_page
    for name, heading in [
        ("jobs", "Jobs"),
        ("usage", "Usage"),
        ("benchmarks", "Benchmarks"),
        ("admin", "Admin"),
    ]:
        page.get_by_role("link", name=heading, exact=True).click()
        page.get_by_role("heading", name=heading, exact=True).wait_for()
        if name == "jobs":  # the two uploads above, finished
            page.locator("table tbody tr").filter(has_text="succeeded").first.wait_for()
        if name == "usage":  # the chats above were recorded: one bar per day and model
            page.get_by_role("img", name="Tokens per day and model").locator("div").first.wait_for()
        shot(page, name)
    page.set_viewport_size({"width": 390, "height": 844})
    page.get_by_role("link", name="Chat").click()
    page.get_by_role("heading", name="Chat playground").wait_for()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, width
    shot(page, "phone-chat")
    page.set_viewport_size({"width": 1280, "height": 800})


def test_admin_lists_tenants_creates_a_key_once_and_shows_limits(browser_page) -> None:
    page, _ = browser_page
    page.get_by_role("link", name="Admin", exact=True).click()
    page.get_by_label("Admin key").fill(ADMIN_KEY)
    page.get_by_role("button", name="Unlock").click()
    page.get_by_role("heading", name="Limits of acme").wait_for()
    page.get_by_role("button", name="Create key for acme").click()
    page.locator("pre.once:not([hidden]), #error:not([hidden])").first.wait_for(timeout=60_000)
    assert page.locator("#error").is_hidden(), page.locator("#error").inner_text()
    assert page.locator("pre.once").inner_text().startswith("New key (shown once): hth_")
    assert "requests_per_min" in page.locator("pre.limits").first.inner_text()
    shot(page, "admin-unlocked")


def test_only_hearth_was_contacted_and_no_script_error(server: HearthProcess, browser_page) -> None:
    page, watch = browser_page
    assert watch.urls, "the page made no request at all"
    # blob: URLs are bytes the page already fetched from Hearth (the benchmark plots), not requests
    local = (server.url + "/", "blob:" + server.url + "/")
    foreign = [u for u in watch.urls if not u.startswith(local)]
    assert foreign == []
    assert watch.errors == []
