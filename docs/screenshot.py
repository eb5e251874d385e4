"""Make docs/dashboard.svg: run the demo apps of devrun.yaml.example for a few seconds, with a
few requests, an edit and a failing route, and export the dashboard as rich renders it.

    python docs/screenshot.py
"""

from __future__ import annotations

import contextlib
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from rich.console import Console

from devrun import events
from devrun.config import load_config
from devrun.runner.loop import Runner
from devrun.views.dashboard import Dashboard

ROOT = Path(__file__).resolve().parent.parent


class Feed:
    """The dashboard's model without its terminal: events in, nothing drawn."""

    def __init__(self, board: Dashboard):
        self.board = board

    def handle(self, event: events.Event) -> None:
        self.board.handle(event)


def get(url: str) -> None:
    with contextlib.suppress(urllib.error.URLError, OSError):
        urllib.request.urlopen(url, timeout=5).read()


def script(runner: Runner) -> None:
    time.sleep(2)
    for path in ("/", "/page", "/page", "/boom", "/"):
        get(f"http://127.0.0.1:5000{path}")
    for path in ("/users", "/users/7", "/health"):
        get(f"http://127.0.0.1:5001{path}")
    api = ROOT / "examples" / "api" / "api.py"
    text = api.read_text()
    api.write_text(text + "\n")
    time.sleep(1.5)
    api.write_text(text)
    time.sleep(1.5)
    get("http://127.0.0.1:5001/users")
    time.sleep(0.5)
    runner.stop_requested += 1


def main() -> None:
    config = load_config(ROOT / "devrun.yaml.example")
    names = list(config.apps)
    board = Dashboard([(n, config.apps[n].url) for n in names])
    runner = Runner(config, names, [Feed(board)])
    threading.Thread(target=script, args=(runner,), daemon=True).start()
    runner.run()
    board.key("l")
    board.key("l")  # show web's last error: the /boom traceback
    console = Console(record=True, width=110, height=34, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(board.render(110, 34))
    (ROOT / "docs" / "dashboard.svg").write_text(console.export_svg(title="devrun up"))


if __name__ == "__main__":
    main()
