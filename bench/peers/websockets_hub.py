"""The `websockets` peer: the bench chat hub on the python-websockets asyncio server.

Protocol (shared by every peer): `GET /ws?room=R` joins room R; every text message goes to every
member of its room, the sender included (the sender's copy is its acknowledgement), and to every
member of room "*" (supervisors watching every conversation).
Library defaults except compression, which is switched off as on every peer (websockets
recommends broadcast() for fan-out: it writes without awaiting each client).

Run: python -m bench.peers.websockets_hub --port 8091
"""

from __future__ import annotations

import argparse
import asyncio
from collections import defaultdict
from urllib.parse import parse_qs, urlsplit

import websockets
from websockets.asyncio.server import ServerConnection, broadcast, serve

WATCH_ALL_ROOM = "*"
rooms: defaultdict[str, set[ServerConnection]] = defaultdict(set)


async def handle(connection: ServerConnection) -> None:
    query = parse_qs(urlsplit(connection.request.path).query)
    room = query.get("room", [""])[0]
    members = rooms[room]
    members.add(connection)
    try:
        async for message in connection:
            broadcast(members, message)
            if room != WATCH_ALL_ROOM and WATCH_ALL_ROOM in rooms:
                broadcast(rooms[WATCH_ALL_ROOM], message)
    except websockets.ConnectionClosed:
        pass
    finally:
        members.discard(connection)
        if not members:
            rooms.pop(room, None)


async def main(host: str, port: int) -> None:
    async with serve(handle, host, port, compression=None):
        print(f"PEER READY ws://{host}:{port}/ws", flush=True)
        await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8091)
    args = parser.parse_args()
    asyncio.run(main(args.host, args.port))
