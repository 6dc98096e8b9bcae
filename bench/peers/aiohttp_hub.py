"""The aiohttp peer: the bench chat hub on aiohttp's WebSocketResponse.

Protocol (shared by every peer): `GET /ws?room=R` joins room R; every text message goes to every
member of its room, the sender included (the sender's copy is its acknowledgement), and to every
member of room "*" (supervisors watching every conversation).
Library defaults (no heartbeat, no compression offered by the client so none is negotiated).

Run: python -m bench.peers.aiohttp_hub --port 8092
"""

from __future__ import annotations

import argparse
import asyncio
from collections import defaultdict

from aiohttp import WSMsgType, web

WATCH_ALL_ROOM = "*"
rooms: defaultdict[str, set[web.WebSocketResponse]] = defaultdict(set)


async def handle(request: web.Request) -> web.WebSocketResponse:
    connection = web.WebSocketResponse(compress=False)
    await connection.prepare(request)
    room = request.query.get("room", "")
    members = rooms[room]
    members.add(connection)
    try:
        async for message in connection:
            if message.type is not WSMsgType.TEXT:
                continue
            watchers = rooms.get(WATCH_ALL_ROOM, ()) if room != WATCH_ALL_ROOM else ()
            for member in [*members, *watchers]:
                if member.closed:
                    continue
                try:
                    await member.send_str(message.data)
                except ConnectionResetError:
                    continue  # that member is going away; its own handler cleans up
    finally:
        members.discard(connection)
        if not members:
            rooms.pop(room, None)
    return connection


async def main(host: str, port: int) -> None:
    app = web.Application()
    app.router.add_get("/ws", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    print(f"PEER READY ws://{host}:{port}/ws", flush=True)
    await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8092)
    args = parser.parse_args()
    asyncio.run(main(args.host, args.port))
