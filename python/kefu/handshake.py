"""The WebSocket upgrade: authenticate (token, origin, subprotocol) before any 101.

Shared by the single-process server and the gateway workers, and kept free of heavy imports so a
worker process starts fast (it never imports the hub, storage or aiohttp).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from picows import WSUpgradeRequest, WSUpgradeResponse, WSUpgradeResponseWithListener

from kefu.auth import Principal, TokenSigner

SUBPROTOCOL_JSON = "kefu.json.v1"
SUBPROTOCOL_BINARY = "kefu.bin.v1"


@dataclass
class Gateway:
    """The picows listener factory: authenticates the upgrade before any 101."""

    hub: Any  # new_connection(principal, binary) and metrics.inc(name): the hub, or a worker's relay
    signer: TokenSigner
    sites: Any  # get(site_id) -> an object with allowed_origins, or None

    def __call__(self, request: WSUpgradeRequest) -> Any:
        url = urlsplit(request.path.decode("latin-1"))
        if url.path != "/ws":
            return None  # 404
        token = parse_qs(url.query).get("token", [None])[0]
        principal = self.signer.verify(token)
        if principal is None:
            return self._refuse(401, b"missing, invalid or expired token")
        # An agent token revoked (disabled, role or password changed, logged out) is refused here when
        # this process knows it; otherwise `hello` checks storage and closes with 1008. A worker's relay
        # has no agent-state cache: there `hello` (in the control process) is the check.
        agent_states = getattr(self.hub, "agent_states", None)
        if principal.is_staff and agent_states is not None and agent_states.check_cached(principal) is False:
            return self._refuse(401, b"token revoked")
        if principal.role == "visitor" and not self._origin_allowed(principal, request.headers.get("Origin")):
            return self._refuse(403, b"origin not allowed for this site")
        # Socket limits per visitor, address and site: here in one process; in a gateway worker the
        # control process, which has the counts, checks them when the connection arrives.
        admission = getattr(self.hub, "admission", None)
        refused = admission.may_connect(principal) if admission is not None else None
        if refused is not None:
            return self._refuse(429, refused.encode())
        offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
        chosen = next((p for p in offered if p in (SUBPROTOCOL_JSON, SUBPROTOCOL_BINARY)), None)
        if offered and chosen is None:
            return self._refuse(400, b"supported subprotocols: kefu.json.v1, kefu.bin.v1")
        listener = self.hub.new_connection(principal, binary=chosen == SUBPROTOCOL_BINARY)
        if chosen is None:
            return listener
        response = WSUpgradeResponse.create_101_response({"Sec-WebSocket-Protocol": chosen})
        return WSUpgradeResponseWithListener(response, listener)

    def _origin_allowed(self, principal: Principal, origin: str | None) -> bool:
        if origin is None:
            return True  # not a browser; the token alone authenticates (docs/protocol.md)
        site = self.sites.get(principal.site_id)
        return site is not None and origin in site.allowed_origins

    def _refuse(self, status: int, body: bytes) -> WSUpgradeResponseWithListener:
        self.hub.metrics.inc(f"kefu_ws_refused_{status}_total")
        return WSUpgradeResponseWithListener(
            WSUpgradeResponse.create_error_response(status, body, {"Content-Type": "text/plain"}), None)
