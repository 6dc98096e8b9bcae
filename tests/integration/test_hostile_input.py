"""Every hostile input gets the protocol's answer, and the connection and server keep working."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
import uuid
from pathlib import Path

import pytest
import websockets
from conftest import start_server
from kefu.auth import Principal, TokenSigner
from kefu_client import Api, Client
from test_delivery import agent_session, assigned_pair
from websockets.exceptions import ConnectionClosed, InvalidStatus


async def handshake_status(url: str, **kwargs) -> int:
    try:
        ws = await websockets.connect(url, open_timeout=5, **kwargs)
    except InvalidStatus as error:
        return error.response.status_code
    await ws.close()
    return 101


async def assert_alive(client: Client) -> None:
    await client.send({"t": "ping", "n": 7})
    assert await client.expect("pong") == {"t": "pong", "n": 7}


async def test_handshake_needs_a_valid_token(api: Api, server) -> None:
    session = await api.visitor()
    base = session["ws_url"]
    assert await handshake_status(base) == 401
    assert await handshake_status(base + "?token=garbage") == 401
    tampered = session["token"][:-2] + ("AA" if not session["token"].endswith("AA") else "BB")
    assert await handshake_status(base + "?token=" + tampered) == 401
    secret = bytes.fromhex((Path(server.data_dir) / "secret.key").read_text())
    principal = Principal(id=session["visitor_id"], role="visitor", site_id=1)
    expired, _ = TokenSigner(secret).issue(principal, ttl_s=60, now=time.time() - 3600)
    assert await handshake_status(base + "?token=" + expired) == 401
    forged, _ = TokenSigner(b"x" * 32).issue(principal, ttl_s=60)
    assert await handshake_status(base + "?token=" + forged) == 401
    assert await handshake_status(base + "?token=" + session["token"]) == 101


async def test_visitor_origin_is_checked_against_the_site(api: Api) -> None:
    session = await api.visitor()
    url = f"{session['ws_url']}?token={session['token']}"
    assert await handshake_status(url, origin="https://evil.example") == 403
    assert await handshake_status(url, origin="http://localhost:8080.evil.com") == 403
    assert await handshake_status(url, origin="null") == 403
    assert await handshake_status(url, origin="http://localhost:8080") == 101
    status, _ = await api.request("POST", "/api/v1/visitor/session", body={"site": api.server.site_key},
                                  headers={"Origin": "https://evil.example"})
    assert status == 403


async def test_unknown_subprotocol_is_refused(api: Api) -> None:
    session = await api.visitor()
    assert await handshake_status(f"{session['ws_url']}?token={session['token']}",
                                  subprotocols=["chat.v9"]) == 400


async def test_malformed_json_frames_get_errors_and_the_connection_survives(api: Api) -> None:
    client = await Client.connect(await api.visitor(), hello=False)
    await client.send({"t": "open"})
    assert (await client.expect("error"))["code"] == "bad_frame"  # hello first
    for raw in ["{not json", "[1,2,3]", '"text"', '{"t": 5}', '{"no_type": 1}', "[" * 5000 + "]" * 5000,
                b"\xff\xfe not utf-8"]:
        await client.ws.send(raw)
        assert (await client.expect("error"))["code"] == "bad_frame", raw[:20]
    await client.ws.send(b"\x01\x04\x00\x00" + bytes(20))  # a binary frame on a JSON connection
    assert (await client.expect("error"))["code"] == "bad_frame"
    await client.send({"t": "hello"})
    await client.expect("welcome")
    await client.send({"t": "nonsense"})
    assert (await client.expect("error"))["code"] == "bad_frame"
    await client.send({"t": "hello"})
    assert (await client.expect("error"))["code"] == "conflict"
    await assert_alive(client)


@pytest.mark.parametrize("raw,code", [
    (b"\x01\x0f", "bad_frame"),  # short header
    (b"\x02\x0f\x01\x00" + bytes(20), "bad_frame"),  # unknown version
    (b"\x01\x63\x01\x00" + bytes(20), "bad_frame"),  # unknown type
    (struct.pack("<BBHIQQ", 1, 4, 0, 5, 0, 0) + b"\xdd\xff\xff\xff\xff", "bad_frame"),  # array32 bomb
    (struct.pack("<BBHIQQ", 1, 4, 0, 10**6, 0, 0) + b"\x80", "too_large"),  # declared body > limit
    (struct.pack("<BBHIQQ", 1, 4, 0, 3, 0, 0) + b"\x80", "bad_frame"),  # declared ≠ actual
])
async def test_bad_binary_frames_get_errors(api: Api, raw: bytes, code: str) -> None:
    client = await Client.connect(await api.visitor(), binary=True)
    await client.ws.send(raw)
    assert (await client.expect("error"))["code"] == code
    await client.ws.send("text on a binary connection")
    assert (await client.expect("error"))["code"] == "bad_frame"
    await assert_alive(client)


async def test_oversized_messages(api: Api) -> None:
    visitor, agent, conv, _ = await assigned_pair(api)
    await visitor.send({"t": "send", "conv": conv, "cmid": "big", "text": "x" * (8 * 1024 + 1)})
    error = await visitor.expect("error")
    assert error["code"] == "too_large" and error["ref"] == "big"
    await visitor.send({"t": "send", "conv": conv, "cmid": "c" * 65, "text": "hi"})
    assert (await visitor.expect("error"))["code"] == "bad_frame"
    await visitor.send({"t": "send", "conv": conv, "cmid": "nul", "text": "a\u0000b"})
    assert (await visitor.expect("error"))["code"] == "bad_frame"
    await visitor.send({"t": "send", "conv": conv, "cmid": "exact", "text": "é" * 4096})  # 8 KiB exactly
    assert (await visitor.expect("ack", cmid="exact"))["seq"] == 2
    # A fragmented frame is reassembled; over 64 KiB in total the server closes with 1009.
    await visitor.ws.send(iter(['{"t": "ping",', ' "n": 3}']))
    assert (await visitor.expect("pong"))["n"] == 3
    await visitor.ws.send("x" * (64 * 1024 + 1))
    with pytest.raises(ConnectionClosed) as closed:
        await visitor.recv()
    assert closed.value.rcvd.code == 1009
    await assert_alive(agent)


async def test_foreign_conversations_are_invisible(api: Api) -> None:
    visitor_a, _agent_a, conv, _ = await assigned_pair(api)
    visitor_b = await Client.connect(await api.visitor())
    other_agent = await Client.connect(await agent_session(api))
    for intruder in (visitor_b, other_agent):
        await intruder.send({"t": "send", "conv": conv, "cmid": "intrude", "text": "hi"})
        assert (await intruder.expect("error"))["code"] == "not_found"
        await intruder.send({"t": "typing", "conv": conv, "on": True})
        assert (await intruder.expect("error"))["code"] == "not_found"
        await intruder.send({"t": "close", "conv": conv})
        assert (await intruder.expect("error"))["code"] == "not_found"
    await other_agent.send({"t": "accept", "conv": conv})
    assert (await other_agent.expect("error"))["code"] == "not_found"
    await visitor_b.send({"t": "send", "conv": 10**12, "cmid": "x", "text": "hi"})
    assert (await visitor_b.expect("error"))["code"] == "not_found"  # same answer as a foreign one
    await visitor_b.send({"t": "open"})
    own = await visitor_b.expect("conv")
    assert own["conv"] != conv
    resumer = await Client.connect(await api.visitor(), resume={conv: 0})
    assert (await resumer.expect("error"))["code"] == "not_found"
    assert not [f for f in await resumer.quiet(0.3) if f["t"] == "msg"]
    for token in ((await api.visitor())["token"], (await agent_session(api))["token"]):
        status, _ = await api.request("GET", f"/api/v1/conversations/{conv}/messages", token=token)
        assert status == 404
    status, _ = await api.request("GET", f"/api/v1/conversations/{conv}/messages")
    assert status == 401
    assert not [f for f in await visitor_b.quiet(0.2) if f.get("conv") == conv]
    await assert_alive(visitor_a)


async def test_wrong_password_is_401_then_throttled(api: Api) -> None:
    username = f"victim-{uuid.uuid4().hex[:6]}"
    admin = await api.admin()
    await api.create_agent(admin["token"], username)
    statuses = []
    for _ in range(7):
        status, _ = await api.request("POST", "/api/v1/auth/login", body={"username": username, "password": "wrong!!!"})
        statuses.append(status)
    assert statuses[:5] == [401] * 5 and statuses[5:] == [429, 429]
    status, body = await api.request("POST", "/api/v1/auth/login", body={"username": 5})
    assert status == 400 and body["error"] == "bad_request"
    status, _ = await api.request("POST", "/api/v1/auth/login", body=None, headers={"Content-Type": "application/json"})
    assert status == 400


async def test_disabling_an_agent_closes_its_sockets(api: Api) -> None:
    admin = await api.admin()
    login = await agent_session(api)
    agent = await Client.connect(login)
    status, _ = await api.request("PATCH", f"/api/v1/admin/agents/{login['agent_id']}", token=admin["token"],
                                  body={"disabled": True})
    assert status == 200
    with pytest.raises(ConnectionClosed) as closed:
        await agent.recv(5)
    assert closed.value.rcvd.code == 1008
    status, _ = await api.request("POST", "/api/v1/auth/login",
                                  body={"username": "nobody-" + uuid.uuid4().hex, "password": "whatever"})
    assert status == 401
    status, _ = await api.request("POST", "/api/v1/admin/agents", token=login["token"], body={})
    assert status == 401  # the disabled agent's token is revoked (issue 8, item 1), not merely not an admin's


async def test_rate_limit(tmp_path_factory) -> None:
    proc = start_server(tmp_path_factory, KEFU_RATE_PER_S="5", KEFU_RATE_BURST="5")
    try:
        client = await Client.connect(await Api(proc).visitor())
        for n in range(20):
            await client.send({"t": "ping", "n": n})
        frames = await client.quiet(0.5)
        codes = [f.get("code") for f in frames if f["t"] == "error"]
        assert "rate_limited" in codes and len([f for f in frames if f["t"] == "pong"]) <= 6
        await asyncio.sleep(1.0)
        await assert_alive(client)
    finally:
        proc.stop()


def raw_websocket(ws_url: str, token: str, rcvbuf: int | None = None) -> socket.socket:
    """A bare socket that completes the upgrade, then does whatever the test wants (or nothing)."""
    host, port = ws_url.split("//")[1].split("/")[0].split(":")
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect((host, int(port)))
    sock.sendall((f"GET /ws?token={token} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)
    assert b" 101 " in response.split(b"\r\n")[0]
    return sock


def masked_text(payload: bytes) -> bytes:
    assert len(payload) < 126
    return bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


def wait_closed(sock: socket.socket, timeout: float) -> bool:
    """True when the server closed the socket (EOF or reset) within `timeout`."""
    sock.settimeout(0.2)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if sock.recv(65536) == b"":
                return True
        except TimeoutError:
            continue
        except ConnectionResetError:
            return True
    return False


async def test_slow_consumer_is_disconnected_not_buffered(tmp_path_factory) -> None:
    proc = start_server(tmp_path_factory, KEFU_RATE_PER_S="10000", KEFU_RATE_BURST="10000",
                        KEFU_MAX_PENDING_BYTES="65536")
    try:
        api = Api(proc)
        visitor, agent, conv, _ = await assigned_pair(api)
        session = await api.visitor(visitor.welcome["who"]["id"])
        stalled = raw_websocket(session["ws_url"], session["token"], rcvbuf=4096)
        stalled.sendall(masked_text(b'{"t":"hello"}'))
        # The stalled connection never reads; the agent keeps talking into the conversation.
        text = "y" * 8000
        for i in range(400):
            await agent.send({"t": "send", "conv": conv, "cmid": f"flood{i}", "text": text})
        await agent.expect("ack", cmid="flood399", timeout=20)
        assert await asyncio.to_thread(wait_closed, stalled, 10)
        # Everyone else is unaffected and nothing was lost for them.
        seqs = [f["seq"] for f in await visitor.quiet(1.0) if f["t"] == "msg"]
        assert seqs[-1] == 401 and sorted(set(seqs)) == seqs  # seq 1 is the opening message
        _, metrics = await api.request("GET", "/metrics")
        assert "kefu_slow_consumers_closed_total 1" in metrics
    finally:
        proc.stop()


async def test_silent_connections_are_pinged_then_dropped(tmp_path_factory) -> None:
    proc = start_server(tmp_path_factory, KEFU_IDLE_TIMEOUT_S="1", KEFU_PONG_TIMEOUT_S="1")
    try:
        session = await Api(proc).visitor()
        silent = raw_websocket(session["ws_url"], session["token"])
        assert await asyncio.to_thread(wait_closed, silent, 10)
        lively = await Client.connect(session)  # the websockets client answers pings by itself
        await asyncio.sleep(3.5)
        await assert_alive(lively)
    finally:
        proc.stop()


async def test_health_and_metrics(api: Api) -> None:
    status, body = await api.request("GET", "/healthz")
    assert status == 200 and body == {"ok": True, "storage": True, "bus": True}
    status, text = await api.request("GET", "/metrics")
    assert status == 200 and "kefu_connections " in text and "kefu_ack_latency_seconds_bucket" in text
    status, _ = await api.request("GET", "/api/v1/conversations/abc/messages", token="x")
    assert status == 401


async def test_http_api_rejects_bad_input_with_json_errors(api: Api) -> None:
    cases = [
        ({"site": api.server.site_key, "geo": {"lat": 91, "lon": 0}}, 400),
        ({"site": api.server.site_key, "geo": "here"}, 400),
        ({"site": api.server.site_key, "tags": ["x"] * 21}, 400),
        ({"site": api.server.site_key, "name": "n" * 101}, 400),
        ({"site": 12}, 400),
        ({}, 400),
        ({"site": "no-such-site"}, 404),
    ]
    for body, expected in cases:
        status, answer = await api.request("POST", "/api/v1/visitor/session", body=body)
        assert status == expected and "error" in answer, (body, status, answer)
    status, answer = await api.request("POST", "/api/v1/visitor/session", body=["not", "an", "object"])
    assert status == 400
    status, _ = await api.request("POST", "/api/v1/visitor/session", body={"site": "x" * 70_000})
    assert status == 413  # over the 64 KiB body limit
    token = (await api.visitor())["token"]
    for query in ("after_seq=-1", "limit=0", "limit=501", "after_seq=abc"):
        status, _ = await api.request("GET", f"/api/v1/conversations/1/messages?{query}", token=token)
        assert status in (400, 404)
    status, _ = await api.request("GET", "/api/v1/conversations/99999999999999999999/messages", token=token)
    assert status == 404
    status, _ = await api.request("GET", "/../../etc/passwd")
    assert status == 404
