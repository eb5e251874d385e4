"""The apps one runner serves: what the set should become, and the set itself.

`reconcile` compares the running config with a saved devrun.yaml (or env file) without acting:
what to stop, what to restart and why, what to start. `warnings` lists what an app's config
exposes (the debugger off loopback, no PIN), said as it starts. `Apps` holds each app's
listener, supervisor and watch, and applies a plan.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from devrun import events
from devrun.config import App, Config, ConfigError, is_loopback, load_config
from devrun.control import daemon
from devrun.runner import sockets
from devrun.runner.fallback import Fallback
from devrun.runner.forking import ForkLauncher
from devrun.runner.inbox import ChildItem
from devrun.runner.launcher import Launcher, SpawnLauncher
from devrun.runner.orphans import Orphans
from devrun.runner.preloader import Preloaders
from devrun.runner.supervisor import AppSupervisor
from devrun.watch.debounce import Debouncer
from devrun.watch.patterns import Matcher
from devrun.watch.watcher import Watcher

# The debouncer's keys for the config file and env files: never an app's name (names are
# identifiers), so one Debouncer serves both.
CONFIG_KEY = "\0devrun.yaml"
CONFIG_DELAY = 0.2  # an editor may write the file in several steps
ENV_KEY = "\0env:"  # + path

MakeLauncher = Callable[[App, socket.socket, dict[str, str]], Launcher]


@dataclass(frozen=True)
class Plan:
    removed: tuple[str, ...]  # stop for good
    # In config order: (app, why) to stop and start again with the new config, (app, None) to start.
    starting: tuple[tuple[App, str | None], ...]


def reconcile(old: Config, new: Config, running: Collection[str], wanted: Collection[str] | None) -> Plan:
    """wanted: the names the runner serves (None: every app of new). An app that is configured
    but not running, and was configured before too (stopped at start-up: its port was taken),
    is left alone."""
    apps = {name: app for name, app in new.apps.items() if wanted is None or name in wanted}
    removed = tuple(name for name in running if name not in apps)
    starting: list[tuple[App, str | None]] = []
    for name, app in apps.items():
        before = old.apps.get(name)
        if name in running and before != app:
            # Only the env file's values differ: say which file, the reason the user will recognise.
            env_only = (before is not None and before.config == app.config and before.file_env != app.file_env)
            why = (f"{app.env_path.name if app.env_path else 'env file'} changed" if env_only
                   else f"changed in {new.file.name}")
            starting.append((app, why))
        elif name not in running and before is None:
            starting.append((app, None))
    return Plan(removed, tuple(starting))


def address(app: App) -> tuple[str, int]:
    return app.config.host, app.config.port


def warnings(app: App) -> list[tuple[str, str]]:
    """(text, level) of every risk the app's config takes, said when it starts."""
    cfg = app.config
    out = []
    if cfg.debug.enabled and cfg.debug.allow_remote and not is_loopback(cfg.host):
        out.append((f"WARNING: the debugger on {cfg.host}:{cfg.port} lets anyone who can reach it run code on "
                    "this machine (debug.allow_remote is on)", "warning"))
    if cfg.live and not is_loopback(cfg.host):
        out.append((f"WARNING: live reload on {cfg.host}:{cfg.port} is reachable from other machines "
                    "(allow_remote is on)", "warning"))
    if cfg.debug.enabled and not cfg.debug.pin:
        out.append(("debugger PIN is off: any local user can run code through the console", "warning"))
    return out


