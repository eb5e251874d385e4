"""devrun's own pages go to loopback clients with a loopback Host only (F6, C17, C18, F13, S8).

The guard is called directly first (C18: no network); then real `devrun up` processes are
asked with forged Host headers and, where this machine has one, from a non-loopback address.
"""

from __future__ import annotations

import re
import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import EnvironBuilder

from devrun.loopback import REFUSED_TEXT, Trust
from devrun.worker.debugging import wrap_debugger
from devrun.worker.errorpage import error_app
from tests.helpers import Devrun, free_port, wait_for, write

PIN = "123-456-789"


def raising_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ["PATH_INFO"] == "/boom":
        secret_local = "hunter2-in-a-local"  # noqa: F841 - a local the debugger would show
        raise RuntimeError("kaboom-secret")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"the app"]


class Reply:
    def __init__(self, status: str, data: bytes):
        self.status_code = int(status.split(" ", 1)[0])
        self.data = data


WSGI = Callable[..., Iterable[bytes]]


def ask(app: WSGI, path: str, peer: str, host: str) -> Reply:
    """One request straight into the WSGI app. (Werkzeug's test client re-raises whenever
    start_response gets exc_info; PEP 3333 wants that only once headers were sent.)"""
    environ = EnvironBuilder(path=path, headers={"Host": host}, environ_base={"REMOTE_ADDR": peer}).get_environ()
    status: list[str] = []

    def start_response(s: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
        status.append(s)
        return lambda data: None

    result = app(environ, start_response)
    try:
        data = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return Reply(status[-1], data)


@pytest.fixture
def guarded(monkeypatch: pytest.MonkeyPatch) -> Callable[[Trust], WSGI]:
    monkeypatch.setenv("WERKZEUG_DEBUG_PIN", PIN)
    return lambda trust: wrap_debugger(raising_app, evalex=True, pin=True, trust=trust)


def secret_of(page: bytes) -> str:
    match = re.search(rb'SECRET = "([^"]+)"', page)
    assert match, page[:500]
    return match.group(1).decode()


def test_c18_a_forged_loopback_host_from_another_machine_gets_no_debugger(guarded: Callable[[Trust], WSGI]) -> None:
    client = guarded(Trust())
    local = ask(client, "/boom", "127.0.0.1", "localhost:5000")
    assert local.status_code == 500 and b"EVALEX = true" in local.data and b"hunter2-in-a-local" in local.data
    secret = secret_of(local.data)
    for path in (f"/?__debugger__=yes&cmd=printpin&s={secret}", f"/?__debugger__=yes&cmd=pinauth&pin=1&s={secret}",
                 "/?__debugger__=yes&cmd=resource&f=debugger.js", "/console"):
        assert ask(client, path, "10.1.2.3", "localhost:5000").status_code == 403, path
    boom = ask(client, "/boom", "10.1.2.3", "localhost:5000")
    assert boom.status_code == 500
    for marker in (b"kaboom", b"hunter2", b"Traceback", b"raising_app", b"EVALEX", b"Werkzeug"):
        assert marker not in boom.data, marker
    assert REFUSED_TEXT.encode() in boom.data
    assert ask(client, "/", "10.1.2.3", "localhost:5000").data == b"the app"  # the app itself still serves


def test_c17_a_foreign_host_gets_400_for_the_debugger_and_a_plain_500(guarded: Callable[[Trust], WSGI]) -> None:
    client = guarded(Trust())
    secret = secret_of(ask(client, "/boom", "127.0.0.1", "127.0.0.1:5000").data)
    for path in (f"/?__debugger__=yes&cmd=printpin&s={secret}", f"/?__debugger__=yes&cmd=pinauth&pin=1&s={secret}",
                 "/console"):
        assert ask(client, path, "127.0.0.1", "evil.example:5000").status_code == 400, path
    boom = ask(client, "/boom", "127.0.0.1", "evil.example:5000")
    assert boom.status_code == 500 and b"kaboom" not in boom.data and b"EVALEX" not in boom.data


def test_s8_remote_opt_in_widens_peers_not_names(guarded: Callable[[Trust], WSGI]) -> None:
    client = guarded(Trust("devbox.lan", remote=True))
    for host in ("devbox.lan:5000", "192.0.2.7:5000", "localhost:5000"):
        page = ask(client, "/boom", "10.1.2.3", host)
        assert b"EVALEX = true" in page.data, host  # the user opted in: the debugger, PIN-protected
        assert ask(client, "/console", "10.1.2.3", host).status_code == 200
    assert ask(client, "/console", "10.1.2.3", "attacker.example:5000").status_code == 400
    assert b"kaboom" not in ask(client, "/boom", "10.1.2.3", "attacker.example:5000").data


def test_f13_a_configured_ipv6_loopback_host_keeps_the_console(guarded: Callable[[Trust], WSGI]) -> None:
    page = ask(guarded(Trust("::1")), "/boom", "::1", "[::1]:27122")
    assert b"EVALEX = true" in page.data


def test_the_load_error_page_shows_its_traceback_on_loopback_only() -> None:
    try:
        raise SyntaxError("invalid syntax (app.py, line 3)")
    except SyntaxError as exc:
        app = error_app("web", "app:app", exc, "Traceback ...\nSyntaxError: DATABASE_URL=hunter2", debug=False)
    assert b"hunter2" in ask(app, "/", "127.0.0.1", "localhost:5000").data
    for peer, host in (("127.0.0.1", "attacker.example:5000"), ("10.1.2.3", "localhost:5000")):
        page = ask(app, "/", peer, host)
        assert page.status_code == 500 and b"hunter2" not in page.data and b"SyntaxError" not in page.data


# -- real processes ---------------------------------------------------------------------------

def fetch(url: str, host: str | None = None, timeout: float = 5.0, source: str | None = None) -> tuple[int, str]:
    """GET url with a chosen Host header (urllib sends a given one as is)."""
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        if source is not None:  # from a chosen local address: a non-loopback peer
            opener = urllib.request.build_opener(SourceHandler(source))
            with opener.open(request, timeout=timeout) as r:
                return r.status, r.read().decode("utf-8", "replace")
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


class SourceHandler(urllib.request.HTTPHandler):
    def __init__(self, source: str):
        super().__init__()
        self.source = source

    def http_open(self, req: Any) -> Any:
        import http.client

        return self.do_open(lambda host, **kw: http.client.HTTPConnection(host, source_address=(self.source, 0),
                                                                          **kw), req)


def project(tmp: Path, app: str, extra: str = "", host: str = "127.0.0.1") -> int:
    port = free_port()
    write(tmp / "app.py", app)
    write(tmp / "devrun.yaml", f"""
        defaults: {{reload_delay: 0.02, backoff: {{initial: 30, max: 30}}}}
        apps:
          web:
            app: "app:app"
            host: "{host}"
            port: {port}
{extra}
    """)
    return port


SECRET = "DATABASE_URL=postgres://admin:hunter2@db/app"

CRASHING = f"""
    import os
    print({SECRET!r}, flush=True)
    os._exit(3)
"""

BROKEN = f"""
    print({SECRET!r}, flush=True)
    def app(environ, start_response)
        pass
"""

FLASK = """
    from flask import Flask
    app = Flask(__name__)

    @app.route('/')
    def index():
        return '<html><body>hello</body></html>'

    @app.route('/boom')
    def boom():
        raise RuntimeError('kaboom-123')
"""


@pytest.mark.process
def test_the_runner_page_after_a_crash_shows_output_to_loopback_only(
    tmp_path: Path, devrun: Callable[..., Devrun]
) -> None:
    port = project(tmp_path, CRASHING)
    devrun("up", "--no-dashboard", cwd=tmp_path)
    url = f"http://127.0.0.1:{port}/"
    wait_for(lambda: "hunter2" in fetch(url, timeout=2)[1], 30, "the runner's 503 page with the app's output")
    assert fetch(url)[0] == 503
    status, body = fetch(url, host=f"attacker.example:{port}")
    assert status == 503 and "hunter2" not in body and "web" not in body and REFUSED_TEXT in body
    status, body = fetch(url + "__devrun__/events?generation=x", host=f"attacker.example:{port}")
    assert status == 400 and "generation" not in body


@pytest.mark.process
def test_the_load_error_page_shows_the_traceback_to_loopback_only(
    tmp_path: Path, devrun: Callable[..., Devrun]
) -> None:
    port = project(tmp_path, BROKEN)
    devrun("up", "--no-dashboard", cwd=tmp_path)
    url = f"http://127.0.0.1:{port}/"
    wait_for(lambda: "SyntaxError" in fetch(url, timeout=2)[1], 30, "the error page")
    status, body = fetch(url, host=f"attacker.example:{port}")
    assert status == 500 and "SyntaxError" not in body and "app.py" not in body


@pytest.mark.process
def test_debug_mode_with_a_foreign_host(tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    port = project(tmp_path, FLASK, "            debug: {enabled: true}")
    devrun("up", "--no-dashboard", cwd=tmp_path)
    url = f"http://127.0.0.1:{port}/"
    wait_for(lambda: fetch(url, timeout=2)[0] == 200, 30, "the app")
    status, local = fetch(url + "boom")
    assert status == 500 and "EVALEX = true" in local
    secret = secret_of(local.encode())
    foreign = f"evil.example:{port}"
    status, body = fetch(url + "boom", host=foreign)
    assert status == 500 and "kaboom-123" not in body and "Werkzeug" not in body
    for path in (f"?__debugger__=yes&cmd=printpin&s={secret}", f"?__debugger__=yes&cmd=pinauth&pin=1&s={secret}",
                 "console", "__devrun__/events", "__devrun__/livereload.js"):
        assert fetch(url + path, host=foreign)[0] == 400, path
    status, page = fetch(url, host=foreign)
    assert status == 200 and "hello" in page and "__devrun__" not in page  # no live reload script for it
    assert "__devrun__/livereload.js" in fetch(url)[1]


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.process
@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here")
def test_f13_the_console_works_on_host_ipv6_loopback(tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    port = project(tmp_path, FLASK, "            debug: {enabled: true}", host="::1")
    devrun("up", "--no-dashboard", cwd=tmp_path)
    url = f"http://[::1]:{port}/"
    wait_for(lambda: fetch(url, timeout=2)[0] == 200, 30, "the app on [::1]")
    status, body = fetch(url + "boom")
    assert status == 500 and "EVALEX = true" in body
