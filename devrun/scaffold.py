"""`devrun init`: find the likely apps of a folder and write a commented devrun.yaml for them."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

from devrun import statefiles
from devrun.config import json_schema
from devrun.patterns import Matcher

SCHEMA_HINT = "# yaml-language-server: $schema=.devrun/devrun.schema.json"
MAX_DEPTH = 4
MAX_BYTES = 256 * 1024

_FACTORY = re.compile(r"^def (create_app|make_app)\s*\(", re.M)
_FLASK = re.compile(r"^([A-Za-z_]\w*)\s*(?::[^=]+)?=\s*(?:flask\.)?Flask\(", re.M)
_WSGI = re.compile(r"^(?:(app|application)\s*(?::[^=]+)?=|def (app|application)\s*\()", re.M)
_SKIP = re.compile(r"^(test_.*|.*_test|conftest|setup|manage|__main__)\.py$")


@dataclass(frozen=True)
class Found:
    name: str
    app: str  # import string
    cwd: str  # relative to the folder of devrun.yaml, "." for itself
    kind: str  # what made us think so, for the comment


def detect(folder: Path) -> list[Found]:
    folder = folder.resolve()
    matcher = Matcher(folder, ["**/*.py"])
    found: list[Found] = []
    names: set[str] = set()
    for path in _python_files(folder, matcher):
        guess = _guess(path)
        if guess is None:
            continue
        attr, kind = guess
        cwd, module = _module_of(path)
        name = _unique(module.split(".")[-2] if module.endswith((".wsgi", ".app")) and "." in module
                       else module.split(".")[-1], names)
        rel = os.path.relpath(cwd, folder)
        found.append(Found(name, f"{module}:{attr}", rel.replace(os.sep, "/"), kind))
    return found


def _python_files(folder: Path, matcher: Matcher) -> list[Path]:
    out = []
    for top, dirs, files in os.walk(folder):
        depth = len(Path(top).relative_to(folder).parts)
        dirs[:] = sorted(d for d in dirs if depth < MAX_DEPTH and d not in ("tests", "test", "docs")
                         and not matcher.is_ignored_dir(os.path.join(top, d)))
        out.extend(Path(top, f) for f in sorted(files) if f.endswith(".py") and not _SKIP.match(f))
    return out


def _guess(path: Path) -> tuple[str, str] | None:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")[:MAX_BYTES]
    except OSError:
        return None
    if path.name == "wsgi.py" and "get_wsgi_application" in text:
        return "application", "Django wsgi.py"
    if m := _FACTORY.search(text):
        return f"{m.group(1)}()", "an app factory"
    if m := _FLASK.search(text):
        return m.group(1), "a Flask app"
    if m := _WSGI.search(text):
        return m.group(1) or m.group(2), "a WSGI callable"
    return None


def _module_of(path: Path) -> tuple[Path, str]:
    """The folder to import from and the dotted module name, climbing out of packages."""
    parts = [] if path.name == "__init__.py" else [path.stem]
    folder = path.parent
    while (folder / "__init__.py").exists() and folder.parent != folder:
        parts.insert(0, folder.name)
        folder = folder.parent
    return folder, ".".join(parts)


def _unique(name: str, taken: set[str]) -> str:
    # An app name must be a file name too (statefiles.NAME_RULE): `_admin` -> `admin`, `café` -> `caf_`.
    name = re.sub(r"[^A-Za-z0-9_-]", "_", name).lstrip("_-")[:60] or "app"
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}{n}", n + 1
    taken.add(candidate)
    return candidate


def free_ports(count: int, start: int = 5000) -> list[int]:
    ports: list[int] = []
    port = start
    while len(ports) < count and port < 65535:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                ports.append(port)
            except OSError:
                pass
        port += 1
    return ports


def render(found: list[Found]) -> str:
    lines = [
        SCHEMA_HINT,
        "# devrun.yaml: the apps `devrun up` serves and reloads. Every key: docs/configuration.md",
        "# (or `devrun schema`). Paths are relative to this file; globs to each app's cwd.",
        "",
        "defaults:",
        "  reload_delay: 0.03          # seconds of quiet that end a burst of changes",
        "  debug:",
        "    enabled: true             # Werkzeug debugger + template auto-reload (loopback only)",
        "",
        "apps:",
    ]
    if not found:
        lines += [
            "  # No app found here: point `app` at your WSGI object (module:attr) or factory",
            "  # (module:create_app()).",
            "  web:",
            '    app: "app:app"',
            f"    port: {free_ports(1)[0]}",
        ]
    for item, port in zip(found, free_ports(len(found)), strict=True):
        lines += [f"  {item.name}:  # {item.kind}"]
        lines += [f'    app: "{item.app}"', f"    port: {port}"]
        if item.cwd != ".":
            lines.append(f"    cwd: {item.cwd}")
        lines += ['    watch: ["**/*.py"]', "    ignore: []", ""]
    return "\n".join(lines).rstrip() + "\n"


def ensure_schema_file(config_dir: Path) -> Path | None:
    """Keep .devrun/devrun.schema.json (what the modeline of devrun.yaml points editors at)
    matching this devrun's models. Best effort: a read-only folder only loses completion.

    A `.devrun/` that devrun refuses (a symlink, another user's) raises UnsafeState, which the
    caller reports; a symlink at the schema file is replaced, its target never written."""
    data = (json.dumps(json_schema(), indent=2) + "\n").encode()
    try:
        target = statefiles.state_dir(config_dir) / "devrun.schema.json"
        with contextlib.suppress(OSError):
            if statefiles.read_private(target, len(data) + 1) == data:
                return target
        statefiles.write_private_atomic(target, data)
    except statefiles.UnsafeState:
        raise
    except OSError:
        return None
    return target
