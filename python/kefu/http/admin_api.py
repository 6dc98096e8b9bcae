"""HTTP endpoints behind the admin page (/admin), beside the agent endpoints in api.py.

The admin's own site (allowed origins, routing weights and ring timings, the embed snippet), the
site's canned replies, and live server statistics for the dashboard chart. Admins only; an admin sees
and changes only its own site.
"""

from __future__ import annotations

import math
import re
import time
from typing import Any

from aiohttp import web
from kefu.auth import Principal
from kefu.http.api import Api, ApiError
from kefu.http.console_api import canned_json
from kefu.metrics import Histogram
from kefu.storage.base import Conflict, NotFound, Site, StorageError

ORIGIN_PATTERN = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?|https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")
MAX_ORIGINS = 50
WEIGHT_NAMES = ("geo", "sentiment", "skill", "load", "fairness")
MAX_RINGS = 8
SHORTCUT_MAX = 32
CANNED_TEXT_MAX = 4000


class AdminApi:
    def __init__(self, api: Api) -> None:
        self.api = api
        self.hub = api.hub
        self.storage = api.storage

    def register(self, app: web.Application) -> None:
        app.router.add_get("/api/v1/admin/site", self.get_site)
        app.router.add_patch("/api/v1/admin/site", self.update_site)
        app.router.add_post("/api/v1/admin/canned", self.create_canned)
        app.router.add_patch("/api/v1/admin/canned/{reply}", self.update_canned)
        app.router.add_delete("/api/v1/admin/canned/{reply}", self.delete_canned)
        app.router.add_get("/api/v1/admin/stats", self.stats)

    # --- site -----------------------------------------------------------------------------------
    async def _own_site(self, admin: Principal) -> Site:
        site = await self.storage.get_site(admin.site_id)
        if site is None:
            raise ApiError(404, "not_found", "no such site")
        return site

    def _site_json(self, request: web.Request, site: Site) -> dict[str, Any]:
        config = self.hub.router.site_config(site.id)
        base = f"{request.scheme}://{request.host}"
        return {
            "site_id": site.id, "key": site.key, "name": site.name, "allowed_origins": list(site.allowed_origins),
            "routing": site.routing,
            "effective": {"weights": dict(zip(WEIGHT_NAMES, config.weights.as_tuple())),
                          "ring_schedule": [list(ring) for ring in config.ring_schedule],
                          "accept_timeout_s": config.accept_timeout_s},
            "embed": f'<script src="{base}/widget.js" data-site="{site.key}" async></script>',
        }

    async def get_site(self, request: web.Request) -> web.Response:
        admin = await self.api._admin(request)
        return web.json_response(self._site_json(request, await self._own_site(admin)))

    async def update_site(self, request: web.Request) -> web.Response:
        admin = await self.api._admin(request)
        body = await self.api._json(request)
        if set(body) - {"allowed_origins", "routing"}:
            raise ApiError(400, "bad_request", "only 'allowed_origins' and 'routing' can be changed")
        site = await self._own_site(admin)
        origins = _origins(body["allowed_origins"]) if "allowed_origins" in body else None
        routing = _routing(body["routing"]) if "routing" in body else None
        if routing is not None:
            try:  # validates the whole configuration; raises before anything changes
                self.hub.router.set_site_config(site.id, routing)
            except (ValueError, TypeError) as exc:
                raise ApiError(400, "bad_request", f"routing: {exc}") from None
        try:
            site = await self.storage.update_site(site.id, allowed_origins=origins, routing=routing)
        except StorageError:
            if routing is not None:  # storage is the truth: the router goes back to what is stored
                self.hub.router.set_site_config(site.id, site.routing)
            raise
        self.api.sites.remember(site)
        if routing is not None:
            self.hub.routing_changed(site.id)
        return web.json_response(self._site_json(request, site))

    # --- canned replies -------------------------------------------------------------------------
    async def _own_reply(self, admin: Principal, request: web.Request) -> int:
        raw = request.match_info["reply"]
        reply = await self.storage.get_canned_reply(int(raw)) if raw.isdigit() and len(raw) < 16 else None
        if reply is None or reply.site_id != admin.site_id:
            raise ApiError(404, "not_found", "no such canned reply")
        return reply.id

    async def create_canned(self, request: web.Request) -> web.Response:
        admin = await self.api._admin(request)
        body = await self.api._json(request)
        shortcut = self.api._str(body, "shortcut", SHORTCUT_MAX, required=True) or ""
        text = self.api._str(body, "text", CANNED_TEXT_MAX, required=True) or ""
        try:
            reply = await self.storage.create_canned_reply(admin.site_id, shortcut.strip(), text)
        except Conflict:
            raise ApiError(409, "conflict", "this shortcut exists") from None
        return web.json_response(canned_json(reply), status=201)

    async def update_canned(self, request: web.Request) -> web.Response:
        admin = await self.api._admin(request)
        reply_id = await self._own_reply(admin, request)
        body = await self.api._json(request)
        shortcut = self.api._str(body, "shortcut", SHORTCUT_MAX)
        text = self.api._str(body, "text", CANNED_TEXT_MAX)
        try:
            reply = await self.storage.update_canned_reply(
                reply_id, shortcut=shortcut.strip() if shortcut else None, text=text)
        except Conflict:
            raise ApiError(409, "conflict", "this shortcut exists") from None
        except NotFound:
            raise ApiError(404, "not_found", "no such canned reply") from None
        return web.json_response(canned_json(reply))

    async def delete_canned(self, request: web.Request) -> web.Response:
        admin = await self.api._admin(request)
        await self.storage.delete_canned_reply(await self._own_reply(admin, request))
        return web.Response(status=204)

    # --- live statistics ------------------------------------------------------------------------
    async def stats(self, request: web.Request) -> web.Response:
        """A snapshot for the dashboard. Latency histograms come as cumulative bucket counts so the
        page can compute p50/p99 over its own polling interval (differences of two snapshots)."""
        admin = await self.api._admin(request)
        metrics = self.hub.metrics
        queued = await self.storage.list_conversations(site_id=admin.site_id, states=("queued",), limit=1000)
        return web.json_response({
            "ts": time.time(),
            "connections": len(self.hub.connections),
            "agents_online": len(self.hub.online_agents),
            "messages_acked": metrics.counters.get("kefu_messages_acked_total", 0),
            "queue_length": len(queued),
            "ack": _histogram_json(metrics.ack_latency),
            "delivery": _histogram_json(metrics.delivery_latency),
        })


