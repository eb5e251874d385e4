#!/usr/bin/env python3
"""Live-reload benchmark: from saving a file to the new page rendered in a real browser.

Needs playwright (the Python package) and Debian's Chromium at /usr/bin/chromium:

    pip install -e . flask playwright
    python bench/browser.py                      # 20 edits per scenario, table on stdout
    python bench/browser.py --edits 20 --out docs/benchmarks.md

One small Flask app per scenario, in its own temporary folder, under `devrun up --no-dashboard`
with debug (so live reload) on; one headless Chromium page open on it. Scenarios:

- code edit (fork), code edit (spawn): app.py is saved atomically (a temporary file moved over
  it) with a new version number; the page must reload by itself onto the new version;
- template edit: the template is saved with a new marker; the page reloads, the app does not;
- stylesheet edit: site.css is saved with a new colour; the stylesheet is swapped in place.

The time is measured with the page's own clock against the save's wall-clock time (one
machine, one clock): for a reload, `performance.timeOrigin + domContentLoadedEventEnd` of the
new page; for a stylesheet, the first animation frame whose computed colour is the new one. For
the code edits the same run also measures the app's own reload latency (save to the first HTTP
response with the new version, polled every 5 ms), so the table shows what the browser adds.
Between edits it waits until the page listens again and then `--settle` seconds, not counted.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import http.client
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchinfo import cpu_model, devrun_source, free_port, kill_tree, loadavg, nproc, package_versions  # noqa: E402

CHROMIUM = os.environ.get("DEVRUN_CHROMIUM", "/usr/bin/chromium")
SCENARIOS = ("code edit (fork)", "code edit (spawn)", "template edit", "stylesheet edit")

APP = """\
from flask import Flask, render_template
app = Flask(__name__)
VERSION = {version}

@app.route("/")
def index():
    return render_template("page.html", version=VERSION)

@app.route("/v")
def v():
    return str(VERSION)
"""
PAGE = """<!doctype html>
<html><head><link rel="stylesheet" href="/static/site.css"></head>
<body data-v="{{{{ version }}}}" data-t="{marker}"><h1>version {{{{ version }}}}</h1></body></html>
"""
CSS = "h1 {{ color: rgb({red}, 0, 0); }}\n"

# Test-side instrumentation: remember each EventSource, to know when the page listens again.
TRACK_STREAMS = """(() => {
    const Original = window.EventSource;
    window.__streams = [];
    window.EventSource = function (url) { const s = new Original(url); window.__streams.push(s); return s; };
    window.EventSource.prototype = Original.prototype;
})()"""
LISTENING = "window.__streams && window.__streams.some(s => s.readyState === 1)"
RENDERED_AT = """() => {
    const nav = performance.getEntriesByType("navigation")[0];
    return performance.timeOrigin + nav.domContentLoadedEventEnd;
}"""
WATCH_COLOUR = """(want) => {
    window.__shown = null;
    const h1 = document.querySelector("h1");
    (function check() {
        if (getComputedStyle(h1).color === want) { window.__shown = performance.timeOrigin + performance.now(); }
        else { requestAnimationFrame(check); }
    })();
}"""


@dataclass
class Result:
    name: str
    browser: list[float] = field(default_factory=list)  # ms, save -> new page shown
    app: list[float] = field(default_factory=list)  # ms, save -> first response with the new code
    misses: int = 0


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def http_get(port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read().decode()
    finally:
        conn.close()


def app_latency(port: int, version: int, saved: float, timeout: float, out: list[float]) -> None:
    """Poll /v until it answers the new version; append the latency in ms."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with contextlib.suppress(OSError, http.client.HTTPException):
            status, body = http_get(port, "/v")
            if status == 200 and body.strip() == str(version):
                out.append((time.time() - saved) * 1000)
                return
        time.sleep(0.005)


class Devrun:
    def __init__(self, folder: Path, reload: str):
        self.folder = folder
        self.port = free_port()
        (folder / "templates").mkdir(parents=True)
        (folder / "static").mkdir()
        (folder / "app.py").write_text(APP.format(version=0))
        (folder / "templates" / "page.html").write_text(PAGE.format(marker=0))
        (folder / "static" / "site.css").write_text(CSS.format(red=0))
        (folder / "devrun.yaml").write_text(textwrap.dedent(f"""\
            apps:
              web: {{app: "app:app", port: {self.port}, reload: {reload}, debug: {{enabled: true}}}}
        """))
        self.log = open(folder / "devrun.log", "wb")  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "NO_COLOR": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "devrun", "up", "--no-dashboard"], cwd=folder,
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def wait_up(self, timeout: float = 30) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with contextlib.suppress(OSError, http.client.HTTPException):
                if http_get(self.port, "/v")[0] == 200:
                    return
            time.sleep(0.05)
        raise SystemExit(f"devrun never served on {self.port}: {(self.folder / 'devrun.log').read_text()[-500:]}")

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            kill_tree(self.proc)
        self.log.close()


