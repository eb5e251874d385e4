"""The import directions between devrun's packages, read from the source with `ast`.

Every import counts: module-level, inside functions (the lazy ones cli.py uses to start fast) and
under `if TYPE_CHECKING:`, which mypy follows and which would tie the layers together just the
same. A rule names the files it governs and what they may (or may not) import from devrun; a
failure lists every offending file:line with the import as written.
"""

from __future__ import annotations

import ast
import functools
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "devrun"

# The modules a worker shares with the runner. The worker imports them before gevent's
# monkey-patching, so they are stdlib-only and import no other devrun module but each other.
WORKER_SHARED = ("devrun.wire", "devrun.importspec", "devrun.loopback")
LEAVES = ("devrun.wire", "devrun.events", "devrun.importspec", "devrun.loopback")


@dataclass(frozen=True)
class Import:
    path: Path
    line: int
    written: str  # the statement as written, e.g. "from devrun.worker import livereload"
    target: str  # the module it loads: devrun.worker.livereload
    type_checking: bool  # under `if TYPE_CHECKING:`: never run, but mypy still follows it


def module_name(root: Path, path: Path) -> str:
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(root: Path, name: str) -> bool:
    """Whether devrun.a.b names a module or package in the tree (and not, say, a function)."""
    rel = Path(*name.split(".")[1:])
    return (root / rel).with_suffix(".py").is_file() or (root / rel / "__init__.py").is_file()


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(tree: ast.AST) -> Iterator[tuple[ast.AST, bool]]:
    """Every node, and whether it sits under `if TYPE_CHECKING:` (its else branch does not)."""
    stack: list[tuple[ast.AST, bool]] = [(tree, False)]
    while stack:
        node, guarded = stack.pop()
        yield node, guarded
        if isinstance(node, ast.If) and _type_checking(node.test):
            stack.extend((sub, True) for sub in node.body)
            stack.extend((sub, guarded) for sub in node.orelse)
        else:
            stack.extend((child, guarded) for child in ast.iter_child_nodes(node))


