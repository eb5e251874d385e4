"""Polled trees on a real file system: the choice per root (from a mountinfo fixture that puts
tmp_path on the file system named), `watch_mode` both ways, and what a poll sees."""

from __future__ import annotations

import os
import queue
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devrun.watch.patterns import Matcher
from devrun.watch.watcher import Watcher
from tests.test_watcher import Loop

Notices = list[tuple[str, str]]
Make = Callable[[str], tuple[Watcher, Loop, Notices]]
ROOT = "27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"


def wait_for_path(loop: Loop, app: str, path: str, timeout: float = 10) -> tuple[str, ...]:
    """The paths of the first batch of `app` that has `path`."""
    deadline = time.monotonic() + timeout
    seen: list[tuple[str, tuple[str, ...]]] = []
    while True:
        try:
            name, paths = loop.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"no batch of {app} with {path}; got {seen}") from None
        seen.append((name, paths))
        if name == app and path in paths:
            return paths


def assert_quiet(loop: Loop, seconds: float) -> None:
    with pytest.raises(queue.Empty):
        print("unexpected batch:", loop.get(timeout=seconds))


def mounted_as(folder: Path, fstype: str) -> str:
    """A mount table in which `folder` is a mount point of this type."""
    point = os.path.realpath(folder).replace("\\", "\\134").replace(" ", "\\040")
    return ROOT + f"99 27 0:99 / {point} rw,relatime shared:9 - {fstype} share rw\n"


@pytest.fixture
def make() -> Iterator[Make]:
    started: list[Watcher] = []

    def make(mountinfo: str) -> tuple[Watcher, Loop, Notices]:
        loop = Loop()
        notices: Notices = []
        w = Watcher(loop.woken.set, lambda app, text: notices.append((app, text)), mountinfo=lambda: mountinfo)
        loop.watchers.append(w)
        started.append(w)
        return w, loop, notices

    yield make
    for w in started:
        w.stop()


def how_watched(w: Watcher) -> tuple[set[str], set[str]]:
    """(polled folders, folders with a native watch), read on the watch thread."""
    return w.folders.call(lambda: (set(w.folders.polled), set(w.folders.native)))


def age(*folders: Path) -> None:
    """Folders last changed a minute ago: no listing of them is racy, so none is repeated."""
    old = time.time() - 60
    for folder in folders:
        os.utime(folder, (old, old))


def tree(root: Path) -> set[str]:
    (root / "pkg").mkdir()
    (root / "node_modules" / "x").mkdir(parents=True)
    (root / "app.py").write_text("a = 1\n")
    (root / "pkg" / "mod.py").write_text("m = 1\n")
    return {str(root), str(root / "pkg")}


def test_a_root_on_9p_is_polled_and_the_reason_said_once(tmp_path: Path, make: Make) -> None:
    folders = tree(tmp_path)
    w, loop, notices = make(mounted_as(tmp_path, "9p"))
    w.add("app", Matcher(tmp_path, ["**/*.py"]))
    w.start()
    polled, native = how_watched(w)
    assert set(w.apps["app"].watches) == folders  # still pruned: node_modules is neither polled nor watched
    assert polled == folders and not native
    said = [("app", f"polling {tmp_path} (9p: inotify gets no events there); set watch_mode: events to override")]
    assert notices == said
    w.add("app", Matcher(tmp_path, ["**/*.py"]))  # the app again (its config was edited): nothing new to say
    assert notices == said
    (tmp_path / "pkg" / "mod.py").write_text("m = 22\n")
    wait_for_path(loop, "app", "pkg/mod.py")


@pytest.mark.parametrize("fstype", ["virtiofs", "fuse.sshfs", "nfs4", "cifs"])
def test_other_shares_are_polled_too(tmp_path: Path, make: Make, fstype: str) -> None:
    folders = tree(tmp_path)
    w, _, notices = make(mounted_as(tmp_path, fstype))
    w.add("app", Matcher(tmp_path, ["**/*.py"]))
    w.start()
    assert how_watched(w)[0] == folders
    assert [text.split(" (")[1].split(":")[0] for _, text in notices] == [fstype]


