"""Reloads that never drop a request, broken code, crashes, and no orphans: real processes."""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import HOLD, Devrun, Held, alive, descendants, free_port, get, wait_for, write

pytestmark = pytest.mark.process  # every test here starts processes

VERSIONED = """
    import os, socket
    VERSION = {version}
    def app(environ, start_response):
        path = environ['PATH_INFO']
        if path == '/sleep':
            HOLD  # in flight until the test releases it
        body = f'{{path}} v{{VERSION}} pid={{os.getpid()}} pin={{os.environ.get("WERKZEUG_DEBUG_PIN")}}'
        start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])
        return [body.encode()]
"""


@pytest.fixture(params=["fork", "spawn"])
def mode(request: pytest.FixtureRequest) -> str:
    """Every reload test runs with both ways of starting a generation."""
    return str(request.param)


def project(tmp: Path, extra: str = "", mode: str = "spawn") -> int:
    port = free_port()
    write(tmp / "app.py", VERSIONED.format(version=1).replace("HOLD", HOLD))
    write(tmp / "devrun.yaml", f"""
        apps:
          solo:
            app: "app:app"
            port: {port}
            reload_delay: 0.05
            reload: {mode}
{extra}
    """)
    return port


def version(port: int, path: str = "/") -> int | None:
    status, body = get(f"http://127.0.0.1:{port}{path}", 5)
    m = re.search(r" v(\d+) ", body)
    return int(m.group(1)) if status == 200 and m else None


def save_version(tmp: Path, n: int) -> None:
    tmp_file = tmp / "app.py.tmp~"
    write(tmp_file, VERSIONED.format(version=n).replace("HOLD", HOLD))
    os.replace(tmp_file, tmp / "app.py")  # an editor's atomic save


def reload_lines(d: Devrun) -> list[str]:
    return [ln for ln in d.lines if re.match(r"^solo\s+\| reload \(", ln)]


def test_no_request_fails_through_20_reloads(tmp_path: Path, devrun: Callable[..., Devrun], mode: str) -> None:
    port = project(tmp_path, mode=mode)
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    wait_for(lambda: version(port) == 1, 30, "the app")
    results: list[str] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                status, _ = get(f"http://127.0.0.1:{port}/", 5)
                results.append("ok" if status == 200 else f"status {status}")
            except OSError as exc:
                results.append(f"error {exc}")
            stop.wait(0.01)  # the client's pace: a request every 10 ms, until told to stop

    t = threading.Thread(target=client)
    t.start()
    try:
        for n in range(2, 22):
            save_version(tmp_path, n)
            wait_for(lambda n=n: version(port) == n, 15, f"version {n}")
    finally:
        stop.set()
        t.join(10)
    failures = [r for r in results if r != "ok"]
    assert len(results) > 50
    assert failures == []
    assert len(reload_lines(d)) == 20


def test_request_in_flight_survives_a_reload(tmp_path: Path, devrun: Callable[..., Devrun], mode: str) -> None:
    port = project(tmp_path, mode=mode)
    devrun("up", "--no-dashboard", cwd=tmp_path)
    wait_for(lambda: version(port) == 1, 30, "the app")
    slow: list[tuple[int, str]] = []
    held = Held(tmp_path)
    try:
        t = threading.Thread(target=lambda: slow.append(get(f"http://127.0.0.1:{port}/sleep", 30)))
        t.start()
        held.accept()  # in flight on v1, and it stays so until v2 serves
        save_version(tmp_path, 2)
        wait_for(lambda: version(port) == 2, 15, "the new version")
        held.release()
        t.join(20)
    finally:
        held.close()
    assert slow and slow[0][0] == 200 and " v1 " in slow[0][1]  # answered by the old code, completely


def test_keep_alive_clients_move_to_the_new_code_promptly(
    tmp_path: Path, devrun: Callable[..., Devrun], mode: str
) -> None:
    port = project(tmp_path, "            graceful_timeout: 20", mode=mode)
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    wait_for(lambda: version(port) == 1, 30, "the app")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/")
        first = conn.getresponse().read().decode()
        assert " v1 " in first
        old_pid = re.search(r"pid=(\d+)", first).group(1)  # type: ignore[union-attr]
        save_version(tmp_path, 2)
        t0 = time.monotonic()
        # The old generation closes its idle keep-alive connection at once instead of keeping
        # this client on the old code for its whole graceful timeout (20 s here).
        d.wait_line(lambda ln: ln == f"solo   | stopped (pid {old_pid})" or ln.endswith(f"stopped (pid {old_pid})"), 10)
        assert time.monotonic() - t0 < 5
        try:
            conn.request("GET", "/")
            body = conn.getresponse().read().decode()
        except (http.client.RemoteDisconnected, ConnectionError):
            conn.close()  # as a browser does: retry on a fresh connection
            conn.request("GET", "/")
            body = conn.getresponse().read().decode()
        assert " v2 " in body
    finally:
        conn.close()


