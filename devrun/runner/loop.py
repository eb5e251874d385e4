"""The runner: binds the sockets, starts a supervisor per app, feeds them file changes and
child events from one inbox on the main thread, and hands every event to the views.

It never imports user code and is never monkey-patched.
"""

from __future__ import annotations

import contextlib
import os
import queue
import secrets
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from devrun import events
from devrun.config import App, Config, ConfigError, is_loopback, load_config
from devrun.control import daemon
from devrun.control import server as control
from devrun.control.logfiles import AppLogs, LogView
from devrun.control.remote import RemoteView
from devrun.control.server import ControlServer
from devrun.runner import generation as process
from devrun.runner import sockets
from devrun.runner.fallback import Fallback
from devrun.runner.forking import ForkLauncher
from devrun.runner.generation import ChildExited, ChildMessage, ChildOutput
from devrun.runner.supervisor import KILL_MARGIN, AppSupervisor
from devrun.watch.patterns import Matcher
from devrun.watch.watcher import Batch, Watcher

TICK = 0.1
CONFIG_KEY = "\0devrun.yaml"  # the watcher's key for the config file: never an app's name
CONFIG_DELAY = 0.2  # an editor may write the file in several steps
ENV_KEY = "\0env:"  # + path: the watcher's key for an env file
SPARE_AFTER = 0.2  # seconds after a generation started before the next one's spare is forked
LOG_BYTES_ENV = "DEVRUN_LOG_MAX_BYTES"  # each app's log file size before it rotates (3 kept)
# Items waiting for the main thread beyond which child output and request lines are dropped.
MAX_BACKLOG = 20_000
# How often a subreaper runner looks for processes that escaped an app's process group.
ORPHAN_SCAN = 2.0
# SIGHUP: the terminal that ran a foreground `devrun up` was closed; stop in order as for SIGTERM.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class View(Protocol):
    def handle(self, event: events.Event) -> None: ...


@dataclass(frozen=True)
class FilesChanged:
    app: str
    batch: Batch


@dataclass(frozen=True)
class ConfigChanged:
    """devrun.yaml was saved."""


def new_pin() -> str:
    """A random debugger PIN for this run (never derived from machine data)."""
    digits = f"{secrets.randbelow(10**9):09d}"
    return f"{digits[:3]}-{digits[3:6]}-{digits[6:]}"


