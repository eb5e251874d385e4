"""Unit tests for devrun.views.logview (writing, rotation, permissions) and devrun.control.logfiles
(tail and follow)."""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devrun import events
from devrun.control.logfiles import apps_with_logs, follow, log_files, show, tail
from devrun.views.logview import AppLogs, LogView, stamp


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def within(seconds: float) -> Callable[[], bool]:
    """A stop() for follow: true once the time is up, so a test that waits for a lost line
    ends instead of hanging."""
    deadline = time.monotonic() + seconds
    return lambda: time.monotonic() > deadline


def take(lines: Iterator[str], count: int) -> list[str]:
    got: list[str] = []
    for line in lines:
        got.append(line)
        if len(got) == count:
            break
    return got


def numbered(i: int) -> str:
    # Lengths vary (and include two-byte characters), so rotation points fall irregularly.
    return f"line {i:05d} " + "é" * (i % 7) + "x" * (i % 13)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / ".devrun"


@pytest.fixture
def open_logs(folder: Path) -> Iterator[Callable[..., AppLogs]]:
    made: list[AppLogs] = []

    def make(**kwargs: int) -> AppLogs:
        made.append(AppLogs(folder, **kwargs))
        return made[-1]

    yield make
    for logs in made:
        logs.close()


def test_write_appends_lines_per_app(folder: Path, open_logs: Callable[..., AppLogs]) -> None:
    logs = open_logs()
    logs.write("web", "first")
    logs.write("api", "other app")
    logs.write("web", "100% done %s")
    assert (folder / "web.log").read_text() == "first\n100% done %s\n"
    assert (folder / "api.log").read_text() == "other app\n"
    assert log_files(folder, "web") == [folder / "web.log"]


def test_one_call_is_one_line(folder: Path, open_logs: Callable[..., AppLogs]) -> None:
    logs = open_logs()
    logs.write("web", "a\nb\r\nc\rd")
    logs.write("web", "")
    logs.write("web", "tail\n")
    assert (folder / "web.log").read_text().split("\n") == ["a\\nb\\r\\nc\\rd", "", "tail\\n", ""]
    assert tail(folder, "web", 10) == ["a\\nb\\r\\nc\\rd", "", "tail\\n"]


def test_files_are_private_even_with_a_permissive_umask(folder: Path, open_logs: Callable[..., AppLogs]) -> None:
    old = os.umask(0)
    try:
        logs = open_logs(max_bytes=100, backups=2)
        for i in range(30):
            logs.write("web", numbered(i))
    finally:
        os.umask(old)
    assert mode(folder) == 0o700
    files = log_files(folder, "web")
    assert [f.name for f in files] == ["web.log.2", "web.log.1", "web.log"]
    assert [mode(f) for f in files] == [0o600] * 3


def test_a_looser_existing_file_is_made_private(folder: Path, open_logs: Callable[..., AppLogs]) -> None:
    folder.mkdir()
    (folder / "web.log").write_text("old\n")
    (folder / "web.log").chmod(0o644)
    open_logs().write("web", "new")
    assert mode(folder / "web.log") == 0o600
    assert (folder / "web.log").read_text() == "old\nnew\n"


def test_rotation_bounds_size_and_keeps_lines_whole(folder: Path, open_logs: Callable[..., AppLogs]) -> None:
    logs = open_logs(max_bytes=2000, backups=20)
    for i in range(5000):
        logs.write("web", numbered(i))
    files = log_files(folder, "web")
    assert len(files) == 21
    assert all(0 < f.stat().st_size <= 2000 for f in files)
    kept: list[str] = []
    for f in files:
        text = f.read_text(encoding="utf-8")
        assert text.endswith("\n")
        kept += text.split("\n")[:-1]
    assert len(kept) > 20 * 2000 // 40  # the backups are nearly full, not rotated early
    first = 5000 - len(kept)
    assert kept == [numbered(i) for i in range(first, 5000)]


def test_a_line_longer_than_max_bytes_gets_a_file_of_its_own(folder: Path, open_logs: Callable[..., AppLogs]) -> None:
    logs = open_logs(max_bytes=50, backups=3)
    logs.write("web", "short")
    logs.write("web", "L" * 200)
    logs.write("web", "after")
    assert [f.read_text() for f in log_files(folder, "web")] == ["short\n", "L" * 200 + "\n", "after\n"]


def test_tail_reads_across_rotated_files(folder: Path, open_logs: Callable[..., AppLogs]) -> None:
    logs = open_logs(max_bytes=300, backups=5)
    for i in range(200):
        logs.write("web", numbered(i))
    retained = [line for f in log_files(folder, "web") for line in f.read_text().split("\n")[:-1]]
    assert len(retained) > 50
    assert tail(folder, "web", 1) == [numbered(199)]
    assert tail(folder, "web", 50) == [numbered(i) for i in range(150, 200)]
    assert tail(folder, "web", 100_000) == retained
    assert tail(folder, "web", 0) == []
    assert tail(folder, "nothing", 10) == []


