"""Issue 8, item 2: the gateway sends from memory it owns, so frames of every size class reach every
socket intact, and the encoded `bytes` it was given stay untouched.

These run the Cython gateway under a real picows server in this process, with a hub that fans out
frames of exact sizes (125/126/65535/65536 bytes: the WebSocket header's 7-bit, 16-bit and 64-bit
length forms and their edges) to several raw sockets of both subprotocols. The end-to-end case over
`kefu serve` is in test_wire_values.py."""

from __future__ import annotations

import asyncio
import json

import pytest
from kefu import compiled
from picows import WSUpgradeResponse, WSUpgradeResponseWithListener, ws_create_server
from sec_tools import client_frame, raw_websocket, read_frame

SIZES = (125, 126, 65535, 65536)


def exact_frame(size: int, binary: bool, fill: str) -> bytes:
    """A `pong` frame padded so that its encoding is exactly `size` bytes."""
    encode = compiled.encode_frame if binary else compiled.encode_json
    # Measure with a pad of the same length class (msgpack's str header grows at 32/256/65536 bytes).
    probe = max(size - 64, 0)
    pad = probe + size - len(encode({"t": "pong", "pad": fill * probe}))
    payload = encode({"t": "pong", "pad": fill * pad})
    assert len(payload) == size, (size, len(payload))
    return payload


class BlastHub:
    """On `{"t": "blast", "size": N, "count": C}` from any socket, fans C frames of N bytes out to
    every connected socket with `send_to_all`, keeping the payloads to check them afterwards."""

    def __init__(self) -> None:
        self.connections: list = []
        self.sent: list[tuple[bytes, bytes, int]] = []  # (json, binary, hash of each at creation)
        self.refused = 0

    def on_connected(self, conn) -> None:
        self.connections.append(conn)

    def on_disconnected(self, conn) -> None:
        self.connections.remove(conn)

    def on_slow_consumer(self, conn) -> None:
        pass

    def on_frame_refused(self, conn, size: int) -> None:
        self.refused += 1

    def on_frame(self, conn, frame: dict) -> None:
        for i in range(frame.get("count", 1)):
            fill = "abcdefghijklmnopqrstuvwxyz"[i % 26]
            json_payload = exact_frame(frame["size"], False, fill)
            binary_payload = exact_frame(frame["size"], True, fill)
            self.sent.append((json_payload, binary_payload, hash(json_payload) ^ hash(binary_payload)))
            assert compiled.send_to_all(self.connections, json_payload, binary_payload) == len(self.connections)


@pytest.fixture
async def blast_server():
    hub = BlastHub()
    limits = compiled.GatewayLimits(max_message_size=4096, max_pending_bytes=64 << 20, rate_per_s=1000, burst=1000)

    def factory(request):
        binary = "kefu.bin.v1" in request.headers.get("Sec-WebSocket-Protocol", "")
        listener = compiled.Connection(hub, None, binary, limits)
        response = WSUpgradeResponse.create_101_response(
            {"Sec-WebSocket-Protocol": "kefu.bin.v1" if binary else "kefu.json.v1"})
        return WSUpgradeResponseWithListener(response, listener)

    server = await ws_create_server(factory, "127.0.0.1", 0, read_buffer_init_size=1024, use_aiofastnet=False)
    port = server.sockets[0].getsockname()[1]
    yield hub, f"ws://127.0.0.1:{port}/ws"
    server.close()


async def open_sockets(url: str, count: int) -> list[tuple[object, bool]]:
    """`count` raw sockets of each subprotocol: [(socket, binary)]."""
    sockets = []
    for binary in (False, True):
        for _ in range(count):
            protocol = "kefu.bin.v1" if binary else "kefu.json.v1"
            sockets.append((await asyncio.to_thread(raw_websocket, url, "-", protocol), binary))
    await asyncio.sleep(0.05)
    return sockets


def read_frames(sock, count: int) -> list[tuple[int, bytes]]:
    frames = []
    for _ in range(count):
        opcode, fin, payload = read_frame(sock)
        assert fin
        frames.append((opcode, payload))
    return frames


