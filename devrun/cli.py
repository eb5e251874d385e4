"""Command-line parsing only: each command hands over to the module that owns it."""

from __future__ import annotations

import argparse
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
    from devrun.runner import run_apps

    config = _load(args.config)
    names = args.apps or list(config.apps)
    unknown = [n for n in names if n not in config.apps]
    if unknown:
        print(f"devrun: no app named {', '.join(unknown)} in {config.file}; "
              f"apps: {', '.join(config.apps)}", file=sys.stderr)
        return EXIT_CONFIG
    # The rich dashboard is not written yet: every terminal gets the plain lines.
    view = PlainLog(names)
    return run_apps(config, names, [view])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="devrun", description="Run and reload Python WSGI apps for development.")
    parser.add_argument("--version", action="version", version=f"devrun {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="serve the apps of devrun.yaml and reload them on change")
    up.add_argument("apps", nargs="*", metavar="APP", help="apps to start (default: all)")
    up.add_argument("-c", "--config", metavar="PATH", help=f"config file (default: {CONFIG_NAME} here or above)")
    up.add_argument("--no-dashboard", action="store_true", help="print plain log lines")
    up.set_defaults(func=cmd_up)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG
    except FileNotFoundError as exc:
        print(f"devrun: {exc}", file=sys.stderr)
        return EXIT_CONFIG