def test_log_files_and_apps_with_logs(folder: Path, open_logs: Callable[..., AppLogs]) -> None:
    assert apps_with_logs(folder) == []  # no folder yet
    logs = open_logs(max_bytes=20, backups=12)
    for i in range(40):
        logs.write("web", numbered(i))
    logs.write("api", "x")
    (folder / "old.log.1").write_text("only a backup left\n")
    for other in ("preload-web.json", ".hidden.log", "web.log.0", "web.log.x", "devrun.schema.json"):
        (folder / other).write_text("")
    assert apps_with_logs(folder) == ["api", "old", "web"]
    names = [f.name for f in log_files(folder, "web")]
    assert names == [f"web.log.{n}" for n in range(12, 0, -1)] + ["web.log"]
    assert [f.name for f in log_files(folder, "old")] == ["old.log.1"]


@pytest.mark.parametrize("name", ["", ".", "..", ".hidden", "a/b", "../x", "/abs", "a\\b", "a\0b", "my app", "é",
                                  "a..b", "-v", "a" * 64])
def test_names_that_could_leave_the_folder_are_rejected(
    folder: Path, open_logs: Callable[..., AppLogs], name: str
) -> None:
    logs = open_logs()
    with pytest.raises(ValueError):
        logs.write(name, "x")
    with pytest.raises(ValueError):
        log_files(folder, name)
    with pytest.raises(ValueError):
        tail(folder, name, 5)
    with pytest.raises(ValueError):
        follow(folder, name, lambda: True)
    assert list(folder.iterdir()) == []


def test_ordinary_names_are_accepted(folder: Path, open_logs: Callable[..., AppLogs]) -> None:
    logs = open_logs()
    for name in ("web", "api-v2", "x.y", "A_1", "a" * 63):
        logs.write(name, name)
    assert apps_with_logs(folder) == sorted(["web", "api-v2", "x.y", "A_1", "a" * 63])


def test_follow_yields_only_new_lines_and_catches_up_across_rotations(
    folder: Path, open_logs: Callable[..., AppLogs]
) -> None:
    logs = open_logs(max_bytes=200, backups=50)
    for i in range(30):
        logs.write("web", f"before {i}")
    lines = follow(folder, "web", within(10), poll=0.005)
    try:
        # Written before the first next(), but after the call; five or more rotations at once.
        for i in range(100):
            logs.write("web", numbered(i))
        logs.write("web", "end")
        assert len(log_files(folder, "web")) > 5
        assert take(lines, 101) == [numbered(i) for i in range(100)] + ["end"]
    finally:
        lines.close()


def test_follow_reads_the_rest_of_a_renamed_file_with_a_single_backup(
    folder: Path, open_logs: Callable[..., AppLogs]
) -> None:
    logs = open_logs(max_bytes=100, backups=1)
    logs.write("web", "before the start")
    lines = follow(folder, "web", within(10), poll=0.005)
    try:
        for round_ in range(6):
            # The follower is at the end of web.log. Write until one rotation happened: all but
            # the last line of the batch are then in web.log.1, the file the follower has open.
            before = (folder / "web.log").stat().st_ino
            batch: list[str] = []
            while (folder / "web.log").stat().st_ino == before:
                batch.append(f"round {round_} line {len(batch)}")
                logs.write("web", batch[-1])
            assert len(batch) > 2
            assert take(lines, len(batch)) == batch
    finally:
        lines.close()


def test_follow_while_a_writer_thread_rotates(folder: Path, open_logs: Callable[..., AppLogs]) -> None:
    logs = open_logs(max_bytes=1000, backups=400)  # enough backups that falling behind loses nothing
    logs.write("web", "before the start")
    total = 4000
    done = threading.Event()

    def writer() -> None:
        for i in range(total):
            if done.is_set():
                return
            logs.write("web", numbered(i))

    lines = follow(folder, "web", within(30), poll=0.002)
    thread = threading.Thread(target=writer, name="test-applog-writer")
    thread.start()
    try:
        got = take(lines, total)
    finally:
        done.set()
        thread.join(10)
        lines.close()
    assert not thread.is_alive()
    assert len(log_files(folder, "web")) > 50  # it did follow many rotations
    assert got == [numbered(i) for i in range(total)]


def test_follow_waits_for_a_file_that_does_not_exist_yet(folder: Path) -> None:
    calls = 0
    logs: AppLogs | None = None
    deadline = within(10)

    def stop() -> bool:
        nonlocal calls, logs
        calls += 1
        if calls == 5:  # the follower has looked (and waited) four times already
            logs = AppLogs(folder, max_bytes=60, backups=10)
            for i in range(20):
                logs.write("web", f"line {i}")
        return deadline()

    lines = follow(folder, "web", stop, poll=0.005)
    try:
        assert take(lines, 20) == [f"line {i}" for i in range(20)]
        assert calls >= 5
    finally:
        lines.close()
        if logs is not None:
            logs.close()
    assert len(log_files(folder, "web")) > 2  # it rotated before the follower first saw a file