def test_a_burst_of_200_files_is_one_reload(tmp_path: Path, devrun: Callable[..., Devrun], mode: str) -> None:
    port = project(tmp_path, mode=mode)
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    wait_for(lambda: version(port) == 1, 30, "the app")
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    for i in range(200):
        (pkg / f"m{i}.py").write_text(f"X = {i}\n")
    line = d.wait_line(lambda ln: ln.startswith("solo") and "reload (" in ln, 10)
    assert "and 195 more" in line
    # A sentinel change after the burst: its reload must be the second and last one.
    save_version(tmp_path, 2)
    wait_for(lambda: version(port) == 2, 15, "the sentinel change")
    d.wait_line(lambda ln: "reload (app.py)" in ln, 5)
    assert len(reload_lines(d)) == 2


def test_reading_files_never_reloads(tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    port = free_port()
    write(tmp_path / "web.py", """
        import os
        HERE = os.path.dirname(os.path.abspath(__file__))
        def app(environ, start_response):
            with open(os.path.join(HERE, 'page.html')) as f:   # opened / closed, never written
                body = f.read().encode()
            start_response('200 OK', [('Content-Type', 'text/html')])
            return [body]
    """)
    write(tmp_path / "page.html", "<p>page</p>")
    write(tmp_path / "devrun.yaml", f"""
        apps:
          solo: {{app: "web:app", port: {port}, watch: ["**/*.py", "**/*.html"], reload_delay: 0.05}}
    """)
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    wait_for(lambda: get(f"http://127.0.0.1:{port}/")[0] == 200, 30, "the app")
    for _ in range(30):
        assert get(f"http://127.0.0.1:{port}/")[1] == "<p>page</p>"
    write(tmp_path / "page.html", "<p>edited</p>")  # the sentinel: a real change
    d.wait_line(lambda ln: "reload (page.html)" in ln, 10)
    assert len(reload_lines(d)) == 1


def test_crash_loop_backs_off_and_the_runner_answers_meanwhile(
    tmp_path: Path, devrun: Callable[..., Devrun]
) -> None:
    port = free_port()
    write(tmp_path / "app.py", "import os\nprint('about to die', flush=True)\nos._exit(7)\n")
    write(tmp_path / "devrun.yaml", f"""
        apps:
          solo: {{app: "app:app", port: {port}, backoff: {{initial: 1, max: 2}}}}
    """)
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    d.wait_line(lambda ln: "crashed (exited with code 7); restarting in 1.0s" in ln, 30)
    t0 = time.monotonic()
    status, body = get(f"http://127.0.0.1:{port}/", 5)
    assert time.monotonic() - t0 < 1  # answered at once, not left in the backlog
    assert status == 503 and "crashed" in body and "exited with code 7" in body and "about to die" in body
    # The delay doubles, up to max.
    d.wait_line(lambda ln: "restarting in 2.0s" in ln, 30)
    # A change restarts at once, and the fixed code serves.
    save_version(tmp_path, 5)
    wait_for(lambda: version(port) == 5, 15, "the fixed app")


def start_app_with_a_helper_process(tmp_path: Path, devrun: Callable[..., Devrun]) -> tuple[Devrun, int]:
    """An app that spawns a process of its own at import; returns devrun and that pid."""
    port = free_port()
    write(tmp_path / "app.py", """
        import subprocess
        helper = subprocess.Popen(['sleep', '300'])   # something the app spawned
        open('helper.pid', 'w').write(str(helper.pid))
        def app(environ, start_response):
            start_response('200 OK', [])
            return [b'ok']
    """)
    write(tmp_path / "devrun.yaml", f"apps:\n  solo: {{app: 'app:app', port: {port}}}\n")
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    wait_for(lambda: get(f"http://127.0.0.1:{port}/")[0] == 200, 30, "the app")
    return d, int((tmp_path / "helper.pid").read_text())


def test_runner_killed_leaves_no_process_behind(tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    d, helper = start_app_with_a_helper_process(tmp_path, devrun)
    assert d.proc is not None
    kids = descendants(d.proc.pid)
    assert helper in kids and len(kids) >= 2
    os.kill(d.proc.pid, signal.SIGKILL)
    d.proc.wait(5)
    wait_for(lambda: not any(alive(k) for k in kids), 2, "every child and grandchild to die")


def test_stopping_stops_what_the_app_spawned(tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    d, helper = start_app_with_a_helper_process(tmp_path, devrun)
    assert d.interrupt() == 0
    wait_for(lambda: not alive(helper), 3, "the app's helper process to stop")


def test_one_debugger_pin_for_every_generation(tmp_path: Path, devrun: Callable[..., Devrun], mode: str) -> None:
    # An app's env cannot replace the run's PIN: the printed one must be the one that works.
    extra = "            debug: {enabled: true}\n            env: {WERKZEUG_DEBUG_PIN: '000-000-000'}"
    port = project(tmp_path, extra, mode=mode)
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    wait_for(lambda: version(port) == 1, 30, "the app")
    pin = re.search(r"PIN: (\d{3}-\d{3}-\d{3})", d.output).group(1)  # type: ignore[union-attr]
    assert f"pin={pin}" in get(f"http://127.0.0.1:{port}/")[1]
    save_version(tmp_path, 2)
    wait_for(lambda: version(port) == 2, 15, "the new version")
    assert f"pin={pin}" in get(f"http://127.0.0.1:{port}/")[1]
    # A different run gets a different PIN (random, not derived from this machine).
    assert d.interrupt() == 0
    d2 = devrun("up", "--no-dashboard", cwd=tmp_path)
    line = d2.wait_line(lambda ln: "PIN: " in ln, 30)
    assert pin not in line


def test_changes_during_a_git_checkout_reload_once_after_it(
    tmp_path: Path, devrun: Callable[..., Devrun]
) -> None:
    port = project(tmp_path)
    (tmp_path / ".git").mkdir()
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    wait_for(lambda: version(port) == 1, 30, "the app")
    lock = tmp_path / ".git" / "index.lock"
    lock.write_text("")
    write(tmp_path / "other.py", "X = 1\n")
    save_version(tmp_path, 2)
    # The changes arrived and were held: still the old code while git holds its lock.
    d.wait_line(lambda ln: "git is changing the tree" in ln, 15)
    assert version(port) == 1 and reload_lines(d) == []
    lock.unlink()
    wait_for(lambda: version(port) == 2, 15, "the reload after the checkout")
    [line] = reload_lines(d)
    assert "other.py" in line and "app.py" in line


def test_port_in_use_names_the_holder(tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    port = free_port()
    holder = subprocess.Popen(["python3", "-c", f"""
import socket, time
s = socket.socket(); s.bind(("127.0.0.1", {port})); s.listen(); print("ok", flush=True); time.sleep(60)
"""], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ok"
        write(tmp_path / "app.py", "def app(e, s):\n    s('200 OK', []); return [b'x']\n")
        write(tmp_path / "devrun.yaml", f"apps:\n  solo: {{app: 'app:app', port: {port}}}\n")
        d = devrun("up", "--no-dashboard", cwd=tmp_path)
        assert d.proc is not None and d.proc.wait(20) == 1
        line = d.wait_line(lambda ln: "in use" in ln, 5)
        assert f"127.0.0.1:{port}" in line and line.startswith("solo")
        if subprocess.run(["which", "ss"], capture_output=True).returncode == 0:
            assert f"pid {holder.pid}" in line
    finally:
        holder.kill()
        holder.wait()


def test_sys_exit_while_loading_shows_an_error_page_in_debug_mode(
    tmp_path: Path, devrun: Callable[..., Devrun]
) -> None:
    port = free_port()
    write(tmp_path / "app.py", "import sys\nsys.exit(4)\n")
    write(tmp_path / "devrun.yaml", f"apps:\n  solo: {{app: 'app:app', port: {port}, debug: {{enabled: true}}}}\n")
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    wait_for(lambda: get(f"http://127.0.0.1:{port}/", 2)[0] == 500, 30, "the error page")
    for _ in range(3):  # the page is served again and again by the same child
        status, body = get(f"http://127.0.0.1:{port}/")
        assert status == 500 and "sys.exit(4)" in body
    assert not any("exited with code" in ln for ln in d.lines)


def test_a_module_shadowed_by_the_standard_library_is_named(tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    port = free_port()
    write(tmp_path / "signal.py", "def app(e, s):\n    s('200 OK', []); return [b'x']\n")
    write(tmp_path / "devrun.yaml", f"apps:\n  solo: {{app: 'signal:app', port: {port}}}\n")
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    line = d.wait_line(lambda ln: ln.startswith("solo") and "error:" in ln, 30)
    assert "shadowed by the standard library" in line and "rename" in line
