"""The plain view: one line per event, prefixed with the app's name.

Colored only on a terminal (rich also honours NO_COLOR and TERM=dumb). The app's own output
is printed as text, never as markup, with terminal escape sequences taken out.
"""

from __future__ import annotations

import re
import signal
from typing import IO

from rich.console import Console
from rich.text import Text

from devrun import events
from devrun.events import describe_exit

COLORS = ("cyan", "magenta", "green", "yellow", "blue", "bright_cyan", "bright_magenta", "bright_green")
_ANSI = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def clean(line: str) -> str:
    """Child output made safe for a terminal: escape sequences removed, controls made visible."""
    line = _ANSI.sub("", line)
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", line)


class PlainLog:
    def __init__(self, names: list[str], file: IO[str] | None = None):
        self.console = Console(file=file, soft_wrap=True, highlight=False, emoji=False)
        self.width = max([len(n) for n in names] + [len("devrun")])
        self.colors = {n: COLORS[i % len(COLORS)] for i, n in enumerate(names)}

    def line(self, app: str, body: str | Text, style: str = "") -> None:
        prefix = Text(f"{app or 'devrun':<{self.width}} | ", style=self.colors.get(app, "bold"))
        text = body if isinstance(body, Text) else Text(body, style=style)
        self.console.print(prefix + text)

    def handle(self, event: events.Event) -> None:
        app = event.app
        match event:
            case events.Starting(generation=n, pid=pid):
                self.line(app, f"starting (pid {pid}, generation {n})", "dim")
            case events.Ready(url=url, pid=pid, ms=ms):
                self.line(app, f"ready {url} (pid {pid}, {ms:.0f} ms)", "green")
            case events.Reloading(paths=paths):
                shown = ", ".join(clean(p) for p in paths[:5])
                if len(paths) > 5:
                    shown += f" and {len(paths) - 5} more"
                self.line(app, f"reload ({shown})", "yellow")
            case events.Exited(returncode=rc, pid=pid, expected=expected):
                if expected and rc in (0, -signal.SIGTERM):
                    self.line(app, f"stopped (pid {pid})", "dim")
                else:
                    self.line(app, f"{describe_exit(rc)} (pid {pid})", "dim" if expected else "red")
            case events.Request(method=method, path=path, status=status, ms=ms):
                style = "red" if status.startswith("5") else "yellow" if status.startswith("4") else ""
                self.line(app, Text(f"{method} {clean(path)} {status} {ms:.0f}ms", style=style))
            case events.Output(line=text):
                self.line(app, Text(clean(text)))
            case events.AppFailed(summary=summary):
                self.line(app, Text(f"error: {clean(summary)} (serving an error page until a change fixes it)",
                                    style="red"))
            case events.Notice(text=text, level=level):
                style = {"error": "red", "warning": "yellow"}.get(level, "")
                self.line(app, Text(text, style=style))
            case events.Stopped():
                pass
