"""File events -> filter -> changed paths per app, handed to the runner's loop.

Knows nothing about processes or time. Each change an app's ``watch`` matches (code: a
restart) or, apart, one only its ``live_reload.watch`` matches (the browser refreshes, the
process stays) goes into a buffer, and ``wake()`` is called when the buffer was empty: a burst
of events costs the loop one wake-up. The loop ``drain()``s the buffer and debounces it
(`devrun.watch.debounce`) into one batch per app once its files have been quiet for its
``reload_delay``.

Folders are watched one by one, so ignored ones (node_modules, .venv, .git, ...) are never
walked and never cost a watch. They are watched by `FolderWatches`: one thread for every
folder of every app. A folder is polled instead where inotify gets no events (its mount's type
says so, see `devrun.watch.mounts`) or where the app's `watch_mode` asks for it; the app is told
once per root. Everything below that touches an app's watches (`_AppWatch`, `_FileWatch`)
runs on that thread; `Watcher`'s methods hand their work to it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
from collections.abc import Callable, Iterator

from watchdog.observers.api import BaseObserver

from devrun.watch import mounts
from devrun.watch.debounce import Batch
from devrun.watch.folder_watches import CREATED, DELETED, MOVED_FROM, MOVED_TO, Change, FolderWatches
from devrun.watch.mounts import Verdict, WatchMode
from devrun.watch.patterns import Matcher

__all__ = ["Batch", "Watcher"]  # Batch: importers of it here predate devrun.watch.debounce

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.5
# Folders that cannot be watched for these reasons are skipped quietly, as git would skip them.
UNWATCHABLE = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EACCES, errno.EPERM, errno.ELOOP})
OUT_OF_WATCHES = ("out of inotify watches, falling back to polling (slower); raise the limit "
                  "with: sudo sysctl fs.inotify.max_user_watches=524288")
Files = list[os.DirEntry[str]]


class _AppWatch:
    """One app's watches: a watch per kept folder. Runs on the FolderWatches thread only."""

    def __init__(self, watcher: Watcher, name: str, matcher: Matcher, live: Matcher | None = None,
                 mode: WatchMode = "auto"):
        self.watcher = watcher
        self.folders = watcher.folders
        self.name = name
        self.matcher = matcher
        self.live = live
        self.mode = mode
        self.watches: set[str] = set()
        self.polling = False  # some of its folders are polled: the system ran out of watches
        self.told: set[int] = set()  # errnos already reported

    @property
    def matchers(self) -> tuple[Matcher, ...]:
        return (self.matcher,) if self.live is None else (self.matcher, self.live)

    @property
    def roots(self) -> list[str]:
        return list(dict.fromkeys(root for matcher in self.matchers for root in matcher.roots))

    def open(self) -> None:
        for root in self.roots:
            if not os.path.isdir(root):
                self.watcher.on_notice(self.name, f"not watching {root}: no such folder")
                continue
            self.watch_tree(root, follow_top=True)

    def wants(self, path: str) -> bool:
        """Could a change of this file ever act? Only those are stat'ed in a polled folder. The
        globs alone decide, not the ignores: a .gitignore edit can change what is ignored."""
        if os.path.basename(path) == ".gitignore":
            return True
        for matcher in self.matchers:
            for rules in matcher.watch:
                rel = rules.relative(path)
                if rel is not None and rules.spec.match_file(rel):
                    return True
        return False

    def polls(self, folder: str, device: int, say: bool) -> bool:
        """Is this folder polled (and, with `say`, tell why once: a root, or a mount inside the tree)?"""
        if self.mode == "events":
            return False
        if self.mode == "poll":
            if say:
                self.watcher.tell_once(self.name, f"polling {folder} (watch_mode: poll)")
            return True
        verdict = self.watcher.verdict(folder, device)
        if verdict.polls and say:
            self.watcher.tell_once(self.name, f"polling {folder} ({verdict.why}); set watch_mode: events to override")
        return verdict.polls

    def close(self) -> None:
        for folder in self.watches:
            self.folders.unwatch(folder, self)
        self.watches.clear()

    # -- events ----------------------------------------------------------------------------

    def on_change(self, change: Change) -> None:
        if change.is_dir:
            if change.kind in (DELETED, MOVED_FROM):
                self.unwatch_tree(change.path)
            elif change.kind in (CREATED, MOVED_TO) and not self.matcher.is_ignored_dir(change.path):
                # Files may have landed in it before its watch existed: scan them as changes.
                self.watch_tree(change.path, scan=True)
            return  # a folder's own modified/attrib events say nothing a file's event does not
        if os.path.basename(change.path) == ".gitignore":
            for matcher in self.matchers:
                matcher.forget_gitignore(os.path.dirname(change.path))
        self.changed(change.path)

    def on_lost(self, folder: str) -> None:
        """Its watch ended by itself (deleted, moved away): what was below it went with it."""
        self.unwatch_tree(folder)

    def on_overflow(self, since: float) -> None:
        """The kernel dropped events: watch what appeared meanwhile, forget what went, and
        report the files changed since `since`. When none did, a folder whose entries changed
        may have lost a watched file (a delete leaves nothing to find): report the folder."""
        for folder in [f for f in self.watches if not os.path.isdir(f)]:
            self.unwatch_tree(folder)
        reported, touched = 0, []
        for root in self.roots:
            if not os.path.isdir(root):
                continue
            for folder, files in self._walk(root, follow_top=True, rewalk=True):
                reported += sum(self.changed(f.path) for f in files if _changed_since(f, since))
                if _changed_since(folder, since):
                    touched.append(folder)
        if not reported:
            for folder in touched:
                self.watcher.report(self.name, self.matcher.label(folder).rstrip("/") + "/", True)

    def changed(self, path: str) -> bool:
        # A file both globs match is code: the restart refreshes the browser as well.
        if self.matcher.matches(path):
            self.watcher.report(self.name, self.matcher.label(path), True)
            return True
        if self.live is not None and self.live.matches(path):
            self.watcher.report(self.name, self.live.label(path), False)
            return True
        return False

    # -- watches ---------------------------------------------------------------------------

    def watch_tree(self, top: str, scan: bool = False, follow_top: bool = False) -> None:
        for _, files in self._walk(top, follow_top):
            if scan:
                for entry in files:
                    self.changed(entry.path)

    def unwatch_tree(self, top: str) -> None:
        prefix = top + os.sep
        for folder in [f for f in self.watches if f == top or f.startswith(prefix)]:
            self.watches.discard(folder)
            self.folders.unwatch(folder, self)

    def _walk(self, top: str, follow_top: bool = False, rewalk: bool = False) -> Iterator[tuple[str, Files]]:
        """Kept folders from top down, each watched before it is listed (a file created in
        between is seen either way), with their non-folder entries. Symlinks are never
        followed and a folder met twice (a bind mount of its parent) is walked once. A folder
        is polled as its parent is, unless it is another file system's (a mount point)."""
        top_key = _identity(top)
        seen = {top_key}
        stack = [(top, follow_top, top_key[0], self.polls(top, top_key[0], say=follow_top))]
        while stack:
            folder, follow, device, poll = stack.pop()
            if folder in self.watches:
                if not rewalk:
                    continue
            elif not self._watch(folder, follow, poll):
                continue
            files = []
            for entry in _entries(folder):
                if not _is_dir(entry):
                    files.append(entry)
                    continue
                key = _identity(entry)
                if key not in seen and not self.matcher.is_ignored_dir(entry.path):
                    seen.add(key)
                    crossed = key[0] != device and key[0] >= 0
                    stack.append((entry.path, False, key[0] if crossed else device,
                                  self.polls(entry.path, key[0], say=True) if crossed else poll))
            yield folder, files

    def _watch(self, folder: str, follow: bool, poll: bool) -> bool:
        try:
            native = self.folders.watch(folder, self, follow, poll)
        except OSError as exc:
            if exc.errno not in UNWATCHABLE and exc.errno not in self.told:
                self.told.add(exc.errno or 0)
                self.watcher.on_notice(self.name, f"not watching {folder}: {exc.strerror or exc}")
            return False
        self.watches.add(folder)
        if not native and not poll and not self.polling and self.folders.source is not None:
            self.polling = True
            self.watcher.on_notice(self.name, OUT_OF_WATCHES)
        return True


