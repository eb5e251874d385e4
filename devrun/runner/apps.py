"""What the runner's set of apps should become, decided without acting: pure functions of config.

`reconcile` compares the running config with a saved devrun.yaml (or env file): what to stop,
what to restart and why, what to start. `warnings` lists what an app's config exposes (the
debugger off loopback, no PIN), said as it starts.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from devrun.config import App, Config, is_loopback


@dataclass(frozen=True)
class Plan:
    removed: tuple[str, ...]  # stop for good
    # In config order: (app, why) to stop and start again with the new config, (app, None) to start.
    starting: tuple[tuple[App, str | None], ...]

    @property
    def changed(self) -> list[App]:
        return [app for app, why in self.starting if why is not None]


def reconcile(old: Config, new: Config, running: Collection[str], wanted: Collection[str] | None) -> Plan:
    """wanted: the names the runner serves (None: every app of new). An app that is configured
    but not running, and was configured before too (stopped at start-up: its port was taken),
    is left alone."""
    apps = {name: app for name, app in new.apps.items() if wanted is None or name in wanted}
    removed = tuple(name for name in running if name not in apps)
    starting: list[tuple[App, str | None]] = []
    for name, app in apps.items():
        before = old.apps.get(name)
        if name in running and before != app:
            # Only the env file's values differ: say which file, the reason the user will recognise.
            env_only = (before is not None and before.config == app.config and before.file_env != app.file_env)
            why = (f"{app.env_path.name if app.env_path else 'env file'} changed" if env_only
                   else f"changed in {new.file.name}")
            starting.append((app, why))
        elif name not in running and before is None:
            starting.append((app, None))
    return Plan(removed, tuple(starting))


def address(app: App) -> tuple[str, int]:
    return app.config.host, app.config.port


def warnings(app: App) -> list[tuple[str, str]]:
    """(text, level) of every risk the app's config takes, said when it starts."""
    cfg = app.config
    out = []
    if cfg.debug.enabled and cfg.debug.allow_remote and not is_loopback(cfg.host):
        out.append((f"WARNING: the debugger on {cfg.host}:{cfg.port} lets anyone who can reach it run code on "
                    "this machine (debug.allow_remote is on)", "warning"))
    if cfg.live and not is_loopback(cfg.host):
        out.append((f"WARNING: live reload on {cfg.host}:{cfg.port} is reachable from other machines "
                    "(allow_remote is on)", "warning"))
    if cfg.debug.enabled and not cfg.debug.pin:
        out.append(("debugger PIN is off: any local user can run code through the console", "warning"))
    return out
