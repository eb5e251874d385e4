"""The shared preloader: one fork server for every `reload: fork` app of an interpreter.

Every app's fork server, and every app's first generation, would otherwise be an interpreter of
its own that imports gevent, Werkzeug and (for most apps) the same framework again: some 25 MB
each, and a second of CPU for each when twenty apps start at once. The shared preloader imports
what the apps have in common once; the apps' fork servers and first generations are forks of it
(which then move into their app's folder and environment, see worker/forkserver.py `move_in`),
so those pages are shared by all of them. An app that imports nothing the preloader lacks
(`covers`) has no fork server at all: every generation of it is forked from here.

What it preloads is what every app of its group imported last time (the apps'
`.devrun/preload-<app>.json`). A project seen for the first time has no such lists: then one app
(the pioneer) starts first, and the others wait until a preloader with what the pioneer
imported is ready, BASE_WAIT at most.

Apps share a preloader only if they start Python alike: the same variables that the interpreter
or gevent read at start-up (PYTHON*, GEVENT*, LD_*, MALLOC*). Their `env:` otherwise differs
freely: a fork takes on its app's environment before it imports anything of the app (a library
that reads its settings from the environment when it is imported, with no app ever setting them
differently, is the one case the docs point out).

A preloader that cannot start, dies or hangs costs nothing but speed: the apps' servers and
first generations are then spawned, as without it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

from devrun import wire
from devrun.config import App
from devrun.runner import generation
from devrun.runner.forking import (
    FORK_WAIT,
    AdoptedServer,
    ForkServer,
    ForkServerGone,
    ServerProcess,
    ServerState,
    Stale,
    project_roots,
    start_server,
)
from devrun.runner.generation import Generation, Post

Say = Callable[[str, str], None]  # a notice of the runner's: (text, level)

# What the interpreter, the dynamic loader, the allocator or gevent read when a process starts:
# apps whose values differ cannot share one preloaded interpreter.
STARTUP = ("PYTHON", "GEVENT", "LD_", "MALLOC")
# The longest a first generation waits for the preloader (or the pioneer's better one).
BASE_WAIT = 3.0
# Deaths (or hangs) of a group's preloaders after which its apps do without one.
MAX_DEATHS = 4


def startup_env(app: App) -> tuple[tuple[str, str], ...]:
    """The variables of an app's processes that decide which preloader it can share."""
    env = generation.child_environment(app, {})
    return tuple(sorted((k, v) for k, v in env.items() if k.startswith(STARTUP)))


def cached(path: Path) -> list[str] | None:
    """What an app imported from outside its project last time, if devrun wrote it down."""
    try:
        names = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else None


def place(app: App, env: dict[str, str], server: bool = False) -> wire.Fork:
    """A fork request that moves the fork into app's folder and environment."""
    child = {**generation.child_environment(app, env), "DEVRUN_LIFELINE_FD": str(generation.lifeline_fd())}
    return wire.Fork(server=server, cwd=str(app.root), env=tuple(f"{k}={v}" for k, v in child.items()),
                     roots=tuple(project_roots(app)))


