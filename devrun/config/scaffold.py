"""`devrun init`: find the likely apps of a folder and write a commented devrun.yaml for them."""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

from devrun import statefiles
from devrun.config.build import json_schema
from devrun.watch.patterns import Matcher

SCHEMA_HINT = "# yaml-language-server: $schema=.devrun/devrun.schema.json"
MAX_DEPTH = 4
MAX_BYTES = 256 * 1024
DJANGO = "a Django project"  # the kind of a Django project's entry

_FACTORY = re.compile(r"^def (create_app|make_app)\s*\(", re.M)
_FLASK = re.compile(r"^([A-Za-z_]\w*)\s*(?::[^=]+)?=\s*(?:flask\.)?Flask\(", re.M)
_WSGI = re.compile(r"^(?:(app|application)\s*(?::[^=]+)?=|def (app|application)\s*\()", re.M)
_SKIP = re.compile(r"^(test_.*|.*_test|conftest|setup|manage|__main__)\.py$")
_SETTINGS = re.compile(
    r"""os\.environ\.setdefault\(\s*['"]DJANGO_SETTINGS_MODULE['"]\s*,\s*['"]([A-Za-z_][\w.]*)['"]""")

# Inside a Django project (a folder holding manage.py) these are Django's own modules, never an
# app of their own: `urls.py` with `app_name`, a models.py that names something `app`...
_DJANGO_MODULES = frozenset({"settings", "urls", "apps", "admin", "models", "tests"})
_DJANGO_FOLDERS = frozenset({"migrations", "settings", "management", "templatetags"})

# What makes an ASGI app (or one that only an async server runs): a module-level `app` or
# `application` built by one of these, or a factory that builds one, is no WSGI app, whatever
# its name says. Dotted prefixes of what the module imports (`falcon.App` is WSGI, `falcon.asgi`
# is not; `socketio.WSGIApp` is WSGI, `socketio.ASGIApp` is not).
_ASGI_MAKERS = (
    "fastapi", "starlette", "quart", "sanic", "litestar", "starlite", "blacksheep", "channels",
    "django.core.asgi", "falcon.asgi", "asgiref.wsgi", "socketio.ASGIApp", "engineio.ASGIApp",
    "a2wsgi.WSGIMiddleware", "aiohttp", "tornado",
)
# Only for a file that does not parse: its imports are all we can go by.
_ASGI_IMPORT = re.compile(
    r"^\s*(?:from|import)\s+(?:fastapi|starlette|quart|sanic|litestar|django\.core\.asgi)\b"
    r"|get_asgi_application", re.M)


@dataclass(frozen=True)
class Found:
    name: str
    app: str  # import string
    cwd: str  # relative to the folder of devrun.yaml, "." for itself
    kind: str  # what made us think so, for the comment
    env: tuple[tuple[str, str], ...] = ()
    watch: tuple[str, ...] = ("**/*.py",)
    notes: tuple[str, ...] = ()  # comment lines written above `watch:`


def detect(folder: Path) -> list[Found]:
    folder = folder.resolve()
    matcher = Matcher(folder, ["**/*.py"])
    found: list[Found] = []
    names: set[str] = set()
    for path, django_root in _python_files(folder, matcher):
        if django_root is not None and _django_internal(path, django_root):
            continue
        guess = _guess(path)
        if guess is None:
            continue
        attr, kind = guess
        cwd, module = _module_of(path)
        name = _unique(module.split(".")[-2] if module.endswith((".wsgi", ".app")) and "." in module
                       else module.split(".")[-1], names)
        rel = os.path.relpath(cwd, folder).replace(os.sep, "/")
        if kind == DJANGO:
            found.append(_django_entry(name, f"{module}:{attr}", rel, path, django_root))
        else:
            found.append(Found(name, f"{module}:{attr}", rel, kind))
    return found


def _python_files(folder: Path, matcher: Matcher) -> list[tuple[Path, Path | None]]:
    """Candidate files, each with the Django project (the folder holding manage.py) it is in."""
    out: list[tuple[Path, Path | None]] = []
    django: dict[str, Path | None] = {}
    for top, dirs, files in os.walk(folder):
        depth = len(Path(top).relative_to(folder).parts)
        dirs[:] = sorted(d for d in dirs if depth < MAX_DEPTH and d not in ("tests", "test", "docs")
                         and not matcher.is_ignored_dir(os.path.join(top, d)))
        # os.walk goes top-down: a folder's parent has been seen, and with it its project.
        root = Path(top) if "manage.py" in files else django.get(os.path.dirname(top))
        django[top] = root
        out.extend((Path(top, f), root) for f in sorted(files) if f.endswith(".py") and not _SKIP.match(f))
    return out


