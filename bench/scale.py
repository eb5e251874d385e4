#!/usr/bin/env python3
"""Scale benchmark: devrun on big trees and on many apps, beside honcho running one `gunicorn --reload` per app.

Needs flask next to devrun, and honcho, gunicorn and packaging (gunicorn's gevent worker imports
it) in the Python that runs it:

    pip install -e . flask honcho gunicorn packaging
    python bench/scale.py --trees 100,1000 --apps 1,5 --edits 3 --idle 3   # a quick run, about a minute
    python bench/scale.py --out docs/benchmarks.md                         # every case; appends a dated section

Every case runs alone (the one before it is killed first) in a project of its own under one
temporary folder, on ports found by binding port 0 on 127.0.0.1. Each app is a small Flask app
(``app.py``) whose ``/`` returns a version string such as ``v3``.

A. Trees (``--trees``, default 100,1000,5000,20000 source folders). The project holds ``app.py``
at the top, ``src/`` with that many folders (``src`` included), each holding ``__init__.py`` and
``mod.py``, nested ten to a folder (so 20,000 folders are six levels deep), and the pruned
``node_modules/`` (100 folders of 10 ``.js`` files) and ``.venv/`` (100 folders of 10 ``.py``
files, which ``**/*.py`` would match were the folder not pruned). ``devrun up -c devrun.yaml
--no-dashboard`` runs one app (``app:app``, ``debug: {enabled: true}``, every other key default;
``watch_mode`` only when ``--watch-mode`` is given). Measured:

- time to ready: from starting the process to the first HTTP 200 on ``/``;
- once idle (``--settle`` seconds after ready, then until the CPU of the runner and its
  descendants settles, see below): the runner process's threads (``Threads:`` in
  ``/proc/<pid>/status``: the runner alone, not its children), its RSS (``VmRSS:``), and its CPU
  over ``--idle`` seconds (utime + stime from ``/proc/<pid>/stat``, every thread of the runner,
  not its children, as % of one core);
- the runner's inotify watches (the ``inotify wd:`` lines of ``/proc/<pid>/fdinfo/*``), and how
  many of them are on a folder inside ``node_modules/`` or ``.venv/`` (matched by inode): must be 0;
- save-to-reload: ``app.py`` saved atomically (written beside it, moved over it with
  ``os.replace``) with a new version string, to the first 200 whose body is the new version,
  polling every 5 ms; a random 0 to 1 s pause before each save (a polling watcher meets every
  phase of its cycle); the median of ``--edits`` edits, each one not served within ``--timeout``
  seconds counted as a timeout.

B. Apps (``--apps``, default 1,5,20,50): that many apps, each in its own folder (``app01/``, ...)
and on its own port, in one ``devrun.yaml`` (``cwd: appNN``, ``debug: {enabled: true}``), run by
``devrun up -c devrun.yaml --no-dashboard``. C. Beside each, in the same run, what a user would
pick instead: ``honcho start`` with a Procfile holding one ``gunicorn --reload -k gevent -b
127.0.0.1:P --chdir appNN app:app`` per app (plus ``--no-control-socket`` where gunicorn has it,
so the gunicorns do not share ``~/.gunicorn/gunicorn.ctl``). For both, the order alternating from
one number of apps to the next:

- all answer: from starting the process until every app has answered one 200 (a thread per app
  polls its port: one request at a time, a pause of max(10 ms, 2 ms x apps) after a refused one, so
  the client stays under ~500 connections/s however many apps there are; a connection accepted
  into a listening socket's backlog just waits for the app), bounded by ``--start-timeout``: the
  row then says how many answered;
- once idle (``--settle`` seconds after all answer, then until the CPU settles): the number of
  processes (the started process and every descendant, from /proc), their total PSS (the ``Pss:``
  line of ``/proc/<pid>/smaps_rollup`` summed over them), and their CPU over ``--idle`` seconds;
- reload latency of ``app01`` while the others idle: as for the trees.

"CPU settles" means a 1 s window in which the processes together used under 5 % of a core, or no
more than 2 points (or 25 %) of a core different from the window before, waited for at most 20 s
(the notes say when that bound was hit). MB are 10^6 bytes. Ratios: each number of apps against
the same tool's 1-app case, and devrun against honcho + gunicorn. The targets of issue 14 are
printed beside the numbers with met / missed: the runner at 5,000 folders <= 20 threads, <= 60 MB
RSS, <= 0.3 % of a core idle; 20 apps <= 400 MB PSS and all answering within 2x one app's time.

Every process runs in its own session with its output in a log file and is killed with its
process group and every descendant (found through /proc) when its case ends; every wait is
bounded. The runners get PYTHONDONTWRITEBYTECODE=1 (two edits within a second that keep the
file's size would otherwise be served from a stale ``__pycache__`` entry). Only loopback traffic.
Linux only (/proc). Run it on a quiet machine: the client shares the CPUs with what it measures.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import http.client
import importlib.util
import os
import platform
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from benchinfo import cpu_model, descendants, devrun_source, free_port, kill_tree, loadavg, nproc, package_versions
from reload import command, gunicorn_has_control_socket, http_get, runner_env, tool, write_out

APP_SOURCE = '''\
from flask import Flask

VERSION = "{version}"

app = Flask(__name__)


@app.route("/")
def index():
    return VERSION
'''

PACKAGES = ("devrun", "flask", "werkzeug", "gevent", "watchdog", "honcho", "gunicorn", "packaging")
FANOUT = 10  # source folders per folder of the tree
PRUNED_FOLDERS = 100  # in each of node_modules/ and .venv/
PRUNED_FILES = 10  # per pruned folder
POLL_EVERY = 0.005  # reload latency: one GET every 5 ms
POLL_TIMEOUT = 2.0  # per request while waiting; a connection in a backlog waits this long, then again
PHASE = 1.0  # a random pause of up to this before each save
QUIET_WINDOW = 1.0
QUIET_CPU = 5.0  # % of a core: a window under this is quiet
STEADY_POINTS, STEADY_SHARE = 2.0, 0.25  # ... or one this close to the window before
QUIET_LIMIT = 20.0
MB = 1e6
LOG_NOTES = ("poll", "fork server", "crashed", "traceback", "error")  # lower case
DEVRUN, HONCHO = "devrun", "honcho + gunicorn"
TARGET_FOLDERS, TARGET_APPS = 5000, 20
TARGET_THREADS, TARGET_RSS_MB, TARGET_CPU = 20, 60.0, 0.3
TARGET_PSS_MB, TARGET_ANSWER_X = 400.0, 2.0


# -- /proc --------------------------------------------------------------------------------------


def status_field(pid: int, name: str) -> int | None:
    """An integer field of /proc/<pid>/status (`Threads`, `VmRSS` in kB)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
    return None


