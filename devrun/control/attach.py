"""`devrun attach`: a view in this terminal fed by the event stream of a runner running elsewhere.

Three threads: one reads the stream into the view, the view's own (the dashboard's keys) posts
commands, each sent as a request of its own, and the main thread waits for either to end it.
"""

from __future__ import annotations

import contextlib
import errno
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

from devrun import events
from devrun.control import client
from devrun.control.protocol import ControlError

Post = Callable[[object], None]


class View(Protocol):
    def handle(self, event: events.Event) -> None: ...


def attach(path: Path, make_view: Callable[[dict[str, Any]], View]) -> bool:
    """Show the events of the runner on path in make_view(its opening event) until the runner
    stops (True), or until q or Ctrl-C leaves it running (False).

    ControlError (NotRunning...) when it cannot attach, or when the stream broke off while the
    runner runs on; OSError when our own output failed.
    """
    stream = client.stream(path, "events")
    try:
        first = next(stream)
    except StopIteration:
        raise ControlError("the runner closed the connection at once (is it stopping?)") from None
    attached = _Attached(path, stream, make_view(first))
    opening = events.from_dict(first)
    if opening is not None:
        attached.view.handle(opening)
    threading.Thread(target=attached.read, daemon=True).start()
    running: Callable[[Post], AbstractContextManager[None]] | None = getattr(attached.view, "running", None)
    try:
        if running is None:
            _wait(attached.done)
        else:
            with running(attached.post):
                _wait(attached.done)
    except KeyboardInterrupt:
        pass
    if attached.unwritable:
        raise attached.unwritable[0]
    if attached.lost:
        raise ControlError(attached.lost[0])
    return attached.gone.is_set()


class _Attached:
    """What the reader thread, the view's key thread and the main thread share."""

    def __init__(self, path: Path, stream: Iterator[dict[str, Any]], view: View) -> None:
        self.path = path
        self.stream = stream
        self.view = view
        self.done = threading.Event()
        self.gone = threading.Event()  # the runner ended the stream: it stopped
        self.lost: list[str] = []  # why the stream broke off while the runner runs on (a client too slow)
        self.unwritable: list[OSError] = []  # our own output failed (closed, full disk): main() says so

    def read(self) -> None:
        try:
            for data in self.stream:
                event = events.from_dict(data)
                if event is not None:
                    self.view.handle(event)
        except ControlError as exc:
            self.lost.append(str(exc))
        except OSError as exc:
            self.unwritable.append(exc)
            self.done.set()
            return
        except SystemExit:  # rich's Console turns a closed output into SystemExit: in a thread, a silent end
            self.unwritable.append(BrokenPipeError(errno.EPIPE, "output closed"))
            self.done.set()
            return
        self.gone.set()
        self.done.set()

    def post(self, item: object) -> None:
        """A key pressed in the attached dashboard: q leaves the runner running."""
        if isinstance(item, events.Command) and item.verb == "quit":
            self.done.set()
        elif isinstance(item, events.Command):
            apps = [item.app] if item.app else []
            threading.Thread(target=_quietly, args=(self.path, item.verb, apps), daemon=True).start()


def _wait(done: threading.Event) -> None:
    """Wait in short steps: a Ctrl-C that the kernel hands to the reader thread only sets a flag,
    and an untimed wait on the main thread would never return to see it."""
    while not done.wait(0.2):
        pass


def _quietly(path: Path, verb: str, apps: list[str]) -> None:
    with contextlib.suppress(ControlError):  # the dashboard shows what happened, or that nothing did
        client.request(path, verb, timeout=15, apps=apps)