def _histogram_json(histogram: Histogram) -> dict[str, Any]:
    def ms(seconds: float) -> float | None:
        return round(seconds * 1000, 3) if math.isfinite(seconds) else None

    return {"bounds_ms": [ms(b) for b in histogram.bounds], "counts": list(histogram.counts),
            "count": histogram.count, "p50_ms": ms(histogram.quantile(0.5)), "p99_ms": ms(histogram.quantile(0.99))}


def _origins(value: Any) -> tuple[str, ...]:
    if type(value) is not list or len(value) > MAX_ORIGINS or not all(
            type(o) is str and len(o) <= 200 and ORIGIN_PATTERN.fullmatch(o) for o in value):
        raise ApiError(400, "bad_request",
                       f"'allowed_origins' is a list of at most {MAX_ORIGINS} origins like https://shop.example[:port]")
    return tuple(dict.fromkeys(value))  # exact matches are compared, so duplicates only add noise


def _number(value: Any, name: str, low: float, high: float) -> float:
    if type(value) not in (int, float) or not math.isfinite(value) or not low <= value <= high:
        raise ApiError(400, "bad_request", f"routing: '{name}' is a number in {low}..{high}")
    return float(value)


def _routing(value: Any) -> dict[str, Any]:
    """The per-site routing settings an admin may change, type-checked (RoutingConfig checks the rest)."""
    if type(value) is not dict or set(value) - {"weights", "ring_schedule", "accept_timeout_s"}:
        raise ApiError(400, "bad_request", "routing: only 'weights', 'ring_schedule', 'accept_timeout_s'")
    routing: dict[str, Any] = {}
    if "weights" in value:
        weights = value["weights"]
        if type(weights) is not dict or set(weights) - set(WEIGHT_NAMES):
            raise ApiError(400, "bad_request", f"routing: 'weights' has keys among {', '.join(WEIGHT_NAMES)}")
        routing["weights"] = {k: _number(v, k, 0.0, 10.0) for k, v in weights.items()}
    if "ring_schedule" in value:
        rings = value["ring_schedule"]
        if type(rings) is not list or not 1 <= len(rings) <= MAX_RINGS or not all(
                type(r) is list and len(r) == 2 for r in rings):
            raise ApiError(400, "bad_request",
                           f"routing: 'ring_schedule' is 1..{MAX_RINGS} pairs [seconds waited, min skill match]")
        routing["ring_schedule"] = [[_number(w, "ring wait", 0.0, 86_400.0), _number(m, "ring match", 0.0, 1.0)]
                                    for w, m in rings]
    if "accept_timeout_s" in value:
        routing["accept_timeout_s"] = _number(value["accept_timeout_s"], "accept_timeout_s", 5.0, 3600.0)
    return routing
