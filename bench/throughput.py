#!/usr/bin/env python3
"""Throughput benchmark: one small Flask app under load, through devrun and through bare gevent pywsgi, in one run.

Needs flask and gevent next to devrun, and wrk (Debian's package ``wrk``) as the load client:

    pip install -e . flask gevent          # and: apt-get install wrk
    python bench/throughput.py                           # 3 rounds of 5 s per variant, table on stdout
    python bench/throughput.py --rounds 1 --duration 2   # a quick run
    python bench/throughput.py --out docs/benchmarks.md  # also append a dated section

The app (``app.py``) is Flask's smallest: ``/`` returns the 5-byte text ``hello`` (Flask adds a
Content-Length, so HTTP/1.1 keep-alive works). Variants (``--variants`` takes their keys):

- ``pywsgi``: bare gevent pywsgi, ``serve.py``: ``from gevent import monkey; monkey.patch_all()``,
  the app imported, ``gevent.pywsgi.WSGIServer(("127.0.0.1", P), app, log=None)``, its socket set to
  TCP_NODELAY (as devrun's listening sockets are, devrun/runner/sockets.py: pywsgi writes a
  response's head and body separately, and without it every keep-alive request after the first
  waits ~40 ms for the client's delayed ACK), then ``serve_forever()``. **The reference of the
  issue's throughput target**: every "× pywsgi" is against this one;
- ``pywsgi-log``: the same with pywsgi's default access log (one line per request on stderr),
  stderr to a file: what a server that logs every request pays, as devrun does;
- ``pywsgi-debugger``: bare pywsgi serving the app inside Werkzeug's
  ``DebuggedApplication(app, evalex=True)``: what the debugger alone costs;
- ``flask-debug``: ``flask --app app run --debug``, stdout and stderr to a file: what a Flask
  user runs without devrun (Werkzeug's threaded server, its debugger and its reloader);
- ``plain``: ``devrun up -c devrun.yaml --no-dashboard``, stdout and stderr to a file, the app
  ``app:app`` with ``debug: {enabled: true}`` (what users run), every other key default;
- ``plain-nodebug``: the same with ``debug: {enabled: false}``;
- ``dashboard``: ``devrun up -c devrun.yaml`` (debug on) with stdin, stdout and stderr on a
  pseudo-terminal of 120x40 (``TIOCSWINSZ`` before devrun starts; TERM=xterm-256color), whose
  other end a thread of this script reads all the time, counting the bytes;
- ``detached``: ``devrun up -d -c devrun.yaml`` (debug on): the runner in the background
  (devrun/control/daemon.py: its own session, output in ``.devrun/runner.log``); its pid from
  ``devrun status --json``; stopped with ``devrun down``;
- ``detached-follow``: the same with one ``devrun logs -f -n 100000 -c devrun.yaml`` running
  throughout (stdout to a file), as a user following the logs in another terminal has.

Every round runs every chosen variant once, each afresh: a new folder (so a new ``.devrun/``), a
new port, started, waited for (until ``/`` answers ``hello``), warmed up with a
``--warmup``-second wrk run that is not measured, and once its processes are quiet (all of them
under 10 % of one core for 0.25 s, waited at most 5 s) measured with one run of
``wrk -t1 -c10 -dDs --latency http://127.0.0.1:P/`` (``--threads``, ``--connections``,
``--duration``), then stopped. The order of the variants is reversed every other round, so drift
on the machine hits all alike. Reported per variant, as the median over the rounds: requests/s,
p50 and p99 latency (wrk's ``Requests/sec`` and ``--latency`` distribution), and CPU (utime +
stime from ``/proc/<pid>/stat``, every thread of a process, not its children) from the start of
the measured wrk run until the processes are quiet again (at most 5 s after wrk ends, so work the
runner deferred is charged to it) of:

- the runner: the ``devrun up`` process (detached: the pid ``devrun status --json`` gives);
- the app: the busiest descendant of the runner over that window (the generation serving the
  requests), and the sum of every descendant (fork server, spare, ...); for bare pywsgi its process.

wrk's latencies are its own distribution: wrk 4 corrects it for coordinated omission (every
response that took at least twice the mean interval between one connection's requests adds
samples for the requests that connection would have sent meanwhile), so a server that lets some
connections wait while it serves others gets a high p99 even when few requests waited. Bare
pywsgi does that here: over 2 s with 10 connections, some connections got 8 times as many
responses as others, and single requests waited up to 0.8 s. The notes give, per
run, wrk's longest latency and, when the correction added samples, wrk's mean against the most
the measured mean can be (Little's law: ``connections / requests per second``).

"× pywsgi" is the ratio of the medians; "runner / app" is the median of each round's runner CPU
over the busiest descendant's. Targets (issue 14), for every devrun variant: throughput ≥ 0.95×
``pywsgi`` and runner CPU ≤ 0.1× the app's; and no request line lost.

Request lines: after wrk (and once the log files stop growing, at most 10 s) the server is
stopped and its logs are read: devrun's per-app log files (``.devrun/logs/bench.log`` and its
rotations ``bench.log.N``, which ``devrun logs`` reads), the plain log (``plain``,
``plain-nodebug``), the output of ``devrun logs -f`` (``detached-follow``) and pywsgi's access
log (``pywsgi-log``). Lines are counted by one rule for devrun, in :func:`request_lines` (a line
holding ``GET /``, a space and a three-digit status), and one for pywsgi's log
(:func:`pywsgi_request_lines`), and compared with the responses the server gave: the readiness
polls answered plus wrk's requests of the warm-up and of the measured run. A log with fewer lines
has lost that many; up to ``--connections`` more per wrk run are requests still in flight when wrk
stopped (served and logged, not counted by wrk). The runners get DEVRUN_LOG_MAX_BYTES=1 GiB so
that a per-app log never rotates lines away during a run (devrun/runner/controlplane.py; by
default a file rotates at 1 MB and 3 are kept).

Every process runs in its own session and is stopped (SIGTERM, or ``devrun down``, bounded) and
then killed with its process group and every descendant seen (pid and start time, so a reused pid
is never signalled); every wait is bounded. Only loopback traffic. Linux only (/proc). wrk, this
script's terminal reader, the server and its processes share the machine's CPUs: run it on a quiet
machine.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import fcntl
import http.client
import json
import os
import platform
import pty
import re
import resource
import shlex
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

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
    stat_fields,
)

BODY = "hello"

APP_SOURCE = f'''\
from flask import Flask

app = Flask(__name__)


@app.route("/")
def index():
    return "{BODY}"
'''

SERVE_SOURCE = '''\
import socket
import sys

from gevent import monkey

monkey.patch_all()

from gevent.pywsgi import WSGIServer

from app import app

if sys.argv[2] == "debugger":  # Werkzeug's debugger around the app, as a debug mode has it
    from werkzeug.debug import DebuggedApplication

    app = DebuggedApplication(app, evalex=True)
# "log": pywsgi's default access log (stderr); otherwise none, as devrun's generations run it
options = {} if sys.argv[2] == "log" else {"log": None}
server = WSGIServer(("127.0.0.1", int(sys.argv[1])), app, **options)
server.init_socket()
# as devrun's listening sockets (inherited by accepted connections): pywsgi writes head and body apart
server.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
server.serve_forever()
'''

DEVRUN_YAML = """\
apps:
  bench:
    app: "app:app"
    port: {port}
    debug: {{enabled: {debug}}}
