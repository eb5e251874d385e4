"""`devrun up` end to end: real processes, real sockets on 127.0.0.1."""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import HOLD, Devrun, Held, alive, free_port, get, port_open, wait_for, write

pytestmark = pytest.mark.process  # every test here starts processes

FLASK_APP = """
    import os, socket
    from flask import Flask, render_template
    app = Flask(__name__)

    @app.route('/')
    def index():
        return 'v1'

    @app.route('/pid')
    def pid():
        return str(os.getpid())

    @app.route('/env')
    def env():
        return os.environ.get('GREETING', '-')

    @app.route('/sleep')
    def sleep():
        HOLD  # in flight until the test releases it
        return 'slept'

    @app.route('/page')
    def page():
        return render_template('page.html')

    @app.route('/boom')
    def boom():
        raise RuntimeError('kaboom-123')
"""

PLAIN_FACTORY = """
    def make(greeting='plain', suffix=''):
        def application(environ, start_response):
            start_response('200 OK', [('Content-Type', 'text/plain')])
            return [(greeting + suffix).encode()]
        return application
"""


def flask_project(tmp: Path, debug: bool = True) -> tuple[Path, int, int]:
    web, api = free_port(), free_port()
    write(tmp / "web" / "webapp.py", FLASK_APP.replace("HOLD", HOLD))
    write(tmp / "web" / "templates" / "page.html", "<p>tpl-one</p>")
    write(tmp / "api" / "plain.py", PLAIN_FACTORY)
    cfg = write(tmp / "devrun.yaml", f"""
        defaults:
          reload_delay: 0.05
        apps:
          web:
            app: "webapp:app"
            port: {web}
            cwd: web
            env: {{GREETING: hi}}
            debug: {{enabled: {str(debug).lower()}}}
          api:
            app: "plain:make('plain', suffix='-1')"
            port: {api}
            cwd: api
    """)
    return cfg, web, api


def wait_ready(d: Devrun, *ports: int) -> None:
    for port in ports:
        wait_for(lambda p=port: get(f"http://127.0.0.1:{p}/", 2)[0] in (200, 500), 30,
                 f"port {port} to answer; output:\n{d.output}")


