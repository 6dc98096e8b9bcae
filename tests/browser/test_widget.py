"""The visitor widget in Chromium against a real server, with a raw protocol client as the agent.

Screenshots go to $KEFU_SCREENSHOTS when set (the README's come from
`KEFU_SCREENSHOTS=docs/screenshots pytest tests/browser/test_widget.py`), else to a temporary dir.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kefu_client import Api, Client, ServerProcess
from playwright.async_api import Browser, Page, WebSocketRoute, expect
from widget_page import WidgetPage

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    target = Path(os.environ.get("KEFU_SCREENSHOTS") or tmp_path)
    target.mkdir(parents=True, exist_ok=True)
    return target


class Agent:
    """An agent on a raw WebSocket (the integration tests' client), and the conversations it holds."""

    def __init__(self, login: dict[str, Any], client: Client) -> None:
        self.login = login
        self.client = client
        self.convs: list[int] = []  # open ones, closed by the fixture at the end
        self.taken: set[int] = set()

    async def take(self, timeout: float = 15.0) -> int:
        """Waits for the next assigned conversation and accepts it."""
        while True:  # skip the echo of an earlier accept
            frame = await self.client.expect("conv", timeout=timeout, state="assigned")
            conv = frame["conv"]
            if conv not in self.taken:
                break
        self.taken.add(conv)
        self.convs.append(conv)
        await self.client.send({"t": "accept", "conv": conv})
        return conv

    async def say(self, conv: int, text: str, cmid: str) -> int:
        await self.client.send({"t": "send", "conv": conv, "cmid": cmid, "text": text})
        return (await self.client.expect("ack", cmid=cmid))["seq"]

    async def texts_from_visitor(self, seconds: float = 0.5) -> list[str]:
        frames = await self.client.quiet(seconds)
        self.client.backlog = [f for f in frames if not (f["t"] == "msg" and f["from"]["role"] == "visitor")]
        return [f["text"] for f in frames if f["t"] == "msg" and f["from"]["role"] == "visitor"]


@pytest.fixture
async def agent_factory(api: Api) -> AsyncIterator[Any]:
    agents: list[Agent] = []

    async def make(username: str, **fields: Any) -> Agent:
        admin = await api.admin()
        login = await api.create_agent(admin["token"], username, **fields)
        agent = Agent(login, await Client.connect(login))
        agents.append(agent)
        return agent

    yield make
    for agent in agents:  # leave nothing open for the next test's agents to inherit
        for conv in agent.convs:
            await agent.client.send({"t": "close", "conv": conv})
        await asyncio.sleep(0.1)
        await agent.client.close()


def confirmed(rows: list[dict[str, Any]]) -> list[str]:
    return [row["text"] for row in rows if row["seq"] is not None]


async def test_widget_chat_both_ways(page: Page, web_server: ServerProcess, host, agent_factory, shots) -> None:
    agent = await agent_factory("w-both", name="Alice", skills={"billing": 1.0})
    await page.goto(host.embed_page(web_server))
    widget = WidgetPage(page)
    await widget.open()
    await expect(widget.topic.locator("option")).to_have_count(2)  # "Anything" + billing
    await widget.start_chat("Bob", topic="billing")
    conv = await agent.take()

    await widget.send("Hello, I was charged twice")
    message = await agent.client.expect("msg", conv=conv)
    assert message["text"] == "Hello, I was charged twice"
    assert message["from"]["role"] == "visitor" and message["from"]["name"] == "Bob"
    rows = await widget.wait_for(lambda r: r and r[-1]["state"] == "Sent", what="the ack")
    assert rows[-1]["seq"] == message["seq"]

    await widget.input.press_sequentially("one mo")  # typing, visitor → agent
    typing = await agent.client.expect("typing", conv=conv)
    assert typing["on"] is True and typing["from"]["role"] == "visitor"
    await expect(widget.title).to_have_text("Alice")  # the agent's name, from the assignment
    await expect(widget.status).to_have_text("Alice is helping you")
    await agent.client.send({"t": "typing", "conv": conv, "on": True})  # typing, agent → visitor
    await expect(widget.typing).to_have_text("Alice is typing…")

    seq = await agent.say(conv, "Sorry about that! The refund is on its way.", "a-1")
    rows = await widget.wait_for(lambda r: r[-1]["text"].startswith("Sorry about that"), what="the reply")
    assert rows[-1] == {"text": "Sorry about that! The refund is on its way.", "mine": False, "state": None,
                        "who": "Alice", "seq": seq, "failed": False}
    await expect(widget.typing).to_have_text("")  # a message ends the typing notice
    await expect(widget.title).to_have_text("Alice")
    read = await agent.client.expect("read", conv=conv)  # the open panel marks the reply read
    assert read["seq"] == seq

    await agent.client.send({"t": "read", "conv": conv, "seq": message["seq"]})
    await widget.wait_for(lambda r: r[0]["state"] == "Read", what="the read mark")
    await widget.input.fill("")
    await page.screenshot(path=str(shots / "widget.png"))

    # Markup from the other side is text, never markup (the console's XSS corpus is its own test).
    payload = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script><b>bold</b>'
    await agent.say(conv, payload, "a-xss")
    rows = await widget.wait_for(lambda r: r[-1]["text"] == payload, what="the payload as text")
    assert await page.evaluate("""() => window.__pwned === undefined && !document.querySelector(
        '[data-kefu-widget]').shadowRoot.querySelector('.log img, .log script, .log b')""")


async def test_queue_position_then_assignment(page: Page, web_server: ServerProcess, host, agent_factory) -> None:
    await page.goto(host.embed_page(web_server))
    widget = WidgetPage(page)
    await widget.start_chat("Queued visitor")
    await expect(widget.status).to_contain_text("You are number 1 in line")
    agent = await agent_factory("w-queue", name="Carol")
    await agent.take()
    await expect(widget.status).to_have_text("Carol is helping you")


async def test_closed_conversation_then_a_new_chat(page: Page, web_server: ServerProcess, host, agent_factory) -> None:
    agent = await agent_factory("w-close", name="Heidi")
    await page.goto(host.embed_page(web_server))
    widget = WidgetPage(page)
    await widget.start_chat("Ivan")
    conv = await agent.take()
    await widget.send("thanks, that is all")
    await agent.client.expect("msg", conv=conv)
    await agent.client.send({"t": "close", "conv": conv})
    agent.convs.remove(conv)
    await expect(widget.log.locator(".note")).to_have_text("This conversation has ended")
    await expect(widget.input).to_be_hidden()
    await page.reload()  # the ended state survives a reload too
    await expect(widget.log.locator(".note")).to_have_text("This conversation has ended")
    await widget.again.click()
    await expect(widget.name).to_have_value("Ivan")  # the visitor is remembered
    await widget.start.click()
    second = await agent.take()
    assert second != conv
    await widget.send("one more question")
    message = await agent.client.expect("msg", conv=second)
    assert message["text"] == "one more question" and message["seq"] == 1
    rows = await widget.wait_for(lambda r: confirmed(r) == ["one more question"], what="a fresh log")
    assert rows[0]["seq"] == 1


async def test_reload_keeps_history_without_duplicates(page: Page, web_server: ServerProcess, host,
                                                       agent_factory) -> None:
    agent = await agent_factory("w-reload", name="Dave")
    await page.goto(host.embed_page(web_server))
    widget = WidgetPage(page)
    await widget.start_chat("Eve")
    conv = await agent.take()
    await widget.send("first from visitor")
    await agent.say(conv, "first from agent", "r-1")
    await widget.send("second from visitor")
    await agent.say(conv, "second from agent", "r-2")
    expected = ["first from visitor", "first from agent", "second from visitor", "second from agent"]
    await widget.wait_for(lambda r: confirmed(r) == expected, what="four confirmed messages")
    assert await agent.texts_from_visitor() == ["first from visitor", "second from visitor"]

    await page.reload()
    await widget.open()
    rows = await widget.wait_for(lambda r: len(r) >= 4, what="the history after reload")
    assert confirmed(rows) == expected
    assert [r["seq"] for r in rows] == sorted({r["seq"] for r in rows})
    await expect(widget.title).to_have_text("Dave")
    await agent.say(conv, "after the reload", "r-3")
    await widget.send("me too")
    rows = await widget.wait_for(lambda r: confirmed(r)[-2:] == ["after the reload", "me too"]
                                 or confirmed(r)[-2:] == ["me too", "after the reload"], what="new messages")
    assert len(confirmed(rows)) == 6 and len({r["seq"] for r in rows}) == 6
    assert await agent.texts_from_visitor() == ["me too"]  # nothing sent twice


class SocketCutter:
    """Sits between the widget and the server (page.route_web_socket): forwards frames, can cut
    the connection at the moment the server confirms the visitor's message (its ack or its own
    msg echo, whichever comes first, is lost), and can refuse reconnects."""

    def __init__(self) -> None:
        self.refuse = False
        self.cut_at_next_confirmation = False
        self.connections = 0
        self.live: list[tuple[WebSocketRoute, WebSocketRoute]] = []
        self.tasks: set[asyncio.Task[None]] = set()

    async def route(self, page_side: WebSocketRoute) -> None:
        if self.refuse:
            await page_side.close(code=4000, reason="test: network down")
            return
        self.connections += 1
        server_side = page_side.connect_to_server()
        self.live.append((page_side, server_side))

        def from_server(message: str | bytes) -> None:
            frame = json.loads(message)
            confirms = frame["t"] == "ack" or (frame["t"] == "msg" and frame["from"]["role"] == "visitor")
            if self.cut_at_next_confirmation and confirms:
                self.cut_at_next_confirmation = False
                task = asyncio.ensure_future(self.cut())
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
                return
            if self.live and self.live[-1][0] is page_side:
                page_side.send(message)

        server_side.on_message(from_server)

    async def cut(self) -> None:
        live, self.live = self.live, []
        for page_side, server_side in live:
            await server_side.close(code=4000, reason="test: cut")
            await page_side.close(code=4000, reason="test: cut")
        await asyncio.sleep(0)


async def test_dropped_socket_and_reload_lose_and_duplicate_nothing(page: Page, web_server: ServerProcess, host,
                                                          agent_factory) -> None:
    cutter = SocketCutter()
    await page.route_web_socket(re.compile(r"/ws(\?|$)"), cutter.route)
    agent = await agent_factory("w-drop", name="Frank")
    await page.goto(host.embed_page(web_server))
    widget = WidgetPage(page)
    await widget.start_chat("Grace")
    conv = await agent.take()
    await agent.say(conv, "hello Grace", "d-1")
    await widget.wait_for(lambda r: confirmed(r) == ["hello Grace"], what="the greeting")

    # 1. The socket dies exactly when the server's ack is on its way: the message is stored but
    #    the widget never hears so. It must resend with the same cmid, and the server must not
    #    deliver it twice.
    cutter.refuse = True
    cutter.cut_at_next_confirmation = True
    await widget.send("acked but the ack was lost")
    assert await agent.texts_from_visitor(1.0) == ["acked but the ack was lost"]
    await expect(widget.status).to_contain_text("reconnecting")

    # 2. While it is down: the agent talks, the visitor types two messages (queued, pending).
    await agent.say(conv, "are you still there?", "d-2")
    await widget.send("typed while offline 1")
    await widget.send("typed while offline 2")
    rows = await widget.messages()
    assert [r["state"] for r in rows if r["seq"] is None] == ["Sending"] * 3
    assert await agent.texts_from_visitor(0.5) == []
    # A reload while still offline: the unconfirmed messages come back from storage.
    await page.reload()
    await widget.open()
    rows = await widget.wait_for(lambda r: len(r) == 4, what="the outbox after the reload")
    assert [(r["text"], r["state"]) for r in rows if r["seq"] is None] == [
        ("acked but the ack was lost", "Sending"), ("typed while offline 1", "Sending"),
        ("typed while offline 2", "Sending")]

    # 3. Back online: everything arrives once, in order, on both sides.
    cutter.refuse = False
    everything = ["hello Grace", "acked but the ack was lost", "are you still there?",
                  "typed while offline 1", "typed while offline 2"]
    rows = await widget.wait_for(lambda r: len(confirmed(r)) == 5 and all(x["seq"] for x in r), timeout=30,
                                 what="all five messages confirmed")
    assert confirmed(rows) == everything
    assert [r["seq"] for r in rows] == [1, 2, 3, 4, 5]
    assert await agent.texts_from_visitor(1.0) == ["typed while offline 1", "typed while offline 2"]
    assert cutter.connections >= 2
    await expect(widget.status).not_to_contain_text("reconnecting")


async def test_foreign_origin_cannot_open_a_visitor_session(page: Page, web_server: ServerProcess, foreign_host,
                                                            api: Api) -> None:
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    await page.goto(foreign_host.embed_page(web_server))
    widget = WidgetPage(page)
    await widget.open()
    await expect(widget.topic.locator("option")).to_have_count(0)  # topics are refused too
    await widget.name.fill("Mallory")
    await widget.start.click()
    await expect(widget.status).to_have_text("Something went wrong, try again later")
    assert sockets == []
    stored = await widget.stored(web_server.site_key)
    assert not stored.get("token") and not stored.get("visitorId")
    status, _ = await api.request("POST", "/api/v1/visitor/session", body={"site": web_server.site_key},
                                  headers={"Origin": foreign_host.origin})
    assert status == 403


TOFU_CHECK = """(text) => {
  // Draws each character and a private-use character no font has (drawn as the missing-glyph
  // box). A character whose pixels equal the box's is tofu.
  const font = getComputedStyle(document.querySelector('[data-kefu-widget]').shadowRoot
                                .querySelector('.log .m')).fontFamily;
  const canvas = document.createElement('canvas');
  canvas.width = canvas.height = 40;
  const ctx = canvas.getContext('2d', {willReadFrequently: true});
  const draw = (ch) => { ctx.clearRect(0, 0, 40, 40); ctx.font = '28px ' + font; ctx.fillText(ch, 4, 32);
                         return Array.from(ctx.getImageData(0, 0, 40, 40).data).join(','); };
  const tofu = draw('\\uE000');
  const blank = draw(' ');
  return [...text].map((ch) => [ch, draw(ch) !== tofu && draw(ch) !== blank]);
}"""


async def test_chinese_page_and_text(browser: Browser, web_server: ServerProcess, host, agent_factory, shots) -> None:
    context = await browser.new_context(locale="zh-CN", viewport={"width": 390, "height": 844})  # a phone
    try:
        page = await context.new_page()
        agent = await agent_factory("w-zh", name="小王", skills={"售后/退款": 1.0})
        await page.goto(host.embed_page(web_server, lang="zh-CN", body="<h1>网上商店</h1>"))
        widget = WidgetPage(page)
        await expect(widget.bubble).to_have_attribute("aria-label", "打开在线客服")
        await widget.open()
        await expect(widget.start).to_have_text("开始对话")
        await widget.start_chat("李雷", topic="售后/退款")
        conv = await agent.take()
        await widget.send("你好，我想退货")
        assert await agent.texts_from_visitor(1.0) == ["你好，我想退货"]
        await agent.say(conv, "您好，请问订单号是多少？", "zh-1")
        rows = await widget.wait_for(lambda r: len(confirmed(r)) == 2, what="the Chinese reply")
        assert confirmed(rows) == ["你好，我想退货", "您好，请问订单号是多少？"]
        assert rows[1]["who"] == "小王" and rows[0]["state"] in ("已发送", "已读")
        box = await widget.panel.bounding_box()
        assert box is not None and box["width"] == 390  # full screen on a phone
        glyphs = await page.evaluate(TOFU_CHECK, "您好请问订单号是多少")
        assert glyphs and all(drawn for _, drawn in glyphs), glyphs
        await page.screenshot(path=str(shots / "widget-zh.png"))
    finally:
        await context.close()
