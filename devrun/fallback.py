"""The runner's own answer on an app's port while no generation can serve.

The runner holds every listening socket, so a connection made while the app is crashed,
backing off or stuck starting would wait in the backlog for nothing. A Fallback accepts
those connections and answers at once with a 503 page saying why, which also reloads
itself until the app is back. It is quiet whenever a child serves.
"""

from __future__ import annotations

import contextlib
import html
import select
import socket
import threading

from devrun.worker.livereload import EVENTS_PATH, sse

# A page with live reload that reconnects meanwhile is told to reload: onto this page, which
# says what is wrong and reloads itself until the app is back.
EVENTS_REPLY = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n"
                b"Connection: close\r\n\r\n" + sse("hello", {"generation": ""}))

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><meta http-equiv="refresh" content="1">
<title>devrun: {name} {title}</title>
<style>body{{font:15px/1.4 system-ui,sans-serif;margin:2em;color:#222}}
pre{{background:#f6f6f6;border-left:4px solid #c0392b;padding:1em;overflow:auto;font-size:13px}}
small{{color:#666}}</style></head>
<body><h1>{name}: {title}</h1><p>{detail}</p>{output}
<small>answered by devrun while app <b>{name}</b> cannot serve; this page reloads by itself</small>
</body></html>
"""

READ_TIMEOUT = 2.0
MAX_HEADER = 64 * 1024
# Connections answered at once; beyond that the answer is sent without reading the request.
MAX_READERS = 32


class Fallback:
    def __init__(self, name: str, listener: socket.socket):
        self.name = name
        self.listener = listener
        self.response: bytes | None = None
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.closed = False
        self.readers = threading.BoundedSemaphore(MAX_READERS)
        self.thread = threading.Thread(target=self._run, name=f"devrun-{name}-fallback", daemon=True)
        self.thread.start()

    @property
    def answering(self) -> bool:
        return self.response is not None

    def answer(self, title: str, detail: str, output: list[str] | None = None) -> None:
        shown = ""
        if output:
            shown = "<pre>" + html.escape("\n".join(output)) + "</pre>"
        body = PAGE.format(name=html.escape(self.name), title=html.escape(title), detail=html.escape(detail),
                           output=shown).encode()
        head = (
            "HTTP/1.1 503 Service Unavailable\r\n"
            "Content-Type: text/html; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Retry-After: 1\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
        ).encode()
        with self.lock:
            self.response = head + body
        self.wake.set()

    def quiet(self) -> None:
        with self.lock:
            self.response = None
        self.wake.clear()

    def close(self) -> None:
        self.closed = True
        self.quiet()
        self.wake.set()

    def _run(self) -> None:
        while not self.closed:
            self.wake.wait()
            if self.closed:
                return
            try:
                readable, _, _ = select.select([self.listener], [], [], 0.1)
            except (OSError, ValueError):
                return  # the socket was closed: the runner is shutting down
            response = self.response
            if not readable or response is None:
                continue
            try:
                # The socket is non-blocking (gevent children share the flag): a child may
                # have taken the connection first.
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                return
            if self.readers.acquire(blocking=False):
                threading.Thread(target=self._reply, args=(conn, response), daemon=True).start()
            else:
                with conn, contextlib.suppress(OSError):
                    conn.sendall(response)

    def _reply(self, conn: socket.socket, response: bytes) -> None:
        try:
            _reply(conn, response)
        finally:
            self.readers.release()


def _reply(conn: socket.socket, response: bytes) -> None:
    with conn:
        conn.settimeout(READ_TIMEOUT)
        data = b""
        with contextlib.suppress(OSError):
            while b"\r\n\r\n" not in data and len(data) < MAX_HEADER:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
        if data.startswith(f"GET {EVENTS_PATH}".encode()):
            response = EVENTS_REPLY
        elif data.startswith(b"HEAD "):
            response = response.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
        with contextlib.suppress(OSError):
            conn.sendall(response)
            # Close politely: an unread request body would otherwise turn close() into a reset.
            conn.shutdown(socket.SHUT_WR)
            while conn.recv(4096):
                pass
