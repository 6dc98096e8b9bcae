"""Conversation lifecycle: queue with position and ETA, assignment when an agent frees up, transfer."""

from __future__ import annotations

import uuid

from conftest import start_server
from kefu_client import Api, Client
from test_delivery import agent_session, assigned_pair


async def test_queue_then_assignment_when_capacity_frees(tmp_path_factory) -> None:
    proc = start_server(tmp_path_factory, KEFU_PONG_TIMEOUT_S="3")  # the router ticks every second
    try:
        api = Api(proc)
        first = await Client.connect(await api.visitor())
        second = await Client.connect(await api.visitor())
        await first.send({"t": "open", "text": "first in line"})
        queued = await first.expect("conv")
        # No agent online: a position, but no ETA to promise.
        assert queued["state"] == "queued" and queued["position"] == 1 and "eta_s" not in queued
        await second.send({"t": "open"})
        assert (await second.expect("conv"))["position"] == 2
        # The visitor may write while waiting; the message is stored and delivered on assignment.
        await first.send({"t": "send", "conv": queued["conv"], "cmid": "wait", "text": "still there?"})
        assert (await first.expect("ack", cmid="wait"))["seq"] == 2
        login = await agent_session(api, capacity=1)
        agent = await Client.connect(login)
        assigned = await agent.expect("conv", conv=queued["conv"])
        assert assigned["agent"] == login["agent_id"] and assigned["why"]["reason"]
        history = [(await agent.expect("msg", conv=queued["conv"]))["text"] for _ in range(2)]
        assert history == ["first in line", "still there?"]
        assert (await agent.expect("replayed", conv=queued["conv"]))["last_seq"] == 2
        assert (await first.expect("conv", state="assigned"))["agent"] == login["agent_id"]
        # Capacity 1: the second visitor moves to the head of the queue, now with an ETA, and waits
        # until the first conversation closes.
        update = await second.expect("conv", state="queued", position=1, timeout=10)
        assert update["eta_s"] > 0
        assert not [f for f in await second.quiet(0.3) if f.get("state") == "assigned"]
        await agent.send({"t": "close", "conv": queued["conv"]})
        await first.expect("conv", state="closed")
        assert (await second.expect("conv", state="assigned"))["agent"] == login["agent_id"]
    finally:
        proc.stop()


async def test_open_twice_returns_the_same_conversation(api: Api) -> None:
    visitor, _agent, conv, _ = await assigned_pair(api)
    await visitor.send({"t": "open", "text": "again"})
    again = await visitor.expect("conv")
    assert again["conv"] == conv and again["state"] == "assigned"
    second_tab = await Client.connect(await api.visitor(visitor.welcome["who"]["id"]))
    assert [c["conv"] for c in second_tab.welcome["convs"]] == [conv]


async def test_transfer_to_another_agent(api: Api) -> None:
    visitor, first_agent, conv, _ = await assigned_pair(api)
    second_login = await agent_session(api)
    second_agent = await Client.connect(second_login)
    await first_agent.send({"t": "transfer", "conv": conv, "to_agent": second_login["agent_id"]})
    moved = await visitor.expect("conv", conv=conv, state="transferred")
    assert moved["agent"] == second_login["agent_id"]
    assert (await first_agent.expect("conv", conv=conv, state="transferred"))["agent"] == second_login["agent_id"]
    offered = await second_agent.expect("conv", conv=conv)
    assert offered["agent"] == second_login["agent_id"] and "why" in offered
    assert (await second_agent.expect("msg", conv=conv))["seq"] == 1
    await second_agent.send({"t": "accept", "conv": conv})
    await visitor.expect("conv", conv=conv, state="assigned", agent=second_login["agent_id"])
    await first_agent.send({"t": "send", "conv": conv, "cmid": "gone", "text": "still mine?"})
    assert (await first_agent.expect("error"))["code"] == "not_found"
    await second_agent.send({"t": "send", "conv": conv, "cmid": "hi", "text": "I'll take it from here"})
    assert (await visitor.expect("msg", conv=conv, cmid="hi"))["from"]["id"] == second_login["agent_id"]


async def test_visitors_cannot_do_agent_actions(api: Api) -> None:
    visitor, agent, conv, _agent_login = await assigned_pair(api)
    for frame in ({"t": "accept", "conv": conv}, {"t": "transfer", "conv": conv, "to_skill": "x"}):
        await visitor.send(frame)
        assert (await visitor.expect("error"))["code"] == "forbidden"
    await agent.send({"t": "open"})
    assert (await agent.expect("error"))["code"] == "forbidden"
    await agent.send({"t": "transfer", "conv": conv, "to_agent": "a_nobody"})
    assert (await agent.expect("error"))["code"] == "not_found"
    await agent.send({"t": "transfer", "conv": conv})
    assert (await agent.expect("error"))["code"] == "bad_frame"


