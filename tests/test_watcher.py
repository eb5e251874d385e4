"""The watcher on a real file system: pruning, event kinds, debouncing into one batch."""

from __future__ import annotations

import collections
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from watchdog.observers.api import BaseObserver

from devrun.watch.debounce import Debouncer
from devrun.watch.patterns import Matcher
from devrun.watch.watcher import Batch, Watcher

Paths = tuple[str, tuple[str, ...]]


class Loop:
    """The runner's loop in miniature, on the test's thread: it sleeps until a watcher wakes
    it or the debouncer's next deadline, drains the watchers into the debouncer (every key with
    `delay`) and hands out the batches due. `get` is shaped like `queue.Queue.get`."""

    def __init__(self, delay: float = 0.05) -> None:
        self.delay = delay
        self.woken = threading.Event()
        self.debouncer = Debouncer()
        self.watchers: list[Watcher] = []
        self.ready: collections.deque[tuple[str, Batch]] = collections.deque()

    def watcher(self, on_notice: Callable[[str, str], None] | None = None,
                observer: BaseObserver | None = None) -> Watcher:
        w = Watcher(self.woken.set, on_notice, observer)
        self.watchers.append(w)
        return w

    def next(self, timeout: float = 10) -> tuple[str, Batch]:
        """The next batch due; queue.Empty when none is within `timeout`."""
        deadline = time.monotonic() + timeout
        while not self.ready:
            now = time.monotonic()
            self.ready.extend(self.debouncer.due(now))
            if self.ready:
                break
            if now >= deadline:
                raise queue.Empty
            due_at = self.debouncer.next_deadline()
            self.woken.wait(deadline - now if due_at is None else min(deadline, due_at) - now)
            self.woken.clear()  # before draining: a change reported after the drain wakes us again
            now = time.monotonic()
            for w in self.watchers:
                for key, path, code in w.drain():
                    self.debouncer.set_delay(key, self.delay)
                    self.debouncer.add(key, path, code, now)
        return self.ready.popleft()

    def get(self, timeout: float = 10) -> Paths:
        app, batch = self.next(timeout)
        return app, batch.paths


@pytest.fixture
def batches() -> Loop:
    return Loop()


@pytest.fixture
def start_watcher(batches: Loop) -> Iterator[Callable[..., Watcher]]:
    started: list[Watcher] = []

    def start(root: Path, watch: list[str] | None = None, ignore: list[str] | None = None,
              delay: float = 0.05, name: str = "app") -> Watcher:
        batches.delay = delay
        w = batches.watcher()
        w.add(name, Matcher(root, watch or ["**/*.py"], ignore or []))
        w.start()
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


def next_batch(batches: Loop, timeout: float = 10) -> Paths:
    return batches.get(timeout=timeout)


def assert_quiet(batches: Loop, seconds: float = 0.5) -> None:
    with pytest.raises(queue.Empty):
        print("unexpected batch:", batches.get(timeout=seconds))


def test_ignored_folders_are_never_watched(tmp_path: Path, start_watcher) -> None:
    for folder in ("src/pkg", "node_modules/a/b", ".venv/lib", ".git/objects", "src/__pycache__", "build/x"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / ".gitignore").write_text("build/\n")
    (tmp_path / ".git" / "HEAD").write_text("ref\n")
    w = start_watcher(tmp_path)
    watched = set(w.apps["app"].watches)
    assert watched == {str(tmp_path), str(tmp_path / "src"), str(tmp_path / "src" / "pkg")}


def test_a_burst_of_changes_gives_one_batch(tmp_path: Path, start_watcher, batches) -> None:
    start_watcher(tmp_path, delay=0.2)
    for i in range(200):
        (tmp_path / f"m{i}.py").write_text("x = 1\n")
    app, paths = next_batch(batches)
    assert app == "app"
    # Files written during the quiet period's last stretch may form a second batch only
    # if the stream lasted longer than MAX_WAIT; 200 small writes do not.
    assert len(set(paths)) == 200
    assert_quiet(batches)


def test_event_kinds_that_count(tmp_path: Path, start_watcher, batches) -> None:
    target = tmp_path / "app.py"
    target.write_text("a = 1\n")
    (tmp_path / "notes.txt").write_text("x")
    start_watcher(tmp_path)
    # Reading a file (open / close without write) must not count.
    target.read_text()
    (tmp_path / "notes.txt").write_text("y")  # not matched by the globs
    assert_quiet(batches)
    # Atomic save: write a temp file, rename it over the target.
    tmp = tmp_path / ".app.py.swp"
    tmp.write_text("a = 2\n")
    os.replace(tmp, target)
    assert next_batch(batches) == ("app", ("app.py",))
    target.unlink()
    assert next_batch(batches) == ("app", ("app.py",))
    target.write_text("a = 3\n")
    assert next_batch(batches) == ("app", ("app.py",))


