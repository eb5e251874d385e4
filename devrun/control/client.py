"""A client's end of the control channel: one request and its reply (`request`, `ask`), or the
events of a streaming verb (`stream`); the framing and the errors are in protocol.py."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from devrun.control.protocol import MAX_REPLY, MAX_REQUEST, PROTOCOL, Busy, ControlError, NotRunning, encode

CONNECT_TIMEOUT = 5.0
# A runner whose connection slots are all in conversations answers "busy": ask again for this long.
BUSY_RETRY = 3.0


def request(path: Path, verb: str, timeout: float = 5.0, **args: Any) -> Any:
    """Ask the runner listening on path; its result, or ControlError with its reason."""
    with _connect(path, timeout) as sock:
        _send_request(sock, verb, args)
        try:
            with sock.makefile("rb") as reader:
                reply = _read_reply(reader)
        except TimeoutError:
            raise ControlError(f"no reply from the runner within {timeout:g} s") from None
        except OSError as exc:
            raise ControlError(f"lost the connection to the runner: {exc}") from None
    if reply is None:
        raise ControlError("the runner closed the connection without a reply")
    if "result" not in reply:
        raise ControlError(f"{verb!r} is a streaming verb: read it with stream()")
    return reply["result"]


def ask(path: Path, verb: str, timeout: float = 5.0, **args: object) -> Any:
    """request(), asked again for a while when the runner is busy (it said so at once)."""
    end = time.monotonic() + BUSY_RETRY
    while True:
        try:
            return request(path, verb, timeout=timeout, **args)
        except Busy:
            if time.monotonic() >= end:
                raise
            time.sleep(0.1)


def stream(path: Path, verb: str, **args: Any) -> Iterator[dict[str, Any]]:
    """The events of a streaming verb until the runner ends the stream; closing the iterator
    hangs up. Connects on the first next(), so NotRunning is raised from there."""
    with _connect(path, CONNECT_TIMEOUT) as sock:
        _send_request(sock, verb, args)
        sock.settimeout(None)  # events may be hours apart (attach)
        with sock.makefile("rb") as reader:
            while True:
                try:
                    reply = _read_reply(reader)
                except OSError as exc:
                    raise ControlError(f"lost the connection to the runner: {exc}") from None
                if reply is None:
                    return
                if "event" not in reply:
                    raise ControlError(f"{verb!r} is not a streaming verb: use request()")
                yield reply["event"]


def _connect(path: Path, timeout: float) -> socket.socket:
    if os.path.islink(path):
        # devrun never connects through a link: the socket path it computes is the real one, and
        # a link there came with the project (`down` sent through it would reach any runner).
        raise ControlError(f"{path} is a symlink, not a runner's socket; remove it (a runner, once "
                           "started, replaces it)")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        _connect_waiting(sock, path, timeout)
    except (FileNotFoundError, NotADirectoryError, ConnectionRefusedError):
        sock.close()
        raise NotRunning(f"no devrun runner is running here (nothing answers on {path})") from None
    except OSError as exc:
        sock.close()
        raise ControlError(f"cannot reach the runner on {path}: {exc.strerror or exc}") from None
    return sock


def _connect_waiting(sock: socket.socket, path: Path, timeout: float) -> None:
    """connect(), waiting up to timeout while the listen backlog is full: a Unix socket says
    EAGAIN at once then (a blocking one would wait), and the runner is alive, only busy."""
    end = time.monotonic() + timeout
    while True:
        try:
            sock.connect(os.fspath(path))
            return
        except BlockingIOError:
            if time.monotonic() >= end:
                raise
            time.sleep(0.02)


def _send_request(sock: socket.socket, verb: str, args: dict[str, Any]) -> None:
    data = encode({"v": PROTOCOL, "verb": verb, "args": args})
    if len(data) > MAX_REQUEST + 1:
        raise ControlError(f"request too long: the limit is {MAX_REQUEST} bytes")
    # A runner that refuses us (another user, too busy) answers and hangs up without reading:
    # its reply, read next, says why.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        sock.sendall(data)


def _read_reply(reader: io.BufferedReader) -> dict[str, Any] | None:
    line = reader.readline(MAX_REPLY + 1)
    if not line:
        return None
    if not line.endswith(b"\n"):
        raise ControlError("the runner's reply was cut off or too long")
    try:
        reply = json.loads(line)
    except (ValueError, RecursionError):
        raise ControlError("the runner's reply is not JSON") from None
    if not isinstance(reply, dict) or type(reply.get("v")) is not int or reply["v"] != PROTOCOL:
        raise ControlError(f"the runner speaks another protocol than version {PROTOCOL}: restart it")
    if not reply.get("ok"):
        error = Busy if reply.get("code") == "busy" else ControlError
        raise error(str(reply.get("error") or "the runner refused without saying why"))
    return reply
