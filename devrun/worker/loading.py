"""Importing the user's app object or calling its factory."""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
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

    def refuse(*args: object, **kwargs: object) -> None:
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

    def __init__(self, name: str, then: Callable[[ModuleType], None]):
        self.name = name
        self.then = then

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)  # let the other finders find it, once
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        run, then = spec.loader.exec_module, self.then

        def exec_module(module: ModuleType) -> None:
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
    obj: object = module
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
    if (what := asgi_kind(obj)) is not None:
        # Served as WSGI, an ASGI app returns a coroutine: a 500 and a traceback per request.
        instead = _django_wsgi(spec, module) if what == DJANGO_ASGI else None
        raise AppLoadError(f"{spec} is an ASGI app ({what}); devrun serves WSGI apps: "
                           + (f"point `app:` at {instead}" if instead else
                              "point `app:` at a WSGI app, or run it with an ASGI server such as uvicorn"))
    return obj


DJANGO_ASGI = "Django's ASGIHandler"
# Frameworks whose app objects are ASGI apps, by the top-level package their classes live in.
_ASGI_FRAMEWORKS = {"starlette": "Starlette", "fastapi": "FastAPI", "quart": "Quart", "litestar": "Litestar",
                    "channels": "Channels", "sanic": "Sanic", "blacksheep": "BlackSheep"}


def asgi_kind(obj: object) -> str | None:
    """What says obj is an ASGI app, or None. Never calls it: an ASGI app called as WSGI would
    only return a coroutine, and a WSGI app must not be called outside a request."""
    for cls in type(obj).__mro__:  # a subclass of FastAPI is still a FastAPI app
        module = cls.__module__ or ""
        if module == "django.core.handlers.asgi" or (cls.__name__ == "ASGIHandler" and module.startswith("django.")):
            return DJANGO_ASGI
        if module.startswith("falcon.asgi"):
            return "a Falcon ASGI app"
        if (name := _ASGI_FRAMEWORKS.get(module.partition(".")[0])) is not None:
            return f"a {name} app"
    if inspect.iscoroutinefunction(obj):
        return "an async function"
    # A class is called to make an instance (a WSGI app may be a class): only instances count.
    if not isinstance(obj, type) and inspect.iscoroutinefunction(type(obj).__call__):
        return f"{type(obj).__name__} has an async __call__"
    return None


def _django_wsgi(spec: ImportSpec, module: ModuleType) -> str | None:
    """The project's WSGI application: the one its settings name (as runserver finds it), else
    the wsgi.py beside this asgi.py (startproject writes both)."""
    with contextlib.suppress(Exception):  # settings not configured, a module that is not there
        from django.conf import settings

        where, _, attr = (settings.WSGI_APPLICATION or "").rpartition(".")
        if where and importlib.util.find_spec(where) is not None:
            return f"{where}:{attr}"
    here = os.path.dirname(getattr(module, "__file__", None) or "")
    if here and os.path.exists(os.path.join(here, "wsgi.py")):
        package = spec.module if hasattr(module, "__path__") else spec.module.rpartition(".")[0]
        return f"{package + '.' if package else ''}wsgi:application"
    return None


def _inside(module: ModuleType, root: str) -> bool:
    path = getattr(module, "__file__", None) or ""
    return bool(path) and os.path.abspath(path).startswith(os.path.abspath(root) + os.sep)


def _public(module: ModuleType) -> list[str]:
    return sorted(n for n, v in vars(module).items() if not n.startswith("_") and callable(v))[:8]