def _django_internal(path: Path, root: Path) -> bool:
    folders = path.parent.relative_to(root).parts
    return path.stem in _DJANGO_MODULES or any(part in _DJANGO_FOLDERS for part in folders)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[:MAX_BYTES]
    except OSError:
        return ""


def _guess(path: Path) -> tuple[str, str] | None:
    text = _read(path)
    if path.name == "wsgi.py" and "get_wsgi_application" in text:
        return "application", DJANGO
    if path.name == "asgi.py" or _is_asgi(text):
        return None  # devrun serves WSGI: an ASGI entry would answer 500 to every request
    if m := _FACTORY.search(text):
        return f"{m.group(1)}()", "an app factory"
    if m := _FLASK.search(text):
        return m.group(1), "a Flask app"
    if m := _WSGI.search(text):
        return m.group(1) or m.group(2), "a WSGI callable"
    return None


def _django_entry(name: str, app: str, cwd: str, wsgi: Path, root: Path | None) -> Found:
    """The project's wsgi.py with the settings that manage.py names (what `runserver` uses)."""
    # wsgi.py names the settings too (the same setdefault): the fallback when manage.py does not.
    sources = [root / "manage.py"] if root is not None else []
    settings = next((m.group(1) for source in [*sources, wsgi] if (m := _SETTINGS.search(_read(source)))), None)
    notes = (
        "# Django: static files are served as runserver serves them (DEBUG on, staticfiles",
        "# installed); an edited template or stylesheet is served fresh, without a restart.",
        "# db.sqlite3 and uploads match no watch glob: the app's own writes never reload it.",
    )
    env = (("DJANGO_SETTINGS_MODULE", settings),) if settings else ()
    return Found(name, app, cwd, DJANGO, env, notes=notes)


def _is_asgi(text: str) -> bool:
    """Does this module's `app`/`application` (or its factory) come from an ASGI framework?"""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return bool(_ASGI_IMPORT.search(text))
    imported = _imports(tree)
    for node in tree.body:
        if isinstance(node, ast.AsyncFunctionDef) and node.name in ("app", "application"):
            return True  # `async def app(scope, receive, send)`
        if isinstance(node, ast.FunctionDef) and _FACTORY.match(f"def {node.name}("):
            # What the factory builds, whatever it wraps it in; its own imports count too.
            local = {**imported, **_imports(node)}
            if any(isinstance(call, ast.Call) and _is_asgi_maker(call.func, local) for call in ast.walk(node)):
                return True
        # Only the outermost call: `app = CORSMiddleware(FastAPI())` is ASGI (starlette's
        # middleware), `app = ASGIMiddleware(FastAPI())` (a2wsgi) is WSGI again.
        value = _app_value(node)
        if isinstance(value, ast.Call) and _is_asgi_maker(value.func, imported):
            return True
    return False


def _app_value(node: ast.stmt) -> ast.expr | None:
    """What `app = ...` / `application: T = ...` assigns, or None for any other statement."""
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, ast.AnnAssign):
        targets = [node.target]
    else:
        return None
    named = any(isinstance(t, ast.Name) and t.id in ("app", "application") for t in targets)
    return node.value if named else None


def _imports(tree: ast.AST) -> dict[str, str]:
    """Local name -> the dotted name it stands for, from the absolute imports directly in tree."""
    names: dict[str, str] = {}
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                # `import falcon.asgi` binds `falcon`; `import falcon.asgi as fa` binds the submodule.
                if alias.asname:
                    names[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    names[top] = top
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def _is_asgi_maker(func: ast.expr, imported: dict[str, str]) -> bool:
    """Is the called `func` (`FastAPI`, `falcon.asgi.App`) imported from an ASGI framework?"""
    parts: list[str] = []
    while isinstance(func, ast.Attribute):
        parts.insert(0, func.attr)
        func = func.value
    if not isinstance(func, ast.Name) or func.id not in imported:
        return False  # defined here, a builtin, or not a plain name: nothing says it is ASGI
    full = ".".join([imported[func.id], *parts])
    return any(full == maker or full.startswith(maker + ".") for maker in _ASGI_MAKERS)


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
        "    enabled: true             # Werkzeug debugger + live reload (loopback only)",
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
        if item.env:
            lines.append("    env: {" + ", ".join(f'{key}: "{value}"' for key, value in item.env) + "}")
        lines += [f"    {note}" for note in item.notes]
        lines += ["    watch: [" + ", ".join(f'"{glob}"' for glob in item.watch) + "]", "    ignore: []", ""]
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
