"""Events (runner -> views and control-socket clients) and the app status they carry.

The supervisors turn what the children report (devrun.wire) into the dataclasses below; the
views only read them, and the control socket sends them as JSON (to_dict / from_dict).
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any


def describe_exit(returncode: int) -> str:
    """'exited with code 3' or 'killed by SIGKILL', from a Popen returncode."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


class AppStatus(str, Enum):
    """An app's state as its supervisor sees it; a str, so JSON and old clients see the text."""

    STARTING = "starting"
    READY = "ready"
    RELOADING = "reloading"
    ERROR = "error"
    CRASHED = "crashed"
    BACKOFF = "backing off"
    STOPPED = "stopped"


@dataclass(frozen=True)
class Event:
    app: str
    at: float = field(default_factory=time.time, kw_only=True)


@dataclass(frozen=True)
class Starting(Event):
    generation: int
    pid: int


@dataclass(frozen=True)
class Ready(Event):
    pid: int
    url: str
    ms: float


@dataclass(frozen=True)
class Reloading(Event):
    paths: tuple[str, ...]  # the changed files, relative to the app's cwd; () for a manual restart


@dataclass(frozen=True)
class Refreshing(Event):
    """Files only live reload watches (templates, static files) changed: the app applies them in
    place and the open pages are told; the app keeps running."""

    paths: tuple[str, ...]
    css: bool  # stylesheets only: swapped in place, no navigation
    pages: bool = True  # live reload is on: open pages are told; off, only the app applies the edit


@dataclass(frozen=True)
class Refreshed(Event):
    """The app's open pages were told to reload (`reload`) or to swap their stylesheets (`css`)."""

    pages: int
    how: str


@dataclass(frozen=True)
class Pages(Event):
    """How many browser pages of the app are connected for live reload."""

    count: int


@dataclass(frozen=True)
class StateChanged(Event):
    """The supervisor's state of an app changed."""

    state: AppStatus
    pid: int | None = None


@dataclass(frozen=True)
class Exited(Event):
    pid: int
    returncode: int
    expected: bool  # False when the app died on its own


@dataclass(frozen=True)
class Request(Event):
    """One request an app answered; `at` is when it finished, by the app's clock."""

    method: str
    path: str
    status: str
    ms: float


@dataclass(frozen=True)
class Requests(Event):
    """The requests an app answered in a moment, in order: they come in batches (see
    devrun.worker.reporting), and each view takes a batch at once."""

    requests: tuple[Request, ...]


@dataclass(frozen=True)
class Output(Event):
    line: str


@dataclass(frozen=True)
class AppFailed(Event):
    """The app's code failed to load; the port answers with an error page meanwhile."""

    pid: int
    summary: str
    traceback: str


@dataclass(frozen=True)
class Notice(Event):
    """A message of the runner's own about one app (or '' for the runner)."""

    text: str
    level: str = "info"  # info | warning | error


@dataclass(frozen=True)
class Stopped(Event):
    pass


@dataclass(frozen=True)
class AppsChanged(Event):
    """The set of apps changed (devrun.yaml was edited): (name, url) of each, in order."""

    apps: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class ConfigRejected(Event):
    """An edit of devrun.yaml could not be applied; the previous config keeps running."""

    problems: tuple[str, ...]  # "file:line:col: key: message" each


@dataclass(frozen=True)
class Command:
    """What a user asks the runner for: dashboard keys, control-socket verbs."""

    verb: str  # "restart" | "stop" | "start" | "quit"
    app: str | None = None  # None: every app
    done: Any = field(default=None, compare=False)  # a threading.Event set once acted on


# By explicit name, for the control socket: a name from the wire never picks anything else.
EVENT_TYPES: dict[str, type[Event]] = {cls.__name__: cls for cls in (
    Starting, Ready, Reloading, Refreshing, Refreshed, Pages, StateChanged, Exited, Request, Requests, Output,
    AppFailed, Notice, Stopped, AppsChanged, ConfigRejected)}


def to_dict(event: Event) -> dict[str, Any]:
    if isinstance(event, Requests):  # compact: a busy app's batches are most of what is sent
        served = [[r.method, r.path, r.status, r.ms, r.at] for r in event.requests]
        return {"event": "Requests", "app": event.app, "at": event.at, "requests": served}
    return {"event": type(event).__name__, **{f.name: getattr(event, f.name) for f in fields(event)}}


def from_dict(data: dict[str, Any]) -> Event | None:
    """The event a control-socket client received, or None for anything unknown or malformed."""
    cls = EVENT_TYPES.get(str(data.get("event")))
    if cls is None:
        return None
    names = {f.name for f in fields(cls)}
    try:
        values: dict[str, Any] = {k: tuple(map(_tuple, v)) if isinstance(v, list) else v
                                  for k, v in data.items() if k in names}
        if cls is StateChanged:
            values["state"] = AppStatus(values.get("state"))
        if cls is Requests:
            values["requests"] = tuple(_request(values["app"], item) for item in data["requests"])
        return cls(**values)
    except (KeyError, TypeError, ValueError):
        return None


def _request(app: str, item: Any) -> Request:
    method, path, status, ms, at = item  # a malformed item raises TypeError or ValueError
    if not (isinstance(method, str) and isinstance(path, str) and isinstance(status, str)):
        raise TypeError("a request's method, path and status are text")
    return Request(app, method, path, status, float(ms), at=float(at))


def _tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value
