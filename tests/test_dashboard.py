"""The dashboard: rendering from events (recording console), keys, and a real pty run."""

from __future__ import annotations

import contextlib
import io
import os
import pty
import re
import select
import signal
import struct
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console

from devrun import events
from devrun.views.dashboard import Dashboard
from devrun.views.terminal import parse
from tests.helpers import alive, descendants, free_port, get, port_open, wait_for, write

NOW = 1_000_000.0


def board() -> Dashboard:
    d = Dashboard([("web", "http://127.0.0.1:5000/"), ("api", "http://127.0.0.1:5001/")], clock=lambda: NOW)
    return d


def screen(d: Dashboard, width: int = 120, height: int = 40) -> str:
    console = Console(record=True, width=width, height=height, color_system=None, file=io.StringIO())
    console.print(d.render(width, height))
    return console.export_text()


def at(event: events.Event, seconds_ago: float) -> events.Event:
    object.__setattr__(event, "at", NOW - seconds_ago)
    return event


@pytest.mark.parametrize("state", ["starting", "ready", "reloading", "error", "crashed", "backing off", "stopped"])
def test_every_state_is_shown_in_its_row(state: str) -> None:
    d = board()
    d.handle(events.StateChanged("api", state, 42))
    row = next(line for line in screen(d).splitlines() if " api " in line)
    assert state in row and "http://127.0.0.1:5001/" in row


def test_a_ready_app_row_has_pid_uptime_reloads_cause_rate_and_codes() -> None:
    d = board()
    d.handle(at(events.Reloading("web", ("pkg/views.py",)), 12))
    d.handle(at(events.Ready("web", 4242, "http://127.0.0.1:5000/", 40.0), 65))
    d.handle(events.StateChanged("web", "ready", 4242))
    d.handle(events.Requests("web", tuple(at(events.Request("web", "GET", "/x", status, 3.0), 1)
                                          for status in ("200", "404", "500", "201"))))
    row = next(line for line in screen(d).splitlines() if " web " in line)
    assert re.search(r"\b4242\b", row) and "1m05s" in row
    assert "pkg/views.py (12s ago)" in row
    assert re.search(r"\b1\b", row)  # one reload
    assert "0.8" in row  # 4 requests over the last 5 s
    assert "404 500 201" in row  # the last three


def test_an_app_in_error_shows_the_summary_in_its_row_and_the_traceback_in_the_pane() -> None:
    d = board()
    tb = 'Traceback (most recent call last):\n  File "app.py", line 3\n    def app(:\nSyntaxError: invalid syntax\n'
    d.handle(events.AppFailed("web", 7, "SyntaxError: invalid syntax (app.py, line 3)", tb))
    d.handle(events.StateChanged("web", "error", 7))
    text = screen(d)
    rows = text.split(" api ")[0]  # web's row, however many lines it takes
    assert "SyntaxError: invalid syntax (app.py, line 3)" in re.sub(r"\s+", " ", rows.replace("│", ""))
    d.key("l")
    d.key("l")  # requests -> output -> error
    assert 'File "app.py", line 3' in screen(d)


def test_a_traceback_the_app_prints_becomes_the_last_error() -> None:
    d = board()
    for line in ["Traceback (most recent call last):", '  File "views.py", line 9, in boom',
                 "    raise RuntimeError('kaboom')", "RuntimeError: kaboom"]:
        d.handle(events.Output("web", line))
    d.key("l")
    d.key("l")
    text = screen(d)
    assert "RuntimeError: kaboom" in text and 'File "views.py", line 9' in text


def test_output_is_text_never_markup_and_escapes_are_removed() -> None:
    d = board()
    d.handle(events.Output("web", "[/tmp/x] [bold]not bold[/bold] \x1b[2Jcleared?"))
    d.key("l")  # output pane
    text = screen(d)
    assert "[/tmp/x] [bold]not bold[/bold] cleared?" in text


def test_keys_select_switch_panes_and_send_commands() -> None:
    d = board()
    sent: list[object] = []
    d.post = sent.append
    assert d.selected == 0  # the first app is selected at start
    d.key("r")
    d.key("down")
    d.key("r")
    d.key("1")
    d.key("R")
    d.key("q")
    assert sent == [events.Command("restart", "web"), events.Command("restart", "api"),
                    events.Command("restart"), events.Command("quit")]
    assert d.pane == "requests"
    d.key("l")
    assert d.pane == "output"


def test_narrow_terminal_keeps_every_app_visible() -> None:
    d = board()
    d.handle(events.StateChanged("web", "ready", 1))
    d.handle(events.AppFailed("api", 2, "ImportError: No module named 'x'", "tb"))
    d.handle(events.StateChanged("api", "error", 2))
    text = screen(d, 80, 24)
    lines = text.splitlines()
    assert len(lines) <= 24 and all(len(line) <= 80 for line in lines)
    assert any(" web " in ln and "ready" in ln for ln in lines)
    assert any(" api " in ln and "ImportError" in ln for ln in lines)
    assert "PIN" not in lines[0]
    d.handle(events.Notice("", "PIN: 123-456-789"))
    assert "PIN 123-456-789" in screen(d, 80, 24).splitlines()[0]


