"""Listening sockets, bound once by the runner and inherited by every generation of an app.

Holding the socket in the runner means a connection that arrives during a reload waits in the
backlog instead of being refused.
"""

from __future__ import annotations

import errno
import socket
import subprocess

BACKLOG = 1024


class PortInUse(Exception):
    pass


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # SO_REUSEADDR only lets us rebind over TIME_WAIT after a restart; never SO_REUSEPORT,
        # which would let two runners silently share (and split) one port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # pywsgi writes a response's head and body separately: without NODELAY (inherited by
        # accepted connections) every keep-alive request after the first waits ~40 ms for a
        # delayed ACK.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            holder = port_holder(port)
            detail = f" by {holder}" if holder else ""
            raise PortInUse(f"{host}:{port} is in use{detail}") from None
        raise
    sock.set_inheritable(True)
    return sock


def port_holder(port: int) -> str | None:
    """Which process listens on port, where the system tells (ss from iproute2)."""
    try:
        out = subprocess.run(["ss", "-Htlnp", f"sport = :{port}"], capture_output=True,
                             text=True, timeout=2).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    # users:(("python3",pid=1234,fd=3))
    if 'users:(("' in out:
        part = out.split('users:(("', 1)[1]
        name, _, rest = part.partition('"')
        pid = rest.split("pid=", 1)[1].split(",", 1)[0] if "pid=" in rest else "?"
        return f"{name} (pid {pid})"
    return None
