"""The runner's own answer on an app's port while no generation can serve.

The runner holds every listening socket, so a connection made while the app is crashed,
backing off or stuck starting would wait in the backlog for nothing. A Fallback accepts
those connections and answers at once with a 503 page saying why, which also reloads
itself until the app is back. It is quiet whenever a child serves.

The page shows what the app printed, so only loopback clients that name the machine by a
loopback name see it (devrun.loopback); anyone else gets the same 503 without the details.
Every answer is bounded in size and in time, and only reader threads talk to clients, so no
client can stall the thread that accepts.
"""

from __future__ import annotations

import contextlib
import html
import selectors
import socket
import threading
import time
from collections.abc import Iterator

from devrun.loopback import LOOPBACK, REFUSAL_STATUS, REFUSED_TEXT
from devrun.wire import EVENTS_PATH, PREFIX, sse

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

# For a client devrun does not trust: not even the app's name or why it is down.
PLAIN_PAGE = f"""<!doctype html>
<html><head><meta charset="utf-8"><meta http-equiv="refresh" content="1">
<title>503 Service Unavailable</title></head>
<body><h1>Service Unavailable</h1><p>The app cannot serve right now; this page reloads by itself.
{REFUSED_TEXT}</p></body></html>
"""

READ_TIMEOUT = 2.0  # for the whole request head, not per read: a trickling client gets no longer
SEND_TIMEOUT = 2.0  # for the whole answer: a client that does not read is dropped
DRAIN_TIMEOUT = 1.0  # reading what the client still sends after the answer, so close() sends no reset
MAX_HEADER = 64 * 1024
# Connections answered at once; more wait in the backlog until a reader is free (at most about
# READ_TIMEOUT + SEND_TIMEOUT + DRAIN_TIMEOUT). Answering one without reading its request would
# close it with the request unread: a reset, which makes the client drop the answer.
MAX_READERS = 32
# The page shows the end of the app's output, bounded: the whole answer must stay small.
MAX_LINE = 1000
MAX_OUTPUT = 32 * 1024


def response(status: str, body: bytes, ctype: str, extra: str = "") -> bytes:
    head = (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n{extra}"
            "Cache-Control: no-store\r\nConnection: close\r\n\r\n")
    return head.encode() + body


def shown_output(output: list[str]) -> str:
    """The end of the output, escaped, each line and the whole bounded (a crash's last lines can be huge)."""
    kept: list[str] = []
    size = 0
    for line in reversed(output):
        text = html.escape(line if len(line) <= MAX_LINE else line[:MAX_LINE] + " [...]")
        if size + len(text) > MAX_OUTPUT:
            break
        kept.append(text)
        size += len(text) + 1
    return "<pre>" + "\n".join(reversed(kept)) + "</pre>" if kept else ""


class Pages:
    """One state's answers: the full page for trusted clients, the plain one for others."""

    def __init__(self, name: str, title: str, detail: str, output: list[str] | None):
        body = PAGE.format(name=html.escape(name), title=html.escape(title), detail=html.escape(detail),
                           output=shown_output(output or [])).encode()
        retry = "Retry-After: 1\r\n"
        self.full = response("503 Service Unavailable", body, "text/html; charset=utf-8", retry)
        self.plain = response("503 Service Unavailable", PLAIN_PAGE.encode(), "text/html; charset=utf-8", retry)

    def choose(self, request: bytes, peer: str | None) -> bytes:
        """The answer to one request (its head, possibly cut short) from peer."""
        refused = LOOPBACK.refusal(_host(request), peer)
        if request.startswith(f"GET {PREFIX}".encode()) or request.startswith(f"HEAD {PREFIX}".encode()):
            if refused is not None:
                text = f"{REFUSAL_STATUS[refused]}: {REFUSED_TEXT}\n".encode()
                answer = response(REFUSAL_STATUS[refused], text, "text/plain; charset=utf-8")
            elif request.startswith(f"GET {EVENTS_PATH}".encode()):
                answer = EVENTS_REPLY
            else:
                answer = response("404 Not Found", b"not found", "text/plain")
        else:
            answer = self.plain if refused is not None else self.full
        if request.startswith(b"HEAD "):
            answer = answer.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
        return answer


