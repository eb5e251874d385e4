"""Importing the user's app object or calling its factory."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

from devrun.importspec import ImportSpec

STDLIB = frozenset(getattr(sys, "stdlib_module_names", ()))


class AppLoadError(Exception):
    """The import string resolved to something that cannot serve."""


def load_app(spec: ImportSpec) -> Callable[..., Any]:
    top = spec.module.split(".")[0]
    module = importlib.import_module(spec.module)
    if top in STDLIB and not _is_user_module(module):
        raise AppLoadError(
            f"module {spec.module!r} is the standard library's, not yours: rename your file "
            f"(e.g. {top}_app.py) so it does not collide with it"
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


def _is_user_module(module: Any) -> bool:
    path = getattr(module, "__file__", None) or ""
    return bool(path) and "site-packages" not in path and not path.startswith(sys.base_prefix)


def _public(module: Any) -> list[str]:
    return sorted(n for n, v in vars(module).items() if not n.startswith("_") and callable(v))[:8]