def test_watch_mode_events_overrides_a_share(tmp_path: Path, make: Make) -> None:
    folders = tree(tmp_path)
    w, loop, notices = make(mounted_as(tmp_path, "9p"))
    w.add("app", Matcher(tmp_path, ["**/*.py"]), watch_mode="events")
    w.start()
    polled, native = how_watched(w)
    assert not polled and native == folders
    assert notices == []
    (tmp_path / "app.py").write_text("a = 2\n")
    wait_for_path(loop, "app", "app.py")


@pytest.mark.parametrize("fstype", ["ext4", "overlay", "tmpfs"])
def test_auto_uses_file_events_on_a_local_file_system(tmp_path: Path, make: Make, fstype: str) -> None:
    folders = tree(tmp_path)
    w, _, notices = make(mounted_as(tmp_path, fstype))
    w.add("app", Matcher(tmp_path, ["**/*.py"]))
    w.start()
    assert how_watched(w) == (set(), folders)
    assert notices == []


def test_watch_mode_poll_overrides_a_local_file_system(tmp_path: Path, make: Make) -> None:
    folders = tree(tmp_path)
    w, _, notices = make(mounted_as(tmp_path, "ext4"))
    w.add("app", Matcher(tmp_path, ["**/*.py"]), watch_mode="poll")
    w.start()
    assert how_watched(w) == (folders, set())
    assert notices == [("app", f"polling {tmp_path} (watch_mode: poll)")]


def test_a_polled_tree_sees_saves_and_new_and_deleted_folders(tmp_path: Path, make: Make) -> None:
    tree(tmp_path)
    w, loop, notices = make(mounted_as(tmp_path, "ext4"))
    w.add("app", Matcher(tmp_path, ["**/*.py"]), watch_mode="poll")
    w.start()
    target = tmp_path / "app.py"
    inode = target.stat().st_ino
    target.write_text("a = 22\n")  # in place: only the file's mtime and size change
    assert target.stat().st_ino == inode
    assert wait_for_path(loop, "app", "app.py") == ("app.py",)
    temp = tmp_path / ".app.py.tmp"
    temp.write_text("a = 333\n")
    os.replace(temp, target)  # an atomic save: a new inode, the folder's mtime changes
    assert wait_for_path(loop, "app", "app.py") == ("app.py",)

    (tmp_path / "lib" / "sub").mkdir(parents=True)
    (tmp_path / "lib" / "sub" / "deep.py").write_text("d = 1\n")
    wait_for_path(loop, "app", "lib/sub/deep.py")
    polled, native = how_watched(w)
    assert {str(tmp_path / "lib"), str(tmp_path / "lib" / "sub")} <= polled and not native
    (tmp_path / "lib" / "sub" / "deep.py").write_text("d = 22\n")  # the new folder is polled itself
    wait_for_path(loop, "app", "lib/sub/deep.py")
    (tmp_path / "node_modules" / "y").mkdir()
    (tmp_path / "node_modules" / "y" / "n.py").write_text("")
    assert_quiet(loop, 1.2)  # two polls: an ignored folder is neither polled nor reported

    shutil.rmtree(tmp_path / "lib")
    wait_for_path(loop, "app", "lib/sub/deep.py")  # its files are reported gone, as inotify would
    (tmp_path / "last.py").write_text("")
    wait_for_path(loop, "app", "last.py")
    assert how_watched(w)[0] == {str(tmp_path), str(tmp_path / "pkg")}
    assert set(w.apps["app"].watches) == {str(tmp_path), str(tmp_path / "pkg")}
    assert [text for _, text in notices] == [f"polling {tmp_path} (watch_mode: poll)"]


def test_an_idle_poll_lists_no_folder_and_stats_only_wanted_files(tmp_path: Path, make: Make) -> None:
    tree(tmp_path)
    (tmp_path / "notes.txt").write_text("not watched\n")
    (tmp_path / ".gitignore").write_text("*.gen.py\n")
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "page.html").write_text("<p>\n")
    age(tmp_path, tmp_path / "pkg", tmp_path / "templates")
    w, loop, _ = make(mounted_as(tmp_path, "ext4"))
    w.add("app", Matcher(tmp_path, ["**/*.py"]), Matcher(tmp_path, ["**/templates/**"]), watch_mode="poll")
    w.start()

    def state() -> dict[str, tuple[float, list[str]]]:
        return w.folders.call(lambda: {f: (e.listed_at, sorted(n for n, _ in e.files))
                                       for f, e in w.folders.polled.items()})

    before = state()
    assert before[str(tmp_path)][1] == [".gitignore", "app.py"]  # notes.txt: no glob wants it, never stat'ed
    assert before[str(tmp_path / "templates")][1] == ["page.html"]
    for _ in range(3):
        w.folders.call(w.folders.settle)  # a poll, now
    assert state() == before  # nothing changed: no folder was listed again
    (tmp_path / "templates" / "page.html").write_text("<p>changed</p>\n")
    _, batch = loop.next()
    assert batch.live == ("templates/page.html",)
    assert state() == before  # seen by the file's own lstat


