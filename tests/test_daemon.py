"""The runner as a daemon and its control socket: `up -d`, status, logs, restart/stop/start,
down, attach, stale state, permissions, and devrun.yaml edits applied live. Real processes,
real sockets, 127.0.0.1 only."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import Devrun, alive, descendants, free_port, get, port_open, wait_for, write

pytestmark = pytest.mark.process  # every test here starts processes

APP = ("import os\ndef app(e, s):\n"
       "    s('200 OK', [('Content-Type', 'text/plain')]); return [str(os.getpid()).encode()]\n")


def dv(cwd: Path, *args: str, timeout: float = 60,
       env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "devrun", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "NO_COLOR": "1", **(env or {})})


def procs_in(folder: Path) -> list[int]:
    """Processes whose working folder is inside folder (the runner, apps, fork servers)."""
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            with contextlib.suppress(OSError):
                if os.readlink(d / "cwd").startswith(str(folder)) and alive(int(d.name)):
                    found.append(int(d.name))
    return found


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Callable[..., dict[str, int]]]:
    """A folder with apps; whatever a test leaves running there is stopped afterwards."""
    folders: list[Path] = []

    def make(*names: str, folder: Path = tmp_path) -> dict[str, int]:
        folders.append(folder)
        write(folder / "a" / "a.py", APP)
        ports = {name: free_port() for name in names}
        write(folder / "devrun.yaml", "apps:\n" + "".join(
            f"  {n}: {{app: 'a:app', port: {p}, cwd: a}}\n" for n, p in ports.items()))
        return ports

    yield make
    for folder in folders:
        with contextlib.suppress(Exception):
            dv(folder, "down", timeout=30)
        for pid in procs_in(folder):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def body(port: int) -> str:
    return get(f"http://127.0.0.1:{port}/", 5)[1]


def status(folder: Path) -> dict:
    r = dv(folder, "status", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


def test_up_detached_status_restart_stop_start_and_down(tmp_path: Path, project: Callable[..., dict[str, int]]) -> None:
    ports = project("one", "two")
    r = dv(tmp_path, "up", "-d")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "one: ready" in r.stdout and "two: ready" in r.stdout
    pid1 = body(ports["one"])  # up -d returned once the apps were up
    st = status(tmp_path)
    runner = st["pid"]
    assert st["running"] and [a["name"] for a in st["apps"]] == ["one", "two"]
    assert {a["state"] for a in st["apps"]} == {"ready"} and st["apps"][0]["pid"] == int(pid1)

    again = dv(tmp_path, "up", "-d")
    assert again.returncode == 1 and f"pid {runner}" in again.stderr  # one runner per devrun.yaml
    foreground = dv(tmp_path, "up", "--no-dashboard")
    assert foreground.returncode == 1 and "already running" in foreground.stderr

    assert dv(tmp_path, "restart", "one").returncode == 0
    wait_for(lambda: body(ports["one"]) != pid1, 15, "a new pid after restart")
    assert status(tmp_path)["apps"][0]["reloads"] == 1

    assert dv(tmp_path, "stop", "two").returncode == 0
    code, page = get(f"http://127.0.0.1:{ports['two']}/")
    assert code == 503 and "devrun start two" in page  # the port says why, at once
    assert [a["state"] for a in status(tmp_path)["apps"]] == ["ready", "stopped"]
    assert dv(tmp_path, "start", "two").returncode == 0
    wait_for(lambda: get(f"http://127.0.0.1:{ports['two']}/")[0] == 200, 15, "two started again")

    unknown = dv(tmp_path, "restart", "nope")
    assert unknown.returncode == 1 and "no app named nope" in unknown.stderr
    running = dv(tmp_path, "start", "one")
    assert running.returncode == 1 and "already running: one" in running.stderr
    assert dv(tmp_path, "stop", "one").returncode == 0
    assert dv(tmp_path, "restart", "one").returncode == 0  # a stopped app is started
    wait_for(lambda: get(f"http://127.0.0.1:{ports['one']}/")[0] == 200, 15, "one started by restart")
    logged = (tmp_path / ".devrun" / "logs" / "one.log").read_text()
    assert "stop (asked for)" in logged and "start (asked for)" in logged
    no_logs = dv(tmp_path, "logs", "nope")
    assert no_logs.returncode == 1 and "no logs for nope" in no_logs.stderr
    assert dv(tmp_path, "logs", "../x").returncode == 1

    kids = descendants(runner)
    down = dv(tmp_path, "down")
    assert down.returncode == 0 and f"stopped (pid {runner})" in down.stdout
    assert not port_open(ports["one"]) and not port_open(ports["two"])
    wait_for(lambda: not any(alive(p) for p in [runner, *kids]), 5, "no process left")
    after = dv(tmp_path, "status", "--json")
    assert after.returncode == 3 and json.loads(after.stdout)["running"] is False


def test_state_is_private_and_a_foreign_request_is_refused_safely(
        tmp_path: Path, project: Callable[..., dict[str, int]]) -> None:
    project("one")
    assert dv(tmp_path, "up", "-d").returncode == 0
    state = tmp_path / ".devrun"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    sock = state / "control.sock"
    assert sock.is_socket() and stat.S_IMODE(sock.stat().st_mode) == 0o600
    for f in [*state.glob("*"), *(state / "logs").glob("*")]:
        if f.is_file():
            assert stat.S_IMODE(f.stat().st_mode) & 0o077 == 0, f
    # Garbage, an unknown verb and an oversized line each get an error; the runner lives on.
    import socket as socketlib

    for payload in (b"not json\n", b'{"v": 1, "verb": "__class__", "args": {}}\n', b"x" * 70000 + b"\n",
                    b'{"v": 99, "verb": "status", "args": {}}\n'):
        with socketlib.socket(socketlib.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(sock))
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                s.sendall(payload)
            reply = json.loads(s.makefile("rb").readline())
            assert reply["ok"] is False and reply["error"]
    assert status(tmp_path)["apps"][0]["state"] == "ready"


def test_two_clients_at_once_an_attached_stream_and_requests(
        tmp_path: Path, project: Callable[..., dict[str, int]]) -> None:
    ports = project("one")
    assert dv(tmp_path, "up", "-d").returncode == 0
    attached = subprocess.Popen([sys.executable, "-m", "devrun", "attach", "--no-dashboard"], cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "NO_COLOR": "1"})
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(attached.stdout or ()), daemon=True).start()
    try:
        wait_for(lambda: any("ready http" in ln for ln in lines), 15, "the history replayed to attach")
        for _ in range(3):
            assert status(tmp_path)["apps"][0]["state"] == "ready"  # while the stream is open
        get(f"http://127.0.0.1:{ports['one']}/attached-probe")
        wait_for(lambda: any("GET /attached-probe 200" in ln for ln in lines), 15, "a live event on attach")
    finally:
        attached.send_signal(signal.SIGINT)
        attached.wait(10)
    assert "the runner keeps running" in "".join(lines)
    assert status(tmp_path)["apps"][0]["state"] == "ready"  # leaving attach left the runner alone
    # An attached client whose runner stops says so, and ends.
    again = subprocess.Popen([sys.executable, "-m", "devrun", "attach", "--no-dashboard"], cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out: list[str] = []
    threading.Thread(target=lambda: out.extend(again.stdout or ()), daemon=True).start()
    try:
        wait_for(lambda: any("ready http" in ln for ln in out), 15, "the second attach to be connected")
        assert dv(tmp_path, "down").returncode == 0
        assert again.wait(15) == 0
        wait_for(lambda: any("the runner stopped" in ln for ln in out), 5, "attach to say the runner stopped")
    finally:
        again.kill()


def test_attach_leaves_on_a_ctrl_c_that_the_kernel_gave_to_its_reader_thread(
        tmp_path: Path, project: Callable[..., dict[str, int]]) -> None:
    import ctypes

    project("one")
    assert dv(tmp_path, "up", "-d").returncode == 0
    attached = subprocess.Popen([sys.executable, "-m", "devrun", "attach", "--no-dashboard"], cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(attached.stdout or ()), daemon=True).start()
    try:
        wait_for(lambda: any("ready http" in ln for ln in lines), 15, "attach connected")
        threads = [int(t) for t in os.listdir(f"/proc/{attached.pid}/task") if int(t) != attached.pid]
        assert threads, "attach reads its stream on a thread of its own"
        # A process-directed SIGINT may land on any thread; this one lands on the reader's.
        assert ctypes.CDLL(None, use_errno=True).tgkill(attached.pid, threads[0], signal.SIGINT) == 0
        assert attached.wait(5) == 0
    finally:
        attached.kill()
        dv(tmp_path, "down")
    assert "the runner keeps running" in "".join(lines)


def test_logs_show_and_follow_request_lines_and_survive_rotation(
        tmp_path: Path, project: Callable[..., dict[str, int]]) -> None:
    ports = project("one", "two")
    r = dv(tmp_path, "up", "-d", env={"DEVRUN_LOG_MAX_BYTES": "2000"})
    assert r.returncode == 0, r.stderr
    follower = subprocess.Popen([sys.executable, "-m", "devrun", "logs", "one", "-f", "-n", "0"], cwd=tmp_path,
                                stdout=subprocess.PIPE, text=True)
    followed: list[str] = []
    threading.Thread(target=lambda: followed.extend(follower.stdout or ()), daemon=True).start()
    try:
        # Following starts once the command is up: wait until a probe line comes through.
        wait_for(lambda: get(f"http://127.0.0.1:{ports['one']}/probe") and
                 any("GET /probe " in ln for ln in followed), 30, "the follower to follow")
        for i in range(60):  # about 60 lines of 50 bytes: several rotations of 2000 bytes
            get(f"http://127.0.0.1:{ports['one']}/n{i}")
        get(f"http://127.0.0.1:{ports['two']}/other")
        wait_for(lambda: any("GET /n59 " in ln for ln in followed), 15, "the last line followed")
        seen = [ln.split("GET /n")[1].split()[0] for ln in followed if "GET /n" in ln]
        assert seen == [str(i) for i in range(60)]  # across rotations: none lost, none twice, none split
        assert all(ln.startswith("one | ") for ln in followed)
    finally:
        follower.terminate()
        follower.wait(10)
    assert len(list((tmp_path / ".devrun" / "logs").glob("one.log.*"))) >= 1  # it did rotate
    both = dv(tmp_path, "logs", "-n", "200").stdout.splitlines()
    assert any(ln.startswith("two | ") and "GET /other 200" in ln for ln in both)
    assert any(ln.startswith("one | ") and "GET /n59 200" in ln for ln in both)
    last = dv(tmp_path, "logs", "one", "-n", "3").stdout.splitlines()
    assert len(last) == 3 and "GET /n59" in last[-1]


def test_a_killed_runner_leaves_stale_state_that_is_cleaned_up(
        tmp_path: Path, project: Callable[..., dict[str, int]]) -> None:
    ports = project("one")
    assert dv(tmp_path, "up", "-d").returncode == 0
    runner = status(tmp_path)["pid"]
    kids = descendants(runner)
    os.kill(runner, signal.SIGKILL)
    wait_for(lambda: not any(alive(p) for p in [runner, *kids]), 10, "the apps to follow the runner")
    assert (tmp_path / ".devrun" / "runner.pid").exists() and (tmp_path / ".devrun" / "control.sock").exists()
    gone = dv(tmp_path, "status")
    assert gone.returncode == 3 and "not running" in gone.stdout
    r = dv(tmp_path, "up", "-d")
    assert r.returncode == 0, r.stdout + r.stderr
    assert status(tmp_path)["pid"] != runner and get(f"http://127.0.0.1:{ports['one']}/")[0] == 200


def test_a_deeply_nested_project_puts_its_socket_where_the_limit_cannot_bite(
        tmp_path: Path, project: Callable[..., dict[str, int]]) -> None:
    deep = tmp_path.joinpath(*["a-rather-long-folder-name"] * 6)
    ports = project("one", folder=deep)
    assert len(str(deep / ".devrun" / "control.sock")) > 108
    r = dv(deep, "up", "-d")
    assert r.returncode == 0, r.stdout + r.stderr
    assert body(ports["one"])
    link = deep / ".devrun" / "control.sock"
    assert link.is_symlink() and link.is_socket() and len(str(link.resolve())) <= 100
    assert status(deep)["apps"][0]["state"] == "ready"
    assert dv(deep, "down").returncode == 0
    assert not link.exists() and not os.path.lexists(link)


def test_a_foreground_up_serves_the_control_socket_too(tmp_path: Path, project: Callable[..., dict[str, int]],
                                                      devrun: Callable[..., Devrun]) -> None:
    ports = project("one")
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    d.wait_line(lambda ln: "ready http" in ln, 30)
    pid = body(ports["one"])
    assert dv(tmp_path, "restart", "one").returncode == 0
    wait_for(lambda: body(ports["one"]) != pid, 15, "the restart asked from another terminal")
    assert dv(tmp_path, "down").returncode == 0
    assert d.proc is not None and d.proc.wait(15) == 0


def test_config_edits_apply_live_and_an_invalid_edit_changes_nothing(
        tmp_path: Path, project: Callable[..., dict[str, int]]) -> None:
    ports = project("one", "two")
    p3 = free_port()
    assert dv(tmp_path, "up", "-d").returncode == 0
    pids = {n: body(p) for n, p in ports.items()}
    cfg = tmp_path / "devrun.yaml"
    lines = {n: f"  {n}: {{app: 'a:app', port: {p}, cwd: a}}\n" for n, p in ports.items()}

    # Added: starts. Unchanged: same pid.
    cfg.write_text("apps:\n" + lines["one"] + lines["two"] + f"  three: {{app: 'a:app', port: {p3}, cwd: a}}\n")
    wait_for(lambda: get(f"http://127.0.0.1:{p3}/", 2)[0] == 200, 20, "the added app")
    assert body(ports["one"]) == pids["one"] and body(ports["two"]) == pids["two"]

    # Changed (an env var): restarts, on the same port. Removed: stops and its port closes.
    cfg.write_text("apps:\n" + lines["one"] + lines["two"].replace("cwd: a}", "cwd: a, env: {X: '1'}}"))
    wait_for(lambda: body(ports["two"]) != pids["two"], 20, "the changed app restarted")
    wait_for(lambda: not port_open(p3), 20, "the removed app's port closed")
    assert body(ports["one"]) == pids["one"]
    assert [a["name"] for a in status(tmp_path)["apps"]] == ["one", "two"]

    # Invalid: nothing changes, and status says what is wrong and where.
    cfg.write_text("apps:\n" + lines["one"] + "  two: {app: 'a:app', port: notaport, cwd: a}\n")
    problems = wait_for(lambda: status(tmp_path)["config_problems"], 20, "the rejected edit in status")
    assert "devrun.yaml:3:" in problems[0] and "apps.two.port" in problems[0]
    assert get(f"http://127.0.0.1:{ports['two']}/")[0] == 200 and body(ports["one"]) == pids["one"]
    # Fixed: picked up by itself.
    cfg.write_text("apps:\n" + lines["one"])
    wait_for(lambda: not port_open(ports["two"]), 20, "the fixed edit applied")
    assert status(tmp_path)["config_problems"] == []


def test_attach_shows_the_dashboard_and_q_leaves_the_runner_running(
        tmp_path: Path, project: Callable[..., dict[str, int]]) -> None:
    from tests.test_dashboard import Pty

    ports = project("one")
    assert dv(tmp_path, "up", "-d").returncode == 0
    pid = body(ports["one"])
    term = Pty([sys.executable, "-m", "devrun", "attach"], tmp_path)
    try:
        wait_for(lambda: (term.pump(0.1), "one" in term.text() and "ready" in term.text())[1], 30, "the row")
        os.write(term.fd, b"r")  # keys act on the daemon
        wait_for(lambda: (term.pump(0.1), body(ports["one"]) != pid)[1], 15, "a restart from the attached dashboard")
        os.write(term.fd, b"q")
        wait_for(lambda: (term.pump(0.1), os.waitpid(term.pid, os.WNOHANG))[1][0], 15, "q to leave")
        assert "\x1b[?1049l" in term.buf.decode(errors="replace")  # the terminal is given back
    finally:
        term.kill()
    assert status(tmp_path)["apps"][0]["state"] == "ready"


def test_a_key_typed_before_attach_reads_keys_is_not_lost(
        tmp_path: Path, project: Callable[..., dict[str, int]]) -> None:
    from tests.test_dashboard import Pty

    project("one")
    assert dv(tmp_path, "up", "-d").returncode == 0
    term = Pty([sys.executable, "-m", "devrun", "attach"], tmp_path)
    try:
        os.write(term.fd, b"q")  # typed at once: attach is still starting, its terminal not yet set up
        wait_for(lambda: (term.pump(0.1), os.waitpid(term.pid, os.WNOHANG))[1][0], 15, "the q typed ahead to leave")
    finally:
        term.kill()
    assert status(tmp_path)["apps"][0]["state"] == "ready"


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/usr/bin/python3"),
                    reason="needs root (to be another user) and a system Python that user can run")
def test_another_user_cannot_reach_the_runner(tmp_path: Path, project: Callable[..., dict[str, int]]) -> None:
    import pwd

    project("one")
    assert dv(tmp_path, "up", "-d").returncode == 0
    nobody = pwd.getpwnam("nobody")
    os.chmod(tmp_path, 0o755)  # the project folder is readable: only .devrun/ keeps them out
    probe = ("import socket, sys\n"
             "s = socket.socket(socket.AF_UNIX)\n"
             "try:\n"
             "    s.connect(sys.argv[1])\n"
             "except OSError as e:\n"
             "    print('refused', type(e).__name__)\n"
             "else:\n"
             "    s.sendall(b'{\"v\": 1, \"verb\": \"down\", \"args\": {}}\\n')\n"
             "    print('reply', s.makefile().readline())\n")
    r = subprocess.run(["/usr/bin/python3", "-c", probe, str(tmp_path / ".devrun" / "control.sock")],
                       capture_output=True, text=True, timeout=30, user=nobody.pw_uid, group=nobody.pw_gid)
    assert r.stdout.startswith("refused PermissionError"), r.stdout + r.stderr
    assert status(tmp_path)["apps"][0]["state"] == "ready"  # and it did not stop anything


def test_status_shows_an_app_error_with_brackets_as_written(
        tmp_path: Path, project: Callable[..., dict[str, int]]) -> None:
    project("one")
    write(tmp_path / "a" / "a.py", "raise RuntimeError('could not parse option [/etc/app.conf] [bold]x')\n")
    r = dv(tmp_path, "up", "-d")
    assert r.returncode == 1 and "one: error" in r.stdout, r.stdout + r.stderr
    shown = dv(tmp_path, "status")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "Traceback" not in shown.stderr
    # Rich folds the long cell over lines: the text is all there, brackets included, once unfolded.
    flat = "".join(ln.strip("│┃ ") for ln in shown.stdout.splitlines())
    assert "[/etc/app.conf]" in flat and "[bold]x" in flat, shown.stdout
    assert status(tmp_path)["apps"][0]["error"].endswith("could not parse option [/etc/app.conf] [bold]x")


def _stream_connection(sock_path: Path) -> socket.socket:
    """A connection in a conversation the runner cannot cut short: an attach stream."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(str(sock_path))
    s.sendall(b'{"v": 1, "verb": "events", "args": {}}\n')
    assert b'"AppsChanged"' in s.recv(65536)
    return s