@pytest.mark.parametrize("size", SIZES)
async def test_exact_size_frames_reach_several_sockets_intact(blast_server, size: int) -> None:
    hub, url = blast_server
    sockets = await open_sockets(url, 3)
    first = sockets[0][0]
    first.sendall(client_frame(0x1, json.dumps({"t": "blast", "size": size, "count": 2}).encode()))
    for sock, binary in sockets:
        frames = await asyncio.to_thread(read_frames, sock, 2)
        for (opcode, payload), (json_payload, binary_payload, _) in zip(frames, hub.sent, strict=True):
            assert opcode == (0x2 if binary else 0x1)
            assert len(payload) == size
            assert payload == (binary_payload if binary else json_payload)
    # The encoded frames the gateway was handed are unchanged: length, bytes and cached hash.
    for json_payload, binary_payload, hashes in hub.sent:
        assert len(json_payload) == len(binary_payload) == size
        assert hash(json_payload) ^ hash(binary_payload) == hashes
        assert hash(bytes(bytearray(json_payload))) == hash(json_payload)
        assert hash(bytes(bytearray(binary_payload))) == hash(binary_payload)
        assert json.loads(json_payload)["t"] == "pong"
        assert compiled.decode_frame(binary_payload)["t"] == "pong"
    assert hub.refused == 0
    for sock, _ in sockets:
        sock.close()


async def test_large_frames_queued_behind_a_backed_up_socket_stay_intact(blast_server) -> None:
    """Frames over 8 KiB written while the peer does not read are queued by the transport; each must
    still carry its own header and payload when the peer finally reads (picows' copying `send`
    queued a view of a header buffer that later sends overwrote)."""
    hub, url = blast_server
    sockets = await open_sockets(url, 1)
    count = 120  # ~7.9 MB per socket, far beyond the kernel's socket buffers
    sockets[0][0].sendall(client_frame(0x1, json.dumps({"t": "blast", "size": 65535, "count": count}).encode()))
    await asyncio.sleep(0.5)  # nobody reads yet: the writes pile up in the transport
    for sock, binary in sockets:
        frames = await asyncio.to_thread(read_frames, sock, count)
        for (_, payload), (json_payload, binary_payload, _) in zip(frames, hub.sent, strict=True):
            assert payload == (binary_payload if binary else json_payload)
        sock.close()


async def test_outgoing_frames_over_the_limit_are_refused_with_a_close(blast_server) -> None:
    """A frame over `max_outgoing_size` (256 KiB by default) is never written; the socket is closed
    with 1009 so the client knows (and reconnects and resumes) instead of silently missing it."""
    hub, url = blast_server
    sockets = await open_sockets(url, 1)
    big = {"t": "pong", "pad": "x" * (300 * 1024)}
    json_conn = next(c for c in hub.connections if not c.binary)
    assert json_conn.send_frame(big) is False
    assert hub.refused == 1 and json_conn.frames_refused == 1
    json_sock = sockets[0][0]
    opcode, _, payload = await asyncio.to_thread(read_frame, json_sock)
    assert opcode == 0x8 and int.from_bytes(payload[:2], "big") == 1009
    for sock, _ in sockets:
        sock.close()


async def test_frames_after_the_server_closed_the_connection_are_not_acted_upon() -> None:
    """A connection the server closed (revoked, say) may still have frames in its read buffer, sent
    by the client before it saw the close: none of them reaches the hub."""
    seen: list[dict] = []

    class ClosingHub(BlastHub):
        def on_frame(self, conn, frame: dict) -> None:
            seen.append(frame)
            conn.close(1008, b"revoked")

    hub = ClosingHub()
    limits = compiled.GatewayLimits(rate_per_s=1000, burst=1000)

    def factory(request):
        return WSUpgradeResponseWithListener(
            WSUpgradeResponse.create_101_response({"Sec-WebSocket-Protocol": "kefu.json.v1"}),
            compiled.Connection(hub, None, False, limits))

    server = await ws_create_server(factory, "127.0.0.1", 0, read_buffer_init_size=1024, use_aiofastnet=False)
    try:
        url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/ws"
        sock = await asyncio.to_thread(raw_websocket, url, "-")
        sock.sendall(b"".join(client_frame(0x1, json.dumps({"t": "send", "n": i}).encode()) for i in range(5)))
        opcode, _, payload = await asyncio.to_thread(read_frame, sock)
        assert opcode == 0x8 and int.from_bytes(payload[:2], "big") == 1008
        await asyncio.sleep(0.2)
        assert [f["n"] for f in seen] == [0]
        sock.close()
    finally:
        server.close()
