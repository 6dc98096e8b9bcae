"""Send, ack, deliver, retry and resume over real loopback connections (both subprotocols)."""

from __future__ import annotations

import itertools
import uuid

import pytest
from kefu_client import Api, Client

_names = itertools.count()


async def agent_session(api: Api, **fields) -> dict:
    admin = await api.admin()
    return await api.create_agent(admin["token"], f"agent{next(_names)}-{uuid.uuid4().hex[:6]}", **fields)


async def assigned_pair(api: Api, *, binary_visitor=False, binary_agent=False, capacity=50):
    """An online agent and a visitor whose new conversation the router assigned to it: the agent
    holds a skill nobody else has and the visitor asks for it, so the choice is deterministic.
    Returns (visitor client, agent client, conv id, agent login)."""
    skill = f"test/{uuid.uuid4().hex[:10]}"
    agent_login = await agent_session(api, capacity=capacity, skills={skill: 1.0})
    agent = await Client.connect(agent_login, binary=binary_agent)
    visitor = await Client.connect(await api.visitor(), binary=binary_visitor)
    await visitor.send({"t": "open", "text": "hello, I need help", "tags": [skill]})
    conv_frame = await visitor.expect("conv")
    conv = conv_frame["conv"]
    assigned = await agent.expect("conv", conv=conv)
    assert assigned["state"] == "assigned" and assigned["agent"] == agent_login["agent_id"]
    assert assigned["why"]["top"][0]["skill"] == 1.0
    await agent.send({"t": "accept", "conv": conv})
    return visitor, agent, conv, agent_login


@pytest.mark.parametrize("binary_visitor,binary_agent", [(False, False), (True, True), (False, True)])
async def test_send_ack_deliver(api: Api, binary_visitor: bool, binary_agent: bool) -> None:
    visitor, agent, conv, _ = await assigned_pair(api, binary_visitor=binary_visitor, binary_agent=binary_agent)
    opening = await agent.expect("msg", conv=conv)
    assert opening["seq"] == 1 and opening["text"] == "hello, I need help"
    await visitor.send({"t": "send", "conv": conv, "cmid": "v-1", "text": "订单还没到，怎么回事？",
                        "meta": {"k": [1, 2]}})
    ack = await visitor.expect("ack")
    assert ack == {"t": "ack", "cmid": "v-1", "conv": conv, "seq": 2, "ts": ack["ts"]}
    msg = await agent.expect("msg", conv=conv, seq=2)
    assert msg["text"] == "订单还没到，怎么回事？" and msg["cmid"] == "v-1" and msg["meta"] == {"k": [1, 2]}
    assert msg["from"]["role"] == "visitor" and msg["kind"] == "text"
    await agent.send({"t": "send", "conv": conv, "cmid": "a-1", "text": "Let me check."})
    assert (await agent.expect("ack"))["seq"] == 3
    reply = await visitor.expect("msg", conv=conv, seq=3)
    assert reply["from"]["role"] == "agent" and reply["text"] == "Let me check."
    for client in (visitor, agent):
        await client.close()


async def test_retried_cmid_returns_same_seq_and_is_delivered_once(api: Api) -> None:
    visitor, agent, conv, _ = await assigned_pair(api)
    await agent.expect("msg", conv=conv, seq=1)
    for _ in range(3):
        await visitor.send({"t": "send", "conv": conv, "cmid": "same", "text": "once"})
    seqs = {(await visitor.expect("ack", cmid="same"))["seq"] for _ in range(3)}
    assert seqs == {2}
    frames = await agent.quiet(0.5)
    assert [f["seq"] for f in frames if f["t"] == "msg"] == [2]
    await visitor.send({"t": "send", "conv": conv, "cmid": "next", "text": "twice"})
    assert (await visitor.expect("ack", cmid="next"))["seq"] == 3


async def test_every_participant_sees_gap_free_order(api: Api) -> None:
    visitor, agent, conv, _ = await assigned_pair(api)
    for i in range(40):
        sender = visitor if i % 2 else agent
        await sender.send({"t": "send", "conv": conv, "cmid": f"m{i}", "text": f"message {i}"})
    for client in (visitor, agent):
        seqs = []
        while len(seqs) < 40:
            frame = await client.recv()
            if frame["t"] == "msg" and frame["seq"] > 1:
                seqs.append(frame["seq"])
        assert seqs == list(range(2, 42))