def test_a_runner_with_every_slot_in_use_gets_one_line_answers(
        tmp_path: Path, project: Callable[..., dict[str, int]]) -> None:
    project("one")
    assert dv(tmp_path, "up", "-d").returncode == 0
    sock_path = tmp_path / ".devrun" / "control.sock"
    held = [_stream_connection(sock_path) for _ in range(32)]
    try:
        for args in (("status",), ("down",), ("restart", "one"), ("attach", "--no-dashboard")):
            r = dv(tmp_path, *args)
            assert r.returncode == 1, (args, r.stdout, r.stderr)
            assert "Traceback" not in r.stderr and len(r.stderr.splitlines()) == 1, (args, r.stderr)
            assert "busy: 32 control connections are open already" in r.stderr, (args, r.stderr)
        as_json = dv(tmp_path, "status", "--json")
        assert as_json.returncode == 1
        doc = json.loads(as_json.stdout)  # still one JSON document, saying what went wrong
        assert doc["running"] is None and "busy" in doc["error"] and doc["apps"] == []
    finally:
        for s in held:
            s.close()
    assert wait_for(lambda: dv(tmp_path, "status").returncode == 0, 15, "a status once the streams left")


def test_idle_clients_cannot_lock_status_out(tmp_path: Path, project: Callable[..., dict[str, int]]) -> None:
    project("one")
    assert dv(tmp_path, "up", "-d").returncode == 0
    idle = []
    try:
        for _ in range(40):  # more than the 32 slots, none sending a byte
            s = socket.socket(socket.AF_UNIX)
            s.connect(str(tmp_path / ".devrun" / "control.sock"))
            idle.append(s)
        for _ in range(3):
            assert status(tmp_path)["apps"][0]["state"] == "ready"
    finally:
        for s in idle:
            s.close()


def test_attach_into_a_closed_output_ends_quietly(tmp_path: Path, project: Callable[..., dict[str, int]]) -> None:
    ports = project("one")
    assert dv(tmp_path, "up", "-d").returncode == 0
    get(f"http://127.0.0.1:{ports['one']}/")  # history to replay: lines to write
    read, write_end = os.pipe()
    os.close(read)
    try:
        r = subprocess.run([sys.executable, "-m", "devrun", "attach", "--no-dashboard"], cwd=tmp_path,
                           stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=30)
    finally:
        os.close(write_end)
    assert r.returncode == 141 and r.stderr == "", r.stderr
    assert status(tmp_path)["apps"][0]["state"] == "ready"  # the runner did not notice