class _FileWatch:
    """One file (devrun.yaml, an env file): a watch of its folder, reporting this name only."""

    def __init__(self, watcher: Watcher, key: str, path: str, mode: WatchMode = "auto"):
        self.watcher = watcher
        self.name = key
        self.path = path
        self.mode = mode

    def wants(self, path: str) -> bool:
        return path == self.path

    def polls(self) -> bool:
        if self.mode != "auto":
            return self.mode == "poll"
        folder = os.path.dirname(self.path)
        return self.watcher.verdict(folder, _identity(folder)[0]).polls

    def on_change(self, change: Change) -> None:
        if change.path == self.path and not change.is_dir:  # an editor's atomic save moves onto it
            self.watcher.report(self.name, os.path.basename(self.path), True)

    def on_lost(self, folder: str) -> None:
        pass  # the project folder itself went away: nothing left to reload from

    def on_overflow(self, since: float) -> None:
        if _changed_since(self.path, since):
            self.watcher.report(self.name, os.path.basename(self.path), True)


def _entries(folder: str) -> Files:
    try:
        with os.scandir(folder) as entries:
            return list(entries)
    except OSError:  # gone again, or unreadable
        return []


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def _identity(place: str | os.DirEntry[str]) -> tuple[int, int]:
    try:
        st = place.stat(follow_symlinks=False) if isinstance(place, os.DirEntry) else os.stat(place)
    except OSError:
        return (-1, id(place))  # unknown: never equal to another
    return st.st_dev, st.st_ino


