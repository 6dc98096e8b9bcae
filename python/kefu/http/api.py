"""The HTTP API (docs/protocol.md "Endpoints") on aiohttp, in the same process and loop as the gateway.

Every handler validates its input and answers errors as JSON ``{"error": code, "msg": text}`` with
the matching status; a conversation the caller may not read is a 404, like one that does not exist.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import math
import re
import secrets
import time
from importlib import resources
from typing import Any

from aiohttp import web
from kefu import auth
from kefu.auth import Principal
from kefu.http.client_address import ClientAddress
from kefu.http.guard import SlowClientGuard
from kefu.realtime.frames import decode_json_text, text_problem
from kefu.realtime.hub import Hub
from kefu.storage.base import Conflict, Site, StorageError
from kefu.web.pages import Pages
from kefu.web.topics import TopicCache

log = logging.getLogger("kefu.http")

MAX_BODY = 64 * 1024
MAX_BODY_DEPTH = 16  # JSON nesting in request bodies (ours need 3)
HISTORY_MAX_LIMIT = 500
STATIC_FILES = {"index.html": "text/html"}
# A visitor secret as issued: 256 random bits, urlsafe base64 without padding (43 characters).
VISITOR_SECRET_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}\Z")


def new_visitor_secret() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


def visitor_secret_hash(secret: str) -> str:
    """What storage keeps: SHA-256 suffices for 256 random bits (no dictionary to slow down)."""
    return hashlib.sha256(secret.encode()).hexdigest()


_ERROR_CLASSES: dict[int, type[web.HTTPException]] = {
    400: web.HTTPBadRequest, 401: web.HTTPUnauthorized, 403: web.HTTPForbidden, 404: web.HTTPNotFound,
    408: web.HTTPRequestTimeout, 409: web.HTTPConflict, 429: web.HTTPTooManyRequests,
    500: web.HTTPInternalServerError, 503: web.HTTPServiceUnavailable,
}


def ApiError(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.HTTPException:
    """An HTTP error whose body is the API's JSON error shape."""
    return _ERROR_CLASSES[status](text=json.dumps({"error": code, "msg": message}),
                                  content_type="application/json", headers=headers)


