"""The shared preloader: the apps' fork servers and first generations are forks of one
interpreter, each moved into its own app's folder and environment."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import Devrun, descendants, free_port, get, wait_for, write

pytestmark = pytest.mark.process

APP = """
    import os, sys
    def app(environ, start_response):
        body = "|".join(["{name} v{version}", str(os.getpid()), os.getcwd(), os.environ.get("WHO", "-"),
                         os.environ.get("PYTHONHASHSEED", "-"), sys.path[0]]).encode()
        start_response('200 OK', [('Content-Type', 'text/plain')])
        return [body]
"""


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def forked(pid: int) -> bool:
    """Forked from a fork server (the shared preloader or an app's), not spawned: the fork
    carries its command line."""
    try:
        return b"--forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def project(tmp: Path, apps: dict[str, dict[str, str]]) -> dict[str, int]:
    ports = {}
    lines = ["apps:"]
    for name, env in apps.items():
        ports[name] = free_port()
        write(tmp / name / "app.py", APP.format(name=name, version=1))
        env_yaml = ", ".join(f"{k}: '{v}'" for k, v in env.items())
        lines += [f"  {name}:", "    app: 'app:app'", f"    cwd: {name}", f"    port: {ports[name]}",
                  "    reload: fork", f"    env: {{{env_yaml}}}"]
    write(tmp / "devrun.yaml", "\n".join(lines) + "\n")
    return ports


def answer(port: int, name: str, version: int = 1) -> list[str]:
    def ok() -> list[str] | None:
        status, text = get(f"http://127.0.0.1:{port}/", 2)
        return text.split("|") if status == 200 and text.startswith(f"{name} v{version}|") else None

    return wait_for(ok, 30, f"{name} v{version}")


def preloaders(d: Devrun) -> list[int]:
    assert d.proc is not None
    return [p for p in descendants(d.proc.pid) if comm(p) == "devrun-preload"]


def test_first_generations_fork_from_one_preloader_each_in_its_own_place(
        tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    ports = project(tmp_path, {"one": {"WHO": "first"}, "two": {"WHO": "second"}, "three": {"WHO": "third"}})
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    for name, who in (("one", "first"), ("two", "second"), ("three", "third")):
        pid, cwd, seen, _, path0 = answer(ports[name], name)[1:]
        # Its own folder, environment and import path, as a spawned process would have had.
        assert (cwd, seen, path0) == (str(tmp_path / name), who, str(tmp_path / name))
        assert forked(int(pid)), f"{name}'s first generation was spawned"
    wait_for(lambda: len(preloaders(d)) == 1, 10, "one shared preloader")
    # A reload forks from the preloader too: the app imports nothing it lacks.
    write(tmp_path / "two" / "app.py", APP.format(name="two", version=2))
    pid, cwd, seen, _, _ = answer(ports["two"], "two", 2)[1:]
    assert forked(int(pid)) and (cwd, seen) == (str(tmp_path / "two"), "second")
    assert "Traceback" not in d.output and "shared preloader failed" not in d.output


def test_apps_that_start_python_differently_get_a_preloader_each(
        tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    ports = project(tmp_path, {"plain": {"WHO": "p"}, "nobytecode": {"PYTHONHASHSEED": "123"}})
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    assert answer(ports["plain"], "plain")[4] == os.environ.get("PYTHONHASHSEED", "-")
    assert answer(ports["nobytecode"], "nobytecode")[4] == "123"
    wait_for(lambda: len(preloaders(d)) == 2, 10, "a preloader per start-up environment")


def test_a_killed_preloader_costs_only_speed(tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    ports = project(tmp_path, {"one": {"WHO": "a"}, "two": {"WHO": "b"}})
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    answer(ports["one"], "one")
    answer(ports["two"], "two")
    for pid in wait_for(lambda: preloaders(d) or None, 10, "the preloader"):
        os.kill(pid, signal.SIGKILL)
    for version in (2, 3):
        write(tmp_path / "one" / "app.py", APP.format(name="one", version=version))
        answer(ports["one"], "one", version)
    assert answer(ports["two"], "two")[3] == "b"
    d.interrupt(30)
    assert d.proc is not None
    wait_for(lambda: not preloaders(d), 10, "nothing left")


def working_in(d: Devrun, name: str, folder: Path) -> list[int]:
    """The runner's descendants called name (`devrun-spare`, `devrun-forksrv`) working in folder."""
    assert d.proc is not None
    found = []
    for pid in descendants(d.proc.pid):
        try:
            if comm(pid) == name and os.path.realpath(f"/proc/{pid}/cwd") == os.path.realpath(folder):
                found.append(pid)
        except OSError:
            continue
    return found


def test_an_app_the_preloader_covers_keeps_no_server_and_a_spare_only_once_edited(
        tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    ports = project(tmp_path, {"edited": {"WHO": "e"}, "untouched": {"WHO": "u"}})
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    answer(ports["edited"], "edited")
    answer(ports["untouched"], "untouched")
    write(tmp_path / "edited" / "app.py", APP.format(name="edited", version=2))
    pid, cwd, seen = answer(ports["edited"], "edited", 2)[1:4]
    assert forked(int(pid)) and (cwd, seen) == (str(tmp_path / "edited"), "e")
    # Reloaded once, the app is being worked on: a spare pays now. It is forked from the
    # preloader, in the app's folder, and the app has no fork server of its own.
    spare = wait_for(lambda: (s := working_in(d, "devrun-spare", tmp_path / "edited")) and s[0], 15,
                     f"edited's spare; output:\n{d.output}")
    write(tmp_path / "edited" / "app.py", APP.format(name="edited", version=3))
    pid, cwd, seen = answer(ports["edited"], "edited", 3)[1:4]
    assert int(pid) == spare and (cwd, seen) == (str(tmp_path / "edited"), "e")
    assert not working_in(d, "devrun-forksrv", tmp_path / "edited"), d.output
    # The app never edited keeps none: its one generation, and nothing beside it.
    assert not working_in(d, "devrun-spare", tmp_path / "untouched")
    assert not working_in(d, "devrun-forksrv", tmp_path / "untouched")
    assert len(preloaders(d)) == 1
    assert "Traceback" not in d.output and "fork server" not in d.output


LIB_APP = """
    import os, itsdangerous
    def app(environ, start_response):
        start_response('200 OK', [('Content-Type', 'text/plain')])
        return [f"{name} v1|{{os.getpid()}}".encode()]
"""


def test_an_app_whose_own_code_the_preloader_has_is_never_served_from_it(
        tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    """b works on an installed library (it watches its folder); a just uses it. The lists of the
    last run (from before b watched it) have the preloader import it: b's generations must never
    come from there, where an edit of the library would not show."""
    import itsdangerous

    lib = os.path.dirname(itsdangerous.__file__)
    ports = {"a": free_port(), "b": free_port()}
    for name in ports:
        write(tmp_path / name / "app.py", LIB_APP.format(name=name))
        write(tmp_path / ".devrun" / f"preload-{name}.json", '["itsdangerous"]')
    write(tmp_path / "devrun.yaml", f"""
        apps:
          a: {{app: "app:app", cwd: a, port: {ports["a"]}, reload: fork}}
          b:
            app: "app:app"
            cwd: b
            port: {ports["b"]}
            reload: fork
            watch: ["**/*.py", "{os.path.relpath(lib, tmp_path / "b")}/*.py"]
    """)
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    for name, port in ports.items():
        wait_for(lambda p=port, n=name: get(f"http://127.0.0.1:{p}/", 2)[1].startswith(f"{n} v1|"), 30, name)
    said = [i for i, ln in enumerate(d.lines) if ln.startswith("b ") and "shared preloader has itsdangerous" in ln]
    ready = [i for i, ln in enumerate(d.lines) if ln.startswith("b ") and "ready http" in ln]
    assert said and ready and said[0] < ready[0], d.output  # found before b ever served
    pid = int(get(f"http://127.0.0.1:{ports['a']}/", 2)[1].split("|")[1])
    assert forked(pid), d.output  # a forks from the preloader as before
