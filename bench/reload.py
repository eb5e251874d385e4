#!/usr/bin/env python3
"""Reload benchmark: devrun (fork and spawn) vs `flask run --debug` vs `gunicorn --reload -k gevent` vs hupper.

Needs flask, gunicorn, gevent and hupper installed in the Python that runs it, next to devrun:

    pip install -e . flask gunicorn gevent hupper
    python bench/reload.py                                # 20 edits per runner, table on stdout
    python bench/reload.py --edits 3 --runners "devrun (fork),devrun (spawn),hupper"
    python bench/reload.py --edits 20 --out docs/benchmarks.md

It writes a small Flask app (``/`` returns a version string such as ``v17``, ``/sleep`` sleeps
3 s) into a fresh temporary folder per runner (so no runner sees another's edits) and starts the
runners chosen with ``--runners`` (default: all), each on a port found by binding port 0 on
127.0.0.1:

- devrun (fork):  ``devrun up -c devrun.yaml --no-dashboard`` with ``reload: fork`` (app ``app:app``,
  every other key default)
- devrun (spawn): the same with ``reload: spawn``
- with ``--baseline PATH`` (another devrun's console script, e.g. an older commit installed in its
  own venv), also "devrun baseline (fork)" and "devrun baseline (spawn)": the same runs of that
  devrun, in the same invocation, so a change is measured against what it replaces
- flask run --debug: ``flask --app app run --debug --port P`` (Werkzeug's reloader; watchdog when installed)
- gunicorn --reload: ``gunicorn --reload -k gevent -b 127.0.0.1:P app:app`` (plus ``--no-control-socket``
  where gunicorn has it, so that it does not create ``~/.gunicorn/gunicorn.ctl``)
- hupper: ``hupper -m serve P``, as hupper's documentation shows (``hupper -m <module>``), where
  ``serve.py`` imports the app and serves it with Werkzeug's ``run_simple(..., use_reloader=False,
  threaded=True)``: the server ``flask run`` uses, without its own reloader, threaded like ``flask run``

and measures, for each of them in the same invocation:

1. cold start: from starting the process to the first HTTP 200 on ``/``;
2. reload latency (with every other runner paused by SIGSTOP meanwhile, unless
   ``--no-pause-others``: a runner that burns CPU while idle must not slow another on a small
   machine): from saving a new version of ``app.py`` (the whole file, written to a temporary
   file and moved over ``app.py`` with ``os.replace``: an atomic save) to the first HTTP 200 whose
   body is the new version, polling every 5 ms. Edits are interleaved (edit 1 of every runner,
   then edit 2, ...; the order rotates each round) and each is followed by a settle pause that is
   not counted. An edit not seen within ``--timeout`` seconds counts as a timeout;
3. failed requests: during each runner's edits a client thread requests ``/`` every 10 ms; a
   refused, reset or timed-out connection and a 5xx status count as failures;
4. an in-flight request: ``/sleep`` is started, a reload is triggered 0.5 s later, and the table
   says whether the sleep request still completed with 200;
5. the interpreter-restart floor: the median wall time of 5 runs of
   ``python -c "from gevent import monkey; monkey.patch_all(); import flask, werkzeug.debug, gevent.pywsgi"``
   (what any generation that starts a fresh interpreter has to pay at least), spread over the edit
   rounds, each started between rounds once every runner's processes have been idle for a moment;
   each runner's reload p50 is also given as a multiple of it.

Every process runs in its own session with its output in a log file, and is killed with its
process group and every descendant (found through /proc) when the benchmark ends; every wait is
bounded. Only loopback traffic. Linux only (/proc). The runners get PYTHONDONTWRITEBYTECODE=1:
edits less than a second apart that keep the file's size would otherwise be served from a stale
``__pycache__`` entry (the pyc check compares whole-second mtimes and sizes), by every runner.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import http.client
import importlib.metadata
import importlib.util
import math
import os
import platform
import random
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from benchinfo import cpu_model, descendants, devrun_source, free_port, kill_tree, loadavg, nproc, package_versions

APP_SOURCE = '''\
import time

from flask import Flask

VERSION = "{version}"

app = Flask(__name__)


@app.route("/")
def index():
    return VERSION


@app.route("/sleep")
def sleep():
    time.sleep(3)
    return "slept " + VERSION
'''

DEVRUN_YAML = """\
apps:
  bench:
    app: "app:app"
    port: {port}
    reload: {reload}
