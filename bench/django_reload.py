#!/usr/bin/env python3
"""Django reload benchmark: devrun (fork and spawn) vs `manage.py runserver` on a tutorial project.

Needs Django installed in the Python that runs it, next to devrun; run it from a checkout (it makes
the project with ``tests/projects.py``):

    pip install -e . django
    python bench/django_reload.py                          # 20 code and 20 template edits per runner
    python bench/django_reload.py --edits 3 --runners "devrun (fork),manage.py runserver"
    python bench/django_reload.py --out docs/benchmarks.md

Each runner gets its own copy of the project in a fresh temporary folder (so no runner sees
another's edits), made by ``django_project()`` from ``tests/projects.py``: ``django-admin
startproject mysite`` and ``manage.py startapp polls``, with the view ``polls.views.index``
rendering ``polls/templates/polls/index.html`` (title "view-one", marker "tpl-one") at
``/polls/``. The runners, each on a port found by binding port 0 on 127.0.0.1:

- devrun (fork):  ``devrun up -c devrun.yaml --no-dashboard`` with the app
  ``mysite.wsgi:application``, ``env: {DJANGO_SETTINGS_MODULE: mysite.settings}`` and
  ``reload: fork``, every other key default (devrun's debugger off; Django's DEBUG is the
  project's, True as startproject writes it)
- devrun (spawn): the same with ``reload: spawn``
- manage.py runserver: ``python manage.py runserver 127.0.0.1:P`` with its autoreloader, as Django
  users run it (WatchmanReloader when pywatchman and a watchman service are there, else
  StatReloader, which polls every second; the report says which one ran, from its log)

and measures, for each of them in the same invocation:

1. cold start: from starting the process to the first HTTP 200 on ``/polls/``;
2. code edit latency: from saving ``polls/views.py`` with the title "view-N" (the whole file,
   written to a temporary file next to it and moved over it with ``os.replace``: an atomic
   save) to the first HTTP 200 on ``/polls/`` whose body holds view-N, polling every 5 ms;
3. template edit latency: the same for the template saved with "tpl-N" (devrun applies it in the
   running app through Django's own ``file_changed`` hook; runserver's autoreloader does the same
   in its process, without a restart);
4. failed requests: during each edit a client thread requests ``/polls/`` every 10 ms; a refused,
   reset or timed-out connection and a 5xx status count as failures.

Edits are interleaved as in ``reload.py`` (round i: a code edit on every runner, then a template
edit on every runner, the runners' order rotating each round and the two kinds' order
alternating), each with every other runner paused by SIGSTOP (unless ``--no-pause-others``), a
random 0 to 1 s wait before the save (so a polling reloader meets every phase of its cycle) and a
settle pause afterwards that is not counted; an edit not served within ``--timeout`` seconds
counts as a timeout.

Every process runs in its own session with its output in a log file, and is killed with its
process group and every descendant when the benchmark ends; every wait is bounded. Only loopback
traffic. Linux only (/proc). The runners get PYTHONDONTWRITEBYTECODE=1, as in ``reload.py``.
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
import re
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from benchinfo import cpu_model, devrun_source, free_port, loadavg, nproc, package_versions
from reload import (
    LOAD_EVERY,
    LOAD_LEAD,
    LOAD_TIMEOUT,
    PHASE,
    POLL_EVERY,
    POLL_TIMEOUT,
    LoadClient,
    Runner,
    add_common_arguments,
    alone,
    command,
    failure_kind,
    fmt_ms,
    http_get,
    percentile,
    runner_env,
    tool,
    write_out,
)

# The checkout's root, for the project the tests use: the benchmark measures the same project.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.projects import django_config, django_project  # noqa: E402

PATH = "/polls/"

# name in the table and in --runners -> folder and log name
RUNNERS = {
    "devrun (fork)": "devrun-fork",
    "devrun (spawn)": "devrun-spawn",
    "manage.py runserver": "runserver",
}
BASELINE = "devrun (fork)"  # ratios in the table are relative to this runner
KINDS = ("code", "template")
PACKAGES = ("devrun", "django", "gevent", "watchdog", "pywatchman")
DEVRUN_MARKS = ("reload (", "starting (pid", "applied in place", "crashed", "error:")
RUNSERVER_MARKS = ("changed, reloading", "Watching for file changes with", "Starting development server")


# -- what is edited -----------------------------------------------------------------------------


@dataclass
class Edits:
    """One kind of edit on one runner's project: the file rewritten, and what was measured.

    The file as the project wrote it holds "<marker>-one" once; edit N saves it with "<marker>-N"
    and is served once a page holds that text."""

    kind: str
    path: Path
    marker: str
    original: str = ""
    version: int = 0
    newest_served: int = 0
    latencies: list[float] = field(default_factory=list)
    timeouts: int = 0
    total: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    stale: int = 0  # 200s showing an older version than one already served

    def __post_init__(self) -> None:
        self.original = self.path.read_text()
        if self.original.count(f"{self.marker}-one") != 1:
            raise SystemExit(f"{self.path} should hold {self.marker}-one once: update bench/django_reload.py")

    def save(self, version: int) -> float:
        """Atomically replace the file with `version`; returns the time of the save."""
        tmp = self.path.with_name(f".{self.path.name}.{version}.tmp")
        tmp.write_text(self.original.replace(f"{self.marker}-one", f"{self.marker}-{version}"))
        os.replace(tmp, self.path)
        self.version = version
        return time.perf_counter()

    def served(self, body: str) -> int | None:
        """The version of this file a page shows ("one" is 0), or None."""
        match = re.search(rf"\b{self.marker}-(one|\d+)\b", body)
        if match is None:
            return None
        return 0 if match[1] == "one" else int(match[1])


@dataclass
class DjangoRunner(Runner):
    """reload.py's Runner (process, log, cold start); its per-edit fields, for app.py, stay
    unused here: each kind of edit has its own in `edits`."""

    edits: dict[str, Edits] = field(default_factory=dict)
    reloader: str = ""  # runserver's, from its log


class PageClient(LoadClient):
    """reload.py's background client, on /polls/: counts failures and pages older than one
    already served for the kind of edit being measured."""

    def __init__(self, port: int, edits: Edits):
        super().__init__(port, lambda: edits.newest_served)
        self.edits = edits

    def run(self) -> None:
        due = time.perf_counter()
        while not self.done.is_set():
            try:
                status, body = http_get(self.port, PATH, LOAD_TIMEOUT)
                if status >= 500:
                    self.failures[f"HTTP {status}"] += 1
                elif status == 200:
                    version = self.edits.served(body)
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


def make_runners(root: Path, names: list[str]) -> list[DjangoRunner]:
    runners = []
    for name in names:
        key = RUNNERS[name]
        site = django_project(root / key)  # one project per runner: no runner sees another's edits
        port = free_port()
        if key.startswith("devrun"):
            django_config(site, port, debug=False, reload=key.split("-", 1)[1])  # devrun's defaults otherwise
            argv, marks = [*tool("devrun"), "up", "-c", "devrun.yaml", "--no-dashboard"], DEVRUN_MARKS
        else:
            argv, marks = [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}"], RUNSERVER_MARKS
        runner = DjangoRunner(name, site, root / "logs" / f"{key}.log", port, argv, log_marks=marks)
        runner.edits = {
            "code": Edits("code", site / "polls" / "views.py", "view"),
            "template": Edits("template", site / "polls" / "templates" / "polls" / "index.html", "tpl"),
        }
        runners.append(runner)
    return runners


def django_env() -> dict[str, str]:
    # manage.py and devrun.yaml set DJANGO_SETTINGS_MODULE; one inherited from the caller would win in manage.py
    return {k: v for k, v in runner_env().items() if not k.startswith("DJANGO_")}


# -- measurements -------------------------------------------------------------------------------


def cold_start(runner: DjangoRunner, env: dict[str, str], timeout: float) -> None:
    t0 = time.perf_counter()
    runner.start(env)
    deadline = t0 + timeout
    while time.perf_counter() < deadline and runner.alive():
        with contextlib.suppress(OSError, http.client.HTTPException):
            status, _ = http_get(runner.port, PATH, min(POLL_TIMEOUT, max(deadline - time.perf_counter(), 0.01)))
            if status == 200:
                runner.cold_ms = (time.perf_counter() - t0) * 1000
                return
        time.sleep(POLL_EVERY)
    if not runner.problem:
        runner.problem = f"no 200 on {PATH} within {timeout:.0f} s of starting (see {runner.log})"


def wait_served(port: int, edits: Edits, version: int, saved: float, timeout: float) -> float | None:
    """Poll /polls/ every 5 ms until a 200 shows `version`: ms since `saved`, or None."""
    deadline = saved + timeout
    while (left := deadline - time.perf_counter()) > 0:
        with contextlib.suppress(OSError, http.client.HTTPException):
            status, body = http_get(port, PATH, min(POLL_TIMEOUT, left))
            if status == 200 and edits.served(body) == version:
                edits.newest_served = max(edits.newest_served, version)
                return (time.perf_counter() - saved) * 1000
        time.sleep(POLL_EVERY)
    return None


def one_edit(runner: DjangoRunner, kind: str, timeout: float, settle: float, phase: float) -> None:
    """One save of `kind` and its reload, `phase` seconds after the runner was resumed."""
    edits = runner.edits[kind]
    client = PageClient(runner.port, edits)
    client.start()
    try:
        time.sleep(LOAD_LEAD + phase)
        version = edits.version + 1
        saved = edits.save(version)
        ms = wait_served(runner.port, edits, version, saved, timeout)
        if ms is None:
            edits.timeouts += 1
        else:
            edits.latencies.append(ms)
        time.sleep(settle)
    finally:
        client.stop()
    edits.total += client.total
    edits.failures.update(client.failures)
    edits.stale += client.stale


def read_reloader(runner: DjangoRunner) -> str:
    """The autoreloader runserver said it used ("StatReloader", "WatchmanReloader"), or ""."""
    with contextlib.suppress(OSError):
        match = re.search(r"Watching for file changes with (\w+)", runner.log.read_text(errors="replace"))
        if match:
            return match[1]
    return ""


# -- report -------------------------------------------------------------------------------------


def cells(edits: Edits, base: Edits | None, timeout: float, rounds: int) -> list[str]:
    """p50, p95 and p50 vs the baseline for one kind of edit on one runner."""
    done = len(edits.latencies) + edits.timeouts
    if edits.latencies:
        p50 = statistics.median(edits.latencies)
        p50_cell, p95_cell = fmt_ms(p50), fmt_ms(percentile(edits.latencies, 95))
        ratio = f"{p50 / statistics.median(base.latencies):.2f}×" if base and base.latencies else "n/a"
    else:
        p50_cell = p95_cell = f"not served within {timeout:g} s"
        ratio = "n/a"
    if edits.timeouts:
        p50_cell += f" ({edits.timeouts}/{done} edits timed out)"
    if done < rounds:
        p50_cell += f" (only {done}/{rounds} edits run)"
    return [p50_cell, p95_cell, ratio]


def table(runners: list[DjangoRunner], rounds: int, timeout: float) -> str:
    base = next((r for r in runners if r.name == BASELINE), None)
    rows = [
        f"| runner | cold start ms | code edit p50 ms | code edit p95 ms | code p50 vs {BASELINE} "
        f"| template edit p50 ms | template edit p95 ms | template p50 vs {BASELINE} "
        "| failed requests / total, code edits | failed requests / total, template edits |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runners:
        row = [r.name, fmt_ms(r.cold_ms)]
        for kind in KINDS:
            row += cells(r.edits[kind], base.edits[kind] if base else None, timeout, rounds)
        row += [f"{sum(r.edits[k].failures.values())} / {r.edits[k].total}" for k in KINDS]
        rows.append("| " + " | ".join(row) + " |")
    return "\n".join(rows)


def notes(runners: list[DjangoRunner], args: argparse.Namespace) -> str:
    lines = [
        f"{args.edits} code edits (`polls/views.py`, title view-N) and {args.edits} template edits "
        f"(`polls/templates/polls/index.html`, tpl-N) per runner, interleaved; settle {args.settle:g} s after "
        f"each (not counted); an edit not served within {args.timeout:g} s is a timeout. Latency: from the atomic "
        f"save to the first 200 on `{PATH}` showing the new text, polled every 5 ms; the background client requests "
        f"`{PATH}` every 10 ms (timeout {LOAD_TIMEOUT:g} s) from {LOAD_LEAD:g} s before each save to the end of "
        "its settle pause. "
        + ("During each runner's edits the other runners were paused with SIGSTOP; each save came a random 0 to "
           f"{PHASE:g} s after the runner was resumed, so a polling reloader meets every phase of its cycle. "
           if args.pause_others
           else "Every runner kept running during the others' edits. ")
        + "Ratios are relative to "
        + (f"{BASELINE}." if any(r.name == BASELINE for r in runners) else f"{BASELINE}, which was not run (n/a)."),
    ]
    for r in runners:
        parts = []
        for kind in KINDS:
            e = r.edits[kind]
            if e.failures:
                parts.append(f"{kind} edits' failures: " + ", ".join(f"{n} {k}" for k, n in e.failures.most_common()))
            if e.stale:
                parts.append(f"{e.stale} pages showed an older {kind} version after the new one had been served")
            if e.latencies:
                parts.append(f"{kind} latencies ms: " + " ".join(f"{v:.0f}" for v in e.latencies))
        if r.problem:
            parts.append(f"problem: {r.problem}")
        if r.counts:
            parts.append("its log: " + ", ".join(f"{n} × `{mark}`" for mark, n in r.counts.items()))
        if parts:
            lines.append(f"- {r.name}: " + "; ".join(parts))
    return "\n".join(lines)


def reloader_line(runners: list[DjangoRunner]) -> str:
    used = next((r.reloader for r in runners if RUNNERS[r.name] == "runserver"), None)
    has_pywatchman = importlib.util.find_spec("pywatchman") is not None
    if used is None:
        text = "runserver not run"
    elif used == "StatReloader":
        from django.utils.autoreload import StatReloader  # the interval it polls at, from the installed Django

        why = ("pywatchman not installed" if not has_pywatchman
               else "pywatchman installed, but no watchman service answered")
        text = f"runserver StatReloader, polling every {StatReloader.SLEEP_TIME:g} s ({why})"
    elif used:
        text = f"runserver {used}"
    else:
        text = "runserver's reloader not found in its log"
    return f"- reloaders: {text}; devrun watchdog"


def machine(runners: list[DjangoRunner], source: tuple[str, str], load: str) -> str:
    cpu = cpu_model()
    return "\n".join([
        f"- machine: {platform.system()} {platform.release()}, nproc {nproc()}" + (f", {cpu}" if cpu else "")
        + (f", load average at start {load}" if load else ""),
        f"- Python {platform.python_version()} ({platform.python_implementation()})",
        "- " + ", ".join(package_versions(PACKAGES)),
        *([f"- devrun source: commit {source[0]}"] if source[0] and source[0] == source[1] else []),
        *([f"- devrun source: commit {source[0]} at start, {source[1]} at the end: **devrun changed during the "
           "run**, so these numbers mix two versions"] if source[0] != source[1] else []),
        reloader_line(runners),
    ])


def report(runners: list[DjangoRunner], args: argparse.Namespace, started: datetime.datetime,
           source: tuple[str, str], load: str, cwd: Path) -> str:
    return "\n\n".join([
        f"## Django reload benchmark, {started:%Y-%m-%d %H:%M}",
        machine(runners, source, load),
        f"Reproduce (run in `{cwd}`, after `pip install -e . django`):\n\n```sh\n{command()}\n```",
        table(runners, args.edits, args.timeout),
        notes(runners, args),
    ]) + "\n"


# -- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    add_common_arguments(parser, RUNNERS, "code edits, and template edits, per runner", cold_timeout=60.0)
    args = parser.parse_args(argv)
    if args.edits < 1:
        parser.error("--edits must be at least 1")

    started = datetime.datetime.now()
    cwd = Path.cwd()
    source_at_start = devrun_source()
    load_at_start = loadavg()
    root = Path(tempfile.mkdtemp(prefix="devrun-bench-django-"))
    (root / "logs").mkdir()
    runners: list[DjangoRunner] = []
    everyone: list[Runner] = []  # the same runners, as alone() takes them
    env = django_env()
    phases = random.Random(0)  # the same phases in every run
    try:
        runners = make_runners(root, args.runners)
        everyone = [*runners]
        for r in runners:  # one at a time, so cold starts do not compete
            print(f"starting {r.name} on port {r.port}: {shlex.join(r.argv)}", file=sys.stderr)
            cold_start(r, env, args.cold_timeout)
        for i in range(args.edits):
            print(f"edit {i + 1}/{args.edits}", file=sys.stderr)
            shift = i % len(runners)
            for kind in (KINDS if i % 2 == 0 else KINDS[::-1]):
                for r in runners[shift:] + runners[:shift]:
                    if r.cold_ms is not None and r.alive():
                        with alone(r, everyone, args.pause_others):
                            one_edit(r, kind, args.timeout, args.settle,
                                     phases.uniform(0, PHASE) if args.pause_others else 0)
        for r in runners:
            r.alive()
    finally:
        for r in runners:
            r.kill()
            r.counts = r.log_counts()
            r.reloader = read_reloader(r)
        for r in runners:
            if r.problem:
                print(f"--- {r.name}: {r.problem}; end of its log:\n{r.log_tail()}", file=sys.stderr)
        if args.keep:
            print(f"projects and logs kept in {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)

    text = report(runners, args, started, (source_at_start, devrun_source()), load_at_start, cwd)
    print(text)
    if args.out:
        write_out(args.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
