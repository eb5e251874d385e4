"""The watcher under faults, on a real file system: lock order (F1), one thread for every
folder (F16), symlink loops and special files (C40), bounded caches (S7), and OS errors from
inotify (real limits inside a user namespace, a folder without permissions, a queue overflow)."""

from __future__ import annotations

import faulthandler
import inspect
import json
import os
import queue
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from watchdog.observers.api import BaseObserver

from devrun.watch import patterns
from devrun.watch.patterns import Matcher
from devrun.watch.watcher import Watcher
from tests.test_watcher import Loop

Got = Loop  # shaped like a queue of (app, paths): the watcher's batches, debounced
LINUX = sys.platform.startswith("linux")


def make_tree(root: Path, *shape: int) -> int:
    """Folders `root/p0/q0/...` with the given fan-out per level; returns how many (root included)."""
    count, level = 1, [root]
    for depth, fan in enumerate(shape):
        level = [parent / f"{'pqrs'[depth]}{i}" for parent in level for i in range(fan)]
        for folder in level:
            folder.mkdir(parents=True, exist_ok=True)
        count += len(level)
    return count


def wait_for_path(got: Got, app: str, path: str, timeout: float = 10) -> tuple[str, ...]:
    deadline = time.monotonic() + timeout
    seen = []
    while True:
        try:
            name, paths = got.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"no batch of {app} with {path}; got {seen}") from None
        seen.append((name, paths))
        if name == app and path in paths:
            return paths


def assert_quiet(got: Got, seconds: float = 0.5) -> None:
    with pytest.raises(queue.Empty):
        print("unexpected batch:", got.get(timeout=seconds))


def inotify_fds() -> set[int]:
    out = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == "anon_inode:inotify":
                out.add(int(name))
        except OSError:
            continue
    return out


def kernel_watches(fds: set[int]) -> int:
    """inotify watches the kernel holds for these fds (one `inotify wd:` line each in fdinfo)."""
    total = 0
    for fd in fds:
        with open(f"/proc/self/fdinfo/{fd}") as f:
            total += sum(line.startswith("inotify wd:") for line in f)
    return total


def watch_count(w: Watcher, name: str) -> int:
    return w.folders.call(lambda: len(w.apps[name].watches))


@pytest.fixture
def watcher() -> Iterator[Callable[..., tuple[Watcher, Got, list[tuple[str, str]]]]]:
    started: list[Watcher] = []

    def make(observer: BaseObserver | None = None) -> tuple[Watcher, Got, list[tuple[str, str]]]:
        got = Loop()
        notices: list[tuple[str, str]] = []
        w = got.watcher(lambda app, text: notices.append((app, text)), observer)
        started.append(w)
        return w, got, notices

    yield make
    for w in started:
        w.stop()


def hang_report(what: str) -> str:
    faulthandler.dump_traceback(all_threads=True)
    return f"{what} did not finish: deadlock or hang (thread stacks on stderr)"


def observer_kinds() -> list[str]:
    return ["default", "watchdog"]


def make_observer(kind: str) -> object:
    if kind == "default":
        return None
    from watchdog.observers import Observer
    from watchdog.observers.api import BaseObserver

    if sys.platform.startswith("linux") and "follow_symlink" not in inspect.signature(BaseObserver.schedule).parameters:
        # watchdog 6 (Python 3.10's) gives each watched folder an inotify instance of its own, and
        # Linux allows 128 (why devrun has its own inotify source): its polling observer stands in,
        # with the same observer locks this is about.
        from watchdog.observers.polling import PollingObserver

        return PollingObserver(timeout=0.2)
    return Observer()


# -- F1: no lock-order deadlock ---------------------------------------------------------------


