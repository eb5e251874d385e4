"""`devrun init` on real projects: a Django `startproject` + `startapp` gets one entry (its WSGI
module, with the settings manage.py names) that `devrun up` serves; ASGI apps are never offered."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from devrun.config.scaffold import detect
from tests.helpers import Devrun, get, write
from tests.projects import startproject


def run_devrun(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "devrun", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60)


@pytest.fixture(scope="module")
def django_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One startproject for the tests that only read it."""
    return startproject(tmp_path_factory.mktemp("django"))


def test_a_django_project_gets_one_entry_its_wsgi_module_with_the_settings_of_manage_py(django_site: Path) -> None:
    assert (django_site / "mysite" / "asgi.py").exists()  # startproject writes both
    [found] = detect(django_site.parent)
    assert found.app == "mysite.wsgi:application"
    assert found.cwd == "mysite"  # the folder holding manage.py
    assert dict(found.env) == {"DJANGO_SETTINGS_MODULE": "mysite.settings"}
    assert "Django" in found.kind


@pytest.mark.process
def test_django_settings_come_from_manage_py(tmp_path: Path) -> None:
    site = startproject(tmp_path)
    manage = site / "manage.py"
    manage.write_text(manage.read_text().replace("'mysite.settings'", "'mysite.settings_dev'"))
    [found] = detect(tmp_path)
    assert dict(found.env) == {"DJANGO_SETTINGS_MODULE": "mysite.settings_dev"}


@pytest.mark.process
def test_djangos_own_modules_are_never_candidates(tmp_path: Path) -> None:
    site = startproject(tmp_path)
    # A module-level `app` or `application` in Django's own modules names something else: the
    # app config, the app's label. Any of them would look like a WSGI callable.
    for rel in ("mysite/settings.py", "mysite/urls.py", "polls/apps.py", "polls/admin.py",
                "polls/models.py", "polls/tests.py", "polls/migrations/0001_initial.py",
                "polls/management/commands/seed.py", "polls/templatetags/polls_extras.py"):
        path = site / rel
        text = path.read_text() if path.exists() else ""
        write(path, text + "\napplication = 'polls'\n")
    assert [f.app for f in detect(tmp_path)] == ["mysite.wsgi:application"]


ASGI = {
    "fastapi": {"main.py": """
        from fastapi import FastAPI

        app = FastAPI()


        @app.get("/")
        async def root():
            return {"message": "Hello World"}
    """},
    "starlette": {"app.py": """
        from starlette.applications import Starlette
        from starlette.responses import JSONResponse
        from starlette.routing import Route


        async def homepage(request):
            return JSONResponse({'hello': 'world'})

        app = Starlette(debug=True, routes=[Route('/', homepage)])
    """},
    "quart": {"app.py": """
        from quart import Quart

        app = Quart(__name__)
    """},
    "wrapped in starlette middleware": {"api.py": """
        import fastapi
        from starlette.middleware.cors import CORSMiddleware

        app = CORSMiddleware(fastapi.FastAPI(), allow_origins=["*"])
    """},
    "a factory that builds one": {"service/__init__.py": """
        def create_app():
            from fastapi import FastAPI

            return FastAPI()
    """},
    "falcon.asgi": {"things.py": """
        import falcon.asgi

        app = falcon.asgi.App()
    """},
    "raw asgi": {"app.py": """
        async def app(scope, receive, send):
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"hi"})
    """},
    "django asgi.py alone": {"proj/asgi.py": """
        import os

        from django.core.asgi import get_asgi_application

        os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'proj.settings')

        application = get_asgi_application()
    """},
    "a file that does not parse": {"main.py": "from fastapi import FastAPI\n\napp = FastAPI(\n"},
}


@pytest.mark.parametrize("kind", ASGI)
def test_an_asgi_app_is_never_offered(tmp_path: Path, kind: str) -> None:
    # Read as text only: none of these frameworks is installed here, nor needs to be.
    for rel, text in ASGI[kind].items():
        write(tmp_path / rel, text)
    assert detect(tmp_path) == []


def test_wsgi_apps_of_the_same_frameworks_family_are_still_found(tmp_path: Path) -> None:
    write(tmp_path / "things.py", "import falcon\n\napp = falcon.App()\n")
    write(tmp_path / "chat.py", "import socketio\n\nsio = socketio.Server()\napp = socketio.WSGIApp(sio)\n")
    assert sorted(f.app for f in detect(tmp_path)) == ["chat:app", "things:app"]


@pytest.mark.process
def test_a_flask_app_beside_an_asgi_py_keeps_its_entry(tmp_path: Path) -> None:
    write(tmp_path / "app.py", "from flask import Flask\n\napp = Flask(__name__)\n")
    write(tmp_path / "asgi.py", "from asgiref.wsgi import WsgiToAsgi\n\nfrom app import app\n\n"
                                "application = WsgiToAsgi(app)\n")
    r = run_devrun("init", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    apps = yaml.safe_load((tmp_path / "devrun.yaml").read_text())["apps"]
    assert [a["app"] for a in apps.values()] == ["app:app"]


@pytest.mark.process
def test_init_beside_a_fastapi_main_writes_the_no_app_template(tmp_path: Path) -> None:
    write(tmp_path / "main.py", ASGI["fastapi"]["main.py"])
    r = run_devrun("init", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "no app found" in r.stdout and "main:app" not in (tmp_path / "devrun.yaml").read_text()


@pytest.mark.process
def test_init_in_a_django_project_writes_one_entry_that_devrun_up_serves(
        tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    site = startproject(tmp_path)
    r = run_devrun("init", cwd=site)  # where a Django user is: beside manage.py
    assert r.returncode == 0, r.stderr
    text = (site / "devrun.yaml").read_text()
    apps = yaml.safe_load(text)["apps"]
    assert list(apps) == ["mysite"], text
    [entry] = apps.values()
    assert entry["app"] == "mysite.wsgi:application" and entry.get("cwd", ".") == "."
    assert entry["env"] == {"DJANGO_SETTINGS_MODULE": "mysite.settings"}
    comment = text.split("  mysite:", 1)[1].split("watch:", 1)[0]
    assert "Django" in comment and "static files" in comment and "template" in comment
    assert run_devrun("check", cwd=site).returncode == 0

    d = devrun("up", "--no-dashboard", cwd=site)
    d.wait_line(lambda ln: "mysite | ready http" in ln, 60)
    status, page = get(f"http://127.0.0.1:{entry['port']}/admin/login/")
    assert status == 200 and "Django site admin" in page, page[:500]
    # What the entry's comment promises: static files as runserver serves them (the admin's CSS).
    status, css = get(f"http://127.0.0.1:{entry['port']}/static/admin/css/base.css")
    assert status == 200 and "--primary" in css
    assert "Traceback" not in d.output
