"""Framework adapters (devrun.worker.frameworks) with the real frameworks, on projects written as
each framework's own tutorial writes them.

Django's settings are process-global, so each Django check runs in a child Python (monkey-patched
as devrun's child is) that follows a list of steps and prints what it saw as JSON. The others run
here, each on a fresh project module.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client, EnvironBuilder

from devrun.importspec import parse_import_string
from devrun.worker.frameworks import (
    Adapter,
    BottleAdapter,
    FalconAdapter,
    FlaskAdapter,
    PyramidAdapter,
    adapter_for,
)
from devrun.worker.loading import load_app
from tests import projects
from tests.helpers import write
from tests.projects import DJANGO_STYLESHEET as STYLE
from tests.projects import DJANGO_TEMPLATE as TEMPLATE

PY = sys.executable
REPO = Path(__file__).resolve().parent.parent


def edit(path: Path, text: str) -> None:
    """Save a new version as an editor would, seconds later: Jinja compares mtimes, and two
    writes inside one tick of the kernel's file clock can carry the same one."""
    before = path.stat().st_mtime_ns
    path.write_text(text)
    os.utime(path, ns=(before + 2_000_000_000, before + 2_000_000_000))


def get(client: Client, url: str) -> tuple[int, str]:
    response = client.get(url)
    try:
        return response.status_code, response.get_data(as_text=True)
    finally:
        response.close()


def plain_status(app: Any, url: str) -> int:
    """The status as a WSGI server sees it. (Werkzeug's test client re-raises any exc_info
    passed to start_response, which Bottle passes along with its own 500 page.)"""
    seen: list[str] = []
    body = app(EnvironBuilder(path=url).get_environ(), lambda status, headers, exc_info=None: seen.append(status))
    b"".join(body)
    getattr(body, "close", lambda: None)()
    return int(seen[-1].split()[0])


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A project folder on sys.path and as cwd, its modules forgotten afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if (getattr(sys.modules[name], "__file__", None) or "").startswith(str(tmp_path)):
            del sys.modules[name]


def load(spec: str, root: Path) -> Any:
    return load_app(parse_import_string(spec), str(root))


# --- Django -----------------------------------------------------------------------------------

DJANGO_STEPS = """
    from gevent import monkey

    monkey.patch_all()  # as devrun's child does, before anything else

    import json
    import os
    import sys
    from pathlib import Path

    from werkzeug.test import Client

    from devrun.importspec import parse_import_string
    from devrun.worker.frameworks import adapter_for
    from devrun.worker.loading import load_app

    root = os.getcwd()
    sys.path.insert(0, root)
    app = load_app(parse_import_string("mysite.wsgi:application"), root)
    adapter = adapter_for(app)
    adapter.enable_debug()
    adapter.enable_template_reload()
    client = Client(adapter.wrap(app))
    results = []
    for step, *args in json.loads(sys.argv[1]):
        if step == "get":
            response = client.get(args[0])
            results.append([response.status_code, response.get_data(as_text=True)])
            response.close()
        elif step == "edit":
            path = Path(root, args[0])
            before = path.stat().st_mtime_ns
            path.write_text(args[1])
            os.utime(path, ns=(before + 2_000_000_000, before + 2_000_000_000))
        elif step == "changed":
            adapter.templates_changed([str(Path(root, args[0]))])
    print(json.dumps({"name": adapter.name, "describe": adapter.describe(),
                      "refreshes": adapter.refreshes_templates, "results": results}))
"""

@pytest.fixture(scope="module")
def django_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests.projects' tutorial mysite + polls, made once and kept pristine: tests work on copies."""
    return projects.django_project(tmp_path_factory.mktemp("django"))


