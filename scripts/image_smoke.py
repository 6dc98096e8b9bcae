"""Drives a running Kefu container the way its users do, from outside it (scripts/image-smoke.sh starts
the container and calls this):

  admin logs in and creates an agent; the agent connects over wss; a visitor opens a conversation
  over wss; the router assigns it; visitor and agent exchange messages both ways; /metrics shows
  that the bundled sentiment model scored the visitor's messages.

    python scripts/image_smoke.py BASE_URL SITE_KEY ADMIN_PASSWORD CA_FILE
Prints one line per step; exits non-zero at the first thing that does not happen.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
import time
import uuid
from typing import Any

import aiohttp
import websockets


class Peer:
    def __init__(self, name: str, ws: Any) -> None:
        self.name = name
        self.ws = ws

    @classmethod
    async def connect(cls, name: str, session: dict[str, Any], trust: ssl.SSLContext) -> Peer:
        ws = await websockets.connect(f"{session['ws_url']}?token={session['token']}", ssl=trust,
                                      subprotocols=["kefu.json.v1"], ping_interval=None, open_timeout=60)
        peer = cls(name, ws)
        await peer.send({"t": "hello"})
        await peer.expect("welcome")
        return peer

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(frame))

    async def expect(self, kind: str, timeout: float = 60.0, **match: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            frame = json.loads(await asyncio.wait_for(self.ws.recv(), max(0.1, deadline - time.monotonic())))
            if frame["t"] == kind and all(frame.get(k) == v for k, v in match.items()):
                return frame


async def smoke(base: str, site_key: str, admin_password: str, ca_file: str) -> None:
    trust = ssl.create_default_context(cafile=ca_file)
    started = time.perf_counter()

    def step(text: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {text}", flush=True)

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
        async def call(method: str, path: str, body: Any = None, token: str | None = None) -> Any:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            async with http.request(method, base + path, json=body, headers=headers, ssl=trust) as reply:
                data = await reply.json(content_type=None)
                if reply.status >= 300:
                    raise SystemExit(f"{method} {path}: {reply.status} {data}")
                return data

        health = await call("GET", "/healthz")
        step(f"https /healthz: {health}")
        admin = await call("POST", "/api/v1/auth/login", {"username": "admin", "password": admin_password})
        skill = f"smoke/{uuid.uuid4().hex[:8]}"
        await call("POST", "/api/v1/admin/agents", {"username": "smoke-agent", "password": "smoke-agent-password",
                                                    "skills": {skill: 1.0}, "capacity": 3}, token=admin["token"])
        agent_session = await call("POST", "/api/v1/auth/login",
                                   {"username": "smoke-agent", "password": "smoke-agent-password"})
        agent = await Peer.connect("agent", agent_session, trust)
        step(f"agent connected over {agent_session['ws_url'].split(':')[0]}")
        visitor_session = await call("POST", "/api/v1/visitor/session", {"site": site_key})
        visitor = await Peer.connect("visitor", visitor_session, trust)
        await visitor.send({"t": "open", "text": "My order never arrived, this is terrible and I am angry",
                            "tags": [skill]})
        conv = (await visitor.expect("conv"))["conv"]
        assigned = await agent.expect("conv", conv=conv)
        step(f"visitor opened conversation {conv}; routed to the agent ({assigned['state']})")
        await agent.send({"t": "accept", "conv": conv})
        await agent.send({"t": "send", "conv": conv, "cmid": "a1", "text": "Sorry to hear that, let me check."})
        await agent.expect("ack", cmid="a1")
        reply = await visitor.expect("msg", conv=conv, text="Sorry to hear that, let me check.")
        step(f"agent -> visitor: seq {reply['seq']} delivered")
        await visitor.send({"t": "send", "conv": conv, "cmid": "v2", "text": "Thank you, that is great!"})
        ack = await visitor.expect("ack", cmid="v2")
        await agent.expect("msg", conv=conv, seq=ack["seq"])
        step(f"visitor -> agent: seq {ack['seq']} acked and delivered")
        scored = 0.0
        for _ in range(100):
            async with http.get(base + "/metrics", ssl=trust) as response:
                for line in (await response.text()).splitlines():
                    if line.startswith("kefu_messages_scored_total "):
                        scored = float(line.split()[1])
            if scored >= 2:
                break
            await asyncio.sleep(0.2)
        if scored < 1:
            raise SystemExit("the sentiment model scored no message (kefu_messages_scored_total = 0)")
        step(f"sentiment model scored {scored:.0f} visitor messages (kefu_messages_scored_total)")
        await visitor.ws.close()
        await agent.ws.close()


if __name__ == "__main__":
    asyncio.run(smoke(*sys.argv[1:5]))
