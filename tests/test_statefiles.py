"""devrun's writes into `.devrun/`: never through a symlink, never into a folder or file of
another user. Unit tests of devrun.statefiles, then real `devrun check` / `up` / `down` runs
on a project whose `.devrun/` came with symlinks to files that must stay as they are."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devrun.control.protocol import socket_path
from tests.helpers import alive, free_port, get, wait_for, write

APP = "def app(e, s):\n    s('200 OK', [('Content-Type', 'text/plain')]); return [b'hi']\n"
PRECIOUS = "precious data of {}: must never change\n"
NOBODY = 65534


def dv(cwd: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "devrun", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "NO_COLOR": "1"})


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# -- the functions ---------------------------------------------------------------------------


def test_state_dir_is_created_private_with_a_gitignore(tmp_path: Path) -> None:
    from devrun import statefiles

    old = os.umask(0)
    try:
        folder = statefiles.state_dir(tmp_path)
    finally:
        os.umask(old)
    assert folder == tmp_path / ".devrun" and mode(folder) == 0o700
    assert (folder / ".gitignore").read_text() == statefiles.GITIGNORE and mode(folder / ".gitignore") == 0o600
    (folder / ".gitignore").write_text("mine\n")
    folder.chmod(0o755)
    assert statefiles.state_dir(tmp_path) == folder
    assert mode(folder) == 0o700 and (folder / ".gitignore").read_text() == "mine\n"  # tightened, kept


def test_a_symlinked_or_non_folder_state_dir_is_refused(tmp_path: Path) -> None:
    from devrun import statefiles

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    project = tmp_path / "p"
    project.mkdir()
    (project / ".devrun").symlink_to(elsewhere)
    with pytest.raises(statefiles.UnsafeState) as info:
        statefiles.state_dir(project)
    assert str(info.value).startswith(f"{project / '.devrun'} is a symlink") and "remove the link" in str(info.value)
    assert list(elsewhere.iterdir()) == [] and mode(elsewhere) == 0o755  # nothing written, nothing chmod-ed
    (project / ".devrun").unlink()
    (project / ".devrun").write_text("x")
    with pytest.raises(statefiles.UnsafeState, match="is not a folder"):
        statefiles.state_dir(project)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a folder of another user")
def test_a_state_dir_of_another_user_is_refused(tmp_path: Path) -> None:
    from devrun import statefiles

    folder = tmp_path / ".devrun"
    folder.mkdir(mode=0o755)
    os.chown(folder, NOBODY, NOBODY)
    with pytest.raises(statefiles.UnsafeState, match=f"belongs to uid {NOBODY}, not to you"):
        statefiles.state_dir(tmp_path)
    assert list(folder.iterdir()) == [] and mode(folder) == 0o755


def test_open_private_never_follows_a_symlink(tmp_path: Path) -> None:
    from devrun import statefiles

    target = tmp_path / "target"
    target.write_text("keep\n")
    target.chmod(0o644)
    link = tmp_path / "state.pid"
    link.symlink_to(target)
    with pytest.raises(statefiles.UnsafeState, match="is a symlink; devrun never writes through one"):
        statefiles.open_private(link, os.O_RDWR | os.O_CREAT)
    assert link.is_symlink()
    fd = statefiles.open_private(link, os.O_WRONLY | os.O_APPEND | os.O_CREAT, replace_link=True)
    with open(fd, "w") as f:
        f.write("mine\n")
    assert not link.is_symlink() and link.read_text() == "mine\n" and mode(link) == 0o600
    assert target.read_text() == "keep\n" and mode(target) == 0o644
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "not-there")
    with pytest.raises(statefiles.UnsafeState):
        statefiles.open_private(dangling, os.O_WRONLY | os.O_CREAT)
    assert not (tmp_path / "not-there").exists()


def test_open_private_refuses_hard_links_and_special_files_and_tightens_modes(tmp_path: Path) -> None:
    from devrun import statefiles

    target = tmp_path / "target"
    target.write_text("keep\n")
    os.link(target, tmp_path / "hard")
    with pytest.raises(statefiles.UnsafeState, match="other hard links"):
        statefiles.open_private(tmp_path / "hard", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(OSError):  # refused at once: a write-only open of a FIFO would wait for a reader
        statefiles.open_private(tmp_path / "fifo", os.O_WRONLY | os.O_CREAT)
    with pytest.raises(statefiles.UnsafeState, match="not a regular file"):
        statefiles.open_private(tmp_path / "fifo", os.O_RDWR | os.O_CREAT)
    assert target.read_text() == "keep\n"
    loose = tmp_path / "loose"
    loose.write_text("")
    loose.chmod(0o666)
    os.close(statefiles.open_private(loose, os.O_WRONLY))
    assert mode(loose) == 0o600


def test_write_private_atomic_replaces_a_symlink_and_leaves_its_target(tmp_path: Path) -> None:
    from devrun import statefiles

    target = tmp_path / "target"
    target.write_text("keep\n")
    target.chmod(0o644)
    link = tmp_path / "schema.json"
    link.symlink_to(target)
    old = os.umask(0)
    try:
        statefiles.write_private_atomic(link, b"new\n", fsync=True)
    finally:
        os.umask(old)
    assert not link.is_symlink() and link.read_bytes() == b"new\n" and mode(link) == 0o600
    assert target.read_text() == "keep\n" and mode(target) == 0o644
    statefiles.write_private_atomic(link, b"newer\n")
    assert link.read_bytes() == b"newer\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["schema.json", "target"]  # no temporary file left
    with pytest.raises(OSError):
        statefiles.read_private(tmp_path / "again")
    (tmp_path / "again").symlink_to(target)
    with pytest.raises(OSError):  # reading does not follow a link either
        statefiles.read_private(tmp_path / "again")


@pytest.mark.parametrize("name", ["web", "api-v2", "x.y", "A_1", "9", "a" * 63])
def test_ordinary_app_names_are_allowed(name: str) -> None:
    from devrun import statefiles

    assert statefiles.name_problem(name) is None


@pytest.mark.parametrize("name", ["", ".", "..", ".hidden", "-x", "_x", "a/b", "../x", "/abs", "a\\b", "a\0b",
                                  "a..b", "my app", "é", "a" * 64, "x\n", 12])
def test_names_that_cannot_be_file_names_are_refused(name: object) -> None:
    from devrun import statefiles

    problem = statefiles.name_problem(name)
    assert problem is not None
    assert "\0" not in problem and "\n" not in problem and len(problem) < 250


# -- devrun itself, on a project that came with symlinks in .devrun/ --------------------------


@pytest.fixture
def planted(tmp_path: Path) -> Iterator[tuple[Path, dict[str, Path]]]:
    """A project whose `.devrun/` (as a clone could bring it) links devrun's file names to
    precious files elsewhere; whatever runs in it is stopped afterwards."""
    project = tmp_path / "project"
    write(project / "a" / "a.py", APP)
    port = free_port()
    write(project / "devrun.yaml", f"apps:\n  web: {{app: 'a:app', port: {port}, cwd: a, reload: fork}}\n")
    precious = tmp_path / "precious"
    precious.mkdir()
    names = ["devrun.schema.json", "runner.pid", "runner.log", "control.sock.lock", "logs/web.log",
             "logs/web.log.1", ".gitignore"]
    (project / ".devrun" / "logs").mkdir(parents=True)
    targets = {}
    for name in names:
        target = precious / name.replace("/", "-")
        target.write_text(PRECIOUS.format(name))
        target.chmod(0o644)
        (project / ".devrun" / name).symlink_to(target)
        targets[name] = target
    yield project, targets
    with contextlib.suppress(Exception):
        dv(project, "down", timeout=30)
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            with contextlib.suppress(OSError):
                if os.readlink(d / "cwd").startswith(str(project)) and alive(int(d.name)):
                    os.kill(int(d.name), signal.SIGKILL)


def untouched(targets: dict[str, Path]) -> dict[str, str]:
    """The precious files that changed, with what changed (empty: none did)."""
    changed = {}
    for name, target in targets.items():
        if target.read_text() != PRECIOUS.format(name) or mode(target) != 0o644:
            changed[name] = f"mode {oct(mode(target))}: {target.read_text()[:80]!r}"
    return changed


@pytest.mark.process
def test_check_replaces_a_planted_schema_link_and_never_writes_its_target(
        planted: tuple[Path, dict[str, Path]]) -> None:
    project, targets = planted
    r = dv(project, "check")
    assert r.returncode == 0, r.stdout + r.stderr
    assert untouched(targets) == {}
    schema = project / ".devrun" / "devrun.schema.json"
    assert not schema.is_symlink() and json.loads(schema.read_text())["title"] == "devrun.yaml"


@pytest.mark.process
def test_up_refuses_a_planted_pid_link_with_one_line_and_then_runs_without_writing_through_links(
        planted: tuple[Path, dict[str, Path]]) -> None:
    project, targets = planted
    for args in (("up", "-d"), ("up", "--no-dashboard")):
        r = dv(project, *args)
        assert r.returncode == 1, r.stdout + r.stderr
        assert "Traceback" not in r.stderr
        assert r.stderr.strip().splitlines() == [
            f"devrun: {project / '.devrun' / 'runner.pid'} is a symlink; devrun never writes through one: "
            f"remove it (rm {project / '.devrun' / 'runner.pid'}) and run again"]
    assert untouched(targets) == {}

    (project / ".devrun" / "runner.pid").unlink()  # what the message says to do
    del targets["runner.pid"]
    r = dv(project, "up", "-d")
    assert r.returncode == 0, r.stdout + r.stderr
    port = int((project / "devrun.yaml").read_text().split("port: ")[1].split(",")[0])
    assert get(f"http://127.0.0.1:{port}/through-links")[0] == 200
    log = project / ".devrun" / "logs" / "web.log"
    wait_for(lambda: "GET /through-links 200" in log.read_text(), 15, "the request in the app's log")
    write(project / "a" / "a.py", APP.replace("b'hi'", "b'again'"))
    wait_for(lambda: get(f"http://127.0.0.1:{port}/")[1] == "again", 30, "a reload")
    assert dv(project, "down").returncode == 0
    assert untouched(targets) == {}
    # The socket's lock sits beside the socket, which moves out of .devrun/ when the project's
    # path is too long for a socket address (pytest's numbered folders grow): then the planted
    # link is simply never used.
    lock = Path(f"{socket_path(project / '.devrun')}.lock")
    for path in [project / ".devrun" / name for name in ("runner.log", "logs/web.log")] + [lock]:
        assert not path.is_symlink() and stat.S_ISREG(os.lstat(path).st_mode) and mode(path) == 0o600, path
    assert (project / ".devrun" / ".gitignore").is_symlink()  # not devrun's to write: left as it was


@pytest.mark.process
def test_a_symlinked_state_folder_is_refused_by_every_command(tmp_path: Path) -> None:
    project = tmp_path / "project"
    write(project / "a" / "a.py", APP)
    write(project / "devrun.yaml", f"apps:\n  web: {{app: 'a:app', port: {free_port()}, cwd: a}}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    (project / ".devrun").symlink_to(elsewhere)
    line = f"{project / '.devrun'} is a symlink; devrun keeps its state only in a real folder of its own"
    check = dv(project, "check")
    assert check.returncode == 0 and f"devrun: warning: {line}" in check.stderr  # the config itself is fine
    for args in (("up", "--no-dashboard"), ("up", "-d"), ("status",), ("down",), ("logs",), ("restart",)):
        r = dv(project, *args)
        assert r.returncode == 1, (args, r.stdout + r.stderr)
        assert r.stderr.startswith(f"devrun: {line}") and len(r.stderr.splitlines()) == 1, (args, r.stderr)
    assert list(elsewhere.iterdir()) == [] and mode(elsewhere) == 0o755


@pytest.mark.process
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a folder of another user")
def test_a_state_folder_of_another_user_is_refused(tmp_path: Path) -> None:
    project = tmp_path / "project"
    write(project / "a" / "a.py", APP)
    write(project / "devrun.yaml", f"apps:\n  web: {{app: 'a:app', port: {free_port()}, cwd: a}}\n")
    (project / ".devrun").mkdir(mode=0o755)
    os.chown(project / ".devrun", NOBODY, NOBODY)
    for args in (("up", "--no-dashboard"), ("status",)):
        r = dv(project, *args)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        assert f"belongs to uid {NOBODY}, not to you" in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
    assert list((project / ".devrun").iterdir()) == []


@pytest.mark.process
def test_the_preload_list_replaces_a_planted_link_and_never_writes_its_target(
        planted: tuple[Path, dict[str, Path]]) -> None:
    project, targets = planted
    (project / ".devrun" / "runner.pid").unlink()
    del targets["runner.pid"]
    target = targets["preload-web.json"] = project.parent / "precious" / "preload-web.json"
    target.write_text(PRECIOUS.format("preload-web.json"))
    target.chmod(0o644)
    preload = project / ".devrun" / "preload-web.json"
    preload.symlink_to(target)
    r = dv(project, "up", "-d")
    assert r.returncode == 0, r.stdout + r.stderr
    # A fork-mode runner writes the list once the first generation has said what it imported.
    wait_for(lambda: not preload.is_symlink() and preload.exists(), 30, "the preload list written in place of the link")
    assert isinstance(json.loads(preload.read_text()), list) and mode(preload) == 0o600
    assert dv(project, "down").returncode == 0
    assert untouched(targets) == {}
