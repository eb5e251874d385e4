"""Per-app log files in the `.devrun/` folder: `<app>.log`, rotated to `<app>.log.1` ... `.N`.

Writing is the standard library's `RotatingFileHandler` (rotation happens before a line that
would overflow, so a line is never split across files), with two changes: files are created
0600, and the size bound counts bytes and never rotates an empty file. Reading (`tail`,
`follow`) identifies files by inode, not by name, because a rotation renames every file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Generator
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import BinaryIO, TextIO

from devrun import statefiles

_LOG_NAME = re.compile(r"(?P<app>.+)\.log(?:\.(?P<n>[1-9][0-9]*))?")
_CHUNK = 64 * 1024


def _check_name(app: str) -> None:
    # config checks names too; this one guards names typed on the command line (`logs ../x`).
    statefiles.check_name(app)


def _one_line(line: str) -> str:
    # One call must stay one line for the readers, who split on "\n" only.
    return line.replace("\r", "\\r").replace("\n", "\\n")


class _Handler(RotatingFileHandler):
    def _open(self) -> TextIO:
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

    def write(self, app: str, line: str) -> None:
        """Append one line (a newline is added; newlines inside it are escaped)."""
        record = logging.makeLogRecord({"name": app, "msg": _one_line(line)})  # no args: "%" stays as is
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
                _check_name(app)
                # Used directly, never added to a logger: the app's output must not reach
                # devrun's own logging, nor the root logger's handlers.
                handler = _Handler(
                    self.folder / f"{app}.log", maxBytes=self.max_bytes, backupCount=self.backups,
                    encoding="utf-8", errors="backslashreplace", delay=True,
                )
                handler.setFormatter(logging.Formatter("%(message)s"))
                self._handlers[app] = handler
            return handler


def stamp(at: float) -> str:
    """A log line's time: sortable text, so `devrun logs` can merge several apps' files."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at)) + f".{int(at * 1000) % 1000:03d}"


class LogView:
    """A view: each app's lifecycle, request and output lines, with their time, in its log file."""

    def __init__(self, logs: AppLogs) -> None:
        self.logs = logs

    def handle(self, event: object) -> None:
        from devrun.events import Event
        from devrun.views.plainlog import describe

        if not isinstance(event, Event) or not event.app:
            return
        text = describe(event)
        if text is not None:
            with contextlib.suppress(ValueError, OSError):  # a full disk must not stop the runner
                self.logs.write(event.app, f"{stamp(event.at)} {text.plain}")


def log_files(folder: Path, app: str) -> list[Path]:
    """The app's existing log files, oldest first: `app.log.3`, ..., `app.log.1`, `app.log`."""
    _check_name(app)
    numbered: list[tuple[int, Path]] = []
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return []
    for entry in entries:
        m = _LOG_NAME.fullmatch(entry.name)
        if m and m["app"] == app and entry.is_file(follow_symlinks=False):
            numbered.append((int(m["n"] or 0), Path(entry.path)))
    return [path for _, path in sorted(numbered, key=lambda item: -item[0])]


def apps_with_logs(folder: Path) -> list[str]:
    """The apps that have at least one log file, sorted (for `devrun logs` with no app named)."""
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return []
    names: set[str] = set()
    for entry in entries:
        m = _LOG_NAME.fullmatch(entry.name)
        if m and entry.is_file(follow_symlinks=False):
            try:
                _check_name(m["app"])
            except ValueError:
                continue
            names.add(m["app"])
    return sorted(names)


def tail(folder: Path, app: str, n: int) -> list[str]:
    """The app's last n lines across its rotated files, oldest first."""
    if n <= 0:
        return []
    newest_first: list[list[str]] = []
    have = 0
    seen: set[int] = set()
    for path in reversed(log_files(folder, app)):
        try:
            with _open_read(path) as f:
                inode = os.fstat(f.fileno()).st_ino
                if inode in seen:  # a rotation renamed a file already read to this name
                    continue
                seen.add(inode)
                data = f.read()
        except OSError:  # rotated out meanwhile (or a symlink put in its place: not a log of ours)
            continue
        lines = data.decode("utf-8", "replace").split("\n")
        if lines[-1] == "":
            lines.pop()
        taken = lines[-(n - have):]
        newest_first.append(taken)
        have += len(taken)
        if have >= n:
            break
    return [line for chunk in reversed(newest_first) for line in chunk]