def django_run(project: Path, steps: list[list[Any]]) -> dict[str, Any]:
    script = project.parent / f"{project.name}-steps.py"
    script.write_text(textwrap.dedent(DJANGO_STEPS))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    done = subprocess.run([PY, str(script), json.dumps(steps)], cwd=project, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def django_copy(django_project: Path, tmp_path: Path, settings_tail: str = "") -> Path:
    copy = tmp_path / "mysite"
    shutil.copytree(django_project, copy)
    if settings_tail:  # as the user edits settings.py
        with (copy / "mysite/settings.py").open("a") as f:
            f.write(settings_tail)
    return copy


@pytest.mark.process
def test_django_debug_serves_static_files_and_fresh_templates(django_project: Path, tmp_path: Path) -> None:
    import django

    admin_css = Path(django.__file__).parent / "contrib/admin/static/admin/css/base.css"
    edited_style = "h1 { color: rgb(200, 0, 0); }\n"
    edited_template = (django_project / TEMPLATE).read_text().replace("tpl-one", "tpl-two")
    out = django_run(django_copy(django_project, tmp_path), [
        ["get", "/polls/"],
        ["get", "/static/polls/style.css"],
        ["get", "/static/admin/css/base.css"],
        ["edit", STYLE, edited_style],
        ["get", "/static/polls/style.css"],
        ["edit", TEMPLATE, edited_template],
        ["get", "/polls/"],
        ["changed", TEMPLATE],
        ["get", "/polls/"],
        ["get", "/polls/boom/"],
    ])
    page, css, admin, css_edited, stale, fresh, boom = out["results"]
    assert out["name"] == "django"
    assert out["refreshes"] is True
    assert re.fullmatch(r"Django \d+\.\d+\S* \(static files: on\)", out["describe"]), out["describe"]
    assert page[0] == 200 and "tpl-one" in page[1] and "view-one" in page[1]
    assert 'href="/static/polls/style.css"' in page[1]
    assert css == [200, projects.DJANGO_STYLE]
    assert admin == [200, admin_css.read_text()]
    assert css_edited == [200, edited_style]  # from disk on every request
    # Django caches templates in DEBUG too: the edit shows only once its own hook has run.
    assert stale[0] == 200 and "tpl-one" in stale[1]
    assert fresh[0] == 200 and "tpl-two" in fresh[1] and "view-one" in fresh[1]
    # Django's debug page answers, before any WSGI middleware could see the exception.
    assert boom[0] == 500
    assert "kaboom-django" in boom[1] and "<code>DEBUG = True</code>" in boom[1]


@pytest.mark.process
def test_django_without_debug_serves_no_static_files(django_project: Path, tmp_path: Path) -> None:
    project = django_copy(django_project, tmp_path, '\nDEBUG = False\nALLOWED_HOSTS = ["localhost"]\n')
    out = django_run(project, [["get", "/polls/"], ["get", "/static/polls/style.css"],
                               ["get", "/static/admin/css/base.css"]])
    page, css, admin = out["results"]
    assert page[0] == 200 and "tpl-one" in page[1]  # the app itself is served
    assert css[0] == 404 and admin[0] == 404  # runserver's rule: static files only with DEBUG
    assert out["describe"].endswith("(static files: off, DEBUG is False)"), out["describe"]


@pytest.mark.process
def test_django_without_staticfiles_app_serves_no_static_files(django_project: Path, tmp_path: Path) -> None:
    project = django_copy(django_project, tmp_path)
    projects.edit(project / "mysite/settings.py", ("'django.contrib.staticfiles',", ""))
    out = django_run(project, [["get", "/static/polls/style.css"]])
    assert out["results"][0][0] == 404
    assert out["describe"].endswith("(static files: off, django.contrib.staticfiles not installed)"), out


# --- Bottle -----------------------------------------------------------------------------------

@pytest.fixture
def bottle_app(project: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    import bottle

    # Bottle's debug flag and template cache are module globals: each test starts from defaults.
    monkeypatch.setattr(bottle, "DEBUG", False)
    monkeypatch.setattr(bottle, "TEMPLATES", {})
    write(project / "views/hello_template.tpl", "<b>Hello {{name}}</b> v1\n")
    write(project / "hello.py", """\
        from bottle import Bottle, abort, template

        app = Bottle()


        @app.route("/hello/<name>")
        def hello(name):
            return template("hello_template", name=name)


        @app.route("/boom")
        def boom():
            raise ValueError("kaboom from bottle")


        @app.route("/gone")
        def gone():
            abort(404, "not here")
    """)
    return load("hello:app", project)


def test_bottle_template_edit_fresh_after_templates_changed(bottle_app: Any, project: Path) -> None:
    adapter = adapter_for(bottle_app)
    assert isinstance(adapter, BottleAdapter) and adapter.name == "bottle"
    adapter.enable_template_reload()
    assert adapter.refreshes_templates is True
    client = Client(adapter.wrap(bottle_app))
    assert get(client, "/hello/world") == (200, "<b>Hello world</b> v1\n")
    edit(project / "views/hello_template.tpl", "<b>Hello {{name}}</b> v2\n")
    assert get(client, "/hello/world") == (200, "<b>Hello world</b> v1\n")  # Bottle's cache
    adapter.templates_changed([str(project / "views/hello_template.tpl")])
    assert get(client, "/hello/world") == (200, "<b>Hello world</b> v2\n")


def test_bottle_debug_mode_lets_exceptions_reach_the_debugger(bottle_app: Any) -> None:
    import bottle

    adapter = adapter_for(bottle_app)
    client = Client(bottle_app)
    assert plain_status(bottle_app, "/boom") == 500  # Bottle's own catch-all page
    adapter.enable_debug()
    assert bottle.DEBUG is True
    assert bottle_app.config["catchall"] is False
    assert "debug: on" in adapter.describe()
    with pytest.raises(ValueError, match="kaboom from bottle"):
        client.get("/boom")
    assert get(client, "/gone")[0] == 404  # HTTP errors stay Bottle's


# --- Pyramid ----------------------------------------------------------------------------------

@pytest.fixture
def pyramid_project(project: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The quick tutorial's package with pyramid_jinja2."""
    monkeypatch.delenv("PYRAMID_RELOAD_TEMPLATES", raising=False)
    monkeypatch.delenv("PYRAMID_RELOAD_ALL", raising=False)
    write(project / "tutorial/__init__.py", """\
        from pyramid.config import Configurator


        def main(global_config, **settings):
            config = Configurator(settings=settings)
            config.include("pyramid_jinja2")
            config.add_route("home", "/")
            config.add_route("boom", "/boom")
            config.scan(".views")
            return config.make_wsgi_app()
    """)
    write(project / "tutorial/views.py", """\
        from pyramid.view import view_config


        @view_config(route_name="home", renderer="home.jinja2")
        def home(request):
            return {"name": "Home View"}


        @view_config(route_name="boom")
        def boom(request):
            raise ValueError("kaboom from pyramid")
    """)
    write(project / "tutorial/home.jinja2", "<h1>Hi {{ name }}</h1> v1\n")
    return project


def test_pyramid_reload_templates_on_refreshes(pyramid_project: Path) -> None:
    app = load("tutorial:main({}, reload_templates='true')", pyramid_project)
    adapter = adapter_for(app)
    assert isinstance(adapter, PyramidAdapter) and adapter.name == "pyramid"
    adapter.enable_debug()
    adapter.enable_template_reload()
    assert adapter.refreshes_templates is True
    assert "reload_templates: on" in adapter.describe()
    client = Client(adapter.wrap(app))
    assert get(client, "/") == (200, "<h1>Hi Home View</h1> v1")
    edit(pyramid_project / "tutorial/home.jinja2", "<h1>Hi {{ name }}</h1> v2\n")
    adapter.templates_changed([str(pyramid_project / "tutorial/home.jinja2")])
    assert get(client, "/") == (200, "<h1>Hi Home View</h1> v2")
    # Nothing to switch on for the debugger: Pyramid re-raises what no exception view claims.
    with pytest.raises(ValueError, match="kaboom from pyramid"):
        client.get("/boom")


def test_pyramid_reload_templates_off_does_not_refresh(pyramid_project: Path) -> None:
    app = load("tutorial:main({})", pyramid_project)
    adapter = adapter_for(app)
    adapter.enable_template_reload()
    assert adapter.refreshes_templates is False  # the runner restarts the app instead
    assert "reload_templates: off" in adapter.describe()
    client = Client(adapter.wrap(app))
    assert get(client, "/") == (200, "<h1>Hi Home View</h1> v1")
    edit(pyramid_project / "tutorial/home.jinja2", "<h1>Hi {{ name }}</h1> v2\n")
    adapter.templates_changed([str(pyramid_project / "tutorial/home.jinja2")])
    assert get(client, "/") == (200, "<h1>Hi Home View</h1> v1")  # why it must restart


def test_pyramid_jinja2_setting_overrides_reload_templates(pyramid_project: Path) -> None:
    # pyramid_jinja2's own key wins for its environments, so the adapter asks them. (devrun's
    # factory syntax takes no dotted keywords: the factory is called directly.)
    from tutorial import main

    app = main({}, **{"pyramid.reload_templates": "true", "jinja2.reload_templates": "false"})
    assert adapter_for(app).refreshes_templates is False


def test_pyramid_environment_variable_switches_reload_on(pyramid_project: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # Pyramid's documented switch, read when the Configurator is made; it beats the settings.
    monkeypatch.setenv("PYRAMID_RELOAD_TEMPLATES", "1")
    app = load("tutorial:main({}, reload_templates='false')", pyramid_project)
    assert adapter_for(app).refreshes_templates is True


# --- Falcon -----------------------------------------------------------------------------------

FALCON_APP = """\
    import falcon


    class ThingsResource:
        def on_get(self, req, resp):
            resp.media = {"things": ["a", "b"]}


    class BoomResource:
        def on_get(self, req, resp):
            raise ValueError("kaboom from falcon")


    app = falcon.App()
    app.add_route("/things", ThingsResource())
    app.add_route("/boom", BoomResource())
"""


def test_falcon(project: Path) -> None:
    write(project / "things.py", FALCON_APP)
    app = load("things:app", project)
    adapter = adapter_for(app)
    assert isinstance(adapter, FalconAdapter) and adapter.name == "falcon"
    assert adapter.refreshes_templates is False
    assert adapter.wrap(app) is app
    assert adapter.describe().startswith("Falcon ")
    client = Client(app)
    assert get(client, "/boom")[0] == 500  # Falcon's default handler for Exception
    adapter.enable_debug()
    with pytest.raises(ValueError, match="kaboom from falcon"):
        client.get("/boom")
    assert get(client, "/things") == (200, '{"things": ["a", "b"]}')
    assert get(client, "/nothing")[0] == 404  # HTTP errors stay Falcon's


def test_falcon_keeps_the_apps_own_exception_handler(project: Path) -> None:
    write(project / "things.py", FALCON_APP + """
    def handle(req, resp, ex, params):
        resp.status = 503
        resp.text = "own handler"


    app.add_error_handler(Exception, handle)
    """)
    app = load("things:app", project)
    adapter_for(app).enable_debug()
    assert get(Client(app), "/boom") == (503, "own handler")


# --- Flask ------------------------------------------------------------------------------------

def test_flask_unchanged(project: Path) -> None:
    write(project / "templates/index.html", "<p>Hello v1</p>")
    write(project / "hello.py", """\
        from flask import Flask, render_template

        app = Flask(__name__)


        @app.route("/")
        def index():
            return render_template("index.html")


        @app.route("/boom")
        def boom():
            raise ValueError("kaboom from flask")
    """)
    app = load("hello:app", project)
    adapter = adapter_for(app)
    assert isinstance(adapter, FlaskAdapter) and adapter.name == "flask"
    client = Client(adapter.wrap(app))
    assert get(client, "/boom")[0] == 500
    adapter.enable_debug()
    assert app.config["PROPAGATE_EXCEPTIONS"] is True
    with pytest.raises(ValueError, match="kaboom from flask"):
        client.get("/boom")
    assert get(client, "/") == (200, "<p>Hello v1</p>")  # the Jinja environment exists now
    adapter.enable_template_reload()
    assert app.config["TEMPLATES_AUTO_RELOAD"] is True and app.jinja_env.auto_reload is True
    assert adapter.refreshes_templates is True
    edit(project / "templates/index.html", "<p>Hello v2</p>")
    assert get(client, "/") == (200, "<p>Hello v2</p>")
    assert adapter.describe().startswith("Flask 3")


# --- Detection --------------------------------------------------------------------------------

def test_detection() -> None:
    import bottle
    import falcon
    from flask import Flask
    from pyramid.config import Configurator

    def plain(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b"hi"]

    flask_app = Flask("detect")
    assert type(adapter_for(flask_app)) is FlaskAdapter
    assert type(adapter_for(bottle.Bottle())) is BottleAdapter
    assert type(adapter_for(Configurator().make_wsgi_app())) is PyramidAdapter
    assert type(adapter_for(falcon.App())) is FalconAdapter
    generic = adapter_for(plain)
    assert type(generic) is Adapter and generic.name == "wsgi"
    assert generic.refreshes_templates is False and generic.wrap(plain) is plain
    assert "plain" in generic.describe()
    # Wrapped in a middleware, the object served is not the framework's any more.
    from werkzeug.middleware.proxy_fix import ProxyFix

    assert type(adapter_for(ProxyFix(flask_app))) is Adapter
    assert "ProxyFix" in adapter_for(ProxyFix(flask_app)).describe()
    # Django is detected in its own process (test_django_debug_serves_static_files_and_fresh_templates).


@pytest.mark.process
def test_detection_imports_no_framework() -> None:
    """Frameworks the app did not import stay unimported; Flask-shaped apps are recognised
    without Flask, as before."""
    code = textwrap.dedent("""\
        import json, sys
        from devrun.worker.frameworks import adapter_for

        class Kin:
            def __init__(self):
                self.config = {}
                self.jinja_env = type("Env", (), {"auto_reload": False})()

            def __call__(self, environ, start_response):
                return []

        def plain(environ, start_response):
            return []

        kin = Kin()
        names = [adapter_for(plain).name, adapter_for(kin).name]
        adapter = adapter_for(kin)
        adapter.enable_debug()
        adapter.enable_template_reload()
        loaded = [m for m in ("flask", "django", "bottle", "pyramid", "falcon", "jinja2") if m in sys.modules]
        print(json.dumps({"names": names, "config": kin.config, "auto_reload": kin.jinja_env.auto_reload,
                          "loaded": loaded}))
    """)
    done = subprocess.run([PY, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out == {"names": ["wsgi", "flask"], "config": {"PROPAGATE_EXCEPTIONS": True, "TEMPLATES_AUTO_RELOAD": True},
                   "auto_reload": True, "loaded": []}
