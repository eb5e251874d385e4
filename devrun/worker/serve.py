"""The child's main: load the app, wrap it, serve it on the inherited socket, stop gracefully.

Runs after ``gevent.monkey.patch_all()`` (see ``__main__``).
"""

from __future__ import annotations

import contextlib
import functools
import os
import select
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import gevent
from gevent import monkey
from gevent.event import Event
from gevent.pool import Pool
from gevent.pywsgi import WSGIServer

from devrun.importspec import parse_import_string
from devrun.loopback import Trust, is_loopback_address
from devrun.wire import (
    PREFIX,
    SPEC_ENV,
    Closed,
    Failed,
    Loaded,
    Modules,
    PinFailed,
    PinOk,
    Ready,
    Refresh,
    Served,
    WorkerSpec,
    Writes,
    decode,
)
from devrun.worker.debugging import pin_failure_message, wrap_debugger
from devrun.worker.errorpage import error_app
from devrun.worker.frameworks import Adapter, adapter_for
from devrun.worker.livereload import SOCKET_KEY, LiveHub, LiveReload
from devrun.worker.loading import AppLoadError, load_app
from devrun.worker.reporting import Reporter
from devrun.worker.takeover import TakeoverHandler
from devrun.worker.writes import report_writes


def die_with_runner(parent: int, lifeline_fd: int | None) -> None:
    """Never outlive the runner, even when it is SIGKILLed, and take the app's own
    processes along: the runner holds the write end of the lifeline pipe, so its death is
    EOF here. A real OS thread watches it, so a CPU-bound request cannot delay it."""
    if os.getppid() != parent:  # the runner died before we got here
        os.killpg(os.getpgrp(), signal.SIGKILL)
    if lifeline_fd is None:
        return

    def watch() -> None:
        while True:
            try:
                if not os.read(lifeline_fd, 1):
                    break
            except InterruptedError:
                continue
            except OSError:
                break
        os.killpg(os.getpgrp(), signal.SIGKILL)  # us, and whatever the app started

    start_thread = monkey.get_original("_thread", "start_new_thread")
    start_thread(watch, ())


class ReportingHandler(TakeoverHandler):
    """pywsgi's handler plus request reporting and a prompt, polite stop of keep-alives (and,
    from TakeoverHandler, the connections an app takes over: WebSockets)."""

    reporter: Reporter
    stopping = False
    live: set[ReportingHandler]

    def handle(self) -> None:
        self.busy = False
        self.served = 0
        self.live.add(self)
        try:
            super().handle()
        finally:
            self.live.discard(self)

    def get_environ(self) -> dict[str, Any]:
        environ: dict[str, Any] = super().get_environ()
        environ[SOCKET_KEY] = self.socket  # live reload notices a page that went away by it
        return environ

    def read_request(self, raw_requestline: str) -> Any:
        self.busy = True
        return super().read_request(raw_requestline)

    def handle_one_request(self) -> Any:
        try:
            return super().handle_one_request()
        finally:
            self.busy = False
            self.served += 1

    def start_response(self, status: Any, headers: Any, exc_info: Any = None) -> Any:
        if ReportingHandler.stopping:
            # A stopping generation must not keep the browser on its old code via keep-alive.
            self.close_connection = True
            if not any(k.lower() == "connection" for k, _ in headers):
                headers = [*headers, ("Connection", "close")]
        return super().start_response(status, headers, exc_info)

    def log_request(self) -> None:
        if (self.path or "").startswith(PREFIX):  # live reload's own traffic is not the app's
            return
        # pywsgi has no status for a response the app wrote itself: what the client got is the app's.
        status = self.own_status() or getattr(self, "_orig_status", None) or self.status or "000"
        if isinstance(status, bytes):
            status = status.decode("latin-1")
        ms = max(self.time_finish - self.time_start, 0.0) * 1000 if self.time_finish else 0.0
        at = self.time_finish or time.time()
        self.reporter.served(Served(self.command or "-", self.path or "-", str(status).split()[0], round(ms, 2), at))


