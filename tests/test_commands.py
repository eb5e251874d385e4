"""`devrun check`, `init` and `schema` as a user runs them, plus docs kept in sync with the models."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from devrun.config import AppConfig, DebugConfig, EnvFileConfig, FileModel, json_schema
from tests.helpers import write

ROOT = Path(__file__).resolve().parent.parent
GOOD = "apps:\n  web:\n    app: 'm:app'\n    port: 5001\n    cwd: app\n"


def devrun(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "devrun", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write(tmp_path / "app" / "m.py", "def app(e, s):\n    s('200 OK', []); return [b'x']\n")
    return tmp_path


def check(project: Path, text: str) -> subprocess.CompletedProcess[str]:
    (project / "devrun.yaml").write_text(text)
    return devrun("check", cwd=project)


@pytest.mark.process
def test_check_lists_the_apps(project: Path) -> None:
    r = check(project, GOOD)
    assert r.returncode == 0, r.stderr
    assert "web" in r.stdout and "http://127.0.0.1:5001/" in r.stdout and "m:app" in r.stdout
    # The modeline of devrun.yaml points editors at this copy of the schema.
    assert json.loads((project / ".devrun" / "devrun.schema.json").read_text()) == json_schema()


# One case per kind of bad input: (name, text, line, key path or None, fragments of the message)
BAD = [
    ("typo", GOOD + "    ignroe: ['x']\n", 6, "apps.web.ignroe", ["did you mean `ignore`"]),
    ("wrong type", GOOD.replace("5001", "'five'"), 4, "apps.web.port", ["valid integer", "'five'"]),
    ("port range", GOOD.replace("5001", "70000"), 4, "apps.web.port", ["65535", "70000"]),
    ("repeated key", GOOD + "    port: 5002\n", 6, "apps.web.port", ["repeated key", "line 4"]),
    ("same port", GOOD + "  api:\n    app: 'm:app'\n    port: 5001\n    cwd: app\n", 8, "apps.api.port",
     ["already used by app `web`"]),
    ("missing cwd", GOOD.replace("cwd: app", "cwd: nowhere"), 5, "apps.web.cwd", ["nowhere", "does not exist"]),
    ("bad import", GOOD.replace("'m:app'", "'m app'"), 3, "apps.web.app", ["module:attr"]),
    ("bad glob", GOOD + "    watch: ['[oops']\n", 6, "apps.web.watch[0]", ["unclosed"]),
    ("python tag", GOOD + "    env: !!python/object/apply:os.system ['true']\n", 6, None, ["python/object"]),
    ("tab", "apps:\n  web:\n\tapp: 'm:app'\n", 3, None, ["tabs", "^"]),
    ("unclosed quote", "apps:\n  web:\n    app: 'm:app\n    port: 5001\n", 3, None, ["quoted scalar", "^"]),
    ("no port", "apps:\n  web:\n    app: 'm:app'\n    cwd: app\n", 2, "apps.web.port", ["missing required key `port`"]),
    ("no app", "apps:\n  web:\n    port: 5001\n", 2, "apps.web.app", ["missing required key `app`"]),
    ("not a mapping", "- a\n- b\n", 1, None, ["expected a mapping", "a list"]),
    ("empty", "", 1, None, ["empty"]),
    ("undefined var", GOOD.replace("'m:app'", "'${NO_SUCH_VAR_X}'"), 3, "apps.web.app", ["NO_SUCH_VAR_X"]),
    ("debug off loopback", GOOD + "    host: 0.0.0.0\n    debug: {enabled: true}\n", 6, "apps.web.host",
     ["allow_remote"]),
    ("octal port", GOOD.replace("5001", "010"), 4, "apps.web.port", ["leading zero", "`10`"]),
    ("base-60 port", GOOD.replace("5001", "12:30"), 4, "apps.web.port", ["valid integer", "'12:30'"]),
    ("path as app name", GOOD.replace("  web:", "  ../../x:"), 2, "apps", ["'../../x' is not allowed", "letters"]),
    ("NUL in app name", GOOD.replace("  web:", '  "a\\0b":'), 2, "apps", ["'a\\x00b' is not allowed"]),
]


@pytest.mark.process
@pytest.mark.parametrize(("name", "text", "line", "path", "fragments"), BAD, ids=[b[0] for b in BAD])
def test_check_reports_bad_input_located_with_exit_2(
    project: Path, name: str, text: str, line: int, path: str | None, fragments: list[str]
) -> None:
    r = check(project, text)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr + r.stdout
    first = r.stderr.splitlines()[0]
    assert re.match(rf"^{re.escape(str(project / 'devrun.yaml'))}:{line}:\d+: ", first), r.stderr
    if path:
        assert f": {path}: " in first, r.stderr
    for fragment in fragments:
        assert fragment in r.stderr, r.stderr
    assert "problem" in r.stderr.splitlines()[-1] and "nothing was started" not in r.stderr  # check starts nothing


@pytest.mark.process
def test_every_error_in_one_run(project: Path) -> None:
    r = check(project, GOOD.replace("5001", "0") + "    ignroe: []\n    debug: {evalx: 1}\n")
    assert r.returncode == 2
    located = [ln for ln in r.stderr.splitlines() if re.match(r"^/.*devrun\.yaml:\d+:\d+: ", ln)]
    assert len(located) == 3, r.stderr
    assert "3 problems" in r.stderr


@pytest.mark.process
def test_alias_bomb_is_refused_quickly(project: Path) -> None:
    lines = ["a: &a ['x','x','x','x','x','x','x','x','x']"]
    for i in range(8):
        prev, cur = chr(97 + i), chr(98 + i)
        lines.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    r = check(project, "\n".join(lines) + "\napps: *i\n")
    assert r.returncode == 2 and "alias" in r.stderr


@pytest.mark.process
def test_schema_prints_the_shipped_schema(tmp_path: Path) -> None:
    r = devrun("schema", cwd=tmp_path)
    assert r.returncode == 0
    printed = json.loads(r.stdout)
    assert printed == json_schema()
    # docs/devrun.schema.json is the same document: regenerate it with `devrun schema`.
    assert json.loads((ROOT / "docs" / "devrun.schema.json").read_text()) == printed
    assert printed["properties"]["apps"]["additionalProperties"]["$ref"].endswith("AppConfig")


@pytest.mark.process
def test_example_config_is_valid_and_points_at_the_schema() -> None:
    r = devrun("check", "-c", "devrun.yaml.example", cwd=ROOT)
    assert r.returncode == 0, r.stderr
    first = (ROOT / "devrun.yaml.example").read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=docs/devrun.schema.json"


def _fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    return [prefix + name for name in model.model_fields]


def test_configuration_doc_covers_every_key() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    keys = (_fields(FileModel) + _fields(AppConfig) + _fields(DebugConfig, "debug.")
            + _fields(EnvFileConfig, "env_file."))
    missing = [k for k in keys if f"### `{k}`" not in doc]
    assert not missing, f"docs/configuration.md has no section for {missing}"
    for name, field in AppConfig.model_fields.items():
        if field.default is not None and isinstance(field.default, bool | int | float | str):
            section = doc.split(f"### `{name}`", 1)[1].split("\n### ", 1)[0]
            shown = str(field.default).lower() if isinstance(field.default, bool) else str(field.default)
            assert shown in section, f"the default of `{name}` ({shown}) is not in its section"


SAMPLES = {
    "flask": ({"hello.py": "from flask import Flask\napp = Flask(__name__)\n"}, "hello:app", "."),
    "factory": ({"shop/__init__.py": "def create_app(config=None):\n    ...\n"}, "shop:create_app()", "."),
    "django": ({"site/manage.py": "", "site/mysite/__init__.py": "",
                "site/mysite/wsgi.py": "from django.core.wsgi import get_wsgi_application\n"
                                       "application = get_wsgi_application()\n"},
               "mysite.wsgi:application", "site"),
    "plain": ({"service.py": "def application(environ, start_response):\n    ...\n"},
              "service:application", "."),
}


@pytest.mark.process
@pytest.mark.parametrize("kind", SAMPLES)
def test_init_detects_the_app_and_writes_a_valid_file(tmp_path: Path, kind: str) -> None:
    files, import_string, cwd = SAMPLES[kind]
    for rel, text in files.items():
        write(tmp_path / rel, text)
    write(tmp_path / "tests" / "test_app.py", "app = object()\n")  # tests are not apps
    write(tmp_path / ".venv" / "lib" / "x.py", "from flask import Flask\napp = Flask(__name__)\n")
    r = devrun("init", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "devrun.yaml").read_text()
    assert text.startswith("# yaml-language-server: $schema=.devrun/devrun.schema.json\n")
    assert f'app: "{import_string}"' in text
    assert text.count("app: ") == 1  # nothing from tests/ or .venv/
    assert (f"cwd: {cwd}" in text) == (cwd != ".")
    r = devrun("check", cwd=tmp_path)
    assert r.returncode == 0, r.stderr


@pytest.mark.process
def test_init_never_overwrites_without_force(tmp_path: Path) -> None:
    write(tmp_path / "hello.py", "from flask import Flask\napp = Flask(__name__)\n")
    (tmp_path / "devrun.yaml").write_text("# mine\n")
    r = devrun("init", cwd=tmp_path)
    assert r.returncode == 1 and "--force" in r.stderr
    assert (tmp_path / "devrun.yaml").read_text() == "# mine\n"
    r = devrun("init", "--force", cwd=tmp_path)
    assert r.returncode == 0
    assert 'app: "hello:app"' in (tmp_path / "devrun.yaml").read_text()


@pytest.mark.process
def test_init_in_an_empty_folder_writes_a_template_that_passes_check(tmp_path: Path) -> None:
    r = devrun("init", cwd=tmp_path)
    assert r.returncode == 0 and "no app found" in r.stdout
    assert devrun("check", cwd=tmp_path).returncode == 0


@pytest.mark.process
def test_check_shows_brackets_in_values_as_written(project: Path) -> None:
    # Rich would read `[/a]` as a closing markup tag (and die), `[bold]` as a style.
    r = check(project, GOOD + "    watch: ['**/[/a].py', '**/[bold].py']\n")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "**/[/a].py" in r.stdout and "**/[bold].py" in r.stdout


def _closed_stdout(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """devrun with its output going to a pipe nobody reads any more (`devrun ... | head -c0`)."""
    read, write_end = os.pipe()
    os.close(read)
    try:
        return subprocess.run([sys.executable, "-m", "devrun", *args], cwd=cwd, stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write_end)


@pytest.mark.process
@pytest.mark.parametrize("args", [("status", "--json"), ("status",), ("check",), ("schema",)])
def test_a_closed_output_ends_the_command_quietly(project: Path, args: tuple[str, ...]) -> None:
    (project / "devrun.yaml").write_text(GOOD)
    r = _closed_stdout(*args, cwd=project)
    assert r.returncode == 141, r.stderr  # as a shell reports a tool ended by SIGPIPE
    assert r.stderr == ""  # no traceback, no "Exception ignored"


@pytest.mark.process
@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux) for a disk-full output")
@pytest.mark.parametrize("args", [("schema",), ("check",), ("status", "--json")])
def test_a_full_disk_on_the_output_is_one_line(project: Path, args: tuple[str, ...]) -> None:
    (project / "devrun.yaml").write_text(GOOD)
    with open("/dev/full", "w") as full:
        r = subprocess.run([sys.executable, "-m", "devrun", *args], cwd=project, stdout=full,
                           stderr=subprocess.PIPE, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr == "devrun: No space left on device\n", r.stderr
