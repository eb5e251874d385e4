"""Who may see devrun's own pages: loopback clients that name this machine by a loopback name.

devrun's pages (the runner's 503 page, the child's error page, the debugger, /__devrun__/)
show what the app printed and its tracebacks. A page that uses DNS rebinding reaches
127.0.0.1 under a name its author controls, so the peer address alone proves nothing: the
Host header must be a loopback name too (browsers always send the name they resolved).

Used by the runner (never monkey-patched) and the child alike: standard library only.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# A Host header: a DNS name or IPv4 address, or an IPv6 address in brackets; an optional port.
_HOST = re.compile(r"(?P<name>[a-z0-9.-]+|\[[0-9a-f:.]+\])(?::(?P<port>[0-9]{1,5}))?", re.IGNORECASE)

BAD_HOST = 400  # a Host we do not answer to: the shape of DNS rebinding
FOREIGN_PEER = 403  # a well-named request from another machine, without the user's opt-in
REFUSAL_STATUS = {BAD_HOST: "400 Bad Request", FOREIGN_PEER: "403 Forbidden"}


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


def is_loopback_address(addr: str | None) -> bool:
    """A peer address in 127.0.0.0/8 or ::1 (an IPv4-mapped one on a dual-stack socket too)."""
    ip = _ip((addr or "").split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip is not None and ip.is_loopback


def host_name(header: str | None) -> str | None:
    """The name of a Host header, lower case (IPv6 without brackets); None when it is malformed."""
    match = _HOST.fullmatch((header or "").strip())
    if match is None:
        return None
    port = match["port"]
    if port is not None and not 1 <= int(port) <= 65535:
        return None
    name = match["name"].lower()
    if name.startswith("["):
        return name[1:-1] if isinstance(_ip(name), ipaddress.IPv6Address) else None
    return name


def is_loopback_name(name: str) -> bool:
    """localhost, *.localhost (RFC 6761: never resolved by DNS), 127.x.x.x, ::1."""
    if name == "localhost" or (name.endswith(".localhost") and ".." not in name and not name.startswith(".")):
        return True
    ip = _ip(name)
    return ip is not None and ip.is_loopback


@dataclass(frozen=True)
class Trust:
    """What one set of pages accepts: `host` is the app's configured host; `remote` is the user's
    opt-in (debug.allow_remote) to other machines, which widens the peers, never the names:
    then the configured host and IP literals (which DNS rebinding cannot produce) are accepted."""

    host: str = "127.0.0.1"
    remote: bool = False

    def host_ok(self, header: str | None) -> bool:
        name = host_name(header)
        if name is None:
            return False
        if is_loopback_name(name):
            return True
        configured = self.host.strip("[]").lower()
        if name == configured:
            return self.remote or is_loopback_name(configured)
        return self.remote and _ip(name) is not None

    def peer_ok(self, peer: str | None) -> bool:
        return self.remote or is_loopback_address(peer)

    def refusal(self, header: str | None, peer: str | None) -> int | None:
        """None when the request may see devrun's pages, else the HTTP status to refuse it with."""
        return _refusal(self, header, peer)

    def _judge(self, header: str | None, peer: str | None) -> int | None:
        if not self.host_ok(header):
            return BAD_HOST
        if not self.peer_ok(peer):
            return FOREIGN_PEER
        return None

    def refuses(self, environ: Mapping[str, Any]) -> int | None:
        return self.refusal(environ.get("HTTP_HOST"), environ.get("REMOTE_ADDR"))


@functools.lru_cache(maxsize=256)
def _refusal(trust: Trust, header: str | None, peer: str | None) -> int | None:
    # Asked on every request an app serves (live reload wraps them all); parsing two addresses
    # each time cost a busy app a few percent of its throughput. The same few hosts and peers
    # come back, and random ones only churn a bounded cache.
    return trust._judge(header, peer)


LOOPBACK = Trust()

REFUSED_TEXT = ("devrun shows details only to a browser on this machine that opens the app as localhost or "
                "127.0.0.1 (loopback).")