class Api:
    def __init__(self, hub: Hub, signer: auth.TokenSigner, sites: SiteCache, *,
                 guard: SlowClientGuard | None = None) -> None:
        self.hub = hub
        self.storage = hub.storage
        self.config = hub.config
        self.signer = signer
        self.sites = sites
        self.guard = guard
        self.client_address = ClientAddress(self.config.trusted_proxies)
        # Per account: few tries. Per client address: more, since many people may share one address.
        self.account_throttle = auth.LoginThrottle(max_failures=5, window_s=60)
        self.address_throttle = auth.LoginThrottle(max_failures=30, window_s=60)
        self.topics = TopicCache(self.storage.list_agents, hub.online_agents)

    def app(self) -> web.Application:
        middlewares = [self.guard.watch] if self.guard is not None else []
        app = web.Application(client_max_size=MAX_BODY, middlewares=[*middlewares, self._errors])
        app.router.add_post("/api/v1/visitor/session", self.visitor_session)
        app.router.add_route("OPTIONS", "/api/v1/visitor/session", self.visitor_session_preflight)
        app.router.add_post("/api/v1/auth/login", self.login)
        app.router.add_post("/api/v1/auth/logout", self.logout)
        app.router.add_get("/api/v1/conversations/{conv}/messages", self.history)
        app.router.add_get("/api/v1/conversations/{conv}/routing", self.routing_decisions)
        app.router.add_get("/api/v1/admin/agents", self.list_agents)
        app.router.add_post("/api/v1/admin/agents", self.create_agent)
        app.router.add_patch("/api/v1/admin/agents/{agent}", self.update_agent)
        from kefu.http.admin_api import AdminApi  # they build on this module, so imported here
        from kefu.http.console_api import ConsoleApi
        ConsoleApi(self).register(app)
        AdminApi(self).register(app)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/api/v1/sites/{key}/topics", self.site_topics)
        Pages(self.config.ws_url()).add_routes(app)  # /widget.js, /console/, /admin/ (before /{name})
        app.router.add_get("/", self.static_file)
        app.router.add_get("/{name}", self.static_file)
        return app

    @web.middleware
    async def _errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except StorageError:
            log.exception("storage failed during %s", request.path)
            raise ApiError(503, "unavailable", "storage unavailable, retry later") from None
        except Exception:
            # A bug, not bad input (inputs are checked): one log line with the traceback, and a
            # JSON 500 without it.
            log.exception("unexpected error during %s %s", request.method, request.path)
            raise ApiError(500, "internal", "internal error") from None

    def client(self, request: web.Request) -> str:
        """The client's address (X-Forwarded-For believed only from KEFU_TRUSTED_PROXIES)."""
        return self.client_address.of(request.remote, request.headers.get("X-Forwarded-For"))

    # --- helpers --------------------------------------------------------------------------------
    async def _json(self, request: web.Request) -> dict[str, Any]:
        """The body as a JSON object whose every string is storable: 400 for anything else
        (invalid UTF-8 or JSON, NaN, nesting past MAX_BODY_DEPTH, U+0000, lone surrogates), 408 when
        it does not arrive in time, 413 past MAX_BODY."""
        try:
            if self.guard is not None:
                raw = await self.guard.read_body(request)
            else:
                raw = await request.read()
        except TimeoutError:
            raise ApiError(408, "timeout", "the request body did not arrive in time") from None
        except web.HTTPException:
            raise
        except Exception as error:  # the client aborted or sent a malformed body
            log.info("unreadable request body on %s: %s", request.path, type(error).__name__)
            raise ApiError(400, "bad_request", "the request body could not be read") from None
        try:
            body = decode_json_text(raw.decode("utf-8"))
        except (ValueError, RecursionError):
            raise ApiError(400, "bad_request", "body must be a JSON object") from None
        if type(body) is not dict:
            raise ApiError(400, "bad_request", "body must be a JSON object")
        problem = _json_problem(body, 1)
        if problem is not None:
            raise ApiError(400, "bad_request", problem)
        return body

    async def _bearer(self, request: web.Request) -> Principal:
        """The token's principal; an agent's token must also match the agent's current state
        (generation, role, not disabled): issue 8, item 1."""
        header = request.headers.get("Authorization", "")
        token = header[7:] if header.startswith("Bearer ") else None
        principal = self.signer.verify(token)
        if principal is None or (principal.is_staff and not await self.hub.agent_states.check(principal)):
            raise ApiError(401, "unauthorized", "missing, invalid, expired or revoked bearer token",
                           headers={"WWW-Authenticate": "Bearer"})
        return principal

    async def _admin(self, request: web.Request) -> Principal:
        principal = await self._bearer(request)
        if principal.role != "admin":
            raise ApiError(403, "forbidden", "admins only")
        return principal

    @staticmethod
    def _str(body: dict[str, Any], key: str, max_len: int, *, required: bool = False) -> str | None:
        value = body.get(key)
        if value is None and not required:
            return None
        if type(value) is not str or not value or len(value) > max_len:
            raise ApiError(400, "bad_request", f"'{key}' must be a non-empty string of at most {max_len} characters")
        return value

    @staticmethod
    def _geo(body: dict[str, Any]) -> tuple[float, float] | None:
        geo = body.get("geo")
        if geo is None:
            return None
        try:
            lat, lon = float(geo["lat"]), float(geo["lon"])
        except (TypeError, KeyError, ValueError, OverflowError):
            raise ApiError(400, "bad_request", "'geo' must be {\"lat\": number, \"lon\": number}") from None
        if not (math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180):
            raise ApiError(400, "bad_request", "'geo' is out of range")
        return lat, lon

    @staticmethod
    def _str_list(body: dict[str, Any], key: str, max_items: int = 20, max_len: int = 64) -> tuple[str, ...]:
        value = body.get(key)
        if value is None:
            return ()
        if type(value) is not list or len(value) > max_items or not all(
                type(v) is str and 0 < len(v) <= max_len for v in value):
            raise ApiError(400, "bad_request", f"'{key}' must be a list of at most {max_items} short strings")
        return tuple(value)

    def _cors(self, site: Site, request: web.Request) -> dict[str, str]:
        origin = request.headers.get("Origin")
        if origin is None:
            return {}  # not a browser: SDKs and servers authenticate by token alone
        if origin not in site.allowed_origins:
            raise ApiError(403, "forbidden", "origin not allowed for this site")
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}

    # --- visitors -------------------------------------------------------------------------------
    async def visitor_session_preflight(self, request: web.Request) -> web.Response:
        origin = request.headers.get("Origin", "")
        if not any(origin in site.allowed_origins for site in self.sites.all()):
            raise ApiError(403, "forbidden", "origin not allowed")
        return web.Response(status=204, headers={
            "Access-Control-Allow-Origin": origin, "Access-Control-Allow-Methods": "POST",
            "Access-Control-Allow-Headers": "Content-Type", "Access-Control-Max-Age": "600", "Vary": "Origin"})

    async def visitor_session(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        site_key = self._str(body, "site", 128, required=True)
        site = await self.sites.by_key(site_key or "")
        if site is None:
            raise ApiError(404, "not_found", "unknown site")
        headers = self._cors(site, request)
        address = self.client(request)
        wait = self.hub.admission.session(address, site.id)
        if wait:
            raise ApiError(429, "rate_limited", "too many visitor sessions; try later",
                           headers={"Retry-After": str(math.ceil(wait))})
        # A returning visitor proves itself with the secret issued with its id (issue 8, item 9);
        # without it (or with a wrong one) it silently becomes a new visitor.
        visitor_id = self._str(body, "visitor_id", 64)
        presented = self._str(body, "visitor_secret", 64)
        presented_hash = (visitor_secret_hash(presented)
                          if presented and VISITOR_SECRET_PATTERN.match(presented) else None)
        fresh_secret = new_visitor_secret()
        visitor = await self.storage.upsert_visitor(
            site.id, visitor_id, name=self._str(body, "name", 100),
            lang=self._str(body, "lang", 16), geo=self._geo(body), tags=self._str_list(body, "tags"),
            secret_hash=presented_hash, new_secret_hash=visitor_secret_hash(fresh_secret))
        secret = presented if presented_hash is not None and visitor.id == visitor_id else fresh_secret
        principal = Principal(id=visitor.id, role="visitor", site_id=site.id, name=visitor.name, addr=address)
        token, expires = self.signer.issue(principal, self.config.visitor_token_ttl_s)
        return web.json_response({"visitor_id": visitor.id, "visitor_secret": secret, "token": token,
                                  "expires_at": expires, "ws_url": self.config.ws_url(request.host)},
                                 headers=headers)

    async def site_topics(self, request: web.Request) -> web.Response:
        """The widget's topic list (kefu.web.topics); origin-checked like the session endpoint."""
        key = request.match_info["key"]
        site = await self.sites.by_key(key) if len(key) <= 128 else None
        if site is None:
            raise ApiError(404, "not_found", "unknown site")
        headers = self._cors(site, request)
        return web.json_response(await self.topics.for_site(site.id), headers=headers)

    # --- agents ---------------------------------------------------------------------------------
    async def login(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        username = self._str(body, "username", 128, required=True) or ""
        password = self._str(body, "password", 1024, required=True) or ""
        now = time.monotonic()
        address = self.client(request)
        throttles = ((self.account_throttle, username.casefold()), (self.address_throttle, address))
        wait = max(throttle.retry_after(key, now) for throttle, key in throttles)
        if wait > 0:
            raise ApiError(429, "rate_limited", "too many failed logins; try later",
                           headers={"Retry-After": str(math.ceil(wait))})
        # Counted before hashing: concurrent guesses cannot all reach the hash (issue 8, item 3).
        for throttle, key in throttles:
            throttle.failed(key, now)
        agent = await self.storage.get_agent_by_username(username)
        loop = asyncio.get_running_loop()
        ok = await loop.run_in_executor(None, auth.verify_password, agent.password_hash if agent else None, password)
        if not ok or agent is None or agent.disabled:
            raise ApiError(401, "unauthorized", "wrong username or password")
        self.account_throttle.succeeded(username.casefold())
        self.address_throttle.released(address, now)
        if auth.needs_rehash(agent.password_hash):
            new_hash = await loop.run_in_executor(None, auth.hash_password, password)
            await self.storage.update_agent(agent.id, password_hash=new_hash)
        principal = Principal(id=agent.id, role=agent.role, site_id=agent.site_id, name=agent.name,
                              gen=agent.token_gen)
        token, expires = self.signer.issue(principal, self.config.agent_token_ttl_s)
        return web.json_response({"token": token, "agent_id": agent.id, "role": agent.role,
                                  "expires_at": expires, "ws_url": self.config.ws_url(request.host)})

    async def logout(self, request: web.Request) -> web.Response:
        """Revoke every token of the calling agent (all its devices) and close its sockets."""
        principal = await self._bearer(request)
        if not principal.is_staff:
            raise ApiError(403, "forbidden", "agents only")
        agent = await self.storage.update_agent(principal.id, bump_token_gen=True)
        self.hub.agent_states.remember(agent)
        self.hub.revoke(agent.id, b"logged out")
        return web.Response(status=204)

    # --- history --------------------------------------------------------------------------------
    def _conv_param(self, request: web.Request) -> int:
        try:
            conv_id = int(request.match_info["conv"])
        except ValueError:
            raise ApiError(404, "not_found", "no such conversation") from None
        if not 0 < conv_id < 2**53:
            raise ApiError(404, "not_found", "no such conversation")
        return conv_id

    async def _readable(self, principal: Principal, conv_id: int) -> None:
        conv = await self.storage.get_conversation(conv_id)
        if conv is None or not self.hub._can_access(principal, conv):
            raise ApiError(404, "not_found", "no such conversation")

    @staticmethod
    def _int_query(request: web.Request, key: str, default: int, low: int, high: int) -> int:
        raw = request.query.get(key)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ApiError(400, "bad_request", f"'{key}' must be an integer") from None
        if not low <= value <= high:
            raise ApiError(400, "bad_request", f"'{key}' must be between {low} and {high}")
        return value

    async def history(self, request: web.Request) -> web.Response:
        principal = await self._bearer(request)
        conv_id = self._conv_param(request)
        await self._readable(principal, conv_id)
        after = self._int_query(request, "after_seq", 0, 0, 2**53 - 1)
        limit = self._int_query(request, "limit", 100, 1, HISTORY_MAX_LIMIT)
        messages = await self.storage.messages_after(conv_id, after, limit)
        return web.json_response({"conv": conv_id, "messages": [
            {k: v for k, v in self.hub._msg_frame(m).items() if k != "t"} for m in messages]})

    async def routing_decisions(self, request: web.Request) -> web.Response:
        principal = await self._bearer(request)
        if not principal.is_staff:
            raise ApiError(404, "not_found", "no such conversation")
        conv_id = self._conv_param(request)
        await self._readable(principal, conv_id)
        return web.json_response({"conv": conv_id, "decisions": await self.storage.routing_decisions(conv_id)})

    # --- administration -------------------------------------------------------------------------
    def _agent_json(self, agent: Any) -> dict[str, Any]:
        return {"agent_id": agent.id, "username": agent.username, "name": agent.name, "role": agent.role,
                "teams": list(agent.teams), "skills": agent.skills, "capacity": agent.capacity,
                "languages": list(agent.languages), "disabled": agent.disabled,
                "online": agent.id in self.hub.online_agents}

    async def list_agents(self, request: web.Request) -> web.Response:
        admin = await self._admin(request)
        agents = await self.storage.list_agents(admin.site_id)
        return web.json_response({"agents": [self._agent_json(a) for a in agents]})

    def _agent_fields(self, body: dict[str, Any]) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        if "name" in body:
            fields["name"] = self._str(body, "name", 100, required=True)
        if "role" in body:
            if body["role"] not in ("agent", "admin"):
                raise ApiError(400, "bad_request", "'role' is agent or admin")
            fields["role"] = body["role"]
        if "skills" in body:
            skills = body["skills"]
            if type(skills) is not dict or len(skills) > 64 or not all(
                    type(k) is str and 0 < len(k) <= 128 and type(v) in (int, float) and 0 <= v <= 1
                    for k, v in skills.items()):
                raise ApiError(400, "bad_request", "'skills' maps up to 64 skill paths to proficiency 0..1")
            fields["skills"] = {k.strip("/"): float(v) for k, v in skills.items()}
        if "capacity" in body:
            if type(body["capacity"]) is not int or not 1 <= body["capacity"] <= 1000:
                raise ApiError(400, "bad_request", "'capacity' is an integer 1..1000")
            fields["capacity"] = body["capacity"]
        if "languages" in body:
            fields["languages"] = self._str_list(body, "languages", 16, 16)
        if "teams" in body:
            fields["teams"] = self._str_list(body, "teams")
        if "geo" in body:
            fields["geo"] = self._geo(body)
        if "disabled" in body:
            if type(body["disabled"]) is not bool:
                raise ApiError(400, "bad_request", "'disabled' is true or false")
            fields["disabled"] = body["disabled"]
        return fields

    async def create_agent(self, request: web.Request) -> web.Response:
        admin = await self._admin(request)
        body = await self._json(request)
        username = self._str(body, "username", 64, required=True) or ""
        password = self._str(body, "password", 1024, required=True) or ""
        if len(password) < 8:
            raise ApiError(400, "bad_request", "'password' needs at least 8 characters")
        fields = self._agent_fields(body)
        fields.pop("disabled", None)
        password_hash = await asyncio.get_running_loop().run_in_executor(None, auth.hash_password, password)
        try:
            agent = await self.storage.create_agent(admin.site_id, username, password_hash,
                                                    name=fields.pop("name", None) or username, **fields)
        except Conflict:
            # Usernames are unique per installation (login names an account by username alone), so
            # this also answers for other sites' agents; it names neither the site nor the agent.
            raise ApiError(409, "conflict", "this username is not available") from None
        return web.json_response(self._agent_json(agent), status=201)

    async def update_agent(self, request: web.Request) -> web.Response:
        admin = await self._admin(request)
        agent_id = request.match_info["agent"]
        # A path can carry %00 (PostgreSQL refuses U+0000 in a query parameter: a 503, not a 404).
        agent = None if text_problem(agent_id) else await self.storage.get_agent(agent_id)
        if agent is None or agent.site_id != admin.site_id:
            raise ApiError(404, "not_found", "no such agent")
        body = await self._json(request)
        fields = self._agent_fields(body)
        if "password" in body:
            password = self._str(body, "password", 1024, required=True) or ""
            fields["password_hash"] = await asyncio.get_running_loop().run_in_executor(
                None, auth.hash_password, password)
        # A changed identity revokes every token issued before (the generation is bumped in the same
        # statement) and closes the old sessions at once; a disabled agent goes offline at once.
        revoking = (fields.get("disabled") is True and not agent.disabled) or "password_hash" in fields or (
            "role" in fields and fields["role"] != agent.role)
        agent = await self.storage.update_agent(agent.id, **fields, bump_token_gen=revoking)
        self.hub.agent_states.remember(agent)
        if revoking:
            self.hub.revoke(agent.id, offline_now=agent.disabled)
        else:
            await self.hub.agent_changed(agent)
        return web.json_response(self._agent_json(agent))

    # --- operations -----------------------------------------------------------------------------
    async def healthz(self, request: web.Request) -> web.Response:
        checks = {"storage": False, "bus": False}
        try:
            checks["storage"] = await asyncio.wait_for(self.storage.healthy(), 2.0)
        except (TimeoutError, StorageError):
            pass
        try:
            checks["bus"] = await asyncio.wait_for(self.hub.bus.healthy(), 2.0)
        except TimeoutError:
            pass
        ok = all(checks.values())
        return web.json_response({"ok": ok, **checks}, status=200 if ok else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=self.hub.metrics.render(), content_type="text/plain", charset="utf-8")

    async def static_file(self, request: web.Request) -> web.Response:
        name = request.match_info.get("name", "index.html")
        if name not in STATIC_FILES:
            raise ApiError(404, "not_found", "no such page")
        data = resources.files("kefu.web").joinpath("static", name).read_bytes()
        return web.Response(body=data, content_type=STATIC_FILES[name], headers={
            "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache",
            "Content-Security-Policy": "default-src 'self'; connect-src 'self' ws: wss:"})


def _json_problem(value: Any, depth: int) -> str | None:
    """Why a parsed request body cannot be accepted (too deep, a string with U+0000 or a lone
    surrogate, as a key or value), or None."""
    if depth > MAX_BODY_DEPTH:
        return f"JSON nests deeper than {MAX_BODY_DEPTH} levels"
    if type(value) is str:
        problem = text_problem(value)
        return None if problem is None else f"a string {problem}"
    if type(value) is dict:
        for key, item in value.items():
            problem = _json_problem(key, depth) or _json_problem(item, depth + 1)
            if problem:
                return problem
    elif type(value) is list:
        for item in value:
            problem = _json_problem(item, depth + 1)
            if problem:
                return problem
    return None


class SiteCache:
    """Sites by id and key, for the WebSocket handshake (which cannot wait on the database)."""

    def __init__(self, storage: Any) -> None:
        self._storage = storage
        self._by_id: dict[int, Site] = {}
        self._by_key: dict[str, Site] = {}

    async def reload(self) -> None:
        sites = await self._storage.list_sites()
        self._by_id = {s.id: s for s in sites}
        self._by_key = {s.key: s for s in sites}

    def remember(self, site: Site) -> None:
        self._by_id[site.id] = site
        self._by_key[site.key] = site

    def get(self, site_id: int) -> Site | None:
        return self._by_id.get(site_id)

    def all(self) -> list[Site]:
        return list(self._by_id.values())

    async def by_key(self, key: str) -> Site | None:
        site = self._by_key.get(key)
        if site is None:
            site = await self._storage.get_site_by_key(key)
            if site is not None:
                self.remember(site)
        return site
