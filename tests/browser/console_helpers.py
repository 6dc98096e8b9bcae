"""Driving /console and /admin in Chromium, and a protocol-level visitor to talk to them.

The visitor here is the integration tests' independent WebSocket client (kefu_client.Client), so a
console test does not depend on the widget; the widget-to-console test uses the real widget.
"""

from __future__ import annotations

import uuid
from typing import Any

from kefu_client import Api, Client, ServerProcess
from playwright.async_api import Page, expect

CONNECTED = ".status[data-state='connected']"


async def new_agent(api: Api, **fields: Any) -> dict[str, Any]:
    """An agent with a skill of its own (so routing picks it deterministically) and its password."""
    admin = await api.admin()
    skill = f"test/{uuid.uuid4().hex[:8]}"
    username = f"agent-{uuid.uuid4().hex[:6]}"
    fields = {"skills": {skill: 1.0}, "languages": ["en", "zh-CN"], **fields}
    login = await api.create_agent(admin["token"], username, **fields)
    return {**login, "skill": skill, "password": "password-" + username}


async def console_login(page: Page, server: ServerProcess, username: str, password: str) -> None:
    await page.goto(f"{server.http}/console/")
    await page.fill("input[name=username]", username)
    await page.fill("input[name=password]", password)
    await page.click("button[type=submit]")
    await expect(page.locator(CONNECTED)).to_be_visible(timeout=10_000)


async def visitor_opens(api: Api, skill: str, text: str, **session: Any) -> tuple[Client, int]:
    """A visitor (protocol client) opens a conversation asking for `skill`; returns it and the conv id."""
    visitor = await Client.connect(await api.visitor(**session))
    await visitor.send({"t": "open", "text": text, "tags": [skill]})
    conv = (await visitor.expect("conv"))["conv"]
    return visitor, conv


async def open_and_accept(page: Page, conv: int) -> None:
    await page.click(f"#convs li[data-conv='{conv}']")
    await page.click("#accept")
    await expect(page.locator("#accept")).to_have_count(0)


async def shown_seqs(page: Page) -> list[int]:
    """The seq of every message node in the open conversation, in page order (duplicates kept)."""
    return await page.eval_on_selector_all("#messages .msg[data-seq]", "nodes => nodes.map(n => +n.dataset.seq)")


async def shown_texts(page: Page) -> list[str]:
    return await page.eval_on_selector_all("#messages .msg .text", "nodes => nodes.map(n => n.textContent)")
