"""The runner's one loop: every item of the inbox, handled on the main thread, in order.

It debounces the watcher's changes into reloads, routes each child's items to the supervisor
that started it, hands config edits and commands to the apps (apps.py), and every event to the
views. Between items it sleeps until the earliest deadline of the debouncer and the
supervisors, never on a fixed tick.

It never imports user code and is never monkey-patched.
"""

from __future__ import annotations

import contextlib
import os
import queue
import secrets
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Protocol

from devrun import events, wire
from devrun.config import Config
from devrun.control.remote import RemoteView
from devrun.runner.apps import CONFIG_KEY, ENV_KEY, Apps, MakeLauncher
from devrun.runner.controlplane import serve_control
from devrun.runner.generation import ChildMessage, ChildOutput
from devrun.runner.inbox import ChildItem, FilesTouched, FromChild, InboxItem, StopAsked
from devrun.runner.orphans import Orphans
from devrun.runner.supervisor import KILL_MARGIN, AppSupervisor
from devrun.watch.debounce import Batch, Debouncer
from devrun.watch.watcher import Watcher

__all__ = ["CONFIG_KEY", "Runner", "View", "new_pin", "run_apps"]

# The longest the loop sleeps with nothing due (a bound, not a tick: deadlines wake it on time).
IDLE = 1.0
# Items waiting for the main thread beyond which child output and request lines are dropped.
MAX_BACKLOG = 20_000
# SIGHUP: the terminal that ran a foreground `devrun up` was closed; stop in order as for SIGTERM.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class View(Protocol):
    def handle(self, event: events.Event) -> None: ...


def new_pin() -> str:
    """A random debugger PIN for this run (never derived from machine data)."""
    digits = f"{secrets.randbelow(10**9):09d}"
    return f"{digits[:3]}-{digits[3:6]}-{digits[6:]}"