class Runner:
    def __init__(self, config: Config, names: Sequence[str] | None, views: Sequence[View], control: bool = False):
        self.config = config
        # The apps asked for on the command line; None: every app, also those an edit adds.
        self.selected: list[str] | None = list(names) if names is not None else None
        self.views = list(views)
        self.control = control  # the control socket, app logs and the one-runner lock
        self.inbox: queue.Queue[object] = queue.Queue()
        self.supervisors: dict[str, AppSupervisor] = {}
        self.listeners: dict[str, socket.socket] = {}
        self.launchers: dict[str, ForkLauncher] = {}
        self.leaving: list[AppSupervisor] = []  # removed by a config edit, still stopping
        self.stop_requested = 0
        self.pin = new_pin()
        self.pin_shown = False
        self.dropped: dict[str, int] = {}
        self.dropped_lock = threading.Lock()  # counted from every generation's reader threads
        self.subreaper = False
        self.escaped: set[int] = set()  # adopted processes already reported
        self.orphan_scan_at = 0.0
        self.view_errors = 0
        self.watcher: Watcher | None = None
        self.env_watches: set[str] = set()  # watcher keys of the env files watched
        self.remote: RemoteView | None = None

    @property
    def apps(self) -> list[App]:
        """The apps of the current config that this runner serves."""
        return [app for name, app in self.config.apps.items() if self.selected is None or name in self.selected]

    def post_child(self, item: object) -> None:
        """From a generation's reader threads. Output and request lines are dropped (and
        counted) rather than queued without bound when the main thread falls behind; the
        readers keep draining the pipes either way, so a child never blocks on its output."""
        if self.inbox.qsize() >= MAX_BACKLOG and (
            isinstance(item, ChildOutput)
            or (isinstance(item, ChildMessage) and item.message.get("type") == "request")
        ):
            with self.dropped_lock:
                self.dropped[item.generation.app] = self.dropped.get(item.generation.app, 0) + 1
            return
        self.inbox.put(item)

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
                sys.__stderr__.write(f"devrun: {type(view).__name__} failed ({exc}); the apps keep running\n")

    def notice(self, text: str, level: str = "info", app: str = "") -> None:
        self.emit(events.Notice(app, text, level))

    def _on_signal(self, signum: int, frame: object) -> None:
        # Only set a flag: the main thread may be inside the inbox's lock right now.
        self.stop_requested += 1

    def run(self) -> int:
        previous = {s: signal.signal(s, self._on_signal) for s in STOP_SIGNALS}
        self.watcher = watcher = Watcher(self._on_batch,
                                         lambda app, text: self.inbox.put(events.Notice(app, text, "warning")))
        try:
            with contextlib.ExitStack() as stack:
                if self.control:
                    self._serve_control(stack)
                for view in self.views:
                    running = getattr(view, "running", None)
                    if running is not None:  # an interactive view: draws and reads keys meanwhile
                        stack.enter_context(running(self.inbox.put))
                # Always (on Linux): what escapes an app's process group is then adopted by us,
                # reported, and stopped with the runner instead of living on.
                self.subreaper = process.become_subreaper()
                for app in self.apps:
                    self._add_app(app)
                if not self.supervisors:
                    self.notice("no app could start", "error")
                    return 1
                if self.control:
                    watcher.watch_file(CONFIG_KEY, str(self.config.file), CONFIG_DELAY)
                    self._watch_env_files()
                watcher.start()
                while not self.stop_requested:
                    self._step(time.monotonic() + TICK)
                return self._shutdown(watcher)
        except BaseException:
            # A bug in the runner must not leave apps holding their ports.
            self._kill_all()
            self._stop_orphans(wait=0.5)
            raise
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            for listener in self.listeners.values():
                listener.close()

    def _serve_control(self, stack: contextlib.ExitStack) -> None:
        """The one-runner lock, per-app log files and the control socket, in `.devrun/`."""
        lock = daemon.RunnerLock(self.config.file)
        lock.acquire()  # AlreadyRunning before anything has started
        stack.callback(lock.release)
        state = daemon.state_dir(self.config.file)
        logs = AppLogs(state / daemon.LOG_DIR, max_bytes=self._log_bytes())
        stack.callback(logs.close)
        self.views.append(LogView(logs))
        self.remote = RemoteView([(a.name, a.url) for a in self.apps], self.inbox.put, self._info())
        self.views.append(self.remote)
        path = control.socket_path(state)
        server = ControlServer(path, self.remote.handlers(), self.remote.streams())
        server.start()
        stack.callback(server.close)
        link = state / "control.sock"
        if path != link:  # too long a path for a socket: a link in .devrun/ says where it is
            with contextlib.suppress(FileNotFoundError):
                link.unlink()
            link.symlink_to(path)
            stack.callback(lambda: link.unlink(missing_ok=True))

    def _log_bytes(self) -> int:
        text = os.environ.get(LOG_BYTES_ENV, "")
        if text.isdigit() and int(text) > 0:
            return int(text)
        if text:
            self.notice(f"{LOG_BYTES_ENV}={text!r} is not a positive number of bytes; using 1000000", "warning")
        return 1_000_000

    def _info(self) -> dict[str, object]:
        return {"pid": os.getpid(), "config": str(self.config.file), "started": time.time(),
                "pin": self.pin if any(a.config.debug.enabled and a.config.debug.pin for a in self.apps) else None,
                "configured": list(self.config.apps)}

    def _on_batch(self, key: str, batch: Batch) -> None:
        # An env file is part of the config: its edit is applied as a devrun.yaml edit is.
        config = key == CONFIG_KEY or key.startswith(ENV_KEY)
        self.inbox.put(ConfigChanged() if config else FilesChanged(key, batch))

    def _watch_env_files(self) -> None:
        """Watch every env file the config names (a missing optional one too: its creation counts)."""
        if self.watcher is None:
            return
        wanted = {ENV_KEY + str(app.env_path) for app in self.config.apps.values() if app.env_path is not None}
        for key in self.env_watches - wanted:
            self.watcher.unwatch_file(key)
        for key in wanted - self.env_watches:
            self.watcher.watch_file(key, key[len(ENV_KEY):], CONFIG_DELAY)
        self.env_watches = wanted

    # -- apps --------------------------------------------------------------------------------

    def _add_app(self, app: App, listener: socket.socket | None = None) -> None:
        cfg = app.config
        if cfg.debug.enabled and cfg.debug.pin and not self.pin_shown:
            self.pin_shown = True
            self.notice(f"PIN: {self.pin}")
        if cfg.debug.enabled and cfg.debug.allow_remote and not is_loopback(cfg.host):
            self.notice(f"WARNING: the debugger on {cfg.host}:{cfg.port} lets anyone who can "
                        "reach it run code on this machine (debug.allow_remote is on)", "warning", app.name)
        if cfg.live and not is_loopback(cfg.host):
            self.notice(f"WARNING: live reload on {cfg.host}:{cfg.port} is reachable from other machines "
                        "(allow_remote is on)", "warning", app.name)
        if cfg.debug.enabled and not cfg.debug.pin:
            self.notice("debugger PIN is off: any local user can run code through the console",
                        "warning", app.name)
        if listener is None:
            try:
                listener = sockets.bind(cfg.host, cfg.port)
            except sockets.PortInUse as exc:
                self.notice(f"cannot listen: {exc}; choose another port in devrun.yaml", "error", app.name)
                return
            except OSError as exc:
                self.notice(f"cannot listen on {cfg.host}:{cfg.port}: {exc.strerror}", "error", app.name)
                return
        self.listeners[app.name] = listener
        env = {"WERKZEUG_DEBUG_PIN": self.pin if cfg.debug.pin else "off"}
        launcher = self._launcher(app, listener, env)
        sup = AppSupervisor(app, listener, env, self.emit, self.post_child,
                            fallback=Fallback(app.name, listener),
                            spawn=launcher.spawn if launcher else process.spawn,
                            learn=launcher.learn if launcher else None,
                            stale=launcher.stale if launcher else None,
                            rewatch=lambda: self._watch(app, again=True))
        if launcher:
            self.launchers[app.name] = launcher
        self.supervisors[app.name] = sup
        self._watch(app)
        sup.start()

    def _watch(self, app: App, again: bool = False) -> None:
        """Watch an app's files (again: its folder was gone, and its watches with it)."""
        if self.watcher is None:
            return
        if again:
            self.watcher.remove(app.name)
        cfg = app.config
        # Templates and static files are watched with live reload off too: an edit must still reach
        # the app (Django's cached templates are reset, a framework that cannot do that restarts).
        live = Matcher(app.root, cfg.live_reload.watch, cfg.ignore, cfg.respect_gitignore)
        self.watcher.add(app.name, Matcher(app.root, cfg.watch, cfg.ignore, cfg.respect_gitignore),
                         cfg.reload_delay, live)

    def _remove_app(self, name: str) -> socket.socket:
        """Stop an app for good (a config edit removed or changed it); returns its listener,
        for an app that now has its address (the same app, or another one: ports swapped)."""
        if self.watcher is not None:
            self.watcher.remove(name)
        launcher = self.launchers.pop(name, None)
        if launcher is not None:
            launcher.close()
        sup = self.supervisors.pop(name)
        sup.stop()
        self.leaving.append(sup)
        return self.listeners.pop(name)

    def _launcher(self, app: App, listener: socket.socket, env: dict[str, str]) -> ForkLauncher | None:
        if app.config.reload != "fork":
            return None
        if not self.subreaper:
            self.subreaper = process.become_subreaper()
        if not self.subreaper:
            self.notice("reload: fork needs Linux (a subreaper runner); using spawn", "warning", app.name)
            return None

        def notice(text: str, level: str, name: str = app.name) -> None:
            self.emit(events.Notice(name, text, level))

        cache = daemon.state_dir(self.config.file) / f"preload-{app.name}.json"
        return ForkLauncher(app, listener, env, notice, cache)

    def _apply_config(self) -> None:
        """devrun.yaml was saved: start what was added, stop what was removed, restart what
        changed, leave the rest running. An invalid file changes nothing."""
        try:
            new = load_config(self.config.file)
        except ConfigError as exc:
            problems = tuple(str(p) for p in exc.problems)
            self.emit(events.ConfigRejected("", problems))
            self.notice(f"{self.config.file.name} not applied; the running apps keep the previous config",
                        "error")
            for problem in problems:
                self.notice(problem, "error")
            return
        except OSError as exc:
            self.emit(events.ConfigRejected("", (f"{self.config.file}: {exc.strerror or exc}",)))
            self.notice(f"{self.config.file.name} cannot be read ({exc.strerror or exc}); nothing changed", "error")
            return
        old, self.config = self.config, new
        self._watch_env_files()
        wanted = {app.name: app for app in self.apps}
        # Every listener given up here is kept until the apps are added again: an address that
        # moves to another app (two ports swapped) is handed over instead of bound anew, which
        # would fail while the old app's retiring generations still hold the socket.
        released: dict[tuple[str, int], socket.socket] = {}
        for name in [n for n in self.supervisors if n not in wanted]:
            self.notice(f"removed from {new.file.name}: stopping", "info", name)
            address = _address(self.supervisors[name].app)
            released[address] = self._remove_app(name)
        starting = []
        for name, app in wanted.items():
            before = old.apps.get(name)
            if name in self.supervisors and before != app:
                # A new environment replaces the fork server too: its preloaded modules may have
                # read the old one at import time.
                what = (f"{app.env_path.name if app.env_path else 'env file'} changed" if before is not None
                        and before.config == app.config and before.file_env != app.file_env
                        else f"changed in {new.file.name}")
                self.notice(f"{what}: restarting", "info", name)
                address = _address(self.supervisors[name].app)
                released[address] = self._remove_app(name)
                starting.append(app)
            elif name not in self.supervisors and before is None:
                self.notice(f"added to {new.file.name}: starting", "info", name)
                starting.append(app)
        for app in starting:
            self._add_app(app, released.pop(_address(app), None))
        for listener in released.values():
            listener.close()  # the port closes once its retiring generations are gone
        if self.remote is not None:
            self.remote.info.update(configured=list(new.apps))
        self.emit(events.AppsChanged("", tuple((n, s.app.url) for n, s in self.supervisors.items())))

    # -- the loop ----------------------------------------------------------------------------

    def _step(self, until: float) -> None:
        """Handle inbox items until `until`, then give every supervisor a tick."""
        while (left := until - time.monotonic()) > 0 and not self.stop_requested:
            try:
                item = self.inbox.get(timeout=left)
            except queue.Empty:
                break
            self._dispatch(item)
        for sup in self._all_supervisors():
            sup.tick()
        self.leaving = [sup for sup in self.leaving if not sup.done]
        for name, launcher in self.launchers.items():
            sup = self.supervisors[name]
            gen = sup.current
            # A spare generation for the next reload, forked while the app is idle: not right
            # after a reload, when the browser's requests want the CPU.
            if (gen is not None and gen.going and sup.pending is None and not sup.stopping
                    and time.monotonic() - gen.started > SPARE_AFTER):
                launcher.refill()
        self._report_dropped()
        if self.subreaper:
            process.reap_orphans()
            if time.monotonic() >= self.orphan_scan_at:
                self.orphan_scan_at = time.monotonic() + ORPHAN_SCAN
                self._report_escaped()

    def _report_escaped(self) -> None:
        """Processes that left an app's process group (setsid, a daemonising double fork) and
        outlived their parent are ours now: say so once each; they are stopped with the runner."""
        groups = {g.pid for sup in self._all_supervisors() for g in sup.generations()}
        for pid, group in process.adopted_orphans():
            # Still in a generation's group: killed with that group (see AppSupervisor.groups).
            if pid not in self.escaped and group not in groups:
                self.escaped.add(pid)
                self.notice(f"process {pid} ({process.process_name(pid)}) escaped its app's process group; "
                            "devrun stops it when it stops", "warning")

    def _stop_orphans(self, wait: float) -> None:
        """SIGTERM what we adopted, SIGKILL what is still there after `wait` seconds."""
        if not self.subreaper:
            return
        pids = [pid for pid, _ in process.adopted_orphans()]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + wait
        while pids and time.monotonic() < deadline:
            process.reap_orphans()
            pids = [pid for pid, _ in process.adopted_orphans()]
            if pids:
                time.sleep(0.02)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        process.reap_orphans()

    def _all_supervisors(self) -> list[AppSupervisor]:
        return [*self.supervisors.values(), *self.leaving]

    def _dispatch(self, item: object) -> None:
        if isinstance(item, events.Event):  # from another thread, for the views
            self.emit(item)
            return
        if isinstance(item, events.Command):
            try:
                self._command(item)
            finally:
                if item.done is not None:
                    item.done.set()
            return
        if isinstance(item, ConfigChanged):
            self._apply_config()
            return
        if isinstance(item, FilesChanged):
            sup = self.supervisors.get(item.app)
            if sup is not None and item.batch.code:  # a restart refreshes the pages as well
                sup.reload(item.batch.code + item.batch.live)
            elif sup is not None:
                sup.refresh(item.batch.live)
            return
        gen = getattr(item, "generation", None)
        if gen is None:
            return
        if isinstance(item, ChildExited):
            gen.close_control()
            for launcher in self.launchers.values():
                if launcher.exited(gen):  # a spare: refilled when the app is idle again
                    return
        for sup in self._all_supervisors():  # a leaving app's generations still report their exit
            if gen in (sup.pending, sup.current, *sup.retiring):
                sup.handle(item)
                return

    def _command(self, command: events.Command) -> None:
        if command.verb == "quit":
            self.stop_requested += 1
            return
        if command.verb == "start" and command.app is not None and command.app not in self.supervisors:
            app = self.config.apps.get(command.app)
            if app is not None:  # in devrun.yaml but not started by `up APP ...`
                if self.selected is not None:
                    self.selected.append(app.name)
                self._add_app(app)
                self.emit(events.AppsChanged("", tuple((n, s.app.url) for n, s in self.supervisors.items())))
            return
        for name, sup in self.supervisors.items():
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
        for launcher in self.launchers.values():
            launcher.close()
        for sup in self.supervisors.values():
            sup.stop()
        sups = self._all_supervisors()
        grace = max((s.app.config.graceful_timeout for s in sups), default=0)
        deadline = time.monotonic() + grace + KILL_MARGIN + 2
        seen = self.stop_requested
        while not all(s.done for s in sups) and time.monotonic() < deadline:
            if self.stop_requested > seen:  # a second Ctrl-C: no more waiting
                for sup in sups:
                    sup.kill_everything()
                seen = self.stop_requested
            with contextlib.suppress(queue.Empty):
                item = self.inbox.get(timeout=TICK)
                if not isinstance(item, events.Command | ConfigChanged | FilesChanged):
                    self._dispatch(item)
                elif isinstance(item, events.Command) and item.done is not None:
                    item.done.set()
            for sup in sups:
                sup.tick()
        self._kill_all()
        self._stop_orphans(wait=1.0)
        for sup in self.supervisors.values():
            self.emit(events.Stopped(sup.name))
        return 0

    def _kill_all(self) -> None:
        for sup in self._all_supervisors():
            sup.kill_everything()


def _address(app: App) -> tuple[str, int]:
    return app.config.host, app.config.port


def run_apps(config: Config, names: Sequence[str] | None, views: Sequence[View], control: bool = True) -> int:
    return Runner(config, names, views, control).run()