@pytest.mark.parametrize("kind", observer_kinds())
def test_adding_and_removing_an_app_while_another_tree_changes_never_deadlocks(tmp_path: Path, kind: str) -> None:
    """The main thread adds and removes app b (331 folders) while folders come and go in app
    a's tree. The old watcher deadlocked in the first rounds: main held watcher.lock and waited
    for the observer's lock inside `schedule`; the observer thread held its lock and waited for
    watcher.lock in the handler of a folder event."""
    a, b = tmp_path / "a", tmp_path / "b"
    (a / "churn").mkdir(parents=True)
    make_tree(b, 30, 10)
    got = Loop()
    w = got.watcher(observer=make_observer(kind))  # type: ignore[arg-type]
    w.add("a", Matcher(a, ["**/*.py"]))
    w.start()
    stop = threading.Event()

    def churn() -> None:
        i = 0
        while not stop.is_set():
            folder = a / "churn" / f"d{i % 7}"
            folder.mkdir()
            folder.rmdir()
            i += 1

    def flip() -> None:
        for _ in range(20 if kind == "default" else 4):
            w.add("b", Matcher(b, ["**/*.py"]))
            w.remove("b")

    churner = threading.Thread(target=churn, daemon=True)
    flipper = threading.Thread(target=flip, daemon=True)
    churner.start()
    flipper.start()
    flipper.join(timeout=60)
    stop.set()
    churner.join(timeout=10)
    if flipper.is_alive():
        pytest.fail(hang_report("adding/removing app b"))  # w.stop() would hang as well: leave it
    try:
        w.add("b", Matcher(b, ["**/*.py"]))
        (b / "p3" / "q4" / "x.py").write_text("x")
        wait_for_path(got, "b", "p3/q4/x.py")
        (a / "churn" / "y.py").write_text("x")
        wait_for_path(got, "a", "churn/y.py")
    finally:
        w.stop()


# -- F16: one thread, one fd -----------------------------------------------------------------


@pytest.mark.skipif(not LINUX, reason="inotify")
def test_one_thread_and_one_inotify_fd_watch_every_folder(tmp_path: Path, watcher) -> None:
    count = make_tree(tmp_path / "app", 6, 7, 7)
    (tmp_path / "devrun.yaml").write_text("apps: {}\n")
    threads, fds = threading.active_count(), inotify_fds()
    w, got, _ = watcher()
    w.add("app", Matcher(tmp_path / "app", ["**/*.py"]))
    w.add("same", Matcher(tmp_path / "app", ["**/*.txt"]))  # the same folders again
    w.watch_file("config", str(tmp_path / "devrun.yaml"))
    w.start()
    assert count >= 300 and watch_count(w, "app") == watch_count(w, "same") == count
    assert threading.active_count() - threads <= 1  # the reader: debouncing runs in the loop's thread
    ours = inotify_fds() - fds
    assert len(ours) == 1
    assert kernel_watches(ours) == count + 1  # each folder once for both apps, plus the config's folder
    (tmp_path / "app" / "p5" / "q6" / "r6" / "deep.py").write_text("x")
    assert wait_for_path(got, "app", "p5/q6/r6/deep.py") == ("p5/q6/r6/deep.py",)
    (tmp_path / "app" / "n1" / "n2" / "n3").mkdir(parents=True)
    (tmp_path / "app" / "n1" / "n2" / "n3" / "new.py").write_text("x")
    wait_for_path(got, "app", "n1/n2/n3/new.py")
    (tmp_path / "app" / "n1" / "n2" / "n3" / "note.txt").write_text("x")
    wait_for_path(got, "same", "n1/n2/n3/note.txt")
    assert threading.active_count() - threads <= 1
    w.remove("app")
    w.remove("same")
    assert kernel_watches(ours) == 1  # only devrun.yaml's folder: removing an app frees its watches


# -- watchdog's log lines ---------------------------------------------------------------------

LOG_DRIVER = """
import logging, sys
from devrun.watch.watcher import Watcher
notices = []
w = Watcher(lambda: None, lambda app, text: notices.append(text))
logging.getLogger("watchdog.observers.inotify").error(
    "InotifyEmitter.queue_events() called when the thread is inactive")
w.stop()
print(notices)
"""


