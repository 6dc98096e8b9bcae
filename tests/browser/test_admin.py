"""The admin page in Chromium: agents (create, skills, disable → the console is cut off), the site's
origins, embed snippet and routing, canned replies, and the live chart."""

from __future__ import annotations

import re
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from console_helpers import CONNECTED, console_login, new_agent
from kefu_client import Api, ServerProcess
from playwright.async_api import Browser, Page, expect

SCREENSHOTS = Path(__file__).parents[2] / "docs" / "screenshots"


async def admin_login(page: Page, server: ServerProcess) -> None:
    await page.goto(f"{server.http}/admin/")
    await page.fill("input[name=username]", "admin")
    await page.fill("input[name=password]", server.admin_password)
    await page.click("button[type=submit]")
    await expect(page.locator("#agents")).to_be_visible()


async def test_admin_creates_an_agent_who_logs_in_and_disabling_it_closes_its_console(
        browser: Browser, page: Page, web_server: ServerProcess) -> None:
    await admin_login(page, web_server)
    username = f"mei-{uuid.uuid4().hex[:6]}"
    form = page.locator("#agent-form")
    await form.locator("input[name=username]").fill(username)
    await form.locator("input[name=password]").fill("a-long-password")
    await form.locator("input[name=name]").fill("韩梅梅")
    await form.locator("input[name=capacity]").fill("8")
    await form.locator("input[name=teams]").fill("support, vip")
    await form.locator("input[name=languages]").fill("zh-CN, en")
    for path, level in (("billing/refund", "0.9"), ("billing", "0.6"), ("shipping/international", "0.7")):
        await form.locator("button", has_text="Add skill").click()
        await form.locator(".skill-path").last.fill(path)
        await form.locator(".skill-level").last.fill(level)
    await page.click("#agent-submit")
    row = page.locator(f"#agents tr[data-agent='{username}']")
    await expect(row).to_contain_text("韩梅梅")
    await expect(row).to_contain_text("support, vip")
    tree = await row.locator(".skills-tree li").all_text_contents()
    assert [t.strip() for t in tree] == ["billing 0.60", "refund 0.90", "shipping", "international 0.70"]

    console_context = await browser.new_context(locale="en-US")
    try:
        console = await console_context.new_page()
        await console_login(console, web_server, username, "a-long-password")
        await expect(console.locator(".who")).to_have_text("韩梅梅")
        await page.reload()
        await expect(row.locator(".agent-status")).to_have_text("online")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SCREENSHOTS / "admin.png"), full_page=True)

        await row.locator("[data-action=disable]").click()
        await expect(row.locator(".agent-status")).to_have_text("disabled")
        # The server closed its socket (1008): the console says so and shows the sign-in form.
        await expect(console.locator("form.login")).to_be_visible(timeout=10_000)
        await expect(console.locator("form.login .error")).to_contain_text("signed out")
        await expect(console.locator(CONNECTED)).to_have_count(0)
        await console.fill("input[name=username]", username)
        await console.fill("input[name=password]", "a-long-password")
        await console.click("button[type=submit]")
        await expect(console.locator("form.login .error")).to_have_text("Wrong username or password")
    finally:
        await console_context.close()


async def test_an_agent_cannot_use_the_admin_page(page: Page, web_server: ServerProcess, api: Api) -> None:
    agent = await new_agent(api)
    await page.goto(f"{web_server.http}/admin/")
    await page.fill("input[name=username]", agent["username"])
    await page.fill("input[name=password]", agent["password"])
    await page.click("button[type=submit]")
    await expect(page.locator("form.login .error")).to_have_text("This page is for administrators")
    await expect(page.locator("#agents")).to_have_count(0)


async def test_site_origins_routing_canned_replies_and_live_chart(
        page: Page, web_server: ServerProcess, api: Api) -> None:
    await admin_login(page, web_server)
    await page.click("#tab-site")
    await expect(page.locator("#embed")).to_have_text(
        f'<script src="{web_server.http}/widget.js" data-site="{web_server.site_key}" async></script>')
    origins = page.locator("#origins")
    added = f"https://shop-{uuid.uuid4().hex[:6]}.example"
    await origins.fill((await origins.input_value()) + "\n" + added)
    await page.click("#save-origins")
    await expect(page.locator("#save-origins + span")).to_have_text("Saved")
    await page.fill("[data-weight=skill]", "0.8")
    await page.fill("#accept-timeout", "40")
    await page.click("#save-routing")
    await expect(page.locator("#save-routing + span")).to_have_text("Saved")
    admin = (await api.admin())["token"]
    _, site = await api.request("GET", "/api/v1/admin/site", token=admin)
    assert added in site["allowed_origins"]
    assert site["effective"]["weights"]["skill"] == 0.8 and site["effective"]["accept_timeout_s"] == 40
    await page.fill("#origins", "not an origin")
    await page.click("#save-origins")
    await expect(page.locator("#save-origins + span")).to_contain_text("allowed_origins")

    await page.click("#tab-canned")
    shortcut = f"/hello-{uuid.uuid4().hex[:4]}"
    await page.fill("#canned-shortcut", shortcut)
    await page.fill("#canned-text", "Hi! How can I help? <b>not bold</b>")
    await page.click("#canned-add")
    await expect(page.locator("#canned")).to_contain_text(shortcut)
    _, replies = await api.request("GET", f"/api/v1/console/canned?q={shortcut[1:]}", token=admin)
    assert [r["text"] for r in replies["replies"]] == ["Hi! How can I help? <b>not bold</b>"]

    await page.click("#tab-live")
    await expect(page.locator("#stat-connections")).to_have_text(re.compile(r"^\d+$"))
    await expect(page.locator("#stat-ack")).to_contain_text("/")
    await page.wait_for_timeout(2500)  # a second sample draws the lines
    painted = await page.evaluate("""() => {
        const c = document.querySelector('#chart');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let blue = 0; for (let i = 0; i < d.length; i += 4) if (d[i + 2] > 200 && d[i] < 100) blue++; return blue; }""")
    assert painted > 100  # the messages/s line is on the canvas