class SharedPreloader:
    """The preloader of one group of apps, on the runner's main thread only."""

    def __init__(self, key: tuple[tuple[str, str], ...], cwd: Path, notice: Say):
        self.key = key
        self.cwd = cwd
        self.notice = notice
        self.members: dict[str, App] = {}
        self.server: ForkServer | None = None
        self.next: ForkServer | None = None  # preloading what the pioneer imported
        self.pioneer: str | None = None
        self.learning = False  # no app has a list yet: the pioneer's is waited for
        self.started_at = 0.0
        self.deaths = 0
        self.lists: dict[str, list[str] | None] = {}

    # -- membership -----------------------------------------------------------------------

    def expect(self, app: App, cache: Path | None) -> None:
        """An app that is to join: what it imported last time counts for the first preload."""
        if app.name not in self.lists:
            self.lists[app.name] = cached(cache) if cache is not None else None

    def join(self, app: App, cache: Path | None) -> None:
        self.members[app.name] = app
        self.expect(app, cache)
        if self.server is None and self.deaths <= MAX_DEATHS:
            self._start()

    def leave(self, name: str) -> None:
        self.members.pop(name, None)
        if not self.members:
            self.close()

    def close(self) -> None:
        for server in (self.server, self.next):
            if server is not None:
                server.close()
                server.wait(2.0)
        self.server = self.next = None

    # -- the preloader processes ----------------------------------------------------------

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(STARTUP)}
        return {**env, **dict(self.key), "PYTHONUNBUFFERED": "1", "DEVRUN_SHARED_PRELOADER": "1"}

    def _roots(self) -> list[str]:
        return [root for app in self.members.values() for root in project_roots(app)]

    def _start(self) -> None:
        lists = [names for names in self.lists.values() if names is not None]
        common = sorted(set.intersection(*map(set, lists))) if lists else []
        self.learning = not lists
        self.pioneer = None
        self.started_at = time.monotonic()
        try:
            self.server = ForkServer("shared", common, self._roots(),
                                     lambda theirs: start_server(self.cwd, self._environment(), theirs))
        except (OSError, ForkServerGone) as exc:
            self.server = None
            self._died(exc)

    def _died(self, why: object) -> None:
        self.deaths += 1
        if self.server is not None:
            self.server.close()
            self.server = None
        if self.deaths > MAX_DEATHS:
            self.notice(f"shared preloader failed ({why}) too often; the apps do without it", "warning")
            return
        self.notice(f"shared preloader failed ({why}); starting it again", "warning")
        self._start()

    def settling(self) -> bool:
        """A better preloader is on its way: usable() is to be asked until it is there."""
        return self.next is not None

    def usable(self) -> ForkServer | None:
        """The preloader, if it is ready to fork (a better one that has become ready replaces it)."""
        nxt = self.next
        if nxt is not None and nxt.poll() is not ServerState.STARTING:
            self.next = None
            if nxt.state is ServerState.READY:
                if self.server is not None:
                    self.server.close()
                self.server = nxt
            else:  # the pioneer's list would not preload: the apps do with what there is
                nxt.close()
            self.learning = False
        server = self.server
        if server is None:
            return None
        state = server.poll()
        if state is ServerState.READY:
            return server
        if state is not ServerState.STARTING:
            taint = server.taint
            if taint is not None:  # what they imported last time is some app's own code now
                self.lists = dict.fromkeys(self.lists)
            self._died(f"preloading {taint[0]} imported {taint[1]}" if taint else "it exited")
        return None

    # -- what the apps' launchers ask -----------------------------------------------------

    def ready_for(self, name: str) -> bool:
        """May this app's first generation start now? Not while the preloader it would fork
        from is still preloading, nor (on a project's first run) before the pioneer's list is
        preloaded; BASE_WAIT at most, and at once when there is no preloader to wait for."""
        if time.monotonic() - self.started_at > BASE_WAIT:
            return True
        server = self.usable()
        if server is None:
            return self.server is None  # gone (the apps spawn) or still starting (they wait)
        if not self.learning:
            return True
        if self.pioneer is None:
            self.pioneer = name
        return name == self.pioneer

    def learned(self, name: str, names: list[str]) -> None:
        """An app's generation said what it imported from outside its project: on a first run,
        the pioneer's list is what the others wait for."""
        server = self.usable()
        if not self.learning or name != self.pioneer or self.next is not None or server is None:
            return
        self.lists[name] = names
        try:
            self.next = self._forked("shared", server, wire.Fork(server=True), names, self._roots())
        except (OSError, ForkServerGone, Stale):
            self.learning = False  # the others go on with what the preloader has

    def covers(self, names: list[str]) -> bool:
        """Has the preloader (ready, and no better one on its way) all of names loaded? An app
        that imports nothing else needs no fork server of its own: it forks from this one."""
        if self.settling():
            return False
        server = self.usable()
        return server is not None and set(names) <= server.loaded

    def fork_server(self, app: App, env: dict[str, str], preload: list[str]) -> ForkServer | None:
        """The app's own fork server, forked from the preloader (None: it must be spawned)."""
        server = self.usable()
        if server is None:
            return None
        try:
            return self._forked(app.name, server, place(app, env, server=True), preload, project_roots(app))
        except (OSError, ForkServerGone, Stale) as exc:
            self._lost(server, exc)
            return None

    def fork_generation(self, app: App, env: dict[str, str], listener: socket.socket,
                        post: Post) -> Generation | None:
        """A spare for the app, forked from the preloader and moved into the app's place (None:
        spawn it). Its first generation, and every one of an app without a server of its own."""
        server = self.usable()
        if server is None:
            return None
        try:
            server.ask(listener, place(app, env))
            spare = server.answer(app.name, post, FORK_WAIT)
        except OSError:  # out of fds for its pipes
            return None
        except (ForkServerGone, Stale) as exc:
            self._lost(server, exc)
            return None
        if spare is None:
            self._lost(server, f"no answer to a fork in {FORK_WAIT * 1000:.0f} ms")
        return spare

    def _forked(self, name: str, server: ForkServer, fork: wire.Fork, preload: list[str],
                roots: list[str]) -> ForkServer:
        def start(theirs: socket.socket) -> ServerProcess:
            return AdoptedServer(server.fork_server(fork, theirs))

        return ForkServer(name, preload, roots, start)

    def _lost(self, server: ForkServer, why: object) -> None:
        """The preloader failed a fork: replaced (a stale one quietly: a `pip install`)."""
        if server is not self.server:
            server.close()
            return
        if isinstance(why, Stale):
            server.close()
            self.server = None
            self._start()
            return
        self._died(why)


class Preloaders:
    """The shared preloaders of one runner, one per start-up environment."""

    def __init__(self, cwd: Path, notice: Say):
        self.cwd = cwd
        self.notice = notice
        self.groups: dict[tuple[tuple[str, str], ...], SharedPreloader] = {}

    def _group(self, app: App) -> SharedPreloader:
        key = startup_env(app)
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = SharedPreloader(key, self.cwd, self.notice)
        return group

    def expect(self, app: App, cache: Path | None) -> None:
        """Before the apps start: the first preload is what they all imported last time."""
        self._group(app).expect(app, cache)

    def join(self, app: App, cache: Path | None) -> SharedPreloader:
        group = self._group(app)
        group.join(app, cache)
        return group

    def close(self) -> None:
        for group in self.groups.values():
            with contextlib.suppress(Exception):
                group.close()
        self.groups.clear()
