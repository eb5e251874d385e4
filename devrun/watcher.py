"""File events -> filter -> debounce -> one batch of changed paths per app.

Knows nothing about processes: it calls ``on_batch(app_name, paths)`` from its own thread
after an app's files have been quiet for its ``reload_delay`` (and at the latest
``MAX_WAIT`` after the first change of a steady stream).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from watchdog.events import (
    EVENT_TYPE_ATTRIB,
    EVENT_TYPE_CREATED,
    EVENT_TYPE_DELETED,
    EVENT_TYPE_MODIFIED,
    EVENT_TYPE_MOVED,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from devrun.patterns import Matcher

log = logging.getLogger(__name__)

# Only real changes count: watchdog also reports files being opened and closed without a
# write, which every request that reads a template produces.
# `touch app.py` (an attribute change) is the time-honoured way to force a reload.
CHANGE_EVENTS = frozenset({
    EVENT_TYPE_CREATED, EVENT_TYPE_MODIFIED, EVENT_TYPE_MOVED, EVENT_TYPE_DELETED, EVENT_TYPE_ATTRIB,
})
MAX_WAIT = 1.0

OnBatch = Callable[[str, tuple[str, ...]], None]


@dataclass
class _Pending:
    first: float
    last: float
    paths: dict[str, None] = field(default_factory=dict)  # ordered set


class Debouncer:
    """Collects paths per key; flushes a key once it has been quiet for its delay."""

    def __init__(self, on_batch: OnBatch, clock: Callable[[], float] = time.monotonic):
        self.on_batch = on_batch
        self.clock = clock
        self.delays: dict[str, float] = {}
        self.pending: dict[str, _Pending] = {}
        self.cond = threading.Condition()
        self.closed = False
        self.thread = threading.Thread(target=self._run, name="devrun-debounce", daemon=True)

    def add(self, key: str, path: str) -> None:
        now = self.clock()
        with self.cond:
            entry = self.pending.get(key)
            if entry is None:
                entry = self.pending[key] = _Pending(now, now)
            entry.last = now
            entry.paths[path] = None
            self.cond.notify()

    def due(self, now: float) -> list[tuple[str, tuple[str, ...]]]:
        """Pop and return the batches whose quiet period has passed (call with cond held)."""
        out = []
        for key, entry in list(self.pending.items()):
            if now >= self._deadline(key, entry):
                del self.pending[key]
                out.append((key, tuple(entry.paths)))
        return out

    def _deadline(self, key: str, entry: _Pending) -> float:
        return min(entry.last + self.delays.get(key, 0.03), entry.first + MAX_WAIT)

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.closed:
                    now = self.clock()
                    ready = self.due(now)
                    if ready:
                        break
                    waits = [self._deadline(k, e) - now for k, e in self.pending.items()]
                    self.cond.wait(timeout=min(waits) if waits else None)
                if self.closed:
                    return
            for key, paths in ready:
                try:
                    self.on_batch(key, paths)
                except Exception:  # a failing consumer must not stop change detection
                    log.exception("change handler failed")

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify()


class _AppHandler(FileSystemEventHandler):
    def __init__(self, name: str, matcher: Matcher, debouncer: Debouncer):
        self.name = name
        self.matcher = matcher
        self.debouncer = debouncer

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            if event.event_type not in CHANGE_EVENTS or event.is_directory:
                return
            paths = [event.src_path]
            if event.event_type == EVENT_TYPE_MOVED:
                paths.append(event.dest_path)  # an atomic save renames a temp file over the target
            for raw in paths:
                path = raw.decode() if isinstance(raw, bytes) else raw
                if self.matcher.matches(path):
                    self.debouncer.add(self.name, self.matcher.relative(path) or path)
        except Exception:  # never let one odd event kill the observer thread
            log.exception("error handling file event %r", event)


class Watcher:
    def __init__(self, on_batch: OnBatch):
        self.debouncer = Debouncer(on_batch)
        self.observer = Observer()

    def add(self, name: str, root: Path, matcher: Matcher, delay: float) -> None:
        self.debouncer.delays[name] = delay
        self.observer.schedule(_AppHandler(name, matcher, self.debouncer), str(root), recursive=True)

    def start(self) -> None:
        self.debouncer.start()
        self.observer.start()

    def stop(self) -> None:
        self.debouncer.close()
        self.observer.stop()
        self.observer.join(timeout=2)
