"""Reading the per-app log files that devrun.views.logview writes: `tail`, `follow`, and
`devrun logs`, which merges several apps' lines by time. Files are identified by inode, not by
name, because a rotation renames every file.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import BinaryIO

from devrun.views.logview import LOG_NAME, check_name, log_path

_CHUNK = 64 * 1024


def show(folder: Path, apps: list[str], n: int, keep_following: bool) -> int:
    """`devrun logs`: the last n lines of the apps (none named: every app with logs) merged by
    time, then, when keep_following, every new line until Ctrl-C. The exit status."""
    logged = apps_with_logs(folder)
    apps = apps or logged
    if not apps:
        print(f"devrun: no app has logged anything yet in {folder}", file=sys.stderr)
        return 1
    unknown = [a for a in apps if a not in logged and not keep_following]
    if unknown:
        print(f"devrun: no logs for {', '.join(unknown)}; apps with logs: {', '.join(logged) or 'none'}",
              file=sys.stderr)
        return 1
    width = max(len(a) for a in apps)
    try:
        lines = [(line, app) for app in apps for line in tail(folder, app, n)]
    except ValueError as exc:  # a name that could not be a log file's (`../x`)
        print(f"devrun: {exc}", file=sys.stderr)
        return 1
    lines.sort(key=lambda item: item[0][:23])  # by the time each line starts with
    for line, app in lines[len(lines) - n:] if n > 0 else []:
        print(f"{app:<{width}} | {line}")
    if not keep_following:
        return 0
    sys.stdout.flush()
    return _follow_all(folder, apps, width)


def _follow_all(folder: Path, apps: list[str], width: int) -> int:
    stop = threading.Event()
    new: queue.Queue[tuple[str, str | None]] = queue.Queue()

    def read(app: str) -> None:
        try:
            for line in follow(folder, app, stop.is_set):
                new.put((app, line))
        except (OSError, ValueError) as exc:  # said by the main thread, which then ends
            new.put((f"cannot follow the log of {app}: {exc}", None))

    for app in apps:
        threading.Thread(target=read, args=(app,), daemon=True).start()
    try:
        while True:
            try:  # in short steps, for the same reason as attach's _wait (control/attach.py)
                app, text = new.get(timeout=0.2)
            except queue.Empty:
                continue
            if text is None:
                print(f"devrun: {app}", file=sys.stderr)
                return 1
            print(f"{app:<{width}} | {text}", flush=True)
    except KeyboardInterrupt:
        stop.set()
        return 0


def log_files(folder: Path, app: str) -> list[Path]:
    """The app's existing log files, oldest first: `app.log.3`, ..., `app.log.1`, `app.log`."""
    check_name(app)
    numbered: list[tuple[int, Path]] = []
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return []
    for entry in entries:
        m = LOG_NAME.fullmatch(entry.name)
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
        m = LOG_NAME.fullmatch(entry.name)
        if m and entry.is_file(follow_symlinks=False):
            try:
                check_name(m["app"])
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
    current = log_path(folder, app)
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
            m = LOG_NAME.fullmatch(ours.name)
            n = int(m["n"] or 0) if m else 0
            if n == 0:
                return None
            # The successor is the file one name newer, never merely the next one listed: in the
            # middle of a rotation that name may be empty for a moment, and the listing skips it.
            successor = log_path(folder, app, n - 1)
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