def pss_kb(pid: int) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return None


def cpu_ticks(pids: list[int]) -> dict[int, int]:
    """utime + stime (every thread, not children) of each pid still alive, in clock ticks."""
    out = {}
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            out[pid] = int(fields[11]) + int(fields[12])
    return out


def cpu_percent(pids_of: Callable[[], list[int]], seconds: float) -> float:
    """CPU the processes used over `seconds`, as % of one core. A process born meanwhile counts
    in full; one that exits meanwhile is lost (none should, while idle)."""
    before = cpu_ticks(pids_of())
    t0 = time.perf_counter()
    time.sleep(seconds)
    after = cpu_ticks(pids_of())
    wall = time.perf_counter() - t0
    used = sum(ticks - before.get(pid, 0) for pid, ticks in after.items())
    return used / os.sysconf("SC_CLK_TCK") / wall * 100


def wait_settled(pids_of: Callable[[], list[int]]) -> float | None:
    """Wait until the processes' CPU settles (see the module docstring): seconds waited, or None
    if it had not within QUIET_LIMIT."""
    t0 = time.perf_counter()
    previous: float | None = None
    while time.perf_counter() - t0 < QUIET_LIMIT:
        now = cpu_percent(pids_of, QUIET_WINDOW)
        if now < QUIET_CPU or (previous is not None
                               and abs(now - previous) <= max(STEADY_POINTS, STEADY_SHARE * previous)):
            return time.perf_counter() - t0
        previous = now
    return None


def inotify_watches(pid: int) -> tuple[int, list[int]] | None:
    """The process's inotify instances and the inode of every watch, from /proc/<pid>/fdinfo."""
    instances, inodes = 0, []
    try:
        fds = list(Path(f"/proc/{pid}/fdinfo").iterdir())
    except OSError:
        return None
    for fd in fds:
        try:
            lines = fd.read_text().splitlines()
        except OSError:
            continue  # closed meanwhile
        watches = [line for line in lines if line.startswith("inotify wd:")]
        instances += bool(watches) or any(line.startswith("inotify") for line in lines)
        for line in watches:
            for part in line.split():
                if part.startswith("ino:"):
                    inodes.append(int(part[4:], 16))
    return instances, inodes


