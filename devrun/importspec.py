"""Parsing of app import strings: ``module:attr`` or ``module:factory(args)``.

Pure and import-free of user code: the runner validates with it, the worker resolves with it.
Factory arguments are Python literals read with ``ast``, never evaluated as code.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from typing import Any

_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_ATTR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")

# What ast.literal_eval gives: strings, bytes, numbers, booleans, None, and tuples, lists, sets
# and dicts of them, as the import string wrote them; the factory's own signature types them.
LiteralValue = Any


class ImportSpecError(ValueError):
    """The import string is not ``module:attr`` or ``module:factory(...)``."""


@dataclass(frozen=True)
class ImportSpec:
    module: str
    attr: str
    is_call: bool = False
    args: tuple[LiteralValue, ...] = ()
    kwargs: dict[str, LiteralValue] = field(default_factory=dict)

    def __str__(self) -> str:
        if not self.is_call:
            return f"{self.module}:{self.attr}"
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.module}:{self.attr}({', '.join(parts)})"


def parse_import_string(text: str) -> ImportSpec:
    text = text.strip()
    module, sep, target = text.partition(":")
    if not sep or not module or not target:
        raise ImportSpecError(
            f"expected 'module:attr' or 'module:factory()', found {text!r}"
        )
    if not _MODULE.match(module):
        raise ImportSpecError(f"{module!r} is not a valid module name")
    if "(" not in target:
        if not _ATTR.match(target):
            raise ImportSpecError(f"{target!r} is not a valid attribute name")
        return ImportSpec(module, target)
    try:
        node = ast.parse(target, mode="eval").body
    except SyntaxError as exc:
        raise ImportSpecError(f"cannot parse factory call {target!r}: {exc.msg}") from None
    if not isinstance(node, ast.Call):
        raise ImportSpecError(f"{target!r} is not a factory call like create_app()")
    name = ast.unparse(node.func)
    if not _ATTR.match(name):
        # As written: ast.unparse's spelling of an expression differs between Pythons.
        shown = ast.get_source_segment(target, node.func) or name
        raise ImportSpecError(f"{shown!r} is not a valid factory name")
    kwargs: dict[str, LiteralValue] = {}
    for kw in node.keywords:
        if kw.arg is None:
            raise ImportSpecError(f"**kwargs is not allowed in a factory call: {target!r}")
        if kw.arg in kwargs:
            raise ImportSpecError(f"keyword argument {kw.arg!r} repeated in {target!r}")
        kwargs[kw.arg] = None
    try:
        args = tuple(ast.literal_eval(a) for a in node.args)
        kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg is not None}
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        # TypeError: an unhashable literal such as {[]: 1}
        raise ImportSpecError(
            f"factory arguments must be literals (strings, numbers, lists, dicts): {target!r}"
        ) from None
    return ImportSpec(module, name, True, args, kwargs)