"""

APP_NAME = "bench"
PACKAGES = ("devrun", "flask", "gevent", "werkzeug", "rich", "watchdog")
COLUMNS, ROWS = 120, 40
LOG_MAX_BYTES = str(1 << 30)  # DEVRUN_LOG_MAX_BYTES: no rotation within a run
FOLLOW_LINES = "100000"  # `devrun logs -f -n N`: every line logged before it started, then new ones
TARGET_RATIO = 0.95  # throughput against bare pywsgi
TARGET_CPU = 0.10  # runner CPU against the app's
POLL_EVERY = 0.05  # readiness polls
POLL_TIMEOUT = 1.0
QUIET_WINDOW = 0.25  # quiet: every process of the server under QUIET_CPU of one core for QUIET_WINDOW s ...
QUIET_CPU = 0.10
QUIET_LIMIT = 5.0  # ... or after this many seconds (noted)
SETTLE_LIMIT = 10.0  # waiting for the log files to hold every line
SETTLE_STEADY = 1.0  # ... or to stop growing for this long
STOP_TIMEOUT = 15.0  # SIGTERM -> exit; devrun's graceful_timeout is 5 s by default
DOWN_TIMEOUT = 70.0  # `devrun down` waits up to 60 s itself
WRK_SLACK = 30.0  # a wrk run may take this much longer than its duration before it is killed


# -- the line count rule ------------------------------------------------------------------------

DEVRUN_REQUEST = re.compile(r"^.*\bGET / [1-5][0-9][0-9]\b.*$", re.M)
PYWSGI_REQUEST = re.compile(r'^.*"GET / HTTP/1\.[01]" [1-5][0-9][0-9] .*$', re.M)


def request_lines(text: str) -> int:
    """The line count rule for devrun's logs: one request is one line holding ``GET /``, a space
    and its three-digit status (today ``bench  | GET / 200 0ms`` in the plain log,
    ``2026-12-02 19:42:37.123 GET / 200 0ms`` in a per-app log file, ``bench | 2026-... GET / 200 0ms``
    from ``devrun logs -f``). Only ``/`` is requested; nothing else of the format is assumed."""
    return len(DEVRUN_REQUEST.findall(text))


def pywsgi_request_lines(text: str) -> int:
    """pywsgi's access log: ``127.0.0.1 - - [2026-12-02 19:42:37] "GET / HTTP/1.1" 200 5 0.000512``."""
    return len(PYWSGI_REQUEST.findall(text))


def sample_line(text: str, rule: Callable[[str], int]) -> str:
    """The last line the rule counts (or, when none, the last line), for the notes."""
    lines = text.rstrip("\n").splitlines()
    for line in reversed(lines[-1000:]):
        if rule(line):
            return line
    return "(no line matched the rule; last line: " + (lines[-1] if lines else "none") + ")"


# -- variants -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    key: str  # for --variants
    label: str  # in the table
    kind: str  # pywsgi | flask | plain | dashboard | detached
    access_log: bool = False
    wsgi_debugger: bool = False  # pywsgi: the app in Werkzeug's DebuggedApplication
    debug: bool = True
    follow: bool = False  # a `devrun logs -f` attached

    @property
    def devrun(self) -> bool:
        return self.kind in ("plain", "dashboard", "detached")