def report_modules(reporter: Reporter, project_roots: list[str]) -> None:
    """Tell the runner which loaded modules a fork server may preload: everything imported
    from outside the project's folders (the project's own code is never preloaded)."""
    roots = tuple(os.path.join(os.path.abspath(r), "") for r in project_roots)
    names = []
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if path and name != "__main__" and not os.path.abspath(path).startswith(roots):
            names.append(name)
    chunk: list[str] = []
    for name in names:  # several messages: each must fit one atomic pipe write
        chunk.append(name)
        if sum(len(n) + 3 for n in chunk) > 3000:
            reporter.send(Modules(tuple(chunk)))
            chunk = []
    reporter.send(Modules(tuple(chunk), last=True))


FIRST_REQUEST_GRACE = 1.0


def close_idle(handlers: set[ReportingHandler], fresh: bool = False) -> None:
    """Shut idle keep-alive connections, so browsers move to the new code at once. A connection
    accepted just now whose first request is still on its way is not idle: it gets a moment to
    arrive (then an answer with Connection: close) before it is shut too (fresh=True). Nor is one
    whose next request already waits in the kernel, unread because its greenlet has not run yet:
    shutting it would lose that request (a POST is not retried); it is answered with Connection: close."""
    for handler in list(handlers):
        if getattr(handler, "busy", False) or (not fresh and getattr(handler, "served", 0) == 0):
            continue
        sock = getattr(handler, "socket", None)
        if sock is not None and not _has_input(sock):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _has_input(sock: Any) -> bool:
    """Bytes (or the peer's close) wait to be read: asked of the OS at once, never waited for."""
    try:
        poller = monkey.get_original("select", "poll")()  # gevent's would yield to the hub
        poller.register(sock.fileno(), select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):  # closed meanwhile: nothing left to protect
        return False


def trusts(spec: WorkerSpec, listener: socket.socket) -> tuple[Trust, Trust, Trust]:
    """Who sees the error page, the debugger, live reload (devrun.loopback). The configured host
    comes in the spec; before it did, the bound address stands for it."""
    host = spec.host or str(listener.getsockname()[0])
    debug_remote = spec.debug.allow_remote
    # Live reload off loopback passed config validation only with an allow_remote opt-in.
    live_remote = debug_remote or not is_loopback_address(listener.getsockname()[0])
    return Trust(host), Trust(host, debug_remote), Trust(host, live_remote)


def pin_reporter(reporter: Reporter) -> Callable[[int], None]:
    """Tell the runner (which keeps the count for the next generations) and the user."""

    def report(count: int) -> None:
        if count == 0:  # the right PIN: Werkzeug started counting again
            reporter.send(PinOk())
            return
        reporter.send(PinFailed(count))
        sys.stderr.write(pin_failure_message(count) + "\n")
        sys.stderr.flush()

    return report


def read_commands(fd: int, hub: LiveHub | None, adapter: Adapter | None, root: str, pending: bytes = b"") -> None:
    """The runner's messages to this generation (a greenlet): for now, that templates or
    stylesheets changed. The framework applies a template edit first (Django resets
    its cached loaders), then the open pages are told, so their reload renders the new file."""
    from gevent import os as gos

    gos.make_nonblocking(fd)
    buf = pending
    while True:
        *lines, buf = buf.split(b"\n")
        for line in lines:
            msg = decode(line)
            if isinstance(msg, Refresh) and msg.how in ("reload", "css"):
                if adapter is not None and msg.how == "reload":
                    adapter.templates_changed([os.path.join(root, p) for p in msg.paths])
                if hub is not None:
                    hub.send(msg.how)
        try:
            chunk = gos.nb_read(fd, 65536)
        except OSError:
            return
        if not chunk:
            return  # the runner closed it: it is gone, or we are
        buf += chunk


def report_written(reporter: Reporter, paths: list[str]) -> None:
    for path in paths:  # one message each: every one fits an atomic pipe write
        reporter.send(Writes((path,)))


def go_away(live: set[ReportingHandler]) -> None:
    for handler in list(live):
        handler.go_away()


def cut_taken(live: set[ReportingHandler]) -> None:
    for handler in list(live):
        if handler.taken is not None:
            handler.cut()


def main() -> int:
    """A spawned generation: the spec comes in the environment."""
    return run(WorkerSpec.from_json(os.environ.pop(SPEC_ENV)))