class Runner:
    def __init__(self, config: Config, names: Sequence[str] | None, views: Sequence[View], serve_control: bool = False,
                 launcher: MakeLauncher | None = None):
        self.views = list(views)
        self.serve_control = serve_control  # the control socket, app logs and the one-runner lock
        self.inbox: queue.Queue[InboxItem] = queue.Queue()
        self.debouncer = Debouncer()
        self.orphans = Orphans()
        self.pin = new_pin()
        self.apps = Apps(config, list(names) if names is not None else None, self.pin, self.emit, self.post_child,
                         self.debouncer, self.orphans, launcher)
        self.stop_requested = 0
        self.dropped: dict[str, int] = {}
        self.dropped_lock = threading.Lock()  # counted from every generation's reader threads
        self.ticked_at = time.monotonic()  # deadlines are points in time: see AppSupervisor.poll_at
        self.view_errors = 0
        self.watcher: Watcher | None = None
        self.remote: RemoteView | None = None

    def post_child(self, owner: AppSupervisor, item: ChildItem) -> None:
        """From a generation's reader threads. Output and request lines are dropped (and
        counted) rather than queued without bound when the main thread falls behind; the
        readers keep draining the pipes either way, so a child never blocks on its output."""
        if self.inbox.qsize() >= MAX_BACKLOG and (
            isinstance(item, ChildOutput)
            or (isinstance(item, ChildMessage) and isinstance(item.message, wire.Requests))
        ):
            message = item.message if isinstance(item, ChildMessage) else None
            lines = len(message.served) if isinstance(message, wire.Requests) else 1
            with self.dropped_lock:
                self.dropped[item.generation.app] = self.dropped.get(item.generation.app, 0) + lines
            return
        self.inbox.put(FromChild(owner, item))

    def _report_dropped(self) -> None:
        with self.dropped_lock:
            counts, self.dropped = self.dropped, {}
        for app, count in counts.items():
            if count:
                self.notice(f"{count} output/request lines dropped: the runner fell behind", "warning", app)

    def emit(self, event: events.Event) -> None:
        for view in self.views:
            try:
                view.handle(event)
            except Exception as exc:  # a full disk under runner.log, a closed terminal: never the apps
                self._view_failed(view, exc)

    def _view_failed(self, view: View, exc: Exception) -> None:
        self.view_errors += 1
        if self.view_errors == 1:  # once: a view that cannot write fails on every event
            with contextlib.suppress(Exception):
                assert sys.__stderr__ is not None
                sys.__stderr__.write(f"devrun: {type(view).__name__} failed ({exc}); the apps keep running\n")

    def notice(self, text: str, level: str = "info", app: str = "") -> None:
        self.emit(events.Notice(app, text, level))

    def _on_signal(self, signum: int, frame: object) -> None:
        # The main thread may be inside the inbox's lock right now (this handler runs on it): a
        # thread posts the wake-up, once the lock is free; the flag is what the loop checks.
        self.stop_requested += 1
        threading.Thread(target=self.inbox.put, args=(StopAsked(),), daemon=True).start()

    def run(self) -> int:
        previous = {s: signal.signal(s, self._on_signal) for s in STOP_SIGNALS}
        self.watcher = watcher = Watcher(lambda: self.inbox.put(FilesTouched()),
                                         lambda app, text: self.inbox.put(events.Notice(app, text, "warning")))
        try:
            with contextlib.ExitStack() as stack:
                if self.serve_control:
                    log_view, self.remote = serve_control(
                        stack, self.apps.config.file, [(a.name, a.url) for a in self.apps.wanted], self._info(),
                        self.inbox.put, lambda text: self.notice(text, "warning"))
                    self.views += [log_view, self.remote]
                    self.apps.on_configured = self._configured
                for view in self.views:
                    running = getattr(view, "running", None)
                    if running is not None:  # an interactive view: draws and reads keys meanwhile
                        stack.enter_context(running(self.inbox.put))
                # Always (on Linux): what escapes an app's process group is then adopted by us,
                # reported, and stopped with the runner instead of living on.
                self.orphans.adopt()
                self.apps.watcher = watcher
                self.apps.add_all()
                if not self.apps.supervisors:
                    self.notice("no app could start", "error")
                    return 1
                if self.serve_control:
                    self.apps.watch_file(CONFIG_KEY, str(self.apps.config.file))
                    self.apps.watch_env_files()
                watcher.start()
                while not self.stop_requested:
                    self._step()
                return self._shutdown(watcher)
        except BaseException:
            # A bug in the runner must not leave apps holding their ports.
            self._kill_all()
            self.apps.preloaders.close()
            self.orphans.stop(wait=0.5)
            raise
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            for listener in self.apps.listeners.values():
                listener.close()

    def _info(self) -> dict[str, object]:
        apps = self.apps
        return {"pid": os.getpid(), "config": str(apps.config.file), "started": time.time(),
                "pin": self.pin if any(a.config.debug.enabled and a.config.debug.pin for a in apps.wanted) else None,
                "configured": list(apps.config.apps)}

    def _configured(self, names: list[str]) -> None:
        if self.remote is not None:
            self.remote.info.update(configured=names)

    # -- the loop ----------------------------------------------------------------------------

    def _step(self) -> None:
        """Wait for the next item or the next deadline, handle what came, then what is due."""
        deadline = self._next_deadline()
        try:
            self._handle(self.inbox.get(timeout=max(0.0, deadline - time.monotonic())))
            # Whatever else is waiting, before the deadlines (one burst, one pass), but never past
            # one: a flood of output must not starve the supervisors' timers.
            while time.monotonic() < deadline:
                self._handle(self.inbox.get_nowait())
        except queue.Empty:
            pass
        now = time.monotonic()
        if now < deadline:
            return  # an item came first: what it changed is handled; nothing is due yet
        self.ticked_at = now
        for key, batch in self.debouncer.due(now):
            self._changed(key, batch)
        for sup in self.apps.all():
            sup.tick()
        self.apps.prune()
        self._report_dropped()
        groups = {g.pid for sup in self.apps.all() for g in sup.generations()}
        for text in self.orphans.tick(now, groups):
            self.notice(text, "warning")

    def _next_deadline(self) -> float:
        times = [self.ticked_at + IDLE, *(s.next_deadline() for s in self.apps.all())]
        if (debounced := self.debouncer.next_deadline()) is not None:
            times.append(debounced)
        if (scan := self.orphans.next_deadline()) is not None:
            times.append(scan)
        return min(times)

    def _handle(self, item: InboxItem) -> None:
        match item:
            case FromChild(owner, child):
                owner.handle(child)
            case FilesTouched():
                assert self.watcher is not None
                now = time.monotonic()
                for key, path, code in self.watcher.drain():
                    # A removed app's last changes may still come out of the watcher: not ours now.
                    if self.apps.owns(key):
                        self.debouncer.add(key, path, code, now)
            case events.Command():
                try:
                    self._command(item)
                finally:
                    if item.done is not None:
                        item.done.set()
            case events.Event():  # from another thread, for the views
                self.emit(item)
            case StopAsked():
                pass  # the flag is set already: the loop ends after this step

    def _changed(self, key: str, batch: Batch) -> None:
        # An env file is part of the config: its edit is applied as a devrun.yaml edit is.
        if key == CONFIG_KEY or key.startswith(ENV_KEY):
            self.apps.apply_config()
        elif (sup := self.apps.supervisors.get(key)) is not None:
            if batch.code:  # a restart refreshes the pages as well
                sup.reload(batch.paths)
            else:
                sup.refresh(batch.live)

    def _command(self, command: events.Command) -> None:
        if command.verb == "quit":
            self.stop_requested += 1
            return
        apps = self.apps
        if command.verb == "start" and command.app is not None and command.app not in apps.supervisors:
            app = apps.config.apps.get(command.app)
            if app is not None:  # in devrun.yaml but not started by `up APP ...`
                if apps.selected is not None:
                    apps.selected.append(app.name)
                apps.add(app)
                apps.announce()
            return
        for name, sup in apps.supervisors.items():
            if command.app not in (None, name):
                continue
            if command.verb == "restart" and not sup.stopping:
                sup.restart()
            elif command.verb in ("restart", "start") and sup.stopping:
                self.notice("start (asked for)", "info", name)
                sup.start()
            elif command.verb == "stop" and not sup.stopping:
                self.notice("stop (asked for)", "info", name)
                sup.stop(final=False)

    def _shutdown(self, watcher: Watcher) -> int:
        watcher.stop()
        for sup in self.apps.supervisors.values():
            sup.stop()  # and its launcher
        sups = self.apps.all()
        grace = max((s.app.config.graceful_timeout for s in sups), default=0)
        deadline = time.monotonic() + grace + KILL_MARGIN + 2
        seen = self.stop_requested
        while not all(s.done for s in sups) and time.monotonic() < deadline:
            if self.stop_requested > seen:  # a second Ctrl-C: no more waiting
                for sup in sups:
                    sup.kill_everything()
                seen = self.stop_requested
            with contextlib.suppress(queue.Empty):
                timeout = min(s.next_deadline() for s in sups) - time.monotonic() if sups else 0.0
                item = self.inbox.get(timeout=min(max(0.0, timeout), IDLE))
                if isinstance(item, events.Command):  # nothing new starts now
                    if item.done is not None:
                        item.done.set()
                elif not isinstance(item, FilesTouched):
                    self._handle(item)
            for sup in sups:
                sup.tick()
        self._kill_all()
        self.apps.preloaders.close()
        self.orphans.stop(wait=1.0)
        for sup in self.apps.supervisors.values():
            self.emit(events.Stopped(sup.name))
        return 0

    def _kill_all(self) -> None:
        for sup in self.apps.all():
            sup.kill_everything()


def run_apps(config: Config, names: Sequence[str] | None, views: Sequence[View]) -> int:
    """`devrun up`: the runner with its control socket, app logs and one-runner lock."""
    return Runner(config, names, views, serve_control=True).run()

