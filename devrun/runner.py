"""The runner: binds the sockets, starts a supervisor per app, feeds them file changes and
child events from one inbox on the main thread, and hands every event to the views.

It never imports user code and is never monkey-patched.
"""

from __future__ import annotations

import contextlib
import queue
import secrets
import signal
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from devrun import events, process, sockets
from devrun.config import App, Config, is_loopback
from devrun.fallback import Fallback
from devrun.forking import ForkLauncher
from devrun.patterns import Matcher
from devrun.process import ChildMessage, ChildOutput
from devrun.supervisor import KILL_MARGIN, AppSupervisor
from devrun.watcher import Batch, Watcher

TICK = 0.1
# Items waiting for the main thread beyond which child output and request lines are dropped.
MAX_BACKLOG = 20_000


class View(Protocol):
    def handle(self, event: events.Event) -> None: ...


@dataclass(frozen=True)
class FilesChanged:
    app: str
    batch: Batch


def new_pin() -> str:
    """A random debugger PIN for this run (never derived from machine data)."""
    digits = f"{secrets.randbelow(10**9):09d}"
    return f"{digits[:3]}-{digits[3:6]}-{digits[6:]}"


class Runner:
    def __init__(self, config: Config, names: Sequence[str], views: Sequence[View]):
        self.config = config
        self.apps: list[App] = [config.apps[n] for n in names]
        self.views = list(views)
        self.inbox: queue.Queue[object] = queue.Queue()
        self.supervisors: dict[str, AppSupervisor] = {}
        self.listeners: list[socket.socket] = []
        self.stop_requested = 0
        self.pin = new_pin()
        self.launchers: list[ForkLauncher] = []
        self.dropped: dict[str, int] = {}
        self.subreaper = False

    def post_child(self, item: object) -> None:
        """From a generation's reader threads. Output and request lines are dropped (and
        counted) rather than queued without bound when the main thread falls behind; the
        readers keep draining the pipes either way, so a child never blocks on its output."""
        if self.inbox.qsize() >= MAX_BACKLOG and (
            isinstance(item, ChildOutput)
            or (isinstance(item, ChildMessage) and item.message.get("type") == "request")
        ):
            self.dropped[item.generation.app] = self.dropped.get(item.generation.app, 0) + 1
            return
        self.inbox.put(item)

    def _report_dropped(self) -> None:
        for app, count in list(self.dropped.items()):
            if count:
                self.dropped[app] = 0
                self.notice(f"{count} output/request lines dropped: the runner fell behind", "warning", app)

    def emit(self, event: events.Event) -> None:
        for view in self.views:
            view.handle(event)

    def notice(self, text: str, level: str = "info", app: str = "") -> None:
        self.emit(events.Notice(app, text, level))

    def _on_signal(self, signum: int, frame: object) -> None:
        # Only set a flag: the main thread may be inside the inbox's lock right now.
        self.stop_requested += 1

    def run(self) -> int:
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        watcher = Watcher(lambda app, batch: self.inbox.put(FilesChanged(app, batch)),
                          lambda app, text: self.inbox.put(events.Notice(app, text, "warning")))
        try:
            with contextlib.ExitStack() as screens:
                for view in self.views:
                    running = getattr(view, "running", None)
                    if running is not None:  # an interactive view: draws and reads keys meanwhile
                        screens.enter_context(running(self.inbox.put))
                self._start(watcher)
                if not self.supervisors:
                    self.notice("no app could start", "error")
                    return 1
                watcher.start()
                while not self.stop_requested:
                    self._step(time.monotonic() + TICK)
                return self._shutdown(watcher)
        except BaseException:
            # A bug in the runner must not leave apps holding their ports.
            self._kill_all()
            raise
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            for listener in self.listeners:
                listener.close()

    def _start(self, watcher: Watcher) -> None:
        if any(a.config.reload == "fork" for a in self.apps):
            self.subreaper = process.become_subreaper()
        if any(a.config.debug.enabled and a.config.debug.pin for a in self.apps):
            self.notice(f"PIN: {self.pin}")
        for app in self.apps:
            cfg = app.config
            if cfg.debug.enabled and cfg.debug.allow_remote and not is_loopback(cfg.host):
                self.notice(f"WARNING: the debugger on {cfg.host}:{cfg.port} lets anyone who can "
                            "reach it run code on this machine (debug.allow_remote is on)", "warning", app.name)
            if cfg.live and not is_loopback(cfg.host):
                self.notice(f"WARNING: live reload on {cfg.host}:{cfg.port} is reachable from other machines "
                            "(allow_remote is on)", "warning", app.name)
            if cfg.debug.enabled and not cfg.debug.pin:
                self.notice("debugger PIN is off: any local user can run code through the console",
                            "warning", app.name)
            try:
                listener = sockets.bind(cfg.host, cfg.port)
            except sockets.PortInUse as exc:
                self.notice(f"cannot listen: {exc}; choose another port in devrun.yaml", "error", app.name)
                continue
            except OSError as exc:
                self.notice(f"cannot listen on {cfg.host}:{cfg.port}: {exc.strerror}", "error", app.name)
                continue
            self.listeners.append(listener)
            env = {"WERKZEUG_DEBUG_PIN": self.pin if cfg.debug.pin else "off"}
            launcher = self._launcher(app, listener, env)
            sup = AppSupervisor(app, listener, env, self.emit, self.post_child,
                                fallback=Fallback(app.name, listener),
                                spawn=launcher.spawn if launcher else process.spawn,
                                learn=launcher.learn if launcher else None)
            if launcher:
                self.launchers.append(launcher)
            self.supervisors[app.name] = sup
            live = Matcher(app.root, cfg.live_reload.watch, cfg.ignore, cfg.respect_gitignore) if cfg.live else None
            watcher.add(app.name, Matcher(app.root, cfg.watch, cfg.ignore, cfg.respect_gitignore), cfg.reload_delay,
                        live)
        for sup in self.supervisors.values():
            sup.start()

    def _launcher(self, app: App, listener: socket.socket, env: dict[str, str]) -> ForkLauncher | None:
        if app.config.reload != "fork":
            return None
        if not self.subreaper:
            self.notice("reload: fork needs Linux (a subreaper runner); using spawn", "warning", app.name)
            return None

        def notice(text: str, level: str, name: str = app.name) -> None:
            self.emit(events.Notice(name, text, level))

        cache = self.config.file.parent / ".devrun" / f"preload-{app.name}.json"
        return ForkLauncher(app, listener, env, notice, cache)

    def _step(self, until: float) -> None:
        """Handle inbox items until `until`, then give every supervisor a tick."""
        while (left := until - time.monotonic()) > 0 and not self.stop_requested:
            try:
                item = self.inbox.get(timeout=left)
            except queue.Empty:
                break
            self._dispatch(item)
        for sup in self.supervisors.values():
            sup.tick()
        self._report_dropped()
        if self.subreaper:
            process.reap_orphans()

    def _dispatch(self, item: object) -> None:
        if isinstance(item, events.Event):  # from another thread, for the views
            self.emit(item)
            return
        if isinstance(item, events.Command):
            if item.verb == "quit":
                self.stop_requested += 1
            elif item.verb == "restart":
                for name, sup in self.supervisors.items():
                    if item.app in (None, name):
                        sup.restart()
            return
        if isinstance(item, FilesChanged):
            sup = self.supervisors.get(item.app)
            if sup is not None and item.batch.code:  # a restart refreshes the pages as well
                sup.reload(item.batch.code + item.batch.live)
            elif sup is not None:
                sup.refresh(item.batch.live)
            return
        gen = getattr(item, "generation", None)
        if gen is not None and gen.app in self.supervisors:
            self.supervisors[gen.app].handle(item)

    def _shutdown(self, watcher: Watcher) -> int:
        watcher.stop()
        for launcher in self.launchers:
            launcher.close()
        for sup in self.supervisors.values():
            sup.stop()
        grace = max((s.app.config.graceful_timeout for s in self.supervisors.values()), default=0)
        deadline = time.monotonic() + grace + KILL_MARGIN + 2
        seen = self.stop_requested
        while not all(s.done for s in self.supervisors.values()) and time.monotonic() < deadline:
            if self.stop_requested > seen:  # a second Ctrl-C: no more waiting
                for sup in self.supervisors.values():
                    for gen in sup.retiring:
                        gen.kill()
                seen = self.stop_requested
            with contextlib.suppress(queue.Empty):
                self._dispatch(self.inbox.get(timeout=TICK))
            for sup in self.supervisors.values():
                sup.tick()
        self._kill_all()
        for sup in self.supervisors.values():
            self.emit(events.Stopped(sup.name))
        return 0

    def _kill_all(self) -> None:
        for sup in self.supervisors.values():
            for gen in (sup.pending, sup.current, *sup.retiring):
                if gen is not None and not gen.exited:
                    gen.kill()


def run_apps(config: Config, names: Sequence[str], views: Sequence[View]) -> int:
    return Runner(config, names, views).run()