def test_the_events_pane_lists_lifecycle_events_not_requests() -> None:
    d = board()
    d.handle(events.Reloading("api", ("api.py",)))
    d.handle(events.Requests("api", (events.Request("api", "GET", "/only-in-requests", "200", 1.0),)))
    d.handle(events.Exited("api", 9, 3, False))
    text = screen(d)
    assert "reload (api.py)" in text and "exited with code 3 (pid 9)" in text
    d.key("down")
    assert "GET /only-in-requests 200" in screen(d)


def test_terminal_key_parsing() -> None:
    assert parse("r\x1b[Aq\x1b[B1\x1b[15~x") == ["r", "up", "q", "down", "1", "x"]


# -- a real terminal ----------------------------------------------------------------------


class Pty:
    def __init__(self, args: list[str], cwd: Path) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: devrun on a 100x30 terminal
            os.chdir(cwd)
            os.environ.update(TERM="xterm-256color", PYTHONUNBUFFERED="1")
            os.execvp(args[0], args)
        import fcntl
        import termios
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
        self.buf = bytearray()

    def pump(self, seconds: float = 0.1) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ready, _, _ = select.select([self.fd], [], [], 0.02)
            if ready:
                try:
                    self.buf.extend(os.read(self.fd, 65536))
                except OSError:
                    return

    def text(self) -> str:
        return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", self.buf.decode(errors="replace"))

    def kill(self) -> None:
        for pid in [*descendants(self.pid), self.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.process
def test_dashboard_under_a_pseudo_terminal(tmp_path: Path, devrun: Callable[..., object]) -> None:
    import sys

    port = free_port()
    write(tmp_path / "app.py", "import os\ndef app(e, s):\n    s('200 OK', []); return [str(os.getpid()).encode()]\n")
    write(tmp_path / "devrun.yaml", f"apps:\n  shown: {{app: 'app:app', port: {port}}}\n")
    term = Pty([sys.executable, "-m", "devrun", "up"], tmp_path)
    try:
        first = wait_for(lambda: (term.pump(0.1), get(f"http://127.0.0.1:{port}/", 1)[1])[1], 30, "the app")
        wait_for(lambda: (term.pump(0.1), "shown" in term.text() and "ready" in term.text())[1], 10, "the row")
        assert "\x1b[?1049h" in term.buf.decode(errors="replace")  # the alternate screen
        kids = descendants(term.pid)
        os.write(term.fd, b"r")  # restart the selected (first) app
        wait_for(lambda: (term.pump(0.1), (b := get(f"http://127.0.0.1:{port}/", 1)[1]) != first and b)[1],
                 15, "a new pid after r")
        os.write(term.fd, b"q")
        status = wait_for(lambda: (term.pump(0.1), os.waitpid(term.pid, os.WNOHANG))[1][0] and True, 15, "q to quit")
        assert status
        assert "\x1b[?1049l" in term.buf.decode(errors="replace")  # the terminal is given back
        assert not port_open(port)
        wait_for(lambda: not any(alive(k) for k in kids + descendants(term.pid)), 3, "no child left")
    finally:
        term.kill()


@pytest.mark.process
def test_sigterm_gives_the_terminal_back(tmp_path: Path, devrun: Callable[..., object]) -> None:
    import sys

    port = free_port()
    write(tmp_path / "app.py", "def app(e, s):\n    s('200 OK', []); return [b'x']\n")
    write(tmp_path / "devrun.yaml", f"apps:\n  shown: {{app: 'app:app', port: {port}}}\n")
    term = Pty([sys.executable, "-m", "devrun", "up"], tmp_path)
    try:
        wait_for(lambda: (term.pump(0.1), "ready" in term.text())[1], 30, "the dashboard")
        os.kill(term.pid, signal.SIGTERM)
        status = None
        end = time.monotonic() + 15
        while time.monotonic() < end:
            term.pump(0.1)
            pid, status = os.waitpid(term.pid, os.WNOHANG)
            if pid:
                break
        assert status is not None and os.waitstatus_to_exitcode(status) == 0
        term.pump(0.2)
        out = term.buf.decode(errors="replace")
        assert out.rfind("\x1b[?1049l") > out.rfind("\x1b[?1049h")  # left the alternate screen last
        assert not port_open(port)
    finally:
        term.kill()


def test_an_edit_of_devrun_yaml_adds_and_removes_rows_and_a_rejected_one_stays_in_sight() -> None:
    d = Dashboard([("web", "http://127.0.0.1:5000/"), ("api", "http://127.0.0.1:5001/")])
    d.handle(events.Ready("web", 7, "http://127.0.0.1:5000/", 5))
    d.key("2")
    d.handle(events.ConfigRejected("", ("devrun.yaml:3:9: apps.api.port: should be an integer",)))
    assert "config not applied: devrun.yaml:3:9: apps.api.port" in screen(d)
    d.handle(events.AppsChanged("", (("web", "http://127.0.0.1:5000/"), ("new", "http://127.0.0.1:5002/"))))
    text = screen(d)
    assert "config not applied" not in text and " new " in text and " api " not in text
    assert "7" in text.split(" web ")[1].split("\n")[0]  # web kept its state (pid 7)
    d.handle(events.AppsChanged("", ()))
    assert "no apps in devrun.yaml" in screen(d)
    d.key("r")  # nothing to restart: no crash, no command
    d.key("down")
