"""Issue 8, item 12: the WebSocket endpoint follows RFC 6455 strictly where it was lenient: text
frames are UTF-8 JSON only (not UTF-16/32), reserved bits without a negotiated extension close the
connection with 1002, and a new data frame inside a fragmented message closes it with 1002."""

from __future__ import annotations

import asyncio

from kefu_client import Api
from sec_tools import client_frame, close_code, exchange, raw_websocket


async def connected(api: Api):
    session = await api.visitor()
    sock = await asyncio.to_thread(raw_websocket, session["ws_url"], session["token"])
    return sock


async def test_utf16_and_utf32_json_is_refused_as_bad_frame(api: Api) -> None:
    sock = await connected(api)
    for encoding in ("utf-16", "utf-16-le", "utf-16-be", "utf-32"):
        answer = await asyncio.to_thread(exchange, sock, '{"t":"ping","n":1}'.encode(encoding))
        assert answer["code"] == "bad_frame", (encoding, answer)
    pong = await asyncio.to_thread(exchange, sock, b'{"t":"ping","n":2}', expect="pong")
    assert pong == {"t": "pong", "n": 2}
    sock.close()


async def test_reserved_bit_without_extension_closes_1002(api: Api) -> None:
    sock = await connected(api)
    sock.sendall(client_frame(0x1, b'{"t":"ping"}', rsv1=True))
    assert await asyncio.to_thread(close_code, sock) == 1002
    sock.close()


async def test_new_data_frame_inside_a_fragmented_message_closes_1002(api: Api) -> None:
    sock = await connected(api)
    # A well-formed fragmented message is fine …
    sock.sendall(client_frame(0x1, b'{"t":"pi', fin=False) + client_frame(0x0, b'ng","n":3}'))
    assert await asyncio.to_thread(exchange, sock, b'{"t":"ping","n":4}', expect="pong") == {"t": "pong", "n": 3}
    # … a complete TEXT frame while one is open is a protocol error, not a second message.
    sock.sendall(client_frame(0x1, b'{"t":"pi', fin=False) + client_frame(0x1, b'{"t":"ping","n":5}'))
    assert await asyncio.to_thread(close_code, sock) == 1002
    sock.close()