def _host(request: bytes) -> str | None:
    """The request's one Host header (None when there is none, or several)."""
    lines = request.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
    values = [ln.split(b":", 1)[1].strip() for ln in lines if ln[:5].lower() == b"host:"]
    return values[0].decode("latin-1") if len(values) == 1 else None


class Fallback:
    def __init__(self, name: str, listener: socket.socket):
        self.name = name
        self.listener = listener
        self.pages: Pages | None = None
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.closed = False
        self.readers = threading.BoundedSemaphore(MAX_READERS)
        self.thread = threading.Thread(target=self._run, name=f"devrun-{name}-fallback", daemon=True)
        self.thread.start()

    @property
    def answering(self) -> bool:
        return self.pages is not None

    def answer(self, title: str, detail: str, output: list[str] | None = None) -> None:
        pages = Pages(self.name, title, detail, output)
        with self.lock:
            self.pages = pages
        self.wake.set()

    def quiet(self) -> None:
        with self.lock:
            self.pages = None
        self.wake.clear()

    def close(self) -> None:
        self.closed = True
        self.quiet()
        self.wake.set()

    def _run(self) -> None:
        # A selector, not select(): the listener's fd may be above FD_SETSIZE (a runner with a
        # raised fd limit and many watched folders), where select() raises ValueError.
        with selectors.DefaultSelector() as selector:
            try:
                selector.register(self.listener, selectors.EVENT_READ)
            except (OSError, ValueError):
                return  # the socket was closed: the runner is shutting down
            while not self.closed:
                self.wake.wait()
                if self.closed:
                    return
                try:
                    readable = selector.select(0.1)
                except (OSError, ValueError):
                    return
                pages = self.pages
                if not readable or pages is None or not self.readers.acquire(timeout=0.1):
                    continue
                if not self._accept(pages):
                    return

    def _accept(self, pages: Pages) -> bool:
        """Take one waiting connection and answer it in a reader thread (whose slot the caller
        took); False when the listener is gone."""
        try:
            # The socket is non-blocking (gevent children share the flag): a child may
            # have taken the connection first.
            conn, addr = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            self.readers.release()
            return True
        except OSError:
            self.readers.release()
            return False
        peer = addr[0] if isinstance(addr, tuple) else None
        try:
            threading.Thread(target=self._reply, args=(conn, pages, peer), daemon=True).start()
        except RuntimeError:  # no thread to be had: this one connection goes unanswered
            conn.close()
            self.readers.release()
        return True

    def _reply(self, conn: socket.socket, pages: Pages, peer: str | None) -> None:
        try:
            _reply(conn, pages, peer)
        finally:
            self.readers.release()


def _reply(conn: socket.socket, pages: Pages, peer: str | None) -> None:
    with conn:
        request = _read_head(conn, time.monotonic() + READ_TIMEOUT)
        with contextlib.suppress(OSError):
            conn.settimeout(SEND_TIMEOUT)  # the whole sendall (Python 3.5+), however slow the reader
            conn.sendall(pages.choose(request, peer))
            # Close politely: an unread request body would otherwise turn close() into a reset.
            conn.shutdown(socket.SHUT_WR)
            _drain(conn, time.monotonic() + DRAIN_TIMEOUT)


def _chunks(conn: socket.socket, deadline: float) -> Iterator[bytes]:
    """What the client sends, until it closes, errs, or the deadline passes."""
    with contextlib.suppress(OSError):
        while (left := deadline - time.monotonic()) > 0:
            conn.settimeout(left)
            chunk = conn.recv(4096)
            if not chunk:
                return
            yield chunk


def _read_head(conn: socket.socket, deadline: float) -> bytes:
    data = b""
    for chunk in _chunks(conn, deadline):
        data += chunk
        if b"\r\n\r\n" in data or len(data) >= MAX_HEADER:
            break
    return data


def _drain(conn: socket.socket, deadline: float) -> None:
    read = 0
    for chunk in _chunks(conn, deadline):
        read += len(chunk)
        if read >= MAX_HEADER:
            return