VARIANTS = (
    Variant("pywsgi", "bare pywsgi (log=None)", "pywsgi"),
    Variant("pywsgi-log", "bare pywsgi + access log to a file", "pywsgi", access_log=True),
    Variant("pywsgi-debugger", "bare pywsgi + Werkzeug's debugger", "pywsgi", wsgi_debugger=True),
    Variant("flask-debug", "`flask run --debug` (to a file)", "flask"),
    Variant("plain", "devrun `--no-dashboard` (to a file), debug on", "plain"),
    Variant("plain-nodebug", "devrun `--no-dashboard` (to a file), debug off", "plain", debug=False),
    Variant("dashboard", "devrun, dashboard (pty 120x40), debug on", "dashboard"),
    Variant("detached", "devrun `up -d`, debug on", "detached"),
    Variant("detached-follow", "devrun `up -d` + `devrun logs -f`, debug on", "detached", follow=True),
)
REFERENCE = "pywsgi"  # the issue's throughput target is against bare pywsgi without a log
LOGGED_REFERENCE = "pywsgi-log"


# -- processes ----------------------------------------------------------------------------------



def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()[:120]
    except OSError:
        return "?"


class Tree:
    """A process and every descendant seen while it ran, by pid and start time: killing it never
    signals a pid that was reused meanwhile."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.seen: dict[int, str] = {}
        self.note()

    def note(self) -> None:
        for pid in [self.pid, *descendants(self.pid)]:
            started = start_time(pid)
            if started is not None:
                self.seen.setdefault(pid, started)

    def left(self) -> list[int]:
        return [pid for pid, started in self.seen.items() if running(pid, started)]

    def kill(self) -> list[str]:
        """SIGKILL what is left, with its process groups (never ours); what was left (pid: command)."""
        if start_time(self.pid) == self.seen.get(self.pid):
            self.note()
        left = self.left()
        names = [f"{pid}: {command_line(pid)}" for pid in left]
        groups = set()
        for pid in left:
            with contextlib.suppress(OSError):
                groups.add(os.getpgid(pid))
        groups.discard(os.getpgid(0))
        for group in groups:
            with contextlib.suppress(OSError):
                os.killpg(group, signal.SIGKILL)
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        return names


def running(pid: int, started: str | None) -> bool:
    """Whether the process with that start time still runs (a zombie does not)."""
    fields = stat_fields(pid)
    return started is not None and fields is not None and fields[19] == started and fields[0] != "Z"


def wait_gone(pid: int, started: str | None, timeout: float) -> float | None:
    """Seconds until the process is gone (0.0: it already was); None when it still runs after timeout."""
    t0 = time.perf_counter()
    if not running(pid, started):
        return 0.0
    while running(pid, started):
        if time.perf_counter() - t0 > timeout:
            return None
        time.sleep(0.01)
    return time.perf_counter() - t0


def popen(argv: list[str], cwd: Path, env: dict[str, str], stdout: IO[bytes] | int | None,
          stdin: IO[bytes] | int | None = subprocess.DEVNULL,
          stderr: IO[bytes] | int | None = subprocess.STDOUT) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, cwd=cwd, env=env, stdin=stdin, stdout=stdout, stderr=stderr,
                            start_new_session=True)


def stop_proc(proc: subprocess.Popen[bytes], sig: int, timeout: float) -> str:
    """Signal the process and wait for it (bounded); what happened."""
    if proc.poll() is not None:
        return f"had already exited with code {proc.returncode}"
    with contextlib.suppress(OSError):
        proc.send_signal(sig)
    try:
        return f"exit code {proc.wait(timeout)} after {signal.Signals(sig).name}"
    except subprocess.TimeoutExpired:
        return f"still running {timeout:g} s after {signal.Signals(sig).name}; killed"


def runner_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DEVRUN_", "WERKZEUG_", "FLASK_")) and k not in ("NO_COLOR", "COLUMNS", "LINES")}
    env.update(TERM="xterm-256color", PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1",
               DEVRUN_LOG_MAX_BYTES=LOG_MAX_BYTES)
    return env


def devrun_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "devrun", *args]


# -- one run: a variant, afresh ----------------------------------------------------------------


@dataclass
class Wrk:
    rps: float
    requests: int
    seconds: float
    mean: float  # ms, of wrk's distribution (corrected for coordinated omission, see the module's docstring)
    max: float
    p50: float
    p99: float
    socket_errors: int
    non_2xx: int
    client_cpu: float  # wrk's own utime + stime, s


@dataclass
class Cpu:
    window: float  # s, from wrk's start until quiet again
    wrk_seconds: float
    runner: float | None  # CPU s over the window
    runner_during_wrk: float | None
    busiest: float  # the app: busiest descendant (bare pywsgi: its process)
    everything: float  # every descendant
    follower: float | None  # `devrun logs -f`
    quiet: bool


@dataclass
class Run:
    variant: Variant
    round: int
    folder: Path
    port: int
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    trees: list[Tree] = field(default_factory=list)
    root: int | None = None  # the runner, or the bare pywsgi process
    follower: subprocess.Popen[bytes] | None = None
    drain: PtyDrain | None = None
    master: int | None = None
    answered: int = 0  # responses given (readiness polls, warm-up, measured run), any status
    wrk: Wrk | None = None
    cpu: Cpu | None = None
    logged: dict[str, int] = field(default_factory=dict)  # log -> request lines
    samples: dict[str, str] = field(default_factory=dict)
    rotated: int = 0  # rotated per-app log files seen
    problem: str = ""
    stops: list[str] = field(default_factory=list)

    @property
    def log_dir(self) -> Path:
        return self.folder / ".devrun" / "logs"

    def logs(self) -> dict[str, tuple[list[Path], Callable[[str], int]]]:
        """Every log of this run that should hold a line per request, with its rule."""
        v = self.variant
        if not v.devrun:
            return {"access log": ([self.folder / "access.log"], pywsgi_request_lines)} if v.access_log else {}
        app_logs = sorted(self.log_dir.glob(f"{APP_NAME}.log*"), key=lambda p: p.name, reverse=True)
        out: dict[str, tuple[list[Path], Callable[[str], int]]] = {"per-app log": (app_logs, request_lines)}
        if v.kind == "plain":
            out["plain log"] = ([self.folder / "output.log"], request_lines)
        if v.follow:
            out["logs -f"] = ([self.folder / "follow.log"], request_lines)
        return out

    def count_lines(self) -> dict[str, int]:
        counts = {}
        for name, (paths, rule) in self.logs().items():
            counts[name] = sum(rule(read(p)) for p in paths)
        return counts


def read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def make_run(variant: Variant, round_no: int, root: Path) -> Run:
    folder = root / f"round{round_no}-{variant.key}"
    folder.mkdir()
    run = Run(variant, round_no, folder, free_port())
    (folder / "app.py").write_text(APP_SOURCE)
    if variant.devrun:
        (folder / "devrun.yaml").write_text(DEVRUN_YAML.format(port=run.port, debug=str(variant.debug).lower()))
    elif variant.kind == "pywsgi":
        (folder / "serve.py").write_text(SERVE_SOURCE)
    return run


def start(run: Run, env: dict[str, str], timeout: float) -> None:
    kind, folder = run.variant.kind, run.folder
    if kind == "pywsgi":
        with open(folder / "output.log", "wb") as out, open(folder / "access.log", "wb") as err:
            mode = "log" if run.variant.access_log else "debugger" if run.variant.wsgi_debugger else "none"
            proc = popen([sys.executable, "serve.py", str(run.port), mode], folder, env, out, stderr=err)
    elif kind == "flask":
        with open(folder / "output.log", "wb") as out:
            proc = popen([sys.executable, "-m", "flask", "--app", "app", "run", "--debug", "--port", str(run.port)],
                         folder, env, out)
    elif kind == "plain":
        with open(folder / "output.log", "wb") as out:
            proc = popen(devrun_argv("up", "-c", "devrun.yaml", "--no-dashboard"), folder, env, out)
    elif kind == "dashboard":
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
        run.master = master
        try:
            proc = popen(devrun_argv("up", "-c", "devrun.yaml"), folder, env, slave, stdin=slave, stderr=slave)
        finally:
            os.close(slave)
        run.drain = PtyDrain(master)
        run.drain.start()
    else:
        start_detached(run, env, timeout)
        return
    run.procs.append(proc)
    run.trees.append(Tree(proc.pid))
    run.root = proc.pid


def start_detached(run: Run, env: dict[str, str], timeout: float) -> None:
    """`devrun up -d` returns once the apps are up; the runner it leaves is found by its status."""
    with open(run.folder / "up-d.log", "wb") as out:
        proc = popen(devrun_argv("up", "-d", "-c", "devrun.yaml"), run.folder, env, out)
    run.procs.append(proc)
    run.trees.append(Tree(proc.pid))
    try:
        code = proc.wait(timeout + 10)
    except subprocess.TimeoutExpired:
        run.problem = f"`devrun up -d` still running after {timeout + 10:g} s"
        return
    try:
        status = subprocess.run(devrun_argv("status", "--json", "-c", "devrun.yaml"), cwd=run.folder, env=env,
                                capture_output=True, text=True, timeout=15, start_new_session=True)
        pid = json.loads(status.stdout).get("pid")
    except (subprocess.TimeoutExpired, ValueError, AttributeError) as exc:
        run.problem = f"`devrun up -d` exited {code}; `devrun status --json` gave no pid ({exc})"
        return
    if not isinstance(pid, int):
        run.problem = f"`devrun up -d` exited {code}; `devrun status --json` gave no pid: {status.stdout[:200]!r}"
        return
    run.root = pid
    run.trees.append(Tree(pid))
    if code != 0:
        run.problem = f"`devrun up -d` exited {code}: {read(run.folder / 'up-d.log')[-300:]!r}"


def alive(run: Run) -> bool:
    if run.root is None or start_time(run.root) is None:
        if not run.problem:
            codes = [p.poll() for p in run.procs]
            run.problem = f"the server is gone (exit codes {codes})"
        return False
    for tree in run.trees:
        tree.note()
    return True


def http_get(port: int, timeout: float) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/", headers={"Connection": "close"})
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


def wait_ready(run: Run, timeout: float) -> float | None:
    """Until `/` answers the app's text (bounded); seconds it took. Every response counts as answered."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout and alive(run):
        with contextlib.suppress(OSError, http.client.HTTPException):
            status, body = http_get(run.port, POLL_TIMEOUT)
            run.answered += 1
            if status == 200 and body == BODY:
                return time.perf_counter() - t0
        time.sleep(POLL_EVERY)
    if not run.problem:
        run.problem = f"port {run.port} did not answer {BODY!r} within {timeout:g} s"
    return None