class Apps:
    """The apps one runner serves, composed: a listener, a supervisor (with its launcher and
    fallback) and a watch each, and the config file's and env files' watches. Started, stopped
    and reconciled with config edits (as reconcile plans) here, on the main thread only."""

    def __init__(self, config: Config, selected: list[str] | None, pin: str, emit: Callable[[events.Event], None],
                 post_child: Callable[[AppSupervisor, ChildItem], None], debouncer: Debouncer, orphans: Orphans,
                 make_launcher: MakeLauncher | None = None):
        self.config = config
        # The apps asked for on the command line; None: every app, also those an edit adds.
        self.selected = selected
        self.pin = pin
        self.pin_shown = False
        self.emit = emit
        self.post_child = post_child
        self.debouncer = debouncer
        self.orphans = orphans
        # How each app's generations start: spawned or forked, as its config says (tests give fakes).
        self.make_launcher: MakeLauncher = make_launcher or self._launcher
        self.supervisors: dict[str, AppSupervisor] = {}
        self.listeners: dict[str, socket.socket] = {}
        self.leaving: list[AppSupervisor] = []  # removed by a config edit, still stopping
        self.watcher: Watcher | None = None  # set once the runner has one
        self.env_watches: set[str] = set()  # debouncer keys of the env files watched
        self.on_configured: Callable[[list[str]], None] = lambda names: None
        # One shared preloader per start-up environment, for the apps that fork (preloader.py).
        self.preloaders = Preloaders(config.file.parent, self.notice)

    @property
    def wanted(self) -> list[App]:
        """The apps of the current config that this runner serves."""
        return [app for name, app in self.config.apps.items() if self.selected is None or name in self.selected]

    def all(self) -> list[AppSupervisor]:
        """Every supervisor, the leaving ones too (their generations still report their exit)."""
        return [*self.supervisors.values(), *self.leaving]

    def prune(self) -> None:
        self.leaving = [sup for sup in self.leaving if not sup.done]

    def owns(self, key: str) -> bool:
        """A debouncer key that is still ours: an app served, the config file, an env file."""
        return key in self.supervisors or key == CONFIG_KEY or key in self.env_watches

    def notice(self, text: str, level: str = "info", app: str = "") -> None:
        self.emit(events.Notice(app, text, level))

    def watch_env_files(self) -> None:
        """Watch every env file the config names (a missing optional one too: its creation counts)."""
        if self.watcher is None:
            return
        wanted = {ENV_KEY + str(app.env_path) for app in self.config.apps.values() if app.env_path is not None}
        for key in self.env_watches - wanted:
            self.watcher.unwatch_file(key)
            self.debouncer.forget(key)
        for key in wanted - self.env_watches:
            self.watch_file(key, key[len(ENV_KEY):])
        self.env_watches = wanted

    def watch_file(self, key: str, path: str) -> None:
        assert self.watcher is not None
        self.debouncer.set_delay(key, CONFIG_DELAY)
        self.watcher.watch_file(key, path)

    def add_all(self) -> None:
        """Start every wanted app; the shared preloader first learns what they all import."""
        for app in self.wanted:
            if app.config.reload == "fork":
                self.preloaders.expect(app, self._cache(app))
        for app in self.wanted:
            self.add(app)

    def _cache(self, app: App) -> Path:
        return daemon.state_dir(self.config.file) / f"preload-{app.name}.json"

    def add(self, app: App, listener: socket.socket | None = None) -> None:
        cfg = app.config
        if cfg.debug.enabled and cfg.debug.pin and not self.pin_shown:
            self.pin_shown = True
            self.notice(f"PIN: {self.pin}")
        for text, level in warnings(app):
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
        self.watcher.add(app.name, Matcher(app.root, cfg.watch, cfg.ignore, cfg.respect_gitignore), live,
                         watch_mode=cfg.watch_mode)

    def _remove(self, name: str) -> socket.socket:
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
        if not self.orphans.adopt():
            self.notice("reload: fork needs Linux (a subreaper runner); using spawn", "warning", app.name)
            return SpawnLauncher()
        cache = self._cache(app)
        return ForkLauncher(app, listener, env, lambda text, level: self.notice(text, level, app.name), cache,
                            others_starting=self._starting, shared=self.preloaders.join(app, cache))

    def _starting(self) -> bool:
        """Is an app still starting its first generation?"""
        return any(sup.state is events.AppStatus.STARTING for sup in self.supervisors.values())

    def apply_config(self) -> None:
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
        self.watch_env_files()
        plan = reconcile(old, new, list(self.supervisors), self.selected)
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
            self.add(app, released.pop(address(app), None))
        for listener in released.values():
            listener.close()  # the port closes once its retiring generations are gone
        self.on_configured(list(new.apps))
        self.announce()

    def _release(self, name: str, released: dict[tuple[str, int], socket.socket]) -> None:
        """Stop an app for good; keep its listener, by address, for the app that gets it next."""
        where = address(self.supervisors[name].app)  # before it is removed
        released[where] = self._remove(name)

    def announce(self) -> None:
        self.emit(events.AppsChanged("", tuple((n, s.app.url) for n, s in self.supervisors.items())))
