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


def _load(path: str | None) -> Config:
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
    return load_config(file)


def cmd_up(args: argparse.Namespace) -> int:
    from devrun.plainlog import PlainLog
    from devrun.runner import View, run_apps

    config = _load(args.config)
    names = args.apps or list(config.apps)
    unknown = [n for n in names if n not in config.apps]
    if unknown:
        print(f"devrun: no app named {', '.join(unknown)} in {config.file}; "
              f"apps: {', '.join(config.apps)}", file=sys.stderr)
        return EXIT_CONFIG
    view: View
    if use_dashboard(args.no_dashboard):
        from devrun.dashboard import Dashboard

        view = Dashboard([(n, config.apps[n].url) for n in names])
    else:
        view = PlainLog(names)
    code = run_apps(config, names, [view])
    if not isinstance(view, PlainLog):
        print(f"devrun: stopped {', '.join(names)}")
    return code


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
    up.set_defaults(func=cmd_up)

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
        print(f"devrun: {count} problem{'s' if count != 1 else ''} in the config; nothing was started",
              file=sys.stderr)
        return EXIT_CONFIG
    except FileNotFoundError as exc:
        print(f"devrun: {exc}", file=sys.stderr)
        return EXIT_CONFIG
