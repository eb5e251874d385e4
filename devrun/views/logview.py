"""A view that writes each app's events to its log file in the `.devrun/` folder: `<app>.log`,
rotated to `<app>.log.1` ... `.N`; and the names of those files, which the readers
(devrun.control.logfiles) share.

Writing is the standard library's `RotatingFileHandler` (rotation happens before a line that
would overflow, so a line is never split across files), with two changes: files are created
0600, and the size bound counts bytes and never rotates an empty file.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import re
import threading
import time
from logging.handlers import RotatingFileHandler
from pathlib import Path

from devrun import statefiles

LOG_NAME = re.compile(r"(?P<app>.+)\.log(?:\.(?P<n>[1-9][0-9]*))?")


def check_name(app: str) -> None:
    # config checks names too; this one guards names typed on the command line (`logs ../x`).
    statefiles.check_name(app)


def log_path(folder: Path, app: str, n: int = 0) -> Path:
    """The app's log file being written (n = 0), or its n-th newest rotated one."""
    return folder / (f"{app}.log.{n}" if n else f"{app}.log")


def _one_line(line: str) -> str:
    # One call must stay one line for the readers, who split on "\n" only.
    return line.replace("\r", "\\r").replace("\n", "\\n")


class _Handler(RotatingFileHandler):
    def _open(self) -> io.TextIOWrapper:
        # Also called by doRollover for each new file, so every file the handler makes is 0600
        # (a file left by an older run with looser bits is tightened). Only the runner writes
        # log files: a symlink in their place is replaced, its target never appended to.
        fd = statefiles.open_private(Path(self.baseFilename), os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                                     replace_link=True)
        return open(fd, "a", encoding=self.encoding, errors=self.errors)

    def shouldRollover(self, record: logging.LogRecord) -> bool:
        # The stdlib counts characters, not bytes, and would rotate an empty file to make room
        # for a line longer than max_bytes (pushing out a backup for nothing): such a line gets
        # a file of its own instead. The stream is flushed after every line, so st_size is exact.
        if self.stream is None:
            self.stream = self._open()
        size = os.fstat(self.stream.fileno()).st_size
        line = (self.format(record) + self.terminator).encode(self.encoding or "utf-8", self.errors or "strict")
        return size > 0 and size + len(line) > self.maxBytes


class AppLogs:
    """The log files of every app: each at most max_bytes (unless one line is longer), plus
    `backups` rotated files."""

    def __init__(self, folder: Path, max_bytes: int = 1_000_000, backups: int = 3) -> None:
        # backups=0 would make the stdlib reopen the full file in append mode: no bound at all.
        if max_bytes < 1 or backups < 1:
            raise ValueError("max_bytes and backups must be at least 1")
        self.folder = folder
        self.max_bytes = max_bytes
        self.backups = backups
        self._handlers: dict[str, _Handler] = {}
        self._lock = threading.Lock()
        folder.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        statefiles.private_dir(folder)

    def write(self, app: str, *lines: str) -> None:
        """Append lines (a newline is added to each; newlines inside one are escaped). They go in
        one write, so a batch of request lines costs one rotation check, and a rotation never
        splits it."""
        text = "\n".join(map(_one_line, lines))
        record = logging.makeLogRecord({"name": app, "msg": text})  # no args: "%" stays as is
        self._handler(app).handle(record)

    def close(self) -> None:
        with self._lock:
            handlers, self._handlers = list(self._handlers.values()), {}
        for handler in handlers:
            handler.close()

    def _handler(self, app: str) -> _Handler:
        with self._lock:
            handler = self._handlers.get(app)
            if handler is None:
                check_name(app)
                # Used directly, never added to a logger: the app's output must not reach
                # devrun's own logging, nor the root logger's handlers.
                handler = _Handler(
                    log_path(self.folder, app), maxBytes=self.max_bytes, backupCount=self.backups,
                    encoding="utf-8", errors="backslashreplace", delay=True,
                )
                handler.setFormatter(logging.Formatter("%(message)s"))
                self._handlers[app] = handler
            return handler


def stamp(at: float) -> str:
    """A log line's time: sortable text, so `devrun logs` can merge several apps' files."""
    return _seconds(int(at)) + f".{int(at * 1000) % 1000:03d}"


@functools.lru_cache(maxsize=4)
def _seconds(second: int) -> str:
    # A busy app logs thousands of lines within a second: its text is worked out once.
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))


class LogView:
    """A view: each app's lifecycle, request and output lines, with their time, in its log file."""

    def __init__(self, logs: AppLogs) -> None:
        self.logs = logs

    def handle(self, event: object) -> None:
        # Imported here: `devrun logs` imports this module for the names of the files only.
        from devrun.events import Event, Requests
        from devrun.views.plainlog import describe, request_line

        if not isinstance(event, Event) or not event.app:
            return
        if isinstance(event, Requests):
            with contextlib.suppress(ValueError, OSError):
                self.logs.write(event.app, *(f"{stamp(r.at)} {request_line(r)}" for r in event.requests))
            return
        text = describe(event)
        if text is not None:
            with contextlib.suppress(ValueError, OSError):  # a full disk must not stop the runner
                self.logs.write(event.app, f"{stamp(event.at)} {text.plain}")
