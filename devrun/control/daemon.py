"""The `.devrun/` state folder beside devrun.yaml, the one-runner-per-config lock, and detaching.

A runner holds an exclusive lock on `.devrun/runner.pid` for as long as it lives, and writes its
pid there. The lock, not the file, says whether a runner is alive: the kernel drops it however
the runner dies, so a pid file left by a killed runner is stale by construction and is simply
taken over. The folder is the owner's only (0700); so is everything in it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from devrun import statefiles
from devrun.control import client, protocol
from devrun.control.protocol import AlreadyRunning
from devrun.events import AppStatus

STATE_DIR = statefiles.STATE_DIR
PID_FILE = "runner.pid"
RUNNER_LOG = "runner.log"
LOG_DIR = "logs"


def state_dir(config_file: Path) -> Path:
    """`.devrun/` beside the config, created 0700 and tightened if it was looser; a symlink or a
    folder of another user is refused (statefiles.UnsafeState)."""
    return statefiles.state_dir(config_file.resolve().parent)


def socket_path(config_file: Path) -> Path:
    return protocol.socket_path(state_dir(config_file))


class RunnerLock:
    """Held by the running runner; a second runner for the same config gets AlreadyRunning."""

    def __init__(self, config_file: Path):
        self.config_file = config_file
        self.path = state_dir(config_file) / PID_FILE
        self.fd: int | None = None

    def acquire(self) -> None:
        # Never replaced when it is a symlink: two runners starting at once could each remove
        # the other's fresh file and both get a lock. The user removes the link instead.
        fd = statefiles.open_private(self.path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid_fd(fd)
            os.close(fd)
            raise AlreadyRunning.for_config(pid, self.config_file) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            os.close(self.fd)
            self.fd = None


def read_pid(path: Path) -> int | None:
    try:
        text = statefiles.read_private(path, 64).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _read_pid_fd(fd: int) -> int | None:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def running_pid(config_file: Path) -> int | None:
    """The pid of the runner alive for this config, or None (a stale pid file is not one)."""
    path = state_dir(config_file) / PID_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError:
        if os.path.islink(path):  # never a live runner's: it would have refused to start
            raise statefiles.link_refused(path) from None
        raise
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_pid_fd(fd) or -1  # locked: alive, even if its pid is not written yet
    else:
        return None
    finally:
        os.close(fd)


def wait_stopped(config_file: Path, timeout: float) -> bool:
    """Whether the runner for this config is gone, waiting for it up to timeout seconds."""
    end = time.monotonic() + timeout
    while running_pid(config_file) and time.monotonic() < end:
        time.sleep(0.05)
    return not running_pid(config_file)


def up_detached(config_file: Path, apps: list[str]) -> int:
    """`devrun up -d`: start the runner in the background, wait for its apps, say how they are;
    the exit status."""
    pid = running_pid(config_file)
    if pid:
        print(f"devrun: {AlreadyRunning.for_config(pid, config_file)}", file=sys.stderr)
        return 1
    path = socket_path(config_file)

    def settled() -> tuple[bool, str]:
        status = client.request(path, "status", timeout=2)
        apps = status.get("apps", []) if isinstance(status, dict) else []
        states = [a.get("state") for a in apps if isinstance(a, dict)]
        return bool(states) and not any(s in (AppStatus.STARTING, AppStatus.RELOADING) for s in states), ""

    pid, problem = detach(["up", "--no-dashboard", "--detached", "-c", str(config_file), *apps],
                          config_file, settled)
    if problem:
        print(f"devrun: the runner (pid {pid}) did not come up:\n{problem}", file=sys.stderr)
        return 1
    # Exit 1 when an app is not up, though the runner stays: it picks up the fix by itself.
    try:
        status = client.ask(path, "status")
        if not isinstance(status, dict):
            raise protocol.ControlError(f"its status is not a JSON object but {type(status).__name__}")
    except protocol.ControlError as exc:
        print(f"devrun: the runner (pid {pid}) started, but did not answer: {exc}; `devrun status` asks again",
              file=sys.stderr)
        return 1
    print(f"devrun: running in the background (pid {status.get('pid', pid)}); "
          "`devrun status`, `devrun logs -f`, `devrun attach`, `devrun down`")
    failed = 0
    for app in status.get("apps", []):
        line = f"  {app.get('name')}: {app.get('state')} {app.get('url')}"
        if app.get("state") != AppStatus.READY:
            failed += 1
            line += f" ({app.get('error') or 'see `devrun logs ' + str(app.get('name')) + '`'})"
        print(line)
    if failed:
        print("devrun: the runner keeps running and reloads on a fix; `devrun down` stops it")
    return 1 if failed else 0


def detach(argv: list[str], config_file: Path, ready: Callable[[], tuple[bool, str]],
           timeout: float = 60.0) -> tuple[int, str]:
    """Start `devrun up` in its own session, with no terminal and its output in
    `.devrun/runner.log`, and wait until `ready()` says the apps are up (or failed).
    Returns (its pid, the last lines it logged when it did not come up)."""
    folder = state_dir(config_file)
    log_path = folder / RUNNER_LOG
    # Only `up -d` writes it: a symlink there is replaced, its target left alone.
    fd = statefiles.open_private(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, replace_link=True)
    with open(fd, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "devrun", *argv], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=config_file.resolve().parent, env={**os.environ, "NO_COLOR": "1"})
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            return proc.pid, _tail(log_path)
        with contextlib.suppress(protocol.ControlError):
            done, _ = ready()
            if done:
                return proc.pid, ""
        time.sleep(0.1)
    return proc.pid, f"not up after {timeout:g} s; still starting? `devrun status` shows it\n" + _tail(log_path)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = statefiles.read_private(path).decode("utf-8", "replace")
        return "\n".join(text.splitlines()[-lines:])
    except OSError:
        return ""