def start_follower(run: Run, env: dict[str, str]) -> None:
    """`devrun logs -f` from the first line on; waits (bounded) until it has printed the lines
    logged so far, so that it follows the file before the load starts."""
    with open(run.folder / "follow.log", "wb") as out:
        run.follower = popen(devrun_argv("logs", "-f", "-n", FOLLOW_LINES, "-c", "devrun.yaml"), run.folder, env,
                             out)
    run.procs.append(run.follower)
    run.trees.append(Tree(run.follower.pid))
    end = time.monotonic() + 10
    while time.monotonic() < end and run.follower.poll() is None:
        counts = run.count_lines()
        if counts["logs -f"] >= counts["per-app log"] > 0:
            return
        time.sleep(0.1)
    run.problem = run.problem or "`devrun logs -f` had not printed the lines logged so far after 10 s"


# -- load and CPU -------------------------------------------------------------------------------

WRK_REQUESTS = re.compile(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h)\b")
WRK_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_TIME = r"([\d.]+)(us|ms|s|m|h)"
WRK_MEAN = re.compile(rf"^\s*Latency\s+{_TIME}\s+{_TIME}\s+{_TIME}\s", re.M)  # Thread Stats: avg, stdev, max
WRK_PERCENTILE = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.M)
WRK_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
WRK_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
TO_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def parse_wrk(text: str, client_cpu: float) -> Wrk | str:
    requests, rps, mean = WRK_REQUESTS.search(text), WRK_RPS.search(text), WRK_MEAN.search(text)
    latency = {m.group(1): float(m.group(2)) * TO_MS[m.group(3)] for m in WRK_PERCENTILE.finditer(text)}
    if requests is None or rps is None or mean is None or set(latency) != {"50", "99"}:
        return "unexpected wrk output: " + " / ".join(text.strip().splitlines()[-4:])
    errors = WRK_ERRORS.search(text)
    non_2xx = WRK_NON_2XX.search(text)
    return Wrk(rps=float(rps.group(1)), requests=int(requests.group(1)),
               seconds=float(requests.group(2)) * TO_MS[requests.group(3)] / 1000,
               mean=float(mean.group(1)) * TO_MS[mean.group(2)], max=float(mean.group(5)) * TO_MS[mean.group(6)],
               p50=latency["50"], p99=latency["99"],
               socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
               non_2xx=int(non_2xx.group(1)) if non_2xx else 0, client_cpu=client_cpu)