async def test_unaccepted_offer_is_rerouted_after_the_accept_timeout(tmp_path_factory) -> None:
    proc = start_server(tmp_path_factory, KEFU_ACCEPT_TIMEOUT_S="1", KEFU_PONG_TIMEOUT_S="3")
    try:
        api = Api(proc)
        logins = [await agent_session(api, skills={"billing/refund": 1.0}) for _ in range(2)]
        agents = [await Client.connect(login) for login in logins]
        visitor = await Client.connect(await api.visitor())
        await visitor.send({"t": "open", "text": "refund please", "tags": ["billing/refund"]})
        first = await visitor.expect("conv", state="assigned")
        index = [login["agent_id"] for login in logins].index(first["agent"])
        sleeper, other = agents[index], agents[1 - index]
        # The first agent never accepts; after the timeout the other one gets the offer.
        offered = await other.expect("conv", conv=first["conv"], timeout=10)
        assert offered["why"]["reason"] == "reroute:accept_timeout"
        assert offered["agent"] == logins[1 - index]["agent_id"]
        assert (await sleeper.expect("conv", conv=first["conv"], state="transferred"))["agent"] == offered["agent"]
        await visitor.expect("conv", state="transferred", agent=offered["agent"])
        await sleeper.send({"t": "send", "conv": first["conv"], "cmid": "late", "text": "sorry, here now"})
        assert (await sleeper.expect("error"))["code"] == "not_found"
    finally:
        proc.stop()


async def test_returning_visitor_goes_back_to_its_last_agent(api: Api) -> None:
    visitor, agent, conv, agent_login = await assigned_pair(api)
    rival = await Client.connect(await agent_session(api))  # idle the longest from now on
    await agent.send({"t": "close", "conv": conv})
    await visitor.expect("conv", conv=conv, state="closed")
    again = await Client.connect(await api.visitor(visitor.welcome["who"]["id"]))
    await again.send({"t": "open", "text": "me again"})
    reopened = await again.expect("conv", state="assigned")
    assert reopened["conv"] != conv and reopened["agent"] == agent_login["agent_id"]
    offered = await agent.expect("conv", conv=reopened["conv"])
    assert offered["why"]["reason"] in ("preferred", "sticky")  # last agent, from storage or memory
    assert not [f for f in await rival.quiet(0.2) if f.get("conv") == reopened["conv"]]


async def test_angry_visitor_is_escalated_to_a_de_escalator(api: Api) -> None:
    skill = f"test/{uuid.uuid4().hex[:8]}"
    novice_login = await agent_session(api, skills={skill: 1.0, "deescalation": 0.1})
    novice = await Client.connect(novice_login)
    visitor = await Client.connect(await api.visitor())
    await visitor.send({"t": "open", "text": "Hello, I have a question about my order", "tags": [skill]})
    conv = (await novice.expect("conv", state="assigned"))["conv"]
    await novice.send({"t": "accept", "conv": conv})
    expert_login = await agent_session(api, skills={skill: 0.9, "deescalation": 0.95})
    expert = await Client.connect(expert_login)
    for i, text in enumerate(["This is terrible, the worst service ever!",
                              "I am furious, you people are useless and rude.",
                              "Awful. Refund me now, I hate this horrible company!"]):
        await visitor.send({"t": "send", "conv": conv, "cmid": f"angry{i}", "text": text})
        await visitor.expect("ack", cmid=f"angry{i}")
    offered = await expert.expect("conv", conv=conv, timeout=5)
    assert offered["why"]["reason"] == "escalation"
    assert (await visitor.expect("conv", conv=conv, state="transferred"))["agent"] == expert_login["agent_id"]
    status, body = await api.request("GET", f"/api/v1/conversations/{conv}/routing", token=expert_login["token"])
    assert status == 200 and [d["reason"] for d in body["decisions"]][-1] == "escalation"


async def test_skill_change_takes_effect_for_routing_at_once(api: Api) -> None:
    admin = await api.admin()
    skill = f"test/{uuid.uuid4().hex[:8]}"
    login = await agent_session(api, skills={"other/thing": 1.0})
    agent = await Client.connect(login)
    status, _ = await api.request("PATCH", f"/api/v1/admin/agents/{login['agent_id']}", token=admin["token"],
                                  body={"skills": {skill: 1.0}})
    assert status == 200
    visitor = await Client.connect(await api.visitor())
    await visitor.send({"t": "open", "text": "hi", "tags": [skill]})
    offered = await agent.expect("conv", state="assigned")
    assert offered["why"]["top"][0]["skill"] == 1.0


async def test_after_a_restart_held_conversations_still_fill_capacity(tmp_path_factory) -> None:
    proc = start_server(tmp_path_factory)
    api = Api(proc)
    login = await agent_session(api, capacity=1)
    agent = await Client.connect(login)
    first = await Client.connect(await api.visitor())
    await first.send({"t": "open", "text": "hello"})
    conv = (await agent.expect("conv", state="assigned"))["conv"]
    await agent.send({"t": "accept", "conv": conv})
    await first.expect("conv", state="assigned")
    proc.stop()
    again = type(proc)(proc.data_dir, env=proc.env, http_port=proc.http_port, ws_port=proc.ws_port).start()
    again.site_key, again.admin_password = proc.site_key, proc.admin_password
    try:
        api = Api(again)
        agent = await Client.connect(await api.login(login["username"], "password-" + login["username"]))
        assert [c["conv"] for c in agent.welcome["convs"]] == [conv]
        second = await Client.connect(await api.visitor())
        await second.send({"t": "open", "text": "me too"})
        assert (await second.expect("conv"))["state"] == "queued"  # capacity 1 is still taken
    finally:
        again.stop()
