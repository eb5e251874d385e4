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
import dataclasses
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import IO, Protocol

from devrun import wire
from devrun.config import App
from devrun.watch.patterns import Matcher

MAX_LINE = 16 * 1024
# An event line longer than this is not one of ours (the child's own lines are at most
# wire.MAX_WIRE): it is skipped up to its newline instead of being buffered without bound.
MAX_EVENT_LINE = 64 * 1024
# After a generation has been reaped, its pipes are read this much longer: lines written just
# before the exit still arrive, but a process that escaped its group never pins a reader thread.
LINGER = 2.0
POLL_MS = 250


@dataclass(frozen=True)
class ChildMessage:
    generation: Generation
    message: wire.ChildReport


@dataclass(frozen=True)
class ChildOutput:
    generation: Generation
    line: str


@dataclass(frozen=True)
class ChildExited:
    generation: Generation
    returncode: int


# How a generation's reader threads hand on what they read (to the supervisor that started it).
Post = Callable[["ChildMessage | ChildOutput | ChildExited"], None]


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
        return wait_exit(self.pid)


def wait_exit(pid: int) -> int:
    """Wait for an adopted child (one the runner did not start itself) and reap it."""
    while True:
        try:
            _, status = os.waitpid(pid, 0)
        except InterruptedError:
            continue
        except ChildProcessError:
            return -signal.SIGKILL  # reaped elsewhere: its status is lost
        return os.waitstatus_to_exitcode(status)


class GenState(Enum):
    """Where a generation is in its life. It only moves forward, and may skip a step (one that
    crashes while loading goes straight to EXITED; one retired before it accepted never will)."""

    LOADING = 1  # started: importing the app, then waiting for the go (SIGUSR1)
    ACCEPTING = 2  # told to accept connections on the app's port
    CLOSED = 3  # stopped accepting (it said so), or never will: the next one may take over
    EXITED = 4  # reaped


