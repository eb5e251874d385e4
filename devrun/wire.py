"""Everything that crosses between the runner and its children, as typed values.

A spawned generation gets its `WorkerSpec` in the environment; a forked one gets it later, as a
`Become` on its control pipe. A child reports on its event pipe (`Loaded`, `Ready`, ...), the
runner tells a serving generation what changed (`Refresh`), and a fork server speaks the
`Hello` / `ServerReady` / `Fork` / `Forked` exchange on its socket. Every message is one JSON
line `{"type": kind, ...fields}`, written by `encode` and read back by `decode`, on both sides.

Stdlib only, and no other devrun module: the child imports this after monkey-patching and the
runner without it, and the user's code (which shares the child) may write anything to the
inherited fds, so `decode` trusts nothing it reads.
"""

from __future__ import annotations

import json
import typing
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any, ClassVar, TypeAlias

# The paths devrun's own traffic uses on an app's port (live reload's stream and script).
PREFIX = "/__devrun__/"
EVENTS_PATH = PREFIX + "events"
SPEC_ENV = "DEVRUN_WORKER"  # a spawned generation's spec, as JSON

# One write of at most PIPE_BUF bytes to a pipe is atomic: a message either arrives whole or,
# when the pipe is full, not at all (and is counted as dropped).
MAX_WIRE = 4096


def sse(kind: str, data: dict[str, object]) -> bytes:
    """One server-sent event of live reload's stream (the runner's own 503 page sends them too)."""
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


# -- the spec ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DebugSpec:
    enabled: bool = False
    evalex: bool = True
    pin: bool = True
    allow_remote: bool = False


@dataclass(frozen=True)
class WorkerSpec:
    """What a generation needs to load and serve its app. The fd numbers are the child's own."""

    name: str
    number: int
    host: str  # the names devrun's own pages and the debugger accept as Host
    app: str  # the import string
    cwd: str
    listen_fd: int
    runner_pid: int
    lifeline_fd: int | None
    graceful_timeout: float
    debug: DebugSpec
    watch_roots: tuple[str, ...]  # the project: never preloaded
    live: bool
    pin_failures: int = 0
    event_fd: int | None = None
    control_fd: int | None = None
    report_modules: bool = False
    # What a spare read from its control pipe past its Become line: the next messages, unread.
    control_pending: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes) -> WorkerSpec:
        spec = _build(cls, json.loads(text))
        if spec is None:
            raise ValueError("not a worker spec")
        return spec


# -- messages ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    kind: ClassVar[str] = ""


# Child -> runner, on the event pipe.


@dataclass(frozen=True)
class Loaded(Message):
    """The app is imported (or failed to be) and the server is set up; it waits for SIGUSR1."""

    kind: ClassVar[str] = "loaded"


@dataclass(frozen=True)
class Ready(Message):
    kind: ClassVar[str] = "ready"
    framework: str = ""  # what devrun does for it, as one line ("Django 5.2 (static files: on)")
    templates: bool = False  # the framework applies a template edit without a restart


@dataclass(frozen=True)
class Failed(Message):
    """Accepting, but the app's code failed to load: the port answers with the error page."""

    kind: ClassVar[str] = "failed"
    summary: str = ""
    traceback: str = ""


@dataclass(frozen=True)
class Closed(Message):
    """Stopped accepting: the next generation may start."""

    kind: ClassVar[str] = "closed"


class Served(typing.NamedTuple):
    """One request a generation answered (an item of `Requests`). A tuple, so it travels as a
    JSON list: a busy app sends thousands a second."""

    method: str = "-"
    path: str = "-"
    status: str = "000"
    ms: float = 0.0
    at: float = 0.0  # when it finished, by the child's clock (time.time())


@dataclass(frozen=True)
class Requests(Message):
    """The requests answered since the last report: a child sends them in batches, so a busy
    app costs the runner a message per batch instead of one per request."""

    kind: ClassVar[str] = "requests"
    served: tuple[Served, ...] = ()


@dataclass(frozen=True)
class Modules(Message):
    """Modules imported from outside the project (for a fork server to preload), in chunks."""

    kind: ClassVar[str] = "modules"
    names: tuple[str, ...] = ()
    last: bool = False


@dataclass(frozen=True)
class Stale(Message):
    """A spare found a preloaded file changed since its fork server started; it exits. With
    project, path is instead a module of the app's own project that the shared preloader it was
    forked from had loaded (which the app must import afresh, from its own server)."""

    kind: ClassVar[str] = "stale"
    path: str = ""
    project: bool = False


