"""File events -> filter -> debounce -> one batch of changed paths per app.

Knows nothing about processes: it calls ``on_batch(app_name, batch)`` from its own thread
after an app's files have been quiet for its ``reload_delay`` (and at the latest
``MAX_WAIT`` after the first change of a steady stream). A batch holds the changed files the
app's ``watch`` matches (code: a restart) and, apart, those only its ``live_reload.watch``
matches (the browser refreshes, the process stays).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

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
from watchdog.observers.api import BaseObserver, ObservedWatch
from watchdog.observers.polling import PollingObserver

from devrun.patterns import Matcher

log = logging.getLogger(__name__)

# Only real changes count: watchdog also reports files being opened and closed without a
# write, which every request that reads a template produces.
# `touch app.py` (an attribute change) is the time-honoured way to force a reload.
CHANGE_EVENTS = frozenset({
    EVENT_TYPE_CREATED, EVENT_TYPE_MODIFIED, EVENT_TYPE_MOVED, EVENT_TYPE_DELETED, EVENT_TYPE_ATTRIB,
})
MAX_WAIT = 1.0
POLL_INTERVAL = 0.5

@dataclass(frozen=True)
class Batch:
    code: tuple[str, ...] = ()  # restart the app
    live: tuple[str, ...] = ()  # refresh the browser only

    @property
    def paths(self) -> tuple[str, ...]:
        return self.code + self.live


OnBatch = Callable[[str, Batch], None]


@dataclass
class _Pending:
    first: float
    last: float
    paths: dict[str, bool] = field(default_factory=dict)  # ordered: path -> code (else live)


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

    def add(self, key: str, path: str, code: bool = True) -> None:
        now = self.clock()
        with self.cond:
            entry = self.pending.get(key)
            if entry is None:
                entry = self.pending[key] = _Pending(now, now)
            entry.last = now
            entry.paths[path] = entry.paths.get(path, False) or code
            self.cond.notify()

    def due(self, now: float) -> list[tuple[str, Batch]]:
        """Pop and return the batches whose quiet period has passed (call with cond held)."""
        out = []
        for key, entry in list(self.pending.items()):
            if now >= self._deadline(key, entry):
                del self.pending[key]
                out.append((key, Batch(tuple(p for p, code in entry.paths.items() if code),
                                       tuple(p for p, code in entry.paths.items() if not code))))
        return out

    def _deadline(self, key: str, entry: _Pending) -> float:
        delay = self.delays.get(key, 0.03)
        return min(entry.last + delay, entry.first + max(MAX_WAIT, delay))

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
            for key, batch in ready:
                try:
                    self.on_batch(key, batch)
                except Exception:  # a failing consumer must not stop change detection
                    log.exception("change handler failed")

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify()


class _AppWatch(FileSystemEventHandler):
    """One app's watches: a non-recursive watch per kept folder, so ignored folders
    (node_modules, .venv, .git, ...) are never walked and never cost an inotify watch."""

    def __init__(self, watcher: Watcher, name: str, matcher: Matcher, live: Matcher | None = None):
        self.watcher = watcher
        self.name = name
        self.matcher = matcher
        self.live = live
        self.watches: dict[str, ObservedWatch] = {}
        self.polling = False

    # -- events (observer thread) ---------------------------------------------------------

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            self._dispatch(event)
        except Exception:  # never let one odd event kill the observer thread
            log.exception("error handling file event %r", event)

    def _dispatch(self, event: FileSystemEvent) -> None:
        kind = event.event_type
        if kind not in CHANGE_EVENTS:
            return
        src = _text(event.src_path)
        dest = _text(event.dest_path) if kind == EVENT_TYPE_MOVED else ""
        if event.is_directory:
            if kind in (EVENT_TYPE_DELETED, EVENT_TYPE_MOVED):
                self.unwatch_tree(src)
            new = dest or (src if kind == EVENT_TYPE_CREATED else "")
            if new and not self.polling and not self.matcher.is_ignored_dir(new):
                # Files may have landed in it before its watch existed: scan them as changes.
                self.watch_tree(new, scan=True)
            return
        for path in (src, dest):  # an atomic save renames a temp file over the target
            if not path:
                continue
            if os.path.basename(path) == ".gitignore":
                for matcher in self.matchers:
                    matcher.forget_gitignore(os.path.dirname(path))
            self.changed(path)

    @property
    def matchers(self) -> tuple[Matcher, ...]:
        return (self.matcher,) if self.live is None else (self.matcher, self.live)

    def changed(self, path: str) -> None:
        # A file both globs match is code: the restart refreshes the browser as well.
        if self.matcher.matches(path):
            self.watcher.debouncer.add(self.name, self.matcher.label(path))
        elif self.live is not None and self.live.matches(path):
            self.watcher.debouncer.add(self.name, self.live.label(path), code=False)

    @property
    def roots(self) -> list[str]:
        return list(dict.fromkeys(root for matcher in self.matchers for root in matcher.roots))

    # -- watches ---------------------------------------------------------------------------

    def watch_tree(self, top: str, scan: bool = False) -> None:
        stack = [top]
        while stack:
            folder = stack.pop()
            if folder in self.watches:
                continue
            try:
                self.watches[folder] = self.watcher.schedule(self, folder)
                entries = list(os.scandir(folder))
            except FileNotFoundError:
                continue  # gone again already
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    self.watcher.out_of_watches(self)
                    return
                if exc.errno in (errno.EACCES, errno.EPERM, errno.ENOTDIR):
                    continue
                raise
            for entry in entries:
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    continue
                if is_dir:
                    if not self.matcher.is_ignored_dir(entry.path):
                        stack.append(entry.path)
                elif scan:
                    self.changed(entry.path)

    def unwatch_tree(self, top: str) -> None:
        for folder in [f for f in self.watches if f == top or f.startswith(top + os.sep)]:
            self.watcher.unschedule(self, self.watches.pop(folder))


class _FileWatch(FileSystemEventHandler):
    def __init__(self, watcher: Watcher, key: str, path: str):
        self.watcher = watcher
        self.key = key
        self.path = path

    def dispatch(self, event: FileSystemEvent) -> None:
        if event.event_type not in CHANGE_EVENTS or event.is_directory:
            return
        paths = (_text(event.src_path), _text(event.dest_path) if event.event_type == EVENT_TYPE_MOVED else "")
        if self.path in paths:  # an editor's atomic save arrives as a move onto it
            self.watcher.debouncer.add(self.key, os.path.basename(self.path))


def _text(path: bytes | str) -> str:
    return os.fsdecode(path)


class Watcher:
    """Watches every app's roots and reports debounced batches of changed files."""

    def __init__(self, on_batch: OnBatch, on_notice: Callable[[str, str], None] | None = None,
                 observer: BaseObserver | None = None):
        self.debouncer = Debouncer(on_batch)
        self.on_notice = on_notice or (lambda app, text: None)
        self.observer = observer or Observer()
        self.poller: BaseObserver | None = None
        self.apps: dict[str, _AppWatch] = {}
        self.files: dict[str, _FileWatch] = {}
        self.lock = threading.RLock()

    def add(self, name: str, matcher: Matcher, delay: float, live: Matcher | None = None) -> None:
        """Watch an app: `matcher` for its code, `live` (if any) for files that only refresh
        the browser. Both share the app's ignores, so the folders walked are the same."""
        self.debouncer.delays[name] = delay
        app = self.apps[name] = _AppWatch(self, name, matcher, live)
        with self.lock:
            for root in app.roots:
                if not os.path.isdir(root):
                    self.on_notice(name, f"not watching {root}: no such folder")
                    continue
                app.watch_tree(root)
                if app.polling:
                    break

    def remove(self, name: str) -> None:
        """Stop watching an app (it was removed from devrun.yaml)."""
        with self.lock:
            app = self.apps.pop(name, None)
            if app is None:
                return
            for watch in app.watches.values():
                self.unschedule(app, watch)
            app.watches.clear()
        self.debouncer.delays.pop(name, None)

    def watch_file(self, key: str, path: str, delay: float) -> None:
        """Watch one file (devrun.yaml): a non-recursive watch of its folder, this name only."""
        self.debouncer.delays[key] = delay
        handler = _FileWatch(self, key, os.path.abspath(path))
        self.files[key] = handler
        with self.lock:
            self.observer.schedule(handler, os.path.dirname(handler.path), recursive=False)

    def watch_count(self, name: str) -> int:
        return len(self.apps[name].watches)

    def schedule(self, app: _AppWatch, folder: str) -> ObservedWatch:
        with self.lock:
            return self.observer.schedule(app, folder, recursive=False)

    def unschedule(self, app: _AppWatch, watch: ObservedWatch) -> None:
        observer = self.poller if app.polling and self.poller is not None else self.observer
        with self.lock, contextlib.suppress(KeyError, OSError):
            # Another app may watch the same folder: remove only our handler.
            observer.remove_handler_for_watch(app, watch)

    def out_of_watches(self, app: _AppWatch) -> None:
        """The system ran out of inotify watches: poll this app's roots instead of crashing."""
        with self.lock:
            if app.polling:
                return
            for watch in app.watches.values():
                self.unschedule(app, watch)
            app.watches.clear()
            app.polling = True
            if self.poller is None:
                self.poller = PollingObserver(timeout=POLL_INTERVAL)
                self.poller.start()
            for root in app.roots:
                if os.path.isdir(root):
                    app.watches[root] = self.poller.schedule(app, root, recursive=True)
        self.on_notice(app.name, "out of inotify watches, falling back to polling (slower); raise the limit "
                       "with: sudo sysctl fs.inotify.max_user_watches=524288")

    def start(self) -> None:
        self.debouncer.start()
        self.observer.start()

    def stop(self) -> None:
        self.debouncer.close()
        for observer in (self.observer, self.poller):
            if observer is not None:
                observer.stop()
        for observer in (self.observer, self.poller):
            if observer is not None and observer.is_alive():
                observer.join(timeout=2)
