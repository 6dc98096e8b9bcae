"""The agent console in Chromium: chatting, reloads, dropped sockets, hostile text, Chinese."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import pytest
from console_helpers import (
    CONNECTED,
    console_login,
    new_agent,
    open_and_accept,
    screenshot_dir,
    shown_seqs,
    shown_texts,
    undrawn_characters,
    visitor_opens,
)
from kefu_client import Api, ServerProcess
from playwright.async_api import Browser, Page, WebSocketRoute, expect

pytestmark = pytest.mark.timeout(180)  # a real server and browser on a shared, busy machine


async def test_console_chats_both_ways_with_typing_and_read_marks_and_keeps_it_over_a_reload(
        page: Page, web_server: ServerProcess, api: Api) -> None:
    agent = await new_agent(api)
    await console_login(page, web_server, agent["username"], agent["password"])
    visitor, conv = await visitor_opens(api, agent["skill"], "Hello, where is my parcel?", name="Ada")
    item = page.locator(f"#convs li[data-conv='{conv}']")
    await expect(item).to_contain_text("Ada")
    await expect(item.locator(".badge")).to_have_text("1")  # unread until opened
    await open_and_accept(page, conv)
    await expect(item.locator(".badge")).to_be_hidden()
    await visitor.expect("read", conv=conv, seq=1)  # the console marked it read
    await visitor.expect("conv", state="assigned")

    await page.fill("#composer", "It ships today.")
    typing = await visitor.expect("typing", conv=conv)
    assert typing["on"] is True and typing["from"]["role"] == "agent"
    await page.press("#composer", "Enter")
    reply = await visitor.expect("msg", conv=conv, seq=2)
    assert reply["text"] == "It ships today." and reply["from"]["id"] == agent["agent_id"]

    await visitor.send({"t": "typing", "conv": conv, "on": True})
    await expect(page.locator("#typing")).to_have_text(re.compile("typing"))
    await visitor.send({"t": "send", "conv": conv, "cmid": "v2", "text": "Thanks!"})
    await expect(page.locator("#messages .msg[data-seq='3']")).to_contain_text("Thanks!")
    await expect(page.locator("#typing")).to_have_text("")
    await visitor.send({"t": "read", "conv": conv, "seq": 3})
    await expect(page.locator("#messages .msg[data-seq='2'] .tick")).to_contain_text("Read")

    await page.reload()
    await expect(page.locator(CONNECTED)).to_be_visible()
    await expect(page.locator("#messages .msg")).to_have_count(3)
    assert await shown_seqs(page) == [1, 2, 3]
    assert await shown_texts(page) == ["Hello, where is my parcel?", "It ships today.", "Thanks!"]
    await expect(page.locator("#accept")).to_have_count(0)  # still accepted after the reload
    await visitor.send({"t": "send", "conv": conv, "cmid": "v3", "text": "after the reload"})
    await expect(page.locator("#messages .msg[data-seq='4']")).to_contain_text("after the reload")
    assert await shown_seqs(page) == [1, 2, 3, 4]
    await visitor.close()


async def test_a_dropped_console_socket_loses_and_duplicates_nothing(
        page: Page, web_server: ServerProcess, api: Api) -> None:
    sockets: list[WebSocketRoute] = []
    network_up = asyncio.Event()
    network_up.set()

    async def through_proxy(ws: WebSocketRoute) -> None:
        if not network_up.is_set():
            await ws.close(code=4000, reason="network down")
            return
        ws.connect_to_server()
        sockets.append(ws)

    await page.route_web_socket(re.compile(r"/ws\b"), through_proxy)
    agent = await new_agent(api)
    await console_login(page, web_server, agent["username"], agent["password"])
    visitor, conv = await visitor_opens(api, agent["skill"], "first")
    await open_and_accept(page, conv)

    # The network drops: the socket closes under the console and reconnects fail for a while.
    network_up.clear()
    await sockets[-1].close(code=4000, reason="dropped")
    await expect(page.locator(".status[data-state='reconnecting']")).to_be_visible()
    for index in range(3):
        await visitor.send({"t": "send", "conv": conv, "cmid": f"gap{index}", "text": f"while you were away {index}"})
        await visitor.expect("ack", cmid=f"gap{index}")
    await page.fill("#composer", "written while offline")
    await page.press("#composer", "Enter")
    await expect(page.locator(".pending .msg[data-status='pending']")).to_have_count(1)

    network_up.set()
    await expect(page.locator(CONNECTED)).to_be_visible(timeout=30_000)
    await expect(page.locator("#messages .msg")).to_have_count(5, timeout=10_000)
    await expect(page.locator(".pending .msg")).to_have_count(0)
    assert await shown_seqs(page) == [1, 2, 3, 4, 5]
    assert (await shown_texts(page))[-1] == "written while offline"
    from_agent = [f for f in [await visitor.expect("msg", conv=conv, seq=5), *await visitor.quiet(1.0)]
                  if f["t"] == "msg" and f["from"]["role"] == "agent"]
    assert [f["text"] for f in from_agent] == ["written while offline"]  # delivered once

    # A reload right after changes nothing either: same messages, once each.
    await page.reload()
    await expect(page.locator(CONNECTED)).to_be_visible()
    await expect(page.locator("#messages .msg")).to_have_count(5)
    assert await shown_seqs(page) == [1, 2, 3, 4, 5]
    await visitor.close()


XSS_CORPUS = [
    "<script>window.__pwned = 'script'</script>",
    "<img src=x onerror=\"window.__pwned='img'\">",
    "<svg onload=\"window.__pwned='svg'\"></svg>",
    "\"><iframe srcdoc=\"<script>parent.__pwned='iframe'</script>\"></iframe>",
    "<a href=\"javascript:window.__pwned='link'\">click</a>",
    "<style>body{display:none}</style>",
    "{{constructor.constructor('window.__pwned=1')()}}",
    "&lt;b&gt;entities stay entities&lt;/b&gt; &amp; ",
    "\u202eRTL override\u202c and zero\u200bwidth",
]


async def test_hostile_visitor_text_is_shown_as_literal_text(page: Page, web_server: ServerProcess, api: Api) -> None:
    agent = await new_agent(api)
    await console_login(page, web_server, agent["username"], agent["password"])
    name = "<img src=x onerror=\"window.__pwned='name'\">"
    visitor, conv = await visitor_opens(api, agent["skill"], XSS_CORPUS[0], name=name)
    await open_and_accept(page, conv)
    for index, text in enumerate(XSS_CORPUS[1:]):
        await visitor.send({"t": "send", "conv": conv, "cmid": f"x{index}", "text": text})
    await expect(page.locator("#messages .msg")).to_have_count(len(XSS_CORPUS))
    assert await shown_texts(page) == XSS_CORPUS
    await expect(page.locator(f"#convs li[data-conv='{conv}'] .name")).to_have_text(name)
    await page.wait_for_timeout(300)  # give any injected handler the chance to run
    assert await page.evaluate("window.__pwned") is None
    injected = await page.eval_on_selector_all(
        "#messages img, #messages script, #messages svg, #messages iframe, #messages a, #messages style, "
        "#convs img, #chat img", "nodes => nodes.length")
    assert injected == 0
    await visitor.close()


async def test_chinese_console_and_text(browser: Browser, web_server: ServerProcess, api: Api,
                                        tmp_path: Path) -> None:
    context = await browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 800})
    try:
        page = await context.new_page()
        agent = await new_agent(api, name="王芳")
        await console_login(page, web_server, agent["username"], agent["password"])
        await expect(page.locator("nav.side h2").first).to_have_text("我的会话")
        admin = (await api.admin())["token"]
        await api.request("POST", "/api/v1/admin/canned", token=admin,
                          body={"shortcut": "/发货", "text": "您的包裹今天发出，预计三天内送达。"})
        visitor, conv = await visitor_opens(api, agent["skill"], "你好，我的订单什么时候发货？",
                                            name="李雷", lang="zh-CN", geo={"lat": 31.23, "lon": 121.47})
        await open_and_accept(page, conv)
        await expect(page.locator("#visitor-panel")).to_contain_text("31.230, 121.470")
        await expect(page.locator("#why")).to_contain_text("分配原因")
        await page.fill("#composer", "/发货")
        await page.click(".canned-list li:has-text('三天内送达')")
        await expect(page.locator("#composer")).to_have_value("您的包裹今天发出，预计三天内送达。")
        await page.press("#composer", "Enter")
        assert (await visitor.expect("msg", conv=conv, seq=2))["text"] == "您的包裹今天发出，预计三天内送达。"
        await visitor.send({"t": "send", "conv": conv, "cmid": "zh", "text": "太好了，谢谢！😊"})
        await expect(page.locator("#messages .msg[data-seq='3']")).to_contain_text("太好了，谢谢！😊")
        assert await undrawn_characters(page, "#messages .msg .text", "太好了谢谢您的包裹今天发出") == []
        assert await undrawn_characters(page, "#messages .msg .text", "\uE001") == ["\uE001"]  # the check works
        await page.screenshot(path=str(screenshot_dir(tmp_path) / "console.png"))
        await visitor.close()
    finally:
        await context.close()


async def test_fifty_open_conversations_stay_usable(page: Page, web_server: ServerProcess, api: Api) -> None:
    agent = await new_agent(api, capacity=60)
    await console_login(page, web_server, agent["username"], agent["password"])
    visitors = [await visitor_opens(api, agent["skill"], f"visitor {index} says hi") for index in range(50)]
    await expect(page.locator("#convs li")).to_have_count(50, timeout=20_000)
    last_visitor, last_conv = visitors[-1]
    await page.click(f"#convs li[data-conv='{last_conv}']")
    await page.click("#accept")
    await last_visitor.send({"t": "send", "conv": last_conv, "cmid": "more", "text": "still here"})
    await expect(page.locator("#messages .msg[data-seq='2']")).to_contain_text("still here")
    first_visitor, first_conv = visitors[0]
    await first_visitor.send({"t": "send", "conv": first_conv, "cmid": "ping", "text": "me too"})
    # A message in another conversation moves it to the top with an unread badge, without re-rendering
    # the list (the other 49 entries are the same DOM nodes as before).
    marker = await page.evaluate("() => { document.querySelectorAll('#convs li').forEach(n => n.__kept = 1); }")
    assert marker is None
    await first_visitor.send({"t": "send", "conv": first_conv, "cmid": "ping2", "text": "hello?"})
    await expect(page.locator("#convs li").first).to_have_attribute("data-conv", str(first_conv))
    await expect(page.locator(f"#convs li[data-conv='{first_conv}'] .badge")).to_have_text("3")
    assert await page.evaluate("() => [...document.querySelectorAll('#convs li')].every(n => n.__kept === 1)")
    assert re.match(r"^\(\d+\) ", await page.title())  # unread count in the title
    # After a reload the list is rebuilt in the same order: latest activity first.
    await page.reload()
    await expect(page.locator(CONNECTED)).to_be_visible()
    await expect(page.locator("#convs li")).to_have_count(50)
    await expect(page.locator("#convs li").first).to_have_attribute("data-conv", str(first_conv))
    await expect(page.locator("#convs li").last).to_have_attribute("data-conv", str(visitors[1][1]))
    for visitor, _ in visitors:
        await visitor.close()


async def test_sign_out_forgets_the_session_in_this_tab(page: Page, web_server: ServerProcess, api: Api) -> None:
    agent = await new_agent(api)
    await console_login(page, web_server, agent["username"], agent["password"])
    # Saved (debounced). Polled with evaluate: wait_for_function evaluates its predicate with eval, which
    # the console's CSP (no 'unsafe-eval') rightly refuses.
    for _ in range(100):
        if await page.evaluate("sessionStorage.getItem('kefu.console') !== null"):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the console never saved its session")
    await page.click("#logout")
    await expect(page.locator("form.login")).to_be_visible()
    assert await page.evaluate("sessionStorage.getItem('kefu.console')") is None
    await page.reload()
    await expect(page.locator("form.login")).to_be_visible()
    await expect(page.locator(CONNECTED)).to_have_count(0)
