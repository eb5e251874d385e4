"""Shared helpers for process-level tests: real `devrun up` processes on 127.0.0.1.

Every wait is bounded and polls an observable event (a line printed, a port answering, a
response body); every process started is killed with its whole process tree.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


def wait_for(pred: Callable[[], T], timeout: float, what: str, every: float = 0.02) -> T:
    """Poll pred until it returns something truthy; fail the test after timeout seconds."""
    end = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < end:
        try:
            value = pred()
            if value:
                return value
        except Exception as exc:  # a port not answering yet, a file not there yet
            last_exc = exc
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_exc})")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def descendants(pid: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(Exception):
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                kids.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


class Devrun:
    """A `devrun` process whose output is collected line by line."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str] | None = None):
        self.args = args
        self.cwd = cwd
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "NO_COLOR": "1", **(env or {})}
        self.lines: list[str] = []
        self.proc: subprocess.Popen[str] | None = None
        self.pids: set[int] = set()

    def start(self) -> Devrun:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "devrun", *self.args], cwd=self.cwd, env=self.env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, start_new_session=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self) -> None:
        assert self.proc and self.proc.stdout
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_line(self, pred: Callable[[str], bool], timeout: float = 30, start: int = 0) -> str:
        try:
            return wait_for(lambda: next((ln for ln in self.lines[start:] if pred(ln)), None), timeout,
                            "a matching output line")
        except AssertionError as exc:  # the output as it is at the timeout, not as it was at the call
            raise AssertionError(f"{exc}; output so far:\n{self.output}") from None

    def children(self) -> list[int]:
        assert self.proc
        kids = descendants(self.proc.pid)
        self.pids.update(kids)
        return kids

    def interrupt(self, timeout: float = 20) -> int:
        assert self.proc
        self.children()
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is None:
            return
        for pid in [*self.children(), *self.pids]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            self.proc.wait(5)


# App code for a request that stays in flight until the test releases it (see Held): it connects
# to the port written in `release-port` of the app's folder and waits for one byte.
HOLD = "socket.create_connection(('127.0.0.1', int(open('release-port').read())), timeout=60).recv(1)"


class Held:
    """A slow request without a sleep: the app's HOLD connects here, so accept() says the request
    is in flight, and release() lets it finish, exactly when the test says."""

    def __init__(self, folder: Path, timeout: float = 15):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(timeout)
        (folder / "release-port").write_text(str(self.server.getsockname()[1]))
        self.conn: socket.socket | None = None

    def accept(self) -> None:
        self.conn, _ = self.server.accept()

    def release(self) -> None:
        if self.conn is not None:
            self.conn.sendall(b"x")

    def close(self) -> None:
        for sock in (self.conn, self.server):
            if sock is not None:
                sock.close()