"""

# hupper runs this module (`hupper -m serve PORT`); it is never edited, only the app it imports is
HUPPER_SERVE = '''\
import sys

from werkzeug.serving import run_simple

from app import app

run_simple("127.0.0.1", int(sys.argv[1]), app, use_reloader=False, threaded=True)
'''

# name in the table and in --runners -> folder and log name
RUNNERS = {
    "devrun (fork)": "devrun-fork",
    "devrun (spawn)": "devrun-spawn",
    "devrun baseline (fork)": "devrun-fork-baseline",  # only with --baseline
    "devrun baseline (spawn)": "devrun-spawn-baseline",
    "flask run --debug": "flask",
    "gunicorn --reload": "gunicorn",
    "hupper": "hupper",
}
BASELINE = "devrun (fork)"  # ratios in the table are relative to this runner

PACKAGES = ("devrun", "flask", "gunicorn", "gevent", "werkzeug", "watchdog", "hupper")
FLOOR_CODE = "from gevent import monkey; monkey.patch_all(); import flask, werkzeug.debug, gevent.pywsgi"
FLOOR_RUNS = 5  # samples of the interpreter-restart floor, spread over the edit rounds
FLOOR_TIMEOUT = 60.0  # per sample
QUIET_WINDOW = 0.25  # a floor sample starts once the runners used under QUIET_CPU of a core for this long
QUIET_CPU = 0.10
QUIET_LIMIT = 5.0  # ... or after this many seconds of waiting, noted in the report
POLL_EVERY = 0.005  # reload latency: one GET every 5 ms
LOAD_EVERY = 0.010  # background client: one GET every 10 ms
POLL_TIMEOUT = 1.0  # per request while waiting for a reload or a cold start
LOAD_TIMEOUT = 2.0  # per request of the background client; longer counts as a failure
SLEEP_TIMEOUT = 15.0  # the /sleep request (3 s of work)
INFLIGHT_DELAY = 0.5  # /sleep starts, then the reload this long after
LOAD_LEAD = 0.1  # the background client runs this long before each save
# A runner resumed from a pause (see alone()) and saved to at once would always meet a polling
# reloader (gunicorn without inotify polls every 1 s) at the same point of its cycle, the worst:
# it has just scanned. A random wait of up to PHASE before each save gives every phase, as in use.
PHASE = 1.0


# -- HTTP on loopback ---------------------------------------------------------------------------




def http_get(port: int, path: str, timeout: float) -> tuple[int, str]:
    """One GET on a fresh connection (no keep-alive): status and body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


def failure_kind(exc: BaseException) -> str:
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError):  # RemoteDisconnected is one
        return "reset"
    return type(exc).__name__


def parse_version(body: str) -> int | None:
    body = body.strip()
    if body.startswith("v") and body[1:].isdigit():
        return int(body[1:])
    return None


class LoadClient(threading.Thread):
    """Requests / every LOAD_EVERY seconds until stopped; counts failures and stale answers."""

    def __init__(self, port: int, newest: Callable[[], int]):
        super().__init__(daemon=True, name=f"load-{port}")
        self.port = port
        self.newest = newest  # the newest version that has been served to the latency poller
        self.done = threading.Event()
        self.total = 0
        self.failures: Counter[str] = Counter()
        self.stale = 0  # 200s with an older version than one already seen

    def run(self) -> None:
        due = time.perf_counter()
        while not self.done.is_set():
            try:
                status, body = http_get(self.port, "/", LOAD_TIMEOUT)
                if status >= 500:
                    self.failures[f"HTTP {status}"] += 1
                elif status == 200:
                    version = parse_version(body)
                    if version is not None and version < self.newest():
                        self.stale += 1
            except (OSError, http.client.HTTPException) as exc:
                self.failures[failure_kind(exc)] += 1
            self.total += 1
            due += LOAD_EVERY
            delay = due - time.perf_counter()
            if delay > 0:
                self.done.wait(delay)
            else:
                due = time.perf_counter()

    def stop(self) -> None:
        self.done.set()
        self.join(LOAD_TIMEOUT + 1)


# -- processes ----------------------------------------------------------------------------------




