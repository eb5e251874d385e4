"""The terminal dashboard: a rich Live view of every app, built only from events.

It keeps a small model per app (state, pid, uptime, reloads, last cause, request rate, last
status codes, last error, recent requests and output) and draws it four times a second from
rich's refresh thread. Keys become Commands for the runner; the dashboard decides nothing.
"""

from __future__ import annotations

import contextlib
import io
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from rich.console import Console, Group, RenderableType
from rich.layout import Layout
from rich.live import Live
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from devrun import events
from devrun.events import AppStatus
from devrun.views import terminal
from devrun.views.appstate import AppState, follow_apps
from devrun.views.plainlog import clean, describe

STATE_STYLES = {
    AppStatus.STARTING: "cyan", AppStatus.READY: "green", AppStatus.RELOADING: "yellow", AppStatus.ERROR: "bold red",
    AppStatus.CRASHED: "red", AppStatus.BACKOFF: "magenta", AppStatus.STOPPED: "dim",
}
# The states whose error stays in sight: a traceback the app prints meanwhile does not replace it.
FAILED = (AppStatus.ERROR, AppStatus.CRASHED, AppStatus.BACKOFF)
PANES = ("requests", "output", "error")
RATE_WINDOW = 5.0


@dataclass
class AppView(AppState):
    """The shared model plus what only the dashboard shows: recent requests and output."""

    request_list: deque[events.Request] = field(default_factory=lambda: deque(maxlen=200))
    request_times: deque[float] = field(default_factory=lambda: deque(maxlen=5000))
    output: deque[str] = field(default_factory=lambda: deque(maxlen=500))
    collecting: list[str] | None = None  # a traceback being printed by the app

    def add_output(self, line: str) -> None:
        """Keep the line; notice a traceback the app prints (a request that raised)."""
        self.output.append(line)
        if line.startswith("Traceback (most recent call last):"):
            self.collecting = [line]
        elif self.collecting is not None:
            self.collecting.append(line)
            if line and not line[0].isspace():  # the exception line ends it
                if self.state not in FAILED:
                    self.error, self.traceback = line, "\n".join(self.collecting)
                self.collecting = None
            elif len(self.collecting) > 400:
                self.collecting = None

    def rate(self, now: float) -> float:
        recent = sum(1 for t in self.request_times if now - t <= RATE_WINDOW)
        return recent / RATE_WINDOW


