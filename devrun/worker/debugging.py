"""Debug mode: Werkzeug's debugger around the app, template auto-reload for Flask."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _flask_config(app: Any) -> Any:
    config = getattr(app, "config", None)
    return config if hasattr(app, "jinja_env") and hasattr(config, "__setitem__") else None  # Flask and kin


def enable_framework_debug(app: Any) -> None:
    """Make the framework let exceptions reach the debugger and re-read edited templates."""
    config = _flask_config(app)
    if config is not None:
        # Without this Flask turns every exception into its own 500 page; the debugger never sees it.
        config["PROPAGATE_EXCEPTIONS"] = True
    enable_template_reload(app)


def enable_template_reload(app: Any) -> None:
    """Re-read an edited template on its next render instead of serving the cached one."""
    config = _flask_config(app)
    if config is not None:
        config["TEMPLATES_AUTO_RELOAD"] = True
        # The Jinja environment may already exist (created at import); set it there too.
        app.jinja_env.auto_reload = True


def wrap_debugger(app: Callable[..., Any], evalex: bool, pin: bool, allow_remote: bool = False) -> Callable[..., Any]:
    from werkzeug.debug import DebuggedApplication

    class Debugger(DebuggedApplication):
        def check_host_trust(self, environ: dict[str, Any]) -> bool:
            # Werkzeug trusts only localhost and 127.0.0.1 as Host headers; an app the user
            # explicitly exposed (debug.allow_remote, PIN mandatory) is reached by other names.
            return allow_remote or super().check_host_trust(environ)

    # The PIN itself comes from WERKZEUG_DEBUG_PIN, chosen by the runner once per run, so every
    # generation accepts the same PIN and a reload keeps the browser's debugger session.
    return Debugger(app, evalex=evalex, pin_security=pin, pin_logging=False)