# -- processes and HTTP -------------------------------------------------------------------------


@dataclass
class Started:
    proc: subprocess.Popen[bytes]
    log: Path
    t0: float  # perf_counter just before the process was started

    def alive(self) -> bool:
        return self.proc.poll() is None

    def pids(self) -> list[int]:
        return [self.proc.pid, *descendants(self.proc.pid)] if self.alive() else []

    def runner(self) -> list[int]:
        return [self.proc.pid] if self.alive() else []

    def exit_note(self) -> str:
        return f"exited with code {self.proc.returncode} (see {self.log})"


@contextlib.contextmanager
def running(argv: list[str], cwd: Path, env: dict[str, str], log: Path) -> Iterator[Started]:
    """The process in its own session, output to `log`; killed with its whole tree on the way out."""
    with open(log, "ab") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield Started(proc, log, t0)
    finally:
        kill_tree(proc)


def first_200(port: int, since: float, deadline: float, alive: Callable[[], bool], pause: float) -> float | None:
    """Seconds from `since` to the first 200 on `port`, or None by `deadline`."""
    while (left := deadline - time.perf_counter()) > 0 and alive():
        with contextlib.suppress(OSError, http.client.HTTPException):
            if http_get(port, "/", min(POLL_TIMEOUT, left))[0] == 200:
                return time.perf_counter() - since
        time.sleep(pause)
    return None


def all_answer(started: Started, ports: list[int], timeout: float) -> list[float | None]:
    """Seconds from the start to each port's first 200 (None: not within `timeout`), polled side by side."""
    pause = max(0.010, 0.002 * len(ports))
    deadline = started.t0 + timeout
    answers: list[float | None] = [None] * len(ports)

    def poll(i: int) -> None:
        answers[i] = first_200(ports[i], started.t0, deadline, started.alive, pause)

    threads = [threading.Thread(target=poll, args=(i,), daemon=True, name=f"ready-{p}") for i, p in enumerate(ports)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(deadline - time.perf_counter(), 0) + POLL_TIMEOUT + 1)
    return answers


def save_app(folder: Path, version: int) -> float:
    """Atomically replace app.py with `version`: the time of the save."""
    tmp = folder / f".app.py.{version}.tmp"
    tmp.write_text(APP_SOURCE.format(version=f"v{version}"))
    os.replace(tmp, folder / "app.py")
    return time.perf_counter()


def wait_version(port: int, version: int, saved: float, timeout: float) -> float | None:
    want = f"v{version}"
    deadline = saved + timeout
    while (left := deadline - time.perf_counter()) > 0:
        with contextlib.suppress(OSError, http.client.HTTPException):
            status, body = http_get(port, "/", min(POLL_TIMEOUT, left))
            if status == 200 and body.strip() == want:
                return (time.perf_counter() - saved) * 1000
        time.sleep(POLL_EVERY)
    return None


@dataclass
class Edits:
    latencies: list[float] = field(default_factory=list)  # ms
    timeouts: int = 0

    def run(self, folder: Path, port: int, count: int, timeout: float, rng: random.Random) -> None:
        for version in range(1, count + 1):
            time.sleep(rng.uniform(0, PHASE))
            ms = wait_version(port, version, save_app(folder, version), timeout)
            if ms is None:
                self.timeouts += 1
            else:
                self.latencies.append(ms)

    @property
    def p50(self) -> float | None:
        return statistics.median(self.latencies) if self.latencies else None


def log_tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def log_notes(log: Path, limit: int = 3) -> list[str]:
    """The first lines of a log that explain a number: which folders devrun polls, a fork server
    restarted because devrun's own code changed meanwhile, a crash."""
    try:
        text = log.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [line.strip() for line in text if any(mark in line.lower() for mark in LOG_NOTES)][:limit]


def devrun_app(name: str, port: int, watch_mode: str | None, cwd: str | None = None) -> str:
    lines = [f"  {name}:", '    app: "app:app"', f"    port: {port}", "    debug: {enabled: true}"]
    if cwd:
        lines.append(f"    cwd: {cwd}")
    if watch_mode:  # only when asked: the key is new, and an older devrun rejects it
        lines.append(f"    watch_mode: {watch_mode}")
    return "\n".join(lines) + "\n"


