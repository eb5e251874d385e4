"""The long-lived runner process: one loop on the main thread owns every app's state.

It never imports user code and is never monkey-patched."""

from devrun.runner.loop import View, run_apps

__all__ = ["View", "run_apps"]
