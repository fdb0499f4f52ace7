"""The web console: the static files under `console/`, served at `/console/` on the REST port.

They hold no data, so they are served without a key; every API call the console makes sends the key its
user signed in with. Read once when the routes are built, served from memory with an ETag.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

ASSETS = Path(__file__).with_name("console")
PREFIX = "/console"
#: Scripts and styles from the console's own files only (no inline script or style attribute), API calls
#: to this origin only, and no framing.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".txt": "text/plain",
}
_SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


def load_assets(folder: Path = ASSETS) -> dict[str, Asset]:
    """Every file of a known type in `folder` and its subfolders, by its path relative to it."""
    assets = {}
    for path in sorted(folder.rglob("*")):
        content_type = _TYPES.get(path.suffix)
        if content_type is None or not path.is_file():
            continue
        body = path.read_bytes()
        etag = f'"{hashlib.sha256(body).hexdigest()[:20]}"'
        assets[path.relative_to(folder).as_posix()] = Asset(body, content_type, etag)
    return assets


def _serve(asset: Asset, request: web.Request) -> web.Response:
    # Unversioned names: the browser keeps a copy but asks again each time (a 304 when unchanged).
    headers = {**_SECURITY_HEADERS, "Cache-Control": "no-cache", "ETag": asset.etag}
    if request.headers.get("If-None-Match") == asset.etag:
        return web.Response(status=304, headers=headers)
    return web.Response(body=asset.body, content_type=asset.content_type, charset="utf-8", headers=headers)


def routes(folder: Path = ASSETS) -> list[web.RouteDef]:
    assets = load_assets(folder)

    async def index(request: web.Request) -> web.Response:
        return _serve(assets["index.html"], request)

    async def asset(request: web.Request) -> web.Response:
        found = assets.get(request.match_info["file"])
        if found is None:
            raise web.HTTPNotFound()
        return _serve(found, request)

    async def to_index(request: web.Request) -> web.Response:
        # Returned, not raised: the edge turns raised HTTP errors into JSON bodies without their headers.
        return web.Response(status=301, headers={"Location": f"{PREFIX}/"})

    return [
        web.get(PREFIX, to_index),
        web.get(f"{PREFIX}/", index),
        web.get(f"{PREFIX}/{{file:.+}}", asset),
    ]


def is_console_path(path: str) -> bool:
    """The console's files need no key (they hold no data); the API calls they make do."""
    return path == PREFIX or path.startswith(f"{PREFIX}/")
