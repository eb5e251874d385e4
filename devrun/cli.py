"""Command-line parsing only: each command hands over to the module that owns it."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devrun import __version__
from devrun.config import CONFIG_NAME, Config, ConfigError, find_config, load_config
from devrun.control import client
from devrun.control.protocol import AlreadyRunning, ControlError, NotRunning

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

    from devrun.views.dashboard import Dashboard
    from devrun.views.plainlog import PlainLog

EXIT_CONFIG = 2
EXIT_NOT_RUNNING = 3  # as `systemctl status` says of a unit that is not running
EXIT_OUTPUT_CLOSED = 141  # what a shell reports for a tool killed by SIGPIPE (`devrun status | head -1`)
EXIT_INTERRUPTED = 130


def _load(path: str | None) -> Config:
    return load_config(_config_file(path))


def _config_file(path: str | None) -> Path:
    """The config file named or found, not read: a runner is found by it even while an edit
    of it is invalid."""
    if path:
        file = Path(path)
    else:
        found = find_config()
        if found is None:
            raise FileNotFoundError(
                f"no {CONFIG_NAME} in {Path.cwd()} or its parents; create one "
                f"(see devrun.yaml.example) or pass -c PATH"
            )
        file = found
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no such file")
    return file


def _text(value: object) -> Text:
    """A table cell or line that rich shows as it is: app errors, paths and names may hold
    `[/etc/app.conf]`, which rich would otherwise read as markup (and die on, or style)."""
    from rich.text import Text

    return Text("" if value is None else str(value))


def _console() -> Console:
    from rich.console import Console

    class Quiet(Console):
        def on_broken_pipe(self) -> None:
            # Rich's own answer is SystemExit(1); main() ends every command alike (exit 141).
            raise BrokenPipeError

    return Quiet(soft_wrap=True)


def cmd_up(args: argparse.Namespace) -> int:
    from devrun.control import daemon
    from devrun.runner.loop import run_apps
    from devrun.views.plainlog import PlainLog

    config = _load(args.config)
    names = args.apps or list(config.apps)
    unknown = [n for n in names if n not in config.apps]
    if unknown:
        print(f"devrun: no app named {', '.join(unknown)} in {config.file}; "
              f"apps: {', '.join(config.apps)}", file=sys.stderr)
        return EXIT_CONFIG
    if args.detach:
        return daemon.up_detached(config.file, args.apps)
    view = _runner_view(config, names, args)
    try:
        code = run_apps(config, args.apps or None, [view])
    except AlreadyRunning as exc:
        print(f"devrun: {exc}", file=sys.stderr)
        return 1
    if not isinstance(view, PlainLog):
        print(f"devrun: stopped {', '.join(names)}")
    return code


def _runner_view(config: Config, names: list[str], args: argparse.Namespace) -> Dashboard | PlainLog:
    """The view of a runner in this process: the dashboard on a terminal, else plain lines."""
    from devrun.views.plainlog import PlainLog

    if use_dashboard(args.no_dashboard):
        from devrun.views.dashboard import Dashboard

        return Dashboard([(n, config.apps[n].url) for n in names])
    if args.detached:  # requests and output are in the per-app logs: runner.log stays small
        from devrun import events

        return PlainLog(names, skip=(events.Requests, events.Output))
    return PlainLog(names)


def _config_and_socket(args: argparse.Namespace) -> tuple[Path, Path]:
    """(the config file, the control socket of its runner)."""
    from devrun.control import daemon

    file = _config_file(args.config)
    return file, daemon.socket_path(file)


def cmd_status(args: argparse.Namespace) -> int:
    file, path = _config_and_socket(args)
    try:
        status = client.ask(path, "status")
        if not isinstance(status, dict):
            raise ControlError(f"the runner's status is not a JSON object but {type(status).__name__}")
    except NotRunning:
        if args.json:
            print(json.dumps({"running": False, "config": str(file), "apps": []}))
        else:
            print(f"devrun: not running for {file}; start it with `devrun up -d`")
        return EXIT_NOT_RUNNING
    except ControlError as exc:  # busy, no reply in time, a reply that is not ours
        if args.json:
            print(json.dumps({"running": None, "config": str(file), "error": str(exc), "apps": []}))
        print(f"devrun: could not get the status of the runner for {file}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"running": True, **status}, indent=2))
        return 0
    return _show_status(status)


def _show_status(status: dict[str, Any]) -> int:
    try:
        _print_status(status)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        print(f"devrun: the runner's status is not what this devrun expects ({type(exc).__name__}: {exc}); "
              "a runner of another version? `devrun down` and `devrun up -d` restart it", file=sys.stderr)
        return 1
    return 0


def _print_status(status: dict[str, Any]) -> None:
    from rich.table import Table
    from rich.text import Text

    console = _console()
    table = Table(title=_text(f"devrun pid {status['pid']}: {status['config']}"), title_justify="left")
    for column in ("app", "state", "url", "pid", "up", "reloads", "pages", "last change / error"):
        table.add_column(column, overflow="fold", no_wrap=column in ("app", "url"))
    for app in status["apps"]:
        note = app["error"] or ", ".join(map(str, app["last_change"][:3]))
        cells = (app["name"], app["state"], app["url"], app["pid"] or "-", _ago(app["uptime"]), app["reloads"],
                 "-" if app["pages"] is None else app["pages"], note)
        table.add_row(*map(_text, cells))
    console.print(table)
    if status.get("pin"):
        console.print(_text(f"debugger PIN: {status['pin']}"))
    for problem in status["config_problems"]:
        console.print(Text.assemble(("config not applied:", "red"), " ", str(problem)))


def _ago(seconds: float | None) -> str:
    from devrun.views.dashboard import ago

    return "-" if seconds is None else ago(seconds)


def cmd_control(args: argparse.Namespace) -> int:
    """restart / stop / start: one verb for the named apps (none named: every app)."""
    _, path = _config_and_socket(args)
    try:
        result = client.ask(path, args.command, timeout=15, apps=args.apps)
    except NotRunning as exc:
        print(f"devrun: {exc}", file=sys.stderr)
        return EXIT_NOT_RUNNING
    except ControlError as exc:
        print(f"devrun: {exc}", file=sys.stderr)
        return 1
    done = {"restart": "restarting", "stop": "stopped", "start": "starting"}[args.command]
    apps = result.get("apps") if isinstance(result, dict) else None
    print(f"devrun: {done} {', '.join(map(str, apps or args.apps or ['every app']))}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from devrun.control import daemon

    file, path = _config_and_socket(args)
    try:
        reply = client.ask(path, "down")
    except NotRunning:
        print(f"devrun: not running for {file}")
        return 0
    except ControlError as exc:
        print(f"devrun: could not ask the runner for {file} to stop: {exc}", file=sys.stderr)
        return 1
    pid = reply.get("pid") if isinstance(reply, dict) else None
    if not daemon.wait_stopped(file, 60):  # the longest graceful_timeout is 300 s; the runner kills before
        print(f"devrun: the runner (pid {pid}) is still stopping its apps", file=sys.stderr)
        return 1
    print(f"devrun: stopped (pid {pid})")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from devrun import statefiles
    from devrun.control import daemon, logfiles

    file = _config_file(args.config)
    folder = statefiles.private_dir(daemon.state_dir(file) / daemon.LOG_DIR)  # a symlinked logs/ is refused
    return logfiles.show(folder, args.apps, args.lines, args.follow)


def cmd_attach(args: argparse.Namespace) -> int:
    from devrun.control.attach import attach

    _, path = _config_and_socket(args)
    if attach(path, lambda first: _attached_view(first, args.no_dashboard)):
        print("devrun: the runner stopped")
    else:
        print("devrun: detached; the runner keeps running (`devrun down` stops it)")
    return 0


def _attached_view(first: dict[str, Any], no_dashboard: bool) -> Dashboard | PlainLog:
    if use_dashboard(no_dashboard):
        from devrun.views.dashboard import Dashboard

        return Dashboard([])  # the opening event, handled next, names the apps
    from devrun.views.plainlog import PlainLog

    names = [str(pair[0]) for pair in first.get("apps", [])]
    return PlainLog(names)


def use_dashboard(disabled: bool) -> bool:
    """The dashboard needs a real terminal; logs and CI get plain lines."""
    return not disabled and sys.stdout.isatty() and os.environ.get("TERM", "") not in ("", "dumb")


def cmd_check(args: argparse.Namespace) -> int:
    from rich.table import Table

    from devrun.config.scaffold import ensure_schema_file
    from devrun.statefiles import UnsafeState

    config = _load(args.config)
    try:
        ensure_schema_file(config.file.parent)
    except UnsafeState as exc:  # the config is fine: say why editors get no schema, and go on
        print(f"devrun: warning: {exc}", file=sys.stderr)
    table = Table(title=_text(f"{config.file}: {len(config.apps)} app(s), no problems"), title_justify="left")
    for column in ("app", "url", "cwd", "import", "watch", "debug"):
        table.add_column(column, overflow="fold")
    for app in config.apps.values():
        cfg = app.config
        debug = "off"
        if cfg.debug.enabled:
            debug = "on" + ("" if cfg.debug.evalex else ", no console") + ("" if cfg.debug.pin else ", no PIN")
        cwd = os.path.relpath(app.root, config.file.parent)
        table.add_row(*map(_text, (app.name, app.url, cwd, cfg.app, " ".join(cfg.watch), debug)))
    _console().print(table)
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from devrun.config import json_schema

    print(json.dumps(json_schema(), indent=2))
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from devrun.config.scaffold import detect, ensure_schema_file, render
    from devrun.statefiles import UnsafeState

    folder = Path.cwd()
    target = folder / CONFIG_NAME
    if target.exists() and not args.force:
        print(f"devrun: {target} already exists; pass --force to overwrite it", file=sys.stderr)
        return 1
    found = detect(folder)
    target.write_text(render(found))
    try:
        ensure_schema_file(folder)
    except UnsafeState as exc:
        print(f"devrun: warning: {exc}", file=sys.stderr)
    if found:
        for item in found:
            where = "" if item.cwd == "." else f" in {item.cwd}"
            print(f"found {item.kind}: {item.app}{where} -> app `{item.name}`")
    else:
        print("no app found here; edit the `app:` line of the file written")
    print(f"wrote {target}; check it with `devrun check`, run it with `devrun up`")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="devrun", description="Run and reload Python WSGI apps for development.")
    parser.add_argument("--version", action="version", version=f"devrun {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="serve the apps of devrun.yaml and reload them on change")
    up.add_argument("apps", nargs="*", metavar="APP", help="apps to start (default: all)")
    up.add_argument("-c", "--config", metavar="PATH", help=f"config file (default: {CONFIG_NAME} here or above)")
    up.add_argument("--no-dashboard", action="store_true", help="print plain log lines")
    up.add_argument("-d", "--detach", action="store_true",
                    help="run in the background; returns once the apps are up (or says which failed)")
    up.add_argument("--detached", action="store_true", help=argparse.SUPPRESS)  # the child of `up -d`
    up.set_defaults(func=cmd_up)

    config_help = f"config file (default: {CONFIG_NAME} here or above)"
    status = sub.add_parser("status", help="what the running devrun is doing, per app")
    status.add_argument("-c", "--config", metavar="PATH", help=config_help)
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=cmd_status)

    logs = sub.add_parser("logs", help="recent output and request lines of the apps")
    logs.add_argument("apps", nargs="*", metavar="APP", help="apps to show (default: all)")
    logs.add_argument("-c", "--config", metavar="PATH", help=config_help)
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    logs.add_argument("-n", "--lines", type=int, default=40, metavar="N", help="how many lines (default 40)")
    logs.set_defaults(func=cmd_logs)

    for verb, text in (("restart", "restart apps (default: all)"), ("stop", "stop apps (default: all)"),
                       ("start", "start stopped apps (default: all)")):
        p = sub.add_parser(verb, help=text)
        p.add_argument("apps", nargs="*", metavar="APP")
        p.add_argument("-c", "--config", metavar="PATH", help=config_help)
        p.set_defaults(func=cmd_control)

    down = sub.add_parser("down", help="stop the running devrun and every app")
    down.add_argument("-c", "--config", metavar="PATH", help=config_help)
    down.set_defaults(func=cmd_down)

    attach = sub.add_parser("attach", help="the dashboard of the running devrun (q leaves it running)")
    attach.add_argument("-c", "--config", metavar="PATH", help=config_help)
    attach.add_argument("--no-dashboard", action="store_true", help="print plain log lines")
    attach.set_defaults(func=cmd_attach)

    check = sub.add_parser("check", help="validate devrun.yaml and list its apps")
    check.add_argument("-c", "--config", metavar="PATH", help=f"config file (default: {CONFIG_NAME} here or above)")
    check.set_defaults(func=cmd_check)

    init = sub.add_parser("init", help=f"write a {CONFIG_NAME} for the apps found in this folder")
    init.add_argument("--force", action="store_true", help=f"overwrite an existing {CONFIG_NAME}")
    init.set_defaults(func=cmd_init)

    schema = sub.add_parser("schema", help=f"print the JSON Schema of {CONFIG_NAME}")
    schema.set_defaults(func=cmd_schema)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
        sys.stdout.flush()  # here, not at exit, so that a closed output is handled below
        return code
    except ConfigError as exc:
        _say(str(exc))
        count = len(exc.problems)
        tail = "; nothing was started" if args.command == "up" else ""
        _say(f"devrun: {count} problem{'s' if count != 1 else ''} in the config{tail}")
        return EXIT_CONFIG
    except BrokenPipeError:
        # The reader of our output left (`devrun status | head -1`): nothing to tell it.
        _drop_stdout()
        return EXIT_OUTPUT_CLOSED
    except FileNotFoundError as exc:
        _say(f"devrun: {_describe(exc)}")
        return EXIT_CONFIG
    except OSError as exc:  # a refused .devrun/, a full disk, an unwritable terminal
        _say(f"devrun: {_describe(exc)}")
        return 1
    except NotRunning as exc:
        _say(f"devrun: {exc}")
        return EXIT_NOT_RUNNING
    except ControlError as exc:  # anything else (a bug of devrun's own) keeps its traceback
        _say(f"devrun: {exc}")
        return 1
    except KeyboardInterrupt:
        _say("devrun: interrupted")
        return EXIT_INTERRUPTED


def _describe(exc: OSError) -> str:
    if exc.strerror is None or type(exc).__str__ is not OSError.__str__:
        return str(exc)  # a sentence of devrun's own
    return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror


def _say(text: str) -> None:
    """One line on stderr; if even that fails, there is no one left to tell."""
    with contextlib.suppress(OSError):
        print(text, file=sys.stderr, flush=True)
    # Output still buffered for a stdout that failed would fail again at exit, with a traceback-like
    # "Exception ignored" message: try it now, and drop it if it cannot be written.
    try:
        sys.stdout.flush()
    except OSError:
        _drop_stdout()


def _drop_stdout() -> None:
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
