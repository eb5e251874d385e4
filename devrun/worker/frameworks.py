"""What each web framework needs in development, done by the framework's own mechanism.

One adapter per framework, picked by what the loaded callable is. Runs only in the child, after
the app was imported: a framework module is looked up in ``sys.modules``, never imported here,
so an app pays only for the framework it already uses.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

WSGIApp = Callable[..., Any]
# A framework's module or object (its app, a setting, a signal): devrun never imports the framework
# here, and Django, Bottle and Pyramid carry no types, so these are read as the framework documents them.
Framework = Any


def _module(name: str) -> Framework:
    """The framework's module if the app imported it, else None (never imports it)."""
    return sys.modules.get(name)


def _version(distribution: str, module: Framework = None) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:  # vendored or run from a checkout
        return str(getattr(module, "__version__", "") or "")


class Adapter:
    """A WSGI app devrun knows nothing special about: served as it is.

    enable_debug does nothing: an exception the app does not catch reaches Werkzeug's debugger
    as it is, and one it catches is its own choice. Nothing tells devrun how its templates are
    cached, so a template edit restarts it (refreshes_templates is False).
    """

    name = "wsgi"

    def __init__(self, app: WSGIApp):
        self.app: Framework = app  # an instance of the adapter's framework, adapter_for made sure

    def enable_debug(self) -> None:
        """debug.enabled: the framework's own switch for letting exceptions reach the debugger."""

    def enable_template_reload(self) -> None:
        """Called after every load: an edited template is never served from a stale cache."""

    @property
    def refreshes_templates(self) -> bool:
        """Whether templates_changed() (or the framework itself) makes a template edit show
        without a restart; when False the runner restarts the app instead."""
        return False

    def templates_changed(self, paths: list[str]) -> None:
        """Absolute paths of edited template-ish files. Never raises: a hook that fails is
        reported on stderr, the app's own output, and the page refresh goes ahead."""

    def wrap(self, app: WSGIApp) -> WSGIApp:
        """The app as the framework's own development server would serve it (static files)."""
        return app

    def describe(self) -> str:
        """One short line for the log."""
        # A function or class names itself; an instance (a middleware, say) by its class.
        target = self.app if hasattr(self.app, "__qualname__") else type(self.app)
        module = getattr(target, "__module__", None)
        return f"WSGI app ({module + '.' if module else ''}{target.__qualname__})"


class FlaskAdapter(Adapter):
    """Flask, and apps shaped like it (``app.config`` plus ``app.jinja_env``)."""

    name = "flask"

    def enable_debug(self) -> None:
        # Without this Flask turns every exception into its own 500 page; the debugger never sees it.
        self.app.config["PROPAGATE_EXCEPTIONS"] = True

    def enable_template_reload(self) -> None:
        self.app.config["TEMPLATES_AUTO_RELOAD"] = True
        # The Jinja environment may already exist (created at import); set it there too.
        self.app.jinja_env.auto_reload = True

    @property
    def refreshes_templates(self) -> bool:
        # Jinja compares each template's mtime on render, once auto_reload is on.
        return bool(getattr(self.app.jinja_env, "auto_reload", False))

    def describe(self) -> str:
        return f"Flask {_version('flask', _module('flask'))}".rstrip()


class DjangoAdapter(Adapter):
    """Django's WSGIHandler, given what ``manage.py runserver`` gives it.

    enable_debug does nothing: Django turns an exception into a response before any WSGI
    middleware sees it, as its debug page when settings.DEBUG is true, so DEBUG stays the
    project's and Django's page stays in charge.
    """

    name = "django"

    @property
    def refreshes_templates(self) -> bool:
        # Django's own loaders are reset by its file_changed hook. A Jinja2 backend is not (the
        # hook skips it): it re-reads edited files only when its auto_reload is on (DEBUG's default).
        try:
            from django.template import engines

            jinja2 = _module("django.template.backends.jinja2")
            return not any(jinja2 is not None and isinstance(backend, jinja2.Jinja2)
                           and not backend.env.auto_reload for backend in engines.all())
        except Exception:  # a broken TEMPLATES setting: a restart shows the error where it belongs
            return False

    def templates_changed(self, paths: list[str]) -> None:
        # runserver's autoreloader sends this signal for every changed file; the receiver that
        # django.template connects resets the cached template loaders when the file lies in a
        # template directory (a .mo file clears translations the same way). Sent robustly: a
        # third-party receiver that raises must not take down the child's command reader.
        from django.utils.autoreload import file_changed

        for path in paths:
            given = Path(path)
            handled = self._notify(file_changed, given)
            resolved = given.resolve()
            # Django matches the path against its template folders as text: when only one side
            # went through a symlink, the resolved path is the one that matches.
            if not handled and resolved != given:
                self._notify(file_changed, resolved)

    def _notify(self, signal: Framework, path: Path) -> bool:
        handled = False
        for receiver, result in signal.send_robust(sender=self, file_path=path):
            if isinstance(result, Exception):
                sys.stderr.write(f"devrun: Django's file_changed receiver {receiver!r} failed for {path}:\n"
                                 + "".join(traceback.format_exception(result)))
                sys.stderr.flush()
            elif result:
                handled = True
        return handled

    def _static_off(self) -> str | None:
        """Why runserver would not serve static files here, or None when it would."""
        from django.apps import apps
        from django.conf import settings

        # runserver serves them only through staticfiles' own runserver command (so only when
        # that app is installed), and only with DEBUG (or --insecure, which devrun has not).
        if not apps.is_installed("django.contrib.staticfiles"):
            return "django.contrib.staticfiles not installed"
        if not settings.DEBUG:
            return "DEBUG is False"
        return None

    def wrap(self, app: WSGIApp) -> WSGIApp:
        if self._static_off() is not None:
            return app
        # Django's own handler, read from disk through the finders on every request, so an
        # edited stylesheet is served fresh. Raises ImproperlyConfigured without STATIC_URL,
        # as runserver does.
        from django.contrib.staticfiles.handlers import StaticFilesHandler

        wrapped: WSGIApp = app if isinstance(app, StaticFilesHandler) else StaticFilesHandler(app)
        return wrapped

    def describe(self) -> str:
        django = _module("django")
        version = django.get_version() if django is not None else ""
        off = self._static_off()
        return f"Django {version} (static files: {'on' if off is None else f'off, {off}'})"


