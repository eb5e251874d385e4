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
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from devrun import control

STATE_DIR = ".devrun"
PID_FILE = "runner.pid"
RUNNER_LOG = "runner.log"
LOG_DIR = "logs"


class AlreadyRunning(Exception):
    def __init__(self, pid: int | None, config: Path):
        self.pid = pid
        who = f"pid {pid}" if pid else "another process"
        super().__init__(f"already running for {config} ({who}); "
                         "`devrun status` shows it, `devrun down` stops it")


def state_dir(config_file: Path) -> Path:
    """`.devrun/` beside the config, created 0700 and tightened if it was looser."""
    folder = config_file.resolve().parent / STATE_DIR
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700)
        # Logs, pid and socket are this machine's: never committed, whatever the repo ignores.
        fd = os.open(folder / ".gitignore", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "w") as f:
            f.write("# devrun's state: never committed\n*\n")
    st = folder.lstat()
    if not stat.S_ISDIR(st.st_mode):
        raise OSError(f"{folder} is not a folder; remove it and run again")
    if st.st_mode & 0o077 and st.st_uid == os.geteuid():
        folder.chmod(0o700)
    return folder


def socket_path(config_file: Path) -> Path:
    return control.socket_path(state_dir(config_file))


class RunnerLock:
    """Held by the running runner; a second runner for the same config gets AlreadyRunning."""

    def __init__(self, config_file: Path):
        self.config_file = config_file
        self.path = state_dir(config_file) / PID_FILE
        self.fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AlreadyRunning(read_pid(self.path), self.config_file) from None
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
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def running_pid(config_file: Path) -> int | None:
    """The pid of the runner alive for this config, or None (a stale pid file is not one)."""
    path = state_dir(config_file) / PID_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return read_pid(path) or -1  # locked: alive, even if its pid is not written yet
    else:
        return None
    finally:
        os.close(fd)


def detach(argv: list[str], config_file: Path, ready: Callable[[], tuple[bool, str]],
           timeout: float = 60.0) -> tuple[int, str]:
    """Start `devrun up` in its own session, with no terminal and its output in
    `.devrun/runner.log`, and wait until `ready()` says the apps are up (or failed).
    Returns (its pid, the last lines it logged when it did not come up)."""
    folder = state_dir(config_file)
    log_path = folder / RUNNER_LOG
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "devrun", *argv], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=config_file.resolve().parent, env={**os.environ, "NO_COLOR": "1"})
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            return proc.pid, _tail(log_path)
        with contextlib.suppress(control.ControlError):
            done, _ = ready()
            if done:
                return proc.pid, ""
        time.sleep(0.1)
    return proc.pid, f"not up after {timeout:g} s; still starting? `devrun status` shows it\n" + _tail(log_path)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