@pytest.mark.process
def test_watchdog_log_records_become_notices_never_bare_lines(tmp_path: Path) -> None:
    """devrun configures no logging: a watchdog record used to reach Python's last-resort
    handler and print as a bare line among the apps' output. (A subprocess: pytest's own
    logging handlers would hide the last resort here.)"""
    done = subprocess.run([sys.executable, "-c", LOG_DRIVER], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "file watcher: InotifyEmitter.queue_events() called when the thread is inactive" in done.stdout


# -- C40: symlink loops and special files -----------------------------------------------------


def test_symlink_loops_and_special_files_are_never_followed_or_opened(tmp_path: Path, watcher) -> None:
    (tmp_path / ".git").mkdir()
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    os.symlink("..", src / "loop")
    os.symlink(".", src / "self")
    os.symlink("/dev/stdout", src / "out.py")
    os.mkfifo(src / "pipe.py")
    os.mkfifo(src / ".gitignore")  # a FIFO where git's ignore file would be: opening it blocks
    os.symlink(src / "pipe.py", src / "pkg" / "to_fifo.py")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(src / "sock.py"))
    w, got, _ = watcher()
    cpu = time.process_time()
    setup = threading.Thread(target=lambda: (w.add("app", Matcher(tmp_path, ["**/*.py"])), w.start()),
                             daemon=True)
    setup.start()
    setup.join(timeout=20)
    try:
        if setup.is_alive():
            pytest.fail(hang_report("watching the tree"))
        assert set(w.apps["app"].watches) == {str(tmp_path), str(src), str(src / "pkg")}
        (src / "pkg" / "real.py").write_text("x")
        assert wait_for_path(got, "app", "src/pkg/real.py") == ("src/pkg/real.py",)
        # A folder moved in with a FIFO and a loop inside is scanned without opening or following them.
        outside = tmp_path.parent / (tmp_path.name + "-outside")
        (outside / "newpkg").mkdir(parents=True)
        os.mkfifo(outside / "newpkg" / "fifo.py")
        os.symlink("..", outside / "newpkg" / "up")
        os.rename(outside / "newpkg", src / "newpkg")
        wait_for_path(got, "app", "src/newpkg/fifo.py")
        assert str(src / "newpkg" / "up") not in w.apps["app"].watches
        os.mkfifo(src / "later.py")  # a FIFO created while watching is a change, never opened
        wait_for_path(got, "app", "src/later.py")
        time.sleep(1)  # a measurement window, not a synchronisation
        assert time.process_time() - cpu < 1.0  # no walk in circles
    finally:
        sock.close()


def test_a_root_given_as_a_symlink_is_watched(tmp_path: Path, watcher) -> None:
    """Old watcher: the root symlink itself got the watch (IN_DONT_FOLLOW), so files in the
    root never reported."""
    (tmp_path / "real" / "sub").mkdir(parents=True)
    os.symlink(tmp_path / "real", tmp_path / "link")
    w, got, _ = watcher()
    w.add("app", Matcher(tmp_path / "link", ["**/*.py"]))
    w.start()
    (tmp_path / "real" / "app.py").write_text("x")
    assert wait_for_path(got, "app", "app.py") == ("app.py",)
    (tmp_path / "real" / "sub" / "mod.py").write_text("x")
    wait_for_path(got, "app", "sub/mod.py")


# -- S7: bounded caches ----------------------------------------------------------------------


def test_the_per_folder_caches_of_a_matcher_are_bounded_and_stay_right(tmp_path: Path) -> None:
    size = getattr(patterns, "CACHE_SIZE", 4096)
    (tmp_path / ".git").mkdir()
    (tmp_path / ".gitignore").write_text("*.gen.py\n")
    (tmp_path / "uploads" / "0").mkdir(parents=True)
    (tmp_path / "uploads" / "0" / ".gitignore").write_text("local.py\n")
    m = Matcher(tmp_path, ["**/*.py"])
    assert not m.matches(tmp_path / "uploads" / "0" / "local.py")
    for i in range(2 * size + 10):  # unique upload folders in a long run
        assert m.matches(tmp_path / "uploads" / f"u{i}" / "x.py")
    assert len(m._tops) <= size and len(m._gitignores) <= size
    # Evicted entries are read again, with the same answers.
    assert not m.matches(tmp_path / "uploads" / "0" / "local.py")
    assert not m.matches(tmp_path / "uploads" / "u7" / "y.gen.py")
    assert m.matches(tmp_path / "uploads" / "u7" / "local.py")


