"""What a runner opens in `.devrun/` for other terminals: the one-runner lock, the per-app log
files and the control socket, each closed with the runner (an ExitStack holds them)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

from devrun.control import daemon, protocol
from devrun.control.remote import PostCommand, RemoteView
from devrun.control.server import ControlServer
from devrun.views.logview import AppLogs, LogView

LOG_BYTES_ENV = "DEVRUN_LOG_MAX_BYTES"  # each app's log file size before it rotates (3 kept)
LOG_BYTES = 1_000_000


def serve_control(stack: contextlib.ExitStack, config_file: Path, apps: list[tuple[str, str]],
                  info: dict[str, object], post: PostCommand,
                  warn: Callable[[str], None]) -> tuple[LogView, RemoteView]:
    """The lock (AlreadyRunning before anything has started), the log files' view and the
    control socket's view. apps: (name, url) of each app served; post: where verbs go."""
    lock = daemon.RunnerLock(config_file)
    lock.acquire()
    stack.callback(lock.release)
    state = daemon.state_dir(config_file)
    logs = AppLogs(state / daemon.LOG_DIR, max_bytes=log_bytes(warn))
    stack.callback(logs.close)
    remote = RemoteView(apps, post, info)
    path = protocol.socket_path(state)
    server = ControlServer(path, remote.handlers(), remote.streams())
    server.start()
    stack.callback(server.close)
    link = state / "control.sock"
    if path != link:  # too long a path for a socket: a link in .devrun/ says where it is
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        link.symlink_to(path)
        stack.callback(lambda: link.unlink(missing_ok=True))
    return LogView(logs), remote


def log_bytes(warn: Callable[[str], None]) -> int:
    text = os.environ.get(LOG_BYTES_ENV, "")
    if text.isdigit() and int(text) > 0:
        return int(text)
    if text:
        warn(f"{LOG_BYTES_ENV}={text!r} is not a positive number of bytes; using {LOG_BYTES}")
    return LOG_BYTES
