"""How an app's generations are started: one Launcher per supervisor.

`SpawnLauncher` starts each generation as a fresh interpreter (`reload: spawn`); the
ForkLauncher (forking.py) forks them from a fork server that has the app's third-party modules
preloaded, and keeps a spare. The supervisor is the launcher's one master: it asks for
generations, passes on what they report for the launcher (imports, stale preloads, a spare's
exit), and gives it its idle moments.
"""

from __future__ import annotations

import socket
from typing import Protocol

from devrun.config import App
from devrun.runner import generation
from devrun.runner.generation import Generation, Post


class Launcher(Protocol):
    def spawn(self, app: App, number: int, listener: socket.socket, env: dict[str, str], post: Post,
              pin_failures: int = 0) -> Generation: ...

    def ready(self) -> bool:
        """May a generation start now? False while the first one had better wait (for the
        shared preloader it would be forked from); the supervisor asks again on its ticks."""

    def learn(self, names: list[str], last: bool) -> None:
        """A generation reports what it imported from outside the project."""

    def stale(self, path: str, project: bool = False) -> None:
        """A spare found a preloaded file changed (project: a module of the app's own, loaded
        by the shared preloader it was forked from): what it was forked from is out of date."""

    def exited(self, gen: Generation) -> bool:
        """A generation the supervisor does not own exited: True if it was the launcher's."""

    def idle_tick(self) -> None:
        """The app serves and nothing is on its way: time for work off the reload path."""

    def idle_work(self) -> bool:
        """True while idle_tick has something to do: the loop then wakes for it."""

    def close(self) -> None:
        """The app is gone: stop whatever the launcher keeps running."""


class SpawnLauncher:
    """Every generation a fresh `python -m devrun.worker`."""

    def spawn(self, app: App, number: int, listener: socket.socket, env: dict[str, str], post: Post,
              pin_failures: int = 0) -> Generation:
        return generation.spawn(app, number, listener, env, post, pin_failures=pin_failures)

    def ready(self) -> bool:
        return True

    def learn(self, names: list[str], last: bool) -> None:
        pass

    def stale(self, path: str, project: bool = False) -> None:
        pass

    def exited(self, gen: Generation) -> bool:
        return False

    def idle_tick(self) -> None:
        pass

    def idle_work(self) -> bool:
        return False

    def close(self) -> None:
        pass
