"""The runner's one loop: every item of the inbox, handled on the main thread, in order.

It binds the sockets, starts a supervisor per app, debounces the watcher's changes into
reloads, routes each child's items to the supervisor that started it, applies config edits
(planned in apps.py) and commands, and hands every event to the views. Between items it sleeps
until the earliest deadline of the debouncer and the supervisors, never on a fixed tick.

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
from collections.abc import Callable, Sequence
from typing import Protocol

from devrun import events, wire
from devrun.config import App, Config, ConfigError, load_config
from devrun.control import daemon, protocol
from devrun.control.remote import RemoteView
from devrun.control.server import ControlServer
from devrun.runner import apps as plans
from devrun.runner import generation, sockets
from devrun.runner.fallback import Fallback
from devrun.runner.forking import ForkLauncher
from devrun.runner.generation import ChildMessage, ChildOutput
from devrun.runner.inbox import ChildItem, FilesTouched, FromChild, InboxItem, StopAsked
from devrun.runner.launcher import Launcher, SpawnLauncher
from devrun.runner.supervisor import KILL_MARGIN, AppSupervisor
from devrun.views.logview import AppLogs, LogView
from devrun.watch.debounce import Batch, Debouncer
from devrun.watch.patterns import Matcher
from devrun.watch.watcher import Watcher

# The debouncer's keys for the config file and env files: never an app's name (names are
# identifiers), so one Debouncer serves both.
CONFIG_KEY = "\0devrun.yaml"
CONFIG_DELAY = 0.2  # an editor may write the file in several steps
ENV_KEY = "\0env:"  # + path
# The longest the loop sleeps with nothing due (a bound, not a tick: deadlines wake it on time).
IDLE = 1.0
LOG_BYTES_ENV = "DEVRUN_LOG_MAX_BYTES"  # each app's log file size before it rotates (3 kept)
# Items waiting for the main thread beyond which child output and request lines are dropped.
MAX_BACKLOG = 20_000
# How often a subreaper runner looks for processes that escaped an app's process group.
ORPHAN_SCAN = 2.0
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
                 launcher: Callable[[App, socket.socket, dict[str, str]], Launcher] | None = None):
        self.config = config
        # How each app's generations start: spawned or forked, as its config says (tests give fakes).
        self.make_launcher = launcher or self._launcher
        # The apps asked for on the command line; None: every app, also those an edit adds.
        self.selected: list[str] | None = list(names) if names is not None else None
        self.views = list(views)
        self.serve_control = serve_control  # the control socket, app logs and the one-runner lock
        self.inbox: queue.Queue[InboxItem] = queue.Queue()
        self.supervisors: dict[str, AppSupervisor] = {}
        self.listeners: dict[str, socket.socket] = {}
        self.debouncer = Debouncer()
        self.leaving: list[AppSupervisor] = []  # removed by a config edit, still stopping
        self.stop_requested = 0
        self.pin = new_pin()
        self.pin_shown = False
        self.dropped: dict[str, int] = {}
        self.dropped_lock = threading.Lock()  # counted from every generation's reader threads
        self.subreaper = False
        self.escaped: set[int] = set()  # adopted processes already reported
        self.orphan_scan_at = 0.0
        self.ticked_at = time.monotonic()  # deadlines are points in time: see AppSupervisor.poll_at
        self.view_errors = 0
        self.watcher: Watcher | None = None
        self.env_watches: set[str] = set()  # watcher keys of the env files watched
        self.remote: RemoteView | None = None

    @property
    def apps(self) -> list[App]:
        """The apps of the current config that this runner serves."""
        return [app for name, app in self.config.apps.items() if self.selected is None or name in self.selected]

    def post_child(self, owner: AppSupervisor, item: ChildItem) -> None:
        """From a generation's reader threads. Output and request lines are dropped (and
        counted) rather than queued without bound when the main thread falls behind; the
        readers keep draining the pipes either way, so a child never blocks on its output."""
        if self.inbox.qsize() >= MAX_BACKLOG and (
            isinstance(item, ChildOutput)
            or (isinstance(item, ChildMessage) and isinstance(item.message, wire.Request))
        ):
            with self.dropped_lock:
                self.dropped[item.generation.app] = self.dropped.get(item.generation.app, 0) + 1
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
                    self._serve_control(stack)
                for view in self.views:
                    running = getattr(view, "running", None)
                    if running is not None:  # an interactive view: draws and reads keys meanwhile
                        stack.enter_context(running(self.inbox.put))
                # Always (on Linux): what escapes an app's process group is then adopted by us,
                # reported, and stopped with the runner instead of living on.
                self.subreaper = generation.become_subreaper()
                for app in self.apps:
                    self._add_app(app)
                if not self.supervisors:
                    self.notice("no app could start", "error")
                    return 1
                if self.serve_control:
                    self._watch_file(CONFIG_KEY, str(self.config.file))
                    self._watch_env_files()
                watcher.start()
                while not self.stop_requested:
                    self._step()
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
        path = protocol.socket_path(state)
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

    def _watch_env_files(self) -> None:
        """Watch every env file the config names (a missing optional one too: its creation counts)."""
        if self.watcher is None:
            return
        wanted = {ENV_KEY + str(app.env_path) for app in self.config.apps.values() if app.env_path is not None}
        for key in self.env_watches - wanted:
            self.watcher.unwatch_file(key)
            self.debouncer.forget(key)
        for key in wanted - self.env_watches:
            self._watch_file(key, key[len(ENV_KEY):])
        self.env_watches = wanted

    def _watch_file(self, key: str, path: str) -> None:
        assert self.watcher is not None
        self.debouncer.set_delay(key, CONFIG_DELAY)
        self.watcher.watch_file(key, path)

    # -- apps --------------------------------------------------------------------------------

    def _add_app(self, app: App, listener: socket.socket | None = None) -> None:
        cfg = app.config
        if cfg.debug.enabled and cfg.debug.pin and not self.pin_shown:
            self.pin_shown = True
            self.notice(f"PIN: {self.pin}")
        for text, level in plans.warnings(app):
            self.notice(text, level, app.name)
        if listener is None:
            listener = self._bind(app)
            if listener is None:
                return
        self.listeners[app.name] = listener
        env = {"WERKZEUG_DEBUG_PIN": self.pin if cfg.debug.pin else "off"}
        sup: AppSupervisor

        def post(item: ChildItem) -> None:  # every item of this app's processes is tagged with its supervisor
            self.post_child(sup, item)

        sup = AppSupervisor(app, listener, env, self.emit, post, self.make_launcher(app, listener, env),
                            fallback=Fallback(app.name, listener), rewatch=lambda: self._watch(app, again=True))
        self.supervisors[app.name] = sup
        self._watch(app)
        sup.start()

    def _bind(self, app: App) -> socket.socket | None:
        cfg = app.config
        try:
            return sockets.bind(cfg.host, cfg.port)
        except sockets.PortInUse as exc:
            self.notice(f"cannot listen: {exc}; choose another port in devrun.yaml", "error", app.name)
        except OSError as exc:
            self.notice(f"cannot listen on {cfg.host}:{cfg.port}: {exc.strerror}", "error", app.name)
        return None

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
        self.debouncer.set_delay(app.name, cfg.reload_delay)
        self.watcher.add(app.name, Matcher(app.root, cfg.watch, cfg.ignore, cfg.respect_gitignore), live)

    def _remove_app(self, name: str) -> socket.socket:
        """Stop an app for good (a config edit removed or changed it); returns its listener,
        for an app that now has its address (the same app, or another one: ports swapped)."""
        if self.watcher is not None:
            self.watcher.remove(name)
        self.debouncer.forget(name)
        sup = self.supervisors.pop(name)
        sup.stop()  # and its launcher
        self.leaving.append(sup)
        return self.listeners.pop(name)

    def _launcher(self, app: App, listener: socket.socket, env: dict[str, str]) -> Launcher:
        if app.config.reload != "fork":
            return SpawnLauncher()
        if not self.subreaper:
            self.subreaper = generation.become_subreaper()
        if not self.subreaper:
            self.notice("reload: fork needs Linux (a subreaper runner); using spawn", "warning", app.name)
            return SpawnLauncher()

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
        plan = plans.reconcile(old, new, list(self.supervisors), self.selected)
        # Every listener given up here is kept until the apps are added again: an address that
        # moves to another app (two ports swapped) is handed over instead of bound anew, which
        # would fail while the old app's retiring generations still hold the socket.
        released: dict[tuple[str, int], socket.socket] = {}
        for name in plan.removed:
            self.notice(f"removed from {new.file.name}: stopping", "info", name)
            self._release(name, released)
        for app, why in plan.starting:
            if why is None:
                self.notice(f"added to {new.file.name}: starting", "info", app.name)
                continue
            # A new environment replaces the fork server too: its preloaded modules may have
            # read the old one at import time.
            self.notice(f"{why}: restarting", "info", app.name)
            self._release(app.name, released)
        for app, _ in plan.starting:
            self._add_app(app, released.pop(plans.address(app), None))
        for listener in released.values():
            listener.close()  # the port closes once its retiring generations are gone
        if self.remote is not None:
            self.remote.info.update(configured=list(new.apps))
        self._apps_changed()

    def _release(self, name: str, released: dict[tuple[str, int], socket.socket]) -> None:
        """Stop an app for good; keep its listener, by address, for the app that gets it next."""
        address = plans.address(self.supervisors[name].app)  # before it is removed
        released[address] = self._remove_app(name)

    def _apps_changed(self) -> None:
        self.emit(events.AppsChanged("", tuple((n, s.app.url) for n, s in self.supervisors.items())))

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
        for sup in self._all_supervisors():
            sup.tick()
        self.leaving = [sup for sup in self.leaving if not sup.done]
        self._report_dropped()
        if self.subreaper:
            generation.reap_orphans()
            if now >= self.orphan_scan_at:
                self.orphan_scan_at = now + ORPHAN_SCAN
                self._report_escaped()

    def _next_deadline(self) -> float:
        times = [self.ticked_at + IDLE, *(s.next_deadline() for s in self._all_supervisors())]
        if (debounced := self.debouncer.next_deadline()) is not None:
            times.append(debounced)
        if self.subreaper:
            times.append(self.orphan_scan_at)
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
                    if key in self.supervisors or key == CONFIG_KEY or key in self.env_watches:
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
            self._apply_config()
        elif (sup := self.supervisors.get(key)) is not None:
            if batch.code:  # a restart refreshes the pages as well
                sup.reload(batch.paths)
            else:
                sup.refresh(batch.live)

    def _report_escaped(self) -> None:
        """Processes that left an app's process group (setsid, a daemonising double fork) and
        outlived their parent are ours now: say so once each; they are stopped with the runner."""
        groups = {g.pid for sup in self._all_supervisors() for g in sup.generations()}
        for pid, group in generation.adopted_orphans():
            # Still in a generation's group: killed with that group (see AppSupervisor.groups).
            if pid not in self.escaped and group not in groups:
                self.escaped.add(pid)
                self.notice(f"process {pid} ({generation.process_name(pid)}) escaped its app's process group; "
                            "devrun stops it when it stops", "warning")

    def _stop_orphans(self, wait: float) -> None:
        """SIGTERM what we adopted, SIGKILL what is still there after `wait` seconds."""
        if not self.subreaper:
            return
        pids = [pid for pid, _ in generation.adopted_orphans()]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + wait
        while pids and time.monotonic() < deadline:
            generation.reap_orphans()
            pids = [pid for pid, _ in generation.adopted_orphans()]
            if pids:
                time.sleep(0.02)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        generation.reap_orphans()

    def _all_supervisors(self) -> list[AppSupervisor]:
        return [*self.supervisors.values(), *self.leaving]

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
                self._apps_changed()
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
        for sup in self.supervisors.values():
            sup.stop()  # and its launcher
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
        self._stop_orphans(wait=1.0)
        for sup in self.supervisors.values():
            self.emit(events.Stopped(sup.name))
        return 0

    def _kill_all(self) -> None:
        for sup in self._all_supervisors():
            sup.kill_everything()


def run_apps(config: Config, names: Sequence[str] | None, views: Sequence[View]) -> int:
    """`devrun up`: the runner with its control socket, app logs and one-runner lock."""
    return Runner(config, names, views, serve_control=True).run()