# -- OS errors from the inotify layer -----------------------------------------------------------


def test_folders_that_vanish_right_after_creation_cost_nothing(tmp_path: Path, watcher) -> None:
    (tmp_path / "tmp").mkdir()
    w, got, notices = watcher()
    w.add("app", Matcher(tmp_path, ["**/*.py"]))
    w.start()
    for i in range(300):
        leaf = tmp_path / "tmp" / f"x{i}" / "y" / "z"
        leaf.mkdir(parents=True)
        (leaf / "f.py").write_text("")
        shutil.rmtree(tmp_path / "tmp" / f"x{i}")
    (tmp_path / "after.py").write_text("x")
    wait_for_path(got, "app", "after.py")  # events come in order: the churn's are all handled
    assert set(w.apps["app"].watches) == {str(tmp_path), str(tmp_path / "tmp")}
    assert notices == []


def test_moved_and_deleted_folders_lose_their_watches(tmp_path: Path, watcher) -> None:
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "sub" / "m.py").write_text("x")
    w, got, _ = watcher()
    w.add("app", Matcher(tmp_path, ["**/*.py"]))
    w.start()
    os.rename(tmp_path / "pkg", tmp_path / "lib")
    wait_for_path(got, "app", "lib/sub/m.py")
    assert set(w.apps["app"].watches) == {str(tmp_path), str(tmp_path / "lib"), str(tmp_path / "lib" / "sub")}
    (tmp_path / "lib" / "sub" / "n.py").write_text("x")
    assert wait_for_path(got, "app", "lib/sub/n.py") == ("lib/sub/n.py",)
    shutil.rmtree(tmp_path / "lib")
    wait_for_path(got, "app", "lib/sub/n.py")
    (tmp_path / "last.py").write_text("x")
    wait_for_path(got, "app", "last.py")
    assert set(w.apps["app"].watches) == {str(tmp_path)}


def test_apps_sharing_folders_and_the_config_file(tmp_path: Path, watcher) -> None:
    (tmp_path / "devrun.yaml").write_text("apps: {}\n")
    w, got, _ = watcher()
    w.add("one", Matcher(tmp_path, ["**/*.py"]))
    w.add("two", Matcher(tmp_path, ["**/*.txt"]))
    w.watch_file("config", str(tmp_path / "devrun.yaml"))
    w.start()
    (tmp_path / "a.py").write_text("x")
    assert wait_for_path(got, "one", "a.py") == ("a.py",)
    w.remove("one")
    (tmp_path / "b.py").write_text("x")
    (tmp_path / "b.txt").write_text("x")
    assert wait_for_path(got, "two", "b.txt") == ("b.txt",)
    (tmp_path / "devrun.yaml").write_text("apps: {x: 1}\n")
    assert wait_for_path(got, "config", "devrun.yaml") == ("devrun.yaml",)
    assert_quiet(got)  # nothing for the removed app


@pytest.mark.skipif(not LINUX, reason="inotify")
def test_a_queue_overflow_rescans_instead_of_missing_a_save(tmp_path: Path, watcher) -> None:
    """The reader thread stalls (a slow handler) while more events than the kernel queues
    arrive: the save of saved.py is among those the kernel drops. It is reported anyway."""
    with open("/proc/sys/fs/inotify/max_queued_events") as f:
        limit = int(f.read())
    if limit > 200_000:
        pytest.skip(f"max_queued_events={limit}: too many events to overflow it quickly")
    gate, stalled = threading.Event(), threading.Event()

    class Stalling(Matcher):
        def matches(self, path):  # type: ignore[no-untyped-def]
            if not gate.is_set():
                stalled.set()
                gate.wait(30)
            return super().matches(path)

    w, got, notices = watcher()
    w.add("app", Stalling(tmp_path, ["**/*.py"]))
    w.start()
    try:
        (tmp_path / "first.py").write_text("x")
        assert stalled.wait(10)
        fds = [os.open(tmp_path / name, os.O_WRONLY | os.O_CREAT) for name in ("a.txt", "b.txt")]
        for i in range(limit + 1000):  # alternating files: consecutive events never coalesce
            os.write(fds[i % 2], b"x")
        for fd in fds:
            os.close(fd)
        (tmp_path / "saved.py").write_text("x")
    finally:
        gate.set()
    wait_for_path(got, "app", "saved.py", timeout=30)
    assert any("overflow" in text for _, text in notices)
    (tmp_path / "after.py").write_text("x")  # and the watcher goes on
    wait_for_path(got, "app", "after.py")