def run_wrk(args: argparse.Namespace, run: Run, duration: int) -> Wrk | str:
    argv = [args.wrk, f"-t{args.threads}", f"-c{args.connections}", f"-d{duration}s", "--latency",
            f"http://127.0.0.1:{run.port}/"]
    # wrk is the only child reaped meanwhile: the difference is its own CPU
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + WRK_SLACK,
                              start_new_session=True, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:  # subprocess.run kills it
        return f"wrk still running {duration + WRK_SLACK:g} s after it started; killed"
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    if done.returncode != 0:
        return f"wrk exited {done.returncode}: {(done.stderr or done.stdout).strip()[-300:]}"
    result = parse_wrk(done.stdout, client)
    if isinstance(result, Wrk):
        run.answered += result.requests
    return result


def server_pids(run: Run) -> list[int]:
    return [] if run.root is None else [run.root, *descendants(run.root)]


def ticks(pids: Iterable[int]) -> dict[int, int]:
    out = {}
    for pid in pids:
        t = cpu_ticks(pid)
        if t is not None:
            out[pid] = t
    return out


def wait_quiet(run: Run) -> tuple[float, bool]:
    """Until every process of the server used under QUIET_CPU of a core for QUIET_WINDOW s (at
    most QUIET_LIMIT s); (seconds waited, whether it got quiet)."""
    limit = QUIET_CPU * QUIET_WINDOW * os.sysconf("SC_CLK_TCK")
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < QUIET_LIMIT:
        pids = server_pids(run)
        before = ticks(pids)
        time.sleep(QUIET_WINDOW)
        after = ticks(pids)
        if sum(after[p] - before[p] for p in after if p in before) < limit:
            return time.perf_counter() - t0, True
    return time.perf_counter() - t0, False


def measure(args: argparse.Namespace, run: Run) -> None:
    """The measured wrk run, with the CPU of every process from its start until quiet again."""
    assert run.root is not None
    tick = os.sysconf("SC_CLK_TCK")
    follower = [] if run.follower is None else [run.follower.pid]
    at_start = ticks([*server_pids(run), *follower])
    t0 = time.perf_counter()
    result = run_wrk(args, run, args.duration)
    wrk_seconds = time.perf_counter() - t0
    at_wrk_end = ticks([run.root])
    if isinstance(result, str):
        run.problem = result
        return
    run.wrk = result
    _, quiet = wait_quiet(run)
    at_end = ticks([*server_pids(run), *follower])
    window = time.perf_counter() - t0

    def used(pid: int, end: dict[int, int] = at_end) -> float:
        return (end.get(pid, at_start.get(pid, 0)) - at_start.get(pid, 0)) / tick  # a new process starts at 0

    kids = [p for p in {*at_start, *at_end} if p != run.root and p not in follower]
    if run.variant.devrun:
        run.cpu = Cpu(window=window, wrk_seconds=wrk_seconds, runner=used(run.root),
                      runner_during_wrk=used(run.root, at_wrk_end), busiest=max((used(p) for p in kids), default=0.0),
                      everything=sum(used(p) for p in kids), follower=used(follower[0]) if follower else None,
                      quiet=quiet)
    else:
        # `flask run --debug` serves from a child of its reloader: the busiest process is the server.
        everyone = [p for p in {*at_start, *at_end} if p not in follower]
        run.cpu = Cpu(window=window, wrk_seconds=wrk_seconds, runner=None, runner_during_wrk=None,
                      busiest=max((used(p) for p in everyone), default=0.0),
                      everything=sum(used(p) for p in everyone), follower=None, quiet=quiet)


