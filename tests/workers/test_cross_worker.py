"""A visitor and its agent on different worker processes: routing, presence, ordered gap-free delivery."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import websockets
from kefu_client import Api, Client
from test_delivery import agent_session
from workers_client import WorkersServer, on_worker


async def pinned_pair(api: Api, agent_url: str, visitor_url: str, *, binary_agent: bool = False,
                      binary_visitor: bool = False) -> tuple[Client, Client, int, dict]:
    """An agent on one worker, a visitor on another; the router (in the control process) assigns the
    visitor's conversation to that agent: presence crossed the process boundary."""
    skill = f"test/{uuid.uuid4().hex[:10]}"
    login = await agent_session(api, capacity=50, skills={skill: 1.0})
    agent = await Client.connect(on_worker(login, agent_url), binary=binary_agent)
    visitor = await Client.connect(on_worker(await api.visitor(), visitor_url), binary=binary_visitor)
    await visitor.send({"t": "open", "text": "hello from another worker", "tags": [skill]})
    conv = (await visitor.expect("conv"))["conv"]
    assigned = await agent.expect("conv", conv=conv)
    assert assigned["state"] == "assigned" and assigned["agent"] == login["agent_id"]
    await agent.send({"t": "accept", "conv": conv})
    return visitor, agent, conv, login


async def test_workers_listen_on_their_own_ports_in_test_mode(workers_server: WorkersServer) -> None:
    urls = workers_server.worker_urls()
    assert len(urls) == 2 and urls[0] != urls[1]
    assert sorted(workers_server.worker_pids()) == [0, 1]


async def test_visitor_and_agent_on_different_workers_get_ordered_gap_free_delivery(
        workers_server: WorkersServer) -> None:
    api = Api(workers_server)
    first, second = workers_server.worker_urls()
    visitor, agent, conv, _ = await pinned_pair(api, agent_url=first, visitor_url=second,
                                                binary_visitor=True)
    assert (await agent.expect("msg", conv=conv))["seq"] == 1
    for n in range(50):
        sender = visitor if n % 2 else agent
        await sender.send({"t": "send", "conv": conv, "cmid": f"m{n}", "text": f"message {n}"})
    seen: dict[str, list[int]] = {"visitor": [], "agent": []}
    for name, client in (("visitor", visitor), ("agent", agent)):
        while len(seen[name]) < 50:
            frame = await client.recv(10)
            if frame["t"] == "msg" and frame["conv"] == conv:
                seen[name].append(frame["seq"])
    # Both sides see every message of both workers, in one seq order, without gaps.
    assert seen["visitor"] == seen["agent"] == list(range(2, 52))
    for client in (visitor, agent):
        await client.close()


async def test_sends_and_typing_across_workers_take_the_native_data_plane(workers_server: WorkersServer) -> None:
    """Workers forward frames untouched; the control process's data plane takes send and typing (its
    counters move), and both formats come out right on the other worker."""
    api = Api(workers_server)
    first, second = workers_server.worker_urls()
    visitor, agent, conv, _ = await pinned_pair(api, agent_url=first, visitor_url=second, binary_agent=True)
    await agent.expect("msg", conv=conv, seq=1)
    before = await _dataplane_metrics(api)
    for i in range(5):
        await visitor.send({"t": "send", "conv": conv, "cmid": f"n{i}", "text": f"native {i} 你好"})
        assert (await visitor.expect("ack"))["seq"] == i + 2
    await visitor.send({"t": "typing", "conv": conv, "on": True})
    msgs = [await agent.expect("msg", conv=conv, seq=seq) for seq in range(2, 7)]
    assert [m["text"] for m in msgs] == [f"native {i} 你好" for i in range(5)]
    assert (await agent.expect("typing", conv=conv))["on"] is True
    # A retried cmid is acked with its seq and delivered to nobody.
    await visitor.send({"t": "send", "conv": conv, "cmid": "n0", "text": "native 0 你好"})
    assert (await visitor.expect("ack"))["seq"] == 2
    after = await _dataplane_metrics(api)
    assert after["kefu_dataplane_submitted"] - before["kefu_dataplane_submitted"] == 6
    assert after["kefu_dataplane_deduplicated"] - before["kefu_dataplane_deduplicated"] == 1
    assert after["kefu_dataplane_relayed"] - before["kefu_dataplane_relayed"] == 1
    await agent.send({"t": "send", "conv": conv, "cmid": "a1", "text": "from the binary side"})
    assert (await visitor.expect("msg", conv=conv, cmid="a1"))["text"] == "from the binary side"
    redelivered = [f for f in await agent.quiet(0.3) if f["t"] == "msg" and f["cmid"] == "n0"]
    assert redelivered == []
    for client in (visitor, agent):
        await client.close()


async def _dataplane_metrics(api: Api) -> dict[str, float]:
    status, text = await api.request("GET", "/metrics")
    assert status == 200
    return {name: float(value) for name, value in
            (line.split() for line in text.splitlines() if line.startswith("kefu_dataplane_"))}


async def test_typing_and_read_cross_workers(workers_server: WorkersServer) -> None:
    api = Api(workers_server)
    first, second = workers_server.worker_urls()
    visitor, agent, conv, _ = await pinned_pair(api, agent_url=second, visitor_url=first)
    await visitor.send({"t": "typing", "conv": conv, "on": True})
    assert (await agent.expect("typing", conv=conv))["on"] is True
    await agent.expect("msg", conv=conv, seq=1)
    await agent.send({"t": "read", "conv": conv, "seq": 1})
    assert (await visitor.expect("read", conv=conv))["seq"] == 1