def test_follow_holds_a_partial_line_until_its_newline(folder: Path) -> None:
    folder.mkdir()
    path = folder / "web.log"
    path.write_bytes(b"old\n")
    calls = 0
    deadline = within(10)

    def stop() -> bool:
        nonlocal calls
        calls += 1
        # Each part arrives after the follower has read the one before it and waited.
        with path.open("ab") as f:
            f.write({3: "é".encode()[-1:], 5: b" half\nnext\n"}.get(calls, b""))
        return deadline()

    lines = follow(folder, "web", stop, poll=0.005)
    try:
        with path.open("ab") as f:
            f.write("first é".encode()[:-1])  # the first part ends in the middle of a character
        assert take(lines, 2) == ["first é half", "next"]
    finally:
        lines.close()


def test_follow_starts_over_after_truncation(folder: Path, open_logs: Callable[..., AppLogs]) -> None:
    logs = open_logs()
    logs.write("web", "a fairly long line before")
    lines = follow(folder, "web", within(10), poll=0.005)
    try:
        logs.write("web", "another fairly long line")
        assert take(lines, 1) == ["another fairly long line"]
        os.truncate(folder / "web.log", 0)
        logs.write("web", "short")
        assert take(lines, 1) == ["short"]
    finally:
        lines.close()


def test_follow_ends_when_told_to_stop(folder: Path, open_logs: Callable[..., AppLogs]) -> None:
    open_logs().write("web", "x")
    calls = 0

    def stop() -> bool:
        nonlocal calls
        calls += 1
        return calls > 3

    started = time.monotonic()
    assert list(follow(folder, "web", stop, poll=0.01)) == []
    assert calls == 4
    assert time.monotonic() - started < 5


def test_a_symlink_in_place_of_a_log_file_is_replaced_and_its_target_left_alone(
    folder: Path, open_logs: Callable[..., AppLogs], tmp_path: Path
) -> None:
    target = tmp_path / "precious"
    target.write_text("keep\n")
    target.chmod(0o644)
    folder.mkdir()
    (folder / "web.log").symlink_to(target)
    (folder / "web.log.1").symlink_to(target)
    logs = open_logs(max_bytes=30, backups=2)
    for i in range(6):  # rotations rename over web.log.1: the link goes, not its target
        logs.write("web", f"line {i} of twenty bytes")
    assert target.read_text() == "keep\n" and mode(target) == 0o644
    files = log_files(folder, "web")
    assert files and all(not f.is_symlink() and mode(f) == 0o600 for f in files)
    assert tail(folder, "web", 1) == ["line 5 of twenty bytes"]


def test_a_symlinked_log_folder_is_refused(tmp_path: Path) -> None:
    from devrun.statefiles import UnsafeState

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / ".devrun").mkdir()
    (tmp_path / ".devrun" / "logs").symlink_to(elsewhere)
    with pytest.raises(UnsafeState, match="is a symlink"):
        AppLogs(tmp_path / ".devrun" / "logs")
    assert list(elsewhere.iterdir()) == []


def test_readers_do_not_follow_a_symlink_in_place_of_a_log(folder: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("not a log\n")
    folder.mkdir()
    (folder / "web.log").symlink_to(secret)
    assert tail(folder, "web", 5) == [] and apps_with_logs(folder) == []


def test_show_merges_the_apps_by_time_and_refuses_an_app_without_logs(
    folder: Path, open_logs: Callable[..., AppLogs], capsys: pytest.CaptureFixture[str]
) -> None:
    logs = open_logs()
    for at, app, text in ((3.0, "web", "third"), (1.0, "api", "first"), (2.0, "web", "second")):
        logs.write(app, f"{stamp(at)} {text}")
    assert show(folder, [], 2, False) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.rsplit(" ", 1)[1] for line in out] == ["second", "third"]
    assert out[0].startswith("web | ")
    assert show(folder, ["web", "nope"], 5, False) == 1
    assert capsys.readouterr().err == "devrun: no logs for nope; apps with logs: api, web\n"


def test_a_batch_of_requests_is_one_line_each_stamped_with_when_it_was_served(
        folder: Path, open_logs: Callable[..., AppLogs]) -> None:
    logs = open_logs()
    view = LogView(logs)
    served = tuple(events.Request("web", "GET", f"/{i}", "200", 2.0, at=1764700000.0 + i * 0.25) for i in range(3))
    view.handle(events.Requests("web", served, at=1764700099.0))  # when the runner got the batch: not shown
    view.handle(events.Notice("web", "after"))
    lines = (folder / "web.log").read_text().splitlines()
    assert lines[:3] == [f"{stamp(r.at)} GET /{i} 200 2ms" for i, r in enumerate(served)]
    assert lines[3].endswith(" after") and len(lines) == 4


def test_a_batch_is_never_split_by_a_rotation(folder: Path, open_logs: Callable[..., AppLogs]) -> None:
    logs = open_logs(max_bytes=200, backups=2)
    logs.write("web", "x" * 150)
    logs.write("web", *(f"line {i}" for i in range(10)))  # 70 bytes: would overflow the first file
    assert (folder / "web.log.1").read_text() == "x" * 150 + "\n"
    assert (folder / "web.log").read_text().splitlines() == [f"line {i}" for i in range(10)]