def imports(root: Path, path: Path) -> Iterator[Import]:
    """Every import in one file, each `from X import a, b` resolved to the modules it loads."""
    here = module_name(root, path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    for node, guarded in _walk(ast.parse(path.read_text(), str(path))):
        written = ast.unparse(node) if isinstance(node, (ast.Import, ast.ImportFrom)) else ""
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(path, node.lineno, written, alias.name, guarded)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .x import y, from .. import z
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                target = sub if base.split(".")[0] == root.name and is_module(root, sub) else base
                yield Import(path, node.lineno, written, target, guarded)


def all_imports(root: Path) -> list[tuple[str, Import]]:
    return [(module_name(root, p), imp) for p in sorted(root.rglob("*.py")) for imp in imports(root, p)]


def within(name: str, *packages: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


@dataclass(frozen=True)
class Rule:
    name: str
    governs: Callable[[str], bool]  # the importing module
    refuses: Callable[[Import], bool]  # an import it may not make


def from_devrun(imp: Import) -> bool:
    # The root package is import-free by design (devrun/__init__.py) and loads with every devrun
    # module anyway: importing it, or its __version__, ties no layers together.
    return within(imp.target, "devrun") and imp.target != "devrun"


RULES = [
    Rule("a: devrun/worker/ imports from devrun only devrun.worker.* and the shared stdlib-only modules",
         lambda m: within(m, "devrun.worker"),
         lambda i: from_devrun(i) and not within(i.target, "devrun.worker", *WORKER_SHARED)),
    Rule("b: nothing outside devrun/worker/ imports devrun.worker",
         lambda m: not within(m, "devrun.worker"),
         lambda i: within(i.target, "devrun.worker")),
    Rule("c: devrun/config/ and devrun/watch/ import no runner, views, control, worker or cli",
         lambda m: within(m, "devrun.config", "devrun.watch"),
         lambda i: within(i.target, "devrun.runner", "devrun.views", "devrun.control", "devrun.worker",
                          "devrun.cli")),
    Rule("d: devrun/views/ imports only devrun.events, devrun.statefiles and devrun.views.*",
         lambda m: within(m, "devrun.views"),
         lambda i: from_devrun(i) and not within(i.target, "devrun.events", "devrun.statefiles", "devrun.views")),
    Rule("e: devrun/runner/ imports neither devrun.cli nor devrun.worker",
         lambda m: within(m, "devrun.runner"),
         lambda i: within(i.target, "devrun.cli", "devrun.worker")),
    Rule("e: devrun/control/ imports nothing of the runner's processes (supervisor, generation, forking)",
         lambda m: within(m, "devrun.control"),
         lambda i: within(i.target, "devrun.runner.supervisor", "devrun.runner.generation",
                          "devrun.runner.forking")),
    Rule("f: devrun.wire, events, importspec and loopback import from devrun only each other",
         lambda m: m in LEAVES,
         lambda i: from_devrun(i) and i.target not in LEAVES),
    Rule("g: the modules the worker shares (wire, importspec, loopback) import only the standard library",
         lambda m: m in WORKER_SHARED,
         # Under TYPE_CHECKING an import never runs in the worker, which is what this rule is for.
         lambda i: not i.type_checking and not within(i.target, "devrun")
         and i.target.split(".")[0] not in sys.stdlib_module_names),
]


def violations(rule: Rule, root: Path, found: list[tuple[str, Import]]) -> list[str]:
    # dict.fromkeys: `from devrun.x import a, b` is one breach, not one per name
    return list(dict.fromkeys(
        f"{imp.path.relative_to(root.parent)}:{imp.line}: {imp.written}"
        + (f"  (loads {imp.target})" if imp.target not in imp.written.split() else "")
        for importer, imp in found if rule.governs(importer) and rule.refuses(imp)))


@functools.cache  # one reading of devrun/ for all the rules
def devrun_imports() -> list[tuple[str, Import]]:
    return all_imports(ROOT)


IDS = ["a-worker", "b-into-worker", "c-config-watch", "d-views", "e-runner", "e-control", "f-leaves", "g-stdlib"]


@pytest.mark.parametrize("rule", RULES, ids=IDS)
def test_import_direction(rule: Rule) -> None:
    found = violations(rule, ROOT, devrun_imports())
    assert not found, f"{rule.name}; broken by:\n" + "\n".join(found)


# One planted breach per rule, each at a spot the walker must not miss (inside a function, under
# TYPE_CHECKING, relative, `from devrun import x`): a rule that catches nothing fails here.
PLANTED = [
    ("worker/serve.py", "def f():\n    from devrun.runner import loop\n"),
    ("runner/fallback.py", "from devrun.worker.livereload import LiveHub\n"),
    ("watch/watcher.py", "from typing import TYPE_CHECKING\n"
                         "if TYPE_CHECKING:\n    from devrun.control import server\n"),
    ("views/plainlog.py", "from ..config import App\n"),
    ("runner/loop.py", "from devrun import cli\n"),
    ("control/server.py", "from devrun.runner import supervisor\n"),
    ("events.py", "from devrun import statefiles\n"),
    ("loopback.py", "import yaml\n"),
]


@pytest.mark.parametrize(("rule", "planted"), list(zip(RULES, PLANTED, strict=True)), ids=[p[0] for p in PLANTED])
def test_each_rule_catches_a_planted_import(tmp_path: Path, rule: Rule, planted: tuple[str, str]) -> None:
    root = tmp_path / "devrun"
    for name in ["__init__.py", "cli.py", "events.py", "statefiles.py", "loopback.py", "config/__init__.py",
                 "watch/watcher.py", "views/plainlog.py", "control/server.py", "runner/loop.py",
                 "runner/fallback.py", "runner/supervisor.py", "worker/__init__.py", "worker/serve.py",
                 "worker/livereload.py"]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("import os\n")
    for name in ["runner", "views", "control"]:
        (root / name / "__init__.py").write_text("")
    assert not violations(rule, root, all_imports(root))
    (root / planted[0]).write_text(planted[1])
    assert [v.split(":")[0] for v in violations(rule, root, all_imports(root))] == [f"devrun/{planted[0]}"]
