"""The debugger's PIN lockout outlives a reload, and every wrong PIN is reported (F12, C19).

The child seeds Werkzeug's failure counter from the generation spec (`pin_failures`) and reports
each failure on its event pipe and its stderr; the runner keeps the highest count and hands it
to the next generation.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client

from devrun import wire
from devrun.loopback import LOOPBACK
from devrun.worker.debugging import PIN_ATTEMPTS, debugger_class, pin_failure_message, wrap_debugger
from devrun.worker.reporting import Reporter
from devrun.worker.serve import pin_reporter
from tests.helpers import Devrun, free_port, get, wait_for, write

PIN = "123-456-789"
WRONG = "000-000-000"


def boom(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    raise RuntimeError("kaboom")


@pytest.fixture(autouse=True)
def run_pin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WERKZEUG_DEBUG_PIN", PIN)


def quick_debugger(pin_failures: int, seen: list[int]) -> Any:
    class Quick(debugger_class()):  # type: ignore[misc]
        def pause(self, count: int) -> None:  # Werkzeug's brake (0.5 s, then 5 s) is not under test
            pass

    return Quick(boom, evalex=True, pin=True, trust=LOOPBACK, pin_failures=pin_failures, on_pin=seen.append)


def pinauth(app: Any, pin: str, secret: str) -> dict[str, bool]:
    query = urllib.parse.urlencode({"__debugger__": "yes", "cmd": "pinauth", "pin": pin, "s": secret})
    reply = Client(app).get(f"/?{query}", headers={"Host": "127.0.0.1:5000"},
                            environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert reply.status_code == 200, reply.data
    return json.loads(reply.data)


def test_a_debugger_seeded_with_ten_failures_is_locked() -> None:
    seen: list[int] = []
    debugger = quick_debugger(PIN_ATTEMPTS, seen)
    assert pinauth(debugger, PIN, debugger.secret) == {"auth": False, "exhausted": True}
    assert seen == []


def test_the_seed_reaches_the_debugger_behind_the_guard() -> None:
    guarded = wrap_debugger(boom, evalex=True, pin=True, pin_failures=PIN_ATTEMPTS)
    assert pinauth(guarded, PIN, guarded.debugged.secret) == {"auth": False, "exhausted": True}


def test_each_wrong_pin_counts_on_from_the_seed_and_is_reported() -> None:
    seen: list[int] = []
    debugger = quick_debugger(3, seen)
    assert pinauth(debugger, WRONG, debugger.secret) == {"auth": False, "exhausted": False}
    assert seen == [4]
    for _ in range(PIN_ATTEMPTS - 4):
        pinauth(debugger, WRONG, debugger.secret)
    assert seen == list(range(4, PIN_ATTEMPTS + 1))
    assert pinauth(debugger, PIN, debugger.secret) == {"auth": False, "exhausted": True}
    assert seen[-1] == PIN_ATTEMPTS  # refusals while locked are not counted (nor reported) again


def test_the_right_pin_starts_the_count_again_and_says_so() -> None:
    seen: list[int] = []
    debugger = quick_debugger(5, seen)
    assert pinauth(debugger, PIN, debugger.secret) == {"auth": True, "exhausted": False}
    assert seen == [0]


def test_a_failure_is_an_event_and_a_line_for_the_user(capsys: pytest.CaptureFixture[str]) -> None:
    read_fd, write_fd = os.pipe()
    try:
        report = pin_reporter(Reporter(write_fd))
        report(4)
        report(PIN_ATTEMPTS)
        report(0)
        lines = os.read(read_fd, 65536).splitlines()
    finally:
        os.close(read_fd)
        os.close(write_fd)
    assert [wire.decode(ln) for ln in lines] == [wire.PinFailed(4), wire.PinFailed(PIN_ATTEMPTS), wire.PinOk()]
    assert capsys.readouterr().err.splitlines() == [
        "debugger: wrong PIN (attempt 4 of 10)", "debugger: too many wrong PINs; locked until devrun restarts"]
    assert pin_failure_message(PIN_ATTEMPTS) == "debugger: too many wrong PINs; locked until devrun restarts"


# -- a real child, started by hand with a spec as the runner writes it --------------------------

APP = """
    def app(environ, start_response):
        raise RuntimeError('kaboom-1')
