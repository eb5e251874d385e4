"""An ASGI app given as `app:` fails at load with one line saying what it is and what to point at
instead, rather than answering every request with a 500 and a traceback."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devrun.importspec import parse_import_string
from devrun.worker.loading import AppLoadError, load_app
from tests.helpers import Devrun, free_port, get, wait_for, write
from tests.projects import django_config, startproject

_names = itertools.count()


@pytest.fixture
def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], str]]:
    """Write a module under a name no other test used (imports are cached) and return its name."""
    monkeypatch.syspath_prepend(str(tmp_path))
    written: list[str] = []

    def make(source: str) -> str:
        name = f"asgi_case_{next(_names)}"
        write(tmp_path / f"{name}.py", source)
        written.append(name)
        return name

    yield make
    for name in written:
        sys.modules.pop(name, None)


def load(import_string: str, root: Path) -> Callable[..., object]:
    return load_app(parse_import_string(import_string), str(root))


def test_an_async_function_is_refused_with_one_line(module: Callable[[str], str], tmp_path: Path) -> None:
    name = module("""
        async def app(scope, receive, send):
            await send({"type": "http.response.start", "status": 200, "headers": []})
    """)
    with pytest.raises(AppLoadError) as caught:
        load(f"{name}:app", tmp_path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{name}:app is an ASGI app (an async function)")
    assert "devrun serves WSGI" in message and "uvicorn" in message


def test_an_instance_with_an_async_call_is_refused(module: Callable[[str], str], tmp_path: Path) -> None:
    name = module("""
        class App:
            async def __call__(self, scope, receive, send):
                pass

        app = App()
    """)
    with pytest.raises(AppLoadError, match=r"is an ASGI app \(App has an async __call__\)"):
        load(f"{name}:app", tmp_path)


def test_what_a_factory_returns_is_checked_too(module: Callable[[str], str], tmp_path: Path) -> None:
    name = module("""
        def create_app():
            async def app(scope, receive, send):
                pass
            return app
    """)
    with pytest.raises(AppLoadError, match=r"create_app\(\) is an ASGI app"):
        load(f"{name}:create_app()", tmp_path)


def test_falcons_asgi_app_is_refused_and_its_wsgi_app_loads(module: Callable[[str], str], tmp_path: Path) -> None:
    # Falcon's tutorial, both flavours: falcon.asgi.App subclasses falcon.App.
    name = module("""
        import falcon
        import falcon.asgi

        app = falcon.App()
        asgi_app = falcon.asgi.App()
    """)
    assert load(f"{name}:app", tmp_path) is sys.modules[name].app
    with pytest.raises(AppLoadError, match=r"asgi_app is an ASGI app \(a Falcon ASGI app\).*uvicorn"):
        load(f"{name}:asgi_app", tmp_path)


def test_wsgi_apps_still_load(module: Callable[[str], str], tmp_path: Path) -> None:
    name = module("""
        def app(environ, start_response):
            start_response("200 OK", [])
            return [b"hi"]


        class Hello:
            # PEP 3333's class form: calling the class is the request.
            def __init__(self, environ, start_response):
                start_response("200 OK", [])

            def __iter__(self):
                yield b"hi"


        from flask import Flask

        flask_app = Flask(__name__)
    """)
    assert load(f"{name}:app", tmp_path) is sys.modules[name].app
    assert load(f"{name}:Hello", tmp_path) is sys.modules[name].Hello
    assert load(f"{name}:flask_app", tmp_path) is sys.modules[name].flask_app


@pytest.mark.process
def test_djangos_asgi_module_fails_at_load_naming_its_wsgi_module(
        tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    site = startproject(tmp_path, app=None)  # startproject alone writes asgi.py
    port = free_port()
    django_config(site, port, debug=False, app="mysite.asgi:application")
    d = devrun("up", "--no-dashboard", cwd=site)
    expected = ("mysite.asgi:application is an ASGI app (Django's ASGIHandler); devrun serves WSGI apps: "
                "point `app:` at mysite.wsgi:application")
    d.wait_line(lambda ln: ln.startswith("mysite ") and ln.endswith(f"| {expected}"), 60)
    for _ in range(2):
        status, page = get(f"http://127.0.0.1:{port}/admin/login/")
        assert status == 500 and "devrun could not load" in page and "mysite.wsgi:application" in page
    wait_for(lambda: sum("GET /admin/login/ 500" in ln for ln in d.lines) == 2, 10, "both requests logged")
    assert "Traceback" not in d.output and "TypeError" not in d.output
    assert not any("ready http" in ln for ln in d.lines)
