"""Raw-socket tools for the security tests: WebSocket frames built byte by byte, so a test can send
what no well-behaved client library would (reserved bits, interleaved fragments, UTF-16 text)."""

from __future__ import annotations

import socket
import struct
import time


def raw_websocket(ws_url: str, token: str, protocol: str = "kefu.json.v1") -> socket.socket:
    """A bare socket that has completed the upgrade."""
    host, port = ws_url.split("//")[1].split("/")[0].split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.sendall((f"GET /ws?token={token} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  f"Sec-WebSocket-Protocol: {protocol}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(1)
        assert chunk, "closed during the handshake"
        response += chunk
    assert b" 101 " in response.split(b"\r\n")[0], response
    return sock


def client_frame(opcode: int, payload: bytes, *, fin: bool = True, rsv1: bool = False) -> bytes:
    """One masked client frame (mask 0, so the payload is sent as is)."""
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    size = len(payload)
    if size < 126:
        header = bytes([first, 0x80 | size])
    elif size < 1 << 16:
        header = bytes([first, 0x80 | 126]) + struct.pack("!H", size)
    else:
        header = bytes([first, 0x80 | 127]) + struct.pack("!Q", size)
    return header + b"\0\0\0\0" + payload


def read_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError(f"closed after {len(data)} of {size} bytes")
        data += chunk
    return data


def read_frame(sock: socket.socket, max_size: int = 1 << 22) -> tuple[int, bool, bytes]:
    """(opcode, fin, payload) of the next server frame; refuses absurd announced lengths."""
    first, second = read_exact(sock, 2)
    assert not second & 0x80, "server frames are never masked"
    assert not first & 0x70, "server frames never set reserved bits"
    size = second & 0x7F
    if size == 126:
        size = struct.unpack("!H", read_exact(sock, 2))[0]
    elif size == 127:
        size = struct.unpack("!Q", read_exact(sock, 8))[0]
    assert size <= max_size, f"server announced a {size}-byte frame"
    return first & 0x0F, bool(first & 0x80), read_exact(sock, size)


def close_code(sock: socket.socket, timeout: float = 5.0) -> int | None:
    """Read until the server's close frame; its code (None when the socket just ended)."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            opcode, _, payload = read_frame(sock)
        except (EOFError, ConnectionResetError):
            return None
        if opcode == 0x8:
            return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
    raise TimeoutError("no close frame")


def wait_closed(sock: socket.socket, timeout: float) -> float | None:
    """Seconds until the peer closed the socket (EOF or reset), or None if it stayed open."""
    sock.settimeout(0.1)
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if sock.recv(65536) == b"":
                return time.monotonic() - started
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - started
    return None


def recv_json(sock: socket.socket, timeout: float = 5.0) -> dict:
    """The next data frame from the server, parsed as JSON (kefu.json.v1)."""
    import json

    sock.settimeout(timeout)
    while True:
        opcode, fin, payload = read_frame(sock)
        if opcode == 0x1:
            assert fin
            return json.loads(payload)
        if opcode == 0x8:
            raise EOFError(f"closed: {payload!r}")


def exchange(sock: socket.socket, raw_text: bytes, *, expect: str = "error", timeout: float = 5.0) -> dict:
    """Send one text frame carrying `raw_text` as is; return the first answer of type `expect`."""
    sock.sendall(client_frame(0x1, raw_text))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        frame = recv_json(sock, timeout)
        if frame.get("t") == expect:
            return frame
    raise TimeoutError(f"no {expect!r} frame")


async def post_raw(base_url: str, path: str, data: bytes, headers: dict[str, str] | None = None) -> tuple[int, object]:
    """POST `data` as is (not re-encoded by a JSON library); (status, parsed JSON or text)."""
    import json

    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.post(base_url + path, data=data,
                                headers={"Content-Type": "application/json", **(headers or {})}) as response:
            text = await response.text()
            try:
                return response.status, json.loads(text)
            except ValueError:
                return response.status, text


def start(tmp_path_factory, **env: str):
    """A server of its own, with the given environment (limits, trusted proxies, timeouts)."""
    from kefu_client import ServerProcess

    return ServerProcess(tmp_path_factory.mktemp("kefu-sec"), env=env).start()
