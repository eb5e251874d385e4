"""Faults a real project meets, driven through a real `devrun up`: a vanished app folder, helpers
that ignore SIGTERM or escape their process group, swapped ports, SIGHUP, a dead spare, a fork
server stuck in a fork, restart churn. The runner must not die, hang or leave anything behind."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import Devrun, alive, descendants, free_port, get, wait_for, write

pytestmark = pytest.mark.process  # every test here starts processes

APP = """
    import os
    {extra}
    def app(environ, start_response):
        start_response('200 OK', [('Content-Type', 'text/plain')])
        return [f'{tag} v{version} {{os.getpid()}}'.encode()]
"""


def app_source(tag: str, version: int = 1, extra: str = "") -> str:
    return textwrap.dedent(APP).format(tag=tag, version=version, extra=textwrap.dedent(extra))


def body(port: int) -> str:
    status, text = get(f"http://127.0.0.1:{port}/", 5)
    return text if status == 200 else f"<{status}> {text}"


def yaml(apps: dict[str, tuple[str, int]], reload: str = "spawn", extra: str = "") -> str:
    out = "apps:\n"
    for name, (cwd, port) in apps.items():
        out += (f"  {name}:\n    app: \"app:app\"\n    cwd: {cwd}\n    port: {port}\n    reload: {reload}\n"
                f"    graceful_timeout: 1\n{extra}")
    return out


def pids_of(marker: str) -> list[int]:
    """Live processes whose command line holds marker (a unique word per test)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes() and alive(int(entry.name)):
                    out.append(int(entry.name))
            except OSError:
                continue
    return out


