"""Framework projects written the way each framework's own tutorial writes them, for the
process-level tests and the benchmarks. Each is made with the framework's own tools where it has
them (`django-admin startproject`, `manage.py startapp`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers import write

DJANGO_INDEX = """
    {% load static %}
    <!DOCTYPE html>
    <html><head><link rel="stylesheet" href="{% static 'polls/style.css' %}"></head>
    <body><h1 id="title">{{ title }}</h1><p id="tpl">tpl-one</p></body></html>
"""

DJANGO_STYLE = "h1 { color: rgb(0, 128, 0); }\n"

# Where django_project puts them, relative to the folder holding manage.py.
DJANGO_TEMPLATE = "polls/templates/polls/index.html"
DJANGO_STYLESHEET = "polls/static/polls/style.css"

DJANGO_VIEWS = """
    from django.shortcuts import render


    def index(request):
        return render(request, "polls/index.html", {"title": "view-one"})


    def boom(request):
        raise RuntimeError("kaboom-django")
"""


def startproject(root: Path, app: str | None = "polls") -> Path:
    """What Django's tutorial starts with: `django-admin startproject mysite` in root, then
    `python manage.py startapp APP` unless app is None. Returns the folder holding manage.py."""
    root.mkdir(parents=True, exist_ok=True)
    admin = Path(sys.executable).with_name("django-admin")
    subprocess.run([str(admin), "startproject", "mysite"], cwd=root, check=True, timeout=60)
    site = root / "mysite"
    if app is not None:
        subprocess.run([sys.executable, "manage.py", "startapp", app], cwd=site, check=True, timeout=60)
    return site


def django_project(root: Path) -> Path:
    """`startproject(root)`, then the tutorial's first steps: a view rendering an app template with
    an app stylesheet, wired into the URLconf. Returns the folder holding manage.py."""
    site = startproject(root)
    write(site / "polls" / "views.py", DJANGO_VIEWS)
    write(site / "polls" / "urls.py", """
        from django.urls import path

        from . import views

        urlpatterns = [
            path("", views.index, name="index"),
            path("boom/", views.boom, name="boom"),
        ]
    """)
    write(site / DJANGO_TEMPLATE, DJANGO_INDEX)
    write(site / DJANGO_STYLESHEET, DJANGO_STYLE)
    admin_route = "path('admin/', admin.site.urls),"
    edit(site / "mysite" / "urls.py", ("from django.urls import path", "from django.urls import include, path"),
         (admin_route, "path('polls/', include('polls.urls')),\n    " + admin_route))
    edit(site / "mysite" / "settings.py",
         ("INSTALLED_APPS = [\n", "INSTALLED_APPS = [\n    'polls.apps.PollsConfig',\n"))
    return site


def edit(path: Path, *changes: tuple[str, str]) -> None:
    """Replace text the framework's generated file holds; fail loudly if a release changed it."""
    text = path.read_text()
    for old, new in changes:
        if old not in text:
            raise AssertionError(f"{path} no longer holds {old!r}: update tests/projects.py")
        text = text.replace(old, new, 1)
    path.write_text(text)


def django_config(site: Path, port: int, debug: bool = True, reload: str = "fork",
                  app: str = "mysite.wsgi:application") -> Path:
    """The devrun.yaml `devrun init` writes for the project (one app, its settings module), with
    debug mode and the reload kind chosen."""
    return write(site / "devrun.yaml", f"""
        apps:
          mysite:
            app: "{app}"
            port: {port}
            reload: {reload}
            env: {{DJANGO_SETTINGS_MODULE: mysite.settings}}
            debug: {{enabled: {str(debug).lower()}}}
    """)
