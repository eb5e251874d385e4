"""Django under `devrun up`, on a project made by `django-admin startproject` + `startapp`:
static files as runserver serves them, template and static edits served fresh without a restart,
a view edit through a reload, and Django's own debug page for an exception."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import Devrun, free_port, get, wait_for, write
from tests.projects import django_config, django_project

pytestmark = pytest.mark.process  # every test here starts processes


def setup(tmp: Path, debug: bool = True, reload: str = "fork") -> tuple[Path, int]:
    site = django_project(tmp)
    port = free_port()
    django_config(site, port, debug, reload)
    return site, port


def starts(d: Devrun) -> int:
    return sum(1 for ln in d.lines if "starting (pid" in ln)


def test_static_files_and_admin_css_are_served_as_runserver_serves_them(
        tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    site, port = setup(tmp_path)
    d = devrun("up", "--no-dashboard", cwd=site)
    d.wait_line(lambda ln: "ready http" in ln, 60)
    status, css = get(f"http://127.0.0.1:{port}/static/polls/style.css")
    assert (status, css) == (200, "h1 { color: rgb(0, 128, 0); }\n")
    status, admin_css = get(f"http://127.0.0.1:{port}/static/admin/css/base.css")
    assert status == 200 and "--primary" in admin_css  # Django's own admin stylesheet
    status, page = get(f"http://127.0.0.1:{port}/polls/")
    assert status == 200 and 'href="/static/polls/style.css"' in page and "view-one" in page
    d.wait_line(lambda ln: "Django" in ln and "static files" in ln, 5)  # what devrun does for it, said once


def test_template_static_and_view_edits_are_served_fresh(tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    site, port = setup(tmp_path)
    d = devrun("up", "--no-dashboard", cwd=site)
    d.wait_line(lambda ln: "ready http" in ln, 60)
    url = f"http://127.0.0.1:{port}"
    assert "tpl-one" in get(f"{url}/polls/")[1]
    before = starts(d)

    # Django caches templates in DEBUG too: only its reset of the loaders makes this show.
    template = site / "polls" / "templates" / "polls" / "index.html"
    template.write_text(template.read_text().replace("tpl-one", "tpl-two"))
    wait_for(lambda: "tpl-two" in get(f"{url}/polls/")[1], 15, "the edited template")
    d.wait_line(lambda ln: "refresh pages (polls/templates/polls/index.html)" in ln, 5)

    write(site / "polls" / "static" / "polls" / "style.css", "h1 { color: rgb(200, 0, 0); }\n")
    wait_for(lambda: "200, 0, 0" in get(f"{url}/static/polls/style.css")[1], 15, "the edited stylesheet")
    assert starts(d) == before  # neither edit restarted the app

    views = site / "polls" / "views.py"
    views.write_text(views.read_text().replace("view-one", "view-two"))
    wait_for(lambda: "view-two" in get(f"{url}/polls/")[1], 20, "the edited view")
    assert starts(d) == before + 1
    assert "Traceback" not in d.output


def test_template_edits_are_applied_with_live_reload_and_debug_off(
        tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    site, port = setup(tmp_path, debug=False)
    d = devrun("up", "--no-dashboard", cwd=site)
    d.wait_line(lambda ln: "ready http" in ln, 60)
    url = f"http://127.0.0.1:{port}/polls/"
    assert "tpl-one" in get(url)[1]
    before = starts(d)
    template = site / "polls" / "templates" / "polls" / "index.html"
    template.write_text(template.read_text().replace("tpl-one", "tpl-three"))
    wait_for(lambda: "tpl-three" in get(url)[1], 15, "the edited template")
    assert starts(d) == before
    d.wait_line(lambda ln: "changed, applied in place (polls/templates/polls/index.html)" in ln, 5)


def test_an_exception_shows_djangos_own_debug_page(tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    site, port = setup(tmp_path)
    d = devrun("up", "--no-dashboard", cwd=site)
    d.wait_line(lambda ln: "ready http" in ln, 60)
    status, page = get(f"http://127.0.0.1:{port}/polls/boom/")
    assert status == 500
    assert "kaboom-django" in page and "DEBUG = True" in page  # Django's technical 500 page
    assert "Werkzeug" not in page  # devrun's debugger does not fight Django's