def test_serves_both_apps_without_head_of_line_blocking(tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    cfg, web, api = flask_project(tmp_path)
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    wait_ready(d, web, api)
    assert get(f"http://127.0.0.1:{web}/") == (200, "v1")
    assert get(f"http://127.0.0.1:{web}/env") == (200, "hi")
    assert get(f"http://127.0.0.1:{api}/") == (200, "plain-1")  # factory with literal args

    slow: list[tuple[int, str]] = []
    held = Held(tmp_path / "web")
    try:
        t = threading.Thread(target=lambda: slow.append(get(f"http://127.0.0.1:{web}/sleep", 20)))
        t.start()
        held.accept()  # the slow request is in flight, and stays so: / must not wait for it
        t0 = time.monotonic()
        assert get(f"http://127.0.0.1:{web}/", 2) == (200, "v1")
        assert time.monotonic() - t0 < 0.5
        held.release()
        t.join(20)
    finally:
        held.close()
    assert slow == [(200, "slept")]
    # One request line per request: method, path, status, duration.
    d.wait_line(lambda ln: re.fullmatch(r"web\s+\| GET /sleep 200 \d+ms", ln) is not None, 5)
    assert re.search(r"^devrun\s+\| PIN: \d{3}-\d{3}-\d{3}$", d.output, re.M)


def test_code_edit_reloads_only_that_app_and_names_the_file(tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    cfg, web, api = flask_project(tmp_path)
    d = devrun("up", "--no-dashboard", "-c", str(cfg), cwd=tmp_path)
    wait_ready(d, web, api)
    web_pid = get(f"http://127.0.0.1:{web}/pid")[1]
    api_starts = d.output.count("api    | starting")

    src = tmp_path / "api" / "plain.py"
    src.write_text(src.read_text().replace("greeting + suffix", "greeting + suffix + '-edited'"))
    wait_for(lambda: get(f"http://127.0.0.1:{api}/", 2)[1] == "plain-1-edited", 15, "the edited api response")
    d.wait_line(lambda ln: ln.startswith("api") and "reload (plain.py)" in ln, 5)
    assert d.output.count("api    | starting") == api_starts + 1
    # The other app was left alone.
    assert get(f"http://127.0.0.1:{web}/pid")[1] == web_pid
    assert not any(ln.startswith("web") and "reload" in ln for ln in d.lines)


def test_template_edit_shows_without_restart(tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    cfg, web, api = flask_project(tmp_path)
    d = devrun("up", "web", "--no-dashboard", cwd=tmp_path)
    wait_ready(d, web)
    assert not port_open(api)  # `up web` starts web only
    pid = get(f"http://127.0.0.1:{web}/pid")[1]
    assert "tpl-one" in get(f"http://127.0.0.1:{web}/page")[1]
    write(tmp_path / "web" / "templates" / "page.html", "<p>tpl-two</p>")
    wait_for(lambda: "tpl-two" in get(f"http://127.0.0.1:{web}/page")[1], 10, "the edited template")
    assert get(f"http://127.0.0.1:{web}/pid")[1] == pid
    assert "reload" not in d.output


def test_debug_mode_shows_the_werkzeug_debugger(tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    cfg, web, api = flask_project(tmp_path, debug=True)
    d = devrun("up", "web", "--no-dashboard", cwd=tmp_path)
    wait_ready(d, web)
    status, body = get(f"http://127.0.0.1:{web}/boom")
    assert status == 500
    assert "kaboom-123" in body and "Werkzeug Debugger" in body


def test_without_debug_a_plain_500_and_the_traceback_in_the_output(
    tmp_path: Path, devrun: Callable[..., Devrun]
) -> None:
    cfg, web, api = flask_project(tmp_path, debug=False)
    write(tmp_path / "api" / "plain.py", """
        def make(greeting='plain', suffix=''):
            def application(environ, start_response):
                raise ValueError('plain-boom')
            return application
    """)
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    wait_ready(d, web, api)
    status, body = get(f"http://127.0.0.1:{web}/boom")
    assert status == 500 and "Werkzeug" not in body and "kaboom-123" not in body
    d.wait_line(lambda ln: ln.startswith("web") and "RuntimeError: kaboom-123" in ln, 5)
    status, body = get(f"http://127.0.0.1:{api}/")
    assert status == 500 and "plain-boom" not in body
    d.wait_line(lambda ln: ln.startswith("api") and "ValueError: plain-boom" in ln, 5)


def test_ctrl_c_and_sigterm_stop_everything(tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    import signal

    cfg, web, api = flask_project(tmp_path)
    for how in ("SIGINT", "SIGTERM"):
        d = devrun("up", "--no-dashboard", cwd=tmp_path)
        wait_ready(d, web, api)
        kids = d.children()
        assert len(kids) >= 2
        assert d.proc is not None
        d.proc.send_signal(getattr(signal, how))
        assert d.proc.wait(20) == 0, d.output
        wait_for(lambda k=kids: not any(alive(p) for p in k), 3, "children to be gone")
        assert not port_open(web) and not port_open(api)


def test_broken_code_serves_an_error_page_and_recovers(tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    port = free_port()
    write(tmp_path / "app.py", """
        def app(environ, start_response):
            start_response('200 OK', [('Content-Type', 'text/plain')])
            return [b'good-1']
    """)
    write(tmp_path / "devrun.yaml", f"apps:\n  solo: {{app: 'app:app', port: {port}}}\n")
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    wait_for(lambda: get(f"http://127.0.0.1:{port}/", 2)[1] == "good-1", 30, "the app")
    write(tmp_path / "app.py", "def app(environ, start_response)\n    pass\n")
    wait_for(lambda: get(f"http://127.0.0.1:{port}/", 2)[0] == 500, 15, "the error page")
    status, body = get(f"http://127.0.0.1:{port}/")
    assert "SyntaxError" in body
    d.wait_line(lambda ln: ln.startswith("solo") and "error: SyntaxError" in ln, 5)
    write(tmp_path / "app.py", """
        def app(environ, start_response):
            start_response('200 OK', [('Content-Type', 'text/plain')])
            return [b'good-2']
    """)
    wait_for(lambda: get(f"http://127.0.0.1:{port}/", 2) == (200, "good-2"), 15, "recovery after the fix")


def test_a_crashed_child_is_restarted(tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    port = free_port()
    write(tmp_path / "app.py", """
        import os
        def app(environ, start_response):
            if environ['PATH_INFO'] == '/die':
                os._exit(3)
            start_response('200 OK', [('Content-Type', 'text/plain')])
            return [str(os.getpid()).encode()]
    """)
    write(tmp_path / "devrun.yaml", f"apps:\n  solo: {{app: 'app:app', port: {port}}}\n")
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    first = wait_for(lambda: get(f"http://127.0.0.1:{port}/", 2)[1], 30, "the app")
    with contextlib.suppress(OSError):  # the connection dies with the child
        get(f"http://127.0.0.1:{port}/die", 2)
    d.wait_line(lambda ln: ln.startswith("solo") and "exited with code 3" in ln, 10)
    def new_pid() -> str | None:
        status, body = get(f"http://127.0.0.1:{port}/", 2)
        return body if status == 200 and body != first else None

    second = wait_for(new_pid, 15, "a new child")
    assert second.isdigit() and second != first


def test_port_in_use_is_named_and_other_apps_still_start(tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    import socket

    cfg, web, api = flask_project(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", web))
        taken.listen()
        d = devrun("up", "--no-dashboard", cwd=tmp_path)
        wait_ready(d, api)
        line = d.wait_line(lambda ln: ln.startswith("web") and "in use" in ln, 10)
        assert f"127.0.0.1:{web}" in line


def test_config_errors_exit_2_without_a_traceback(tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    write(tmp_path / "devrun.yaml", "apps:\n  web:\n    app: 'x:app'\n    prot: 5000\n")
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    assert d.proc is not None and d.proc.wait(20) == 2
    wait_for(lambda: "prot" in d.output, 5, "the error message")
    assert "devrun.yaml:4:5: apps.web.prot: unknown key `prot`; did you mean `port`?" in d.output
    assert "Traceback" not in d.output

    d = devrun("up", "nosuch", "--no-dashboard", "-c", str(tmp_path / "missing.yaml"), cwd=tmp_path)
    assert d.proc is not None and d.proc.wait(20) == 2
    wait_for(lambda: "missing.yaml" in d.output, 5, "the error message")


def test_broken_code_in_debug_mode_shows_the_debugger_page_every_time(
    tmp_path: Path, devrun: Callable[..., Devrun]
) -> None:
    port = free_port()
    write(tmp_path / "app.py", "def app(environ, start_response)\n    pass\n")
    write(tmp_path / "devrun.yaml", f"apps:\n  solo: {{app: 'app:app', port: {port}, debug: {{enabled: true}}}}\n")
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    wait_for(lambda: get(f"http://127.0.0.1:{port}/", 2)[0] == 500, 30, "the error page")
    pages = [get(f"http://127.0.0.1:{port}/")[1] for _ in range(3)]
    assert all("Werkzeug Debugger" in p and "SyntaxError" in p for p in pages)
    # The same traceback each time: re-raising must not pile up frames request after request.
    assert pages[0].count("errorpage.py") == pages[2].count("errorpage.py")
    d.wait_line(lambda ln: "error: SyntaxError" in ln, 5)