def _changed_since(place: str | os.DirEntry[str], since: float) -> bool:
    try:
        st = place.stat(follow_symlinks=False) if isinstance(place, os.DirEntry) else os.stat(place)
    except OSError:
        return False
    return max(st.st_mtime, st.st_ctime) >= since


class _LogRelay(logging.Handler):
    """devrun configures no logging, so a library's warning would reach Python's last-resort
    handler and print as a bare line among the apps' output. (watchdog logged
    "InotifyEmitter.queue_events() called when the thread is inactive" this way.) Attached to
    the loggers of the watcher's code and of watchdog, this handler turns such records into
    devrun notices instead. While a handler is attached, the last resort is never used."""

    LOGGERS = ("watchdog", "devrun.watch.watcher", "devrun.watch.folder_watches")

    def __init__(self, on_notice: Callable[[str, str], None]):
        super().__init__(logging.WARNING)
        self.on_notice = on_notice

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):  # reporting a problem must never become one
            text = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                text += f": {record.exc_info[1]!r}"
            self.on_notice("", f"file watcher: {text}")

    def attach(self) -> None:
        for name in self.LOGGERS:
            logging.getLogger(name).addHandler(self)

    def detach(self) -> None:
        for name in self.LOGGERS:
            logging.getLogger(name).removeHandler(self)


