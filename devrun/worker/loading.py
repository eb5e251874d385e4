"""Importing the user's app object or calling its factory."""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.util
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

from devrun.importspec import ImportSpec

STDLIB = frozenset(getattr(sys, "stdlib_module_names", ()))


class AppLoadError(Exception):
    """The import string resolved to something that cannot serve."""


RUN_AT_IMPORT = (
    "the app started its own server while devrun imported it (`app.run()` at module level): "
    "guard that call with `if __name__ == \"__main__\":` so that only `python {module}.py` runs it"
)


@contextlib.contextmanager
def _no_server_of_its_own(module: str) -> Iterator[None]:
    """`app.run()` at import would serve forever on its own port, and the import would never end:
    while importing, Werkzeug's development server refuses to start, with the fix. Werkzeug is
    patched when the app imports it, so an app that never does pays nothing."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AppLoadError(RUN_AT_IMPORT.format(module=module.replace(".", "/")))

    patched: list[Any] = []

    def patch(serving: Any) -> None:
        patched.append((serving, serving.run_simple))
        serving.run_simple = refuse

    finder = _AfterImport("werkzeug.serving", patch)
    if "werkzeug.serving" in sys.modules:
        patch(sys.modules["werkzeug.serving"])
    else:
        sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(finder)
        for serving, original in patched:
            serving.run_simple = original


class _AfterImport(importlib.abc.MetaPathFinder):
    """Calls `then(module)` once the named module has been executed by its own loader."""

    def __init__(self, name: str, then: Callable[[Any], None]):
        self.name = name
        self.then = then

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)  # let the other finders find it, once
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        run, then = spec.loader.exec_module, self.then

        def exec_module(module: Any) -> None:
            run(module)
            then(module)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def load_app(spec: ImportSpec, root: str) -> Callable[..., Any]:
    top = spec.module.split(".")[0]
    with _no_server_of_its_own(spec.module):
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
