"""Every watched folder of every app, owned by one thread.

One thread ("devrun-watch") owns the bookkeeping: which folders are watched, for whom, and how.
Its loop waits on the OS's event source and on a wake-up pipe. Other threads never touch the
bookkeeping: they hand work to the thread with `call` and wait for its answer. Nothing here
calls out while holding a lock, so no lock order can invert. (The old watcher deadlocked: the
observer called handlers under its own lock while the main thread scheduled under devrun's.)

On Linux the source is a single inotify instance for every folder of every app: one fd read by
this thread, with no thread per folder. It is built on watchdog's ctypes bindings
(`watchdog.observers.inotify_c`). Elsewhere the source is a watchdog Observer whose handlers
only queue events for this thread. This thread polls a folder that the source cannot watch
because the system is out of watches (ENOSPC), a folder its watcher asks to poll (inotify gets
no events on its file system: see `devrun.watch.mounts`), and every folder when there is no
source at all (the inotify instance limit, EMFILE).

A poll costs one stat of each polled folder and one lstat of each file a subscriber wants: a
folder is listed again only when its own (inode, mtime) changed, which an atomic save, a new
file or a deleted one does; an in-place write changes only the file's mtime and size.

Subscribers (an app, the config file) receive `Change`s for the folders they watch,
`on_lost(folder)` when a watch ended by itself (folder deleted or moved away), and
`on_overflow(since)` when the kernel dropped events, so they can rescan what changed after `since`.
A subscriber may have `wants(path)`: in a polled folder, only the files it accepts are stat'ed
(entries added or removed are reported all the same).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import inspect
import os
import selectors
import stat
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, TypedDict, TypeVar

from watchdog import events as watchdog_events
from watchdog.events import (
    EVENT_TYPE_CREATED,
    EVENT_TYPE_DELETED,
    EVENT_TYPE_MODIFIED,
    EVENT_TYPE_MOVED,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver, ObservedWatch

T = TypeVar("T")

# watchdog 7 reports an attribute change (`touch`) as an event of its own; 6, the last release for
# Python 3.10, as a modification (and has no such name).
EVENT_TYPE_ATTRIB = getattr(watchdog_events, "EVENT_TYPE_ATTRIB", "attrib")
_SCHEDULE_FOLLOWS = "follow_symlink" in inspect.signature(BaseObserver.schedule).parameters


class _ScheduleOptions(TypedDict, total=False):
    """The keywords of BaseObserver.schedule that only some watchdog versions take."""

    follow_symlink: bool


CREATED, MODIFIED, ATTRIB, DELETED, MOVED_FROM, MOVED_TO = (
    "created", "modified", "attrib", "deleted", "moved_from", "moved_to")
# Raw kinds the owner thread handles itself.
_LOST, _OVERFLOW, _MOVED_SELF = "lost", "overflow", "moved_self"

# The allow-list for watchdog events: watchdog also reports files being opened and closed without
# a write, which every request that reads a template produces. `touch app.py` (an attribute
# change) is the time-honoured way to force a reload. (On inotify the same list is the watch mask.)
CHANGE_EVENTS = frozenset({
    EVENT_TYPE_CREATED, EVENT_TYPE_MODIFIED, EVENT_TYPE_MOVED, EVENT_TYPE_DELETED, EVENT_TYPE_ATTRIB,
})
_WATCHDOG_KINDS = {EVENT_TYPE_CREATED: CREATED, EVENT_TYPE_MODIFIED: MODIFIED, EVENT_TYPE_DELETED: DELETED,
                   EVENT_TYPE_ATTRIB: ATTRIB}
OUT_OF_WATCHES = frozenset({errno.ENOSPC, errno.ENOMEM})
READS_PER_TURN = 16  # inotify buffers read before the loop looks at its other work
NOTICE_REPEAT = 30.0  # seconds before the same problem is reported again
# A folder's mtime has the file system's granularity (2 s on FAT, 1 s on some shares): a second
# change within the same tick leaves it as it was. A folder is listed again on every poll until
# a listing comes this long after its mtime was seen to change, so no such change is missed.
RACY = 2.0


@dataclass(frozen=True)
class Change:
    kind: str  # CREATED, MODIFIED, ATTRIB, DELETED, MOVED_FROM or MOVED_TO
    path: str
    is_dir: bool


class Subscriber(Protocol):
    name: str

    def on_change(self, change: Change) -> None: ...

    def on_lost(self, folder: str) -> None: ...

    def on_overflow(self, since: float) -> None: ...


# (token of the watch, kind, name relative to the watched folder or an absolute path, is_dir)
Raw = tuple[Hashable | None, str, str, bool]


class Source(Protocol):
    """Where native events come from. Only the owner thread calls these."""

    def fileno(self) -> int | None: ...

    def add(self, folder: str, follow: bool) -> Hashable: ...

    def remove(self, token: Hashable) -> None: ...

    def read(self) -> list[Raw]: ...

    def close(self) -> None: ...


# -- Linux: one inotify instance ------------------------------------------------------------


class InotifySource:
    """One inotify fd for every folder. It is non-blocking: the owner thread's selector says
    when there is something to read. The mask is the allow-list: no open, access or
    close-nowrite events ever reach the queue."""

    def __init__(self) -> None:
        from watchdog.observers import inotify_c  # Linux only: it loads libc's inotify symbols

        self._c = inotify_c
        const = inotify_c.InotifyConstants
        self._const = const
        # IN_ONLYDIR: a folder replaced by a file or a FIFO between listing and watching is never
        # watched (or opened). IN_EXCL_UNLINK: no events from files already deleted but still open.
        self.mask = (const.IN_MODIFY | const.IN_ATTRIB | const.IN_MOVED_FROM | const.IN_MOVED_TO
                     | const.IN_CREATE | const.IN_DELETE | const.IN_DELETE_SELF | const.IN_MOVE_SELF
                     | const.IN_ONLYDIR | const.IN_EXCL_UNLINK)
        fd = inotify_c.inotify_init()
        if fd < 0:
            err = ctypes.get_errno()
            if err == errno.EMFILE:
                raise OSError(err, "inotify instance limit reached (fs.inotify.max_user_instances"
                                   f"={_sysctl('max_user_instances')})")
            raise OSError(err, os.strerror(err))
        os.set_inheritable(fd, False)  # inotify_init has no IN_CLOEXEC: children must not inherit it
        os.set_blocking(fd, False)
        self.fd = fd

    def fileno(self) -> int | None:
        return self.fd

    def add(self, folder: str, follow: bool) -> Hashable:
        # A watched tree's subfolders are never followed through a symlink (a loop such as
        # `src/loop -> ..` would otherwise be walked for ever). A root given as a symlink is.
        mask = self.mask if follow else self.mask | self._const.IN_DONT_FOLLOW
        wd = self._c.inotify_add_watch(self.fd, os.fsencode(folder), mask)
        if wd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), folder)
        return wd

    def remove(self, token: Hashable) -> None:
        # EINVAL (the folder and its watch are gone already) is expected and harmless.
        self._c.inotify_rm_watch(self.fd, token)  # type: ignore[arg-type]

    def read(self) -> list[Raw]:
        try:
            data = os.read(self.fd, 64 * 1024)
        except (BlockingIOError, InterruptedError):
            return []
        return list(self._parse(data))

    def _parse(self, data: bytes) -> Iterator[Raw]:
        offset = 0
        while offset + 16 <= len(data):
            wd, mask, cookie, length = struct.unpack_from("iIII", data, offset)
            name = data[offset + 16:offset + 16 + length].rstrip(b"\0")
            offset += 16 + length
            kind = self._kind(mask)
            if kind is not None:
                is_dir = bool(mask & self._const.IN_ISDIR)
                yield (None if kind == _OVERFLOW else wd, kind, os.fsdecode(name), is_dir)

    def _kind(self, mask: int) -> str | None:
        # From the mask's bits (inotify(7)): watchdog's InotifyEvent would do it too, but its
        # constructor changed between watchdog 6 (the last for Python 3.10) and 7.
        const = self._const
        if mask & const.IN_Q_OVERFLOW:
            return _OVERFLOW
        if mask & const.IN_IGNORED:  # the watch is gone: folder deleted, file system unmounted
            return _LOST
        if mask & const.IN_MOVE_SELF:
            return _MOVED_SELF
        for bit, kind in ((const.IN_CREATE, CREATED), (const.IN_DELETE, DELETED), (const.IN_MOVED_FROM, MOVED_FROM),
                          (const.IN_MOVED_TO, MOVED_TO), (const.IN_MODIFY, MODIFIED), (const.IN_ATTRIB, ATTRIB)):
            if mask & bit:
                return kind
        return None  # IN_DELETE_SELF, IN_UNMOUNT: an IN_IGNORED follows

    def close(self) -> None:
        os.close(self.fd)


def _sysctl(name: str) -> str:
    try:
        with open(f"/proc/sys/fs/inotify/{name}") as f:
            return f.read().strip()
    except OSError:
        return "?"


# -- elsewhere: a watchdog Observer ---------------------------------------------------------


class _Relay(FileSystemEventHandler):
    """Runs on watchdog's observer thread, under the observer's lock: it only queues."""

    def __init__(self, source: ObserverSource, folder: str):
        self.source = source
        self.folder = folder
        self.watch: ObservedWatch | None = None

    def dispatch(self, event: FileSystemEvent) -> None:
        if event.event_type not in CHANGE_EVENTS:
            return
        src = os.fsdecode(event.src_path)
        if event.event_type == EVENT_TYPE_MOVED:
            raws: list[Raw] = [(self, MOVED_FROM, src, event.is_directory),
                               (self, MOVED_TO, os.fsdecode(event.dest_path), event.is_directory)]
        elif event.event_type == EVENT_TYPE_DELETED and src == self.folder:
            raws = [(self, _LOST, "", True)]
        elif event.event_type == EVENT_TYPE_DELETED and event.is_directory:
            # The folder's own watch reports its end (above), after its files' deletions. Each
            # watch has its own emitter thread here, so this event from the parent's may come
            # first, and unwatching on it would drop those deletions.
            return
        else:
            raws = [(self, _WATCHDOG_KINDS[event.event_type], src, event.is_directory)]
        self.source.events.extend(raws)
        self.source.wake()


class ObserverSource:
    """Folders watched by a watchdog Observer, one non-recursive watch each."""

    def __init__(self, observer: BaseObserver, wake: Callable[[], None]):
        self.observer = observer
        self.wake = wake
        self.events: deque[Raw] = deque()
        # Started before the first watch: an emitter then starts (and fails) inside `schedule`,
        # where the error can be handled, instead of all at once inside `observer.start()`.
        if not observer.is_alive():
            observer.start()

    def fileno(self) -> int | None:
        return None

    def add(self, folder: str, follow: bool) -> Hashable:
        relay = _Relay(self, folder)
        # watchdog 6 (the last for Python 3.10) has no follow_symlink: it follows, as 7 does by default.
        options: _ScheduleOptions = {"follow_symlink": follow} if _SCHEDULE_FOLLOWS else {}
        relay.watch = self.observer.schedule(relay, folder, recursive=False, **options)
        return relay

    def remove(self, token: Hashable) -> None:
        assert isinstance(token, _Relay) and token.watch is not None
        with contextlib.suppress(KeyError, OSError):
            self.observer.unschedule(token.watch)

    def read(self) -> list[Raw]:
        out = []
        with contextlib.suppress(IndexError):
            while True:
                out.append(self.events.popleft())
        return out

    def close(self) -> None:
        self.observer.stop()
        if self.observer.is_alive():
            self.observer.join(timeout=2)


# -- the owner ------------------------------------------------------------------------------


@dataclass
class _Native:
    token: Hashable
    ident: tuple[int, int] | None  # (st_dev, st_ino) when watched: tells a moved folder from a stale path
    subscribers: dict[Subscriber, None] = field(default_factory=dict)


# name -> (is_dir, inode, mtime_ns, size); a file no subscriber wants: (False, 0, -1, -1), never stat'ed
Snapshot = dict[str, tuple[bool, int, int, int]]
_UNWANTED = (False, 0, -1, -1)


@dataclass(eq=False)
class _Polled:
    folder: str
    subscribers: dict[Subscriber, None] = field(default_factory=dict)
    entries: Snapshot = field(default_factory=dict)
    files: list[tuple[str, str]] = field(default_factory=list)  # (name, path) of the wanted files
    wanted: dict[str, bool] = field(default_factory=dict)  # file name -> does a subscriber want it
    stamp: tuple[int, int] | None = None  # the folder's (inode, mtime_ns) when it was last listed
    listed_at: float = 0.0  # time.monotonic() of that listing
    settle_until: float = -1.0  # list again on every poll while the last listing is older


class _Job:
    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]):
        self.fn, self.args = fn, args
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.value = self.fn(*self.args)
        except BaseException as exc:  # handed to the caller, who raises it
            self.error = exc
        finally:
            self.done.set()


class FolderWatches:
    def __init__(self, on_notice: Callable[[str], None], observer: BaseObserver | None = None,
                 poll_interval: float = 0.5):
        self.on_notice = on_notice
        self.poll_interval = poll_interval
        self._said: dict[str, float] = {}
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self.source: Source | None = self._open(observer)
        self.native: dict[str, _Native] = {}
        self.aliases: dict[Hashable, list[str]] = {}  # token -> folders (a bind mount: one folder, two paths)
        self.polled: dict[str, _Polled] = {}
        self._poll_order: list[_Polled] | None = None  # deepest first; None: to be sorted again
        self._jobs: deque[_Job] = deque()
        self._closing = False
        self._next_poll = 0.0
        self.drained_at = time.time()  # when the kernel's queue was last seen empty
        self.thread = threading.Thread(target=self._run, name="devrun-watch", daemon=True)

    def _open(self, observer: BaseObserver | None) -> Source | None:
        try:
            if observer is None and sys.platform.startswith("linux"):
                source: Source = InotifySource()
            else:
                if observer is None:
                    from watchdog.observers import Observer
                    observer = Observer()
                source = ObserverSource(observer, self._wake)
        except OSError as exc:
            self.say(f"file watcher: {exc.strerror}; polling every watched folder instead (slower)")
            return None
        fd = source.fileno()
        if fd is not None:
            self._selector.register(fd, selectors.EVENT_READ)
        return source

    # -- any thread ------------------------------------------------------------------------

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run fn on the owner thread and return its result. Before start and after stop
        there is no other thread to race with, so fn runs right here."""
        if not self.thread.is_alive() or threading.current_thread() is self.thread:
            return fn(*args)
        job = _Job(fn, args)
        self._jobs.append(job)
        self._wake()
        while not job.done.wait(0.5):
            if not self.thread.is_alive():
                try:
                    self._jobs.remove(job)
                except ValueError:
                    continue  # the thread ran it on its way out
                return fn(*args)
        if job.error is not None:
            raise job.error
        return job.value  # type: ignore[no-any-return]

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._closing = True
        self._wake()
        if self.thread.is_alive() and threading.current_thread() is not self.thread:
            self.thread.join(timeout=2)
        if not self.thread.is_alive():
            self._close()

    def say(self, text: str) -> None:
        now = time.monotonic()
        if now - self._said.get(text, -NOTICE_REPEAT) < NOTICE_REPEAT:
            return
        if len(self._said) > 100:
            self._said.clear()
        self._said[text] = now
        with contextlib.suppress(Exception):  # called from the loop's own error handling: must not raise
            self.on_notice(text)

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):  # a full pipe: a wake-up is pending anyway
            os.write(self._wake_w, b"\0")

    # -- owner thread: watches -------------------------------------------------------------

    def watch(self, folder: str, subscriber: Subscriber, follow: bool = False, poll: bool = False) -> bool:
        """Watch a folder for a subscriber; True when the source watches it, False when it is
        polled (asked for with `poll`, out of watches, or no source). Other OSErrors (ENOENT,
        EACCES, ENOTDIR) are the caller's to judge: nothing is watched then."""
        if not poll:
            entry = self.native.get(folder)
            if entry is not None:
                entry.subscribers[subscriber] = None
                return True
            if self.source is not None:
                try:
                    token = self.source.add(folder, follow)
                except OSError as exc:
                    if exc.errno not in OUT_OF_WATCHES:
                        raise
                else:
                    self._register(folder, token, subscriber)
                    return True
        polled = self.polled.get(folder)
        if polled is None:
            polled = _Polled(folder, {subscriber: None})
            polled.stamp = _stamp(folder)  # before the listing: a change in between is seen next time
            polled.entries, polled.files, polled.wanted = _listing(polled)
            polled.listed_at = time.monotonic()
            if abs(time.time_ns() - polled.stamp[1]) < RACY * 1e9:  # changed just now: its tick may not be over
                polled.settle_until = polled.listed_at + RACY
            if not self.polled:
                self._next_poll = time.monotonic() + self.poll_interval
            self.polled[folder] = polled
            self._poll_order = None
        elif subscriber not in polled.subscribers:
            self._join(polled, subscriber)
        return False

    def unwatch(self, folder: str, subscriber: Subscriber) -> None:
        entry = self.native.get(folder)
        if entry is not None and subscriber in entry.subscribers:
            del entry.subscribers[subscriber]
            if not entry.subscribers:
                self._forget(folder, remove=True)
        polled = self.polled.get(folder)
        if polled is not None and subscriber in polled.subscribers:
            del polled.subscribers[subscriber]
            if not polled.subscribers:
                del self.polled[folder]
                self._poll_order = None

    def settle(self) -> None:
        """Take in what happened before the thread runs (folders created since they were
        watched), and bring polled folders up to date."""
        self._read_source()
        self._poll(force=True)

    def _register(self, folder: str, token: Hashable, subscriber: Subscriber) -> None:
        ident = _ident(folder)
        for old in list(self.aliases.get(token, ())):
            # The kernel handed back a watch known under another path: either the same folder
            # seen at two paths (a bind mount), or the folder moved and the old path is stale.
            if ident is None or _ident(old) != ident:
                self._lose(old, remove=False)
        self.native[folder] = _Native(token, ident, {subscriber: None})
        self.aliases.setdefault(token, []).append(folder)

    def _forget(self, folder: str, remove: bool) -> _Native | None:
        entry = self.native.pop(folder, None)
        if entry is None:
            return None
        folders = self.aliases.get(entry.token, [])
        if folder in folders:
            folders.remove(folder)
        if not folders:
            self.aliases.pop(entry.token, None)
            if remove and self.source is not None:
                with contextlib.suppress(OSError):
                    self.source.remove(entry.token)
        return entry

    def _lose(self, folder: str, remove: bool) -> None:
        entry = self._forget(folder, remove)
        for subscriber in entry.subscribers if entry is not None else ():
            self._tell(subscriber, "on_lost", folder)

    def _tell(self, subscriber: Subscriber, method: str, *args: Any) -> None:
        try:
            getattr(subscriber, method)(*args)
        except Exception as exc:  # one subscriber's bug must not stop the others, or the thread
            self.say(f"file watcher: error handling a file event for {subscriber.name}: {exc!r}")

    # -- owner thread: the loop ------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._closing:
                try:
                    self._selector.select(self._timeout())
                    self._turn()
                except Exception as exc:  # the loop outlives any bug or OS error
                    self.say(f"file watcher: {exc!r}")
                    time.sleep(0.1)
        finally:
            while self._jobs:  # nobody may wait for ever on a job queued before the end
                self._jobs.popleft().run()

    def _timeout(self) -> float | None:
        if not self.polled:
            return None
        return max(0.0, self._next_poll - time.monotonic())

    def _turn(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_r, 4096)
        while self._jobs:
            self._jobs.popleft().run()
        self._read_source()
        self._poll()

    def _read_source(self) -> None:
        for _ in range(READS_PER_TURN):
            if self.source is None:
                return
            try:
                raws = self.source.read()
            except OSError as exc:
                self._degrade(exc)
                return
            if not raws:
                self.drained_at = time.time()
                return
            for raw in raws:
                self._dispatch(*raw)

    def _dispatch(self, token: Hashable | None, kind: str, name: str, is_dir: bool) -> None:
        if kind == _OVERFLOW:
            self._overflow()
            return
        # No folder: the last events of a watch dropped meanwhile. (The kernel hands out watch
        # descriptors cyclically, so a dropped one is not reused while its events are queued.)
        for folder in list(self.aliases.get(token, ())):
            if kind == _LOST:
                self._lose(folder, remove=False)
            elif kind == _MOVED_SELF:
                entry = self.native.get(folder)
                if entry is not None and (entry.ident is None or _ident(folder) != entry.ident):
                    self._lose(folder, remove=True)  # moved away unseen (a root, or its parent unwatched)
            else:
                entry = self.native.get(folder)
                if entry is not None:
                    self._deliver(entry.subscribers, Change(kind, os.path.join(folder, name) if name else folder,
                                                            is_dir))

    def _deliver(self, subscribers: dict[Subscriber, None], change: Change) -> None:
        for subscriber in list(subscribers):
            if subscriber in subscribers:  # an earlier one's handling may have removed it
                self._tell(subscriber, "on_change", change)

    def _overflow(self) -> None:
        # Everything since the queue was last empty may be lost; timestamps are coarse.
        since = self.drained_at - 1.0
        self.say("file watcher: the inotify event queue overflowed; rescanning the watched folders")
        subscribers = dict.fromkeys(s for entry in self.native.values() for s in entry.subscribers)
        for subscriber in subscribers:
            self._tell(subscriber, "on_overflow", since)

    def _degrade(self, exc: OSError) -> None:
        """The source itself failed: poll what it watched."""
        self.say(f"file watcher: reading file events failed ({exc}); polling instead (slower)")
        source, self.source = self.source, None
        if source is not None:
            fd = source.fileno()
            if fd is not None:
                with contextlib.suppress(KeyError, ValueError):
                    self._selector.unregister(fd)
            with contextlib.suppress(OSError):
                source.close()
        native, self.native = self.native, {}
        self.aliases.clear()
        for folder, entry in native.items():
            for subscriber in entry.subscribers:
                with contextlib.suppress(OSError):
                    self.watch(folder, subscriber)

    def _poll(self, force: bool = False) -> None:
        if not self.polled or (not force and time.monotonic() < self._next_poll):
            return
        now = time.monotonic()
        if self._poll_order is None:
            # Deepest first: a deleted tree's files are reported from their own folders before
            # the parent's listing drops the whole tree.
            self._poll_order = sorted(self.polled.values(), key=lambda e: e.folder.count(os.sep), reverse=True)
        for entry in self._poll_order:
            if self.polled.get(entry.folder) is entry:  # an earlier delivery may have unwatched it
                self._poll_one(entry, now)
        # Where a stat is a round trip (a share, a VM's host), a big tree's poll may take longer
        # than the interval: rest at least as long as it took, never keeping the server busy.
        took = time.monotonic() - now
        self._next_poll = now + max(self.poll_interval, 2 * took)

    def _poll_one(self, entry: _Polled, now: float) -> None:
        try:
            stamp = _stamp(entry.folder)
        except OSError:
            self._lose_polled(entry)
            return
        if stamp != entry.stamp or entry.listed_at <= entry.settle_until:
            if stamp != entry.stamp:
                entry.settle_until = now + RACY
            self._list(entry, stamp, now)
            return
        lstat, entries = os.lstat, entry.entries
        for name, path in entry.files:
            try:
                st = lstat(path)
            except OSError:  # gone although its folder's mtime says nothing changed: list it
                self._list(entry, stamp, now)
                return
            was = entries[name]
            if st.st_mtime_ns != was[2] or st.st_size != was[3] or st.st_ino != was[1]:
                if st.st_ino != was[1] or stat.S_ISDIR(st.st_mode):  # replaced: the listing tells how
                    self._list(entry, stamp, now)
                    return
                entries[name] = (False, st.st_ino, st.st_mtime_ns, st.st_size)
                self._deliver(entry.subscribers, Change(MODIFIED, path, False))
                if self.polled.get(entry.folder) is not entry:
                    return

    def _list(self, entry: _Polled, stamp: tuple[int, int], now: float) -> None:
        """List a polled folder again: its entries, and an lstat of each file a subscriber wants."""
        try:
            listing = _listing(entry)
        except OSError:
            self._lose_polled(entry)
            return
        before, (entry.entries, entry.files, entry.wanted) = entry.entries, listing
        entry.stamp, entry.listed_at = stamp, now
        for change in _diff(entry.folder, before, entry.entries):
            self._deliver(entry.subscribers, change)

    def _join(self, entry: _Polled, subscriber: Subscriber) -> None:
        """A subscriber joins a polled folder: the files only it wants are stat'ed from now on."""
        entry.subscribers[subscriber] = None
        for name, was in list(entry.entries.items()):
            path = os.path.join(entry.folder, name)
            if was != _UNWANTED or not _wants(subscriber, path):
                continue
            entry.wanted[name] = True
            with contextlib.suppress(OSError):
                st = os.lstat(path)
                entry.entries[name] = (False, st.st_ino, st.st_mtime_ns, st.st_size)
                entry.files.append((name, path))

    def _lose_polled(self, entry: _Polled) -> None:
        """A polled folder is gone: what was in it went with it, as inotify would tell."""
        if self.polled.get(entry.folder) is not entry:
            return
        del self.polled[entry.folder]
        self._poll_order = None
        for name, (is_dir, *_) in entry.entries.items():
            self._deliver(entry.subscribers, Change(DELETED, os.path.join(entry.folder, name), is_dir))
        for subscriber in entry.subscribers:
            self._tell(subscriber, "on_lost", entry.folder)

    def _close(self) -> None:
        source, self.source = self.source, None
        if source is not None:
            with contextlib.suppress(OSError):
                source.close()
        with contextlib.suppress(OSError):
            self._selector.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake_r = self._wake_w = -1


