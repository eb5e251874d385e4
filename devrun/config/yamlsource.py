"""Safe YAML loading that remembers where every key came from.

Data is built by PyYAML's SafeLoader (unknown tags such as ``!!python/object`` are refused);
positions, repeated keys and alias expansion are checked on the composed node tree, so that
every later error can name ``file:line:col``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

KeyPath = tuple[str | int, ...]
# What PyYAML's safe loader builds: dicts, lists, str, int, float, bool and None, nested. Untyped on
# purpose: each reader checks the shape it needs (isinstance) and pydantic validates the rest.
YamlData = Any

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
    data: YamlData
    positions: dict[KeyPath, tuple[int, int]]
    # The text of every plain scalar read as a number, by key path: an env value keeps what was written.
    literals: dict[KeyPath, str] = field(default_factory=dict)

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


INT_TAG = "tag:yaml.org,2002:int"
FLOAT_TAG = "tag:yaml.org,2002:float"
# YAML 1.2 core schema scalars, where YAML 1.1 (PyYAML's) reads too much into text: `010` is not
# octal 8, `12:30` not 750 (base 60), `0x1F` not 31, `1_000` not 1000, `2024-01-01` not a date,
# `yes`/`no`/`on`/`off` not booleans. Integers are decimal without a leading zero (`0` itself
# aside), so `010` and `01234` stay the text written; floats need a `.` or an exponent.
_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_INT = re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$")
_FLOAT = re.compile(r"""^(?:[-+]?(?:0|[1-9][0-9]*)(?:\.[0-9]*)?[eE][-+]?[0-9]+
                        |[-+]?(?:0|[1-9][0-9]*)\.[0-9]*
                        |[-+]?\.[0-9]+(?:[eE][-+]?[0-9]+)?
                        |[-+]?\.(?:inf|Inf|INF)
                        |\.(?:nan|NaN|NAN))$""", re.X)
_REPLACED = {"tag:yaml.org,2002:bool", INT_TAG, FLOAT_TAG, "tag:yaml.org,2002:timestamp"}


class _Loader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML has no types here (no stubs installed)
    """SafeLoader with YAML 1.2 core booleans, integers and floats, and no timestamps."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _REPLACED]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", _BOOL, list("tTfF"))
_Loader.add_implicit_resolver(INT_TAG, _INT, list("-+0123456789"))
_Loader.add_implicit_resolver(FLOAT_TAG, _FLOAT, list("-+0123456789."))


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = loader.construct_scalar(node)
    if not _INT.match(text):  # only an explicit `!!int` gets here with other text
        raise yaml.constructor.ConstructorError(
            None, None, f"{text!r} is not a YAML 1.2 integer (decimal digits, no leading zero)", node.start_mark)
    return int(text)


def _construct_float(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> float:
    text = loader.construct_scalar(node)
    if _INT.match(text) or _FLOAT.match(text):
        return float(text.lower().replace(".inf", "inf").replace(".nan", "nan"))
    raise yaml.constructor.ConstructorError(None, None, f"{text!r} is not a YAML 1.2 number", node.start_mark)


_Loader.add_constructor(INT_TAG, _construct_int)
_Loader.add_constructor(FLOAT_TAG, _construct_float)


def parse(text: str, file: str) -> Document:
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise ConfigError([Problem(file, 1, 1, "", "the file is empty; expected a mapping with an `apps:` key")])
        positions: dict[KeyPath, tuple[int, int]] = {(): (1, 1)}
        literals: dict[KeyPath, str] = {}
        problems: list[Problem] = []
        _walk(node, (), _Walk(positions, literals, problems, file), set())
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
    return Document(file, text, data, positions, literals)


@dataclass
class _Walk:
    """What walking the node tree collects, and its node budget."""

    positions: dict[KeyPath, tuple[int, int]]
    literals: dict[KeyPath, str]
    problems: list[Problem]
    file: str
    count: int = 0


def _walk(node: yaml.Node, path: KeyPath, walk: _Walk, ancestors: set[int]) -> None:
    file = walk.file
    walk.count += 1
    if id(node) in ancestors:
        mark = node.start_mark
        raise ConfigError([Problem(file, mark.line + 1, mark.column + 1, format_path(path),
                                   "an alias refers to a node that contains it (a cycle); remove the alias")])
    if walk.count > MAX_NODES:
        mark = node.start_mark
        raise ConfigError([Problem(file, mark.line + 1, mark.column + 1, format_path(path),
                                   f"document expands to more than {MAX_NODES} nodes "
                                   "(an alias bomb?); refusing to load it")])
    if isinstance(node, yaml.ScalarNode):
        if node.tag in (INT_TAG, FLOAT_TAG) and node.style is None:
            walk.literals[path] = node.value
    elif isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            mark = key_node.start_mark
            if key in seen:
                walk.problems.append(Problem(file, mark.line + 1, mark.column + 1, format_path((*path, key)),
                                             f"repeated key `{key}` (first defined on line {seen[key]}); "
                                             "remove one of them"))
                continue
            seen[key] = mark.line + 1
            walk.positions[(*path, key)] = (mark.line + 1, mark.column + 1)
            _walk(value_node, (*path, key), walk, ancestors | {id(node)})
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            mark = item.start_mark
            walk.positions[(*path, i)] = (mark.line + 1, mark.column + 1)
            _walk(item, (*path, i), walk, ancestors | {id(node)})
