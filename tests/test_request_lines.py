"""Request lines end to end: batched by the child, every one of them in the logs, none lost at a
reload (real processes over 127.0.0.1)."""

from __future__ import annotations

import http.client
import re
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import Devrun, free_port, get, wait_for, write

pytestmark = pytest.mark.process

APP = """
    import os, socket
    from flask import Flask
    app = Flask(__name__)

    @app.route('/n/<int:client>/<int:i>')
    def numbered(client, i):
        return 'ok'

    @app.route('/slow')
    def slow():
        # In flight until the test lets it finish (one byte on this connection).
        with socket.create_connection(("127.0.0.1", int(os.environ["RELEASE_PORT"])), timeout=30) as s:
            s.recv(1)
        return 'slow-v1'

    @app.route('/')
    def index():
        return 'v1'
"""

CLIENTS, EACH = 6, 200


def project(tmp: Path, release_port: int = 0) -> int:
    port = free_port()
    write(tmp / "app.py", APP)
    write(tmp / "devrun.yaml", f"""
        apps:
          web:
            app: "app:app"
            port: {port}
            reload_delay: 0.05
            debug: {{enabled: true}}
            env: {{RELEASE_PORT: "{release_port}"}}
    """)
    return port


def burst(port: int, client: int, failures: list[str]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)  # keep-alive: one connection each
    try:
        for i in range(EACH):
            conn.request("GET", f"/n/{client}/{i}")
            response = conn.getresponse()
            if response.read() != b"ok":
                failures.append(f"/n/{client}/{i}: {response.status}")
    except OSError as exc:
        failures.append(f"client {client}: {exc!r}")
    finally:
        conn.close()


def numbered(lines: list[str]) -> list[tuple[int, int]]:
    found = (re.search(r"GET /n/(\d+)/(\d+) 200 \d+ms$", line) for line in lines)
    return [(int(m[1]), int(m[2])) for m in found if m]


def test_every_request_of_a_burst_is_logged_once_in_order(tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    port = project(tmp_path)
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    wait_for(lambda: get(f"http://127.0.0.1:{port}/", 2)[0] == 200, 30, f"the app to answer; output:\n{d.output}")
    failures: list[str] = []
    clients = [threading.Thread(target=burst, args=(port, c, failures)) for c in range(CLIENTS)]
    for t in clients:
        t.start()
    for t in clients:
        t.join(60)
    assert not failures and not any(t.is_alive() for t in clients)
    wanted = {(c, i) for c in range(CLIENTS) for i in range(EACH)}
    # The plain log and the app's log file both have every line, exactly once.
    wait_for(lambda: set(numbered(d.lines)) >= wanted, 20, "every request line in the output")
    log = tmp_path / ".devrun" / "logs" / "web.log"
    wait_for(lambda: log.exists() and set(numbered(log.read_text().splitlines())) >= wanted, 20,
             "every request line in the app's log file")
    for lines in (d.lines, log.read_text().splitlines()):
        seen = numbered(lines)
        assert len(seen) == len(wanted)
        for c in range(CLIENTS):  # one connection's requests come one after the other: in that order
            assert [i for client, i in seen if client == c] == list(range(EACH))
    assert "dropped" not in d.output


def test_a_request_finished_by_a_retiring_generation_is_still_logged(
        tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as release:
        release.settimeout(15)
        port = project(tmp_path, release.getsockname()[1])
        d = devrun("up", "--no-dashboard", cwd=tmp_path)
        wait_for(lambda: get(f"http://127.0.0.1:{port}/", 2)[0] == 200, 30, f"the app to answer; output:\n{d.output}")
        slow: list[tuple[int, str]] = []
        t = threading.Thread(target=lambda: slow.append(get(f"http://127.0.0.1:{port}/slow", 30)))
        t.start()
        held, _ = release.accept()  # the slow request is in flight
        with held:
            # The reload retires the generation serving /slow; once the new code answers, the old
            # generation finishes /slow, logs it, and exits right after.
            (tmp_path / "app.py").write_text((tmp_path / "app.py").read_text().replace("'v1'", "'v2'"))
            wait_for(lambda: get(f"http://127.0.0.1:{port}/", 2) == (200, "v2"), 20, "the new code")
            held.sendall(b"x")
        t.join(15)
    assert slow == [(200, "slow-v1")]
    d.wait_line(lambda ln: re.fullmatch(r"web\s+\| GET /slow 200 \d+ms", ln) is not None, 10)
