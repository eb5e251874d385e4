"""Which files of an app count: gitignore-style watch and ignore patterns, relative to its cwd.

One matcher (pathspec's gitignore semantics) serves both lists, so ``**/*.py`` matches
``app.py`` at the root, ``node_modules/`` matches everything below it, and ``!`` negates.
"""

from __future__ import annotations

import os
from pathlib import Path

import pathspec

BUILTIN_IGNORES: tuple[str, ...] = (
    ".git/", ".hg/", ".svn/", "__pycache__/", "*.pyc", "*.pyo", ".venv/", "venv/",
    "node_modules/", ".mypy_cache/", ".pytest_cache/", ".ruff_cache/", ".tox/", ".nox/",
    "*.egg-info/", ".devrun/",
    # editor temporaries and atomic-save leftovers
    "*.swp", "*.swx", "*~", ".#*", "#*#", "4913",
)


class Matcher:
    def __init__(self, root: Path, watch: list[str], ignore: list[str]):
        self.root = Path(os.path.abspath(root))
        self.watch = pathspec.GitIgnoreSpec.from_lines(watch)
        self.ignore = pathspec.GitIgnoreSpec.from_lines([*BUILTIN_IGNORES, *ignore])

    def relative(self, path: str | os.PathLike[str]) -> str | None:
        rel = os.path.relpath(os.path.abspath(path), self.root)
        if rel == "." or rel.startswith(".." + os.sep) or rel == "..":
            return None
        return rel.replace(os.sep, "/")

    def matches(self, path: str | os.PathLike[str]) -> bool:
        """True when a change to this file should restart the app."""
        rel = self.relative(path)
        if rel is None or self.ignore.match_file(rel):
            return False
        return self.watch.match_file(rel)

    def is_ignored_dir(self, path: str | os.PathLike[str]) -> bool:
        """True for a folder that is never walked or watched."""
        rel = self.relative(path)
        return rel is not None and self.ignore.match_file(rel + "/")
