"""What both benchmarks need to say where and on what they ran, and to find their processes."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import os
import select
import signal
import socket
import subprocess
import threading
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def descendants(pid: int) -> list[int]:
    """Every live descendant of pid, from /proc."""
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(Exception):
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                kids.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for kid in kids.get(todo.pop(), []):
            out.append(kid)
            todo.append(kid)
    return out


def kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process, its process group, and every descendant and its process group."""
    pids = [proc.pid, *descendants(proc.pid)]
    groups = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            groups.add(os.getpgid(pid))
    groups.discard(os.getpgid(0))  # never our own group
    for group in groups:
        with contextlib.suppress(OSError):
            os.killpg(group, signal.SIGKILL)
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def devrun_source() -> str:
    """The git commit of the devrun being measured (read-only git), or "" outside a checkout."""
    spec = importlib.util.find_spec("devrun")
    if spec is None or not spec.origin:
        return ""
    top = Path(spec.origin).resolve().parent.parent
    if not (top / ".git").exists():
        return ""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # never take index.lock: read only
    try:
        head = subprocess.run(["git", "-C", str(top), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10, env=env).stdout.strip()
        diff = subprocess.run(["git", "-C", str(top), "diff", "--no-ext-diff", "HEAD", "--", "devrun"],
                              capture_output=True, timeout=10, env=env).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    if head and diff:
        return f"{head} (+ uncommitted changes to devrun/, diff sha1 {hashlib.sha1(diff).hexdigest()[:8]})"
    return head


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return ""


def package_versions(names: tuple[str, ...]) -> list[str]:
    out = []
    for name in names:
        try:
            out.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(f"{name} (not installed)")
    return out


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return ""


def nproc() -> int | None:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def stat_fields(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/<pid>/stat (after the command name), or None when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def cpu_ticks(pid: int) -> int | None:
    """utime + stime of the process (all its threads, not its children), in clock ticks."""
    fields = stat_fields(pid)
    return None if fields is None else int(fields[11]) + int(fields[12])


def start_time(pid: int) -> str | None:
    fields = stat_fields(pid)
    return None if fields is None else fields[19]


class PtyDrain(threading.Thread):
    """Reads the master side of a runner's terminal until it closes: counts the bytes and keeps
    the first `keep` of them (a terminal nobody reads fills up, and devrun would block on it)."""

    def __init__(self, fd: int, keep: int = 0) -> None:
        super().__init__(daemon=True, name="pty-drain")
        self.fd = fd
        self.keep = keep
        self.total = 0
        self.chunks: list[bytes] = []
        self.kept = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                ready, _, _ = select.select([self.fd], [], [], 0.1)
                if not ready:
                    continue
                data = os.read(self.fd, 65536)
            except (OSError, ValueError):  # EIO: every holder of the terminal's other end is gone
                return
            if not data:
                return
            self.total += len(data)
            if self.kept < self.keep:
                self.chunks.append(data)
                self.kept += len(data)

    def raw(self) -> bytes:
        return b"".join(self.chunks)