"""


@pytest.fixture
def child(tmp_path: Path) -> Iterator[Callable[[int], tuple[int, list[dict[str, Any]]]]]:
    """Start `python -m devrun.worker` with a spec (pin_failures given); returns its port and the
    list its event messages are collected into."""
    started: list[tuple[subprocess.Popen[bytes], socket.socket, int]] = []

    def start(pin_failures: int) -> tuple[int, list[wire.Message]]:
        write(tmp_path / "app.py", APP)
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        listener.set_inheritable(True)
        event_r, event_w = os.pipe()
        spec = wire.WorkerSpec(name="web", number=1, host="127.0.0.1", app="app:app", cwd=str(tmp_path),
                               listen_fd=listener.fileno(), runner_pid=os.getpid(), lifeline_fd=None,
                               graceful_timeout=1, debug=wire.DebugSpec(enabled=True), watch_roots=(), live=False,
                               event_fd=event_w, pin_failures=pin_failures)
        proc = subprocess.Popen([sys.executable, "-m", "devrun.worker"], cwd=tmp_path,
                                env={**os.environ, wire.SPEC_ENV: spec.to_json(), "WERKZEUG_DEBUG_PIN": PIN},
                                pass_fds=(listener.fileno(), event_w), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        os.close(event_w)
        started.append((proc, listener, event_r))
        messages: list[wire.Message] = []

        def read() -> None:
            with os.fdopen(event_r, "rb", closefd=False) as events:
                for line in events:
                    if (msg := wire.decode(line)) is not None:
                        messages.append(msg)

        threading.Thread(target=read, daemon=True).start()
        wait_for(lambda: wire.Loaded() in messages, 30, f"the child to load: {messages}")
        proc.send_signal(signal.SIGUSR1)  # the runner's go
        return listener.getsockname()[1], messages

    yield start
    for proc, listener, event_r in started:
        proc.kill()
        proc.wait(10)
        listener.close()
        os.close(event_r)


def secret_from(port: int) -> str:
    status, page = get(f"http://127.0.0.1:{port}/")
    match = re.search(r'SECRET = "([^"]+)"', page)
    assert status == 500 and match, page[:300]
    return match.group(1)


def http_pinauth(port: int, pin: str, secret: str) -> dict[str, bool]:
    query = urllib.parse.urlencode({"__debugger__": "yes", "cmd": "pinauth", "pin": pin, "s": secret})
    status, body = get(f"http://127.0.0.1:{port}/?{query}", timeout=30)
    assert status == 200, body
    return json.loads(body)


@pytest.mark.process
def test_a_child_started_with_the_runs_count_is_locked_and_reports_more(
    child: Callable[[int], tuple[int, list[wire.Message]]]
) -> None:
    port, messages = child(PIN_ATTEMPTS)
    assert http_pinauth(port, PIN, secret_from(port)) == {"auth": False, "exhausted": True}
    port, messages = child(2)
    assert http_pinauth(port, WRONG, secret_from(port)) == {"auth": False, "exhausted": False}
    assert wire.PinFailed(3) in messages


# -- through the runner: needs it to keep the count and pass it as pin_failures -----------------

VERSIONED = """
    VERSION = {version}

    def app(environ, start_response):
        if environ['PATH_INFO'] == '/boom':
            raise RuntimeError('kaboom')
        start_response('200 OK', [('Content-Type', 'text/plain')])
        return [b'v%d' % VERSION]
"""


@pytest.mark.process
@pytest.mark.parametrize("mode", ["fork", "spawn"])
def test_twelve_wrong_pins_then_a_reload_keep_the_debugger_locked(
    tmp_path: Path, devrun: Callable[..., Devrun], mode: str
) -> None:
    port = free_port()
    write(tmp_path / "app.py", VERSIONED.format(version=1))
    write(tmp_path / "devrun.yaml", f"""
        apps:
          web: {{app: "app:app", port: {port}, reload_delay: 0.05, reload: {mode}, debug: {{enabled: true}}}}
    """)
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    wait_for(lambda: get(f"http://127.0.0.1:{port}/", 2)[1] == "v1", 30, "the app")
    pin = re.search(r"PIN: (\d{3}-\d{3}-\d{3})", d.output).group(1)  # type: ignore[union-attr]
    secret = secret_from_path(port)
    # At once, as a guesser would: Werkzeug's brake (up to 5 s each) runs per request.
    replies: list[dict[str, bool]] = []
    guesses = [threading.Thread(target=lambda: replies.append(http_pinauth(port, WRONG, secret))) for _ in range(12)]
    for t in guesses:
        t.start()
    for t in guesses:
        t.join(60)
    assert len(replies) == 12 and not any(r["auth"] for r in replies)
    assert sum(r["exhausted"] for r in replies) == 2  # the 11th and 12th find it locked
    write(tmp_path / "app.py", VERSIONED.format(version=2))
    wait_for(lambda: get(f"http://127.0.0.1:{port}/", 2)[1] == "v2", 30, "the reload")
    assert http_pinauth(port, pin, secret_from_path(port)) == {"auth": False, "exhausted": True}
    # The user was told, in the app's output.
    d.wait_line(lambda ln: "debugger: wrong PIN (attempt 1 of 10)" in ln, 10)
    d.wait_line(lambda ln: "debugger: too many wrong PINs; locked until devrun restarts" in ln, 10)


def secret_from_path(port: int) -> str:
    status, page = get(f"http://127.0.0.1:{port}/boom")
    match = re.search(r'SECRET = "([^"]+)"', page)
    assert status == 500 and match, page[:300]
    return match.group(1)
