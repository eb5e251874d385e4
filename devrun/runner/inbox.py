"""What reaches the runner's main thread: one queue, and this union of what may be in it.

Other threads only post (the watcher, every generation's reader threads, the control socket,
the dashboard's keys, a signal); the main thread alone takes items out and acts on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, TypeAlias

from devrun import events
from devrun.runner.generation import ChildExited, ChildMessage, ChildOutput

ChildItem: TypeAlias = ChildMessage | ChildOutput | ChildExited


class ChildOwner(Protocol):
    """Who a generation's items go to: the supervisor that started it."""

    def handle(self, item: ChildItem) -> None: ...


@dataclass(frozen=True)
class FromChild:
    """An item from one of owner's generations (or its fork server's spares)."""

    owner: ChildOwner
    item: ChildItem


@dataclass(frozen=True)
class FilesTouched:
    """The watcher has changed paths waiting: drain them (one item per burst)."""


@dataclass(frozen=True)
class StopAsked:
    """SIGINT, SIGTERM or SIGHUP arrived."""


InboxItem: TypeAlias = FromChild | FilesTouched | StopAsked | events.Command | events.Event
