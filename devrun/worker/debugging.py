"""Debug mode: Werkzeug's debugger around the app (each framework's own switches: frameworks.py)."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

from devrun.loopback import LOOPBACK, Trust
from devrun.worker.guard import Guard, plain_errors

PIN_ATTEMPTS = 10  # Werkzeug locks the PIN after this many failures (hard-coded in werkzeug.debug)
_COUNTER_MAX = 255  # Werkzeug keeps the count in one unsigned byte: past it, it would wrap to 0


def pin_failure_message(count: int) -> str:
    """What the user sees in devrun's output when the debugger refused a PIN."""
    if count >= PIN_ATTEMPTS:
        return "debugger: too many wrong PINs; locked until devrun restarts"
    return f"debugger: wrong PIN (attempt {count} of {PIN_ATTEMPTS})"


@functools.cache
def debugger_class() -> type[Any]:
    """devrun's DebuggedApplication (made on first use: Werkzeug is imported only in debug mode)."""
    from werkzeug.debug import DebuggedApplication

    class Debugger(DebuggedApplication):
        """Werkzeug's debugger, trusting the Host names devrun trusts, with a PIN lockout that
        outlives the generation: it starts from the run's failure count (pin_failures, kept by
        the runner) and reports every failure, so a reload never hands out ten more guesses."""

        def __init__(self, app: Callable[..., Any], *, evalex: bool, pin: bool, trust: Trust,
                     pin_failures: int = 0, on_pin: Callable[[int], None] | None = None):
            super().__init__(app, evalex=evalex, pin_security=pin, pin_logging=False)
            self.trust = trust
            self.on_pin = on_pin or (lambda count: None)
            self._failed_pin_auth.value = max(0, min(int(pin_failures), _COUNTER_MAX))

        def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            # Werkzeug's dispatch makes a Request and parses the query string of every request
            # (17 us of Flask's 85 here), only to find that almost none is for the debugger. One
            # that cannot be goes straight to the debugged app: no `__debugger__` in its query
            # (nor a %-escape, which might decode to it), and not the console's path in its own.
            query: str = environ.get("QUERY_STRING", "")
            if ("__debugger__" not in query and "%" not in query
                    and (self.console_path is None or not self.evalex
                         or self.console_path.strip("/") not in environ.get("PATH_INFO", ""))):
                return self.debug_application(environ, start_response)
            return super().__call__(environ, start_response)

        def check_host_trust(self, environ: dict[str, Any]) -> bool:
            # Werkzeug's own list cannot hold "[::1]" (it cuts a name at its first colon), and
            # a remote opt-in must widen the peers, not drop the DNS-rebinding check.
            return self.trust.host_ok(environ.get("HTTP_HOST"))

        def pin_auth(self, request: Any) -> Any:
            before = self._failed_pin_auth.value
            response = super().pin_auth(request)
            if before and self._failed_pin_auth.value == 0:  # the right PIN: Werkzeug starts over
                self.on_pin(0)
            return response

        def _fail_pin_auth(self) -> None:
            with self._failed_pin_auth.get_lock():
                count = min(self._failed_pin_auth.value + 1, _COUNTER_MAX)
                self._failed_pin_auth.value = count
            self.on_pin(count)  # before the pause, so the user hears of it at once
            self.pause(count)

        def pause(self, count: int) -> None:
            # Werkzeug's brute-force brake: a short wait, a long one after six failures.
            time.sleep(5.0 if count > 6 else 0.5)

    return Debugger


def wrap_debugger(app: Callable[..., Any], evalex: bool, pin: bool, trust: Trust | None = None,
                  pin_failures: int = 0, on_pin: Callable[[int], None] | None = None) -> Callable[..., Any]:
    """The app in Werkzeug's debugger, behind devrun's guard: a request whose Host or peer
    devrun does not trust gets the app alone (a plain 500 on an exception), never the debugger.
    The PIN itself comes from WERKZEUG_DEBUG_PIN, chosen by the runner once per run, so every
    generation accepts the same PIN and a reload keeps the browser's debugger session."""
    trust = trust or LOOPBACK
    debugged = debugger_class()(app, evalex=evalex, pin=pin, trust=trust, pin_failures=pin_failures, on_pin=on_pin)
    return Guard(debugged, plain_errors(app), trust, debugged.console_path if evalex else None)
