"""HTTP endpoints behind the agent console (/console): what the WebSocket protocol does not carry.

Canned replies (read and search), the visitor panel of a conversation, the site's waiting queue,
colleagues to transfer to, and the agent's own availability. Every endpoint takes an agent or admin
token and answers only about the caller's site; a conversation the caller may not read is a 404.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web
from kefu.auth import Principal
from kefu.http.api import Api, ApiError
from kefu.storage.base import CannedReply

MOOD_TREND_MESSAGES = 20  # visitor messages scored for the panel's trend line
EARLIER_CONVERSATIONS = 20


def canned_json(reply: CannedReply) -> dict[str, Any]:
    return {"id": reply.id, "shortcut": reply.shortcut, "text": reply.text, "updated_at": reply.updated_at}


class ConsoleApi:
    def __init__(self, api: Api) -> None:
        self.api = api
        self.hub = api.hub
        self.storage = api.storage

    def register(self, app: web.Application) -> None:
        app.router.add_get("/api/v1/console/canned", self.canned)
        app.router.add_get("/api/v1/console/queue", self.queue)
        app.router.add_get("/api/v1/console/agents", self.colleagues)
        app.router.add_put("/api/v1/console/availability", self.availability)
        app.router.add_get("/api/v1/conversations/{conv}/visitor", self.visitor_panel)

    async def _staff(self, request: web.Request) -> Principal:
        principal = await self.api._bearer(request)
        if not principal.is_staff:
            raise ApiError(403, "forbidden", "agents only")
        return principal

    async def canned(self, request: web.Request) -> web.Response:
        principal = await self._staff(request)
        query = request.query.get("q") or None
        if query is not None and len(query) > 100:
            raise ApiError(400, "bad_request", "'q' is at most 100 characters")
        limit = self.api._int_query(request, "limit", 200, 1, 1000)
        replies = await self.storage.list_canned_replies(principal.site_id, query, limit)
        return web.json_response({"replies": [canned_json(r) for r in replies]})

    async def queue(self, request: web.Request) -> web.Response:
        """Conversations of the caller's site waiting for an agent (metadata only, no messages)."""
        principal = await self._staff(request)
        waiting = await self.storage.list_conversations(site_id=principal.site_id, states=("queued",), limit=1000)
        now = time.time()
        entries = []
        for conv in waiting:
            position = self.hub.router.queue_position(conv.id)
            entries.append({"conv": conv.id, "tags": list(conv.tags), "waited_s": round(now - conv.created_at, 1),
                            "position": position[0] if position else None,
                            "eta_s": round(position[1], 1) if position and position[1] is not None else None})
        entries.sort(key=lambda e: (e["position"] is None, e["position"] or 0, -e["waited_s"]))
        return web.json_response({"length": len(entries), "queued": entries})

    async def colleagues(self, request: web.Request) -> web.Response:
        """The site's enabled agents, for the transfer menu."""
        principal = await self._staff(request)
        agents = await self.storage.list_agents(principal.site_id)
        return web.json_response({"agents": [
            {"agent_id": a.id, "name": a.name, "online": a.id in self.hub.online_agents,
             "skills": a.skills, "teams": list(a.teams)}
            for a in agents if not a.disabled]})

    async def availability(self, request: web.Request) -> web.Response:
        principal = await self._staff(request)
        body = await self.api._json(request)
        status = body.get("status")
        if status not in ("online", "away"):
            raise ApiError(400, "bad_request", "'status' is online or away")
        if not await self.hub.set_availability(principal.id, status == "online"):
            raise ApiError(409, "conflict", "connect the console first: availability needs a live session")
        return web.json_response({"agent_id": principal.id, "status": status})

    async def visitor_panel(self, request: web.Request) -> web.Response:
        """Who the visitor of a conversation is: profile, tags, location, mood trend, earlier chats."""
        principal = await self._staff(request)
        conv_id = self.api._conv_param(request)
        conv = await self.storage.get_conversation(conv_id)
        if conv is None or not self.hub._can_access(principal, conv):
            raise ApiError(404, "not_found", "no such conversation")
        visitor = await self.storage.get_visitor(conv.visitor_id)
        if visitor is None:
            raise ApiError(404, "not_found", "no such conversation")
        earlier = await self.storage.list_conversations(visitor_id=visitor.id, limit=EARLIER_CONVERSATIONS + 1)
        return web.json_response({
            "conv": {"conv": conv.id, "state": conv.state, "tags": list(conv.tags), "created_at": conv.created_at},
            "visitor": {"visitor_id": visitor.id, "name": visitor.name, "lang": visitor.lang,
                        "geo": {"lat": visitor.geo[0], "lon": visitor.geo[1]} if visitor.geo else None,
                        "tags": list(visitor.tags)},
            "mood": await self._mood(conv.id, visitor.id),
            "earlier": [{"conv": c.id, "state": c.state, "agent": c.agent_id, "tags": list(c.tags),
                         "created_at": c.created_at, "closed_at": c.closed_at, "messages": c.last_seq}
                        for c in earlier if c.id != conv.id][:EARLIER_CONVERSATIONS],
        })

    async def _mood(self, conv_id: int, visitor_id: str) -> dict[str, Any]:
        """The live mood (EWMA of p_neg) and the scores of the visitor's latest messages, oldest first.
        Scored here, off the loop, rather than stored per message: the panel is opened rarely."""
        model = self.hub.sentiment
        if model is None:
            return {"current": None, "trend": []}
        conv = await self.storage.get_conversation(conv_id)
        after = max(0, (conv.last_seq if conv else 0) - 200)
        messages = [m for m in await self.storage.messages_after(conv_id, after, 200)
                    if m.sender_id == visitor_id and m.kind == "text" and m.text][-MOOD_TREND_MESSAGES:]
        scores: list[float] = []
        if messages:
            loop = asyncio.get_running_loop()
            scores = [float(p) for p in await loop.run_in_executor(
                None, model.predict_batch, [m.text for m in messages])]
        return {"current": self.hub.moods.mood(conv_id) if self.hub.moods is not None else None,
                "trend": [{"seq": m.seq, "ts": m.ts, "p_neg": round(p, 3)} for m, p in zip(messages, scores)]}
