"""The client's address, the one rate limits and forget records are keyed by.

``REMOTE_ADDR`` is the peer. Only when the peer is one of FACEMATCH_FORWARDED_ALLOW_IPS (the
reverse proxy; gunicorn.conf.py reads the same variable) is ``X-Forwarded-For`` believed, and
then the right-most address that is not itself a trusted proxy is the client: everything to
its left was written by the client and can be forged.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Iterable
from functools import lru_cache

from flask import request


class TrustedProxies:
    def __init__(self, entries: Iterable[str]) -> None:
        cleaned = [e.strip() for e in entries if e and e.strip()]
        self.any = "*" in cleaned
        self.networks = tuple(ipaddress.ip_network(e, strict=False) for e in cleaned if e != "*")

    def trusts(self, address: str) -> bool:
        if self.any:
            return True
        ip = _ip(address)
        return ip is not None and any(ip in net for net in self.networks)


@lru_cache(maxsize=8)
def trusted_proxies(entries: tuple[str, ...]) -> TrustedProxies:
    return TrustedProxies(entries)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    mapped = getattr(ip, "ipv4_mapped", None)
    return mapped or ip


def client_address(allowed: tuple[str, ...]) -> str:
    peer = request.remote_addr or "unknown"
    proxies = trusted_proxies(allowed)
    forwarded = request.headers.get("X-Forwarded-For")
    if not forwarded or not proxies.trusts(peer):
        return _canonical(peer)
    hops = [h.strip() for h in forwarded.split(",") if h.strip()]
    for hop in reversed(hops):
        if _ip(hop) is None:  # garbage where an address should be: stop believing the header
            break
        if not proxies.trusts(hop):
            return _canonical(hop)
    return _canonical(hops[0]) if hops and _ip(hops[0]) is not None else _canonical(peer)


def _canonical(text: str) -> str:
    ip = _ip(text)
    return str(ip) if ip is not None else text[:64]


def client_hash(secret: bytes, address: str) -> str:
    """A keyed hash of the address: equal for one client, useless without the server's secret."""
    return hmac.new(secret, address.encode(), hashlib.sha256).hexdigest()[:32]
