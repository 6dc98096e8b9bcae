"""The console's HTTP endpoints (kefu.http.console_api) and the admin's (kefu.http.admin_api), against
a real server: canned replies, the visitor panel, the queue, colleagues, availability, the site
settings and the statistics endpoint. Each checks auth (401), role (403), site (404) and bad input (400).
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest
from conftest import start_server
from kefu_client import Api, Client, ServerProcess
from test_delivery import agent_session, assigned_pair


def second_site_admin(server: ServerProcess) -> tuple[str, str]:
    """Another site on the same server, with its admin (made with the CLI, as an operator would)."""
    def cli(*args: str) -> dict:
        done = subprocess.run([sys.executable, "-m", "kefu.cli", "--data-dir", str(server.data_dir), *args],
                              capture_output=True, text=True, timeout=60, check=True)
        return json.loads(done.stdout)

    key = cli("site", "create", "--name", "other shop")["key"]
    username = f"other-admin-{uuid.uuid4().hex[:6]}"
    cli("admin", "create", "--site", key, "--username", username, "--password", "other-admin-password")
    return username, "other-admin-password"


# --- canned replies ----------------------------------------------------------------------------------

async def test_canned_replies_admin_writes_agents_search(api: Api) -> None:
    admin = (await api.admin())["token"]
    agent = (await agent_session(api))["token"]
    shortcut = f"/refund-{uuid.uuid4().hex[:6]}"
    status, created = await api.request("POST", "/api/v1/admin/canned", token=admin,
                                        body={"shortcut": shortcut, "text": "退款将在 3-5 个工作日内到账 <b>"})
    assert status == 201 and created["shortcut"] == shortcut
    status, _ = await api.request("POST", "/api/v1/admin/canned", token=admin, body={"shortcut": shortcut, "text": "x"})
    assert status == 409
    status, found = await api.request("GET", "/api/v1/console/canned?q=工作日", token=agent)
    assert status == 200 and [r["id"] for r in found["replies"]] == [created["id"]]
    status, found = await api.request("GET", f"/api/v1/console/canned?q={shortcut.upper()[1:]}", token=agent)
    assert [r["text"] for r in found["replies"]] == ["退款将在 3-5 个工作日内到账 <b>"]

    # Agents read; only admins write.
    path = f"/api/v1/admin/canned/{created['id']}"
    for method, body in (("POST", {"shortcut": "/x", "text": "y"}), ("PATCH", {"text": "y"}), ("DELETE", None)):
        target = "/api/v1/admin/canned" if method == "POST" else path
        assert (await api.request(method, target, token=agent, body=body))[0] == 403
    visitor = (await api.visitor())["token"]
    assert (await api.request("GET", "/api/v1/console/canned", token=visitor))[0] == 403
    assert (await api.request("GET", "/api/v1/console/canned"))[0] == 401

    # Bad input is a 400, an unknown or malformed id a 404.
    for body in ({"shortcut": "", "text": "x"}, {"shortcut": "/a", "text": "x" * 4001}, {"shortcut": 5, "text": "x"},
                 {"text": "no shortcut"}, ["not", "an", "object"]):
        assert (await api.request("POST", "/api/v1/admin/canned", token=admin, body=body))[0] == 400
    assert (await api.request("GET", "/api/v1/console/canned?q=" + "x" * 101, token=agent))[0] == 400
    assert (await api.request("GET", "/api/v1/console/canned?limit=0", token=agent))[0] == 400
    for bad in ("999999999", "abc", "-1", "1" * 30):
        assert (await api.request("PATCH", f"/api/v1/admin/canned/{bad}", token=admin, body={"text": "y"}))[0] == 404

    status, updated = await api.request("PATCH", path, token=admin, body={"text": "Refunds take a week."})
    assert status == 200 and updated["text"] == "Refunds take a week." and updated["shortcut"] == shortcut
    assert (await api.request("DELETE", path, token=admin))[0] == 204
    assert (await api.request("DELETE", path, token=admin))[0] == 404


async def test_canned_replies_and_site_settings_stay_within_the_admins_site(api: Api, server: ServerProcess) -> None:
    admin = (await api.admin())["token"]
    status, mine = await api.request("POST", "/api/v1/admin/canned", token=admin,
                                     body={"shortcut": f"/mine-{uuid.uuid4().hex[:6]}", "text": "ours"})
    assert status == 201
    other = (await api.login(*second_site_admin(server)))["token"]
    assert (await api.request("PATCH", f"/api/v1/admin/canned/{mine['id']}", token=other, body={"text": "x"}))[0] == 404
    assert (await api.request("DELETE", f"/api/v1/admin/canned/{mine['id']}", token=other))[0] == 404
    status, theirs = await api.request("GET", "/api/v1/console/canned", token=other)
    assert status == 200 and theirs["replies"] == []
    status, site = await api.request("GET", "/api/v1/admin/site", token=other)
    assert status == 200 and site["key"] != server.site_key


# --- the visitor panel ---------------------------------------------------------------------------------

async def test_visitor_panel_shows_profile_mood_trend_and_earlier_conversations(api: Api) -> None:
    skill = f"panel/{uuid.uuid4().hex[:8]}"
    login = await agent_session(api, skills={skill: 1.0}, languages=["zh-CN", "en"])
    agent = await Client.connect(login)
    session = await api.visitor(name="Li Lei", lang="zh-CN", geo={"lat": 31.23, "lon": 121.47}, tags=["vip"])
    visitor = await Client.connect(session)
    await visitor.send({"t": "open", "text": "My order never arrived, this is terrible", "tags": [skill]})
    first = (await visitor.expect("conv"))["conv"]
    await agent.expect("conv", conv=first)
    await agent.send({"t": "accept", "conv": first})
    await visitor.send({"t": "send", "conv": first, "cmid": "2", "text": "thank you, that is great"})
    await visitor.expect("ack", cmid="2")
    await agent.send({"t": "close", "conv": first})
    await visitor.expect("conv", conv=first, state="closed")

    again = await Client.connect(await api.visitor(session["visitor_id"]))
    await again.send({"t": "open", "text": "hello again", "tags": [skill]})
    second = (await again.expect("conv"))["conv"]
    assert second != first
    await agent.expect("conv", conv=second)

    status, panel = await api.request("GET", f"/api/v1/conversations/{second}/visitor", token=login["token"])
    assert status == 200, panel
    assert panel["visitor"] == {"visitor_id": session["visitor_id"], "name": "Li Lei", "lang": "zh-CN",
                                "geo": {"lat": 31.23, "lon": 121.47}, "tags": ["vip"]}
    assert panel["conv"]["tags"] == [skill]
    assert [e["conv"] for e in panel["earlier"]] == [first]
    assert panel["earlier"][0]["state"] == "closed" and panel["earlier"][0]["messages"] == 2
    assert [p["seq"] for p in panel["mood"]["trend"]] == [1]
    status, closed = await api.request("GET", f"/api/v1/conversations/{first}/visitor", token=login["token"])
    trend = closed["mood"]["trend"]
    assert [p["seq"] for p in trend] == [1, 2]
    assert trend[0]["p_neg"] > trend[1]["p_neg"]  # the complaint scores worse than the thanks

    # Only the conversation's agent (and admins of the site) may look; everyone else gets a 404.
    other = await agent_session(api)
    assert (await api.request("GET", f"/api/v1/conversations/{second}/visitor", token=other["token"]))[0] == 404
    admin = (await api.admin())["token"]
    assert (await api.request("GET", f"/api/v1/conversations/{second}/visitor", token=admin))[0] == 200
    assert (await api.request("GET", f"/api/v1/conversations/{second}/visitor", token=session["token"]))[0] == 403
    for bad in ("0", "x", "99999999", str(2**60)):
        assert (await api.request("GET", f"/api/v1/conversations/{bad}/visitor", token=login["token"]))[0] == 404


# --- queue, colleagues, availability ---------------------------------------------------------------

@pytest.fixture
def lonely_server(tmp_path_factory: pytest.TempPathFactory):
    """A server of its own: the queue and availability depend on exactly which agents are online."""
    proc = start_server(tmp_path_factory, KEFU_PONG_TIMEOUT_S="3")
    yield proc
    proc.stop()


async def test_queue_availability_and_colleagues(lonely_server: ServerProcess) -> None:
    api = Api(lonely_server)
    login = await agent_session(api, capacity=5)
    assert (await api.request("PUT", "/api/v1/console/availability", token=login["token"],
                              body={"status": "away"}))[0] == 409  # not connected yet
    agent = await Client.connect(login)
    for bad in ({"status": "busy"}, {}, {"status": None}):
        assert (await api.request("PUT", "/api/v1/console/availability", token=login["token"], body=bad))[0] == 400
    visitor_session = await api.visitor()
    assert (await api.request("PUT", "/api/v1/console/availability", token=visitor_session["token"],
                              body={"status": "away"}))[0] == 403

    status, answer = await api.request("PUT", "/api/v1/console/availability", token=login["token"],
                                       body={"status": "away"})
    assert status == 200 and answer["status"] == "away"
    visitor = await Client.connect(visitor_session)
    await visitor.send({"t": "open", "text": "anyone there?"})
    waiting = await visitor.expect("conv")
    assert waiting["state"] == "queued"
    status, queue = await api.request("GET", "/api/v1/console/queue", token=login["token"])
    assert status == 200 and queue["length"] == 1
    assert queue["queued"][0]["conv"] == waiting["conv"] and queue["queued"][0]["position"] == 1
    assert "text" not in queue["queued"][0]  # metadata only: the conversation is nobody's yet
    assert not [f for f in await agent.quiet(0.5) if f["t"] == "conv"]  # away: offered nothing

    status, colleagues = await api.request("GET", "/api/v1/console/agents", token=login["token"])
    assert status == 200
    assert {(a["agent_id"], a["online"]) for a in colleagues["agents"]} >= {(login["agent_id"], True)}
    assert "password_hash" not in json.dumps(colleagues) and "username" not in colleagues["agents"][0]

    assert (await api.request("PUT", "/api/v1/console/availability", token=login["token"],
                              body={"status": "online"}))[0] == 200
    offered = await agent.expect("conv", conv=waiting["conv"])
    assert offered["state"] == "assigned" and offered["why"]["agent"] == login["agent_id"]
    status, queue = await api.request("GET", "/api/v1/console/queue", token=login["token"])
    assert queue == {"length": 0, "queued": []}
    for path in ("/api/v1/console/queue", "/api/v1/console/agents"):
        assert (await api.request("GET", path, token=visitor_session["token"]))[0] == 403
        assert (await api.request("GET", path, token="v1.forged.token"))[0] == 401


# --- the admin's site and statistics ----------------------------------------------------------------

async def test_site_settings_origins_and_routing(api: Api, server: ServerProcess) -> None:
    admin = (await api.admin())["token"]
    status, site = await api.request("GET", "/api/v1/admin/site", token=admin)
    assert status == 200 and site["key"] == server.site_key
    assert f'data-site="{server.site_key}"' in site["embed"] and "/widget.js" in site["embed"]
    assert site["effective"]["ring_schedule"][0][0] == 0

    origin = "https://shop-" + uuid.uuid4().hex[:6] + ".example"
    body = {"site": server.site_key}
    assert (await api.request("POST", "/api/v1/visitor/session", body=body, headers={"Origin": origin}))[0] == 403
    status, site = await api.request("PATCH", "/api/v1/admin/site", token=admin,
                                     body={"allowed_origins": [*site["allowed_origins"], origin, origin]})
    assert status == 200 and site["allowed_origins"].count(origin) == 1
    assert (await api.request("POST", "/api/v1/visitor/session", body=body, headers={"Origin": origin}))[0] == 200

    routing = {"weights": {"skill": 0.9, "geo": 0.05}, "ring_schedule": [[0, 1], [5, 0.5], [20, 0]],
               "accept_timeout_s": 45}
    status, site = await api.request("PATCH", "/api/v1/admin/site", token=admin, body={"routing": routing})
    assert status == 200, site
    assert site["effective"]["weights"]["skill"] == 0.9 and site["effective"]["weights"]["sentiment"] == 0.2
    assert site["effective"]["ring_schedule"] == [[0, 1], [5, 0.5], [20, 0]]
    assert site["effective"]["accept_timeout_s"] == 45

    for bad in ({"allowed_origins": ["javascript:alert(1)"]}, {"allowed_origins": ["https://a.example/path"]},
                {"allowed_origins": "https://a.example"}, {"allowed_origins": ["https://a.example"] * 51},
                {"routing": {"ring_schedule": [[10, 1]]}},  # must start at 0 s
                {"routing": {"ring_schedule": [[0, 1], [30, 0.5], [10, 0]]}},  # out of order
                {"routing": {"weights": {"skill": -1}}}, {"routing": {"weights": {"charm": 1}}},
                {"routing": {"weights": {"skill": "high"}}}, {"routing": {"max_queue": 1}},
                {"routing": {"accept_timeout_s": 0}}, {"routing": []}, {"name": "renamed"}):
        status, error = await api.request("PATCH", "/api/v1/admin/site", token=admin, body=bad)
        assert status == 400, (bad, error)
    status, site = await api.request("GET", "/api/v1/admin/site", token=admin)
    assert site["effective"]["ring_schedule"] == [[0, 1], [5, 0.5], [20, 0]]  # refused changes changed nothing

    agent = (await agent_session(api))["token"]
    for method in ("GET", "PATCH"):
        assert (await api.request(method, "/api/v1/admin/site", token=agent, body={}))[0] == 403
    assert (await api.request("GET", "/api/v1/admin/site"))[0] == 401


async def test_routing_settings_survive_a_restart(tmp_path_factory: pytest.TempPathFactory) -> None:
    proc = start_server(tmp_path_factory)
    try:
        api = Api(proc)
        admin = (await api.admin())["token"]
        routing = {"ring_schedule": [[0, 1], [2, 0]], "accept_timeout_s": 12}
        assert (await api.request("PATCH", "/api/v1/admin/site", token=admin, body={"routing": routing}))[0] == 200
        proc.stop()
        proc.start()
        status, site = await api.request("GET", "/api/v1/admin/site", token=(await api.admin())["token"])
        assert status == 200 and site["effective"]["ring_schedule"] == [[0, 1], [2, 0]]
        assert site["effective"]["accept_timeout_s"] == 12
    finally:
        proc.stop()


async def test_stats_for_the_live_view(api: Api) -> None:
    visitor, _agent, conv, _ = await assigned_pair(api)
    for index in range(5):
        await visitor.send({"t": "send", "conv": conv, "cmid": f"s{index}", "text": f"message {index}"})
        await visitor.expect("ack", cmid=f"s{index}")
    admin = (await api.admin())["token"]
    status, stats = await api.request("GET", "/api/v1/admin/stats", token=admin)
    assert status == 200
    assert stats["connections"] >= 2 and stats["agents_online"] >= 1 and stats["messages_acked"] >= 6
    for key in ("ack", "delivery"):
        histogram = stats[key]
        assert sum(histogram["counts"]) == histogram["count"] > 0
        assert len(histogram["counts"]) == len(histogram["bounds_ms"]) + 1
        assert histogram["p50_ms"] <= histogram["p99_ms"]
    assert stats["queue_length"] >= 0
    assert (await api.request("GET", "/api/v1/admin/stats", token=(await agent_session(api))["token"]))[0] == 403
