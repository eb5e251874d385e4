"""Which project files the app itself opens for writing: its log, its SQLite database. The runner
is told, so a change the app made is never taken for an edit that needs a reload (an app that
writes into its own watched tree would otherwise restart itself for ever)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

WRITING = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
# Files reported per generation: an app that writes a new temporary file per request must not
# grow this (or the runner's set) without bound.
MAX_REPORTED = 256
SQLITE_SIDE_FILES = ("-journal", "-wal", "-shm")


def report_writes(root: str, roots: Sequence[str], send: Callable[[list[str]], None]) -> None:
    """Install an audit hook (it cannot be removed: it lives as long as the generation) that
    calls send with the paths, relative to root as the runner labels them, of files opened for
    writing under any of roots."""
    base = os.path.abspath(root)
    prefixes = tuple(os.path.join(os.path.abspath(r), "") for r in (root, *roots))
    seen: set[str] = set()

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if len(seen) >= MAX_REPORTED:
            return
        if event == "open":
            path, _mode, flags = args
            if not isinstance(flags, int) or not flags & WRITING or not isinstance(path, str | bytes):
                return
            names = [path]
        elif event == "sqlite3.connect":
            path = args[0] if args else None
            if not isinstance(path, str | bytes | os.PathLike) or os.fspath(path) in (":memory:", b":memory:", ""):
                return
            names = [os.fsdecode(path) + suffix for suffix in ("", *SQLITE_SIDE_FILES)]
        else:
            return
        fresh = []
        for name in names:
            full = os.path.abspath(os.fsdecode(name))
            if full.startswith(prefixes) and full not in seen:
                seen.add(full)
                fresh.append(os.path.relpath(full, base).replace(os.sep, "/"))
        if fresh:
            send(fresh)

    sys.addaudithook(hook)
