"""Both faces together: a visitor in the widget on a host page and an agent in /console, each in its
own browser context (separate storage, separate sockets), chat both ways; then each side reloads."""

from __future__ import annotations

import re
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import pytest
from console_helpers import CONNECTED, console_login, new_agent, shown_seqs, shown_texts
from kefu_client import Api, ServerProcess
from playwright.async_api import Browser, expect
from widget_page import WidgetPage

pytestmark = pytest.mark.timeout(180)  # a real server and browser on a shared, busy machine


async def test_widget_visitor_and_console_agent_chat_both_ways(browser: Browser, web_server: ServerProcess,
                                                             host, api: Api) -> None:
    topic = f"orders{uuid.uuid4().hex[:6]}"
    agent = await new_agent(api, name="Alice", skills={topic: 1.0})
    visitor_context = await browser.new_context(locale="en-US")
    agent_context = await browser.new_context(locale="en-US", viewport={"width": 1280, "height": 800})
    try:
        console = await agent_context.new_page()
        await console_login(console, web_server, agent["username"], agent["password"])
        page = await visitor_context.new_page()
        await page.goto(host.embed_page(web_server))
        widget = WidgetPage(page)
        await widget.start_chat("Bob", topic=topic)
        await widget.send("Hi, my order #1234 has not arrived")

        item = console.locator("#convs li").first
        await expect(item).to_contain_text("Bob")
        await item.click()
        await console.click("#accept")
        await expect(console.locator("#messages .msg .text")).to_have_text(["Hi, my order #1234 has not arrived"])
        await expect(widget.status).to_have_text("Alice is helping you")

        # The server forwards one typing notice per second per conversation and connection, counting
        # the typing-off that sending a message implies: start typing after that window.
        await page.wait_for_timeout(1100)
        await widget.input.press_sequentially("one more")  # visitor typing reaches the console
        await expect(console.locator("#typing")).to_have_text(re.compile("typing"))
        await widget.input.fill("")
        await console.locator("#composer").press_sequentially("Let me check")  # and the other way
        await expect(widget.typing).to_have_text("Alice is typing…")
        await console.fill("#composer", "Found it: it arrives tomorrow.")
        await console.press("#composer", "Enter")
        rows = await widget.wait_for(lambda r: r and r[-1]["text"] == "Found it: it arrives tomorrow.",
                                     what="the agent's reply")
        assert rows[-1]["who"] == "Alice" and not rows[-1]["mine"]
        # The widget's open panel reads the reply; the console shows the read mark on it.
        await expect(console.locator("#messages .msg[data-seq='2'] .tick")).to_contain_text("Read")
        await widget.wait_for(lambda r: r[0]["state"] == "Read", what="the console's read mark")

        await widget.send("谢谢！")
        await expect(console.locator("#messages .msg[data-seq='3']")).to_contain_text("谢谢！")

        # Reload both sides: each keeps the whole history, once.
        await console.reload()
        await page.reload()
        await expect(console.locator(CONNECTED)).to_be_visible()
        await expect(console.locator("#messages .msg")).to_have_count(3)
        assert await shown_seqs(console) == [1, 2, 3]
        widget = WidgetPage(page)
        await widget.open()
        rows = await widget.wait_for(lambda r: len(r) == 3, what="the history after a reload")
        assert [r["text"] for r in rows] == ["Hi, my order #1234 has not arrived", "Found it: it arrives tomorrow.",
                                             "谢谢！"]
        await console.fill("#composer", "Anything else?")
        await console.press("#composer", "Enter")
        await widget.wait_for(lambda r: len(r) == 4 and r[-1]["text"] == "Anything else?", what="the 4th message")
        await expect(console.locator("#messages .msg")).to_have_count(4)  # its own msg frame arrived too
        assert await shown_texts(console) == [r["text"] for r in await widget.messages()]

        await console.click("#close")
        await expect(console.locator("#convs li.ended")).to_have_count(1)
    finally:
        await visitor_context.close()
        await agent_context.close()
