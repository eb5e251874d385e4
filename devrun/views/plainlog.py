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


def _paths(paths: tuple[str, ...]) -> str:
    shown = ", ".join(clean(p) for p in paths[:5])
    return shown + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")


def request_line(request: events.Request) -> str:
    return f"{request.method} {clean(request.path)} {request.status} {request.ms:.0f}ms"


def request_style(status: str) -> str:
    return "red" if status.startswith("5") else "yellow" if status.startswith("4") else ""


def describe(event: events.Event) -> Text | None:
    """One event as one line of text (without the app prefix); None for events not shown."""
    match event:
        case events.Starting(generation=n, pid=pid):
            return Text(f"starting (pid {pid}, generation {n})", style="dim")
        case events.Ready(url=url, pid=pid, ms=ms):
            return Text(f"ready {url} (pid {pid}, {ms:.0f} ms)", style="green")
        case events.Reloading(paths=paths):
            return Text(f"reload ({_paths(paths)})" if paths else "restart (asked for)", style="yellow")
        case events.Refreshing(paths=paths, css=css, pages=pages):
            what = "swap stylesheets" if css and pages else "refresh pages" if pages else "changed, applied in place"
            return Text(f"{what} ({_paths(paths)})", style="yellow")
        case events.Refreshed(pages=n, how=how):
            what = "swapped stylesheets in" if how == "css" else "refreshed"
            return Text(f"{what} {n} page{'s' if n != 1 else ''}", style="cyan")
        case events.Pages(count=n):
            return Text(f"live reload: {n} page{'s' if n != 1 else ''} connected", style="dim")
        case events.Exited(returncode=rc, pid=pid, expected=expected):
            if expected and rc in (0, -signal.SIGTERM):
                return Text(f"stopped (pid {pid})", style="dim")
            return Text(f"{describe_exit(rc)} (pid {pid})", style="dim" if expected else "red")
        case events.Request(status=status):
            return Text(request_line(event), style=request_style(status))
        case events.Output(line=text):
            return Text(clean(text))
        case events.AppFailed(summary=summary):
            return Text(f"error: {clean(summary)} (serving an error page until a change fixes it)", style="red")
        case events.Notice(text=text, level=level):
            return Text(clean(text), style={"error": "red", "warning": "yellow"}.get(level, ""))
    return None  # Stopped, StateChanged, AppsChanged, ConfigRejected: notices and other lines say it


class _Console(Console):
    def on_broken_pipe(self) -> None:
        # Rich's own answer is SystemExit(1), which would end the runner and every app with it; an
        # exception lets the runner drop the line (a closed terminal is no reason to stop serving).
        raise BrokenPipeError


class PlainLog:
    def __init__(self, names: list[str], file: IO[str] | None = None, skip: tuple[type, ...] = ()):
        self.skip = skip  # event types not printed (a detached runner's log leaves them to app logs)
        self.console = _Console(file=file, soft_wrap=True, highlight=False, emoji=False)
        self.width = max([len(n) for n in names] + [len("devrun")])
        self.colors = {n: COLORS[i % len(COLORS)] for i, n in enumerate(names)}
        self._styled: dict[str, tuple[str, str]] = {}

    def handle(self, event: events.Event) -> None:
        if isinstance(event, events.AppsChanged):  # devrun.yaml was edited: new names get a colour
            for name, _ in event.apps:
                self.colors.setdefault(name, COLORS[len(self.colors) % len(COLORS)])
                self.width = max(self.width, len(name))
            self._styled.clear()
            return
        if isinstance(event, self.skip):
            return
        if isinstance(event, events.Requests):
            self._requests(event)
            return
        body = describe(event)
        if body is not None:
            self.console.print(self._prefix(event.app) + body)

    def _prefix(self, app: str) -> Text:
        return Text(f"{app or 'devrun':<{self.width}} | ", style=self.colors.get(app, "bold"))

    def _requests(self, event: events.Requests) -> None:
        """A batch of request lines in one write. Rendering each line through rich cost a busy
        app's runner more CPU than the app itself used: the styled pieces are rendered by rich
        once (so colour, NO_COLOR and terminal detection stay rich's) and then reused."""
        prefix = self._wrap(self.colors.get(event.app, "bold"))
        lead = prefix[0] + f"{event.app or 'devrun':<{self.width}} | " + prefix[1]
        lines = []
        for request in event.requests:
            style = self._wrap(request_style(request.status))
            lines.append(f"{lead}{style[0]}{request_line(request)}{style[1]}\n")
        self.console.file.write("".join(lines))
        self.console.file.flush()

    def _wrap(self, style: str) -> tuple[str, str]:
        """What the console writes before and after a text in this style."""
        wrap = self._styled.get(style)
        if wrap is None:
            with self.console.capture() as captured:
                self.console.print(Text("\0", style=style), end="")
            before, _, after = captured.get().partition("\0")
            wrap = self._styled[style] = (before, after)
        return wrap
