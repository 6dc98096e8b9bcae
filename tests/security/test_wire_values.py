"""Issue 8, items 2, 8, 10 (socket side), 11 and the typing map of 13, over a real `kefu serve`:
whatever is acknowledged can be stored and encoded for every subscriber in both formats; what
cannot is refused at the door with `bad_frame`/`too_large`, and the connection stays up."""

from __future__ import annotations

import asyncio
import json
import uuid

from kefu_client import Api, Client
from sec_tools import exchange, raw_websocket
from test_delivery import assigned_pair


async def assert_alive(client: Client) -> None:
    n = uuid.uuid4().int % 1000
    await client.send({"t": "ping", "n": n})
    assert await client.expect("pong") == {"t": "pong", "n": n}


async def test_meta_is_capped_and_large_frames_reach_every_socket(api: Api) -> None:
    """Item 2's repro: a visitor with two sockets sends a ~64 KiB meta string. It is refused now
    (meta ≤ 4 KiB); a meta at the cap reaches both visitor sockets (JSON and binary) and the agent."""
    visitor, agent, conv, _ = await assigned_pair(api, binary_agent=True)
    session = await api.visitor(visitor.welcome["who"]["id"])
    second = await Client.connect(session, binary=True)
    await visitor.send({"t": "send", "conv": conv, "cmid": "huge", "text": "x", "meta": {"s": "m" * 65_420}})
    error = await visitor.expect("error")
    assert error["code"] == "too_large" and error["ref"] == "huge"
    meta = {"s": "é" * 1900, "n": 2**64 - 1, "list": [1.5, -(2**63), None, True]}
    assert len(json.dumps(meta, ensure_ascii=False, separators=(",", ":")).encode()) <= 4096
    await visitor.send({"t": "send", "conv": conv, "cmid": "capped", "text": "y" * 8000, "meta": meta})
    ack = await visitor.expect("ack", cmid="capped")
    for client in (visitor, second, agent):
        msg = await client.expect("msg", cmid="capped")
        assert msg["seq"] == ack["seq"] and msg["meta"] == meta and msg["text"] == "y" * 8000
    for client in (visitor, second, agent):
        await assert_alive(client)


async def test_values_one_wire_format_cannot_carry_are_refused(api: Api) -> None:
    """Item 8: `meta: {"n": 2**64}` was acked, then could not be encoded for kefu.bin.v1 (a gap for
    binary subscribers, and resume stopped there). Now refused; everything acked resumes fully."""
    visitor, agent, conv, login = await assigned_pair(api, binary_agent=True)
    refused = [{"n": 2**64}, {"n": -(2**63) - 1}, {"deep": [[[[[1]]]]]}, {"k": 10**400}]
    for i, meta in enumerate(refused):
        await visitor.send({"t": "send", "conv": conv, "cmid": f"bad{i}", "text": "x", "meta": meta})
        assert (await visitor.expect("error", ref=f"bad{i}"))["code"] == "bad_frame", meta
    for i, raw in enumerate(('{"n": NaN}', '{"n": Infinity}', '{"n": 1e400}')):
        await visitor.ws.send(f'{{"t":"send","conv":{conv},"cmid":"c{i}","text":"x","meta":{raw}}}')
        assert (await visitor.expect("error"))["code"] == "bad_frame", raw
    await visitor.send({"t": "send", "conv": conv, "cmid": "edge", "text": "x",
                        "meta": {"max": 2**64 - 1, "min": -(2**63)}})
    last = (await visitor.expect("ack", cmid="edge"))["seq"]
    assert (await agent.expect("msg", cmid="edge"))["meta"] == {"max": 2**64 - 1, "min": -(2**63)}
    # A binary client resuming from 0 gets every message and the end-of-replay marker.
    await agent.close()
    resumed = await Client.connect(login, binary=True, resume={conv: 0})
    replayed = await resumed.expect("replayed", conv=conv)
    assert replayed["last_seq"] == last
    seqs = [f["seq"] for f in resumed.backlog if f["t"] == "msg" and f["conv"] == conv]
    assert seqs == list(range(1, last + 1))


