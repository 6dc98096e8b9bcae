"""Browser tests: a real `kefu serve`, Debian's Chromium driven by Playwright, and host pages on
other origins that embed the widget the way a site owner would.

Fixtures
- ``web_server`` (module): a server whose site allows the host-page origin; the site and an
  admin are created with the `kefu` CLI before the first start, so their key and password are known.
- ``host``: the host-page server (``host.url(html)``, ``host.embed_page(...)``); its origin is
  allowed. ``foreign_host``: the same on an origin the site does not allow.
- ``browser`` (per test) and ``context`` / ``page`` (a fresh context per test).
- ``api``: the integration tests' HTTP client (kefu_client.Api) against ``web_server``.

Playwright's own browser download (`playwright install`) is never used: Chromium comes from the
Debian package (scripts/ensure-system-packages.sh). Artifacts of failed tests are not kept.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

sys.path.insert(0, str(Path(__file__).parent.parent / "integration"))
sys.path.insert(0, str(Path(__file__).parent))

from kefu_client import Api, ServerProcess, free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    # Without these Chromium keeps calling home (updates, sync, safe browsing) on a closed network.
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--mute-audio",
]


class HostPages:
    """A tiny web server on its own port that serves registered pages (a site owner's website)."""

    def __init__(self) -> None:
        self.pages: dict[str, bytes] = {}
        pages = self.pages

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = pages.get(self.path.split("?")[0])
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body or b"not found")

            def log_message(self, *args: object) -> None:
                pass

        self.port = free_port()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, html: str, path: str | None = None) -> str:
        path = path or f"/page{len(self.pages)}.html"
        self.pages[path] = html.encode()
        return self.origin + path

    def embed_page(self, server: ServerProcess, *, lang: str = "en", site: str | None = None,
                   body: str = "<h1>A shop</h1><p>Some content of the host page.</p>",
                   path: str | None = None) -> str:
        """A host page with the embed snippet exactly as the README gives it."""
        html = (f'<!doctype html><html lang="{escape(lang)}"><head><meta charset="utf-8">'
                '<meta name="viewport" content="width=device-width, initial-scale=1">'
                f"<title>Host page</title></head><body>{body}"
                f'<script src="{server.http}/widget.js" data-site="{escape(site or server.site_key)}" async></script>'
                "</body></html>")
        return self.url(html, path)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _kefu_cli(data_dir: Path, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "kefu.cli", "--data-dir", str(data_dir), *args],
                          capture_output=True, text=True, timeout=60, check=True)
    return json.loads(done.stdout)


def seeded_server(tmp_path_factory: pytest.TempPathFactory, origins: list[str], **env: str) -> ServerProcess:
    """A started server whose only site allows `origins` (plus its own address)."""
    # Every browser and test client here is 127.0.0.1: the per-address anonymous limits (sessions and
    # opens per minute, tested in tests/security) would otherwise cap the whole module's tests.
    server = ServerProcess(tmp_path_factory.mktemp("kefu-web"), env={
        "KEFU_RATE_PER_S": "2000", "KEFU_RATE_BURST": "2000", "KEFU_SESSIONS_PER_MIN": "100000",
        "KEFU_OPENS_PER_MIN": "100000", "KEFU_SOCKETS_PER_ADDRESS": "10000", **env})
    server.http_port, server.ws_port = free_port(), free_port()
    own = f"http://127.0.0.1:{server.http_port}"
    args = ["site", "create", "--name", "Browser test site"]
    for origin in [own, *origins]:
        args += ["--origin", origin]
    server.site_key = _kefu_cli(server.data_dir, *args)["key"]
    server.admin_password = "admin-password-for-tests"
    _kefu_cli(server.data_dir, "admin", "create", "--site", server.site_key, "--username", "admin",
              "--password", server.admin_password, "--name", "Administrator")
    return server.start()


@pytest.fixture(scope="module")
def host() -> Iterator[HostPages]:
    pages = HostPages()
    yield pages
    pages.close()


@pytest.fixture(scope="module")
def foreign_host() -> Iterator[HostPages]:
    pages = HostPages()
    yield pages
    pages.close()


@pytest.fixture(scope="module")
def web_server(tmp_path_factory: pytest.TempPathFactory, host: HostPages) -> Iterator[ServerProcess]:
    server = seeded_server(tmp_path_factory, [host.origin])
    yield server
    server.stop()


@pytest.fixture
def api(web_server: ServerProcess) -> Api:
    return Api(web_server)


@pytest_asyncio.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                                    headless=True)
        try:
            yield launched
        finally:
            await launched.close()


@pytest_asyncio.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    ctx = await browser.new_context(locale="en-US", viewport={"width": 1280, "height": 800})
    yield ctx
    await ctx.close()


@pytest_asyncio.fixture
async def page(context: BrowserContext) -> AsyncIterator[Page]:
    """A page that fails the test on any uncaught script error (of the widget or the faces)."""
    new_page = await context.new_page()
    errors = watch_errors(new_page)
    yield new_page
    assert not errors, f"uncaught script errors: {errors}"


def watch_errors(page: Page) -> list[str]:
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(f"{error.name}: {error.message}\n{error.stack}"))
    return errors