def run(spec: WorkerSpec) -> int:
    """Load the app and serve it until told to stop (spawned, or forked by the fork server)."""
    die_with_runner(spec.runner_pid, spec.lifeline_fd)
    reporter = Reporter(spec.event_fd, gevent.spawn_later)
    listener = socket.socket(fileno=spec.listen_fd)
    page_trust, debug_trust, live_trust = trusts(spec, listener)
    root = spec.cwd
    if root not in sys.path:
        sys.path.insert(0, root)

    go = Event()
    gevent.signal_handler(signal.SIGUSR1, go.set)
    debug = spec.debug
    import_spec = parse_import_string(spec.app)
    # Before the app's import: a log or database it opens right then is its own, not an edit.
    report_writes(root, spec.watch_roots, functools.partial(report_written, reporter))
    failed = None
    adapter: Adapter | None = None
    try:
        app = load_app(import_spec, root)
        adapter = adapter_for(app)
        if debug.enabled:
            adapter.enable_debug()
        adapter.enable_template_reload()  # an edited template is never served stale
        app = adapter.wrap(app)  # what the framework's own dev server adds: static files
    except (Exception, SystemExit) as exc:  # anything the user's code raises, sys.exit too
        if isinstance(exc, AppLoadError):  # our own diagnosis: devrun's frames would be noise
            summary = text = str(exc)
        else:
            text = traceback.format_exc()
            summary = traceback.format_exception_only(type(exc), exc)[-1].strip()
        sys.stderr.write(text.rstrip("\n") + "\n")
        sys.stderr.flush()
        failed = (summary, text)
        app = error_app(spec.name, spec.app, exc, text, debug.enabled, page_trust)
    if debug.enabled:
        app = wrap_debugger(app, evalex=debug.evalex, pin=debug.pin, trust=debug_trust,
                            pin_failures=spec.pin_failures, on_pin=pin_reporter(reporter))
    hub = None
    if spec.live:  # outermost, so the debugger's and the error pages get the script too
        hub = LiveHub(f"{spec.runner_pid}.{spec.number}", reporter.send)
        app = LiveReload(app, hub, live_trust)
    if spec.control_fd is not None:
        gevent.spawn(read_commands, spec.control_fd, hub, adapter, root, spec.control_pending.encode("latin-1"))

    live: set[ReportingHandler] = set()
    handler = type("Handler", (ReportingHandler,), {"reporter": reporter, "live": live})
    # A pool (unbounded) lets stop() wait for in-flight requests; without one it would not.
    server = WSGIServer(listener, app, handler_class=handler, log=None, error_log=sys.stderr, spawn=Pool(None))
    # Wait for the runner's go before accepting: it first makes the previous generation stop
    # accepting, so no client ever sees the new code and then the old one again.
    reporter.send(Loaded())
    while not go.wait(timeout=3600):  # a timer keeps gevent's loop alive while it waits for the signal
        pass
    server.start()
    if failed:
        reporter.send(Failed(failed[0], failed[1]))
    else:
        assert adapter is not None
        # The runner restarts the app for a template edit the framework cannot apply in place.
        reporter.send(Ready(adapter.describe(), adapter.refreshes_templates))
    if spec.report_modules:
        gevent.spawn(report_modules, reporter, [root, *spec.watch_roots])

    done = Event()

    def stop() -> None:
        ReportingHandler.stopping = True
        server.close()  # stop accepting: the next generation or the runner takes new connections
        reporter.send(Closed())
        if hub is not None:
            hub.close()  # open pages reconnect to the next generation instead of holding us up
        close_idle(live)
        gevent.spawn_later(FIRST_REQUEST_GRACE, close_idle, live, True)
        # A WebSocket never ends by itself: its client is asked to close now, so it reconnects to
        # the next generation at once (a second pass for one upgraded while this stop began).
        grace = spec.graceful_timeout
        go_away(live)
        gevent.spawn_later(FIRST_REQUEST_GRACE, go_away, live)
        # Whatever the app still holds (a client that never answered the Close) is shut before the
        # timeout, so its handler and its library's reader end, and this generation exits, by then.
        cut_at = max(grace - TakeoverHandler.CUT_AHEAD, grace / 2)
        gevent.spawn_later(cut_at, cut_taken, live)
        server.stop(timeout=grace)
        done.set()

    gevent.signal_handler(signal.SIGTERM, lambda: gevent.spawn(stop))
    gevent.signal_handler(signal.SIGINT, lambda: gevent.spawn(stop))
    done.wait()
    reporter.flush()  # the last requests' lines
    sys.stdout.flush()
    sys.stderr.flush()
    return 0