def follow(folder: Path, app: str, stop: Callable[[], bool], poll: float = 0.1) -> Generator[str, None, None]:
    """Every line appended to the app's log after this call, across rotations, until stop().

    The position is taken now, not at the first next(), so nothing written in between is missed.
    A generator, so that close() releases the open file of a follower given up early.
    """
    newest = log_files(folder, app)[-1:]
    reader = None
    if newest:
        try:
            reader = _Reader(_open_read(newest[0]))
            reader.file.seek(0, os.SEEK_END)
        except OSError:  # renamed and rotated out in between: the next file comes later
            pass
    return _follow(folder, app, reader, stop, poll)


def _follow(
    folder: Path, app: str, reader: _Reader | None, stop: Callable[[], bool], poll: float
) -> Generator[str, None, None]:
    try:
        while not stop():
            if reader is not None:
                lines = reader.read_lines()
                if lines:
                    yield from lines
                    continue
                if reader.truncated():
                    reader.rewind()
                    continue
            following = _next_file(folder, app, reader)
            if following is None:
                time.sleep(poll)
                continue
            if reader is not None:
                # The writer closes a file before renaming it, so what is left in it now is all
                # there will be (written between our last read and the rename).
                yield from reader.read_lines(final=True)
                reader.file.close()
            reader = following
    finally:
        if reader is not None:
            reader.file.close()


class _Reader:
    """One open log file and the partial line read from it so far."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.inode = os.fstat(file.fileno()).st_ino
        self.partial = b""

    def read_lines(self, final: bool = False) -> list[str]:
        data = self.partial
        while chunk := self.file.read(_CHUNK):
            data += chunk
        *lines, self.partial = data.split(b"\n")
        if final and self.partial:  # a last line without its newline (a writer that died mid-line)
            lines.append(self.partial)
            self.partial = b""
        return [line.decode("utf-8", "replace") for line in lines]

    def truncated(self) -> bool:
        return os.fstat(self.file.fileno()).st_size < self.file.tell()

    def rewind(self) -> None:
        self.file.seek(0)
        self.partial = b""


def _next_file(folder: Path, app: str, reader: _Reader | None) -> _Reader | None:
    """The file written after the reader's, once the reader's was rotated (the oldest one if
    there is no reader, or its file was rotated out); None while there is none yet."""
    current = folder / f"{app}.log"
    if reader is not None and _inode(current) in (reader.inode, None):
        return None  # still the file being written, or the next one is not created yet
    for _ in range(5):
        ours = None
        if reader is None or os.fstat(reader.file.fileno()).st_nlink == 0:
            # Nothing read yet, or ours was rotated out: every file left is newer than it.
            files = log_files(folder, app)
            if not files:
                return None
            successor = files[0]
        else:
            # Our open file keeps its inode from being reused, so a match is really our file.
            ours = next((p for p in log_files(folder, app) if _inode(p) == reader.inode), None)
            if ours is None:
                continue  # it moved while we looked
            m = _LOG_NAME.fullmatch(ours.name)
            n = int(m["n"] or 0) if m else 0
            if n == 0:
                return None
            # The successor is the file one name newer, never merely the next one listed: in the
            # middle of a rotation that name may be empty for a moment, and the listing skips it.
            successor = folder / (f"{app}.log.{n - 1}" if n > 1 else f"{app}.log")
        inode = _inode(successor)
        if inode is None:
            return None  # in the middle of a rotation: look again at the next poll
        # A rotation renames the older file first (ours before its successor), so if ours is still
        # where we found it, what we found at the newer name really is its successor.
        if reader is not None and ours is not None and _inode(ours) != reader.inode:
            continue
        try:
            opened = _Reader(_open_read(successor))
        except OSError:
            continue
        if opened.inode == inode:
            return opened
        opened.file.close()
    return None


def _inode(path: Path) -> int | None:
    try:
        return os.lstat(path).st_ino
    except FileNotFoundError:
        return None


def _open_read(path: Path) -> BinaryIO:
    return open(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb")