def tool(name: str) -> list[str]:
    """The console script next to this Python, else `python -m name`."""
    script = Path(sys.executable).parent / name
    return [str(script)] if script.exists() else [sys.executable, "-m", name]


@dataclass
class Runner:
    name: str
    folder: Path
    log: Path
    port: int
    argv: list[str]
    version: int = 0
    newest_served: int = 0
    proc: subprocess.Popen[bytes] | None = None
    # results
    cold_ms: float | None = None
    problem: str = ""  # why it stopped being measured
    latencies: list[float] = field(default_factory=list)
    timeouts: int = 0
    total: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    stale: int = 0
    inflight: str = "not run"
    counts: dict[str, int] = field(default_factory=dict)  # log_marks counted at the end
    log_marks: tuple[str, ...] = ()  # log lines worth counting: reloads, reloader trouble

    def save(self, version: int) -> float:
        """Atomically replace app.py with `version`; returns the time of the save."""
        tmp = self.folder / f".app.py.{version}.tmp"
        tmp.write_text(APP_SOURCE.format(version=f"v{version}"))
        os.replace(tmp, self.folder / "app.py")
        self.version = version
        return time.perf_counter()

    def start(self, env: dict[str, str]) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv, cwd=self.folder, env=env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def alive(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            if not self.problem:
                code = None if self.proc is None else self.proc.returncode
                self.problem = f"exited with code {code} (see {self.log})"
            return False
        return True

    def kill(self) -> None:
        if self.proc is not None:
            kill_tree(self.proc)

    def log_counts(self) -> dict[str, int]:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return {}
        return {mark: sum(mark in line for line in text) for mark in self.log_marks}

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def make_runners(root: Path, names: list[str], baseline: Path | None = None) -> list[Runner]:
    runners = []
    for name in names:
        key = RUNNERS[name]
        folder = root / key  # one folder per runner: no runner sees another's edits
        folder.mkdir()
        port = free_port()
        if key.startswith("devrun"):
            (folder / "devrun.yaml").write_text(DEVRUN_YAML.format(port=port, reload=key.split("-")[1]))
            devrun = [str(baseline)] if key.endswith("-baseline") and baseline else tool("devrun")
            argv = [*devrun, "up", "-c", "devrun.yaml", "--no-dashboard"]
        elif key == "flask":
            argv = [*tool("flask"), "--app", "app", "run", "--debug", "--port", str(port)]
        elif key == "gunicorn":
            argv = [*tool("gunicorn"), "--reload", "-k", "gevent", "-b", f"127.0.0.1:{port}", "app:app"]
            if gunicorn_has_control_socket():
                argv.insert(-1, "--no-control-socket")  # else it makes ~/.gunicorn/gunicorn.ctl
        else:
            (folder / "serve.py").write_text(HUPPER_SERVE)
            argv = [*tool("hupper"), "-m", "serve", str(port)]
        marks = {
            "devrun-fork": ("reload (", "starting (pid", "fork server", "crashed", "error:"),
            "devrun-fork-baseline": ("reload (", "starting (pid", "fork server", "crashed", "error:"),
            "devrun-spawn-baseline": ("reload (", "starting (pid", "fork server", "crashed", "error:"),
            "devrun-spawn": ("reload (", "starting (pid", "fork server", "crashed", "error:"),
            "flask": ("Detected change", "Inotify queue overflowed"),
            "gunicorn": ("Worker reloading", "Booting worker"),
            "hupper": ("changed; reloading", "Starting monitor for PID", "forcefully killing"),
        }[key]
        runners.append(Runner(name, folder, root / "logs" / f"{key}.log", port, argv, log_marks=marks))
    return runners


def gunicorn_has_control_socket() -> bool:
    try:
        out = subprocess.run([*tool("gunicorn"), "--help"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "--no-control-socket" in out


def runner_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("WERKZEUG_", "FLASK_", "DEVRUN_", "GUNICORN_", "HUPPER_"))}
    env.update(PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1", NO_COLOR="1")
    return env


# -- measurements -------------------------------------------------------------------------------


def cold_start(runner: Runner, env: dict[str, str], timeout: float) -> None:
    runner.save(0)
    t0 = time.perf_counter()
    runner.start(env)
    deadline = t0 + timeout
    while time.perf_counter() < deadline and runner.alive():
        with contextlib.suppress(OSError, http.client.HTTPException):
            status, _ = http_get(runner.port, "/", min(POLL_TIMEOUT, max(deadline - time.perf_counter(), 0.01)))
            if status == 200:
                runner.cold_ms = (time.perf_counter() - t0) * 1000
                return
        time.sleep(POLL_EVERY)
    if not runner.problem:
        runner.problem = f"no 200 within {timeout:.0f} s of starting (see {runner.log})"


def wait_for_version(runner: Runner, version: int, saved: float, timeout: float) -> float | None:
    """Poll / every 5 ms until it answers 200 with `version`: ms since `saved`, or None."""
    want = f"v{version}"
    deadline = saved + timeout
    while (left := deadline - time.perf_counter()) > 0:
        with contextlib.suppress(OSError, http.client.HTTPException):
            status, body = http_get(runner.port, "/", min(POLL_TIMEOUT, left))
            if status == 200 and body.strip() == want:
                runner.newest_served = max(runner.newest_served, version)
                return (time.perf_counter() - saved) * 1000
        time.sleep(POLL_EVERY)
    return None


def signal_tree(runner: Runner, sig: int) -> None:
    if runner.proc is None or runner.proc.poll() is not None:
        return
    for pid in [runner.proc.pid, *descendants(runner.proc.pid)]:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


@contextlib.contextmanager
def alone(runner: Runner | None, runners: list[Runner], pause: bool) -> Iterator[None]:
    """Pause (SIGSTOP) every other runner's processes meanwhile: one that burns CPU while idle
    (a reloader stuck in a loop) must not slow the one being measured on a 2-core machine."""
    others = [r for r in runners if r is not runner] if pause else []
    for r in others:
        signal_tree(r, signal.SIGSTOP)
    try:
        yield
    finally:
        for r in others:
            signal_tree(r, signal.SIGCONT)


def one_edit(runner: Runner, timeout: float, settle: float, phase: float = 0.0) -> None:
    """One save and its reload, `phase` seconds after the runner was resumed (see PHASE)."""
    client = LoadClient(runner.port, lambda: runner.newest_served)
    client.start()
    try:
        time.sleep(LOAD_LEAD + phase)
        version = runner.version + 1
        saved = runner.save(version)
        ms = wait_for_version(runner, version, saved, timeout)
        if ms is None:
            runner.timeouts += 1
        else:
            runner.latencies.append(ms)
        time.sleep(settle)
    finally:
        client.stop()
    runner.total += client.total
    runner.failures.update(client.failures)
    runner.stale += client.stale


@dataclass
class SleepResult:
    status: int | None = None
    error: str = ""
    seconds: float = 0.0
    finished: float | None = None


def inflight(runner: Runner, timeout: float) -> None:
    """Start /sleep, reload 0.5 s later: did /sleep still complete with 200?"""
    result = SleepResult()

    def sleep_request() -> None:
        t0 = time.perf_counter()
        try:
            result.status, _ = http_get(runner.port, "/sleep", SLEEP_TIMEOUT)
        except (OSError, http.client.HTTPException) as exc:
            result.error = f"{failure_kind(exc)}: {type(exc).__name__}"
        result.finished = time.perf_counter()
        result.seconds = result.finished - t0

    thread = threading.Thread(target=sleep_request, daemon=True, name=f"sleep-{runner.port}")
    thread.start()
    time.sleep(INFLIGHT_DELAY)
    version = runner.version + 1
    saved = runner.save(version)
    ms = wait_for_version(runner, version, saved, timeout)
    thread.join(SLEEP_TIMEOUT + 1)
    reloaded_at = None if ms is None else saved + ms / 1000
    if result.finished is None:
        answer = f"no (no answer in {SLEEP_TIMEOUT:.0f} s)"
    elif result.status == 200:
        answer = f"yes (200 after {result.seconds:.1f} s)"
    elif result.status is not None:
        answer = f"no (HTTP {result.status} after {result.seconds:.1f} s)"
    else:
        answer = f"no ({result.error} after {result.seconds:.1f} s)"
    if reloaded_at is None:
        answer += f"; no reload within {timeout:.0f} s"
    elif result.status == 200 and result.finished is not None and result.finished < reloaded_at:
        answer += "; the reload was seen only after it finished"
    runner.inflight = answer


def cpu_ticks(pids: list[int]) -> dict[int, int]:
    """utime + stime of each pid still alive, in clock ticks."""
    out = {}
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            out[pid] = int(fields[11]) + int(fields[12])
    return out


def wait_quiet(runners: list[Runner]) -> float | None:
    """Wait (bounded) until the runners' processes together use under QUIET_CPU of a core for
    QUIET_WINDOW seconds: none is reloading. Seconds waited, or None if they never got quiet."""
    tick = os.sysconf("SC_CLK_TCK")
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < QUIET_LIMIT:
        pids = []
        for r in runners:
            if r.proc is not None and r.proc.poll() is None:
                pids += [r.proc.pid, *descendants(r.proc.pid)]
        before = cpu_ticks(pids)
        time.sleep(QUIET_WINDOW)
        after = cpu_ticks(pids)
        used = sum(after[pid] - before[pid] for pid in after if pid in before) / tick
        if used < QUIET_CPU * QUIET_WINDOW:
            return time.perf_counter() - t0
    return None


def floor_sample(env: dict[str, str], cwd: Path) -> float | str:
    """One run of the interpreter-restart floor command: ms, or why it failed."""
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-c", FLOOR_CODE], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=FLOOR_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{type(exc).__name__}: {exc}"
    ms = (time.perf_counter() - t0) * 1000
    if proc.returncode != 0:
        return f"exit code {proc.returncode}: {proc.stderr.decode(errors='replace').strip()[-200:]}"
    return ms


@dataclass
class Floor:
    samples: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    not_quiet: int = 0  # samples taken although the runners had not become quiet within QUIET_LIMIT

    @property
    def median(self) -> float | None:
        return statistics.median(self.samples) if self.samples else None

    def measure(self, runners: list[Runner], env: dict[str, str], cwd: Path) -> None:
        if wait_quiet(runners) is None:
            self.not_quiet += 1
        result = floor_sample(env, cwd)
        if isinstance(result, str):
            self.errors.append(result)
        else:
            self.samples.append(result)


# -- report -------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(math.ceil(q / 100 * len(ordered)) - 1, 0)]


def fmt_ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}"


def table(runners: list[Runner], edits: int, timeout: float, floor: float | None) -> str:
    base = next((r.latencies for r in runners if r.name == BASELINE), [])
    base_p50 = statistics.median(base) if base else None
    rows = [
        f"| runner | cold start ms | reload p50 ms | reload p95 ms | p50 vs {BASELINE} | p50 / restart floor "
        "| failed requests / total | in-flight request survived |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in runners:
        done = len(r.latencies) + r.timeouts
        if r.latencies:
            p50 = statistics.median(r.latencies)
            p50_cell, p95_cell = fmt_ms(p50), fmt_ms(percentile(r.latencies, 95))
            ratio = f"{p50 / base_p50:.2f}×" if base_p50 else "n/a"
            floor_cell = f"{p50 / floor:.2f}×" if floor else "n/a"
        else:
            p50_cell = p95_cell = f"no reload within {timeout:.0f} s"
            ratio = floor_cell = "n/a"
        if r.timeouts:
            p50_cell += f" ({r.timeouts}/{done} edits timed out)"
        if done < edits:
            p50_cell += f" (only {done}/{edits} edits run)"
        failed = sum(r.failures.values())
        rows.append(f"| {r.name} | {fmt_ms(r.cold_ms)} | {p50_cell} | {p95_cell} | {ratio} | {floor_cell} | "
                    f"{failed} / {r.total} | {r.inflight} |")
    return "\n".join(rows)


def floor_note(floor: Floor) -> str:
    text = (f"Interpreter-restart floor: `python -c \"{FLOOR_CODE}\"`, the same Python and environment as the "
            "runners, timed from start to exit between edit rounds once no runner was busy; ")
    if floor.samples:
        text += (f"median {floor.median:.0f} ms of {len(floor.samples)} runs "
                 f"({' '.join(f'{v:.0f}' for v in floor.samples)} ms)")
    else:
        text += "no successful run"
    if floor.errors:
        text += f"; {len(floor.errors)} failed: " + "; ".join(floor.errors)
    if floor.not_quiet:
        text += (f"; {floor.not_quiet} started although the runners had not been quiet "
                 f"(< {QUIET_CPU:.0%} of a core for {QUIET_WINDOW:g} s) within {QUIET_LIMIT:g} s")
    return text + "."


def notes(runners: list[Runner], args: argparse.Namespace, floor: Floor) -> str:
    lines = [
        f"{args.edits} edits per runner, interleaved; settle {args.settle:g} s after each (not counted); "
        f"an edit not served within {args.timeout:g} s is a timeout. Latency polls every 5 ms; the background "
        f"client requests `/` every 10 ms (timeout {LOAD_TIMEOUT:g} s) from {LOAD_LEAD:g} s before each save "
        "to the end of its settle pause. "
        + ("During each runner's edits (and each floor sample) the other runners were paused with SIGSTOP, "
           f"so one that burns CPU while idle does not slow the one measured; each save came a random 0 to "
           f"{PHASE:g} s after the runner was resumed, so a polling reloader meets every phase of its cycle. "
           if args.pause_others
           else "Every runner kept running during the others' edits. ")
        + "Ratios are relative to "
        + (f"{BASELINE}." if any(r.name == BASELINE for r in runners) else f"{BASELINE}, which was not run (n/a)."),
        floor_note(floor),
    ]
    for r in runners:
        parts = []
        if r.failures:
            parts.append("failures: " + ", ".join(f"{n} {k}" for k, n in r.failures.most_common()))
        if r.stale:
            parts.append(f"{r.stale} responses served an older version after the new one had been served")
        if r.latencies:
            parts.append("latencies ms: " + " ".join(f"{v:.0f}" for v in r.latencies))
        if r.problem:
            parts.append(f"problem: {r.problem}")
        if r.counts:
            parts.append("its log: " + ", ".join(f"{n} × `{mark}`" for mark, n in r.counts.items()))
        if parts:
            lines.append(f"- {r.name}: " + "; ".join(parts))
    return "\n".join(lines)



def machine(source: tuple[str, str], load: str) -> str:
    versions = package_versions(PACKAGES)
    cpu = cpu_model()
    gunicorn_engine = "inotify" if importlib.util.find_spec("inotify") else "polling every 1 s"
    has_watchdog = importlib.util.find_spec("watchdog") is not None
    werkzeug_engine = "watchdog" if has_watchdog else "stat polling every 1 s"
    hupper_engine = "watchdog" if has_watchdog else "polling every 1 s"
    return "\n".join([
        f"- machine: {platform.system()} {platform.release()}, nproc {nproc()}" + (f", {cpu}" if cpu else "")
        + (f", load average at start {load}" if load else ""),
        f"- Python {platform.python_version()} ({platform.python_implementation()})",
        "- " + ", ".join(versions),
        *([f"- devrun source: commit {source[0]}"] if source[0] and source[0] == source[1] else []),
        *([f"- devrun source: commit {source[0]} at start, {source[1]} at the end: **devrun changed during the "
           "run**, so these numbers mix two versions"] if source[0] != source[1] else []),
        f"- reloaders: Werkzeug {werkzeug_engine}, gunicorn {gunicorn_engine}, hupper {hupper_engine} "
        "(its default monitor); devrun watchdog",
    ])


def command() -> str:
    """The command line that started this run, as the interpreter received it (quoted for a POSIX shell)."""
    return shlex.join(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])


def report(runners: list[Runner], args: argparse.Namespace, started: datetime.datetime,
           source: tuple[str, str], load: str, floor: Floor, cwd: Path) -> str:
    return "\n\n".join([
        f"## Reload benchmark, {started:%Y-%m-%d %H:%M}",
        machine(source, load),
        f"Reproduce (run in `{cwd}`, after `pip install -e . flask gunicorn gevent hupper`):\n\n"
        f"```sh\n{command()}\n```",
        table(runners, args.edits, args.timeout, floor.median),
        notes(runners, args, floor),
    ]) + "\n"


def write_out(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    path.write_text(old.rstrip("\n") + "\n\n" + text)


# -- main ---------------------------------------------------------------------------------------


def runner_names(choices: Iterable[str]) -> Callable[[str], list[str]]:
    """--runners: comma-separated names from choices, run in the order of choices."""
    known = list(choices)

    def parse(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        unknown = [n for n in names if n not in known]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"unknown runner {', '.join(map(repr, unknown)) or '(none given)'}; choose from: {', '.join(known)}")
        return [n for n in known if n in names]

    return parse


parse_runners = runner_names(RUNNERS)


def add_common_arguments(parser: argparse.ArgumentParser, runners: Iterable[str], edits: str,
                         cold_timeout: float) -> None:
    """The options both reload benchmarks take (bench/django_reload.py too)."""
    names = list(runners)
    parser.add_argument("--runners", type=runner_names(names), default=names, metavar="NAME,NAME",
                        help=f"comma-separated runners to measure (default all: {', '.join(names)})")
    parser.add_argument("--edits", type=int, default=20, help=f"{edits} (default 20)")
    parser.add_argument("--settle", type=float, default=1.0,
                        help="seconds to wait after each edit is served, not counted (default 1.0)")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds an edit may take before it counts as a timeout (default 10)")
    parser.add_argument("--cold-timeout", type=float, default=cold_timeout,
                        help=f"seconds a runner may take to answer its first 200 (default {cold_timeout:g})")
    parser.add_argument("--out", type=Path, help="also append the results, under a dated heading, to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder with the projects and logs")
    parser.add_argument("--no-pause-others", dest="pause_others", action="store_false",
                        help="keep every runner running during the others' edits (by default they are "
                             "paused with SIGSTOP, so one runner's idle CPU use does not slow another)")


def check_baseline(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The baseline runners run only with --baseline (the default list names them all)."""
    baselines = [n for n in args.runners if "baseline" in n]
    if args.baseline is None:
        if baselines and args.runners != list(RUNNERS):
            parser.error(f"{', '.join(baselines)} need --baseline PATH")
        args.runners = [n for n in args.runners if "baseline" not in n]
    elif not args.baseline.is_file():
        parser.error(f"--baseline {args.baseline}: no such file")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    add_common_arguments(parser, RUNNERS, "edits per runner", cold_timeout=30.0)
    parser.add_argument("--baseline", type=Path, metavar="PATH",
                        help="another devrun's console script to measure beside this one (adds the "
                             "'baseline' runners)")
    args = parser.parse_args(argv)
    if args.edits < 1:
        parser.error("--edits must be at least 1")
    check_baseline(parser, args)

    started = datetime.datetime.now()
    cwd = Path.cwd()
    source_at_start = devrun_source()
    load_at_start = loadavg()
    root = Path(tempfile.mkdtemp(prefix="devrun-bench-"))
    (root / "logs").mkdir()
    (root / "floor").mkdir()
    runners = make_runners(root, args.runners, args.baseline)
    env = runner_env()
    floor = Floor()
    phases = random.Random(0)  # the same phases in every run
    # floor samples after rounds 0, E/5, 2E/5, ... (several after a round when there are fewer than 5 rounds)
    floor_after = Counter(k * args.edits // FLOOR_RUNS for k in range(FLOOR_RUNS))
    try:
        for r in runners:  # one at a time, so cold starts do not compete
            print(f"starting {r.name} on port {r.port}: {shlex.join(r.argv)}", file=sys.stderr)
            cold_start(r, env, args.cold_timeout)
        for i in range(args.edits):
            print(f"edit {i + 1}/{args.edits}", file=sys.stderr)
            shift = i % len(runners)
            for r in runners[shift:] + runners[:shift]:
                if r.cold_ms is not None and r.alive():
                    with alone(r, runners, args.pause_others):
                        one_edit(r, args.timeout, args.settle, phases.uniform(0, PHASE) if args.pause_others else 0)
            for _ in range(floor_after[i]):  # between rounds: no runner is reloading
                print("interpreter-restart floor", file=sys.stderr)
                with alone(None, runners, args.pause_others):
                    floor.measure(runners, env, root / "floor")
        for r in runners:
            if r.cold_ms is not None and r.alive():
                print(f"in-flight request: {r.name}", file=sys.stderr)
                with alone(r, runners, args.pause_others):
                    inflight(r, args.timeout)
                r.alive()
    finally:
        for r in runners:
            r.kill()
            r.counts = r.log_counts()
        for r in runners:
            if r.problem:
                print(f"--- {r.name}: {r.problem}; end of its log:\n{r.log_tail()}", file=sys.stderr)
        if args.keep:
            print(f"apps and logs kept in {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)

    text = report(runners, args, started, (source_at_start, devrun_source()), load_at_start, floor, cwd)
    print(text)
    if args.out:
        write_out(args.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
