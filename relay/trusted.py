"""`--trusted-proxies`: the proxies whose forwarding headers the relay believes.

Kept apart from relay/proxies.py (which applies it to requests) so that the
configuration can name it without importing the request path.
"""

from __future__ import annotations

import ipaddress

import attrs

__all__ = ["TrustedProxies"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@attrs.frozen
class TrustedProxies:
    """The networks whose forwarding headers the relay believes (empty: none)."""

    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> TrustedProxies:
        """`127.0.0.1,10.0.0.0/8,::1` -> networks.

        Raises:
            ValueError: an entry is not an address or CIDR, with the entry named.
        """
        networks = []
        for part in filter(None, (p.strip() for p in (text or "").split(","))):
            try:
                networks.append(ipaddress.ip_network(part, strict=False))
            except ValueError:
                raise ValueError(
                    f"{part!r} is not an IP address or CIDR (e.g. 127.0.0.1 or 10.0.0.0/8)"
                ) from None
        return cls(tuple(networks))

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, host: str | None) -> bool:
        """Whether `host` (an address as text) is one of the trusted proxies."""
        if not host or not self.networks:
            return False
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)
