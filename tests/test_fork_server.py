"""`reload: fork`: generations forked from an app's own preloading server, and never stale.

Every app here imports `vendored`, a library of the user's own on a PYTHONPATH folder: the shared
preloader never preloads one (see runner/preloader.py), so each app needs a server of its own.
An app that imports nothing the shared preloader lacks has none (test_preloader.py)."""

from __future__ import annotations

import json
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import Devrun, descendants, free_port, get, wait_for, write

pytestmark = pytest.mark.process  # every test here starts processes

APP = """
    import os, json
    import helper, vendored
    {extra_import}
    def app(environ, start_response):
        body = f'v{version} {{helper.TAG}} {{os.getpid()}}'.encode()
        start_response('200 OK', [('Content-Type', 'text/plain')])
        return [body]
"""


def vendor(tmp: Path) -> Path:
    """The folder of `vendored`, outside the project."""
    folder = tmp.parent / f"{tmp.name}-vendor"
    write(folder / "vendored.py", "NAME = 'vendored'\n")
    return folder


def pythonpath(tmp: Path, *libs: Path) -> str:
    return "env: {PYTHONPATH: '" + os.pathsep.join(map(str, (vendor(tmp), *libs))) + "'}"


def setup(tmp: Path, libs: tuple[Path, ...] = ()) -> int:
    port = free_port()
    write(tmp / "app.py", APP.format(version=1, extra_import=""))
    write(tmp / "helper.py", "TAG = 'h1'\n")
    write(tmp / "devrun.yaml", f"""
        apps:
          solo:
            app: "app:app"
            port: {port}
            reload: fork
            {pythonpath(tmp, *libs)}
    """)
    return port


def body(port: int) -> str:
    status, text = get(f"http://127.0.0.1:{port}/", 5)
    return text if status == 200 else f"<{status}>"


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def forkserver_pids(d: Devrun) -> list[int]:
    """The runner's children that are fork servers (generations, spare or serving, carry the
    same command line but another process name)."""
    from tests.helpers import descendants

    assert d.proc is not None
    return [p for p in descendants(d.proc.pid) if comm(p) == "devrun-forksrv"]


