"""Falcon under `reload: fork`, written as Falcon's tutorial writes an app: a `look` package whose
`app.py` makes the `falcon.App` and routes to a resource class in `images.py`.

Importing Falcon makes a gevent hub in the fork server (falcon.util.sync builds a
ThreadPoolExecutor at import, and its patched queue asks for a hub); gevent's os.close then
defers closing a pipe or socket to that hub's loop, which never runs there: the server never
answered a fork, and kept the app's listening socket. And one app's fork server that does not
answer must cost that app spawns, never another app's reload, and none may outlive the runner.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import Devrun, alive, descendants, free_port, get, port_open, wait_for, write

pytestmark = pytest.mark.process  # every test here starts processes

IMAGES = """
    import os

    import falcon


    class Resource:
        def on_get(self, req, resp):
            doc = {{
                "images": [{{"href": "/images/1eaf6ef1-7f2d-4ecc-a8d5-6e8adba7cc0e.png"}}],
                "version": {version},
                "pid": os.getpid(),
            }}
            resp.media = doc
            resp.status = falcon.HTTP_200
"""

LOOK_APP = """
    import falcon

    from .images import Resource

    app = application = falcon.App()

    images = Resource()
    app.add_route("/images", images)
"""


def look(folder: Path, version: int = 1) -> None:
    write(folder / "look" / "__init__.py", "")
    write(folder / "look" / "app.py", LOOK_APP)
    write(folder / "look" / "images.py", IMAGES.format(version=version))


def served(port: int, path: str = "/images") -> dict[str, int]:
    status, text = get(f"http://127.0.0.1:{port}{path}", 5)
    return json.loads(text) if status == 200 else {}


def comm(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


def named(d: Devrun, name: str) -> list[int]:
    assert d.proc is not None
    return [p for p in descendants(d.proc.pid) if alive(p) and comm(p) == name]


def in_folder(folder: Path) -> list[int]:
    """Live processes working inside folder: the runner's apps, fork servers and their forks."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if os.readlink(entry / "cwd").startswith(str(folder)) and alive(int(entry.name)):
                    found.append(int(entry.name))
    return found


def fork_servers_in(folder: Path) -> list[int]:
    """Fork servers, the middle processes of their forks and their spares (a generation shares
    their command line too) working inside folder."""
    out = []
    for pid in in_folder(folder):
        with contextlib.suppress(OSError):
            if b"--forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes():
                out.append(pid)
    return out


