"""The runner's side of the control socket: what `devrun status` and `attach` see, and the verbs
other terminals send.

`RemoteView` is a view like the dashboard: it only reads events, keeping each app's status and
a bounded history (replayed to `attach`, so a dashboard joins a running daemon with its past).
The verbs run on the control server's connection threads; anything that acts becomes a Command
for the runner's main thread, which stays the only one that changes anything.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from devrun import events
from devrun.control.protocol import ControlError
from devrun.events import AppStatus
from devrun.views.appstate import AppState, follow_apps

# Events replayed to a dashboard that attaches: at most this many, and this many bytes as sent
# (an output line may be 16 KiB), so a flood of output costs the runner a bounded amount of memory.
HISTORY = 5000
HISTORY_BYTES = 4 * 1024 * 1024
# An attached client this far behind (events, or bytes as sent) is dropped, never waited for.
SUBSCRIBER_BACKLOG = 10_000
SUBSCRIBER_BYTES = 4 * 1024 * 1024
COMMAND_WAIT = 10.0
HEARTBEAT = 5.0

PostCommand = Callable[[events.Command], None]  # to the runner's main thread: the only one that acts


def _row(app: AppState, now: float) -> dict[str, Any]:
    """One app in `status`: the names are a contract (`devrun status --json`)."""
    return {"name": app.name, "url": app.url, "state": app.state, "pid": app.pid, "since": app.up_since,
            "uptime": round(now - app.up_since, 1) if app.up_since else None, "reloads": app.reloads,
            "last_change": list(app.cause), "last_change_at": app.cause_at, "error": app.error,
            "pages": app.pages, "requests": app.requests}


def wire_size(data: dict[str, Any]) -> int:
    """About the bytes an event takes on the control socket (the memory it holds is of that order)."""
    return len(json.dumps(data, separators=(",", ":"), default=str)) + 32


class _Subscriber:
    """The backlog of one attached client, bounded in events and in bytes. The runner never waits
    for a client: one that falls that far behind is dropped (and told so)."""

    def __init__(self) -> None:
        self.items: deque[tuple[dict[str, Any], int]] = deque()
        self.bytes = 0
        self.dropped = False
        self.ready = threading.Condition(threading.Lock())

    def put(self, data: dict[str, Any], size: int) -> bool:
        """False once the client is dropped."""
        with self.ready:
            if not self.dropped and (len(self.items) >= SUBSCRIBER_BACKLOG or self.bytes + size > SUBSCRIBER_BYTES):
                self.dropped = True
                self.items.clear()
                self.bytes = 0
            if not self.dropped:
                self.items.append((data, size))
                self.bytes += size
            self.ready.notify()
            return not self.dropped

    def get(self, timeout: float) -> dict[str, Any] | None:
        """The next event; None once dropped; queue.Empty after timeout seconds without one."""
        with self.ready:
            if not self.items and not self.dropped:
                self.ready.wait(timeout)
            if self.dropped:
                return None
            if not self.items:
                raise queue.Empty
            data, size = self.items.popleft()
            self.bytes -= size
            return data


class RemoteView:
    def __init__(self, apps: list[tuple[str, str]], post: PostCommand, info: dict[str, Any]):
        self.lock = threading.Lock()
        self.apps = {name: AppState(name, url) for name, url in apps}
        self.order = [name for name, _ in apps]
        self.history: deque[tuple[dict[str, Any], int]] = deque()
        self.history_bytes = 0
        self.subscribers: set[_Subscriber] = set()
        self.config_problems: list[str] = []
        self.post = post
        self.info = info

    # -- the view (runner's main thread) -------------------------------------------------

    def handle(self, event: events.Event) -> None:
        data = events.to_dict(event)
        size = wire_size(data)
        with self.lock:
            self._update(event)
            self.history.append((data, size))
            self.history_bytes += size
            while len(self.history) > HISTORY or (self.history_bytes > HISTORY_BYTES and len(self.history) > 1):
                self.history_bytes -= self.history.popleft()[1]
            for sub in list(self.subscribers):
                if not sub.put(data, size):  # a client that stopped reading: hang up on it
                    self.subscribers.discard(sub)

    def _update(self, event: events.Event) -> None:
        if isinstance(event, events.AppsChanged):
            self.order = [name for name, _ in event.apps]
            self.apps = follow_apps(self.apps, event, AppState)
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
            names = list(dict.fromkeys(names))  # `restart web web ...` restarts web once
            with self.lock:
                known = list(self.order)
            if verb == "start":
                known = list(dict.fromkeys([*known, *self.info.get("configured", [])]))
            unknown = [n for n in names if n not in known]
            if unknown:
                raise ControlError(f"no app named {', '.join(unknown)}; apps: {', '.join(known)}")
            with self.lock:
                states = {n: self.apps[n].state for n in names or known if n in self.apps}
            if verb == "start" and names and all(states.get(n) not in (AppStatus.STOPPED, None) for n in names):
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
        sub = _Subscriber()
        with self.lock:
            apps = [[name, self.apps[name].url] for name in self.order]
            past = [data for data, _ in self.history]
            self.subscribers.add(sub)
        try:
            if not send({"event": "AppsChanged", "app": "", "at": time.time(), "apps": apps}):
                return
            if self.info.get("pin") and not send(events.to_dict(events.Notice("", f"PIN: {self.info['pin']}"))):
                return
            for old in past:
                if not send(old):
                    return
            while True:
                try:
                    item = sub.get(timeout=HEARTBEAT)
                except queue.Empty:  # a quiet runner still finds out that a client has gone
                    if not send({"heartbeat": time.time()}):
                        return
                    continue
                if item is None:
                    raise ControlError(f"dropped: this client fell more than {SUBSCRIBER_BYTES // 2**20} MiB "
                                       f"(or {SUBSCRIBER_BACKLOG} events) behind the runner; attach again")
                if not send(item):
                    return
        finally:
            with self.lock:
                self.subscribers.discard(sub)

    def handlers(self) -> dict[str, Callable[[dict[str, Any]], Any]]:
        return {"status": self.status, "restart": self.command("restart"), "stop": self.command("stop"),
                "start": self.command("start"), "down": self.down}

    def streams(self) -> dict[str, Callable[[dict[str, Any], Callable[[dict[str, Any]], bool]], None]]:
        return {"events": self.events}
