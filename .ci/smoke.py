"""CI's end-to-end smoke test of an installed devrun (the wheel, not the source tree): the
shipped example comes up, answers, reloads an edit and stops cleanly, leaving nothing behind.

    python .ci/smoke.py VENV/bin/devrun

Only the standard library; every wait is bounded; everything started is killed at the end.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def get(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.read().decode("utf-8", "replace") if response.status == 200 else ""
    except OSError:
        return ""


def wait(what: str, check: Callable[[], bool], timeout: float, lines: list[str]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise SystemExit(f"smoke: no {what} within {timeout:g} s; devrun printed:\n" + "\n".join(lines))


def inside(folder: Path) -> list[int]:
    """Processes whose working folder is in folder (the runner, the apps, fork servers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "cwd").startswith(str(folder)):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def main(devrun: str) -> int:
    devrun = str(Path(devrun).absolute())  # it runs in the project's folder, not here
    version = subprocess.run([devrun, "--version"], capture_output=True, text=True, timeout=30, check=True)
    work = Path(tempfile.mkdtemp(prefix="devrun-smoke-"))
    shutil.copy(ROOT / "devrun.yaml.example", work / "devrun.yaml")
    shutil.copytree(ROOT / "examples", work / "examples")
    proc = subprocess.Popen([devrun, "up", "--no-dashboard"], cwd=work, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, "NO_COLOR": "1"})
    lines: list[str] = []
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(line.rstrip("\n") for line in proc.stdout), daemon=True)
    reader.start()
    try:
        wait("answer from the Flask demo", lambda: "hi from devrun" in get("http://127.0.0.1:5000/"), 60, lines)
        wait("answer from the plain WSGI factory", lambda: "demo-api" in get("http://127.0.0.1:5001/"), 30, lines)
        app = work / "examples" / "hello" / "hello.py"
        app.write_text(app.read_text().replace("from devrun</h1>", "from the wheel</h1>"))
        wait("reload", lambda: "hi from the wheel" in get("http://127.0.0.1:5000/"), 30, lines)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(30)
        if code != 0:
            raise SystemExit(f"smoke: devrun exited {code} on Ctrl-C; it printed:\n" + "\n".join(lines))
        wait("clean stop (processes left in the project)", lambda: not inside(work), 10, lines)
    finally:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)  # the runner leads its own session
        for pid in inside(work):  # and whatever left it
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(work, ignore_errors=True)
    print(f"smoke: ok: {version.stdout.strip()} from {devrun}: up, 2 apps answered, reload, clean stop")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
