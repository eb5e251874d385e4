"""Event types (runner -> views) and the wire format (child -> runner).

The child writes one JSON object per line on its event pipe; the runner turns those into the
dataclasses below and hands them to the views, which only read them.
"""

from __future__ import annotations

import json
import signal
import time
from dataclasses import dataclass, field, fields
from typing import Any

# One write of at most PIPE_BUF bytes to a pipe is atomic: a message either arrives whole or,
# when the pipe is full, not at all (and is counted as dropped).
MAX_WIRE = 4096


def _dump(msg: dict[str, Any]) -> bytes:
    return json.dumps(msg, separators=(",", ":"), ensure_ascii=False, default=str).encode() + b"\n"


def encode_wire(kind: str, **fields: Any) -> bytes:
    """One JSON line of at most MAX_WIRE bytes: long text fields are shortened, never the JSON."""
    msg = {"type": kind, **fields}
    data = _dump(msg)
    while len(data) > MAX_WIRE:
        texts = [k for k, v in msg.items() if k != "type" and isinstance(v, str) and len(v) > 64]
        if not texts:
            return _dump({"type": kind, "truncated": True})
        key = max(texts, key=lambda k: len(msg[k]))
        value = msg[key]
        # Halve the longest text until the line fits (characters may take several bytes).
        keep = len(value) // 2
        # A traceback's end says what went wrong; other text's start says what it is about.
        msg[key] = "..." + value[len(value) - keep:] if key == "traceback" else value[:keep] + "..."
        data = _dump(msg)
    return data


def describe_exit(returncode: int) -> str:
    """'exited with code 3' or 'killed by SIGKILL', from a Popen returncode."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


def decode_wire(line: bytes) -> dict[str, Any] | None:
    """The message of one line from a child, or None for anything else: the child runs the
    user's code, which may write anything to the inherited event fd (`[[[[...` nested past the
    recursion limit, bytes that are not UTF-8)."""
    try:
        msg = json.loads(line)
    except (ValueError, RecursionError, TypeError):
        return None
    return msg if isinstance(msg, dict) and isinstance(msg.get("type"), str) else None


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
    """The supervisor's state of an app: starting, ready, reloading, error, crashed,
    backing off, stopped."""

    state: str
    pid: int | None = None


@dataclass(frozen=True)
class Exited(Event):
    pid: int
    returncode: int
    expected: bool  # False when the app died on its own


@dataclass(frozen=True)
class Request(Event):
    method: str
    path: str
    status: str
    ms: float


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
    Starting, Ready, Reloading, Refreshing, Refreshed, Pages, StateChanged, Exited, Request, Output,
    AppFailed, Notice, Stopped, AppsChanged, ConfigRejected)}


def to_dict(event: Event) -> dict[str, Any]:
    return {"event": type(event).__name__, **{f.name: getattr(event, f.name) for f in fields(event)}}


def from_dict(data: dict[str, Any]) -> Event | None:
    """The event a control-socket client received, or None for anything unknown or malformed."""
    cls = EVENT_TYPES.get(str(data.get("event")))
    if cls is None:
        return None
    names = {f.name for f in fields(cls)}
    try:
        values = {k: tuple(map(_tuple, v)) if isinstance(v, list) else v for k, v in data.items() if k in names}
        return cls(**values)
    except TypeError:
        return None


def _tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value
