"""The widget as a test sees it (a page object): Playwright locators into its shadow root."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from playwright.async_api import Page

WIDGET = "[data-kefu-widget]"


class WidgetPage:
    def __init__(self, page: Page) -> None:
        self.page = page
        root = page.locator(WIDGET)
        self.bubble = root.locator("button.bubble")
        self.badge = root.locator(".badge")
        self.panel = root.locator(".panel")
        self.title = root.locator(".head b")
        self.status = root.locator(".status")
        self.name = root.locator("form.pre input[name=name]")
        self.topic = root.locator("form.pre select[name=topic]")
        self.start = root.locator("form.pre button[type=submit]")
        self.log = root.locator(".log")
        self.rows = root.locator(".log .m")
        self.typing = root.locator(".typing")
        self.input = root.locator("form.compose textarea")
        self.again = root.locator(".panel > button.primary")

    async def open(self) -> None:
        if not await self.panel.is_visible():
            await self.bubble.click()
        await self.panel.wait_for(state="visible")

    async def start_chat(self, name: str, topic: str | None = None) -> None:
        await self.open()
        await self.name.fill(name)
        if topic is not None:
            await self.topic.select_option(topic)
        await self.start.click()
        await self.input.wait_for(state="visible")

    async def send(self, text: str) -> None:
        await self.input.fill(text)
        await self.input.press("Enter")

    async def messages(self) -> list[dict[str, Any]]:
        """Every row of the log: text, whose, state line, seq (None while not confirmed)."""
        return await self.page.evaluate("""() => {
          const root = document.querySelector('[data-kefu-widget]').shadowRoot;
          return [...root.querySelectorAll('.log .m')].map((m) => ({
            text: m.childNodes[m.classList.contains('me') ? 0 : 1].textContent,
            mine: m.classList.contains('me'),
            state: (m.querySelector('.st') || {}).textContent || null,
            who: (m.querySelector('.who') || {}).textContent || null,
            seq: m.dataset.seq ? Number(m.dataset.seq) : null,
            failed: m.classList.contains('failed'),
          }));
        }""")

    async def texts(self) -> list[str]:
        return [m["text"] for m in await self.messages()]

    async def wait_for(self, predicate: Any, timeout: float = 10.0, what: str = "condition") -> list[dict[str, Any]]:
        """Polls `messages()` until `predicate(messages)` holds."""
        deadline = time.monotonic() + timeout
        while True:
            rows = await self.messages()
            if predicate(rows):
                return rows
            if time.monotonic() > deadline:
                raise AssertionError(f"widget never showed {what}; rows: {rows}")
            await asyncio.sleep(0.1)

    async def stored(self, site_key: str) -> dict[str, Any]:
        """The widget's localStorage record."""
        return await self.page.evaluate("(k) => JSON.parse(localStorage.getItem('kefu:' + k) || '{}')", site_key)
