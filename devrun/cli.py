"""Command-line parsing only: each command hands over to the module that owns it."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from devrun import __version__
from devrun.config import CONFIG_NAME, Config, ConfigError, find_config, load_config

EXIT_CONFIG = 2
EXIT_NOT_RUNNING = 3  # as `systemctl status` says of a unit that is not running


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


def cmd_up(args: argparse.Namespace) -> int:
    from devrun import daemon
    from devrun.plainlog import PlainLog
    from devrun.runner import View, run_apps

    config = _load(args.config)
    names = args.apps or list(config.apps)
    unknown = [n for n in names if n not in config.apps]
    if unknown:
        print(f"devrun: no app named {', '.join(unknown)} in {config.file}; "
              f"apps: {', '.join(config.apps)}", file=sys.stderr)
        return EXIT_CONFIG
    if args.detach:
        return _up_detached(config, args.apps)
    view: View
    if use_dashboard(args.no_dashboard):
        from devrun.dashboard import Dashboard

        view = Dashboard([(n, config.apps[n].url) for n in names])
    elif args.detached:  # requests and output are in the per-app logs: runner.log stays small
        from devrun import events

        view = PlainLog(names, skip=(events.Request, events.Output))
    else:
        view = PlainLog(names)
    try:
        code = run_apps(config, args.apps or None, [view])
    except daemon.AlreadyRunning as exc:
        print(f"devrun: {exc}", file=sys.stderr)
        return 1
    if not isinstance(view, PlainLog):
        print(f"devrun: stopped {', '.join(names)}")
    return code


def _up_detached(config: Config, apps: list[str]) -> int:
    from devrun import control, daemon

    pid = daemon.running_pid(config.file)
    if pid:
        print(f"devrun: {daemon.AlreadyRunning(pid, config.file)}", file=sys.stderr)
        return 1
    path = daemon.socket_path(config.file)

    def settled() -> tuple[bool, str]:
        status = control.request(path, "status", timeout=2)
        states = [a["state"] for a in status["apps"]]
        return bool(states) and not any(s in ("starting", "reloading") for s in states), ""

    pid, problem = daemon.detach(["up", "--no-dashboard", "--detached", "-c", str(config.file), *apps],
                                 config.file, settled)
    if problem:
        print(f"devrun: the runner (pid {pid}) did not come up:\n{problem}", file=sys.stderr)
        return 1
    # Exit 1 when an app is not up, though the runner stays: it picks up the fix by itself.
    status = control.request(path, "status")
    print(f"devrun: running in the background (pid {status['pid']}); "
          "`devrun status`, `devrun logs -f`, `devrun attach`, `devrun down`")
    failed = 0
    for app in status["apps"]:
        line = f"  {app['name']}: {app['state']} {app['url']}"
        if app["state"] != "ready":
            failed += 1
            line += f" ({app['error'] or 'see `devrun logs ' + app['name'] + '`'})"
        print(line)
    if failed:
        print("devrun: the runner keeps running and reloads on a fix; `devrun down` stops it")
    return 1 if failed else 0


def _runner(args: argparse.Namespace) -> tuple[Path, Path]:
    """(the config file, the control socket of its runner)."""
    from devrun import daemon

    file = _config_file(args.config)
    return file, daemon.socket_path(file)


def cmd_status(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from devrun import control

    file, path = _runner(args)
    try:
        status = control.request(path, "status")
    except control.NotRunning:
        if args.json:
            print(json.dumps({"running": False, "config": str(file), "apps": []}))
        else:
            print(f"devrun: not running for {file}; start it with `devrun up -d`")
        return EXIT_NOT_RUNNING
    if args.json:
        print(json.dumps({"running": True, **status}, indent=2))
        return 0
    console = Console(soft_wrap=True)
    table = Table(title=f"devrun pid {status['pid']}: {status['config']}", title_justify="left")
    for column in ("app", "state", "url", "pid", "up", "reloads", "pages", "last change / error"):
        table.add_column(column, overflow="fold", no_wrap=column in ("app", "url"))
    for app in status["apps"]:
        note = app["error"] or ", ".join(app["last_change"][:3])
        table.add_row(app["name"], app["state"], app["url"], str(app["pid"] or "-"), _ago(app["uptime"]),
                      str(app["reloads"]), "-" if app["pages"] is None else str(app["pages"]), note)
    console.print(table)
    if status.get("pin"):
        console.print(f"debugger PIN: {status['pin']}")
    for problem in status["config_problems"]:
        console.print(f"[red]config not applied:[/] {problem}", markup=True, highlight=False)
    return 0


def _ago(seconds: float | None) -> str:
    from devrun.dashboard import ago

    return "-" if seconds is None else ago(seconds)


def cmd_control(args: argparse.Namespace) -> int:
    """restart / stop / start: one verb for the named apps (none named: every app)."""
    from devrun import control

    _, path = _runner(args)
    try:
        result = control.request(path, args.command, timeout=15, apps=args.apps)
    except control.NotRunning as exc:
        print(f"devrun: {exc}", file=sys.stderr)
        return EXIT_NOT_RUNNING
    except control.ControlError as exc:
        print(f"devrun: {exc}", file=sys.stderr)
        return 1
    done = {"restart": "restarting", "stop": "stopped", "start": "starting"}[args.command]
    print(f"devrun: {done} {', '.join(result['apps'])}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    import time

    from devrun import control, daemon

    file, path = _runner(args)
    try:
        pid = control.request(path, "down")["pid"]
    except control.NotRunning:
        print(f"devrun: not running for {file}")
        return 0
    end = time.monotonic() + 60  # the longest graceful_timeout is 300 s; the runner kills before
    while daemon.running_pid(file) and time.monotonic() < end:
        time.sleep(0.05)
    if daemon.running_pid(file):
        print(f"devrun: the runner (pid {pid}) is still stopping its apps", file=sys.stderr)
        return 1
    print(f"devrun: stopped (pid {pid})")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    import queue
    import threading

    from devrun import applog, daemon

    file = _config_file(args.config)
    folder = daemon.state_dir(file) / daemon.LOG_DIR
    logged = applog.apps_with_logs(folder)
    apps = args.apps or logged
    if not apps:
        print(f"devrun: no app has logged anything yet in {folder}", file=sys.stderr)
        return 1
    unknown = [a for a in apps if a not in logged and not args.follow]
    if unknown:
        print(f"devrun: no logs for {', '.join(unknown)}; apps with logs: {', '.join(logged) or 'none'}",
              file=sys.stderr)
        return 1
    width = max(len(a) for a in apps)
    try:
        lines = [(line, app) for app in apps for line in applog.tail(folder, app, args.lines)]
    except ValueError as exc:  # a name that could not be a log file's (`../x`)
        print(f"devrun: {exc}", file=sys.stderr)
        return 1
    lines.sort(key=lambda item: item[0][:23])  # by the time each line starts with
    for line, app in lines[len(lines) - args.lines:] if args.lines > 0 else []:
        print(f"{app:<{width}} | {line}")
    if not args.follow:
        return 0
    sys.stdout.flush()
    stop = threading.Event()
    new: queue.Queue[tuple[str, str]] = queue.Queue()

    def follow(app: str) -> None:
        for line in applog.follow(folder, app, stop.is_set):
            new.put((app, line))

    for app in apps:
        threading.Thread(target=follow, args=(app,), daemon=True).start()
    try:
        while True:
            app, line = new.get()
            print(f"{app:<{width}} | {line}", flush=True)
    except KeyboardInterrupt:
        stop.set()
        return 0


def cmd_attach(args: argparse.Namespace) -> int:
    import threading

    from devrun import control, events

    _, path = _runner(args)
    stream = control.stream(path, "events")
    try:
        first = next(stream)
    except control.NotRunning as exc:
        print(f"devrun: {exc}", file=sys.stderr)
        return EXIT_NOT_RUNNING
    except StopIteration:
        return 1
    done = threading.Event()
    gone = threading.Event()  # the runner ended the stream: it stopped
    view = _attached_view(first, args.no_dashboard)

    def read() -> None:
        try:
            for data in stream:
                event = events.from_dict(data)
                if event is not None:
                    view.handle(event)
        except control.ControlError:
            pass
        gone.set()
        done.set()

    opening = events.from_dict(first)
    if opening is not None:
        view.handle(opening)
    threading.Thread(target=read, daemon=True).start()

    def post(item: object) -> None:
        """A key pressed in the attached dashboard: q leaves the runner running."""
        if isinstance(item, events.Command) and item.verb == "quit":
            done.set()
        elif isinstance(item, events.Command):
            apps = [item.app] if item.app else []
            threading.Thread(target=_quietly, args=(path, item.verb, apps), daemon=True).start()

    running = getattr(view, "running", None)
    try:
        if running is None:
            done.wait()
        else:
            with running(post):
                done.wait()
    except KeyboardInterrupt:
        pass
    if gone.is_set():
        print("devrun: the runner stopped")
    else:
        print("devrun: detached; the runner keeps running (`devrun down` stops it)")
    return 0


def _attached_view(first: dict[str, object], no_dashboard: bool) -> object:
    from devrun.plainlog import PlainLog

    names = [str(pair[0]) for pair in first.get("apps", [])]  # type: ignore[union-attr]
    if use_dashboard(no_dashboard):
        from devrun.dashboard import Dashboard

        return Dashboard([])
    return PlainLog(names)


def _quietly(path: Path, verb: str, apps: list[str]) -> None:
    import contextlib

    from devrun import control

    with contextlib.suppress(control.ControlError):  # the dashboard shows what happened, or that nothing did
        control.request(path, verb, timeout=15, apps=apps)


def use_dashboard(disabled: bool) -> bool:
    """The dashboard needs a real terminal; logs and CI get plain lines."""
    return not disabled and sys.stdout.isatty() and os.environ.get("TERM", "") not in ("", "dumb")


def cmd_check(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from devrun.scaffold import ensure_schema_file

    config = _load(args.config)
    ensure_schema_file(config.file.parent)
    table = Table(title=f"{config.file}: {len(config.apps)} app(s), no problems", title_justify="left")
    for column in ("app", "url", "cwd", "import", "watch", "debug"):
        table.add_column(column, overflow="fold")
    for app in config.apps.values():
        cfg = app.config
        debug = "off"
        if cfg.debug.enabled:
            debug = "on" + ("" if cfg.debug.evalex else ", no console") + ("" if cfg.debug.pin else ", no PIN")
        cwd = os.path.relpath(app.root, config.file.parent)
        table.add_row(app.name, app.url, cwd, cfg.app, " ".join(cfg.watch), debug)
    Console(soft_wrap=True).print(table)
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from devrun.config import json_schema

    print(json.dumps(json_schema(), indent=2))
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from devrun.scaffold import detect, ensure_schema_file, render

    folder = Path.cwd()
    target = folder / CONFIG_NAME
    if target.exists() and not args.force:
        print(f"devrun: {target} already exists; pass --force to overwrite it", file=sys.stderr)
        return 1
    found = detect(folder)
    target.write_text(render(found))
    ensure_schema_file(folder)
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
        return args.func(args)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        count = len(exc.problems)
        tail = "; nothing was started" if args.command == "up" else ""
        print(f"devrun: {count} problem{'s' if count != 1 else ''} in the config{tail}", file=sys.stderr)
        return EXIT_CONFIG
    except FileNotFoundError as exc:
        print(f"devrun: {exc}", file=sys.stderr)
        return EXIT_CONFIG
