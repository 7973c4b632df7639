"""The web console: a static page (vanilla JS + one CSS file, no build step) served at ``/``.

The page calls only Hearth's public HTTP API with the key the user signs in with; it adds no
private route. Its files are committed under ``static/`` and carry a Content-Security-Policy that
allows nothing but this origin, so an air-gapped browser never reaches for another host.
"""

from __future__ import annotations

from pathlib import Path

from litestar import Response, get
from litestar.static_files import create_static_files_router

STATIC_DIR = Path(__file__).resolve().parent / "static"
PREFIX = "/console"
OPEN_PREFIXES = (PREFIX + "/",)
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff"}


@get("/", include_in_schema=False)
async def index() -> Response[bytes]:
    """The console's one page; the script routes between its views by the URL fragment."""
    body = (STATIC_DIR / "index.html").read_bytes()
    return Response(body, media_type="text/html; charset=utf-8", headers=HEADERS)


assets = create_static_files_router(
    path=PREFIX, directories=[STATIC_DIR], include_in_schema=False, name="console"
)

ROUTES = [index, assets]