def _ident(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _stamp(folder: str) -> tuple[int, int]:
    """(inode, mtime_ns) of a folder; a root given as a symlink is followed."""
    st = os.stat(folder)
    return st.st_ino, st.st_mtime_ns


def _wants(subscriber: Subscriber, path: str) -> bool:
    wants: Callable[[str], bool] | None = getattr(subscriber, "wants", None)
    if wants is None:
        return True
    try:
        return wants(path)
    except Exception:  # a subscriber's bug must not hide a file from the others
        return True


def _listing(entry: _Polled) -> tuple[Snapshot, list[tuple[str, str]], dict[str, bool]]:
    """A polled folder's entries, never following a symlink and never opening anything but the
    folder: folders by their inode, the files a subscriber wants by an lstat, the rest by name."""
    out: Snapshot = {}
    files: list[tuple[str, str]] = []
    wanted: dict[str, bool] = {}
    with os.scandir(entry.folder) as found:
        for item in found:
            try:
                if item.is_dir(follow_symlinks=False):
                    out[item.name] = (True, item.stat(follow_symlinks=False).st_ino, 0, 0)
                    continue
                want = entry.wanted.get(item.name)
                if want is None:
                    want = any(_wants(s, item.path) for s in entry.subscribers)
                wanted[item.name] = want
                if not want:
                    out[item.name] = _UNWANTED
                    continue
                st = item.stat(follow_symlinks=False)
            except OSError:  # gone between listing and stat
                continue
            out[item.name] = (stat.S_ISDIR(st.st_mode), st.st_ino, st.st_mtime_ns, st.st_size)
            files.append((item.name, item.path))
    return out, files, wanted


def _diff(folder: str, before: Snapshot, now: Snapshot) -> list[Change]:
    changes = []
    for name, was in before.items():
        path = os.path.join(folder, name)
        new = now.get(name)
        if new is None:
            changes.append(Change(DELETED, path, was[0]))
        elif new[0] != was[0] or (new[0] and new[1] != was[1]):  # replaced by another kind, or another folder
            changes += [Change(DELETED, path, was[0]), Change(CREATED, path, new[0])]
        elif not new[0] and new != was:
            changes.append(Change(MODIFIED, path, False))
    changes += [Change(CREATED, os.path.join(folder, name), new[0]) for name, new in now.items() if name not in before]
    return changes
