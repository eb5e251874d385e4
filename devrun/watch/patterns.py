"""Which files of an app count: gitignore-style watch and ignore patterns.

One matcher (pathspec's gitignore semantics) serves every list, so ``**/*.py`` matches
``app.py`` at the root, ``node_modules/`` matches everything below it, and ``!`` negates.
Patterns are relative to the app's cwd; a leading ``../`` moves a pattern's base up, so
``../shared/**/*.py`` watches a sibling folder. ``.gitignore`` files apply, like git, relative
to the folder they sit in, from the repository's top down to the file.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import pathspec

BUILTIN_IGNORES: tuple[str, ...] = (
    ".git/", ".hg/", ".svn/", "__pycache__/", "*.pyc", "*.pyo", ".venv/", "venv/",
    "node_modules/", ".mypy_cache/", ".pytest_cache/", ".ruff_cache/", ".tox/", ".nox/",
    "*.egg-info/", ".devrun/",
    # editor temporaries and atomic-save leftovers
    "*.swp", "*.swx", "*~", ".#*", r"\#*#", "4913",  # `#` starts a comment: escape it
)


# Per-folder caches hold at most this many folders: a long run meets every folder that ever had a
# changed file (unique upload or temp folders included), but only the recent ones come back.
CACHE_SIZE = 4096
GITIGNORE_MAX_BYTES = 1 << 20

K = TypeVar("K")
V = TypeVar("V")


class Lru(Generic[K, V]):
    """A dict that forgets its least recently used entries past `size`. Not thread-safe: a
    Matcher is used by the watcher's one thread."""

    def __init__(self, size: int = CACHE_SIZE):
        self.size = size
        self.data: dict[K, V] = {}

    def __len__(self) -> int:
        return len(self.data)

    def __contains__(self, key: object) -> bool:
        return key in self.data

    def get(self, key: K) -> V:
        """The value (KeyError when absent), now the most recently used."""
        value = self.data.pop(key)
        self.data[key] = value
        return value

    def put(self, key: K, value: V) -> None:
        self.data.pop(key, None)
        self.data[key] = value
        while len(self.data) > self.size:
            del self.data[next(iter(self.data))]

    def pop(self, key: K) -> None:
        self.data.pop(key, None)


@dataclass(frozen=True)
class Rules:
    """Patterns and the folder they are relative to."""

    base: str
    spec: pathspec.GitIgnoreSpec

    def relative(self, path: str) -> str | None:
        rel = os.path.relpath(path, self.base)
        if rel == "." or rel == ".." or rel.startswith(".." + os.sep):
            return None
        return rel.replace(os.sep, "/")

    def match(self, path: str, is_dir: bool = False) -> bool:
        rel = self.relative(path)
        return rel is not None and self.spec.match_file(rel + "/" if is_dir else rel)


def split_base(pattern: str) -> tuple[int, str]:
    """('../../x/*.py') -> (2, 'x/*.py'); negation is kept in front."""
    negated = pattern.startswith("!")
    rest = pattern[1:] if negated else pattern
    ups = 0
    while rest.startswith("../"):
        ups += 1
        rest = rest[3:]
    return ups, ("!" if negated else "") + rest


def group_rules(root: str, patterns: Iterable[str]) -> list[Rules]:
    groups: dict[str, list[str]] = {}
    for pattern in patterns:
        ups, rest = split_base(pattern)
        base = os.path.normpath(os.path.join(root, *[".."] * ups))
        groups.setdefault(base, []).append(rest)
    return [Rules(base, pathspec.GitIgnoreSpec.from_lines(lines)) for base, lines in groups.items()]


GLOB_CHARS = frozenset("*?[")


def walk_root(root: str, pattern: str) -> str:
    """The deepest folder that can hold every file the pattern matches."""
    ups, rest = split_base(pattern)
    base = os.path.normpath(os.path.join(root, *[".."] * ups))
    parts = rest.strip("/").split("/")
    # Without an inner slash a gitignore pattern matches at any depth: no folder to descend into.
    if "/" not in rest.rstrip("/"):
        return base
    for part in parts[:-1]:
        if GLOB_CHARS & set(part) or part in ("", "."):
            break
        base = os.path.join(base, part)
    return base


def repo_top(folder: str) -> str | None:
    """The working tree's top folder (the one with .git), or None outside a repository."""
    here = folder
    while True:
        if os.path.exists(os.path.join(here, ".git")):
            return here
        parent = os.path.dirname(here)
        if parent == here:
            return None
        here = parent