@dataclass(frozen=True)
class Pages(Message):
    kind: ClassVar[str] = "pages"
    count: int = 0


@dataclass(frozen=True)
class Refreshed(Message):
    kind: ClassVar[str] = "refreshed"
    pages: int = 0
    how: str = "reload"  # reload | css


@dataclass(frozen=True)
class Writes(Message):
    """Watched files the app opened for writing: their changes are its own, not edits."""

    kind: ClassVar[str] = "writes"
    paths: tuple[str, ...] = ()


@dataclass(frozen=True)
class PinFailed(Message):
    kind: ClassVar[str] = "pin_failed"
    count: int = 0


@dataclass(frozen=True)
class PinOk(Message):
    kind: ClassVar[str] = "pin_ok"


@dataclass(frozen=True)
class Dropped(Message):
    """Request lines the child could not write (the pipe was full)."""

    kind: ClassVar[str] = "dropped"
    count: int = 0


# Runner -> child, on the control pipe.


@dataclass(frozen=True)
class Become(Message):
    """A spare's spec: the generation it becomes."""

    kind: ClassVar[str] = "become"
    spec: WorkerSpec


@dataclass(frozen=True)
class Refresh(Message):
    """Templates (reload) or only stylesheets (css) changed: apply them and tell the pages."""

    kind: ClassVar[str] = "refresh"
    how: str = "reload"
    paths: tuple[str, ...] = ()


# Runner <-> fork server, on its socket.


@dataclass(frozen=True)
class Hello(Message):
    kind: ClassVar[str] = "hello"
    preload: tuple[str, ...] = ()
    project_roots: tuple[str, ...] = ()


@dataclass(frozen=True)
class ServerReady(Message):
    """Preloaded: every module it has (a forked generation reports them among its imports)."""

    kind: ClassVar[str] = "server_ready"
    modules: tuple[str, ...] = ()


# Tainted's culprit when a server forked from the shared preloader finds the app's own code there.
SHARED_CULPRIT = "(shared preloader)"


@dataclass(frozen=True)
class Tainted(Message):
    """Importing culprit imported a project module, or (module "thread") started an OS thread:
    forks of a threaded process may deadlock."""

    kind: ClassVar[str] = "tainted"
    culprit: str = ""
    module: str = ""


@dataclass(frozen=True)
class Fork(Message):
    """Fork a spare. Its pipes and the listening socket come with it as SCM_RIGHTS fds: event,
    output, listener, control (the server itself never keeps the listener).

    Asked of the shared preloader (see runner/preloader.py), a fork is of another app's: cwd and
    env ("KEY=value" items) are what it moves into, as a spawned process would start there, and
    roots the app's project, none of which it may have loaded. With server, the fork becomes a
    fork server itself, on the one socket fd that comes with it."""

    kind: ClassVar[str] = "fork"
    server: bool = False
    cwd: str = ""
    env: tuple[str, ...] = ()
    roots: tuple[str, ...] = ()


@dataclass(frozen=True)
class Forked(Message):
    kind: ClassVar[str] = "forked"
    pid: int = 0


@dataclass(frozen=True)
class ForkFailed(Message):
    kind: ClassVar[str] = "fork_failed"
    why: str = ""


@dataclass(frozen=True)
class ServerStale(Message):
    """A preloaded file changed: the server exits, and must be replaced."""

    kind: ClassVar[str] = "server_stale"
    path: str = ""


ChildReport: TypeAlias = (Loaded | Ready | Failed | Closed | Requests | Modules | Stale | Pages | Refreshed | Writes
                          | PinFailed | PinOk | Dropped)
KINDS: dict[str, type[Message]] = {cls.kind: cls for cls in (
    Loaded, Ready, Failed, Closed, Requests, Modules, Stale, Pages, Refreshed, Writes, PinFailed, PinOk, Dropped,
    Become, Refresh, Hello, ServerReady, Tainted, Fork, Forked, ForkFailed, ServerStale)}


def _dump(msg: dict[str, object]) -> bytes:
    return json.dumps(msg, separators=(",", ":"), ensure_ascii=False, default=str).encode() + b"\n"