@pytest.fixture
def leftovers(tmp_path: Path) -> Iterator[None]:
    """Whatever a test leaves in its folder (a fork server that outlived its runner, which
    the devrun fixture cannot find among the runner's descendants any more) is killed."""
    yield
    for pid in in_folder(tmp_path):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def down(folder: Path, d: Devrun) -> None:
    result = subprocess.run([sys.executable, "-m", "devrun", "down"], cwd=folder, capture_output=True,
                            text=True, timeout=60, env={**os.environ, "NO_COLOR": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert d.proc is not None
    d.proc.wait(10)


def nothing_left(folder: Path) -> None:
    """`down` returned: no fork server, middle process or spare may be left (a spare whose
    control pipe closed is given a moment to see it)."""
    wait_for(lambda: not fork_servers_in(folder), 3, "no fork server process left after down")


def fork_trouble(d: Devrun, app: str, words: tuple[str, ...]) -> list[str]:
    return [ln for ln in d.lines if ln.split("|")[0].strip() == app and any(w in ln for w in words)]


GAVE_UP = ("fork server died", "fork server hung")


def test_a_falcon_app_reloads_through_its_fork_server(
        tmp_path: Path, devrun: Callable[..., Devrun], leftovers: None) -> None:
    port = free_port()
    look(tmp_path)
    write(tmp_path / "devrun.yaml", f"""
        apps:
          look:
            app: "look.app:app"
            port: {port}
            reload: fork
    """)
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    wait_for(lambda: served(port).get("version") == 1, 30, "the app")
    # Every generation is a fork of the shared preloader, which has Falcon preloaded once the
    # first one said what it imported: the first reload's on its path, then (the app being
    # edited now) the spare forked after it, then one asked for by a reload right after that.
    for version in (2, 3, 4):
        if version == 3:
            wait_for(lambda: named(d, "devrun-spare"), 20, f"a spare generation; output:\n{d.output}")
        look(tmp_path, version)
        doc = wait_for(lambda v=version: (doc := served(port)).get("version") == v and doc, 15, f"version {version}")
        assert comm(doc["pid"]) == "devrun-gen", (comm(doc["pid"]), d.output)  # forked, not spawned
    assert not fork_trouble(d, "look", (*GAVE_UP, "no answer")), d.output
    down(tmp_path, d)
    nothing_left(tmp_path)


def test_a_killed_runner_leaves_no_fork_server_holding_the_port(
        tmp_path: Path, devrun: Callable[..., Devrun], leftovers: None) -> None:
    port = free_port()
    look(tmp_path)
    write(tmp_path / "devrun.yaml", f"""
        apps:
          look:
            app: "look.app:app"
            port: {port}
            reload: fork
    """)
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    wait_for(lambda: served(port).get("version") == 1, 30, "the app")
    look(tmp_path, 2)  # edited: a spare pays now, beside the preloader it is forked from
    wait_for(lambda: named(d, "devrun-spare"), 20, f"a spare generation; output:\n{d.output}")
    assert d.proc is not None
    os.kill(d.proc.pid, signal.SIGKILL)  # no goodbye: only the lifeline and PDEATHSIG are left
    d.proc.wait(10)
    wait_for(lambda: not fork_servers_in(tmp_path), 10, "every fork server process to exit with the runner")
    wait_for(lambda: not port_open(port), 10, "nothing to hold the app's port")


HANG_AT_FORK = """
    import os
    from pathlib import Path

    from gevent import monkey

    # What a C extension's fork handler can do (gRPC's has): block, for real, in the child.
    _sleep = monkey.get_original("time", "sleep")


    def _child():
        Path(__file__).with_name("forked").write_text(str(os.getpid()))
        _sleep(60)


    os.register_at_fork(after_in_child=_child)
"""

PLAIN_APP = """
    import os
    {imports}

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b'{{"version": {version}, "pid": %d}}' % os.getpid()]
"""


def hung_project(tmp_path: Path, apps: tuple[str, ...]) -> tuple[dict[str, int], Path]:
    """App a imports hangatfork from a site folder outside the project (so its fork server
    preloads it, and then hangs in every fork); any other app is plain. The ports, and the file
    a hung fork writes."""
    site = tmp_path.parent / f"{tmp_path.name}-site"
    write(site / "hangatfork.py", HANG_AT_FORK)
    ports = {app: free_port() for app in apps}
    # Appended to the tests' own PYTHONPATH, so the worker is the devrun under test.
    pythonpath = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    yaml = "apps:\n"
    for app, port in ports.items():
        write(tmp_path / app / "app.py", PLAIN_APP.format(imports="import hangatfork" if app == "a" else "",
                                                          version=1))
        yaml += f"  {app}: {{app: 'app:app', cwd: {app}, port: {port}, reload: fork"
        yaml += f", env: {{PYTHONPATH: '{pythonpath}'}}}}\n" if app == "a" else "}\n"
    write(tmp_path / "devrun.yaml", yaml)
    return ports, site / "forked"


def version(port: int) -> int | None:
    return served(port, "/").get("version")


def test_a_hung_fork_server_costs_only_its_own_app_a_spawn(
        tmp_path: Path, devrun: Callable[..., Devrun], leftovers: None) -> None:
    ports, forked = hung_project(tmp_path, ("a", "b"))
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    wait_for(lambda: version(ports["a"]) == 1 and version(ports["b"]) == 1, 30, "both apps")
    # b's preloader is ready (b, edited, has a spare forked from it), and a's fork server has
    # preloaded hangatfork and been asked for a fork, which now hangs in its child, the fork's
    # middle process.
    write(tmp_path / "b" / "app.py", PLAIN_APP.format(imports="", version=2))
    wait_for(lambda: version(ports["b"]) == 2, 15, "b's first reload")
    b_dir = str((tmp_path / "b").resolve())
    wait_for(lambda: any(os.readlink(f"/proc/{p}/cwd") == b_dir for p in named(d, "devrun-spare")),
             20, f"b's spare; output:\n{d.output}")
    wait_for(forked.exists, 20, f"a's fork server to be asked for a fork; output:\n{d.output}")
    write(tmp_path / "a" / "app.py", PLAIN_APP.format(imports="import hangatfork", version=2))
    write(tmp_path / "b" / "app.py", PLAIN_APP.format(imports="", version=3))
    wait_for(lambda: version(ports["b"]) == 3, 15, "b's reload")
    # The runner's loop never waited out a's server: b reloaded before devrun gave up on it
    # (FORK_TIMEOUT, 5 s after it asked), and forked (from its spare).
    assert not fork_trouble(d, "a", GAVE_UP), d.output
    assert not fork_trouble(d, "b", (*GAVE_UP, "no answer")), d.output
    assert comm(served(ports["b"], "/")["pid"]) == "devrun-gen"
    wait_for(lambda: version(ports["a"]) == 2, 15, "a's reload (spawned)")
    # The hung server is replaced in the background; nothing of it is left after down.
    d.wait_line(lambda ln: bool(fork_trouble(d, "a", ("fork server hung",))), 15)
    down(tmp_path, d)
    nothing_left(tmp_path)


def test_a_killed_runner_takes_a_hung_fork_along(
        tmp_path: Path, devrun: Callable[..., Devrun], leftovers: None) -> None:
    ports, forked = hung_project(tmp_path, ("a",))
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    wait_for(lambda: version(ports["a"]) == 1, 30, "the app")
    wait_for(forked.exists, 20, f"a's fork server to be asked for a fork; output:\n{d.output}")
    # The fork's middle process is stuck in hangatfork's handler: neither it nor its server
    # watches the lifeline now.
    middle = wait_for(lambda: int(forked.read_text()), 5, "the hung child's pid")
    assert alive(middle)
    assert d.proc is not None
    os.kill(d.proc.pid, signal.SIGKILL)
    d.proc.wait(10)
    wait_for(lambda: not fork_servers_in(tmp_path), 10, "the fork server and its hung child to die with the runner")
