"""Which hosts result videos may be fetched from: refusing the local network by default (pure).

A result URL comes from the server, so a hostile or compromised server could aim downloads at
``127.0.0.1``, a router at ``192.168.0.1`` or a cloud metadata service at ``169.254.169.254``.
The policy refuses loopback, link-local, private and other non-public addresses, except the
API's own host (the emulator serves its videos from there) and hosts the user allows.

Two checks: before sending, the URL's host (a literal address, or ``localhost``); after
connecting, the address actually connected to, so a name that resolves to a private address
(DNS rebinding included) is refused before any of its body is read or written.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from ._http import lib

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
ANY_HOST = "*"
"""In ``download_hosts``: allow every host, e.g. behind a proxy on a private address (the
address connected to is then the proxy's)."""


def normalize_host(host: str) -> str:
    """``host`` lower-cased, without IPv6 brackets or a trailing dot."""
    return host.strip().lower().strip("[]").rstrip(".")


def _literal(host: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_public(address: IPAddress) -> bool:
    """False for loopback, link-local, private, multicast, reserved and unspecified addresses."""
    return address.is_global and not address.is_multicast


@dataclass(frozen=True, slots=True)
class HostPolicy:
    """Hosts downloads may reach.

    Args:
        allowed: Host names or addresses always allowed (normalised), e.g. the API's host;
            ``"*"`` allows every host (the policy is then off).
    """

    allowed: frozenset[str] = frozenset()

    @classmethod
    def build(cls, *, api_url: str, extra: Iterable[str] = ()) -> HostPolicy:
        """The policy that allows the host of ``api_url`` and the hosts in ``extra``."""
        hosts = {normalize_host(lib.URL(api_url).host)}
        hosts.update(normalize_host(h) for h in extra if h.strip())
        return cls(frozenset(hosts))

    def refusal(self, url: lib.URL) -> str | None:
        """Why ``url`` may not be fetched, or None if its host is fine before connecting."""
        host = normalize_host(url.host)
        if host in self.allowed or ANY_HOST in self.allowed:
            return None
        if host == "localhost" or host.endswith(".localhost"):
            return f"{host} is this machine"
        address = _literal(host)
        if address is not None and not is_public(address):
            return f"{host} is not a public address"
        return None

    def refusal_after_connect(self, url: lib.URL, response: lib.Response) -> str | None:
        """Why the address ``response`` came from may not be used, or None if it is fine.

        Only real network connections report their address; in-memory transports (tests,
        ``ASGITransport``) have none and pass.
        """
        if normalize_host(url.host) in self.allowed or ANY_HOST in self.allowed:
            return None
        stream = response.extensions.get("network_stream")
        if stream is None:
            return None
        peer = stream.get_extra_info("server_addr")
        if not isinstance(peer, tuple) or not peer or not isinstance(peer[0], str):
            return None
        address = _literal(peer[0])
        if address is not None and not is_public(address):
            return f"{url.host} resolved to {peer[0]}, not a public address"
        return None