def ago(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"
    return f"{seconds // 3600:.0f}h{seconds % 3600 // 60:02.0f}m"


class Dashboard:
    def __init__(self, apps: list[tuple[str, str]], clock: Callable[[], float] = time.time):
        self.apps = {name: AppView(name, url) for name, url in apps}
        self.order = [name for name, _ in apps]
        self.clock = clock
        self.log: deque[tuple[float, str, Text]] = deque(maxlen=300)
        self.selected = 0
        self.pane = "requests"
        self.pin = ""
        self.config_problem = ""  # an edit of devrun.yaml that was not applied
        self.lock = threading.Lock()
        self.post: Callable[[object], None] = lambda item: None
        self.version = 0  # bumped by every change: redraw only when something changed

    # -- the model (runner's main thread) ------------------------------------------------

    def handle(self, event: events.Event) -> None:
        with self.lock:
            self._update(event)
            self.version += 1

    def _update(self, event: events.Event) -> None:
        if isinstance(event, events.ConfigRejected):
            self.config_problem = event.problems[0] if event.problems else "invalid"
        if isinstance(event, events.AppsChanged):  # devrun.yaml was edited, or attached to a runner
            self.config_problem = ""
            self.apps = follow_apps(self.apps, event, AppView)
            self.order = [name for name, _ in event.apps]
            self.selected = min(self.selected, max(len(self.order) - 1, 0))
            return
        view = self.apps.get(event.app)
        if isinstance(event, events.Notice) and event.text.startswith("PIN: "):
            self.pin = event.text.removeprefix("PIN: ")
            return
        if isinstance(event, events.Requests):
            if view:
                view.apply(event)
                view.request_list.extend(event.requests)
                view.request_times.extend(r.at for r in event.requests)
            return
        if isinstance(event, events.Output):
            if view:
                view.add_output(clean(event.line))
            return
        text = describe(event)
        if text is not None:
            self.log.append((event.at, event.app, text))
        if view is not None:
            view.apply(event)
            if isinstance(event, events.AppFailed):
                view.error = clean(view.error)
            elif isinstance(event, events.Exited) and not event.expected:  # a crash: its last words
                view.traceback = "\n".join(list(view.output)[-40:])

    # -- keys (key thread) ---------------------------------------------------------------

    def key(self, key: str) -> None:
        with self.lock:
            command = self._command(key)
            self.version += 1
        if command is not None:
            self.post(command)

    def _command(self, key: str) -> events.Command | None:
        count = len(self.order)
        if key in ("q", "Q"):
            return events.Command("quit")
        if not count:  # every app was removed from devrun.yaml
            return None
        if key == "up":
            self.selected = (self.selected - 1) % count
        elif key == "down":
            self.selected = (self.selected + 1) % count
        elif key.isdigit() and 1 <= int(key) <= min(count, 9):
            self.selected = int(key) - 1
        elif key == "l":
            self.pane = PANES[(PANES.index(self.pane) + 1) % len(PANES)]
        elif key == "r":
            return events.Command("restart", self.order[self.selected])
        elif key == "R":
            return events.Command("restart")
        return None

    # -- drawing (rich's refresh thread) -------------------------------------------------

    def render(self, width: int = 120, height: int = 40) -> RenderableType:
        with self.lock:
            return self._render(width, height)

    def _render(self, width: int, height: int) -> RenderableType:
        now = self.clock()
        narrow = width < 100
        table = Table(expand=True, box=None, pad_edge=False, header_style="bold")
        table.add_column("#", width=2, no_wrap=True)
        table.add_column("app", no_wrap=True, overflow="ellipsis", max_width=20)
        table.add_column("state", no_wrap=True)
        table.add_column("url", no_wrap=True, overflow="fold")
        if not narrow:
            table.add_column("pid", no_wrap=True)
            table.add_column("up", no_wrap=True)
        table.add_column("reloads", no_wrap=True, justify="right")
        table.add_column("last change / error", ratio=1, overflow="fold")  # an error summary wraps, whole
        if not narrow:
            table.add_column("req/s", no_wrap=True, justify="right")
            table.add_column("codes", no_wrap=True)
        live = not narrow and any(v.pages is not None for v in self.apps.values())
        if live:
            table.add_column("pages", no_wrap=True, justify="right")  # open in a browser, live reload
        for i, name in enumerate(self.order):
            view = self.apps[name]
            style = "reverse" if i == self.selected else ""
            state = Text(view.state, style=STATE_STYLES.get(view.state, ""))
            if view.error and view.state in FAILED:
                note = Text(view.error, style="red")
            elif view.cause_at is not None:
                what = ", ".join(view.cause[:3]) + (f" +{len(view.cause) - 3}" if len(view.cause) > 3 else "")
                how = "browser refreshed, " if view.cause_live else ""
                note = Text(f"{what or 'restart'} ({how}{ago(now - view.cause_at)} ago)")
            else:
                note = Text("")
            row: list[RenderableType] = [Text(str(i + 1), style=style), Text(name, style=style), state,
                                         Text(view.url)]
            if not narrow:
                row += [Text(str(view.pid or "-")), Text(ago(now - view.up_since) if view.up_since else "-")]
            row += [Text(str(view.reloads)), note]
            if not narrow:
                codes = " ".join(r.status for r in list(view.request_list)[-3:])
                row += [Text(f"{view.rate(now):.1f}"), Text(codes)]
            if live:
                row.append(Text("-" if view.pages is None else str(view.pages)))
            table.add_row(*row)

        header = Text.assemble(("devrun", "bold"), f"  {len(self.order)} app(s)",
                               (f"  PIN {self.pin}" if self.pin else ""),
                               ("   ↑↓/1-9 select  r restart  R all  l pane  q quit", "dim"))
        if self.config_problem:  # it stays in sight until an edit is applied
            header = Text.assemble(("config not applied: ", "bold red"), (self.config_problem, "red"))
        # As tall as the table really is: a long error summary takes more than one line.
        measure = Console(width=width, file=io.StringIO(), color_system=None)
        rows_h = len(measure.render_lines(table, measure.options, pad=False))
        rest = max(height - rows_h - 1, 6)
        log_h = max(rest // 3, 3)
        lower_h = max(rest - log_h, 3)
        log_lines = [Text.assemble((time.strftime("%H:%M:%S", time.localtime(at)) + " ", "dim"),
                                   (f"{app or 'devrun'} ", "bold"), text)
                     for at, app, text in list(self.log)[-(log_h - 2):]]
        lower: RenderableType = Panel(Text("no apps in devrun.yaml", style="dim"))
        if self.order:
            lower = self._lower(self.apps[self.order[self.selected]], lower_h - 2)
        layout = Layout()
        layout.split_column(
            Layout(header, size=1),
            Layout(table, size=rows_h),
            Layout(Panel(Group(*log_lines), title="events", title_align="left"), size=log_h),
            Layout(lower, size=lower_h),
        )
        return layout

    def _lower(self, view: AppView, lines: int) -> Panel:
        tabs = Text.assemble(*[(f" {p} ", "reverse" if p == self.pane else "dim") for p in PANES])
        title = Text.assemble((view.name, "bold"), " ", tabs)
        body: RenderableType
        if self.pane == "requests":
            body = Group(*[describe(r) or Text("") for r in list(view.request_list)[-lines:]]) \
                if view.request_list else Text("no requests yet", style="dim")
        elif self.pane == "output":
            body = Group(*[Text(line) for line in list(view.output)[-lines:]]) \
                if view.output else Text("no output yet", style="dim")
        elif view.traceback:
            tail = "\n".join(view.traceback.rstrip("\n").splitlines()[-lines:])
            body = Group(Text(view.error, style="bold red"), Syntax(tail, "pytb", theme="ansi_dark",
                                                                     word_wrap=True))
        else:
            body = Text(view.error or "no error", style="dim" if not view.error else "red")
        return Panel(body, title=title, title_align="left")

    # -- running ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def running(self, post: Callable[[object], None], console: Console | None = None) -> Iterator[None]:
        """Draw on the terminal (alternate screen) and read keys until the block ends."""
        self.post = post
        console = console or Console()

        class Screen:
            def __rich_console__(inner, console: Console, options: object) -> Iterator[RenderableType]:  # noqa: N805
                yield self.render(console.size.width, console.size.height)

        live = Live(Screen(), console=console, screen=True, auto_refresh=False,
                    redirect_stdout=False, redirect_stderr=False)
        stop = threading.Event()

        def redraw() -> None:
            # At most 4 frames a second, and only on a change; once a second for the clocks.
            drawn, last = -1, 0.0
            while not stop.wait(0.25):
                now = time.monotonic()
                if self.version != drawn or now - last >= 1.0:
                    drawn, last = self.version, now
                    live.refresh()

        painter = threading.Thread(target=redraw, name="devrun-dashboard", daemon=True)
        with live, terminal.keys(self.key):
            painter.start()
            try:
                yield
            finally:
                stop.set()
                painter.join(timeout=1)
