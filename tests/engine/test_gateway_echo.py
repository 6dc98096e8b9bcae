"""The Cython ↔ picows ↔ Rust path end to end, without the rest of the server: a picows server whose
listener is the Cython gateway `Connection`, with a hub that echoes every decoded frame back.
The client is the `websockets` library; binary frames are built by the pure-Python reference codec."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets
from kefu import compiled
from kefu.reference import codec as reference_codec
from picows import ws_create_server


class EchoHub:
    """The gateway's hub interface, reduced to echoing: proves frames arrive decoded as dicts."""

    def __init__(self) -> None:
        self.frames: list[dict] = []
        self.connections: set = set()
        self.connected = 0
        self.disconnected = 0

    def on_connected(self, conn) -> None:
        self.connected += 1
        self.connections.add(conn)

    def on_disconnected(self, conn) -> None:
        self.disconnected += 1
        self.connections.discard(conn)

    def on_slow_consumer(self, conn) -> None:
        pass

    def on_frame_refused(self, conn, size: int) -> None:
        self.refused = getattr(self, "refused", 0) + 1

    def on_frame(self, conn, frame: dict) -> None:
        self.frames.append(frame)
        conn.send_frame(dict(frame, t="pong") if frame["t"] == "ping" else frame)


@pytest.fixture
async def echo_server():
    hub = EchoHub()
    limits = compiled.GatewayLimits(max_message_size=4096, rate_per_s=1000, burst=1000)

    def factory(request):
        binary = "kefu.bin.v1" in request.headers.get("Sec-WebSocket-Protocol", "")
        from picows import WSUpgradeResponse, WSUpgradeResponseWithListener

        listener = compiled.Connection(hub, None, binary, limits)
        protocol = "kefu.bin.v1" if binary else "kefu.json.v1"
        return WSUpgradeResponseWithListener(
            WSUpgradeResponse.create_101_response({"Sec-WebSocket-Protocol": protocol}), listener)

    server = await ws_create_server(factory, "127.0.0.1", 0, read_buffer_init_size=1024, use_aiofastnet=False)
    port = server.sockets[0].getsockname()[1]
    yield hub, f"ws://127.0.0.1:{port}/"
    server.close()


async def test_binary_frames_are_decoded_natively_and_echoed(echo_server) -> None:
    hub, url = echo_server
    frame = {"t": "send", "conv": 42, "seq": 7, "cmid": "c1", "text": "你好, world", "meta": {"n": [1, 2.5, None]}}
    async with websockets.connect(url, subprotocols=["kefu.bin.v1"]) as ws:
        await ws.send(reference_codec.encode_frame(frame))
        echoed = await asyncio.wait_for(ws.recv(), 5)
        assert isinstance(echoed, bytes) and reference_codec.decode_frame(echoed) == frame
        assert echoed == reference_codec.encode_frame(frame)  # native encoder: byte-identical to the twin
        await ws.send(b"\x01\x63" + bytes(22))
        error = reference_codec.decode_frame(await asyncio.wait_for(ws.recv(), 5))
        assert error["t"] == "error" and error["code"] == "bad_frame"
    assert hub.frames == [frame]


async def test_json_frames_and_fragmented_messages(echo_server) -> None:
    hub, url = echo_server
    async with websockets.connect(url, subprotocols=["kefu.json.v1"]) as ws:
        await ws.send(json.dumps({"t": "ping", "n": 1}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"t": "pong", "n": 1}
        await ws.send(iter(['{"t": "ping",', ' "n": 2}']))  # three WebSocket frames, one message
        assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"t": "pong", "n": 2}
        await ws.send("x" * 5000)  # over the gateway's 4 KiB message limit
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd.code == 1009
    await asyncio.sleep(0.05)
    assert hub.connected == hub.disconnected == 1


async def test_send_to_all_encodes_per_subprotocol(echo_server) -> None:
    hub, url = echo_server
    async with websockets.connect(url, subprotocols=["kefu.json.v1"]) as text_ws, \
            websockets.connect(url, subprotocols=["kefu.bin.v1"]) as binary_ws:
        await text_ws.send(json.dumps({"t": "ping"}))
        await binary_ws.send(reference_codec.encode_frame({"t": "ping"}))
        await asyncio.wait_for(text_ws.recv(), 5)
        await asyncio.wait_for(binary_ws.recv(), 5)
        frame = {"t": "msg", "conv": 1, "seq": 2, "text": "broadcast"}
        assert len(hub.connections) == 2
        sent = compiled.send_to_all(hub.connections, compiled.encode_json(frame), compiled.encode_frame(frame))
        assert sent == 2
        assert json.loads(await asyncio.wait_for(text_ws.recv(), 5)) == frame
        assert reference_codec.decode_frame(await asyncio.wait_for(binary_ws.recv(), 5)) == frame