# Real limits: inside a user namespace of its own, a process may lower its inotify limits
# (/proc/sys/user/max_inotify_*), so the kernel itself answers ENOSPC or EMFILE.
DRIVER = textwrap.dedent("""
    import json, sys, threading, time
    from devrun.watch.debounce import Debouncer
    from devrun.watch.patterns import Matcher
    from devrun.watch.watcher import Watcher
    def out(*parts):
        print(json.dumps(parts), flush=True)
    woken, done = threading.Event(), threading.Event()
    w = Watcher(woken.set, lambda app, text: out("notice", app, text))
    debouncer = Debouncer()
    debouncer.set_delay("app", 0.05)
    w.add("app", Matcher(sys.argv[1], ["**/*.py"]))
    w.start()
    out("ready")
    def read_stdin():
        sys.stdin.readline()
        done.set()
        woken.set()
    threading.Thread(target=read_stdin, daemon=True).start()
    while not done.is_set():  # the runner's loop in miniature
        due_at = debouncer.next_deadline()
        woken.wait(None if due_at is None else max(0.0, due_at - time.monotonic()))
        woken.clear()  # before draining: a change reported after the drain wakes it again
        now = time.monotonic()
        for key, path, code in w.drain():
            debouncer.add(key, path, code, now)
        for app, batch in debouncer.due(time.monotonic()):
            out("batch", app, list(batch.paths))
    w.stop()
""")


class Driver:
    """A watcher in a child process (so it can run with lowered limits or without capabilities)."""

    def __init__(self, prefix: list[str], root: Path):
        self.proc = subprocess.Popen([*prefix, sys.executable, "-c", DRIVER, str(root)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[list] = queue.Queue()
        self.notices: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))
        self.lines.put(["exit"])

    def wait(self, kind: str, path: str | None = None, timeout: float = 15) -> list:
        deadline = time.monotonic() + timeout
        while True:
            try:
                item = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {kind} {path or ''}; notices: {self.notices}") from None
            if item[0] == "notice":
                self.notices.append(item[2])
            if item[0] == "exit":
                assert self.proc.stderr is not None
                raise AssertionError(f"the watcher exited ({self.proc.wait()}): {self.proc.stderr.read()[-2000:]}")
            if item[0] == kind and (path is None or path in item[2]):
                return item

    def close(self) -> None:
        with_stdin = self.proc.stdin
        if with_stdin is not None and self.proc.poll() is None:
            with_stdin.write("\n")
            with_stdin.flush()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def in_namespace(setting: str, value: int) -> list[str]:
    script = f'echo {value} > /proc/sys/user/{setting} && exec "$0" "$@"'
    probe = subprocess.run(["unshare", "-U", "-r", "sh", "-c", script, "true"], capture_output=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"no user namespace with a lowered {setting} here: {probe.stderr.decode().strip()}")
    return ["unshare", "-U", "-r", "sh", "-c", script]


@pytest.fixture
def driver() -> Iterator[Callable[[list[str], Path], Driver]]:
    started: list[Driver] = []

    def start(prefix: list[str], root: Path) -> Driver:
        d = Driver(prefix, root)
        started.append(d)
        return d

    yield start
    for d in started:
        d.close()


