"""The runner's side of the control socket: what `devrun status` and `attach` see, and the verbs
other terminals send.

`RemoteView` is a view like the dashboard: it only reads events, keeping each app's status and
a bounded history (replayed to `attach`, so a dashboard joins a running daemon with its past).
The verbs run on the control server's connection threads; anything that acts becomes a Command
for the runner's main thread, which stays the only one that changes anything.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from devrun import events
from devrun.appstate import AppState, follow_apps
from devrun.control import ControlError

HISTORY = 5000  # events replayed to a dashboard that attaches
SUBSCRIBER_BACKLOG = 10_000  # an attached client this far behind is dropped, never waited for
COMMAND_WAIT = 10.0
HEARTBEAT = 5.0

Post = Callable[[object], None]


def _row(app: AppState, now: float) -> dict[str, Any]:
    """One app in `status`: the names are a contract (`devrun status --json`)."""
    return {"name": app.name, "url": app.url, "state": app.state, "pid": app.pid, "since": app.up_since,
            "uptime": round(now - app.up_since, 1) if app.up_since else None, "reloads": app.reloads,
            "last_change": list(app.cause), "last_change_at": app.cause_at, "error": app.error,
            "pages": app.pages, "requests": app.requests}


class RemoteView:
    def __init__(self, apps: list[tuple[str, str]], post: Post, info: dict[str, Any]):
        self.lock = threading.Lock()
        self.apps = {name: AppState(name, url) for name, url in apps}
        self.order = [name for name, _ in apps]
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self.subscribers: set[queue.Queue[dict[str, Any] | None]] = set()
        self.config_problems: list[str] = []
        self.post = post
        self.info = info

    # -- the view (runner's main thread) -------------------------------------------------

    def handle(self, event: events.Event) -> None:
        data = events.to_dict(event)
        with self.lock:
            self._update(event)
            self.history.append(data)
            for sub in list(self.subscribers):
                try:
                    sub.put_nowait(data)
                except queue.Full:  # a client that stopped reading: hang up on it
                    self.subscribers.discard(sub)
                    with contextlib.suppress(queue.Full):
                        sub.put_nowait(None)

    def _update(self, event: events.Event) -> None:
        if isinstance(event, events.AppsChanged):
            self.order = [name for name, _ in event.apps]
            self.apps = follow_apps(self.apps, event)
            self.config_problems = []
        elif isinstance(event, events.ConfigRejected):
            self.config_problems = list(event.problems)
        elif event.app in self.apps:
            self.apps[event.app].apply(event)

    # -- verbs (control connection threads) ----------------------------------------------

    def status(self, args: dict[str, Any]) -> dict[str, Any]:
        now = time.time()
        with self.lock:
            apps = [_row(self.apps[name], now) for name in self.order]
            return {**self.info, "apps": apps, "config_problems": list(self.config_problems)}

    def command(self, verb: str) -> Callable[[dict[str, Any]], Any]:
        """restart / stop / start: one Command per app named (none: every app), acted on by the
        main thread; the reply comes once it has acted."""

        def handler(args: dict[str, Any]) -> dict[str, Any]:
            names = args.get("apps") or []
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ControlError("apps must be a list of app names")
            with self.lock:
                known = list(self.order)
            if verb == "start":
                known = list(dict.fromkeys([*known, *self.info.get("configured", [])]))
            unknown = [n for n in names if n not in known]
            if unknown:
                raise ControlError(f"no app named {', '.join(unknown)}; apps: {', '.join(known)}")
            with self.lock:
                states = {n: self.apps[n].state for n in names or known if n in self.apps}
            if verb == "start" and names and all(states.get(n) not in ("stopped", None) for n in names):
                raise ControlError(f"already running: {', '.join(names)}")
            done = [threading.Event() for _ in names or [None]]
            for name, event in zip(names or [None], done, strict=True):
                self.post(events.Command(verb, name, done=event))
            deadline = time.monotonic() + COMMAND_WAIT
            if not all(e.wait(max(deadline - time.monotonic(), 0)) for e in done):
                raise ControlError(f"the runner did not act on {verb} within {COMMAND_WAIT:g} s")
            return {"verb": verb, "apps": names or known}

        return handler

    def down(self, args: dict[str, Any]) -> dict[str, Any]:
        self.post(events.Command("quit"))
        return {"pid": os.getpid()}

    def events(self, args: dict[str, Any], send: Callable[[dict[str, Any]], bool]) -> None:
        """attach: the apps and the history, then every event as it happens."""
        sub: queue.Queue[dict[str, Any] | None] = queue.Queue(SUBSCRIBER_BACKLOG)
        with self.lock:
            apps = [[name, self.apps[name].url] for name in self.order]
            past = list(self.history)
            self.subscribers.add(sub)
        try:
            if not send({"event": "AppsChanged", "app": "", "at": time.time(), "apps": apps}):
                return
            if self.info.get("pin") and not send(events.to_dict(events.Notice("", f"PIN: {self.info['pin']}"))):
                return
            for item in past:
                if not send(item):
                    return
            while True:
                try:
                    item = sub.get(timeout=HEARTBEAT)
                except queue.Empty:  # a quiet runner still finds out that a client has gone
                    if not send({"heartbeat": time.time()}):
                        return
                    continue
                if item is None or not send(item):
                    return
        finally:
            with self.lock:
                self.subscribers.discard(sub)

    def handlers(self) -> dict[str, Callable[[dict[str, Any]], Any]]:
        return {"status": self.status, "restart": self.command("restart"), "stop": self.command("stop"),
                "start": self.command("start"), "down": self.down}

    def streams(self) -> dict[str, Callable[[dict[str, Any], Callable[[dict[str, Any]], bool]], None]]:
        return {"events": self.events}
