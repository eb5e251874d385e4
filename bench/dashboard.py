#!/usr/bin/env python3
"""Dashboard benchmark: what devrun's terminal dashboard costs, dashboard on vs `--no-dashboard`, in one run.

Needs only devrun installed (the load client is the standard library):

    pip install -e .
    python bench/dashboard.py                          # 10 s idle, 10 s of load per case, table on stdout
    python bench/dashboard.py --idle 5 --load 5        # a quick run
    python bench/dashboard.py --out docs/benchmarks.md # also append a dated section

It writes two tiny plain-WSGI apps (``one`` and ``two``, each answering ``ok`` with a
Content-Length, so HTTP/1.1 keep-alive works) into a fresh temporary folder per case, with a
devrun.yaml declaring both on ports found by binding port 0 on 127.0.0.1 (every other key
default), and starts two runners side by side, each in its own session:

- dashboard on:  ``python -m devrun up -c devrun.yaml`` with stdin, stdout and stderr on a
  pseudo-terminal of 120x40 (size set on the terminal before devrun starts), TERM=xterm-256color;
  a thread of this script reads the terminal's other end all the time (a terminal nobody reads
  fills up and devrun would block writing to it);
- dashboard off: ``python -m devrun up -c devrun.yaml --no-dashboard``, stdout and stderr to a file.

and measures, for both in the same invocation:

1. idle CPU: once every app of both runners has answered 200 and ``--settle`` seconds have
   passed, utime + stime of each runner process (``/proc/<pid>/stat``: every thread of the runner,
   none of its app processes) over the same ``--idle`` seconds for both, as % of one core;
2. load: 1,000 requests/s in total (``--rate``), half to each app, open loop (request *k* of an
   app is due at t0 + k/500 s whether or not earlier ones were answered) over ``--connections``
   keep-alive HTTP/1.1 connections per app opened beforehand, from one asyncio client; latency runs
   from the time a request was due to the end of its response, so a server that falls behind is
   charged its queueing delay. ``--load`` seconds per case, cut into ``--rounds`` × 2 slices run in
   the order on, off, off, on, ... (ABBA), so drift on the machine hits both cases alike. Reported:
   requests/s answered 200 within the slices, errors (refused, reset, timeout, non-200, or not
   answered within ``--timeout`` s of the slice's end), p50/p99 latency, the runner's CPU % during
   the slices, and its CPU ms per 1,000 requests counting the catch-up after each slice (the time
   it takes to go quiet again, at most 5 s): each request is one event the runner reads, parses and
   hands to its view. The on/off row gives the ratios.

The client sets TCP_QUICKACK on its socket as soon as a response's headers have arrived. The apps'
server (gevent's pywsgi) sends a response's headers and its body with two send calls on a socket
without TCP_NODELAY, so Nagle's algorithm holds the body back until the headers are ACKed, and a
Linux client's delayed ACK on a keep-alive connection takes about 40 ms: without quick ACKs every
request after a connection's first takes ~40 ms whatever the runner does, which would hide what
the dashboard costs. After the load, a probe of 20 sequential keep-alive requests
to each case's first app, without and then with quick ACKs, shows that effect in the notes.

Targets (from the issue): the dashboard stays under 2 % of one core when idle, and keeps at least
95 % of the throughput of --no-dashboard at 1,000 requests/s.

Every process is stopped with SIGTERM (devrun's own clean stop, bounded) and then its process
group, every descendant and their groups get SIGKILL, in a finally; every wait is bounded. Only
loopback traffic. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import fcntl
import http.client
import math
import os
import platform
import pty
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import termios
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from benchinfo import (
    PtyDrain,
    cpu_model,
    cpu_ticks,
    descendants,
    devrun_source,
    free_port,
    loadavg,
    nproc,
    package_versions,
    start_time,
)

APP_SOURCE = '''\
BODY = b"ok\\n"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def one(environ, start_response):
    start_response("200 OK", HEADERS)
    return [BODY]


def two(environ, start_response):
    start_response("200 OK", HEADERS)
    return [BODY]
'''

DEVRUN_YAML = """\
apps:
  one:
    app: "app:one"
    port: {one}
  two:
    app: "app:two"
    port: {two}
