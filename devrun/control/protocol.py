"""What both ends of the control socket agree on: the framing, the version, the limits, the
errors, and where the socket of a project lives.

One request per connection, one line of JSON each way, over an AF_UNIX stream socket:

    -> {"v": 1, "verb": "status", "args": {}}
    <- {"v": 1, "ok": true, "result": ...}      or      {"v": 1, "ok": false, "error": "..."}

A streaming verb (`logs -f`, `attach`) answers with any number of
`{"v": 1, "ok": true, "event": {...}}` lines instead, until either side closes.

Only the owner gets in: the socket file is 0600, in `.devrun/` or in a 0700 folder of ours
(see socket_path), and the server checks every peer's uid too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

PROTOCOL = 1
MAX_REQUEST = 64 * 1024
# Replies come from our own runner, so this only stops a broken one from eating the client's memory.
MAX_REPLY = 16 * 1024 * 1024
# sun_path holds 108 bytes on Linux and 104 on macOS, the final NUL included.
MAX_SOCKET_PATH = 100


class ControlError(Exception):
    """The control channel failed, or the runner refused the request; the text says why."""


class NotRunning(ControlError):
    pass


class AlreadyRunning(ControlError):
    """Another runner has this project: it holds the one-runner lock of its config (`pid`, once
    it wrote it there), or it answers on the control socket."""

    def __init__(self, text: str, pid: int | None = None) -> None:
        super().__init__(text)
        self.pid = pid

    @classmethod
    def for_config(cls, pid: int | None, config: Path) -> AlreadyRunning:
        who = f"pid {pid}" if pid else "another process"
        return cls(f"already running for {config} ({who}); "
                   "`devrun status` shows it, `devrun down` stops it", pid)


class UnsafeFolder(ControlError):
    pass


class Busy(ControlError):
    """Every connection slot of the runner is taken by a conversation in progress."""


def socket_path(state_dir: Path) -> Path:
    """Where the control socket of the project whose state folder is state_dir lives.

    `state_dir/control.sock` when that path fits in a socket address; otherwise a name derived
    from state_dir in a private per-user folder whose path is short whatever the project's is.
    """
    state_dir = state_dir.resolve()
    direct = state_dir / "control.sock"
    if len(os.fsencode(direct)) <= MAX_SOCKET_PATH:
        return direct
    name = hashlib.sha256(os.fsencode(state_dir)).hexdigest()[:16] + ".sock"
    runtime = _runtime_dir()
    if runtime is not None and len(os.fsencode(runtime / "devrun" / name)) <= MAX_SOCKET_PATH:
        folder = runtime / "devrun"
    else:
        folder = Path("/tmp") / f"devrun-{os.geteuid()}"
    _make_private(folder)
    return folder / name


def _runtime_dir() -> Path | None:
    value = os.environ.get("XDG_RUNTIME_DIR", "")
    if not os.path.isabs(value):
        return None
    try:
        st = os.stat(value)
    except OSError:
        return None
    # The variable comes from the environment: only a folder of ours is as private as it claims.
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or not os.access(value, os.W_OK | os.X_OK):
        return None
    return Path(value)


def _make_private(folder: Path) -> None:
    with contextlib.suppress(FileExistsError):
        os.mkdir(folder, 0o700)
    # lstat: a symlink planted in /tmp by someone else must not be followed.
    st = os.lstat(folder)
    uid = os.geteuid()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid or st.st_mode & 0o077:
        raise UnsafeFolder(
            f"{folder} must be a folder (not a symlink) owned by uid {uid} with mode 0700, and it is not;"
            " another user may have created it: remove it, or set XDG_RUNTIME_DIR to a private folder"
        )


def encode(message: dict[str, Any]) -> bytes:
    # ensure_ascii escapes every newline inside strings, so one message is always one line.
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def encode_error(text: str, code: str | None = None) -> bytes:
    message: dict[str, Any] = {"v": PROTOCOL, "ok": False, "error": text}
    if code:
        message["code"] = code  # for clients to act on (retry when "busy"); the text is for people
    return encode(message)