def settle_logs(run: Run) -> None:
    """Until every log holds a line per response given, or none grew for SETTLE_STEADY s (at
    most SETTLE_LIMIT s)."""
    end = time.monotonic() + SETTLE_LIMIT
    last: dict[str, int] = {}
    steady_since = time.monotonic()
    while time.monotonic() < end:
        counts = run.count_lines()
        if all(n >= run.answered for n in counts.values()):
            return
        if counts != last:
            last, steady_since = counts, time.monotonic()
        elif time.monotonic() - steady_since >= SETTLE_STEADY:
            return
        time.sleep(0.2)


def shut_down(run: Run, env: dict[str, str]) -> None:
    """Stop the way a user does (SIGTERM, `devrun down`, Ctrl-C for `logs -f`), bounded; then
    SIGKILL whatever is left of every tree."""
    for tree in run.trees:
        if start_time(tree.pid) == tree.seen.get(tree.pid):
            tree.note()
    if run.variant.kind == "detached":  # also when its pid is unknown: `down` finds the runner by its config
        try:
            down = subprocess.run(devrun_argv("down", "-c", "devrun.yaml"), cwd=run.folder, env=env,
                                  capture_output=True, text=True, timeout=DOWN_TIMEOUT, start_new_session=True)
            started = next((t.seen.get(t.pid) for t in run.trees if t.pid == run.root), None)
            lingered = 0.0 if run.root is None else wait_gone(run.root, started, 5.0)
            run.stops.append(f"runner: `devrun down` exit code {down.returncode}"
                             + ("; the runner's process was still there 5 s after it returned" if lingered is None
                                else f"; the runner's process exited {lingered:.2f} s after it returned"
                                if lingered >= 0.1 else ""))
        except subprocess.TimeoutExpired:
            run.stops.append(f"runner: `devrun down` still running after {DOWN_TIMEOUT:g} s; killed")
    elif run.procs:
        run.stops.append("server: " + stop_proc(run.procs[0], signal.SIGTERM, STOP_TIMEOUT))
    if run.follower is not None:
        run.stops.append("logs -f: " + stop_proc(run.follower, signal.SIGINT, 5))
    killed = [name for tree in run.trees for name in tree.kill()]
    if killed:
        run.stops.append(f"{len(killed)} processes left, SIGKILLed (" + "; ".join(f"`{k}`" for k in killed) + ")")
    for proc in run.procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
    if run.drain is not None:
        run.drain.join(2)
        run.drain.done.set()
        run.drain.join(1)
    if run.master is not None:
        with contextlib.suppress(OSError):
            os.close(run.master)
        run.master = None


def read_logs(run: Run) -> None:
    for name, (paths, rule) in run.logs().items():
        texts = [read(p) for p in paths]
        run.logged[name] = sum(rule(t) for t in texts)
        run.samples[name] = sample_line(texts[-1] if texts else "", rule)
    run.rotated = len([p for p in run.log_dir.glob(f"{APP_NAME}.log.*")]) if run.variant.devrun else 0


def one_run(args: argparse.Namespace, run: Run, env: dict[str, str]) -> None:
    print(f"round {run.round}: {run.variant.key} on port {run.port}", file=sys.stderr)
    try:
        start(run, env, args.start_timeout)
        if run.problem or wait_ready(run, args.start_timeout) is None:
            return
        if run.variant.follow:
            start_follower(run, env)
        if args.warmup:
            warm = run_wrk(args, run, args.warmup)
            if isinstance(warm, str):
                run.problem = f"warm-up: {warm}"
                return
        wait_quiet(run)
        if alive(run):
            measure(args, run)
        settle_logs(run)
    finally:
        shut_down(run, env)
        read_logs(run)


# -- report -------------------------------------------------------------------------------------