@dataclass(eq=False)
class Generation:
    app: str
    number: int
    proc: Child
    started: float = field(default_factory=time.monotonic)
    state: GenState = GenState.LOADING
    told_to_stop: bool = False  # SIGTERM or SIGKILL sent: its exit is expected
    kill_at: float | None = None  # told to stop and still there then: SIGKILL
    accept_deadline: float | None = None  # accepts then at the latest, even if the previous one never closed
    control_fd: int | None = None  # write end of the pipe the child reads our messages from
    reaped_at: float | None = None  # set by the reaper thread: the leader is gone, its pid may be reused
    group_kill_at: float | None = None  # after the leader exited: when what is left in its group dies
    pidfd: int | None = None  # names this very process: a signal through it never hits a reused pid
    templates_in_place: bool = False  # its framework applies a template edit without a restart

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def loading(self) -> bool:
        return self.state is GenState.LOADING

    @property
    def exited(self) -> bool:
        return self.state is GenState.EXITED

    @property
    def done_accepting(self) -> bool:
        """Stopped accepting, or never will: a successor need not wait for it."""
        return self.state in (GenState.CLOSED, GenState.EXITED)

    def _advance(self, state: GenState) -> None:
        if state.value > self.state.value:
            self.state = state

    def mark_accepting(self) -> None:
        """It accepts already (a child that went straight to serving)."""
        self._advance(GenState.ACCEPTING)

    def mark_closed(self) -> None:
        self._advance(GenState.CLOSED)

    def mark_exited(self) -> None:
        self._advance(GenState.EXITED)

    def signal_group(self, sig: int) -> None:
        # The child leads its own process group; what the app spawned goes down with it. Once the
        # leader is reaped the group's id stays reserved while any member lives, so this still
        # reaches exactly what the app left behind (see group_gone for when it is empty).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def orphaned(self, kill_at: float) -> None:
        """The leader exited: what it left in its group gets SIGTERM now (a crash never told it)
        and SIGKILL at kill_at at the latest (or at its retirement's deadline, if sooner)."""
        if not self.told_to_stop:
            self.signal_group(signal.SIGTERM)
        self.group_kill_at = kill_at if self.kill_at is None else min(kill_at, self.kill_at)

    def group_gone(self, now: float) -> bool:
        """True once nothing is left in the process group this generation led (killing what
        is, at group_kill_at)."""
        try:
            os.killpg(self.proc.pid, 0)
        except (ProcessLookupError, PermissionError):
            return True  # empty (a reused number owned by someone else is not ours either)
        if self.group_kill_at is not None and now >= self.group_kill_at:
            self.signal_group(signal.SIGKILL)
            return True
        return False

    def retire(self, kill_at: float) -> None:
        """Ask it to finish in-flight requests and exit; it is killed if still there at kill_at.
        One that never accepted has nothing to finish: a successor need not wait for it."""
        if self.loading:
            self.mark_closed()
        if self.exited or self.told_to_stop:
            return
        self.told_to_stop = True
        self.kill_at = kill_at
        self.signal_group(signal.SIGTERM)

    def kill(self) -> None:
        if self.loading:
            self.mark_closed()  # it never accepted a connection
        self.told_to_stop = True
        self.signal_group(signal.SIGKILL)

    def tell(self, message: wire.Message) -> bool:
        """Send the child a message; never blocks (a child too busy to read misses it)."""
        if self.control_fd is None or self.exited:
            return False
        try:
            os.write(self.control_fd, wire.encode(message))
        except (BlockingIOError, BrokenPipeError, OSError):
            return False
        return True

    def close_control(self) -> None:
        """Close the control pipe and the pidfd. On the runner's main thread only, as tell()
        and accept() are: closed under them from another thread, the fd number could already
        name another file."""
        for fd in (self.control_fd, self.pidfd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.control_fd = self.pidfd = None

    def accept(self) -> None:
        """Let a loaded generation start accepting connections (SIGUSR1)."""
        if self.loading:
            self._advance(GenState.ACCEPTING)
            self._signal_leader(signal.SIGUSR1)

    def _signal_leader(self, sig: int) -> None:
        # SIGUSR1's default action kills: sent to a reaped child's reused pid, it would hit a
        # stranger, so it goes through the pidfd where there is one.
        with contextlib.suppress(ProcessLookupError, PermissionError, OSError):
            if self.pidfd is not None:
                signal.pidfd_send_signal(self.pidfd, sig)
            elif self.reaped_at is None:
                os.kill(self.proc.pid, sig)


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
        return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
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


def adopted_orphans() -> list[tuple[int, int]]:
    """(pid, process group) of the live processes the runner adopted as a subreaper: what an
    app's generation left when it exited. Linux only ([] elsewhere)."""
    out = []
    for pid in _children():
        if pid in known_pids:
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            with open(f"/proc/{pid}/stat", "rb") as f:
                state, ppid, pgrp = f.read().rsplit(b")", 1)[1].split()[:3]
            if int(ppid) == os.getpid() and state != b"Z":
                out.append((pid, int(pgrp)))
    return out


def _children() -> list[int]:
    """The runner's children: from each thread's `children` list (a few reads), else from a
    scan of every process."""
    pids: list[int] = []
    try:
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/children", "rb") as f:
                pids.extend(int(p) for p in f.read().split())
        return pids
    except FileNotFoundError:  # a kernel without CONFIG_PROC_CHILDREN, or a thread just gone
        pass
    except OSError:
        return []
    with contextlib.suppress(OSError):
        return [int(name) for name in os.listdir("/proc") if name.isdigit()]
    return []


def process_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return "?"


def generation_spec(app: App, number: int, listener: socket.socket, pin_failures: int = 0,
                    report_modules: bool = False) -> wire.WorkerSpec:
    cfg = app.config
    debug = cfg.debug
    return wire.WorkerSpec(
        name=app.name, number=number, host=cfg.host, app=cfg.app, cwd=str(app.root),
        listen_fd=listener.fileno(), runner_pid=os.getpid(), lifeline_fd=lifeline_fd(),
        graceful_timeout=cfg.graceful_timeout,
        debug=wire.DebugSpec(debug.enabled, debug.evalex, debug.pin, debug.allow_remote),
        watch_roots=tuple(Matcher(app.root, cfg.watch).roots), live=cfg.live, pin_failures=pin_failures,
        report_modules=report_modules)


def control_pipe() -> tuple[int, int]:
    """(read end for the child, write end for the runner, non-blocking)."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    return read_fd, write_fd


def child_environment(app: App, env: dict[str, str]) -> dict[str, str]:
    # The runner's own variables (the debugger PIN) win over the app's: the printed PIN must work.
    return {**os.environ, **app.environment(), **env, "PYTHONUNBUFFERED": "1"}


def spawn(app: App, number: int, listener: socket.socket, env: dict[str, str], post: Post,
          report_modules: bool = False, pin_failures: int = 0) -> Generation:
    """A generation as a fresh interpreter (the `reload: spawn` path)."""
    read_fd, write_fd = os.pipe()
    control_r, control_w = control_pipe()
    spec = dataclasses.replace(generation_spec(app, number, listener, pin_failures, report_modules),
                               event_fd=write_fd, control_fd=control_r)
    try:  # an OSError (the folder gone, out of processes) is the supervisor's to report
        proc = subprocess.Popen(
            [sys.executable, "-m", "devrun.worker"],
            cwd=app.root,
            env={**child_environment(app, env), wire.SPEC_ENV: spec.to_json()},
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
    return start_readers(Generation(app.name, number, proc, control_fd=control_w), read_fd, post)


def start_readers(gen: Generation, read_fd: int, post: Post) -> Generation:
    """Start the threads that drain a generation's pipes and reap it."""
    known_pids.add(gen.pid)
    # Our child, not reaped before the reaper thread below starts: the pidfd names this process.
    with contextlib.suppress(OSError, AttributeError):
        gen.pidfd = os.pidfd_open(gen.pid)
    prefix = f"devrun-{gen.app}-{gen.number}"
    events = threading.Thread(target=_read_events, args=(gen, read_fd, post), name=f"{prefix}-events", daemon=True)
    output = threading.Thread(target=_read_output, args=(gen, post), name=f"{prefix}-output", daemon=True)
    reap = threading.Thread(target=_reap, args=(gen, post, (events, output)), name=f"{prefix}-reap", daemon=True)
    for thread in (events, output, reap):
        thread.start()
    return gen


def read_lines(gen: Generation, fd: int, on_line: Callable[[bytes], None], limit: int, split_long: bool) -> None:
    """Hand on each line read from fd until EOF, or until LINGER after the generation was
    reaped (a process that escaped its group may hold the pipe open for ever). A line longer
    than limit is cut into pieces (split_long) or skipped to its newline."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    buf = b""
    skipping = False
    while True:
        if not poller.poll(POLL_MS):
            if gen.reaped_at is not None and time.monotonic() > gen.reaped_at + LINGER:
                break
            continue
        try:
            chunk = os.read(fd, 65536)
        except InterruptedError:
            continue
        except OSError:
            break
        if not chunk:
            break
        *lines, buf = (buf + chunk).split(b"\n")
        for line in lines:
            if not skipping:
                _hand_on(line, on_line, limit, split_long)
            skipping = False
        if len(buf) > limit:  # no newline yet: never buffer more than limit
            if split_long:
                _hand_on(buf[:len(buf) - len(buf) % limit], on_line, limit, split_long)
                buf = buf[len(buf) - len(buf) % limit:]
            else:
                skipping, buf = True, b""
    if buf and not skipping:
        on_line(buf)


def _hand_on(line: bytes, on_line: Callable[[bytes], None], limit: int, split_long: bool) -> None:
    if len(line) <= limit:
        on_line(line)
    elif split_long:
        for start in range(0, len(line), limit):
            on_line(line[start:start + limit])


def _read_events(gen: Generation, fd: int, post: Post) -> None:
    def on_line(line: bytes) -> None:
        message = wire.decode(line)
        if isinstance(message, wire.ChildReport):
            post(ChildMessage(gen, message))

    try:
        read_lines(gen, fd, on_line, MAX_EVENT_LINE, split_long=False)
    finally:
        os.close(fd)


def _read_output(gen: Generation, post: Post) -> None:
    assert gen.proc.stdout is not None
    with gen.proc.stdout as out:
        read_lines(gen, out.fileno(),
                   lambda line: post(ChildOutput(gen, line.decode("utf-8", "replace").rstrip("\r"))),
                   MAX_LINE, split_long=True)


def _reap(gen: Generation, post: Post, readers: tuple[threading.Thread, ...]) -> None:
    # The exit is decided by waitpid, never by the pipes closing: a grandchild may hold them.
    returncode = gen.proc.wait()
    gen.reaped_at = time.monotonic()
    known_pids.discard(gen.pid)
    for reader in readers:  # let the last lines before a crash arrive before the exit does
        reader.join(timeout=0.5)
    post(ChildExited(gen, returncode))
