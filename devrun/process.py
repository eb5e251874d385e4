"""Starting and stopping one generation (one child process) of an app.

A spawned generation runs ``python -m devrun.worker`` in its own session and process group,
with the app's listening socket and the write end of an event pipe inherited (a forked one
comes from the fork server, see forking.py). Three small threads per generation drain its
event pipe and its output (a gevent child blocked on a full pipe would stall every request)
and reap it; they only post to the runner's inbox.
"""

from __future__ import annotations

import contextlib
import ctypes
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
from typing import IO, Protocol

from devrun.config import App
from devrun.events import decode_wire
from devrun.patterns import Matcher

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


class Child(Protocol):
    """What a generation needs of its process: subprocess.Popen, or a forked ForkedChild."""

    pid: int
    stdout: IO[bytes] | None

    def wait(self) -> int: ...


class ForkedChild:
    """A generation forked by the fork server and adopted by the runner (a subreaper)."""

    def __init__(self, pid: int, stdout_fd: int):
        self.pid = pid
        self.stdout: IO[bytes] | None = open(stdout_fd, "rb")  # noqa: SIM115 - closed by its reader

    def wait(self) -> int:
        while True:
            try:
                _, status = os.waitpid(self.pid, 0)
            except InterruptedError:
                continue
            except ChildProcessError:
                return -signal.SIGKILL  # reaped elsewhere: its status is lost
            return os.waitstatus_to_exitcode(status)


@dataclass(eq=False)
class Generation:
    app: str
    number: int
    proc: Child
    started: float = field(default_factory=time.monotonic)
    retired: bool = False  # told to stop: its exit is expected
    kill_at: float | None = None
    exited: bool = False
    closed: bool = False  # stopped accepting (told us so, or exited)
    going: bool = False  # told to start accepting
    go_at: float | None = None  # at the latest, even if the previous one never said closed
    control: int | None = None  # write end of the pipe the child reads our messages from

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

    def tell(self, message: dict[str, object]) -> bool:
        """Send the child a message; never blocks (a child too busy to read misses it)."""
        if self.control is None or self.exited:
            return False
        try:
            os.write(self.control, json.dumps(message).encode() + b"\n")
        except (BlockingIOError, BrokenPipeError, OSError):
            return False
        return True

    def close_control(self) -> None:
        """On the runner's main thread only, as tell() is: closed under a tell() from another
        thread, the fd number could already name another file."""
        fd, self.control = self.control, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def go(self) -> None:
        """Let a loaded generation start accepting connections."""
        if not self.going and not self.exited:
            self.going = True
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.proc.pid, signal.SIGUSR1)


_lifeline: tuple[int, int] | None = None


def lifeline_fd() -> int:
    """The read end of a pipe whose write end only the runner holds, for life: every child
    watches it, and EOF means the runner is gone (however it died)."""
    global _lifeline
    if _lifeline is None:
        _lifeline = os.pipe()  # both ends non-inheritable; the read end is passed explicitly
    return _lifeline[0]


PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Adopt orphaned descendants (forked generations), so the runner can reap them and
    report how they exited. Linux only."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


# Pids the runner waits for itself; any other child that exits is an adopted orphan to reap.
known_pids: set[int] = set()


def reap_orphans() -> None:
    """Reap adopted processes nobody waits for (as a subreaper we inherit the app's orphans)."""
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if info is None or info.si_pid in known_pids:
            return  # nothing exited, or its own reaper thread will collect it
        with contextlib.suppress(ChildProcessError):
            os.waitpid(info.si_pid, os.WNOHANG)


def generation_spec(app: App, number: int, listener: socket.socket) -> dict[str, object]:
    cfg = app.config
    return {
        "name": app.name,
        "number": number,
        "app": cfg.app,
        "cwd": str(app.root),
        "listen_fd": listener.fileno(),
        "runner_pid": os.getpid(),
        "lifeline_fd": lifeline_fd(),
        "graceful_timeout": cfg.graceful_timeout,
        "debug": cfg.debug.model_dump(),
        "watch_roots": Matcher(app.root, cfg.watch).roots,  # the project: never preloaded
        "live": cfg.live,
    }


def control_pipe() -> tuple[int, int]:
    """(read end for the child, write end for the runner, non-blocking)."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    return read_fd, write_fd


def child_environment(app: App, env: dict[str, str]) -> dict[str, str]:
    # The runner's own variables (the debugger PIN) win over the app's: the printed PIN must work.
    return {**os.environ, **app.environment(), **env, "PYTHONUNBUFFERED": "1"}


def spawn(app: App, number: int, listener: socket.socket, env: dict[str, str], post: Post,
          report_modules: bool = False) -> Generation:
    """A generation as a fresh interpreter (the `reload: spawn` path)."""
    read_fd, write_fd = os.pipe()
    control_r, control_w = control_pipe()
    spec = {**generation_spec(app, number, listener), "event_fd": write_fd, "control_fd": control_r,
            "report_modules": report_modules}
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "devrun.worker"],
            cwd=app.root,
            env={**child_environment(app, env), "DEVRUN_WORKER": json.dumps(spec)},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            pass_fds=(listener.fileno(), write_fd, control_r, lifeline_fd()),
            start_new_session=True,  # a terminal's Ctrl-C reaches only the runner
        )
    except BaseException:
        os.close(control_w)
        raise
    finally:
        os.close(write_fd)
        os.close(control_r)
    return watch(Generation(app.name, number, proc, control=control_w), read_fd, post)


def watch(gen: Generation, read_fd: int, post: Post) -> Generation:
    """Start the threads that drain a generation's pipes and reap it."""
    known_pids.add(gen.pid)
    prefix = f"devrun-{gen.app}-{gen.number}"
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
    known_pids.discard(gen.pid)
    for reader in readers:  # let the last lines before a crash arrive before the exit does
        reader.join(timeout=0.5)
    post(ChildExited(gen, returncode))
