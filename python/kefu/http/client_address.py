"""Who the client is, by address, when a reverse proxy may stand in between.

Behind a proxy every connection comes from the proxy's address, so per-address limits would lump all
clients together (30 failed logins from anyone would lock out everyone). `X-Forwarded-For` names the
client, but anyone can send that header: it is believed only when the connection comes from a
configured trusted proxy (`KEFU_TRUSTED_PROXIES`), and then only up to the first address that is not
itself trusted, reading from the right (each proxy appends the address it saw; everything to the left
of an untrusted hop is the client's own claim). With no trusted proxies the header is ignored.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(specs: Iterable[str]) -> tuple[Network, ...]:
    """`10.0.0.1`, `10.0.0.0/8`, `::1` → networks; a malformed entry is a configuration error."""
    networks = []
    for spec in specs:
        try:
            networks.append(ipaddress.ip_network(spec.strip(), strict=False))
        except ValueError:
            raise ValueError(f"KEFU_TRUSTED_PROXIES: {spec!r} is not an IP address or CIDR") from None
    return tuple(networks)


class ClientAddress:
    def __init__(self, trusted: Iterable[str]) -> None:
        self.trusted = parse_networks(trusted)

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.trusted)

    def of(self, peer: str | None, forwarded_for: str | None) -> str:
        """The client's address: `peer` (the TCP peer), or the right-most untrusted address of
        `forwarded_for` when `peer` is a trusted proxy."""
        peer = peer or ""
        if not self.trusted or not forwarded_for or not self._is_trusted(peer):
            return peer
        hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
        for hop in reversed(hops):
            if not self._is_trusted(hop):
                return _normal(hop)
        return _normal(hops[0]) if hops else peer


def _normal(address: str) -> str:
    """A canonical spelling (so `::ffff:1.2.3.4` and `1.2.3.4` count as one); junk stays as sent,
    which still keys a limit of its own."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)
