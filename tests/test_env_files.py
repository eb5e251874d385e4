"""env_file edits under `devrun up`: the app restarts with its environment rebuilt, the fork server
with it; a broken line is reported at file:line and the app keeps its last good environment."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import Devrun, free_port, get, wait_for, write

pytestmark = pytest.mark.process  # every test here starts processes

APP = """
    import os
    import envreader  # outside the project: the fork server preloads it, and it reads the env at import

    def app(environ, start_response):
        start_response('200 OK', [('Content-Type', 'text/plain')])
        body = '|'.join([os.environ.get('GREETING', '-'), os.environ.get('EXTRA', '-'), envreader.AT_IMPORT,
                         str(os.getpid())])
        return [body.encode()]
"""


def project(tmp: Path) -> int:
    port = free_port()
    lib = tmp / "lib"
    write(lib / "envreader.py", "import os\nAT_IMPORT = os.environ.get('GREETING', '-')\n")
    write(tmp / "proj" / "app.py", APP)
    write(tmp / "proj" / ".env", "GREETING=hello\nEXTRA=kept\n")
    write(tmp / "proj" / "devrun.yaml", f"""
        apps:
          web:
            app: "app:app"
            port: {port}
            env_file: .env
            env: {{PYTHONPATH: '{lib}'}}
    """)
    return port


def body(port: int) -> list[str]:
    status, text = get(f"http://127.0.0.1:{port}/", 5)
    return text.split("|") if status == 200 else [f"<{status}>"]


def test_env_file_edits_restart_the_app_with_a_fresh_environment(
        tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    port = project(tmp_path)
    proj = tmp_path / "proj"
    d = devrun("up", "--no-dashboard", cwd=proj)
    wait_for(lambda: body(port)[:3] == ["hello", "kept", "hello"], 30, "the app with the first env")
    # A code reload first, so the next generations come from a fork server that preloaded envreader.
    (proj / "app.py").write_text((proj / "app.py").read_text() + "\n# touched\n")
    d.wait_line(lambda ln: "reload (app.py)" in ln, 15)
    first = body(port)

    # An edit, and a variable removed: gone, not kept from before.
    write(proj / ".env", "GREETING=bonjour\n")
    now = wait_for(lambda: (b := body(port))[0] == "bonjour" and b, 20, "the edited env file to be served")
    assert now[1] == "-", now  # EXTRA was removed
    assert now[2] == "bonjour", now  # a preloaded module that read the env at import: the fork server was replaced
    assert now[3] != first[3]
    d.wait_line(lambda ln: ".env changed: restarting" in ln, 5)

    # A broken line: reported at .env:2, and the app keeps the last good environment.
    mark = len(d.lines)
    write(proj / ".env", 'GREETING=hallo\nBROKEN="never closed\n')
    line = d.wait_line(lambda ln: f"{proj / '.env'}:2:1" in ln, 15, start=mark)
    assert "apps.web.env_file" in line and "never closed" in line
    assert body(port)[:3] == ["bonjour", "-", "bonjour"]
    assert not any("restarting" in ln for ln in d.lines[mark:])

    # Fixed: applied.
    write(proj / ".env", "GREETING=hallo\nEXTRA=back\n")
    wait_for(lambda: body(port)[:3] == ["hallo", "back", "hallo"], 20, "the fixed env file to be served")
    assert "Traceback" not in d.output


def test_an_optional_env_file_created_later_is_applied(tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    port = project(tmp_path)
    proj = tmp_path / "proj"
    (proj / ".env").unlink()
    cfg = proj / "devrun.yaml"
    cfg.write_text(cfg.read_text().replace("env_file: .env", "env_file: {path: .env, optional: true}"))
    devrun("up", "--no-dashboard", cwd=proj)
    wait_for(lambda: body(port)[:2] == ["-", "-"], 30, "the app without an env file")
    write(proj / ".env", "GREETING=created\n")
    wait_for(lambda: body(port)[0] == "created", 20, "the new env file to be served")