async def test_lone_surrogates_and_nul_are_bad_frames_not_1011(api: Api) -> None:
    """Item 10 (socket side): a lone surrogate in `cmid` closed the socket with 1011 (the error frame
    echoing it could not be encoded). Every string field is checked at the door."""
    visitor, agent, conv, login = await assigned_pair(api)
    session = await api.visitor(visitor.welcome["who"]["id"])
    sock = await asyncio.to_thread(raw_websocket, session["ws_url"], session["token"])
    before_hello = await asyncio.to_thread(exchange, sock, b'{"t":"\\ud800"}')
    assert before_hello["code"] == "bad_frame" and "ref" not in before_hello
    before_hello = await asyncio.to_thread(exchange, sock, b'{"t":"send","cmid":"\\udfff"}')
    assert before_hello["code"] == "bad_frame"
    await asyncio.to_thread(exchange, sock, b'{"t":"hello"}', expect="welcome")
    cases = [
        f'{{"t":"send","conv":{conv},"cmid":"\\ud800","text":"x"}}',
        f'{{"t":"send","conv":{conv},"cmid":"a\\u0000","text":"x"}}',
        f'{{"t":"send","conv":{conv},"cmid":"ok1","text":"\\udc00"}}',
        f'{{"t":"send","conv":{conv},"cmid":"ok2","text":"a\\u0000b"}}',
        f'{{"t":"send","conv":{conv},"cmid":"ok3","text":"x","meta":{{"\\ud800":1}}}}',
        f'{{"t":"send","conv":{conv},"cmid":"ok4","text":"x","meta":{{"k":["\\ud800"]}}}}',
        f'{{"t":"send","conv":{conv},"cmid":"ok5","text":"x","meta":{{"k":"\\u0000"}}}}',
        '{"t":"open","tags":["\\ud800"]}',
    ]
    for raw in cases:
        answer = await asyncio.to_thread(exchange, sock, raw.encode())
        assert answer["code"] == "bad_frame", (raw, answer)
    staff = await asyncio.to_thread(raw_websocket, login["ws_url"], login["token"])
    await asyncio.to_thread(exchange, staff, b'{"t":"hello"}', expect="welcome")
    for raw in (f'{{"t":"transfer","conv":{conv},"to_agent":"\\ud800"}}',
                f'{{"t":"transfer","conv":{conv},"to_skill":"a\\u0000"}}'):
        answer = await asyncio.to_thread(exchange, staff, raw.encode())
        assert answer["code"] == "bad_frame", (raw, answer)
    staff.close()
    pong = await asyncio.to_thread(exchange, sock, b'{"t":"ping","n":18446744073709551616}', expect="pong")
    assert pong == {"t": "pong"}  # an n no binary client could receive is not echoed
    sock.close()
    await visitor.send({"t": "send", "conv": conv, "cmid": "after", "text": "still fine"})
    await visitor.expect("ack", cmid="after")
    assert not [f for f in await agent.quiet(0.3) if f["t"] == "msg" and f["cmid"].startswith("ok")]


async def test_open_with_nul_text_creates_no_dead_conversation(api: Api) -> None:
    """Item 11: `open` with U+0000 in its text created a conversation whose first message could
    not be stored, so it was never routed and every later `open` returned it."""
    session = await api.visitor()
    visitor = await Client.connect(session)
    await visitor.ws.send('{"t":"open","text":"help\\u0000me"}')
    assert (await visitor.expect("error"))["code"] == "bad_frame"
    again = await Client.connect(session)
    assert again.welcome["convs"] == []
    await again.send({"t": "open", "text": "help me"})
    conv = await again.expect("conv")
    assert conv["state"] in ("queued", "assigned")
    if conv["state"] == "queued":
        assert conv["position"] >= 1


