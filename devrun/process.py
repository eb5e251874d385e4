"""Starting and stopping one generation (one child process) of an app.

A generation runs ``python -m devrun.worker`` in its own session and process group, with the
app's listening socket and the write end of an event pipe inherited. Three small threads per
generation drain its event pipe and its output (a gevent child blocked on a full pipe would
stall every request) and reap it; they only post to the runner's inbox.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from devrun.config import App
from devrun.events import decode_wire

MAX_LINE = 16 * 1024


@dataclass(frozen=True)
class ChildMessage:
    generation: Generation
    message: dict


@dataclass(frozen=True)
class ChildOutput:
    generation: Generation
    line: str


@dataclass(frozen=True)
class ChildExited:
    generation: Generation
    returncode: int


Post = Callable[[object], None]


@dataclass(eq=False)
class Generation:
    app: str
    number: int
    proc: subprocess.Popen[bytes]
    started: float = field(default_factory=time.monotonic)
    ready: bool = False
    retired: bool = False  # told to stop: its exit is expected
    kill_at: float | None = None
    exited: bool = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal_group(self, sig: int) -> None:
        # The child leads its own process group; what the app spawned goes down with it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def retire(self, kill_at: float) -> None:
        """Ask it to finish in-flight requests and exit; it is killed if still there at kill_at."""
        if self.exited or self.retired:
            return
        self.retired = True
        self.kill_at = kill_at
        self.signal_group(signal.SIGTERM)

    def kill(self) -> None:
        self.retired = True
        self.signal_group(signal.SIGKILL)


_lifeline: tuple[int, int] | None = None


def lifeline_fd() -> int:
    """The read end of a pipe whose write end only the runner holds, for life: every child
    watches it, and EOF means the runner is gone (however it died)."""
    global _lifeline
    if _lifeline is None:
        _lifeline = os.pipe()  # both ends non-inheritable; the read end is passed explicitly
    return _lifeline[0]


def spawn(app: App, number: int, listener: socket.socket, env: dict[str, str], post: Post) -> Generation:
    read_fd, write_fd = os.pipe()
    cfg = app.config
    spec = {
        "name": app.name,
        "app": cfg.app,
        "cwd": str(app.root),
        "listen_fd": listener.fileno(),
        "event_fd": write_fd,
        "runner_pid": os.getpid(),
        "lifeline_fd": lifeline_fd(),
        "graceful_timeout": cfg.graceful_timeout,
        "debug": cfg.debug.model_dump(),
    }
    # The runner's own variables (the debugger PIN) win over the app's: the printed PIN must work.
    child_env = {**os.environ, **app.environment(), **env, "PYTHONUNBUFFERED": "1",
                 "DEVRUN_WORKER": json.dumps(spec)}
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "devrun.worker"],
            cwd=app.root,
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            pass_fds=(listener.fileno(), write_fd, lifeline_fd()),
            start_new_session=True,  # a terminal's Ctrl-C reaches only the runner
        )
    finally:
        os.close(write_fd)
    gen = Generation(app.name, number, proc)
    prefix = f"devrun-{app.name}-{number}"
    events = threading.Thread(target=_read_events, args=(gen, read_fd, post), name=f"{prefix}-events", daemon=True)
    output = threading.Thread(target=_read_output, args=(gen, post), name=f"{prefix}-output", daemon=True)
    reap = threading.Thread(target=_reap, args=(gen, post, (events, output)), name=f"{prefix}-reap", daemon=True)
    for thread in (events, output, reap):
        thread.start()
    return gen


def _read_events(gen: Generation, fd: int, post: Post) -> None:
    with open(fd, "rb", buffering=0) as pipe:
        buf = b""
        while chunk := pipe.read(65536):
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                message = decode_wire(line)
                if message is not None:
                    post(ChildMessage(gen, message))


def _read_output(gen: Generation, post: Post) -> None:
    assert gen.proc.stdout is not None
    with gen.proc.stdout as out:
        while line := out.readline(MAX_LINE):
            post(ChildOutput(gen, line.decode("utf-8", "replace").rstrip("\r\n")))


def _reap(gen: Generation, post: Post, readers: tuple[threading.Thread, ...]) -> None:
    # The exit is decided by waitpid, never by the pipes closing: a grandchild may hold them.
    returncode = gen.proc.wait()
    for reader in readers:  # let the last lines before a crash arrive before the exit does
        reader.join(timeout=0.5)
    post(ChildExited(gen, returncode))