async def test_hostile_frames_through_a_worker_get_error_frames(workers_server: WorkersServer) -> None:
    api = Api(workers_server)
    visitor = await Client.connect(on_worker(await api.visitor(), workers_server.worker_urls()[1]))
    await visitor.ws.send("{not json")
    assert (await visitor.expect("error"))["code"] == "bad_frame"
    await visitor.send({"t": "send", "conv": 999_999, "cmid": "x", "text": "to a stranger"})
    assert (await visitor.expect("error"))["code"] == "not_found"
    await visitor.send({"t": "ping", "n": 7})
    assert (await visitor.expect("pong"))["n"] == 7
    await visitor.close()


async def test_hostile_sends_in_a_conversation_through_workers_are_refused_and_nothing_breaks(
        workers_server: WorkersServer) -> None:
    """Frames the data plane must not take (too long, bad fields, someone else's conversation, a
    binary frame on a JSON connection; frames over the size limit close the socket in the worker's
    gateway, as in one process) get the same error frames as in one process; the conversation
    goes on in order afterwards."""
    api = Api(workers_server)
    first, second = workers_server.worker_urls()
    visitor, agent, conv, _ = await pinned_pair(api, agent_url=first, visitor_url=second)
    other_visitor, _other_agent, other_conv, _ = await pinned_pair(api, agent_url=second, visitor_url=first)
    cases = [
        ({"t": "send", "conv": conv, "cmid": "big2", "text": "字" * 5000}, "too_large"),
        ({"t": "send", "conv": conv, "cmid": 7, "text": "cmid must be a string"}, "bad_frame"),
        ({"t": "send", "conv": other_conv, "cmid": "foreign", "text": "not mine"}, "not_found"),
        ({"t": "typing", "conv": other_conv, "on": True}, "not_found"),
    ]
    for frame, code in cases:
        await visitor.send(frame)
        assert (await visitor.expect("error"))["code"] == code, frame
    await visitor.ws.send(b"\x01\x02")  # binary on a kefu.json.v1 connection
    assert (await visitor.expect("error"))["code"] == "bad_frame"
    await visitor.send({"t": "send", "conv": conv, "cmid": "after", "text": "still here"})
    ack = await visitor.expect("ack", cmid="after")
    assert (await agent.expect("msg", conv=conv, cmid="after"))["seq"] == ack["seq"]
    leaked = [f for f in await other_visitor.quiet(0.3) if f["t"] == "typing" or f.get("cmid") == "foreign"]
    assert leaked == []
    for client in (visitor, agent, other_visitor):
        await client.close()


async def test_an_agent_online_on_two_workers_counts_once(workers_server: WorkersServer) -> None:
    """Presence is the union over workers: the agent's second connection (other worker) gets the
    conversation too, and closing one of them does not take the agent offline."""
    api = Api(workers_server)
    first, second = workers_server.worker_urls()
    visitor, agent, conv, login = await pinned_pair(api, agent_url=first, visitor_url=second)
    agent_elsewhere = await Client.connect(on_worker(login, second))
    assert any(c["conv"] == conv for c in agent_elsewhere.welcome["convs"])
    await agent.close()
    await asyncio.sleep(0.2)
    await visitor.send({"t": "send", "conv": conv, "cmid": "after-close", "text": "still there?"})
    assert (await agent_elsewhere.expect("msg", conv=conv, cmid="after-close"))["text"] == "still there?"


async def test_socket_limits_hold_across_workers(tmp_path_factory) -> None:
    """KEFU_SOCKETS_PER_VISITOR counts a visitor's sockets on every worker (the counts live in the
    control process); the socket over the limit is closed with 1013 and the others keep working."""
    from workers_client import start_workers_server

    server = start_workers_server(tmp_path_factory.mktemp("kefu-workers-limits"), KEFU_SOCKETS_PER_VISITOR="2")
    try:
        api = Api(server)
        first, second = server.worker_urls()
        session = await api.visitor()
        kept = [await Client.connect(on_worker(session, first)), await Client.connect(on_worker(session, second))]
        extra = await Client.connect(on_worker(session, first), hello=False)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await extra.recv(10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
        await kept[1].send({"t": "ping", "n": 1})
        assert (await kept[1].expect("pong"))["n"] == 1
        for client in kept:
            await client.close()
    finally:
        server.stop()


async def _refused_handshakes(api: Api) -> float:
    status, text = await api.request("GET", "/metrics")
    assert status == 200
    return sum(float(line.split()[1]) for line in text.splitlines()
               if line.startswith("kefu_ws_refused_") and line.split()[0].endswith("_total"))


async def test_workers_counters_reach_the_control_process_metrics(workers_server: WorkersServer) -> None:
    """Handshakes are refused inside the workers; their counters still show in /metrics."""
    api = Api(workers_server)
    url = workers_server.worker_urls()[1]
    before = await _refused_handshakes(api)
    for _ in range(3):
        with pytest.raises(websockets.exceptions.InvalidStatus):
            async with websockets.connect(f"{url}?token=forged", subprotocols=["kefu.json.v1"]):
                pass
    # Workers report at each sweep (every 1-5 s); give it two.
    for _ in range(120):
        if await _refused_handshakes(api) >= before + 3:
            break
        await asyncio.sleep(0.1)
    assert await _refused_handshakes(api) == before + 3
