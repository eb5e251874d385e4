"""What every view knows of an app, built from events alone: its state, pid, since when it
serves, reloads, the last change and the last error. The dashboard and the control socket's
`status` read the same model, so they never disagree."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from devrun import events
from devrun.events import AppStatus


@dataclass
class AppState:
    name: str
    url: str
    state: AppStatus = AppStatus.STARTING
    pid: int | None = None
    up_since: float | None = None  # wall-clock time it started serving this code
    reloads: int = 0
    cause: tuple[str, ...] = ()  # the files whose change caused the last reload or refresh
    cause_at: float | None = None
    cause_live: bool = False  # the last change only refreshed the browser
    pages: int | None = None  # connected for live reload; None until the app says
    requests: int = 0
    error: str = ""
    traceback: str = ""

    def apply(self, event: events.Event) -> None:
        match event:
            case events.StateChanged(state=state):
                self.state = state
                if state in (AppStatus.CRASHED, AppStatus.BACKOFF, AppStatus.STOPPED):
                    self.up_since = self.pid = None
            case events.Starting(pid=pid):
                if self.pid is None:
                    self.pid = pid
            case events.Ready(pid=pid):
                self.pid, self.up_since = pid, event.at
                self.error = self.traceback = ""  # new code: the old error is history
            case events.AppFailed(pid=pid, summary=summary, traceback=tb):
                # pid 0: nothing could start (the app's folder is gone): no process, no uptime
                self.pid, self.up_since = (pid, event.at) if pid else (None, None)
                self.error, self.traceback = summary, tb
            case events.Exited(expected=False, returncode=rc):
                self.error = events.describe_exit(rc)
                self.traceback = ""  # a view that keeps the app's output can show its last lines
            case events.Reloading(paths=paths):
                self.reloads += 1
                self.cause, self.cause_at, self.cause_live = paths, event.at, False
            case events.Refreshing(paths=paths):
                self.cause, self.cause_at, self.cause_live = paths, event.at, True
            case events.Pages(count=count):
                self.pages = count
            case events.Requests(requests=requests):
                self.requests += len(requests)


Model = TypeVar("Model", bound=AppState)


def follow_apps(apps: Mapping[str, Model], changed: events.AppsChanged, make: Callable[[str, str], Model]
                ) -> dict[str, Model]:
    """The models after devrun.yaml changed the apps: kept ones keep their state (and take a
    changed URL), new ones start fresh, removed ones are gone."""
    out = {name: apps.get(name) or make(name, url) for name, url in changed.apps}
    for name, url in changed.apps:
        out[name].url = url
    return out
