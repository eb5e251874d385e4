"""Importing the user's app object or calling its factory."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

from devrun.importspec import ImportSpec

STDLIB = frozenset(getattr(sys, "stdlib_module_names", ()))


class AppLoadError(Exception):
    """The import string resolved to something that cannot serve."""


def load_app(spec: ImportSpec, root: str) -> Callable[..., Any]:
    top = spec.module.split(".")[0]
    module = importlib.import_module(spec.module)
    mine = os.path.join(root, top + ".py")
    if top in STDLIB and not _inside(module, root) and (os.path.exists(mine) or os.path.isdir(mine[:-3])):
        raise AppLoadError(
            f"your {top!r} is shadowed by the standard library's module of the same name: rename it "
            f"(e.g. {top}_app) and update `app:` in devrun.yaml"
        )
    obj: Any = module
    for part in spec.attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AppLoadError(
                f"module {spec.module!r} has no attribute {spec.attr!r}"
                f" (found: {', '.join(_public(module)) or 'nothing'})"
            ) from None
    if spec.is_call:
        if not callable(obj):
            raise AppLoadError(f"{spec.module}:{spec.attr} is not callable, cannot call it as a factory")
        obj = obj(*spec.args, **spec.kwargs)
    if not callable(obj):
        raise AppLoadError(f"{spec} is a {type(obj).__name__}, not a WSGI callable")
    return obj


def _inside(module: Any, root: str) -> bool:
    path = getattr(module, "__file__", None) or ""
    return bool(path) and os.path.abspath(path).startswith(os.path.abspath(root) + os.sep)


def _public(module: Any) -> list[str]:
    return sorted(n for n, v in vars(module).items() if not n.startswith("_") and callable(v))[:8]