def median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def cell(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


@dataclass
class Summary:
    variant: Variant
    runs: list[Run]
    rps: float | None
    p50: float | None
    p99: float | None
    runner: float | None
    busiest: float | None
    everything: float | None
    cpu_ratio: float | None
    lost: dict[str, int]
    extra: dict[str, int]


def summarise(variant: Variant, runs: list[Run]) -> Summary:
    measured = [r for r in runs if r.wrk is not None]
    cpus = [r.cpu for r in measured if r.cpu is not None]
    lost: dict[str, int] = {}
    extra: dict[str, int] = {}
    for r in runs:
        for name, n in r.logged.items():
            lost[name] = lost.get(name, 0) + max(r.answered - n, 0)
            extra[name] = extra.get(name, 0) + max(n - r.answered, 0)
    return Summary(
        variant, runs,
        rps=median(r.wrk.rps for r in measured if r.wrk), p50=median(r.wrk.p50 for r in measured if r.wrk),
        p99=median(r.wrk.p99 for r in measured if r.wrk), runner=median(c.runner for c in cpus),
        busiest=median(c.busiest for c in cpus), everything=median(c.everything for c in cpus),
        cpu_ratio=median(c.runner / c.busiest if c.runner is not None and c.busiest else None for c in cpus),
        lost=lost, extra=extra)


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def verdict(ok: bool | None) -> str:
    return "—" if ok is None else "met" if ok else "**missed**"


def table(summaries: list[Summary]) -> str:
    by = {s.variant.key: s for s in summaries}
    ref = by[REFERENCE].rps if REFERENCE in by else None
    logged_ref = by[LOGGED_REFERENCE].rps if LOGGED_REFERENCE in by else None
    rows = [
        "| variant | req/s | × pywsgi | × pywsgi + log | p50 ms | p99 ms | runner CPU s | app CPU s: serving "
        "(all) | runner / app CPU | throughput ≥ 0.95× pywsgi | runner ≤ 0.1× app | request lines lost |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for s in summaries:
        x = ratio(s.rps, ref)
        lost = sum(s.lost.values())
        measured = any(r.wrk for r in s.runs)
        lines = "—" if not s.lost or not measured else ("none" if not lost else f"**{lost}**") + " (" + ", ".join(
            f"{name} {n}" for name, n in s.lost.items()) + ")"
        devrun = s.variant.devrun
        rows.append(
            f"| {s.variant.label} | {cell(s.rps, '.0f')} | {cell(x, '.2f')} | {cell(ratio(s.rps, logged_ref), '.2f')} "
            f"| {cell(s.p50, '.2f')} | {cell(s.p99, '.2f')} | {cell(s.runner, '.2f')} "
            f"| {cell(s.busiest, '.2f')} ({cell(s.everything, '.2f')}) | {cell(s.cpu_ratio, '.2f')} "
            f"| {verdict(None if not devrun or x is None else x >= TARGET_RATIO)} "
            f"| {verdict(None if not devrun or s.cpu_ratio is None else s.cpu_ratio <= TARGET_CPU)} | {lines} |")
    return "\n".join(rows)


def run_note(r: Run, connections: int) -> str:
    parts = []
    if r.wrk:
        parts.append(f"{r.wrk.rps:.0f} req/s, p50 {r.wrk.p50:.2f} / p99 {r.wrk.p99:.2f} ms")
        bound = r.wrk.seconds * 1000 * connections / r.wrk.requests if r.wrk.requests else 0.0
        # Little's law: with one request in flight per connection the measured mean is at most `bound`;
        # above it, wrk's correction for coordinated omission added samples for stalled connections.
        if r.wrk.mean > 1.1 * bound:
            parts.append(f"stalls: max {r.wrk.max:.0f} ms; wrk's corrected mean {r.wrk.mean:.2f} ms against at most "
                         f"{bound:.2f} ms measured")
        if r.wrk.socket_errors or r.wrk.non_2xx:
            parts.append(f"**{r.wrk.socket_errors} socket errors, {r.wrk.non_2xx} non-2xx**")
    c = r.cpu
    if c:
        if c.runner is not None and c.runner_during_wrk is not None and r.wrk:
            parts.append(f"runner {c.runner_during_wrk / c.wrk_seconds:.0%} of a core during wrk, "
                         f"{c.runner:.2f} s until quiet ({c.runner * 1000 / r.wrk.requests:.3f} ms per request)")
        parts.append(f"app {c.busiest:.2f} s (all {c.everything:.2f} s) over {c.window:.1f} s"
                     + ("" if c.quiet else f", **not quiet {QUIET_LIMIT:g} s after wrk**"))
        if c.follower is not None:
            parts.append(f"`logs -f` {c.follower:.2f} s")
    if r.wrk:
        parts.append(f"wrk {r.wrk.client_cpu:.2f} s")
    if r.drain is not None and r.cpu:
        parts.append(f"terminal {r.drain.total / 1024:.0f} KiB in all")
    if r.logged:
        parts.append(f"{r.answered} answered; lines: " + ", ".join(f"{k} {n}" for k, n in r.logged.items()))
    if r.rotated:
        parts.append(f"{r.rotated} rotated per-app log files")
    if r.problem:
        parts.append(f"**problem: {r.problem}**")
    parts.extend(r.stops)
    return f"round {r.round}: " + "; ".join(p for p in parts if p)


def notes(summaries: list[Summary], args: argparse.Namespace) -> str:
    tick = os.sysconf("SC_CLK_TCK")
    lines = [
        f"Per round and variant: a fresh server, {args.warmup} s of warm-up, then `wrk -t{args.threads} "
        f"-c{args.connections} -d{args.duration}s --latency`; {args.rounds} rounds, the order reversed every other "
        "round; medians over the rounds. CPU from wrk's start until every process of the server was under "
        f"{QUIET_CPU:.0%} of a core for {QUIET_WINDOW:g} s (at most {QUIET_LIMIT:g} s after wrk), in ticks of "
        f"{1000 / tick:g} ms; \"app\" is the busiest descendant of the runner (the serving generation), \"all\" every "
        f"descendant. \"× pywsgi\" is against bare pywsgi with log=None ({REFERENCE}), the reference of the "
        "issue's target; \"× pywsgi + log\" against bare pywsgi writing its access log to a file. Lines lost: "
        "responses given (readiness polls, warm-up and measured wrk runs) minus the request lines a log holds, "
        f"summed over the rounds; a log may hold up to {args.connections} more per wrk run (requests in flight "
        "when wrk stopped). wrk's p50/p99 include its correction for coordinated omission (see bench/README.md); "
        "\"stalls\" gives its longest latency and its mean against the most a measured mean can be. wrk, this script "
        "and the server share the machine's CPUs.",
    ]
    for s in summaries:
        lines.append(f"- {s.variant.label} (`{s.variant.key}`):")
        lines.extend(f"  - {run_note(r, args.connections)}" for r in s.runs)
        extra = {k: n for k, n in s.extra.items() if n}
        if extra:
            lines.append("  - lines beyond the responses counted: " + ", ".join(f"{k} {n}" for k, n in extra.items()))
        samples = {k: v for r in [r for r in s.runs if r.wrk][-1:] for k, v in r.samples.items()}
        lines.extend(f"  - a request line in the {k}: `{v}`" for k, v in samples.items())
    return "\n".join(lines)


def machine(source: tuple[str, str], load: str, wrk: str) -> str:
    cpu = cpu_model()
    return "\n".join([
        f"- machine: {platform.system()} {platform.release()}, nproc {nproc()}" + (f", {cpu}" if cpu else "")
        + (f", load average at start {load}" if load else ""),
        f"- Python {platform.python_version()} ({platform.python_implementation()})",
        "- " + ", ".join([*package_versions(PACKAGES), wrk]),
        *([f"- devrun source: commit {source[0]}"] if source[0] and source[0] == source[1] else []),
        *([f"- devrun source: commit {source[0]} at start, {source[1]} at the end: **devrun changed during the "
           "run**, so these numbers mix two versions"] if source[0] != source[1] else []),
    ])


def wrk_version(path: str) -> str:
    try:
        out = subprocess.run([path, "-v"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "wrk (version unknown)"
    first = out.splitlines()[0] if out else ""
    return " ".join(first.split()[:2]) or "wrk (version unknown)"


def command() -> str:
    """The command line that started this run, as the interpreter received it (quoted for a POSIX shell)."""
    return shlex.join(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])


def report(summaries: list[Summary], args: argparse.Namespace, started: datetime.datetime,
           source: tuple[str, str], load: str, cwd: Path) -> str:
    return "\n\n".join([
        f"## Throughput benchmark, {started:%Y-%m-%d %H:%M}",
        machine(source, load, wrk_version(args.wrk)),
        f"Reproduce (run in `{cwd}`, after `pip install -e . flask gevent` and `apt-get install wrk`):\n\n"
        f"```sh\n{command()}\n```",
        table(summaries),
        notes(summaries, args),
    ]) + "\n"


def write_out(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    path.write_text(old.rstrip("\n") + "\n\n" + text)


# -- main ---------------------------------------------------------------------------------------


def variant_keys(text: str) -> list[Variant]:
    known = {v.key: v for v in VARIANTS}
    keys = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in keys if k not in known]
    if unknown or not keys:
        raise argparse.ArgumentTypeError(f"unknown variant {', '.join(unknown)}; choose from {', '.join(known)}")
    return [known[k] for k in dict.fromkeys(keys)]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--variants", type=variant_keys, default=list(VARIANTS),
                        help="comma-separated, in this order (default all): " + ", ".join(v.key for v in VARIANTS))
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each runs every variant once (default 3)")
    parser.add_argument("--duration", type=int, default=5, help="seconds of each measured wrk run (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of the warm-up wrk run, 0 for none (default 1)")
    parser.add_argument("--connections", type=int, default=10, help="wrk's keep-alive connections (default 10)")
    parser.add_argument("--threads", type=int, default=1, help="wrk's threads (default 1)")
    parser.add_argument("--start-timeout", type=float, default=60.0,
                        help="seconds a server may take to answer its first request (default 60)")
    parser.add_argument("--wrk", default=shutil.which("wrk") or "/usr/bin/wrk", help="the wrk to run")
    parser.add_argument("--out", type=Path, help="also append the results, under a dated heading, to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folders with the apps and logs")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.duration < 1 or args.warmup < 0 or args.connections < 1 or args.threads < 1:
        parser.error("--rounds, --duration, --connections and --threads must be at least 1, --warmup at least 0")
    if args.threads > args.connections:
        parser.error("wrk needs at least one connection per thread")
    if not sys.platform.startswith("linux"):
        parser.error("Linux only (/proc)")
    if not os.access(args.wrk, os.X_OK):
        parser.error(f"no wrk at {args.wrk} (apt-get install wrk, or --wrk PATH)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.datetime.now()
    cwd = Path.cwd()
    source_at_start = devrun_source()
    load_at_start = loadavg()
    root = Path(tempfile.mkdtemp(prefix="devrun-bench-throughput-"))
    env = runner_env()
    runs: dict[str, list[Run]] = {v.key: [] for v in args.variants}
    try:
        for r in range(1, args.rounds + 1):
            for variant in args.variants if r % 2 else reversed(args.variants):
                run = make_run(variant, r, root)
                runs[variant.key].append(run)
                one_run(args, run, env)
                if run.problem:
                    print(f"--- {variant.key}, round {r}: {run.problem}", file=sys.stderr)
    finally:
        if args.keep:
            print(f"apps and logs kept in {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    summaries = [summarise(v, runs[v.key]) for v in args.variants]
    text = report(summaries, args, started, (source_at_start, devrun_source()), load_at_start, cwd)
    print(text)
    if args.out:
        write_out(args.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