def test_a_change_within_the_folders_mtime_tick_is_seen(tmp_path: Path, make: Make) -> None:
    age(tmp_path)
    w, loop, _ = make(mounted_as(tmp_path, "ext4"))
    w.add("app", Matcher(tmp_path, ["**/*.py"]), watch_mode="poll")
    w.start()
    (tmp_path / "a.py").write_text("")
    wait_for_path(loop, "app", "a.py")
    w.folders.call(w.folders.settle)  # a poll right after the one that saw the folder change
    seen = tmp_path.stat()
    (tmp_path / "b.py").write_text("")
    # On a file system with coarse timestamps the folder's mtime would not move: make it so.
    os.utime(tmp_path, ns=(seen.st_atime_ns, seen.st_mtime_ns))
    assert tmp_path.stat().st_mtime_ns == seen.st_mtime_ns
    w.folders.call(w.folders.settle)  # well within RACY of the change: the folder is listed again
    wait_for_path(loop, "app", "b.py")


def test_a_gitignore_edit_in_a_polled_tree_counts(tmp_path: Path, make: Make) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / ".gitignore").write_text("gen.py\n")
    (tmp_path / "gen.py").write_text("g = 1\n")
    w, loop, _ = make(mounted_as(tmp_path, "ext4"))
    w.add("app", Matcher(tmp_path, ["**/*.py"]), watch_mode="poll")
    w.start()
    (tmp_path / "gen.py").write_text("g = 22\n")
    (tmp_path / "marker.py").write_text("")
    assert wait_for_path(loop, "app", "marker.py") == ("marker.py",)  # gen.py is ignored
    (tmp_path / ".gitignore").write_text("\n")
    (tmp_path / "marker2.py").write_text("")  # listed in the same poll as the .gitignore edit
    wait_for_path(loop, "app", "marker2.py")
    (tmp_path / "gen.py").write_text("g = 333\n")
    assert wait_for_path(loop, "app", "gen.py") == ("gen.py",)


def test_the_config_file_on_a_share_is_polled_alone(tmp_path: Path, make: Make) -> None:
    (tmp_path / "devrun.yaml").write_text("apps: {}\n")
    (tmp_path / "other.py").write_text("")
    w, loop, _ = make(mounted_as(tmp_path, "9p"))
    w.watch_file("config", str(tmp_path / "devrun.yaml"))
    w.start()
    files = w.folders.call(lambda: [n for n, _ in w.folders.polled[str(tmp_path)].files])
    assert files == ["devrun.yaml"]
    (tmp_path / "devrun.yaml").write_text("apps: {x: 1}\n")
    assert wait_for_path(loop, "config", "devrun.yaml") == ("devrun.yaml",)


def test_apps_sharing_a_folder_one_polled_one_on_events(tmp_path: Path, make: Make) -> None:
    w, loop, _ = make(mounted_as(tmp_path, "ext4"))
    w.add("ev", Matcher(tmp_path, ["**/*.py"]), watch_mode="events")
    w.add("po", Matcher(tmp_path, ["**/*.py"]), watch_mode="poll")
    w.start()
    assert how_watched(w) == ({str(tmp_path)}, {str(tmp_path)})
    (tmp_path / "x.py").write_text("")
    wanted, deadline = {"ev", "po"}, time.monotonic() + 10
    while wanted:
        try:
            app, paths = loop.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"no batch with x.py for {wanted}") from None
        assert paths == ("x.py",)
        wanted.discard(app)
    w.remove("po")
    assert how_watched(w) == (set(), {str(tmp_path)})