def encode(message: Message, limit: int | None = None) -> bytes:
    """One JSON line. With a limit, long text fields are shortened until it fits, never the JSON."""
    # asdict copies recursively; a batch of served requests (tuples, which JSON writes as lists)
    # needs no copy, and a busy child encodes one every few milliseconds.
    fields_ = {"served": message.served} if isinstance(message, Requests) else asdict(message)
    msg: dict[str, Any] = {"type": message.kind, **fields_}
    data = _dump(msg)
    while limit is not None and len(data) > limit:
        texts = [k for k, v in msg.items() if k != "type" and isinstance(v, str) and len(v) > 64]
        if not texts:
            return _dump({"type": message.kind, "truncated": True})
        key = max(texts, key=lambda k: len(msg[k]))
        value = msg[key]
        # Halve the longest text until the line fits (characters may take several bytes).
        keep = len(value) // 2
        # A traceback's end says what went wrong; other text's start says what it is about.
        msg[key] = "..." + value[len(value) - keep:] if key == "traceback" else value[:keep] + "..."
        data = _dump(msg)
    return data


def decode(line: bytes | str) -> Message | None:
    """The message of one line, or None for anything else: a child runs the user's code, which
    may write anything to an inherited fd (`[[[[...` nested past the recursion limit, bytes that
    are not UTF-8, a field of the wrong type)."""
    try:
        data = json.loads(line)
    except (ValueError, RecursionError, TypeError):
        return None
    if not isinstance(data, dict):
        return None
    cls = KINDS.get(data.get("type"))  # type: ignore[arg-type]  # any JSON value: .get finds no such key
    return None if cls is None else _build(cls, data)


_T = typing.TypeVar("_T")


def _build(cls: type[_T], data: dict[str, Any]) -> _T | None:
    """An instance of the dataclass cls from JSON data; None if a field has the wrong type or a
    required one is missing. Unknown keys are ignored (a newer or older peer)."""
    values: dict[str, object] = {}
    for f in fields(cls):  # type: ignore[arg-type]  # cls is always one of this module's dataclasses
        if f.name not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                return None
            continue
        value = _convert(str(f.type), data[f.name])
        if value is _BAD:
            return None
        values[f.name] = value
    return cls(**values)


_BAD = object()


def _convert(hint: str, value: object) -> object:
    """value as the field's type, or _BAD. The hint is the annotation's text (this module's
    annotations are never evaluated: a spare decodes its spec on the reload's path, and
    typing.get_type_hints would cost it half a millisecond)."""
    if hint == "bool":
        return value if isinstance(value, bool) else _BAD
    if hint == "int":
        return value if isinstance(value, int) and not isinstance(value, bool) else _BAD
    if hint == "float":
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else _BAD
    if hint == "str":
        return value if isinstance(value, str) else _BAD
    if hint == "int | None":
        return value if value is None else _convert("int", value)
    if hint.startswith("tuple[") and hint.endswith(", ...]"):
        item = hint[len("tuple["):-len(", ...]")]
        if not isinstance(value, list):
            return _BAD
        items = [_convert(item, v) for v in value]
        return _BAD if any(v is _BAD for v in items) else tuple(items)
    positional = _POSITIONAL.get(hint)
    if positional is not None:
        return _build_tuple(positional, value)
    nested = _NESTED.get(hint)
    if nested is not None:
        built = _build(nested, value) if isinstance(value, dict) else None
        return _BAD if built is None else built
    raise TypeError(f"no wire conversion for {hint!r}")  # a field type this module does not handle


def _build_tuple(cls: type[Served], value: object) -> object:
    """A NamedTuple from a JSON list: each item checked against its field's type; missing ones
    at the end take their defaults."""
    hints = _POSITIONAL_HINTS[cls]
    if not isinstance(value, list) or len(value) > len(hints):
        return _BAD
    items: list[Any] = [_convert(hint, v) for hint, v in zip(hints, value, strict=False)]
    return _BAD if any(v is _BAD for v in items) else cls(*items)  # each item checked: its field's type


def _hint_texts(cls: type[Served]) -> tuple[str, ...]:
    # NamedTuple keeps postponed annotations as ForwardRefs (their text is all we need).
    return tuple(str(getattr(h, "__forward_arg__", h)) for h in cls.__annotations__.values())


_NESTED: dict[str, type] = {"WorkerSpec": WorkerSpec, "DebugSpec": DebugSpec}
_POSITIONAL: dict[str, type[Served]] = {"Served": Served}
_POSITIONAL_HINTS = {cls: _hint_texts(cls) for cls in _POSITIONAL.values()}
