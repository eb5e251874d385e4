"""Safe YAML loading that remembers where every key came from.

Data is built by PyYAML's SafeLoader (unknown tags such as ``!!python/object`` are refused);
positions, repeated keys and alias expansion are checked on the composed node tree, so that
every later error can name ``file:line:col``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

KeyPath = tuple[str | int, ...]

# Aliases share nodes, so a "billion laughs" document is small for PyYAML but explodes in
# anything that walks it; refuse documents that expand past this many nodes.
MAX_NODES = 100_000


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    col: int
    path: str
    message: str
    excerpt: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.col}"
        head = f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"
        return head + (f"\n{self.excerpt}" if self.excerpt else "")


class ConfigError(Exception):
    """One or more problems in a config file; str() lists them all."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def format_path(path: KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def excerpt(text: str, line: int, col: int) -> str:
    lines = text.splitlines()
    if not 1 <= line <= len(lines):
        return ""
    src = lines[line - 1].replace("\t", " ")
    return f"    {src}\n    {' ' * max(col - 1, 0)}^"


@dataclass
class Document:
    """Parsed YAML data plus the position (1-based line, col) of every key path."""

    file: str
    text: str
    data: Any
    positions: dict[KeyPath, tuple[int, int]]

    def locate(self, path: KeyPath) -> tuple[int, int]:
        """Position of the longest prefix of path that exists in the file."""
        for n in range(len(path), -1, -1):
            if path[:n] in self.positions:
                return self.positions[path[:n]]
        return (1, 1)

    def problem(self, path: KeyPath, message: str) -> Problem:
        line, col = self.locate(path)
        return Problem(self.file, line, col, format_path(path), message)


def load(path: Path) -> Document:
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([Problem(file, 1, 1, "", f"cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([Problem(file, 1, 1, "", f"not UTF-8 text: {exc.reason}")]) from None
    return parse(text, file)


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans: only true/false are booleans, so `NO: x` or
    `env: {DEBUG: yes}` keep the text the user wrote."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def parse(text: str, file: str) -> Document:
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise ConfigError([Problem(file, 1, 1, "", "the file is empty; expected a mapping with an `apps:` key")])
        positions: dict[KeyPath, tuple[int, int]] = {(): (1, 1)}
        problems: list[Problem] = []
        _walk(node, (), positions, problems, file, [0], set())
        if problems:
            raise ConfigError(problems)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        if mark is not None and exc.context_mark is not None and not text[mark.index:].strip():
            # The problem is the end of the file (an unclosed quote or bracket): point at where
            # the unfinished thing starts.
            mark = exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        msg = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem:
            msg = f"{exc.problem} ({exc.context})"
        lines = text.splitlines()
        if 1 <= line <= len(lines) and "\t" in lines[line - 1]:
            msg += "; YAML does not allow tabs for indentation, use spaces"
        raise ConfigError([Problem(file, line, col, "", msg, excerpt(text, line, col))]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(file, 1, 1, "", f"invalid YAML: {exc}")]) from None
    except RecursionError:
        raise ConfigError([Problem(file, 1, 1, "", "the document is nested too deeply to be a devrun.yaml")]) from None
    finally:
        loader.dispose()
    return Document(file, text, data, positions)


def _walk(
    node: yaml.Node,
    path: KeyPath,
    positions: dict[KeyPath, tuple[int, int]],
    problems: list[Problem],
    file: str,
    count: list[int],
    ancestors: set[int],
) -> None:
    count[0] += 1
    if id(node) in ancestors:
        mark = node.start_mark
        raise ConfigError([Problem(file, mark.line + 1, mark.column + 1, format_path(path),
                                   "an alias refers to a node that contains it (a cycle); remove the alias")])
    if count[0] > MAX_NODES:
        mark = node.start_mark
        raise ConfigError([Problem(file, mark.line + 1, mark.column + 1, format_path(path),
                                   f"document expands to more than {MAX_NODES} nodes "
                                   "(an alias bomb?); refusing to load it")])
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            mark = key_node.start_mark
            if key in seen:
                problems.append(Problem(file, mark.line + 1, mark.column + 1,
                                        format_path((*path, key)),
                                        f"repeated key `{key}` (first defined on line {seen[key]}); "
                                        "remove one of them"))
                continue
            seen[key] = mark.line + 1
            positions[(*path, key)] = (mark.line + 1, mark.column + 1)
            _walk(value_node, (*path, key), positions, problems, file, count, ancestors | {id(node)})
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            mark = item.start_mark
            positions[(*path, i)] = (mark.line + 1, mark.column + 1)
            _walk(item, (*path, i), positions, problems, file, count, ancestors | {id(node)})