@pytest.fixture
def killer() -> Iterator[Callable[[str], None]]:
    """Kills every process whose command line holds a test's marker, whatever happens."""
    markers: list[str] = []
    yield markers.append
    for marker in markers:
        for pid in pids_of(marker):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def test_a_deleted_app_folder_leaves_the_runner_and_the_other_apps_up(
        tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    svc, other = free_port(), free_port()
    write(tmp_path / "svc" / "app.py", app_source("svc"))
    write(tmp_path / "other" / "app.py", app_source("other"))
    write(tmp_path / "devrun.yaml", yaml({"svc": ("svc", svc), "other": ("other", other)}, reload="fork"))
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    wait_for(lambda: body(svc).startswith("svc v1") and body(other).startswith("other v1"), 30, "both apps")
    saved = tmp_path / "saved-svc"
    shutil.move(tmp_path / "svc", saved)  # a branch switch without that folder
    wait_for(lambda: "is missing" in body(svc), 15, "svc's port to say its folder is missing")
    assert d.proc is not None and d.proc.poll() is None, d.output
    assert body(other).startswith("other v1")
    d.wait_line(lambda ln: ln.startswith("svc") and "is missing" in ln, 5)
    shutil.move(saved, tmp_path / "svc")  # and back
    wait_for(lambda: body(svc).startswith("svc v1"), 15, "svc back with its folder")
    write(tmp_path / "svc" / "app.py", app_source("svc", 2))  # its files are watched again
    wait_for(lambda: body(svc).startswith("svc v2"), 15, "svc reloading after its folder came back")
    assert d.interrupt() == 0


HELPER = """
    import subprocess, sys
    # A helper that ignores SIGTERM, in the generation's process group, holding its stdout.
    subprocess.Popen(["sh", "-c", "trap '' TERM; sleep 300; : {marker}"])
"""


@pytest.mark.parametrize("reload", ["spawn", "fork"])
def test_a_helper_that_ignores_sigterm_dies_with_its_generation(
        tmp_path: Path, devrun: Callable[..., Devrun], killer: Callable[[str], None], reload: str) -> None:
    marker = f"devrun-test-{os.getpid()}-{reload}-term"
    killer(marker)
    port = free_port()
    write(tmp_path / "web" / "app.py", app_source("web", 1, HELPER.format(marker=marker)))
    write(tmp_path / "devrun.yaml", yaml({"web": ("web", port)}, reload=reload))
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    wait_for(lambda: body(port).startswith("web v1"), 30, "the app")
    first = wait_for(lambda: pids_of(marker), 10, "the helper")
    assert d.proc is not None
    fds = f"/proc/{d.proc.pid}/fd"

    def reload_and_settle(versions: tuple[int, ...]) -> int:
        for version in versions:
            write(tmp_path / "web" / "app.py", app_source("web", version, HELPER.format(marker=marker)))
            wait_for(lambda v=version: body(port).startswith(f"web v{v}"), 15, f"version {version}")
        # Graceful timeout (1 s) + 1 s after its generation exited, an old helper is gone too.
        wait_for(lambda: len(pids_of(marker)) == 1, 10, f"only the serving generation's helper: {pids_of(marker)}")
        return len(os.listdir(fds))

    settled = reload_and_settle((2, 3))
    assert not any(alive(p) for p in first)
    # Nor is an output reader left pinned by a pipe a helper held: the fds stay where they were.
    reload_and_settle((4, 5, 6))
    wait_for(lambda: len(os.listdir(fds)) <= settled + 1, 10,
             f"the runner's fds back to {settled}: {[os.readlink(f'{fds}/{n}') for n in os.listdir(fds)]}")
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(15) == 0
    wait_for(lambda: not pids_of(marker), 5, "no helper after the runner stopped")


ESCAPEE = """
    import subprocess
    # A daemon-like helper: its own session, so the generation's group never reaches it.
    subprocess.Popen(["setsid", "sh", "-c", "while :; do echo x; sleep 0.2; done; : {marker}"])
"""


def test_a_process_that_escaped_its_group_is_reported_and_stopped_with_the_runner(
        tmp_path: Path, devrun: Callable[..., Devrun], killer: Callable[[str], None]) -> None:
    marker = f"devrun-test-{os.getpid()}-escape"
    killer(marker)
    port = free_port()
    write(tmp_path / "web" / "app.py", app_source("web", 1, ESCAPEE.format(marker=marker)))
    write(tmp_path / "devrun.yaml", yaml({"web": ("web", port)}))
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    wait_for(lambda: body(port).startswith("web v1"), 30, "the app")
    wait_for(lambda: pids_of(marker), 10, "the escaped helper")
    write(tmp_path / "web" / "app.py", app_source("web", 2))  # the next generation starts none
    wait_for(lambda: body(port).startswith("web v2"), 15, "version 2 (the reload completes)")
    d.wait_line(lambda ln: "escaped its app's process group" in ln, 10)
    assert pids_of(marker), "it is stopped with the runner, not before"
    assert d.interrupt() == 0
    assert not pids_of(marker)


def test_swapping_two_apps_ports_in_a_live_edit_serves_both(tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    pa, pb = free_port(), free_port()
    write(tmp_path / "a" / "app.py", app_source("a"))
    write(tmp_path / "b" / "app.py", app_source("b"))
    write(tmp_path / "devrun.yaml", yaml({"a": ("a", pa), "b": ("b", pb)}))
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    wait_for(lambda: body(pa).startswith("a v1") and body(pb).startswith("b v1"), 30, "both apps")
    write(tmp_path / "devrun.yaml", yaml({"a": ("a", pb), "b": ("b", pa)}))
    wait_for(lambda: body(pa).startswith("b v1") and body(pb).startswith("a v1"), 20,
             f"the ports swapped; output:\n{d.output}")
    assert "in use" not in d.output


def test_sighup_stops_everything_in_order(tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    port = free_port()
    write(tmp_path / "web" / "app.py", app_source("web"))
    write(tmp_path / "devrun.yaml", yaml({"web": ("web", port)}))
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    wait_for(lambda: body(port).startswith("web v1"), 30, "the app")
    kids = d.children()
    assert d.proc is not None
    d.proc.send_signal(signal.SIGHUP)
    assert d.proc.wait(15) == 0
    assert any("stopped (pid" in ln for ln in d.lines), d.output
    assert not (tmp_path / ".devrun" / "control.sock").exists()
    assert not any(alive(p) for p in kids)


def spares(d: Devrun) -> list[int]:
    assert d.proc is not None
    return [p for p in descendants(d.proc.pid) if alive(p)
            and Path(f"/proc/{p}/comm").read_text().strip() == "devrun-spare"]


def test_a_killed_spare_is_replaced(tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    port = free_port()
    write(tmp_path / "web" / "app.py", app_source("web"))
    write(tmp_path / "devrun.yaml", yaml({"web": ("web", port)}, reload="fork"))
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    wait_for(lambda: body(port).startswith("web v1"), 30, "the app")
    for version in range(2, 12):  # until a fork server is up and a spare waits
        write(tmp_path / "web" / "app.py", app_source("web", version))
        wait_for(lambda v=version: body(port).startswith(f"web v{v}"), 15, f"version {version}")
        if spares(d):
            break
    [spare] = wait_for(lambda: spares(d), 15, "a spare")
    os.kill(spare, signal.SIGKILL)
    wait_for(lambda: (s := spares(d)) and spare not in s, 10, "a new spare")
    write(tmp_path / "web" / "app.py", app_source("web", 99))
    wait_for(lambda: body(port).startswith("web v99"), 15, "a reload after the spare died")


STUCK_LIB = """
    import os, time
    # Preloaded by the fork server (it lives outside the project): every fork of it hangs.
    if os.environ.get("DEVRUN_HANG_FORKS") and os.environ.get("DEVRUN_LIFELINE_FD"):
        os.register_at_fork(after_in_child=lambda: time.sleep(300))
"""


def listening(port: int) -> bool:
    hexport = f"{port:04X}"
    return any(f[1].endswith(f":{hexport}") and f[3] == "0A"
               for f in (ln.split() for ln in Path("/proc/net/tcp").read_text().splitlines()[1:]))


def test_a_fork_server_stuck_in_a_fork_is_killed_with_what_it_forked(
        tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    port = free_port()
    lib = tmp_path / "lib"
    write(lib / "stucklib.py", STUCK_LIB)
    write(tmp_path / "web" / "app.py", app_source("web", 1, "import stucklib"))
    write(tmp_path / "devrun.yaml", yaml({"web": ("web", port)}, reload="fork",
                                          extra=f"    env: {{PYTHONPATH: '{lib}', DEVRUN_HANG_FORKS: '1'}}\n"))
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    wait_for(lambda: body(port).startswith("web v1"), 30, "the app")
    version = 1
    deadline = time.monotonic() + 60
    while not any("fork server hung" in ln for ln in d.lines) and time.monotonic() < deadline:
        version += 1
        write(tmp_path / "web" / "app.py", app_source("web", version, "import stucklib"))
        wait_for(lambda v=version: body(port).startswith(f"web v{v}"), 30, f"version {version}")
    assert any("fork server hung" in ln for ln in d.lines), d.output
    assert d.interrupt(30) == 0
    # Nothing it started is left, and nothing holds the port.
    wait_for(lambda: not listening(port), 5, "the port to close")
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as devrun binds: TIME_WAIT is no holder
        s.bind(("127.0.0.1", port))


WRITER = """
    import sqlite3
    LOG = open("app.log", "a")  # the app's own log and database, inside its broad watch
    DB = sqlite3.connect("db.sqlite3")
    DB.execute("create table if not exists hits (n integer)")
    def app(environ, start_response):
        LOG.write("hit\\n"); LOG.flush()
        DB.execute("insert into hits values (1)"); DB.commit()
        start_response('200 OK', [('Content-Type', 'text/plain')])
        return [b'writer v{version}']
"""


@pytest.mark.parametrize("reload", ["spawn", "fork"])
def test_files_the_app_writes_itself_never_restart_it(
        tmp_path: Path, devrun: Callable[..., Devrun], reload: str) -> None:
    port = free_port()
    write(tmp_path / "web" / "app.py", WRITER.format(version=1))
    write(tmp_path / "devrun.yaml", yaml({"web": ("web", port)}, reload=reload, extra='    watch: ["**/*"]\n'))
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    wait_for(lambda: body(port) == "writer v1", 30, "the app")
    for _ in range(20):
        assert body(port) == "writer v1"
    d.wait_line(lambda ln: "app.log changed, but the app writes it itself" in ln, 10)
    write(tmp_path / "web" / "app.py", WRITER.format(version=2))  # a real edit still reloads
    wait_for(lambda: body(port) == "writer v2", 15, "version 2")
    for _ in range(20):
        assert body(port) == "writer v2"
    reloads = [ln for ln in d.lines if "reload (" in ln]
    assert len(reloads) == 1 and "app.py" in reloads[0], reloads
    assert sum("app.log changed" in ln for ln in d.lines) == 1


def test_app_run_at_import_is_an_error_with_the_fix(tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    port, other = free_port(), free_port()
    write(tmp_path / "web" / "app.py", f"""
        from flask import Flask
        app = Flask(__name__)
        @app.get("/")
        def index():
            return "served by devrun"
        app.run(port={other})  # what a tutorial's script does, at module level
    """)
    write(tmp_path / "devrun.yaml", yaml({"web": ("web", port)}))
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    line = d.wait_line(lambda ln: "error:" in ln and "app.run()" in ln, 30)
    assert 'if __name__ == "__main__":' in line
    status, text = get(f"http://127.0.0.1:{port}/")
    assert status == 500 and "app.run()" in text
    write(tmp_path / "web" / "app.py", (tmp_path / "web" / "app.py").read_text().replace(
        f"app.run(port={other})", f'if __name__ == "__main__":\n    app.run(port={other})'))
    wait_for(lambda: get(f"http://127.0.0.1:{port}/") == (200, "served by devrun"), 15, "the guarded app")


def test_a_change_during_a_hanging_start_restarts_it_exactly_once(
        tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    port = free_port()
    write(tmp_path / "web" / "app.py", app_source("web", 1, "import time; time.sleep(300)"))
    write(tmp_path / "devrun.yaml", yaml({"web": ("web", port)}))
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    # No timeout kills a slow start (a big Django project may import for a while): the port
    # says it is still starting, with the output so far.
    wait_for(lambda: "still starting" in body(port), 15, "the still-starting page")
    write(tmp_path / "web" / "app.py", app_source("web", 2))
    wait_for(lambda: body(port).startswith("web v2"), 15, "version 2")
    starts = [ln for ln in d.lines if "starting (pid" in ln]
    assert len(starts) == 2, starts
    assert sum("reload (app.py)" in ln for ln in d.lines) == 1
    [hung] = [int(ln.split("pid ")[1].split(",")[0]) for ln in starts[:1]]
    wait_for(lambda: not alive(hung), 5, "the hanging generation killed")