def run_scenario(browser: object, name: str, edits: int, settle: float, timeout: float, root: Path) -> Result:
    result = Result(name)
    folder = Path(tempfile.mkdtemp(prefix="browser-", dir=root))
    server = Devrun(folder, "spawn" if "spawn" in name else "fork")
    try:
        server.wait_up()
        context = browser.new_context()  # type: ignore[attr-defined]
        context.add_init_script(TRACK_STREAMS)
        page = context.new_page()
        page.set_default_timeout(timeout * 1000)
        page.goto(f"http://127.0.0.1:{server.port}/")
        page.wait_for_function(LISTENING)
        if name.startswith("code"):  # the first reloads are spawned while the fork server preloads
            for warm in range(1, 4):
                atomic_write(folder / "app.py", APP.format(version=-warm))
                page.wait_for_function(f"document.body.dataset.v === '{-warm}'")
                page.wait_for_function(LISTENING)
                time.sleep(settle)
        for n in range(1, edits + 1):
            try:
                if name.startswith("code"):
                    poller_out: list[float] = []
                    saved = time.time()
                    atomic_write(folder / "app.py", APP.format(version=n))
                    poller = threading.Thread(target=app_latency, args=(server.port, n, saved, timeout, poller_out))
                    poller.start()
                    page.wait_for_function(f"document.body.dataset.v === '{n}'")
                    result.browser.append(page.evaluate(RENDERED_AT) - saved * 1000)
                    poller.join()
                    result.app.extend(poller_out)
                elif name.startswith("template"):
                    saved = time.time()
                    atomic_write(folder / "templates" / "page.html", PAGE.format(marker=n))
                    page.wait_for_function(f"document.body.dataset.t === '{n}'")
                    result.browser.append(page.evaluate(RENDERED_AT) - saved * 1000)
                else:
                    want = f"rgb({n}, 0, 0)"
                    page.evaluate(WATCH_COLOUR, want)  # armed before the save
                    saved = time.time()
                    atomic_write(folder / "static" / "site.css", CSS.format(red=n))
                    page.wait_for_function("window.__shown !== null")
                    result.browser.append(float(page.evaluate("window.__shown")) - saved * 1000)
                page.wait_for_function(LISTENING)
            except Exception as exc:  # a timeout: counted, and the run goes on
                result.misses += 1
                print(f"  {name} edit {n}: {type(exc).__name__}: {str(exc).splitlines()[0]}", file=sys.stderr)
            time.sleep(settle)
        context.close()
    finally:
        server.stop()
    return result


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def table(results: list[Result], edits: int) -> str:
    lines = ["| scenario | browser p50 | browser p95 | app reload p50 | browser − app (p50 of pairs) | missed |",
             "|---|---|---|---|---|---|"]
    for r in results:
        pairs = [b - a for b, a in zip(r.browser, r.app, strict=False)] if r.app else []
        lines.append(f"| {r.name} | {ms(pct(r.browser, 0.5))} | {ms(pct(r.browser, 0.95))} | "
                     f"{ms(pct(r.app, 0.5)) if r.app else 'n/a'} | "
                     f"{ms(statistics.median(pairs)) if pairs else 'n/a'} | {r.misses} / {edits} |")
    return "\n".join(lines)


def report(results: list[Result], args: argparse.Namespace, started: datetime.datetime, source: str,
           load: str) -> str:
    cpu = cpu_model()
    chromium = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True).stdout.strip()
    return "\n\n".join([
        f"## Live-reload benchmark (browser), {started:%Y-%m-%d %H:%M}",
        "\n".join([
            f"- machine: {platform.system()} {platform.release()}, nproc {nproc()}" + (f", {cpu}" if cpu else "")
            + (f", load average at start {load}" if load else ""),
            f"- Python {platform.python_version()}; " + ", ".join(package_versions(("flask", "gevent", "playwright")))
            + f"; {chromium or CHROMIUM}",
            *([f"- devrun source: commit {source}"] if source else []),
        ]),
        f"Reproduce (after `pip install -e . flask playwright` and `apt-get install chromium`):\n\n"
        f"```sh\n{shlex.join(getattr(sys, 'orig_argv', None) or [sys.executable, *sys.argv])}\n```",
        table(results, args.edits),
        f"{args.edits} edits per scenario, {args.settle} s settle between edits (not counted). \"browser\": "
        "from the save to the new page's DOMContentLoaded (code and template edits) or to the first "
        "animation frame with the new colour (stylesheet edit), on the page's own clock. \"app reload\": "
        "from the same save to the first HTTP response with the new code, polled every 5 ms during the "
        "same edits. The code-edit scenarios start after 3 unmeasured edits, so the fork server is warm.",
    ]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--edits", type=int, default=20)
    parser.add_argument("--settle", type=float, default=0.3)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help=f"comma-separated, from: {', '.join(SCENARIOS)}")
    parser.add_argument("--out", type=Path, help="append the report to this markdown file")
    args = parser.parse_args(argv)
    names = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {unknown}; choose from {SCENARIOS}")
    from playwright.sync_api import sync_playwright

    started, load, source = datetime.datetime.now(), loadavg(), devrun_source()
    results = []
    with tempfile.TemporaryDirectory(prefix="devrun-bench-") as root, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking"])
        try:
            for name in names:
                print(f"measuring {name} ...", file=sys.stderr)
                results.append(run_scenario(browser, name, args.edits, args.settle, args.timeout, Path(root)))
        finally:
            browser.close()
    text = report(results, args, started, source, load)
    print(text)
    if args.out:
        old = args.out.read_text() if args.out.exists() else "# Benchmarks\n"
        args.out.write_text(old.rstrip("\n") + "\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
