"""Live reload, the child's side (groundwork for issue 9; not wired into serving yet).

A WSGI middleware that injects one small script into HTML responses and serves a reserved
event stream under /__devrun__/. Each page carries the generation that rendered it; the stream
greets every (re)connecting page with the current generation, so a page rendered by older code
reloads itself as soon as the new generation accepts its reconnect: after it is ready, never
onto a refused connection or the previous code.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

PREFIX = "/__devrun__/"
EVENTS_PATH = PREFIX + "events"
SCRIPT_PATH = PREFIX + "livereload.js"
BODY_END = re.compile(rb"</body\s*>", re.IGNORECASE)
MAX_BUFFER = 8 * 1024 * 1024  # bigger HTML bodies are passed through untouched

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

CLIENT_JS = r"""(function () {
  var me = document.currentScript, generation = me && me.dataset.generation;
  var failures = 0, since = 0, source;
  function swapCss() {
    var links = document.querySelectorAll('link[rel="stylesheet"]');
    links.forEach(function (old) {
      var url = new URL(old.href, location.href);
      url.searchParams.set("__devrun", Date.now());
      var fresh = old.cloneNode();
      fresh.href = url.href;
      fresh.onload = function () { old.remove(); };  // no flash of unstyled content
      old.after(fresh);
    });
  }
  function connect() {
    source = new EventSource("/__devrun__/events");
    source.addEventListener("hello", function (e) {
      failures = 0; since = 0;
      if (JSON.parse(e.data).generation !== generation) { location.reload(); }
    });
    source.addEventListener("reload", function () { location.reload(); });
    source.addEventListener("css", function () { swapCss(); });
    source.onerror = function () {
      source.close();
      failures += 1;
      since = since || Date.now();
      if (Date.now() - since > 60000) { return; }  // devrun is gone: stop quietly
      setTimeout(connect, Math.min(100 * Math.pow(2, failures - 1), 2000));
    };
  }
  connect();
})();
"""


def script_tag(generation: str) -> bytes:
    return (f'<script src="{SCRIPT_PATH}" data-generation="{generation}"></script>').encode()


def inject(body: bytes, tag: bytes) -> bytes | None:
    """The body with the tag before its last </body>, or None when it has none."""
    matches = list(BODY_END.finditer(body))
    if not matches:
        return None
    at = matches[-1].start()
    return body[:at] + tag + body[at:]


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    return next((v for k, v in headers if k.lower() == name), None)


class LiveReload:
    """Wraps the user's app: injects the script, serves /__devrun__/ (script and events)."""

    def __init__(self, app: WSGIApp, generation: str, events: Callable[[], Iterator[bytes]] | None = None):
        self.app = app
        self.generation = generation
        self.tag = script_tag(generation)
        self.events = events or (lambda: iter(()))

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == SCRIPT_PATH:
            body = CLIENT_JS.encode()
            start_response("200 OK", [("Content-Type", "application/javascript; charset=utf-8"),
                                      ("Content-Length", str(len(body))), ("Cache-Control", "no-store")])
            return [body]
        if path == EVENTS_PATH:
            return self._stream(start_response)
        if environ.get("REQUEST_METHOD") == "HEAD":
            return self.app(environ, start_response)
        return self._maybe_inject(environ, start_response)

    def _stream(self, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/event-stream"), ("Cache-Control", "no-store"),
                                  ("X-Accel-Buffering", "no")])
        hello = json.dumps({"generation": self.generation})
        yield f"retry: 100\nevent: hello\ndata: {hello}\n\n".encode()
        yield from self.events()

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
        status, headers = captured["status"], captured["headers"]
        ctype = (_header(headers, "content-type") or "").lower()
        length = _header(headers, "content-length")
        code = status.split(" ", 1)[0]
        touchable = (ctype.startswith("text/html") and _header(headers, "content-encoding") is None
                     and code not in ("204", "304") and not code.startswith("1")
                     and (length is not None or isinstance(result, list | tuple)))
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