def test_new_folders_are_watched_and_scanned(tmp_path: Path, start_watcher, batches) -> None:
    start_watcher(tmp_path)
    outside = tmp_path.parent / (tmp_path.name + "-outside")
    (outside / "pkg").mkdir(parents=True)
    (outside / "pkg" / "mod.py").write_text("x = 1\n")
    os.rename(outside / "pkg", tmp_path / "pkg")  # moved into the tree, with a file already in it
    assert next_batch(batches) == ("app", ("pkg/mod.py",))
    (tmp_path / "pkg" / "sub").mkdir()
    (tmp_path / "pkg" / "sub" / "deep.py").write_text("y = 1\n")
    _, paths = next_batch(batches)
    assert paths == ("pkg/sub/deep.py",)
    (tmp_path / "node_modules" / "x").mkdir(parents=True)
    (tmp_path / "node_modules" / "x" / "n.py").write_text("")
    assert_quiet(batches)


def test_ignore_patterns_and_gitignore(tmp_path: Path, start_watcher, batches) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / ".gitignore").write_text("*.gen.py\n")
    (tmp_path / "tests").mkdir()
    start_watcher(tmp_path, ignore=["tests/**"])
    (tmp_path / "tests" / "test_x.py").write_text("")
    (tmp_path / "x.gen.py").write_text("")
    (tmp_path / "x.pyc").write_text("")
    assert_quiet(batches)
    (tmp_path / "real.py").write_text("")
    assert next_batch(batches) == ("app", ("real.py",))


def test_watch_root_outside_cwd(tmp_path: Path, start_watcher, batches) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "shared" / "lib").mkdir(parents=True)
    (tmp_path / "other").mkdir()
    w = start_watcher(tmp_path / "app", watch=["**/*.py", "../shared/**/*.py"])
    assert str(tmp_path / "other") not in w.apps["app"].watches
    (tmp_path / "shared" / "lib" / "util.py").write_text("")
    assert next_batch(batches) == ("app", ("../shared/lib/util.py",))
    (tmp_path / "other" / "x.py").write_text("")
    assert_quiet(batches)


def test_out_of_inotify_watches_falls_back_to_polling(tmp_path: Path, batches) -> None:
    import errno

    from watchdog.observers import Observer

    class Exhausted(Observer):  # type: ignore[misc, valid-type]
        def schedule(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            raise OSError(errno.ENOSPC, "inotify watch limit reached")

    notices: list[tuple[str, str]] = []
    w = batches.watcher(lambda app, text: notices.append((app, text)), observer=Exhausted())
    try:
        w.add("app", Matcher(tmp_path, ["**/*.py"]))
        w.start()
        assert notices and "max_user_watches" in notices[0][1]
        (tmp_path / "late.py").write_text("x")
        assert next_batch(batches) == ("app", ("late.py",))
    finally:
        w.stop()


def test_a_failing_event_handler_never_stops_the_watcher(tmp_path: Path, batches) -> None:
    raised = threading.Event()

    class Flaky(Matcher):
        calls = 0

        def matches(self, path):  # type: ignore[no-untyped-def]
            Flaky.calls += 1
            if Flaky.calls == 1:
                raised.set()
                raise RuntimeError("boom in a handler")
            return super().matches(path)

    w = batches.watcher()
    try:
        w.add("app", Flaky(tmp_path, ["**/*.py"]))
        w.start()
        (tmp_path / "first.py").write_text("x")  # this event's handling raises
        assert raised.wait(10)  # events are handled in order: second.py's comes after it
        (tmp_path / "second.py").write_text("x")
        app, paths = next_batch(batches)
        assert "second.py" in paths
    finally:
        w.stop()


def test_live_reload_files_come_apart_from_code_and_share_the_ignores(tmp_path: Path, batches) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "node_modules" / "templates").mkdir(parents=True)
    w = batches.watcher()
    w.add("app", Matcher(tmp_path, ["**/*.py"]), live=Matcher(tmp_path, ["**/templates/**"]))
    w.start()
    try:
        assert str(tmp_path / "node_modules") not in w.apps["app"].watches  # pruned for both
        (tmp_path / "templates" / "page.html").write_text("x")
        app, batch = batches.next()
        assert isinstance(batch, Batch)
        assert (app, batch.code, batch.live) == ("app", (), ("templates/page.html",))
        (tmp_path / "views.py").write_text("x")
        (tmp_path / "templates" / "page.html").write_text("y")
        _, batch = batches.next()
        assert batch.code == ("views.py",) and batch.live == ("templates/page.html",)
    finally:
        w.stop()


def test_the_config_file_is_watched_alone_and_a_removed_app_is_not_watched(tmp_path: Path, batches) -> None:
    (tmp_path / "devrun.yaml").write_text("apps: {}\n")
    w = batches.watcher()
    w.add("app", Matcher(tmp_path, ["**/*.py"]))
    w.watch_file("config", str(tmp_path / "devrun.yaml"))
    w.start()
    try:
        (tmp_path / "other.yaml").write_text("x")
        tmp = tmp_path / "devrun.yaml.tmp"  # an editor's atomic save
        tmp.write_text("apps: {a: 1}\n")
        os.replace(tmp, tmp_path / "devrun.yaml")
        assert next_batch(batches) == ("config", ("devrun.yaml",))
        w.remove("app")
        assert "app" not in w.apps
        (tmp_path / "app.py").write_text("x")
        (tmp_path / "devrun.yaml").write_text("apps: {}\n")
        assert next_batch(batches) == ("config", ("devrun.yaml",))  # the app's change never came
        assert_quiet(batches)
    finally:
        w.stop()
