"""`watch_mode: poll` end to end: devrun says it polls, and a save reloads the app (real processes)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import Devrun, free_port, get, wait_for, write

pytestmark = pytest.mark.process


def test_a_polled_app_says_so_once_and_reloads_on_a_save(tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    port = free_port()
    write(tmp_path / "pkg" / "views.py", "TEXT = 'v1'\n")
    write(tmp_path / "app.py", """
        from flask import Flask
        from pkg import views
        app = Flask(__name__)

        @app.route('/')
        def index():
            return views.TEXT
    """)
    write(tmp_path / "devrun.yaml", f"""
        defaults:
          watch_mode: poll
        apps:
          web:
            app: "app:app"
            port: {port}
    """)
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    wait_for(lambda: get(f"http://127.0.0.1:{port}/", 2) == (200, "v1"), 30, f"the app; output:\n{d.output}")
    d.wait_line(lambda ln: f"polling {tmp_path} (watch_mode: poll)" in ln, 5)
    # An in-place write in a subfolder: no folder's entries change, only the file's own stat.
    with open(tmp_path / "pkg" / "views.py", "r+") as f:
        f.write("TEXT = 'v2'\n")
    wait_for(lambda: get(f"http://127.0.0.1:{port}/", 2) == (200, "v2"), 10, f"the polled save; output:\n{d.output}")
    # A folder created later is polled too.
    write(tmp_path / "pkg" / "more" / "__init__.py", "")
    os.replace(write(tmp_path / "tmp-views", "TEXT = 'v3'\n"), tmp_path / "pkg" / "views.py")  # an atomic save
    wait_for(lambda: get(f"http://127.0.0.1:{port}/", 2) == (200, "v3"), 10, f"the atomic save; output:\n{d.output}")
    assert d.output.count("(watch_mode: poll)") == 1
