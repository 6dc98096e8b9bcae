"""The web faces as static files: ``/widget.js``, ``/console/…`` and ``/admin/…``.

Files come from the package directories ``kefu/web/widget``, ``kefu/web/console`` and
``kefu/web/admin``; only files that exist there are served (a request names a file of the listing,
never a path on disk, so ``..`` and friends cannot escape). Each file is read once, with its ETag
and, for text worth compressing, a gzip copy made once, so a request costs a dict lookup.

Caching: ``no-cache`` plus a strong ETag. The names carry no content hash, so a browser must
revalidate; the answer to a revalidation is a body-less 304.

The console and admin pages get a strict Content-Security-Policy: scripts, styles and images only
from this server, WebSocket connections only to this server's own WebSocket address, no framing,
no plugins. ``widget.js`` runs inside other sites' pages, so it gets none of that, only
``nosniff`` and a cross-origin resource policy that lets any page load it.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

from aiohttp import web
from yarl import URL

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".mp3": "audio/mpeg",
    ".ogg": "audio/ogg",
}
COMPRESSIBLE = (".html", ".js", ".mjs", ".css", ".json", ".svg")
GZIP_MIN_BYTES = 512
FACES = ("console", "admin")


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    gzipped: bytes | None
    etag: str
    content_type: str


def load_asset(file: Traversable) -> Asset:
    suffix = "." + file.name.rsplit(".", 1)[-1] if "." in file.name else ""
    body = file.read_bytes()
    gzipped = None
    if suffix in COMPRESSIBLE and len(body) >= GZIP_MIN_BYTES:
        packed = gzip.compress(body, compresslevel=9, mtime=0)
        gzipped = packed if len(packed) < len(body) else None
    etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
    return Asset(body, gzipped, etag, CONTENT_TYPES.get(suffix, "application/octet-stream"))


def list_files(directory: Traversable, prefix: str = "") -> dict[str, Traversable]:
    """Every file under `directory` by its relative path (``a/b.js``); empty when it is missing."""
    if not directory.is_dir():
        return {}
    files: dict[str, Traversable] = {}
    for entry in directory.iterdir():
        if entry.name.startswith((".", "_")):
            continue
        if entry.is_dir():
            files.update(list_files(entry, f"{prefix}{entry.name}/"))
        else:
            files[prefix + entry.name] = entry
    return files


def console_csp(ws_url: str) -> str:
    url = URL(ws_url)
    ws_origin = f"{url.scheme}://{url.host}" + (f":{url.explicit_port}" if url.explicit_port else "")
    return ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "font-src 'self'; media-src 'self' data:; "
            f"connect-src 'self' {ws_origin}; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


class Pages:
    """Routes for the widget script and the console/admin single-page apps."""

    def __init__(self, ws_url: str, root: Traversable | None = None) -> None:
        self._root = root if root is not None else resources.files("kefu.web")
        self._cache: dict[tuple[str, str], Asset] = {}
        self._listing: dict[str, dict[str, Traversable]] = {}
        self._face_headers = {
            "Content-Security-Policy": console_csp(ws_url), "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff",
        }
        self._widget_headers = {"X-Content-Type-Options": "nosniff", "Cross-Origin-Resource-Policy": "cross-origin"}

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/widget.js", self.widget)
        for face in FACES:
            app.router.add_get(f"/{face}", self._redirect_to_slash)
            app.router.add_get(f"/{face}/", self.face)
            app.router.add_get(f"/{face}/{{path:.+}}", self.face)

    def _asset(self, folder: str, path: str) -> Asset | None:
        key = (folder, path)
        asset = self._cache.get(key)
        if asset is None:
            listing = self._listing.get(folder)
            if listing is None:
                listing = self._listing[folder] = list_files(self._root.joinpath(folder))
            file = listing.get(path)
            if file is None:
                return None  # not cached: hostile paths must not grow the cache
            asset = self._cache[key] = load_asset(file)
        return asset

    @staticmethod
    def _respond(request: web.Request, asset: Asset, headers: dict[str, str]) -> web.Response:
        common = {"ETag": asset.etag, "Cache-Control": "no-cache", "Vary": "Accept-Encoding", **headers}
        if asset.etag in request.headers.get("If-None-Match", ""):
            return web.Response(status=304, headers=common)
        if asset.gzipped is not None and "gzip" in request.headers.get("Accept-Encoding", ""):
            return web.Response(body=asset.gzipped, headers={
                **common, "Content-Type": asset.content_type, "Content-Encoding": "gzip"})
        return web.Response(body=asset.body, headers={**common, "Content-Type": asset.content_type})

    @staticmethod
    def _not_found() -> web.HTTPException:
        return web.HTTPNotFound(text='{"error": "not_found", "msg": "no such page"}', content_type="application/json")

    async def widget(self, request: web.Request) -> web.Response:
        asset = self._asset("widget", "widget.js")
        if asset is None:
            raise self._not_found()
        return self._respond(request, asset, self._widget_headers)

    async def _redirect_to_slash(self, request: web.Request) -> web.Response:
        raise web.HTTPFound(request.path + "/")

    async def face(self, request: web.Request) -> web.Response:
        folder = request.path.split("/")[1]
        path = request.match_info.get("path", "")
        # The app's own routes (/console/c/42) all load its index page.
        asset = self._asset(folder, path) if path else None
        if asset is None and (not path or "." not in path.rsplit("/", 1)[-1]):
            asset = self._asset(folder, "index.html")
        if asset is None:
            raise self._not_found()
        return self._respond(request, asset, self._face_headers)
