"""Bottle, Pyramid and Falcon under `devrun up`, each written as its own tutorial writes it: an
edited template is never served stale (applied in place where the framework allows it, else the
app restarts)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import Devrun, free_port, get, wait_for, write

pytestmark = pytest.mark.process  # every test here starts processes

BOTTLE_APP = """
    import os
    from bottle import Bottle, template

    app = Bottle()


    @app.route("/hello/<name>")
    def hello(name):
        return template("hello_template", name=name, pid=os.getpid())


    @app.route("/boom")
    def boom():
        raise RuntimeError("kaboom-bottle")
"""

PYRAMID_APP = """
    import os
    from pyramid.config import Configurator
    from pyramid.view import view_config


    @view_config(route_name="home", renderer="tutorial:templates/home.jinja2")
    def home(request):
        return {"name": "pyramid", "pid": os.getpid()}


    def main(global_config=None, **settings):
        with Configurator(settings=settings) as config:
            config.include("pyramid_jinja2")
            config.add_route("home", "/")
            config.scan(".")
            return config.make_wsgi_app()
"""

FALCON_APP = """
    import os
    from pathlib import Path

    import falcon

    PAGE = (Path(__file__).parent / "templates" / "page.html").read_text()  # read once, at import


    class PageResource:
        def on_get(self, req, resp):
            resp.content_type = falcon.MEDIA_HTML
            resp.text = PAGE.replace("PID", str(os.getpid()))


    app = falcon.App()
    app.add_route("/", PageResource())
"""


def config(folder: Path, app: str, port: int, extra: str = "") -> None:
    write(folder / "devrun.yaml", f"""
        apps:
          web:
            app: "{app}"
            port: {port}
            debug: {{enabled: true}}
            {extra}
    """)


def starts(d: Devrun) -> int:
    return sum(1 for ln in d.lines if "starting (pid" in ln)


def test_bottle_template_edits_are_fresh_and_its_debug_mode_is_on(
        tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    port = free_port()
    write(tmp_path / "app.py", BOTTLE_APP)
    write(tmp_path / "views" / "hello_template.tpl", "<p>Hello {{name}}, tpl-one</p>\n")
    config(tmp_path, "app:app", port)
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    d.wait_line(lambda ln: "ready http" in ln, 30)
    url = f"http://127.0.0.1:{port}/hello/ann"
    assert get(url)[1].strip() == "<p>Hello ann, tpl-one</p>"
    before = starts(d)
    write(tmp_path / "views" / "hello_template.tpl", "<p>Hello {{name}}, tpl-two</p>\n")
    wait_for(lambda: "tpl-two" in get(url)[1], 15, "the edited Bottle template")
    assert starts(d) == before  # applied in place: Bottle's template cache was cleared
    # Bottle's catch-all is off in debug mode, so the exception reaches Werkzeug's debugger.
    status, page = get(f"http://127.0.0.1:{port}/boom")
    assert status == 500 and "kaboom-bottle" in page and "Werkzeug" in page


def pyramid_project(tmp: Path, port: int, reload_templates: bool) -> None:
    write(tmp / "tutorial" / "__init__.py", PYRAMID_APP)
    write(tmp / "tutorial" / "templates" / "home.jinja2", "<p>Hi {{ name }}, tpl-one</p>\n")
    # Pyramid's own switch for its renderers, as development.ini's `pyramid.reload_templates` is.
    config(tmp, "tutorial:main({})", port, "env: {PYRAMID_RELOAD_TEMPLATES: 'true'}" if reload_templates else "")


def test_pyramid_template_edits_are_fresh_in_place_with_reload_templates(
        tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    port = free_port()
    pyramid_project(tmp_path, port, reload_templates=True)
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    d.wait_line(lambda ln: "ready http" in ln, 30)
    url = f"http://127.0.0.1:{port}/"
    assert "tpl-one" in get(url)[1]
    before = starts(d)
    write(tmp_path / "tutorial" / "templates" / "home.jinja2", "<p>Hi {{ name }}, tpl-two</p>\n")
    wait_for(lambda: "tpl-two" in get(url)[1], 15, "the edited Pyramid template")
    assert starts(d) == before


def test_pyramid_without_reload_templates_restarts_for_a_template_edit(
        tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    port = free_port()
    pyramid_project(tmp_path, port, reload_templates=False)
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    d.wait_line(lambda ln: "ready http" in ln, 30)
    url = f"http://127.0.0.1:{port}/"
    assert "tpl-one" in get(url)[1]
    before = starts(d)
    write(tmp_path / "tutorial" / "templates" / "home.jinja2", "<p>Hi {{ name }}, tpl-two</p>\n")
    wait_for(lambda: "tpl-two" in get(url)[1], 20, "the edited Pyramid template, after a restart")
    assert starts(d) > before
    d.wait_line(lambda ln: "reload (tutorial/templates/home.jinja2)" in ln, 5)


def test_falcon_restarts_for_a_watched_template_it_cannot_refresh(
        tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    port = free_port()
    write(tmp_path / "app.py", FALCON_APP)
    write(tmp_path / "templates" / "page.html", "<html><body>tpl-one PID</body></html>\n")
    config(tmp_path, "app:app", port)
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    d.wait_line(lambda ln: "ready http" in ln, 30)
    url = f"http://127.0.0.1:{port}/"
    first = get(url)[1]
    assert "tpl-one" in first
    write(tmp_path / "templates" / "page.html", "<html><body>tpl-two PID</body></html>\n")
    fresh = wait_for(lambda: (b := get(url)[1]) and "tpl-two" in b and b, 20, "the edited page, after a restart")
    assert fresh.split()[-1] != first.split()[-1]  # another process: restarted, never stale
    d.wait_line(lambda ln: "reload (templates/page.html)" in ln, 5)