"""

COLUMNS, ROWS = 120, 40
PACKAGES = ("devrun", "rich", "gevent", "watchdog", "werkzeug")
START_POLL = 0.05  # while waiting for the apps' first 200
STOP_TIMEOUT = 15.0  # SIGTERM -> exit; devrun's graceful_timeout is 5 s by default
QUIET_WINDOW = 0.25  # after a load slice the runner is caught up once it uses under QUIET_CPU ...
QUIET_CPU = 0.15  # ... of one core for QUIET_WINDOW seconds
QUIET_LIMIT = 5.0  # ... or after this many seconds, noted in the report
PTY_KEEP = 64 * 1024 * 1024  # bytes of terminal output kept for the checks in the notes
TARGET_IDLE = 2.0  # % of one core
TARGET_RATIO = 0.95
PROBE_REQUESTS = 20
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: devrun-bench\r\n\r\n"
ANSI = re.compile(rb"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[()][0-9A-Za-z]|[@-Z\\-_=>78])")
# "N request lines dropped (runner busy)" (the app's pipe was full) and "N output/request lines dropped:
# the runner fell behind" (the runner's backlog was full)
DROPPED_DASHBOARD = re.compile(r"(\d\d:\d\d:\d\d) (\S+) (\d+) (?:output/)?request lines dropped")
DROPPED_PLAIN = re.compile(r"^(\S+)\s*\| (\d+) (?:output/)?request lines dropped", re.M)
LOGGED_REQUEST = re.compile(r"^\S+\s*\| GET / 200 ", re.M)


# -- processes ----------------------------------------------------------------------------------







@dataclass
class LoadTotals:
    seconds: float = 0.0  # of load slices
    offered: int = 0
    ok: int = 0
    ok_in_window: int = 0  # answered 200 before its slice ended
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)  # ms, 200s only
    ticks: int = 0  # runner CPU during the slices
    catchup_ticks: int = 0  # runner CPU from each slice's start until it was quiet again
    catchup_seconds: list[float] = field(default_factory=list)
    not_quiet: int = 0
    pty_bytes: int = 0


@dataclass
class Case:
    name: str
    dashboard: bool
    folder: Path
    ports: tuple[int, int]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    drain: PtyDrain | None = None
    master: int | None = None
    start_ms: float | None = None
    idle_ticks: int | None = None
    idle_seconds: float = 0.0
    idle_pty_bytes: int = 0
    idle_pty_range: tuple[int, int] = (0, 0)  # offsets in the terminal output of the idle window
    load: LoadTotals = field(default_factory=LoadTotals)
    warmup_ok: int = 0  # 200s of the readiness polls (each is one request event too)
    probe: dict[bool, list[float] | str] = field(default_factory=dict)  # quick ACKs? -> keepalive_probe
    problem: str = ""
    stop: str = ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "devrun", "up", "-c", "devrun.yaml",
                *([] if self.dashboard else ["--no-dashboard"])]

    def start(self, env: dict[str, str]) -> None:
        if self.dashboard:
            master, slave = pty.openpty()
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
            self.master = master
            try:
                self.proc = subprocess.Popen(self.argv(), cwd=self.folder, env=env, stdin=slave, stdout=slave,
                                             stderr=slave, start_new_session=True)
            finally:
                os.close(slave)
            self.drain = PtyDrain(master, PTY_KEEP)
            self.drain.start()
        else:
            with open(self.log, "wb") as log:
                self.proc = subprocess.Popen(self.argv(), cwd=self.folder, env=env, stdin=subprocess.DEVNULL,
                                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def alive(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            if not self.problem:
                code = None if self.proc is None else self.proc.returncode
                self.problem = f"the runner exited with code {code}"
            return False
        return True

    def shut_down(self) -> None:
        """SIGTERM (devrun stops its apps and exits 0), bounded; then SIGKILL whatever is left, by group."""
        if self.proc is None:
            return
        procs = {pid: start_time(pid) for pid in [self.proc.pid, *descendants(self.proc.pid)]}
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(STOP_TIMEOUT)
                self.stop = f"exit code {code} after SIGTERM"
            except subprocess.TimeoutExpired:
                self.stop = f"still running {STOP_TIMEOUT:g} s after SIGTERM; killed"
        else:
            self.stop = f"had already exited with code {self.proc.returncode}"
        if self.proc.poll() is None:
            procs.update({pid: start_time(pid) for pid in descendants(self.proc.pid)})
        # Only processes that are still the ones seen above (a pid could have been reused meanwhile).
        left = [pid for pid, started in procs.items() if started is not None and start_time(pid) == started]
        groups = set()
        for pid in left:
            with contextlib.suppress(OSError):
                groups.add(os.getpgid(pid))
        groups.discard(os.getpgid(0))  # never our own group
        stragglers = [pid for pid in left if pid != self.proc.pid]
        if stragglers and self.proc.poll() is not None:
            self.stop += f"; {len(stragglers)} of its processes were still there after it exited (SIGKILLed)"
        for group in groups:
            with contextlib.suppress(OSError):
                os.killpg(group, signal.SIGKILL)
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        if self.drain is not None:
            self.drain.join(2)
            self.drain.done.set()
            self.drain.join(1)
        if self.master is not None:
            with contextlib.suppress(OSError):
                os.close(self.master)
            self.master = None


def make_cases(root: Path) -> list[Case]:
    cases = []
    for name, dashboard in (("on", True), ("off", False)):
        folder = root / f"dashboard-{name}"
        folder.mkdir()
        ports = (free_port(), free_port())
        (folder / "app.py").write_text(APP_SOURCE)
        (folder / "devrun.yaml").write_text(DEVRUN_YAML.format(one=ports[0], two=ports[1]))
        cases.append(Case(name, dashboard, folder, ports, root / "logs" / f"dashboard-{name}.log"))
    return cases


def runner_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DEVRUN_", "WERKZEUG_", "FLASK_")) and k not in ("NO_COLOR", "COLUMNS", "LINES")}
    env.update(TERM="xterm-256color", PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
    return env


def http_status(port: int, timeout: float) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/", headers={"Connection": "close"})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def wait_ready(cases: list[Case], timeout: float, t0: float) -> None:
    """Until every app of every runner answers 200 (bounded); t0: when the runners were started."""
    waiting = {(c.name, p): c for c in cases for p in c.ports}
    while waiting and time.perf_counter() - t0 < timeout:
        for (name, port), case in list(waiting.items()):
            if not case.alive():
                del waiting[(name, port)]
                continue
            with contextlib.suppress(OSError, http.client.HTTPException):
                if http_status(port, 1.0) == 200:
                    case.warmup_ok += 1
                    del waiting[(name, port)]
                    if not any(k[0] == name for k in waiting):
                        case.start_ms = (time.perf_counter() - t0) * 1000
        time.sleep(START_POLL)
    for (_, port), case in waiting.items():
        if not case.problem:
            case.problem = f"port {port} gave no 200 within {timeout:g} s"


# -- measurements -------------------------------------------------------------------------------


def measure_idle(cases: list[Case], seconds: float) -> None:
    """Both runners over the same window: ticks of each runner process."""
    before = {c.name: cpu_ticks(c.pid) for c in cases}
    pty0 = {c.name: c.drain.total if c.drain else 0 for c in cases}
    t0 = time.perf_counter()
    time.sleep(seconds)
    elapsed = time.perf_counter() - t0
    for c in cases:
        after = cpu_ticks(c.pid)
        b = before[c.name]
        if after is not None and b is not None and c.alive():
            c.idle_ticks, c.idle_seconds = after - b, elapsed
        c.idle_pty_bytes = (c.drain.total if c.drain else 0) - pty0[c.name]
        c.idle_pty_range = (pty0[c.name], pty0[c.name] + c.idle_pty_bytes)


def failure_kind(exc: BaseException) -> str:
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, asyncio.IncompleteReadError)):
        return "reset"
    return type(exc).__name__


def quick_ack(sock: object) -> None:
    """ACK what has arrived now, not after the delayed-ACK timer (see the module's docstring)."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)  # type: ignore[attr-defined]


async def read_response(reader: asyncio.StreamReader, sock: object) -> tuple[int, bool]:
    """One HTTP/1.1 response: its status, and whether the server will close the connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    quick_ack(sock)
    lines = head.decode("latin-1").split("\r\n")
    version, status = lines[0].split(" ", 2)[:2]
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            key, value = line.split(":", 1)
            headers[key.strip().lower()] = value.strip().lower()
    if "content-length" not in headers:
        raise ValueError("response without Content-Length")
    await reader.readexactly(int(headers["content-length"]))
    close = headers.get("connection") == "close" or version == "HTTP/1.0"
    return int(status), close


@dataclass
class Slice:
    offered: int = 0
    ok: int = 0
    ok_in_window: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    marks: dict[str, float] = field(default_factory=dict)


async def drive(case: Case, rate: float, seconds: float, connections: int, timeout: float) -> Slice:
    """Open-loop load on both apps of `case` for `seconds`; ticks of the runner at start and end."""
    loop = asyncio.get_running_loop()
    result = Slice()
    per_app = rate / len(case.ports)
    queues: list[asyncio.Queue[float | None]] = [asyncio.Queue() for _ in case.ports]
    conns: dict[int, tuple[asyncio.StreamReader, asyncio.StreamWriter] | None] = {}

    async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)

    async def opened(port: int, slot: int) -> None:
        try:
            conns[slot] = await connect(port)
        except (OSError, asyncio.TimeoutError) as exc:
            conns[slot] = None
            result.errors[f"connect: {failure_kind(exc)}"] += 1

    async def worker(port: int, queue: asyncio.Queue[float | None], slot: int, window_end: list[float]) -> None:
        conn = conns.get(slot)
        while (due := await queue.get()) is not None:
            try:
                if conn is None:
                    conn = await connect(port)
                reader, writer = conn
                writer.write(REQUEST)
                status, close = await asyncio.wait_for(read_response(reader, writer.get_extra_info("socket")),
                                                       timeout)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                    ValueError) as exc:
                result.errors[failure_kind(exc)] += 1
                if conn is not None:
                    conn[1].close()
                conn = None
                continue
            done = loop.time()
            if status == 200:
                result.ok += 1
                result.latencies.append((done - due) * 1000)
                if done <= window_end[0]:
                    result.ok_in_window += 1
            else:
                result.errors[f"HTTP {status}"] += 1
            if close:
                writer.close()
                conn = None
        if conn is not None:
            conn[1].close()

    slots = [(i, port, s) for i, port in enumerate(case.ports) for s in range(connections)]
    await asyncio.gather(*(opened(port, i * connections + s) for i, port, s in slots))
    window_end = [math.inf]
    workers = [asyncio.create_task(worker(port, queues[i], i * connections + s, window_end)) for i, port, s in slots]
    count = int(per_app * seconds)
    t0 = loop.time() + 0.01
    window_end[0] = t0 + seconds
    plan = sorted((t0 + (k + i / len(case.ports)) / per_app, i) for i in range(len(case.ports)) for k in range(count))

    def mark(name: str) -> None:
        result.marks[name] = float(cpu_ticks(case.pid) or 0)
        result.marks[name + " pty"] = float(case.drain.total if case.drain else 0)
        result.marks[name + " at"] = loop.time()

    loop.call_at(t0, mark, "start")
    loop.call_at(window_end[0], mark, "end")
    index = 0
    while index < len(plan):
        due = plan[index][0]
        if (wait := due - loop.time()) > 0:
            await asyncio.sleep(wait)
        now = loop.time()
        while index < len(plan) and plan[index][0] <= now:
            queues[plan[index][1]].put_nowait(plan[index][0])
            index += 1
    result.offered = len(plan)
    for queue in queues:
        for _ in range(connections):
            queue.put_nowait(None)
    if (wait := window_end[0] - loop.time()) > 0:
        await asyncio.sleep(wait)
    _, pending = await asyncio.wait(workers, timeout=timeout)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    unanswered = result.offered - result.ok - sum(result.errors.values())
    if unanswered > 0:
        result.errors[f"no answer {timeout:g} s after the slice"] += unanswered
    return result


def catch_up(case: Case, start_ticks: float) -> tuple[int, float, bool]:
    """Wait (bounded) until the runner is quiet: its ticks since the slice started, seconds waited, quiet?"""
    tick = os.sysconf("SC_CLK_TCK")
    t0 = time.perf_counter()
    quiet = False
    while time.perf_counter() - t0 < QUIET_LIMIT and case.alive():
        before = cpu_ticks(case.pid)
        time.sleep(QUIET_WINDOW)
        after = cpu_ticks(case.pid)
        if before is None or after is None:
            break
        if (after - before) / tick < QUIET_CPU * QUIET_WINDOW:
            quiet = True
            break
    now = cpu_ticks(case.pid)
    return int((now or start_ticks) - start_ticks), time.perf_counter() - t0, quiet


def load_slice(case: Case, args: argparse.Namespace, seconds: float) -> None:
    result = asyncio.run(drive(case, args.rate, seconds, args.connections, args.timeout))
    totals = case.load
    totals.offered += result.offered
    totals.ok += result.ok
    totals.ok_in_window += result.ok_in_window
    totals.errors.update(result.errors)
    totals.latencies += result.latencies
    marks = result.marks
    if "start" in marks and "end" in marks:
        totals.seconds += marks["end at"] - marks["start at"]
        totals.ticks += int(marks["end"] - marks["start"])
        totals.pty_bytes += int(marks["end pty"] - marks["start pty"])
        ticks, waited, quiet = catch_up(case, marks["start"])
        totals.catchup_ticks += ticks
        totals.catchup_seconds.append(waited)
        totals.not_quiet += not quiet


def keepalive_probe(port: int, quick: bool, timeout: float) -> list[float] | str:
    """PROBE_REQUESTS sequential GETs on one keep-alive connection: ms each, or what went wrong."""
    times = []
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            for _ in range(PROBE_REQUESTS):
                t0 = time.perf_counter()
                sock.sendall(REQUEST)
                buf = b""
                while b"\r\n\r\n" not in buf or not buf.endswith(b"ok\n"):
                    data = sock.recv(65536)
                    if not data:
                        return "connection closed"
                    buf += data
                    if quick:
                        quick_ack(sock)
                times.append((time.perf_counter() - t0) * 1000)
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    return times


def probe_text(result: list[float] | str) -> str:
    if isinstance(result, str):
        return result
    return f"p50 {percentile(result, 50):.2f} ms, max {max(result):.2f} ms"


# -- report -------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(math.ceil(q / 100 * len(ordered)) - 1, 0)]


def idle_pct(case: Case) -> float | None:
    if case.idle_ticks is None or not case.idle_seconds:
        return None
    return case.idle_ticks / os.sysconf("SC_CLK_TCK") / case.idle_seconds * 100


def load_numbers(case: Case) -> dict[str, float] | None:
    t = case.load
    if not t.seconds:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    out = {"rps": t.ok_in_window / t.seconds, "offered": t.offered / t.seconds,
           "cpu": t.ticks / tick / t.seconds * 100}
    if t.latencies:
        out["p50"] = percentile(t.latencies, 50)
        out["p99"] = percentile(t.latencies, 99)
    if t.ok + sum(t.errors.values()):
        out["per1k"] = t.catchup_ticks / tick * 1000 / (t.ok + sum(t.errors.values())) * 1000
    return out


def cell(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def ratio(a: float | None, b: float | None, fmt: str = ".2f", suffix: str = "×") -> str:
    if a is None or b is None or b == 0:
        return "n/a"
    return f"{a / b:{fmt}}{suffix}"


def table(cases: list[Case]) -> str:
    rows = [
        "| dashboard | runner CPU idle (% of one core) | requests/s answered (offered) | errors | p50 ms | p99 ms "
        "| runner CPU under load (% of one core) | runner CPU ms per 1,000 requests |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    nums = {}
    for c in cases:
        n = load_numbers(c) or {}
        nums[c.name] = n
        label = "on (pty 120x40)" if c.dashboard else "off (`--no-dashboard`, to a file)"
        errors = sum(c.load.errors.values())
        rows.append(
            f"| {label} | {cell(idle_pct(c), '.2f')} | {cell(n.get('rps'), '.0f')} ({cell(n.get('offered'), '.0f')}) "
            f"| {errors} / {c.load.offered} | {cell(n.get('p50'), '.2f')} | {cell(n.get('p99'), '.2f')} "
            f"| {cell(n.get('cpu'), '.1f')} | {cell(n.get('per1k'), '.0f')} |")
    on, off = nums.get("on", {}), nums.get("off", {})
    by = {c.name: c for c in cases}
    idle_on = idle_pct(by["on"]) if "on" in by else None
    idle_off = idle_pct(by["off"]) if "off" in by else None
    idle_diff = "n/a" if idle_on is None or idle_off is None else f"{idle_on - idle_off:+.2f} points"
    rows.append(f"| on / off | {idle_diff} | {ratio(on.get('rps'), off.get('rps'), '.1%', '')} | "
                f"| {ratio(on.get('p50'), off.get('p50'))} | {ratio(on.get('p99'), off.get('p99'))} "
                f"| {ratio(on.get('cpu'), off.get('cpu'))} | {ratio(on.get('per1k'), off.get('per1k'))} |")
    return "\n".join(rows)


def verdicts(cases: list[Case]) -> str:
    by = {c.name: c for c in cases}
    idle = idle_pct(by["on"])
    on, off = load_numbers(by["on"]), load_numbers(by["off"])
    lines = []
    if idle is None:
        lines.append(f"- idle CPU with the dashboard under {TARGET_IDLE:g} % of one core: not measured")
    else:
        lines.append(f"- idle CPU with the dashboard under {TARGET_IDLE:g} % of one core: {idle:.2f} % — "
                     + ("**met**" if idle < TARGET_IDLE else "**not met**"))
    if on and off and off["rps"]:
        r = on["rps"] / off["rps"]
        lines.append(f"- throughput with the dashboard at least {TARGET_RATIO:.0%} of --no-dashboard's: {r:.1%} — "
                     + ("**met**" if r >= TARGET_RATIO else "**not met**"))
    else:
        lines.append(f"- throughput with the dashboard at least {TARGET_RATIO:.0%} of --no-dashboard's: not measured")
    return "\n".join(lines)


def notes(cases: list[Case], args: argparse.Namespace, text_on: str, raw_on: bytes, log_off: str) -> str:
    tick = os.sysconf("SC_CLK_TCK")
    lines = [
        f"Idle: both runners over the same {args.idle:g} s, {args.settle:g} s after all four apps had answered; "
        f"/proc counts CPU in ticks of {1000 / tick:g} ms, so ±{100 / tick / max(args.idle, 0.001):.2f} points. "
        f"Load: {args.rate:g} requests/s offered ({args.rate / 2:g}/s per app), open loop, {args.connections} "
        f"keep-alive connections per app, {args.load:g} s per case in {args.rounds * 2} slices of "
        f"{args.load / args.rounds:g} s (order on, off, off, on, ...); latency from when a request was due; "
        f"per-request timeout {args.timeout:g} s. \"runner CPU ms per 1,000 requests\" counts from each slice's "
        f"start until the runner was quiet again (< {QUIET_CPU:.0%} of a core for {QUIET_WINDOW:g} s, waited at "
        f"most {QUIET_LIMIT:g} s). The client (asyncio, one thread), this script's terminal reader, both runners "
        "and their four apps share the machine's CPUs.",
    ]
    for c in cases:
        parts = []
        if c.start_ms is not None:
            parts.append(f"all apps answered {c.start_ms:.0f} ms after both runners were started")
        t = c.load
        if t.errors:
            parts.append("errors: " + ", ".join(f"{n} {k}" for k, n in t.errors.most_common()))
        if t.ok:
            parts.append(f"{t.ok} answered 200 in all ({t.ok - t.ok_in_window} after their slice ended)")
        if t.catchup_seconds:
            parts.append("quiet again " + ", ".join(f"{s:.2f}" for s in t.catchup_seconds) + " s after each slice"
                         + (f" ({t.not_quiet} never within {QUIET_LIMIT:g} s)" if t.not_quiet else ""))
        if c.dashboard:
            if c.idle_seconds:
                # rich's Live on the alternate screen starts every redraw with cursor-home
                redraws = raw_on[c.idle_pty_range[0]:c.idle_pty_range[1]].count(b"\x1b[H")
                parts.append(f"terminal output {c.idle_pty_bytes / c.idle_seconds / 1024:.1f} KiB/s idle "
                             f"({redraws / c.idle_seconds:.1f} redraws/s, "
                             f"{c.idle_pty_bytes / max(redraws, 1) / 1024:.1f} KiB each)")
            if t.seconds:
                parts.append(f"{t.pty_bytes / t.seconds / 1024:.1f} KiB/s under load")
            parts.append("alternate screen " + ("entered" if b"\x1b[?1049h" in raw_on else "**never entered**")
                         + (" and left" if b"\x1b[?1049l" in raw_on else ", **never left**"))
            seen = {m.groups() for m in DROPPED_DASHBOARD.finditer(text_on)}
            if seen:
                parts.append(f"the events pane showed {len(seen)} distinct \"... lines dropped\" "
                             f"notices, {sum(int(n) for _, _, n in seen)} lines in all (a lower bound)")
        else:
            logged = len(LOGGED_REQUEST.findall(log_off))
            probed = sum(len(r) for r in c.probe.values() if not isinstance(r, str))
            answered = c.warmup_ok + t.ok + probed
            parts.append(f"its log has {logged} `GET / 200` lines for {answered} requests answered 200 "
                         "(readiness polls and keep-alive probe included)")
            dropped = sum(int(n) for _, n in DROPPED_PLAIN.findall(log_off))
            if dropped:
                parts.append(f"its log reports {dropped} request/output lines dropped")
        if c.probe:
            parts.append(f"keep-alive probe ({PROBE_REQUESTS} sequential requests on one connection to "
                         f"`{c.ports[0]}`): without quick ACKs {probe_text(c.probe.get(False, 'not run'))}, "
                         f"with {probe_text(c.probe.get(True, 'not run'))}")
        if c.problem:
            parts.append(f"problem: {c.problem}")
        if c.stop:
            parts.append(f"stop: {c.stop}")
        lines.append(f"- dashboard {c.name}: " + "; ".join(parts))
    return "\n".join(lines)






def machine(source: tuple[str, str], load: str) -> str:
    versions = package_versions(PACKAGES)
    cpu = cpu_model()
    return "\n".join([
        f"- machine: {platform.system()} {platform.release()}, nproc {nproc()}" + (f", {cpu}" if cpu else "")
        + (f", load average at start {load}" if load else ""),
        f"- Python {platform.python_version()} ({platform.python_implementation()})",
        "- " + ", ".join(versions),
        *([f"- devrun source: commit {source[0]}"] if source[0] and source[0] == source[1] else []),
        *([f"- devrun source: commit {source[0]} at start, {source[1]} at the end: **devrun changed during the "
           "run**, so these numbers mix two versions"] if source[0] != source[1] else []),
    ])


def command() -> str:
    """The command line that started this run, as the interpreter received it (quoted for a POSIX shell)."""
    return shlex.join(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])


def report(cases: list[Case], args: argparse.Namespace, started: datetime.datetime, source: tuple[str, str],
           load: str, cwd: Path, text_on: str, raw_on: bytes, log_off: str) -> str:
    return "\n\n".join([
        f"## Dashboard benchmark, {started:%Y-%m-%d %H:%M}",
        machine(source, load),
        f"Reproduce (run in `{cwd}`, after `pip install -e .`):\n\n```sh\n{command()}\n```",
        table(cases),
        verdicts(cases),
        notes(cases, args, text_on, raw_on, log_off),
    ]) + "\n"


def write_out(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    path.write_text(old.rstrip("\n") + "\n\n" + text)


# -- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idle CPU sampling (default 10)")
    parser.add_argument("--load", type=float, default=10.0, help="seconds of load per case (default 10)")
    parser.add_argument("--rate", type=float, default=1000.0,
                        help="requests/s offered in total, half to each app (default 1000)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="load rounds; each runs both cases, order alternating (default 2: on, off, off, on)")
    parser.add_argument("--connections", type=int, default=8, help="keep-alive connections per app (default 8)")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds per request and per connect (default 2)")
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds between the apps' first answers and the idle sample (default 3)")
    parser.add_argument("--start-timeout", type=float, default=60.0,
                        help="seconds the apps may take to answer their first 200 (default 60)")
    parser.add_argument("--out", type=Path, help="also append the results, under a dated heading, to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder with the apps and logs")
    args = parser.parse_args(argv)
    if args.idle <= 0 or args.load <= 0 or args.rate <= 0 or args.rounds < 1 or args.connections < 1:
        parser.error("--idle, --load, --rate must be positive; --rounds and --connections at least 1")
    if not sys.platform.startswith("linux"):
        parser.error("Linux only (/proc)")

    started = datetime.datetime.now()
    cwd = Path.cwd()
    source_at_start = devrun_source()
    load_at_start = loadavg()
    root = Path(tempfile.mkdtemp(prefix="devrun-bench-dashboard-"))
    (root / "logs").mkdir()
    cases = make_cases(root)
    by = {c.name: c for c in cases}
    env = runner_env()
    text_on, raw_on, log_off = "", b"", ""
    try:
        launched = time.perf_counter()
        for c in cases:
            print(f"starting dashboard {c.name} on ports {c.ports[0]}, {c.ports[1]}: {shlex.join(c.argv())}",
                  file=sys.stderr)
            c.start(env)
        wait_ready(cases, args.start_timeout, launched)
        if all(c.alive() and not c.problem for c in cases):
            time.sleep(args.settle)
            print(f"idle: {args.idle:g} s", file=sys.stderr)
            measure_idle(cases, args.idle)
            for r in range(args.rounds):
                order = ["on", "off"] if r % 2 == 0 else ["off", "on"]
                for name in order:
                    if by[name].alive():
                        print(f"load round {r + 1}/{args.rounds}: dashboard {name}, {args.load / args.rounds:g} s",
                              file=sys.stderr)
                        load_slice(by[name], args, args.load / args.rounds)
            for c in cases:
                if c.alive():
                    print(f"keep-alive probe: dashboard {c.name}", file=sys.stderr)
                    for quick in (False, True):
                        c.probe[quick] = keepalive_probe(c.ports[0], quick, args.timeout)
    finally:
        for c in cases:
            c.shut_down()
        if by["on"].drain is not None:
            raw_on = by["on"].drain.raw()
            text_on = ANSI.sub(b"", raw_on).decode("utf-8", "replace")
            with contextlib.suppress(OSError):
                by["on"].log.write_bytes(raw_on)
        with contextlib.suppress(OSError):
            log_off = by["off"].log.read_text(errors="replace")
        for c in cases:
            if c.problem:
                tail = "\n".join((text_on if c.dashboard else log_off).splitlines()[-15:])
                print(f"--- dashboard {c.name}: {c.problem}; end of its output:\n{tail}", file=sys.stderr)
        if args.keep:
            print(f"apps and logs kept in {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)

    text = report(cases, args, started, (source_at_start, devrun_source()), load_at_start, cwd,
                  text_on, raw_on, log_off)
    print(text)
    if args.out:
        write_out(args.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