@pytest.mark.parametrize("binary", [False, True])
async def test_reconnect_resume_has_no_gap_and_no_duplicate(api: Api, binary: bool) -> None:
    visitor, agent, conv, _ = await assigned_pair(api)
    session = await api.visitor(visitor.welcome["who"]["id"])
    await visitor.expect("msg", conv=conv, seq=1)
    await visitor.close()
    for i in range(5):
        await agent.send({"t": "send", "conv": conv, "cmid": f"away{i}", "text": f"while you were away {i}"})
        await agent.expect("ack", cmid=f"away{i}")
    back = await Client.connect(session, binary=binary, resume={conv: 1})
    assert {"conv": conv, "last_seq": 6, "state": "assigned"} in back.welcome["convs"]
    replay = []
    while True:
        frame = await back.recv()
        if frame["t"] == "replayed":
            break
        replay.append(frame)
    assert [f["seq"] for f in replay] == [2, 3, 4, 5, 6]
    assert frame == {"t": "replayed", "conv": conv, "last_seq": 6, "limited": False}
    await agent.send({"t": "send", "conv": conv, "cmid": "live", "text": "live again"})
    assert (await back.expect("msg", conv=conv))["seq"] == 7
    assert not [f for f in await back.quiet(0.3) if f["t"] == "msg"]


async def test_returning_visitor_keeps_its_id(api: Api) -> None:
    first = await api.visitor(name="Ana")
    again = await api.visitor(first["visitor_id"])
    assert again["visitor_id"] == first["visitor_id"]
    stranger = await api.visitor("v_does-not-exist")
    assert stranger["visitor_id"] != "v_does-not-exist"


async def test_typing_is_relayed_and_rate_limited_and_read_marks_relay(api: Api) -> None:
    visitor, agent, conv, _ = await assigned_pair(api)
    await agent.expect("msg", conv=conv, seq=1)
    for _ in range(5):
        await visitor.send({"t": "typing", "conv": conv, "on": True})
    frames = await agent.quiet(0.5)
    typing = [f for f in frames if f["t"] == "typing"]
    assert len(typing) == 1 and typing[0]["on"] is True and typing[0]["from"]["role"] == "visitor"
    await agent.send({"t": "read", "conv": conv, "seq": 1})
    read = await visitor.expect("read", conv=conv)
    assert read["seq"] == 1 and read["from"]["role"] == "agent"


async def test_history_over_http(api: Api) -> None:
    visitor, _agent, conv, agent_login = await assigned_pair(api)
    await visitor.send({"t": "send", "conv": conv, "cmid": "h1", "text": "one"})
    await visitor.expect("ack", cmid="h1")
    session_token = (await api.visitor(visitor.welcome["who"]["id"]))["token"]
    status, body = await api.request("GET", f"/api/v1/conversations/{conv}/messages?after_seq=0&limit=10",
                                     token=session_token)
    assert status == 200 and [m["seq"] for m in body["messages"]] == [1, 2]
    status, body = await api.request("GET", f"/api/v1/conversations/{conv}/messages?after_seq=1",
                                     token=agent_login["token"])
    assert status == 200 and [m["text"] for m in body["messages"]] == ["one"]
    status, body = await api.request("GET", f"/api/v1/conversations/{conv}/routing", token=agent_login["token"])
    assert status == 200 and body["decisions"][0]["agent"] == agent_login["agent_id"]


async def test_close_notifies_participants(api: Api) -> None:
    visitor, agent, conv, _ = await assigned_pair(api)
    await agent.send({"t": "close", "conv": conv})
    assert (await visitor.expect("conv", conv=conv, state="closed"))["state"] == "closed"
    await visitor.send({"t": "send", "conv": conv, "cmid": "late", "text": "hello?"})
    error = await visitor.expect("error")
    assert error["code"] in ("conflict", "not_found") and error["ref"] == "late"
