"""The child's main: load the app, wrap it, serve it on the inherited socket, stop gracefully.

Runs after ``gevent.monkey.patch_all()`` (see ``__main__``).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import sys
import time
import traceback
from typing import Any

import gevent
from gevent.event import Event
from gevent.pywsgi import WSGIHandler, WSGIServer

from devrun.importspec import parse_import_string
from devrun.worker.debugging import enable_framework_debug, wrap_debugger
from devrun.worker.errorpage import error_app
from devrun.worker.reporting import Reporter

SPEC_ENV = "DEVRUN_WORKER"
PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Make sure we never outlive the runner, even when it is SIGKILLed."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
    # The runner may already have died between fork and prctl.
    if os.getppid() != parent:
        os._exit(1)

    def watch_parent() -> None:  # for systems without prctl
        while True:
            gevent.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    if not sys.platform.startswith("linux"):
        gevent.spawn(watch_parent)


class ReportingHandler(WSGIHandler):
    """pywsgi's handler plus request reporting and a prompt, polite stop of keep-alives."""

    reporter: Reporter
    stopping = False
    live: set[ReportingHandler]

    def handle(self) -> None:
        self.busy = False
        self.live.add(self)
        try:
            super().handle()
        finally:
            self.live.discard(self)

    def read_request(self, raw_requestline: str) -> Any:
        self.busy = True
        return super().read_request(raw_requestline)

    def handle_one_request(self) -> Any:
        try:
            return super().handle_one_request()
        finally:
            self.busy = False

    def start_response(self, status: Any, headers: Any, exc_info: Any = None) -> Any:
        if ReportingHandler.stopping:
            # A stopping generation must not keep the browser on its old code via keep-alive.
            self.close_connection = True
            if not any(k.lower() == "connection" for k, _ in headers):
                headers = [*headers, ("Connection", "close")]
        return super().start_response(status, headers, exc_info)

    def log_request(self) -> None:
        status = (getattr(self, "_orig_status", None) or self.status or "000")
        if isinstance(status, bytes):
            status = status.decode("latin-1")
        ms = max(self.time_finish - self.time_start, 0.0) * 1000 if self.time_finish else 0.0
        self.reporter.send("request", method=self.command or "-", path=self.path or "-",
                           status=str(status).split()[0], ms=round(ms, 2))


def close_idle(handlers: set[ReportingHandler]) -> None:
    for handler in list(handlers):
        if not getattr(handler, "busy", False):
            sock = getattr(handler, "socket", None)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def main() -> int:
    spec = json.loads(os.environ.pop(SPEC_ENV))
    t0 = time.monotonic()
    die_with_parent(spec["runner_pid"])
    reporter = Reporter(spec.get("event_fd"))
    listener = socket.socket(fileno=spec["listen_fd"])
    root = spec["cwd"]
    if root not in sys.path:
        sys.path.insert(0, root)

    debug = spec["debug"]
    import_spec = parse_import_string(spec["app"])
    failed = None
    try:
        from devrun.worker.loading import load_app

        app = load_app(import_spec)
        if debug["enabled"]:
            enable_framework_debug(app)
    except (Exception, SystemExit) as exc:  # anything the user's code raises, sys.exit too
        text = traceback.format_exc()
        sys.stderr.write(text)
        sys.stderr.flush()
        summary = traceback.format_exception_only(type(exc), exc)[-1].strip()
        failed = (summary, text)
        app = error_app(spec["name"], spec["app"], exc, text, debug["enabled"])
    if debug["enabled"]:
        app = wrap_debugger(app, evalex=debug["evalex"], pin=debug["pin"])

    live: set[ReportingHandler] = set()
    handler = type("Handler", (ReportingHandler,), {"reporter": reporter, "live": live})
    server = WSGIServer(listener, app, handler_class=handler, log=None, error_log=sys.stderr)
    server.start()
    ms = round((time.monotonic() - t0) * 1000, 1)
    if failed:
        reporter.send("failed", summary=failed[0], traceback=failed[1], ms=ms)
    else:
        reporter.send("ready", ms=ms)

    done = Event()

    def stop() -> None:
        ReportingHandler.stopping = True
        server.close()  # stop accepting: the next generation or the runner takes new connections
        close_idle(live)
        server.stop(timeout=spec["graceful_timeout"])
        done.set()

    gevent.signal_handler(signal.SIGTERM, lambda: gevent.spawn(stop))
    gevent.signal_handler(signal.SIGINT, lambda: gevent.spawn(stop))
    done.wait()
    sys.stdout.flush()
    sys.stderr.flush()
    return 0