@pytest.mark.process
@pytest.mark.skipif(not LINUX or shutil.which("unshare") is None, reason="Linux user namespaces")
def test_out_of_inotify_watches_for_real_polls_the_rest(tmp_path: Path, driver) -> None:
    """With 10 watches allowed and 61 folders: the kernel answers ENOSPC. The old watcher's
    fallback never ran: `start()` raised OSError(28) from inside watchdog and took the runner down."""
    make_tree(tmp_path, 30, 1)
    d = driver(in_namespace("max_inotify_watches", 10), tmp_path)
    d.wait("ready")
    assert any("max_user_watches" in text for text in d.notices)
    (tmp_path / "top.py").write_text("x")  # a folder the kernel watches
    d.wait("batch", "top.py")
    (tmp_path / "p29" / "q0" / "deep.py").write_text("x")  # a polled folder
    d.wait("batch", "p29/q0/deep.py")
    (tmp_path / "p29" / "new").mkdir()  # a new folder, polled too
    (tmp_path / "p29" / "new" / "n.py").write_text("x")
    d.wait("batch", "p29/new/n.py")


@pytest.mark.process
@pytest.mark.skipif(not LINUX or shutil.which("unshare") is None, reason="Linux user namespaces")
def test_no_inotify_instance_left_polls_everything(tmp_path: Path, driver) -> None:
    """The old watcher raised OSError(24) from `Watcher()` (watchdog's InotifyObserver)."""
    make_tree(tmp_path, 2, 2)
    d = driver(in_namespace("max_inotify_instances", 0), tmp_path)
    d.wait("ready")
    assert any("instance limit" in text and "polling" in text for text in d.notices)
    (tmp_path / "p1" / "q1" / "x.py").write_text("x")
    d.wait("batch", "p1/q1/x.py")


@pytest.mark.process
@pytest.mark.skipif(not LINUX or shutil.which("setpriv") is None, reason="setpriv")
def test_folders_without_permission_are_skipped_quietly(tmp_path: Path, driver) -> None:
    """As root without capabilities (setpriv), a mode-000 folder gives EACCES for real."""
    (tmp_path / "open").mkdir()
    (tmp_path / "locked" / "inner").mkdir(parents=True)
    (tmp_path / "locked").chmod(0)
    try:
        d = driver(["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--"], tmp_path)
        d.wait("ready")
        (tmp_path / "later").mkdir(mode=0)  # a new folder it cannot read
        (tmp_path / "later").chmod(0)
        (tmp_path / "open" / "x.py").write_text("x")
        d.wait("batch", "open/x.py")
        assert d.notices == []
    finally:
        for name in ("locked", "later"):
            if (tmp_path / name).exists():
                (tmp_path / name).chmod(0o700)


# -- the watchdog path (other systems) --------------------------------------------------------


def test_the_watchdog_observer_path_keeps_working(tmp_path: Path, watcher) -> None:
    """Off Linux the events come from watchdog's Observer; here it is forced on Linux."""
    from watchdog.observers import Observer

    (tmp_path / "node_modules" / "x").mkdir(parents=True)
    w, got, _ = watcher(observer=Observer())
    w.add("app", Matcher(tmp_path, ["**/*.py"]))
    w.start()
    assert set(w.apps["app"].watches) == {str(tmp_path)}
    outside = tmp_path.parent / (tmp_path.name + "-outside")
    (outside / "pkg").mkdir(parents=True)
    (outside / "pkg" / "mod.py").write_text("x")
    os.rename(outside / "pkg", tmp_path / "pkg")
    assert wait_for_path(got, "app", "pkg/mod.py") == ("pkg/mod.py",)
    tmp = tmp_path / "pkg" / ".mod.py.swp"
    tmp.write_text("y")
    os.replace(tmp, tmp_path / "pkg" / "mod.py")  # atomic save
    wait_for_path(got, "app", "pkg/mod.py")
    shutil.rmtree(tmp_path / "pkg")
    wait_for_path(got, "app", "pkg/mod.py")
    (tmp_path / "last.py").write_text("x")
    wait_for_path(got, "app", "last.py")
    assert set(w.apps["app"].watches) == {str(tmp_path)}
    w.remove("app")
    (tmp_path / "gone.py").write_text("x")
    assert_quiet(got)