# -- A: trees -----------------------------------------------------------------------------------


@dataclass
class TreeCase:
    folders: int
    py_files: int = 0
    build_s: float = 0.0
    ready_ms: float | None = None
    settled_s: float | None = None
    threads: int | None = None
    rss_kb: int | None = None
    cpu: float | None = None
    instances: int | None = None
    watches: int | None = None
    pruned_watched: int | None = None
    edits: Edits = field(default_factory=Edits)
    after_edits: tuple[int | None, int | None] = (None, None)  # threads, RSS kB
    log_notes: list[str] = field(default_factory=list)  # see LOG_NOTES
    problem: str = ""


def build_tree(project: Path, folders: int) -> tuple[int, set[int]]:
    """The source tree and the pruned folders: the number of .py files under src/ and the inodes
    of every folder inside node_modules/ and .venv/ (none may be watched)."""
    src = [project / "src"]
    for k in range(1, folders):
        src.append(src[(k - 1) // FANOUT] / f"p{k}")  # a folder's parent always comes before it
    for folder in src:
        folder.mkdir()
        (folder / "__init__.py").write_text("")
        (folder / "mod.py").write_text(f"NAME = {folder.name!r}\n")
    for folder in (project / "node_modules" / "pkg", project / ".venv" / "lib" / "python3" / "site-packages" / "mod"):
        suffix = ".js" if folder.parts[-2] == "node_modules" else ".py"
        for i in range(PRUNED_FOLDERS):
            (leaf := folder.parent / f"{folder.name}{i}").mkdir(parents=True)
            for j in range(PRUNED_FILES):
                (leaf / f"f{j}{suffix}").write_text("x = 1\n")
    pruned = set()
    for top in (project / "node_modules", project / ".venv"):
        pruned |= {top.stat().st_ino, *(d.stat().st_ino for d in top.rglob("*") if d.is_dir())}
    return 2 * len(src), pruned


def run_tree(case: TreeCase, args: argparse.Namespace, root: Path, env: dict[str, str], rng: random.Random) -> None:
    project = root / f"tree-{case.folders}"
    project.mkdir()
    t0 = time.perf_counter()
    case.py_files, pruned = build_tree(project, case.folders)
    case.build_s = time.perf_counter() - t0
    save_app(project, 0)
    port = free_port()
    (project / "devrun.yaml").write_text("apps:\n" + devrun_app("bench", port, args.watch_mode))
    argv = [*tool("devrun"), "up", "-c", "devrun.yaml", "--no-dashboard"]
    log = root / "logs" / f"tree-{case.folders}.log"
    print(f"trees: {case.folders} folders ({case.build_s:.1f} s to write), port {port}", file=sys.stderr)
    with running(argv, project, env, log) as started:
        ready = first_200(port, started.t0, started.t0 + args.start_timeout, started.alive, POLL_EVERY)
        if ready is None:
            case.problem = started.exit_note() if not started.alive() else f"no 200 within {args.start_timeout:g} s"
            return
        case.ready_ms = ready * 1000
        time.sleep(args.settle)
        case.settled_s = wait_settled(started.pids)
        case.cpu = cpu_percent(started.runner, args.idle)
        pid = started.proc.pid
        case.threads, case.rss_kb = status_field(pid, "Threads"), status_field(pid, "VmRSS")
        watches = inotify_watches(pid)
        if watches is not None:
            case.instances, inodes = watches[0], watches[1]
            case.watches, case.pruned_watched = len(inodes), sum(ino in pruned for ino in inodes)
        case.edits.run(project, port, args.edits, args.timeout, rng)
        case.after_edits = status_field(pid, "Threads"), status_field(pid, "VmRSS")
        if not started.alive():
            case.problem = started.exit_note()
    case.log_notes = log_notes(log)


# -- B and C: apps ------------------------------------------------------------------------------


@dataclass
class AppsCase:
    tool: str
    apps: int
    answers: list[float | None] = field(default_factory=list)  # s from start, per app
    settled_s: float | None = None
    processes: int | None = None
    pss_kb: int | None = None
    pss_missing: int = 0  # processes whose smaps_rollup could not be read
    cpu: float | None = None
    edits: Edits = field(default_factory=Edits)
    log_notes: list[str] = field(default_factory=list)  # see LOG_NOTES
    problem: str = ""

    @property
    def all_s(self) -> float | None:
        """Seconds until every app answered, or None if one never did."""
        if not self.answers or any(a is None for a in self.answers):
            return None
        return max(a for a in self.answers if a is not None)



def distinct_ports(n: int) -> list[int]:
    """n free ports, none twice: a port given back by one bind(0) may well be handed out again."""
    ports: list[int] = []
    for _ in range(n * 20):
        port = free_port()
        if port not in ports:
            ports.append(port)
        if len(ports) == n:
            return ports
    raise RuntimeError(f"could not find {n} distinct free ports")

def apps_project(case: AppsCase, root: Path, args: argparse.Namespace) -> tuple[Path, list[int], list[str]]:
    """The project of `case`: its folder, the apps' ports, and the command line."""
    project = root / f"{'devrun' if case.tool == DEVRUN else 'honcho'}-{case.apps}"
    project.mkdir()
    ports = distinct_ports(case.apps)
    names = [f"app{i + 1:02d}" for i in range(case.apps)]
    for name in names:
        (project / name).mkdir()
        save_app(project / name, 0)
    if case.tool == DEVRUN:
        text = "apps:\n" + "".join(devrun_app(n, p, args.watch_mode, cwd=n) for n, p in zip(names, ports, strict=True))
        (project / "devrun.yaml").write_text(text)
        return project, ports, [*tool("devrun"), "up", "-c", "devrun.yaml", "--no-dashboard"]
    gunicorn = tool("gunicorn")
    extra = ["--no-control-socket"] if args.control_socket_flag else []
    lines = [f"{n}: " + shlex.join([*gunicorn, "--reload", "-k", "gevent", "-b", f"127.0.0.1:{p}", *extra,
                                    "--chdir", n, "app:app"])
             for n, p in zip(names, ports, strict=True)]
    (project / "Procfile").write_text("\n".join(lines) + "\n")
    return project, ports, [*tool("honcho"), "start", "-f", "Procfile"]


def run_apps(case: AppsCase, args: argparse.Namespace, root: Path, env: dict[str, str], rng: random.Random) -> None:
    project, ports, argv = apps_project(case, root, args)
    log = root / "logs" / f"{project.name}.log"
    print(f"apps: {case.tool}, {case.apps} apps", file=sys.stderr)
    with running(argv, project, env, log) as started:
        case.answers = all_answer(started, ports, args.start_timeout)
        if not started.alive():
            case.problem = started.exit_note()
            return
        if case.all_s is None:
            answered = sum(a is not None for a in case.answers)
            case.problem = f"only {answered}/{case.apps} answered within {args.start_timeout:g} s"
        time.sleep(args.settle)
        case.settled_s = wait_settled(started.pids)
        pids = started.pids()
        sizes = [pss_kb(pid) for pid in pids]
        case.processes = len(pids)
        case.pss_kb = sum(s for s in sizes if s is not None)
        case.pss_missing = sum(s is None for s in sizes)
        case.cpu = cpu_percent(started.pids, args.idle)
        if case.answers[0] is not None:
            case.edits.run(project / "app01", ports[0], args.edits, args.timeout, rng)
        if not started.alive() and not case.problem:
            case.problem = started.exit_note()
    case.log_notes = log_notes(log)


# -- report -------------------------------------------------------------------------------------


def num(value: float | None, fmt: str = ".0f", unit: str = "") -> str:
    return "—" if value is None else f"{value:{fmt}}{unit}"


def ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or not b else f"{a / b:.2f}×"


def verdict(value: float | None, limit: float) -> str:
    return "not measured" if value is None else ("met" if value <= limit else "**missed**")


def reload_cell(e: Edits, edits: int) -> str:
    cell = num(e.p50)
    if e.timeouts:
        cell += f" ({e.timeouts}/{e.timeouts + len(e.latencies)} timed out)"
    elif not e.latencies and edits:
        cell = "not run"
    return cell


def mb(kb: int | None) -> float | None:
    return None if kb is None else kb * 1024 / MB


def tree_table(cases: list[TreeCase], edits: int) -> str:
    rows = ["| source folders | .py files under src/ | time to ready ms | save-to-reload p50 ms | runner threads "
            "| runner RSS MB | runner idle CPU % of a core | inotify instances / watches | watches in pruned folders |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in cases:
        if c.ready_ms is None:
            rows.append(f"| {c.folders:,} | {c.py_files:,} | {c.problem} | | | | | | |")
            continue
        watches = f"{num(c.instances)} / {num(c.watches)}"
        rows.append(f"| {c.folders:,} | {c.py_files:,} | {num(c.ready_ms)} | {reload_cell(c.edits, edits)} | "
                    f"{num(c.threads)} | {num(mb(c.rss_kb), '.1f')} | {num(c.cpu, '.2f')} | {watches} | "
                    f"{num(c.pruned_watched)} |")
    return "\n".join(rows)


def apps_table(cases: list[AppsCase], edits: int) -> str:
    one = {c.tool: c for c in cases if c.apps == 1}
    rows = ["| apps | tool | all answer s | × 1 app | processes | PSS MB | × 1 app | PSS per app MB "
            "| idle CPU % of a core | reload p50 ms (app01) |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in cases:
        base = one.get(c.tool)
        answer = num(c.all_s, ".2f") if c.all_s is not None else (c.problem or "—")
        pss = mb(c.pss_kb)
        rows.append(f"| {c.apps} | {c.tool} | {answer} | {ratio(c.all_s, base.all_s if base else None)} | "
                    f"{num(c.processes)} | {num(pss)} | {ratio(pss, mb(base.pss_kb) if base else None)} | "
                    f"{num(None if pss is None else pss / c.apps, '.1f')} | {num(c.cpu, '.2f')} | "
                    f"{reload_cell(c.edits, edits)} |")
    return "\n".join(rows)


def versus_table(cases: list[AppsCase]) -> str:
    rows = ["| apps | all answer | processes | PSS | idle CPU | reload p50 |", "|---:|---:|---:|---:|---:|---:|"]
    for n in sorted({c.apps for c in cases}):
        d = next((c for c in cases if c.apps == n and c.tool == DEVRUN), None)
        h = next((c for c in cases if c.apps == n and c.tool == HONCHO), None)
        if d is None or h is None:
            continue
        cpu = ratio(d.cpu, h.cpu) if h.cpu else f"{num(d.cpu, '.2f')} vs {num(h.cpu, '.2f')} %"
        rows.append(f"| {n} | {ratio(d.all_s, h.all_s)} | {ratio(d.processes, h.processes)} | "
                    f"{ratio(mb(d.pss_kb), mb(h.pss_kb))} | {cpu} | {ratio(d.edits.p50, h.edits.p50)} |")
    return "\n".join(rows)


def targets_table(trees: list[TreeCase], apps: list[AppsCase]) -> str:
    tree = next((c for c in trees if c.folders == TARGET_FOLDERS), None)
    many = next((c for c in apps if c.tool == DEVRUN and c.apps == TARGET_APPS), None)
    one = next((c for c in apps if c.tool == DEVRUN and c.apps == 1), None)
    rss = mb(tree.rss_kb) if tree else None
    pss = mb(many.pss_kb) if many else None
    answer_x = many.all_s / one.all_s if many and one and many.all_s is not None and one.all_s else None
    rows = [
        (f"runner threads at {TARGET_FOLDERS:,} folders", f"≤ {TARGET_THREADS}",
         num(tree.threads if tree else None), verdict(tree.threads if tree else None, TARGET_THREADS)),
        (f"runner RSS at {TARGET_FOLDERS:,} folders", f"≤ {TARGET_RSS_MB:g} MB", num(rss, ".1f", " MB"),
         verdict(rss, TARGET_RSS_MB)),
        (f"runner idle CPU at {TARGET_FOLDERS:,} folders", f"≤ {TARGET_CPU:g} % of a core",
         num(tree.cpu if tree else None, ".2f", " %"), verdict(tree.cpu if tree else None, TARGET_CPU)),
        (f"{TARGET_APPS} apps: total PSS once idle", f"≤ {TARGET_PSS_MB:g} MB", num(pss, ".0f", " MB"),
         verdict(pss, TARGET_PSS_MB)),
        (f"{TARGET_APPS} apps: all answer, × 1 app (same run)", f"≤ {TARGET_ANSWER_X:g}×",
         num(answer_x, ".2f", "×"), verdict(answer_x, TARGET_ANSWER_X)),
    ]
    out = ["| target (issue 14) | limit | measured | |", "|---|---:|---:|---|"]
    out += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(out)


def tree_notes(cases: list[TreeCase]) -> list[str]:
    lines = []
    for c in cases:
        parts = [f"tree written in {c.build_s:.1f} s"]
        if c.settled_s is None and c.ready_ms is not None:
            parts.append(f"CPU had not settled within {QUIET_LIMIT:g} s")
        elif c.settled_s is not None:
            parts.append(f"settled {c.settled_s:.0f} s after the settle pause")
        if c.edits.latencies:
            parts.append("reload ms: " + " ".join(f"{v:.0f}" for v in c.edits.latencies))
        if c.after_edits != (None, None):
            parts.append(f"after the edits {num(c.after_edits[0])} threads, {num(mb(c.after_edits[1]), '.1f')} MB RSS")
        if c.log_notes:
            parts.append("its log: " + " / ".join(f"`{line}`" for line in c.log_notes))
        if c.problem:
            parts.append(f"problem: {c.problem}")
        lines.append(f"- {c.folders:,} folders: " + "; ".join(parts))
    return lines


def apps_notes(cases: list[AppsCase]) -> list[str]:
    lines = []
    for c in cases:
        done = [a for a in c.answers if a is not None]
        parts = []
        if done:
            parts.append(f"first 200s from {min(done):.2f} to {max(done):.2f} s")
        if c.settled_s is None and c.processes is not None:
            parts.append(f"CPU had not settled within {QUIET_LIMIT:g} s")
        if c.pss_missing:
            parts.append(f"PSS of {c.pss_missing} processes unreadable (left out)")
        if c.edits.latencies:
            parts.append("reload ms: " + " ".join(f"{v:.0f}" for v in c.edits.latencies))
        if c.problem:
            parts.append(f"problem: {c.problem}")
        if c.log_notes:
            parts.append("its log: " + " / ".join(f"`{line}`" for line in c.log_notes))
        lines.append(f"- {c.tool}, {c.apps} app{'s' if c.apps > 1 else ''}: " + "; ".join(parts))
    return lines


def notes(trees: list[TreeCase], apps: list[AppsCase], args: argparse.Namespace) -> str:
    tick = 100 / os.sysconf("SC_CLK_TCK") / args.idle
    mode = f"`watch_mode: {args.watch_mode}`" if args.watch_mode else "no `watch_mode` key (the default)"
    head = [
        f"Every case alone, afresh; devrun apps with `debug: {{enabled: true}}` and {mode}. Idle numbers are "
        f"taken {args.settle:g} s after ready (after all answer), then once the CPU settled (a {QUIET_WINDOW:g} s "
        f"window under {QUIET_CPU:g} % of a core, or within {STEADY_POINTS:g} points or {STEADY_SHARE:.0%} of the "
        f"one before; at most {QUIET_LIMIT:g} s). Idle CPU: utime + stime from /proc/<pid>/stat over {args.idle:g} s "
        f"(one clock tick is {tick:.2f} % of a core here); trees: the runner process alone; apps: the started "
        "process and every descendant. Threads and RSS: /proc/<pid>/status of the runner at the end of that "
        "window. PSS: smaps_rollup summed over the process and its descendants, just before it. MB = 10^6 "
        f"bytes. Reload: {args.edits} atomic saves, a random 0 to {PHASE:g} s apart, to the first 200 with the "
        f"new body (polled every {POLL_EVERY * 1000:.0f} ms), median; an edit not served in {args.timeout:g} s "
        "is a timeout. Ratios: against the same tool's 1-app case, and devrun over honcho + gunicorn.",
    ]
    return "\n".join(head + tree_notes(trees) + apps_notes(apps))


def machine(source: tuple[str, str], load: str) -> str:
    cpu = cpu_model()
    limits = []
    for name in ("max_user_watches", "max_user_instances"):
        with contextlib.suppress(OSError):
            limits.append(f"{name} {Path(f'/proc/sys/fs/inotify/{name}').read_text().strip()}")
    engine = "inotify" if importlib.util.find_spec("inotify") else "polling every 1 s"
    return "\n".join([
        f"- machine: {platform.system()} {platform.release()}, nproc {nproc()}" + (f", {cpu}" if cpu else "")
        + (f", load average at start {load}" if load else ""),
        f"- Python {platform.python_version()} ({platform.python_implementation()})",
        "- " + ", ".join(package_versions(PACKAGES)),
        *([f"- devrun source: commit {source[0]}"] if source[0] and source[0] == source[1] else []),
        *([f"- devrun source: commit {source[0]} at start, {source[1]} at the end: **devrun changed during the "
           "run**, so these numbers mix two versions"] if source[0] != source[1] else []),
        f"- inotify: {', '.join(limits) or 'limits unreadable'}; open files limit {os.sysconf('SC_OPEN_MAX')}; "
        f"gunicorn's reloader: {engine}",
    ])


def report(trees: list[TreeCase], apps: list[AppsCase], args: argparse.Namespace, started: datetime.datetime,
           source: tuple[str, str], load: str, cwd: Path) -> str:
    parts = [
        f"## Scale benchmark, {started:%Y-%m-%d %H:%M}",
        machine(source, load),
        f"Reproduce (run in `{cwd}`, after `pip install -e . flask honcho gunicorn packaging`):\n\n"
        f"```sh\n{command()}\n```",
        targets_table(trees, apps),
    ]
    if trees:
        parts += ["Trees: one app, `devrun up -c devrun.yaml --no-dashboard`; node_modules/ and .venv/ "
                  f"({2 * PRUNED_FOLDERS * PRUNED_FILES:,} files) pruned.", tree_table(trees, args.edits)]
    if apps:
        parts += ["Apps: devrun (one devrun.yaml) and honcho running one `gunicorn --reload -k gevent` per app.",
                  apps_table(apps, args.edits)]
        if any(c.tool == HONCHO for c in apps):
            parts += ["devrun ÷ honcho + gunicorn:", versus_table(apps)]
    parts.append(notes(trees, apps, args))
    return "\n\n".join(parts) + "\n"


# -- main ---------------------------------------------------------------------------------------


def counts(text: str) -> list[int]:
    """A comma-separated list of positive integers (`1,5,20`, `5_000` allowed); "" is none."""
    try:
        values = [int(v) for v in text.replace("_", "").split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("every number must be at least 1")
    return values


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--trees", type=counts, default=[100, 1000, 5000, 20000], metavar="N,N",
                        help="source folders per tree case; '' for none (default 100,1000,5000,20000)")
    parser.add_argument("--apps", type=counts, default=[1, 5, 20, 50], metavar="N,N",
                        help="apps per case; '' for none (default 1,5,20,50)")
    parser.add_argument("--no-alternative", dest="alternative", action="store_false",
                        help="measure devrun alone, without honcho + gunicorn")
    parser.add_argument("--watch-mode", choices=("auto", "events", "poll"),
                        help="write this watch_mode into every devrun app (by default the key is left out)")
    parser.add_argument("--edits", type=int, default=5, help="saves per reload measurement (default 5)")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idle CPU measurement (default 10)")
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds after ready before the CPU is watched to settle (default 3)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds an edit may take (default 10)")
    parser.add_argument("--start-timeout", type=float, default=120.0,
                        help="seconds until every app must answer (default 120)")
    parser.add_argument("--out", type=Path, help="also append the results, under a dated heading, to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary projects and logs")
    args = parser.parse_args(argv)
    if args.edits < 0 or args.idle <= 0 or args.start_timeout <= 0 or args.timeout <= 0:
        parser.error("--edits must be at least 0; --idle, --timeout and --start-timeout above 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.control_socket_flag = bool(args.apps and args.alternative and gunicorn_has_control_socket())
    started = datetime.datetime.now()
    cwd = Path.cwd()
    source_at_start, load_at_start = devrun_source(), loadavg()
    root = Path(tempfile.mkdtemp(prefix="devrun-scale-"))
    (root / "logs").mkdir()
    env = runner_env()
    rng = random.Random(0)  # the same pauses in every run
    trees = [TreeCase(n) for n in args.trees]
    apps: list[AppsCase] = []
    for i, n in enumerate(args.apps):
        pair = [AppsCase(DEVRUN, n), *([AppsCase(HONCHO, n)] if args.alternative else [])]
        apps += pair if i % 2 == 0 else pair[::-1]  # alternate which goes first, so drift hits both
    try:
        for tree in trees:
            run_tree(tree, args, root, env, rng)
        for case in apps:
            run_apps(case, args, root, env, rng)
    finally:
        for log in sorted((root / "logs").iterdir()):
            if any(word in log.read_text(errors="replace") for word in ("Traceback", "error:")):
                print(f"--- {log.name} mentions an error; its end:\n{log_tail(log)}", file=sys.stderr)
        if args.keep:
            print(f"projects and logs kept in {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    apps.sort(key=lambda c: (c.apps, c.tool != DEVRUN))
    text = report(trees, apps, args, started, (source_at_start, devrun_source()), load_at_start, cwd)
    print(text)
    if args.out:
        write_out(args.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
