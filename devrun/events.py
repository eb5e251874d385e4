"""Event types (runner -> views) and the wire format (child -> runner).

The child writes one JSON object per line on its event pipe; the runner turns those into the
dataclasses below and hands them to the views, which only read them.
"""

from __future__ import annotations

import json
import signal
import time
from dataclasses import dataclass, field
from typing import Any

# One write of at most PIPE_BUF bytes to a pipe is atomic: a message either arrives whole or,
# when the pipe is full, not at all (and is counted as dropped).
MAX_WIRE = 4096


def encode_wire(kind: str, **fields: Any) -> bytes:
    data = json.dumps({"type": kind, **fields}, separators=(",", ":"), default=str).encode() + b"\n"
    if len(data) > MAX_WIRE:
        for key in ("traceback", "path"):
            if isinstance(fields.get(key), str):
                fields[key] = fields[key][-(MAX_WIRE // 2):]
        data = json.dumps({"type": kind, **fields}, separators=(",", ":"), default=str).encode()[: MAX_WIRE - 1] + b"\n"
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
    try:
        msg = json.loads(line)
    except ValueError:
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
    paths: tuple[str, ...]


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
