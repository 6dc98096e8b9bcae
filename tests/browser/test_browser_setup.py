"""The browser-test set-up itself: Chromium starts, host pages on other origins reach the server,
and the server's origin checks hold for a real browser (CORS is enforced by Chromium, not by us)."""

from __future__ import annotations

from playwright.async_api import Page

FETCH_TOPICS = """async (url) => {
  try { const r = await fetch(url); return {status: r.status, body: await r.json()}; }
  catch (e) { return {error: String(e)}; }
}"""

OPEN_SESSION = """async ([url, site]) => {
  try {
    const r = await fetch(url, {method: 'POST', headers: {'Content-Type': 'application/json'},
                                body: JSON.stringify({site})});
    return {status: r.status, body: await r.json()};
  } catch (e) { return {error: String(e)}; }
}"""


async def test_allowed_origin_reads_topics_and_opens_a_session(page: Page, web_server, host, api) -> None:
    admin = await api.admin()
    await api.create_agent(admin["token"], "topics-agent", skills={"billing/refunds": 0.9, "shipping": 0.5})
    await page.goto(host.url("<!doctype html><html lang='en'><body>host</body></html>"))
    topics = await page.evaluate(FETCH_TOPICS, f"{web_server.http}/api/v1/sites/{web_server.site_key}/topics")
    assert topics["status"] == 200, topics
    paths = [t["path"] for t in topics["body"]["topics"]]
    assert paths == ["billing", "billing/refunds", "shipping"]
    assert not any(t["online"] for t in topics["body"]["topics"])  # nobody is connected
    session = await page.evaluate(OPEN_SESSION, [f"{web_server.http}/api/v1/visitor/session", web_server.site_key])
    assert session["status"] == 200 and session["body"]["token"], session


async def test_foreign_origin_gets_neither_topics_nor_a_session(page: Page, web_server, foreign_host) -> None:
    await page.goto(foreign_host.url("<!doctype html><html lang='en'><body>elsewhere</body></html>"))
    topics = await page.evaluate(FETCH_TOPICS, f"{web_server.http}/api/v1/sites/{web_server.site_key}/topics")
    assert "error" in topics, topics  # 403 without CORS headers: the page cannot read anything
    session = await page.evaluate(OPEN_SESSION, [f"{web_server.http}/api/v1/visitor/session", web_server.site_key])
    assert "error" in session, session  # the preflight is refused


async def test_unknown_site_has_no_topics(api) -> None:
    for key in ("s_nope", "x" * 5000, "%00", "..%2F..%2Fetc"):
        status, body = await api.request("GET", f"/api/v1/sites/{key}/topics")
        assert status == 404 and body["error"] == "not_found", (key, status, body)