def git_busy(root: os.PathLike[str] | str) -> bool:
    """True while git rewrites the working tree (checkout, rebase, merge) of root's repository."""
    top = repo_top(os.fspath(root))
    if top is None:
        return False
    git = os.path.join(top, ".git")
    if os.path.isfile(git):  # a worktree or submodule: `gitdir: <path>`
        try:
            with open(git, encoding="utf-8") as f:
                first = f.readline().strip()
        except OSError:
            return False
        if not first.startswith("gitdir:"):
            return False
        git = os.path.join(top, first.removeprefix("gitdir:").strip())
    return os.path.exists(os.path.join(git, "index.lock"))


class Matcher:
    def __init__(self, root: Path | str, watch: Iterable[str], ignore: Iterable[str] = (),
                 respect_gitignore: bool = True):
        self.root = os.path.abspath(root)
        self._watch_patterns = list(watch)
        self.watch = group_rules(self.root, watch)
        self.ignore = group_rules(self.root, ignore)
        self.builtin = pathspec.GitIgnoreSpec.from_lines(BUILTIN_IGNORES)
        self.respect_gitignore = respect_gitignore
        self._gitignores: Lru[str, pathspec.GitIgnoreSpec | None] = Lru()
        self._tops: Lru[str, str] = Lru()
        self._roots = self._find_roots()

    @property
    def roots(self) -> list[str]:
        """The folders to watch, outermost first, none inside another: for each pattern its
        base plus the literal folders it starts with (``../shared/**/*.py`` -> ``../shared``)."""
        return list(self._roots)

    def _find_roots(self) -> list[str]:
        bases = sorted({walk_root(self.root, p) for p in self._watch_patterns if not p.startswith("!")}, key=len)
        out: list[str] = []
        for base in bases:
            if not any(base == o or base.startswith(o + os.sep) for o in out):
                out.append(base)
        return out

    def matches(self, path: str | os.PathLike[str]) -> bool:
        """True when a change to this file should act (restart the app)."""
        path = os.path.abspath(path)
        if self.is_ignored(path):
            return False
        hit = False
        for rules in self.watch:
            rel = rules.relative(path)
            if rel is not None:
                hit = rules.spec.match_file(rel) or hit
        return hit

    def is_ignored(self, path: str | os.PathLike[str], is_dir: bool = False) -> bool:
        path = os.path.abspath(path)
        base = next((r for r in self._roots if path.startswith(r + os.sep)), None)
        if base is not None:
            rel = os.path.relpath(path, base).replace(os.sep, "/")
            if self.builtin.match_file(rel + "/" if is_dir else rel):
                return True
        if any(rules.match(path, is_dir) for rules in self.ignore):
            return True
        return self.respect_gitignore and self._git_ignored(path, is_dir)

    def is_ignored_dir(self, path: str | os.PathLike[str]) -> bool:
        """True for a folder that is never walked or watched."""
        return self.is_ignored(path, is_dir=True)

    def label(self, path: str | os.PathLike[str]) -> str:
        """How a changed file is shown: relative to the app's cwd."""
        return os.path.relpath(os.path.abspath(path), self.root).replace(os.sep, "/")

    # -- .gitignore ------------------------------------------------------------------------

    def _git_ignored(self, path: str, is_dir: bool) -> bool:
        folder = os.path.dirname(path)
        top = self._top(folder)
        if top is None:
            return False
        # Every .gitignore from the repository's top down to the file's folder applies.
        chain = []
        here = folder
        while True:
            chain.append(here)
            if here == top or os.path.dirname(here) == here:
                break
            here = os.path.dirname(here)
        for gdir in reversed(chain):
            spec = self._gitignore(gdir)
            if spec is not None:
                rel = os.path.relpath(path, gdir).replace(os.sep, "/")
                if spec.match_file(rel + "/" if is_dir else rel):
                    return True
        return False

    def _top(self, folder: str) -> str | None:
        if folder not in self._tops:
            self._tops.put(folder, repo_top(folder) or "")
        return self._tops.get(folder) or None

    def _gitignore(self, folder: str) -> pathspec.GitIgnoreSpec | None:
        if folder not in self._gitignores:
            try:
                text = read_regular(os.path.join(folder, ".gitignore"))
                spec = None if text is None else pathspec.GitIgnoreSpec.from_lines(text.splitlines())
            except Exception:  # unreadable, or a malformed line in someone's .gitignore: must not stop us
                spec = None
            self._gitignores.put(folder, spec)
        return self._gitignores.get(folder)

    def forget_gitignore(self, folder: str) -> None:
        """A .gitignore changed: read it again next time."""
        self._gitignores.pop(folder)


def read_regular(path: str) -> str | None:
    """The text of a regular file; None when there is none, or when the name is a FIFO, a
    socket or a device: opening a FIFO blocks until a writer comes, which may be never."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        # O_NONBLOCK: if a FIFO replaced the file since the stat, the open still returns at once.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return f.read(GITIGNORE_MAX_BYTES).decode("utf-8", errors="replace")