def comm(pid: int) -> str:
    """The process's name; "" for one that exited meanwhile (a retired generation, a middle process)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def spare_pid(d: Devrun, serving: int) -> int | None:
    """The warm spare, by its process name: a retired generation still finishing its requests
    is another devrun-gen beside the serving one, and was taken for the spare (a flaky test)."""
    from tests.helpers import descendants

    assert d.proc is not None
    spares = [p for p in descendants(d.proc.pid) if p != serving
              and comm(p) == "devrun-spare"]
    return spares[0] if len(spares) == 1 else None


def reload_to(tmp: Path, port: int, version: int, extra_import: str = "") -> str:
    write(tmp / "app.py", APP.format(version=version, extra_import=extra_import))
    return wait_for(lambda: (b := body(port)).startswith(f"v{version} ") and b, 15, f"version {version}")


def app_servers(folder: Path) -> list[int]:
    """The fork servers working in folder (an app's own, not the shared preloader)."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and comm(int(name)) == "devrun-forksrv":
            try:
                if os.path.realpath(f"/proc/{name}/cwd") == os.path.realpath(folder):
                    found.append(int(name))
            except OSError:
                continue
    return found


def wait_forked(tmp: Path, port: int, start: int) -> tuple[int, str]:
    """Reload until a generation comes from the app's own fork server. The first generation
    is a fork of the shared preloader, and so carries the fork server's command line too: only
    a forked generation started after the app's server was there counts (one started while
    that server preloads is spawned)."""
    version = start
    had_server = False
    for _ in range(20):
        version += 1
        text = reload_to(tmp, port, version)
        pid = int(text.split()[-1])
        if had_server and "--forkserver" in cmdline(pid):
            return version, text
        had_server = had_server or bool(app_servers(tmp))
    raise AssertionError("no generation was ever forked")


def test_generations_are_forked_and_edits_of_helpers_show(tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    port = setup(tmp_path)
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    wait_for(lambda: body(port).startswith("v1 "), 30, "the app")
    version, text = wait_forked(tmp_path, port, 1)
    assert text.startswith(f"v{version} h1 ")
    # The project's own modules are never preloaded: an edit of a helper shows at once.
    write(tmp_path / "helper.py", "TAG = 'h2'\n")
    wait_for(lambda: f"v{version} h2 " in body(port), 15, "the edited helper")
    learned = json.loads((tmp_path / ".devrun" / "preload-solo.json").read_text())
    assert "gevent" in learned and "helper" not in learned and "app" not in learned
    assert "Traceback" not in d.output


def test_a_new_third_party_import_is_picked_up_and_learned(tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    port = setup(tmp_path)
    devrun("up", "--no-dashboard", cwd=tmp_path)
    wait_for(lambda: body(port).startswith("v1 "), 30, "the app")
    version, _ = wait_forked(tmp_path, port, 1)
    reload_to(tmp_path, port, version + 1, extra_import="import fractions")
    cache = tmp_path / ".devrun" / "preload-solo.json"
    wait_for(lambda: "fractions" in json.loads(cache.read_text()), 10, "fractions to be learned")


def test_a_dead_fork_server_is_survived(tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    port = setup(tmp_path)
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    wait_for(lambda: body(port).startswith("v1 "), 30, "the app")
    version, _ = wait_forked(tmp_path, port, 1)
    for pid in forkserver_pids(d):
        os.kill(pid, signal.SIGKILL)
    reload_to(tmp_path, port, version + 1)  # spawned, with a notice
    d.wait_line(lambda ln: "fork server died" in ln, 10)
    wait_forked(tmp_path, port, version + 1)  # and a new server takes over


def test_a_changed_preloaded_module_restarts_the_fork_server(tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    lib = tmp_path / "lib"
    write(lib / "extlib.py", "VALUE = 'ext-1'\n")
    port = setup(tmp_path, libs=(lib,))
    (tmp_path / "app").mkdir()
    write(tmp_path / "devrun.yaml", (tmp_path / "devrun.yaml").read_text().replace('app: "app:app"',
                                                                                   'app: "app:app"\n    cwd: app'))
    os.replace(tmp_path / "app.py", tmp_path / "app" / "app.py")
    os.replace(tmp_path / "helper.py", tmp_path / "app" / "helper.py")
    write(tmp_path / "app" / "helper.py", "import extlib\nTAG = extlib.VALUE\n")
    app_dir = tmp_path / "app"
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    wait_for(lambda: body(port).startswith("v1 ext-1"), 30, "the app")
    version, text = wait_forked(app_dir, port, 1)
    # The next reload goes to the spare: it finds the change itself, before importing anything.
    spare = wait_for(lambda: spare_pid(d, int(text.split()[-1])), 15, "a spare generation")
    # extlib lives outside the project, so the fork server preloads it; it is not watched.
    write(lib / "extlib.py", "VALUE = 'ext-2'\n")
    text = reload_to(app_dir, port, version + 1)
    assert "ext-2" in text, text  # never the stale preloaded copy
    assert int(text.split()[-1]) != spare
    d.wait_line(lambda ln: "extlib.py changed; restarting" in ln, 5)


def listening_inodes(port: int) -> set[str]:
    """The socket inodes listening on 127.0.0.1:port, from /proc/net/tcp."""
    hexport = f"{port:04X}"
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(f":{hexport}") and fields[3] == "0A":  # 0A: LISTEN
            inodes.add(fields[9])
    return inodes


def holds_socket(pid: int, inodes: set[str]) -> bool:
    fds = Path(f"/proc/{pid}/fd")
    return any(os.readlink(fd).removeprefix("socket:[").rstrip("]") in inodes for fd in fds.iterdir()
               if os.readlink(fd).startswith("socket:"))


def test_the_fork_server_never_holds_the_port_and_stops_with_the_runner(
        tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    port = setup(tmp_path)
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    wait_for(lambda: body(port).startswith("v1 "), 30, "the app")
    wait_forked(tmp_path, port, 1)
    servers = forkserver_pids(d)
    assert servers
    # One that outlived the runner would keep the port accepting connections nobody answers.
    inodes = listening_inodes(port)
    assert inodes
    # It holds the socket only while passing it to a fork it was asked for (the spare, forked
    # while the app is idle): never for longer.
    wait_for(lambda: not any(holds_socket(pid, inodes) for pid in servers), 5, "no fork server holding the port")
    assert d.interrupt() == 0
    assert not any(Path(f"/proc/{pid}").exists() and "Z" not in
                   Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[:1] for pid in servers)
    assert not listening_inodes(port)


def test_a_reload_adopts_the_spare_forked_while_the_app_was_idle(
        tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    port = setup(tmp_path)
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    wait_for(lambda: body(port).startswith("v1 "), 30, "the app")
    version, text = wait_forked(tmp_path, port, 1)
    serving = int(text.split()[-1])
    spare = wait_for(lambda: spare_pid(d, serving), 15, "a spare generation")
    text = reload_to(tmp_path, port, version + 1)
    assert int(text.split()[-1]) == spare, d.output  # the spare became the new generation
    assert text.startswith(f"v{version + 1} h1 ")  # with the code saved after it was forked


THREADED_LIB = """
    import time
    from gevent import monkey
    # What a C extension (gRPC, a BLAS pool) does at import: a real OS thread, not a greenlet.
    monkey.get_original("_thread", "start_new_thread")(time.sleep, (300,))
    VALUE = "threaded"
"""


def test_a_module_that_starts_an_os_thread_is_never_preloaded(tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    lib = tmp_path.parent / f"{tmp_path.name}-lib"  # outside the project: a preload candidate
    write(lib / "threadedlib.py", THREADED_LIB)
    port = setup(tmp_path, libs=(lib,))
    write(tmp_path / "helper.py", "import threadedlib\nTAG = threadedlib.VALUE\n")
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    wait_for(lambda: body(port).startswith("v1 threaded"), 30, "the app")
    version, text = wait_forked(tmp_path, port, 1)
    assert text.startswith(f"v{version} threaded ")
    d.wait_line(lambda ln: "preloading threadedlib started an OS thread" in ln, 10)
    reload_to(tmp_path, port, version + 1)  # served by a server that preloaded without it
    assert "threadedlib" not in json.loads((tmp_path / ".devrun" / "preload-solo.json").read_text())
    for pid in forkserver_pids(d):
        assert len(os.listdir(f"/proc/{pid}/task")) == 1


def test_a_forked_generation_does_not_make_devrun_preload_again(
        tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    """A forked generation reports the fork server's own modules among its imports (the server's
    code, ctypes): they are loaded there already, so no better-preloaded server is started for
    them, and the spare forked meanwhile is kept (it was dropped for a new server: a flaky test)."""
    port = setup(tmp_path)
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    wait_for(lambda: body(port).startswith("v1 "), 30, "the app")
    first, text = wait_forked(tmp_path, port, 1)
    servers = forkserver_pids(d)
    for version in range(first + 1, first + 4):  # each forked one has reported by the next reload
        serving = int(text.split()[-1])
        spare = wait_for(lambda s=serving: spare_pid(d, s), 15, "a spare generation")
        text = reload_to(tmp_path, port, version)
        assert int(text.split()[-1]) == spare, d.output
    assert forkserver_pids(d) == servers
    assert "devrun.worker.forkserver" not in json.loads((tmp_path / ".devrun" / "preload-solo.json").read_text())


def test_a_fork_server_waits_until_the_other_apps_have_started(tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    """Its preloading would take the CPU of the apps still starting: it begins once they are up."""
    port = setup(tmp_path)
    slow_port = free_port()
    with socket.create_server(("127.0.0.1", 0)) as release:
        release.settimeout(30)
        # The slow app's import holds until the test lets it go (one byte on this connection).
        write(tmp_path / "slow" / "slowapp.py", f"""
            import socket, vendored
            with socket.create_connection(("127.0.0.1", {release.getsockname()[1]}), timeout=60) as s:
                s.recv(1)
            def app(environ, start_response):
                start_response('200 OK', [('Content-Type', 'text/plain')])
                return [b'slow']
        """)
        with (tmp_path / "devrun.yaml").open("a") as f:
            f.write(f"  slow:\n    app: 'slowapp:app'\n    port: {slow_port}\n    cwd: slow\n    reload: fork\n"
                    f"    {pythonpath(tmp_path)}\n")
        d = devrun("up", "--no-dashboard", cwd=tmp_path)

        def servers() -> list[int]:
            assert d.proc is not None
            # The apps' own fork servers (generations forked from the shared preloader carry
            # the --forkserver command line too).
            return [p for p in descendants(d.proc.pid) if comm(p) == "devrun-forksrv"]

        held, _ = release.accept()  # slow is importing, and stays so
        with held:
            wait_for(lambda: body(port).startswith("v1 "), 30, "the first app")
            # solo has said what it imported (its preload list is written) while slow still starts.
            wait_for(lambda: (tmp_path / ".devrun" / "preload-solo.json").exists(), 15, "solo's preload list")
            assert servers() == [], "no fork server preloads while another app is starting"
            held.sendall(b"x")
    wait_for(lambda: get(f"http://127.0.0.1:{slow_port}/", 2) == (200, "slow"), 30, "the slow app")
    wait_for(lambda: len(servers()) == 2, 20, "both apps' fork servers, once every app has started")
    wait_forked(tmp_path, port, 1)  # and reloads fork from it