class BottleAdapter(Adapter):
    """Bottle: templates are compiled once into ``bottle.TEMPLATES``, a cache Bottle tells
    its users to clear when templates change."""

    name = "bottle"

    def enable_debug(self) -> None:
        bottle = _module("bottle")
        # Bottle's debug mode: tracebacks in its pages, templates recompiled on every render,
        # extra warnings. Process-wide, which the child is.
        bottle.debug(True)
        # Bottle's catch-all turns every exception into its own 500 page; off, the exception
        # reaches Werkzeug's debugger. HTTP errors (abort, 404) are not exceptions to it.
        self.app.config["catchall"] = False

    def enable_template_reload(self) -> None:
        self._clear()  # a template rendered at import was compiled from the file as it was then

    @property
    def refreshes_templates(self) -> bool:
        return True

    def templates_changed(self, paths: list[str]) -> None:
        self._clear()

    def _clear(self) -> None:
        # Included templates live in their parent's own cache, so they go with it.
        _module("bottle").TEMPLATES.clear()

    def describe(self) -> str:
        bottle = _module("bottle")
        return f"Bottle {_version('bottle', bottle)} (debug: {'on' if bottle.DEBUG else 'off'})"


class PyramidAdapter(Adapter):
    """Pyramid's Router.

    enable_debug does nothing: Pyramid's exception-view tween re-raises any exception no
    exception view claims, so it reaches the debugger already; an exception view the app
    registered is its deliberate choice.

    Templates follow the renderers' own ``pyramid.reload_templates`` setting, read when the
    Configurator was made (the PYRAMID_RELOAD_TEMPLATES environment variable overrides it):
    on, Chameleon and pyramid_jinja2 re-read an edited file on its next render; off, the app
    must restart to see it.
    """

    name = "pyramid"

    def _settings(self) -> Framework:
        return getattr(getattr(self.app, "registry", None), "settings", None) or {}

    @property
    def refreshes_templates(self) -> bool:
        if not _asbool(self._settings().get("pyramid.reload_templates")):
            return False
        # pyramid_jinja2 lets `jinja2.reload_templates` override the setting: ask its
        # environments, the objects that actually check mtimes.
        jinja2 = _module("pyramid_jinja2")
        if jinja2 is not None:
            environments = self.app.registry.getUtilitiesFor(jinja2.IJinja2Environment)
            return all(env.auto_reload for _, env in environments)
        return True

    def describe(self) -> str:
        reload = "on" if _asbool(self._settings().get("pyramid.reload_templates")) else "off"
        return f"Pyramid {_version('pyramid', _module('pyramid'))} (reload_templates: {reload})"


def _asbool(value: object) -> bool:
    settings = _module("pyramid.settings")
    return bool(settings.asbool(value)) if settings is not None else bool(value)


def _reraise(req: Framework, resp: Framework, ex: Exception, params: Framework) -> None:
    raise ex


class FalconAdapter(Adapter):
    """Falcon: no templates of its own (refreshes_templates is False: a restart shows an edit)."""

    name = "falcon"

    def enable_debug(self) -> None:
        """Falcon has no debug mode, and its default handler for ``Exception`` turns every
        uncaught exception into a plain 500 ("prevents passing uncaught exceptions to the WSGI
        server", says add_error_handler). Its documented way out is a handler of one's own for
        Exception; one that re-raises hands the exception to the debugger. Only Falcon's own
        default is replaced, never a handler the app registered."""
        app = self.app
        falcon_asgi = _module("falcon.asgi")
        if falcon_asgi is not None and isinstance(app, falcon_asgi.App):
            return  # an ASGI app: refused at load, devrun serves WSGI
        handlers = getattr(app, "_error_handlers", None)  # private: without it, change nothing
        if isinstance(handlers, dict) and handlers.get(Exception) == getattr(app, "_python_error_handler", None):
            app.add_error_handler(Exception, _reraise)

    def describe(self) -> str:
        return f"Falcon {_version('falcon', _module('falcon'))}".rstrip()


def _is_instance(app: object, module: str, cls: str) -> bool:
    found = getattr(_module(module), cls, None)
    return isinstance(found, type) and isinstance(app, found)


def _flask_shaped(app: object) -> bool:
    # What debugging.py has always recognised: Flask and kin, without importing Flask.
    return hasattr(app, "jinja_env") and hasattr(getattr(app, "config", None), "__setitem__")


def adapter_for(app: WSGIApp) -> Adapter:
    """The adapter for what the loaded callable is (a wrapped app is a generic WSGI app)."""
    if _is_instance(app, "django.core.handlers.wsgi", "WSGIHandler"):
        return DjangoAdapter(app)
    if _is_instance(app, "bottle", "Bottle"):
        return BottleAdapter(app)
    if _is_instance(app, "pyramid.router", "Router"):
        return PyramidAdapter(app)
    if _is_instance(app, "falcon", "App"):
        return FalconAdapter(app)
    if _module("flask") is not None:
        if _is_instance(app, "flask", "Flask"):
            return FlaskAdapter(app)
    elif _flask_shaped(app):
        return FlaskAdapter(app)
    return Adapter(app)