class Watcher:
    """Watches every app's roots and hands the changed files to the loop that owns it.

    `wake` is called from the watch thread when changes wait in a buffer that was empty; the
    loop then takes them with `drain`. `observer` (a watchdog observer) replaces the platform's
    source of events; without it, Linux uses one inotify instance and other systems watchdog's
    default Observer. `mountinfo` returns the text of the mount table (None: there is none); a
    test gives its own to put a folder on any file system."""

    def __init__(self, wake: Callable[[], None], on_notice: Callable[[str, str], None] | None = None,
                 observer: BaseObserver | None = None,
                 mountinfo: Callable[[], str | None] = mounts.read_mountinfo):
        self.wake = wake
        self.mountinfo = mountinfo
        self.verdicts: dict[int, Verdict] = {}  # st_dev -> how its folders are watched
        self.told: set[tuple[str, str]] = set()  # (app, notice) said once: re-adding an app says nothing new
        self.lock = threading.Lock()  # guards changes: filled on the watch thread, drained on the loop's
        self.changes: list[tuple[str, str, bool]] = []  # (key, path, code) in arrival order
        self.on_notice = on_notice or (lambda app, text: None)
        self.relay = _LogRelay(self.on_notice)
        self.relay.attach()
        self.folders = FolderWatches(lambda text: self.on_notice("", text), observer, POLL_INTERVAL)
        self.apps: dict[str, _AppWatch] = {}
        self.files: dict[str, _FileWatch] = {}
        self.started = False

    def add(self, name: str, matcher: Matcher, live: Matcher | None = None, watch_mode: WatchMode = "auto") -> None:
        """Watch an app: `matcher` for its code, `live` (if any) for files that only refresh
        the browser. Both share the app's ignores, so the folders walked are the same.
        `watch_mode` (the app's config): auto polls where the mount's type says inotify gets no
        events, poll polls every folder, events never polls (but when out of watches)."""
        self.folders.call(self._add, _AppWatch(self, name, matcher, live, watch_mode))

    def remove(self, name: str) -> None:
        """Stop watching an app (it was removed from devrun.yaml)."""
        self.folders.call(self._remove, name)

    def watch_file(self, key: str, path: str, watch_mode: WatchMode = "auto") -> None:
        """Watch one file (devrun.yaml): a watch of its folder, this name only; polled as
        `watch_mode` says (auto: where the mount's type says inotify gets no events)."""
        self.folders.call(self._watch_file, _FileWatch(self, key, os.path.abspath(path), watch_mode))

    def unwatch_file(self, key: str) -> None:
        """Stop watching a file watched by watch_file (an env file no app names any more)."""
        self.folders.call(self._unwatch_file, key)

    def report(self, key: str, label: str, code: bool) -> None:
        # Before start nothing is reported, as before: changes made while the apps were being
        # set up are theirs.
        if not self.started:
            return
        with self.lock:
            first = not self.changes
            self.changes.append((key, label, code))
        # Only the first change of a burst wakes the loop: it drains the rest with it. Called
        # outside the lock, so a wake that takes a lock of its own cannot order against ours.
        if first:
            try:
                self.wake()
            except Exception:  # a failing consumer must not stop change detection
                log.exception("change handler failed")

    def drain(self) -> list[tuple[str, str, bool]]:
        """The changes reported since the last drain, as (key, path, code) in arrival order.
        The loop clears its wake-up flag before draining: a change reported after the drain
        then wakes it again."""
        with self.lock:
            changes, self.changes = self.changes, []
        return changes

    def start(self) -> None:
        self.folders.call(self.folders.settle)
        self.started = True
        self.folders.start()

    def stop(self) -> None:
        self.folders.stop()
        self.relay.detach()

    def verdict(self, folder: str, device: int) -> Verdict:
        """How the file system of `folder` (on st_dev `device`) is watched; the mount table is
        read once per file system."""
        if device < 0:
            # Gone before it could be looked at (a folder created and deleted at once): its
            # watch fails anyway, and reading the mount table for each such folder cost a
            # churning tree's watcher most of its time.
            return Verdict("", "", False, "folder gone")
        known = self.verdicts.get(device)
        if known is None:
            known = self.verdicts[device] = mounts.verdict(folder, self.mountinfo())
        return known

    def tell_once(self, app: str, text: str) -> None:
        if (app, text) not in self.told:
            self.told.add((app, text))
            self.on_notice(app, text)

    # -- on the FolderWatches thread -------------------------------------------------------

    def _add(self, app: _AppWatch) -> None:
        self._remove(app.name)
        self.apps[app.name] = app
        app.open()

    def _remove(self, name: str) -> None:
        app = self.apps.pop(name, None)
        if app is not None:
            app.close()

    def _unwatch_file(self, key: str) -> None:
        old = self.files.pop(key, None)
        if old is not None:
            self.folders.unwatch(os.path.dirname(old.path), old)

    def _watch_file(self, handler: _FileWatch) -> None:
        self._unwatch_file(handler.name)
        self.files[handler.name] = handler
        try:
            self.folders.watch(os.path.dirname(handler.path), handler, follow=True, poll=handler.polls())
        except OSError as exc:
            self.on_notice("", f"not watching {handler.path}: {exc.strerror or exc}")
