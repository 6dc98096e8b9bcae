"""Static serving of the web faces (kefu.web.pages) through a real aiohttp server on loopback."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from kefu.web.pages import Pages
from multidict import CIMultiDict

WS_URL = "ws://127.0.0.1:9999/ws"
SCRIPT = "// the widget\n" + "console.log('hello from the widget');\n" * 40


@pytest.fixture
def faces(tmp_path: Path) -> Path:
    (tmp_path / "widget").mkdir()
    (tmp_path / "widget" / "widget.js").write_text(SCRIPT)
    (tmp_path / "console" / "assets").mkdir(parents=True)
    (tmp_path / "console" / "index.html").write_text("<!doctype html><title>console</title>")
    (tmp_path / "console" / "assets" / "app.css").write_text("body{}")
    (tmp_path / "console" / ".hidden").write_text("secret")
    (tmp_path / "secret.txt").write_text("outside the faces")
    return tmp_path


@pytest.fixture
async def base_url(faces: Path) -> AsyncIterator[str]:
    app = web.Application()
    Pages(WS_URL, root=faces).add_routes(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, CIMultiDict[str], bytes]:
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        async with session.get(url, headers=headers or {}, allow_redirects=False) as response:
            return response.status, response.headers.copy(), await response.read()


async def test_widget_script_is_javascript_with_etag_and_gzip(base_url: str) -> None:
    status, headers, body = await fetch(base_url + "/widget.js", {"Accept-Encoding": "identity"})
    assert status == 200 and body.decode() == SCRIPT
    assert headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Cache-Control"] == "no-cache"
    assert "Content-Security-Policy" not in headers  # it runs inside other sites' pages
    status, zipped_headers, zipped = await fetch(base_url + "/widget.js", {"Accept-Encoding": "gzip, br"})
    assert zipped_headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(zipped).decode() == SCRIPT and len(zipped) < len(body)
    status, not_modified, empty = await fetch(base_url + "/widget.js", {"If-None-Match": headers["ETag"]})
    assert status == 304 and empty == b"" and not_modified["ETag"] == headers["ETag"]


async def test_console_pages_have_a_strict_csp(base_url: str) -> None:
    status, headers, body = await fetch(base_url + "/console/")
    assert status == 200 and b"<title>console</title>" in body
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "connect-src 'self' ws://127.0.0.1:9999;" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert headers["X-Frame-Options"] == "DENY"
    status, headers, body = await fetch(base_url + "/console/assets/app.css")
    assert status == 200 and headers["Content-Type"] == "text/css; charset=utf-8" and body == b"body{}"


async def test_app_routes_fall_back_to_the_index_page(base_url: str) -> None:
    status, headers, _ = await fetch(base_url + "/console")
    assert status == 302 and headers["Location"] == "/console/"
    status, _, body = await fetch(base_url + "/console/conversations/42")
    assert status == 200 and b"<title>console</title>" in body


@pytest.mark.parametrize("path", [
    "/console/.hidden", "/console/../secret.txt", "/console/%2e%2e/secret.txt", "/console/assets/missing.js",
    "/admin/", "/admin/index.html", "/widget/widget.js",
])
async def test_only_listed_files_are_served(base_url: str, path: str) -> None:
    status, _, body = await fetch(base_url + path)
    assert status == 404, (path, body)
    assert b"outside the faces" not in body and b"secret" not in body
