"""Live reload, the child's side: the script in every HTML page and the event stream it listens to.

A WSGI middleware injects one small script into HTML responses and serves a reserved event
stream under /__devrun__/, never passing those paths to the user's app. Each page carries the
generation that rendered it; the stream greets every (re)connecting page with the current
generation, so a page rendered by older code reloads itself as soon as the new generation
accepts its reconnect: after it is ready, never onto a refused connection or the previous code.
A generation told to stop closes its streams at once, so they never hold up its exit. Template
and stylesheet changes reach the open pages through the hub, without a restart.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import parse_qs

import gevent
from gevent.queue import Empty, Queue
from gevent.socket import wait_read

from devrun.loopback import LOOPBACK, Trust
from devrun.wire import EVENTS_PATH, PREFIX, Message, Pages, Refreshed, sse
from devrun.worker.guard import refuse

SCRIPT_PATH = PREFIX + "livereload.js"
BODY_END = re.compile(rb"</body\s*>", re.IGNORECASE)
MAX_BUFFER = 8 * 1024 * 1024  # bigger HTML bodies are passed through untouched
KEEPALIVE = 15.0  # a comment line this often keeps proxies and idle timers from closing the stream
SOCKET_KEY = "devrun.socket"  # the connection's socket, put in the environ by devrun's handler
SETTLE = 0.3  # page counts are reported once reconnects have settled

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
Report = Callable[[Message], None]  # Reporter.send

# A stream that ends is retried at once: it ends because its generation is stopping, and the
# new connection then waits in the listen backlog until the next generation accepts it.
CLIENT_JS = r"""(function () {
  var me = document.currentScript, generation = me && me.dataset.generation;
  var failures = 0, since = 0, opened = false, quick = 0, source;
  function swapCss() {
    document.querySelectorAll('link[rel="stylesheet"]').forEach(function (old) {
      var url = new URL(old.href, location.href);
      url.searchParams.set("__devrun", Date.now());
      var fresh = old.cloneNode();
      fresh.href = url.href;
      fresh.onload = fresh.onerror = function () { old.remove(); };  // no flash of unstyled content
      old.after(fresh);
    });
  }
  function connect() {
    source = new EventSource("/__devrun__/events?generation=" + encodeURIComponent(generation || ""));
    source.onopen = function () { opened = true; };
    source.addEventListener("hello", function (e) {
      failures = 0; since = 0; quick = 0;
      if (JSON.parse(e.data).generation !== generation) { source.close(); location.reload(); }
    });
    source.addEventListener("reload", function () { source.close(); location.reload(); });
    source.addEventListener("css", swapCss);
    source.onerror = function () {
      source.close();
      // Answered, then ended: a stopping generation, reached on a connection the browser kept
      // alive (it holds several after a page with many resources). Each such answer closes that
      // connection, so trying again at once soon takes a new one, which the next generation accepts.
      if (opened && quick < 8) { opened = false; quick += 1; setTimeout(connect, 0); return; }
      opened = false;
      failures += 1;
      since = since || Date.now();
      if (Date.now() - since > 60000) { return; }  // devrun has been gone a minute: stop quietly
      setTimeout(connect, failures === 1 ? 0 : Math.min(100 * Math.pow(2, failures - 2), 5000));
    };
  }
  connect();
})();
"""


class LiveHub:
    """The open event streams of one generation (gevent greenlets, one thread)."""

    def __init__(self, generation: str, report: Report):
        self.generation = generation
        self.report = report
        self.streams: set[Any] = set()  # a gevent Queue per open page
        self.closed = False
        self.stale = 0  # pages of older code that reconnected here: each reloads
        self.reported = 0
        self.settling: Any = None

    def connect(self, seen: str) -> Any:
        queue: Queue[str | None] = Queue()
        self.streams.add(queue)
        if seen != self.generation:
            self.stale += 1
        self._changed()
        return queue

    def disconnect(self, queue: Any) -> None:
        self.streams.discard(queue)
        self._changed()

    def send(self, kind: str) -> None:
        """Tell every open page: `reload` or `css`."""
        if self.closed:
            return
        for queue in self.streams:
            queue.put(kind)
        self.report(Refreshed(len(self.streams), kind))

    def close(self) -> None:
        """This generation is stopping: end every stream now; pages reconnect to the next."""
        self.closed = True
        for queue in self.streams:
            queue.put(None)

    def _changed(self) -> None:
        if self.settling is None and not self.closed:
            self.settling = gevent.spawn_later(SETTLE, self._settled)

    def _settled(self) -> None:
        self.settling = None
        if self.closed:
            return
        if self.stale:
            self.report(Refreshed(self.stale, "reload"))
            self.stale = 0
        if len(self.streams) != self.reported:
            self.reported = len(self.streams)
            self.report(Pages(self.reported))


SCRIPT_VERSION = hashlib.sha256(CLIENT_JS.encode()).hexdigest()[:12]


def script_tag(generation: str) -> bytes:
    # async: the page's own loading never waits for it; versioned: cached by the browser for good.
    return (f'<script async src="{SCRIPT_PATH}?v={SCRIPT_VERSION}" data-generation="{generation}"></script>'
            ).encode()


def inject(body: bytes, tag: bytes) -> bytes | None:
    """The body with the tag before its last </body>, or None when it has none."""
    if b"</" not in body:  # most fragments (htmx, a bare "hello"): no scan for the pattern
        return None
    matches = list(BODY_END.finditer(body))
    if not matches:
        return None
    at = matches[-1].start()
    return body[:at] + tag + body[at:]


# The headers that decide whether a response is an HTML page to inject into.
_DECIDING = frozenset({"content-type", "content-length", "content-encoding", "content-range"})
_NO_BODY = frozenset({"204", "206", "304"})


def injectable(status: str, headers: list[tuple[str, str]]) -> tuple[bool, str | None]:
    """Is this response a whole HTML page as it is (not compressed, not a range, not empty by
    its status)? And its Content-Length. One pass over the headers: every response of the app
    is asked this."""
    found: dict[str, str] = {}
    for key, value in headers:
        lower = key.lower()
        if lower in _DECIDING and lower not in found:
            found[lower] = value
    code = status[:3]
    encoding = found.get("content-encoding")
    return (found.get("content-type", "").lower().startswith("text/html")
            and (encoding is None or encoding.strip().lower() in ("", "identity"))
            and code not in _NO_BODY and not code.startswith("1") and "content-range" not in found,
            found.get("content-length"))


class LiveReload:
    """Wraps the user's app: injects the script, serves /__devrun__/ (script and events), both
    only for requests `trust` accepts (devrun.loopback): others get the app's responses untouched
    and a refusal under /__devrun__/."""

    def __init__(self, app: WSGIApp, hub: LiveHub, trust: Trust = LOOPBACK):
        self.app = app
        self.hub = hub
        self.trust = trust
        self.tag = script_tag(hub.generation)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        refused = self.trust.refuses(environ)
        if refused is not None:
            return refuse(refused, start_response) if path.startswith(PREFIX) else self.app(environ, start_response)
        if path == SCRIPT_PATH:
            body = CLIENT_JS.encode()
            start_response("200 OK", [("Content-Type", "application/javascript; charset=utf-8"),
                                      ("Content-Length", str(len(body))),
                                      ("Cache-Control", "public, max-age=31536000, immutable")])
            return [body]
        if path == EVENTS_PATH:
            seen = parse_qs(environ.get("QUERY_STRING", "")).get("generation", [""])[0]
            return self._stream(seen, start_response, environ.get(SOCKET_KEY))
        if path.startswith(PREFIX):
            start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "9")])
            return [b"not found"]
        if environ.get("REQUEST_METHOD") == "HEAD":
            return self.app(environ, start_response)
        return self._maybe_inject(environ, start_response)

    def _stream(self, seen: str, start_response: StartResponse, sock: Any = None) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/event-stream"), ("Cache-Control", "no-store"),
                                  ("X-Accel-Buffering", "no")])
        if self.hub.closed:  # stopping: send the page on to the next generation
            return
        queue = self.hub.connect(seen)
        # A page says nothing more after its request: the socket turning readable means it went
        # away (closed, reloaded), and the count of open pages drops at once, not at the next ping.
        watcher = gevent.spawn(_wait_gone, sock, queue) if sock is not None else None
        try:
            yield sse("hello", {"generation": self.hub.generation})
            while True:
                try:
                    kind = queue.get(timeout=KEEPALIVE)
                except Empty:
                    yield b": ping\n\n"
                    continue
                if kind is None:
                    return
                yield sse(kind, {})
        finally:
            if watcher is not None:
                watcher.kill(block=False)
            self.hub.disconnect(queue)

    def _maybe_inject(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], Any]:
            captured.update(status=status, headers=list(headers), exc_info=exc_info)

            def write(data: bytes) -> None:  # the legacy write(): too late to change anything
                if "write" not in captured:
                    captured["write"] = start_response(status, headers, exc_info)
                captured["write"](data)

            return write

        result = self.app(environ, capture)
        if "write" in captured:
            return result
        chunks: Iterator[bytes] = iter(result)
        first: list[bytes] = []
        if "status" not in captured:  # start_response may come with the first chunk
            first = [next(chunks, b"")]
        if "status" not in captured:
            # No response at all: the app took the connection over (a WebSocket) and answered on
            # its own. Nothing to inject into, nothing to start.
            return _chain(first, chunks, result)
        status, headers = captured["status"], captured["headers"]
        page, length = injectable(status, headers)
        touchable = page and (length is not None or isinstance(result, list | tuple))
        if not touchable or (length is not None and length.isdigit() and int(length) > MAX_BUFFER):
            start_response(status, headers, captured["exc_info"])
            return _chain(first, chunks, result)
        try:
            body = b"".join([*first, *chunks])
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        changed = inject(body, self.tag)
        if changed is not None:
            body = changed
            headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
            headers.append(("Content-Length", str(len(body))))
        start_response(status, headers, captured["exc_info"])
        return [body]


def _wait_gone(sock: Any, queue: Any) -> None:
    try:
        wait_read(sock.fileno())
    except Exception:  # closed under us: the stream is ending anyway
        return
    queue.put(None)


class _Chain:
    """first + rest, keeping the original iterable's close()."""

    def __init__(self, first: list[bytes], rest: Iterator[bytes], original: Iterable[bytes]):
        self.first, self.rest, self.original = first, rest, original

    def __iter__(self) -> Iterator[bytes]:
        yield from self.first
        yield from self.rest

    def close(self) -> None:
        close = getattr(self.original, "close", None)
        if close is not None:
            close()


def _chain(first: list[bytes], rest: Iterator[bytes], original: Iterable[bytes]) -> Iterable[bytes]:
    return _Chain(first, rest, original)
