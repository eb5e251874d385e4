"""Connections an app takes over from the HTTP server (a WebSocket: simple-websocket, as flask-sock
and Flask-SocketIO use it under gevent, dup()s the socket behind wsgi.input and answers the
upgrade itself). pywsgi knows nothing of them: this handler sees the takeover, logs the status the
app really sent (101), keeps pywsgi from writing an HTTP response among the app's frames, and
lets a stopping generation ask each WebSocket's client to go away (1001), so it reconnects to the
next generation.
"""

from __future__ import annotations

import contextlib
import os
import socket
from typing import Any

import gevent.socket
from gevent.pywsgi import WSGIHandler


# gevent carries no types (no stubs installed): its classes are Any to mypy, hence the ignores below.
class TakenSocket(gevent.socket.socket):  # type: ignore[misc]
    """The socket a library takes a connection over with (simple-websocket dup()s the one
    behind wsgi.input). It notes the first bytes the app writes, its own status line, and
    whether a write is under way, so that devrun's Close frame never lands inside a frame;
    once that Close went out (sealed), the app's writes are dropped, as RFC 6455 wants."""

    __slots__ = ("head", "writing", "sealed")
    head: bytes | None
    writing: bool
    sealed: bool

    def send(self, data: Any, flags: int = 0, **kwargs: Any) -> int:  # sendall() comes here too
        if self.sealed:
            return len(data)
        self.writing = True
        try:
            sent: int = super().send(data, flags, **kwargs)
        finally:
            self.writing = False
        if self.head is None and sent:
            self.head = bytes(memoryview(data)[:min(sent, 16)])
        return sent


class Handover:
    """What pywsgi's input stream reads from: the connection's socket, except that dup(), the
    way simple-websocket takes a connection over, hands out a TakenSocket, kept as taken (and
    no reference to the handler: a cycle would keep that socket open until a GC pass)."""

    def __init__(self, sock: gevent.socket.socket) -> None:
        self._sock = sock
        self.taken: TakenSocket | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def dup(self) -> TakenSocket:
        sock = self._sock
        taken = TakenSocket(sock.family, sock.type, sock.proto, fileno=os.dup(sock.fileno()))
        taken.settimeout(sock.gettimeout())
        taken.head, taken.writing, taken.sealed = None, False, False
        self.taken = taken
        return taken


class TakeoverHandler(WSGIHandler):  # type: ignore[misc]
    """pywsgi's handler, aware of connections the app takes over."""

    close_connection: bool  # pywsgi's own, set per request

    handover: Handover | None = None
    told = False  # the client of the WebSocket on this connection was asked to close it
    # How long before the graceful timeout the sockets of taken-over connections are shut: their
    # handlers then end on their own (logged as what they were) before the timeout kills them.
    CUT_AHEAD = 0.2

    def handle(self) -> None:
        raw = getattr(self.rfile, "raw", None)
        if getattr(raw, "_sock", None) is self.socket:
            raw._sock = self.handover = Handover(self.socket)  # type: ignore[union-attr]
        super().handle()

    @property
    def taken(self) -> TakenSocket | None:
        """The connection's socket as the app took it over, if it did."""
        return self.handover.taken if self.handover is not None else None

    def run_application(self) -> None:
        try:
            super().run_application()
        finally:
            taken = self.taken
            if taken is not None:  # the connection may speak the app's protocol now, not HTTP
                self.close_connection = True
                if taken.head is None:
                    # The takeover failed before a byte (a handshake simple-websocket refused):
                    # its copy of the socket would keep the connection open until a GC pass.
                    taken.close()

    def write(self, data: bytes) -> None:
        if self.taken is not None and self.taken.head is not None:
            # The app answered on its own (a WebSocket's 101): an HTTP response now, Flask's 500
            # for an error in a WebSocket handler or pywsgi's for a handler killed at the timeout,
            # would land among its frames.
            self.close_connection = True
            return
        super().write(data)

    def own_status(self) -> str | None:
        """The status of the response the app wrote itself on a connection it took over ('101'
        for a WebSocket it accepted); None when it wrote none, which pywsgi knows nothing of."""
        head = self.taken.head if self.taken is not None else None
        if head is not None and head.startswith(b"HTTP/1.") and head[9:12].isdigit():
            return head[9:12].decode()
        return None

    def go_away(self) -> None:
        """Ask the client of a WebSocket on this connection to close it, 1001 going away (it
        reconnects, to the next generation), with a Close frame as wsproto (simple-websocket's
        protocol engine) writes it. Where none can go out whole at once, the socket is shut."""
        taken = self.taken
        if taken is None or self.told or taken.fileno() < 0 or self.own_status() != "101":
            return
        if self.headers.get("Upgrade", "").lower() != "websocket":
            return
        self.told = True
        frame, sent = None, 0
        if not taken.writing:
            with contextlib.suppress(ImportError):
                from wsproto.connection import Connection, ConnectionType
                from wsproto.events import CloseConnection

                frame = Connection(ConnectionType.SERVER).send(CloseConnection(code=1001, reason="going away"))
        if frame is not None:
            with contextlib.suppress(OSError):
                sent = self.socket.send(frame, timeout=0.0)  # never waits: a stop must not hang on a client
        if frame is not None and sent == len(frame):
            taken.sealed = True
        else:
            self.cut()

    def cut(self) -> None:
        """Shut a connection: the library reading it (simple-websocket) sees its end and ends the
        session, and the handler with it. Shut, not closed: the socket is the handler's to close."""
        sock = getattr(self, "socket", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
