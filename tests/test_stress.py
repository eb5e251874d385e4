"""Bounded stress through a real `devrun up`: restart churn (C30), and 30 s of folders appearing and
vanishing, devrun.yaml edits, code saves and crashes at once. Afterwards the runner reloads as
usual, stops at once, and holds no more fds, threads or processes than it started with."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from devrun.control import client as control
from tests.helpers import Devrun, descendants, free_port, get, wait_for, write

pytestmark = pytest.mark.process  # every test here starts processes

APP = """
import os
def app(environ, start_response):
    if environ["PATH_INFO"] == "/crash":
        os._exit(3)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"{tag} v{version} " + os.environ.get("ROUND", "-").encode()]
"""


def config(pa: int, pb: int, round_: int) -> str:
    return f"""apps:
  a:
    app: "app:app"
    cwd: a
    port: {pa}
    graceful_timeout: 1
    backoff: {{initial: 0.1, max: 0.5}}
  b:
    app: "app:app"
    cwd: b
    port: {pb}
    graceful_timeout: 1
    env: {{ROUND: "{round_}"}}
"""


def body(port: int) -> str:
    status, text = get(f"http://127.0.0.1:{port}/", 5)
    return text if status == 200 else f"<{status}>"


def snapshot(d: Devrun) -> tuple[int, int, int, int]:
    """(fds, threads, live descendants, zombie children) of the runner."""
    assert d.proc is not None
    pid = d.proc.pid
    kids = descendants(pid)
    zombies = 0
    for kid in kids:
        with contextlib.suppress(OSError, IndexError):
            if Path(f"/proc/{kid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                zombies += 1
    return len(os.listdir(f"/proc/{pid}/fd")), len(os.listdir(f"/proc/{pid}/task")), len(kids) - zombies, zombies


def settled(d: Devrun, start: tuple[int, int, int, int]) -> bool:
    fds, threads, kids, zombies = snapshot(d)
    return fds <= start[0] + 2 and threads <= start[1] and kids == start[2] and zombies == 0


def names(d: Devrun) -> list[str]:
    assert d.proc is not None
    out = []
    for kid in descendants(d.proc.pid):
        with contextlib.suppress(OSError):
            out.append(Path(f"/proc/{kid}/comm").read_text().strip())
    return out


def steady(d: Devrun, apps: int) -> bool:
    """Each app exactly at rest: one serving generation and its spare (the apps are edited), and
    nothing retiring (the state to compare before and after), beside the one shared preloader
    both are forked from: the apps import nothing it lacks, so none has a fork server of its own."""
    got = names(d)
    return (all(got.count(n) == apps for n in ("devrun-gen", "devrun-spare"))
            and got.count("devrun-preload") == 1 and len(got) == 2 * apps + 1)


def project(tmp: Path) -> tuple[int, int]:
    pa, pb = free_port(), free_port()
    write(tmp / "a" / "app.py", APP.format(tag="a", version=1))
    write(tmp / "b" / "app.py", APP.format(tag="b", version=1))
    write(tmp / "devrun.yaml", config(pa, pb, 0))
    return pa, pb


def warm(d: Devrun, tmp: Path, ports: dict[str, int]) -> int:
    """Reload the apps until each is served by a forked generation beside its spare: the state
    to compare with. Returns the last version written."""
    for version in range(2, 22):
        for tag, port in ports.items():
            write(tmp / tag / "app.py", APP.format(tag=tag, version=version))
            wait_for(lambda t=tag, p=port, v=version: body(p).startswith(f"{t} v{v} "), 15, f"{tag} v{version}")
        with contextlib.suppress(AssertionError):
            wait_for(lambda: steady(d, len(ports)), 3, "forked generations at rest")
            return version
    raise AssertionError(f"never at rest: {names(d)}; output:\n{d.output[-3000:]}")


def last_started_is_ready(d: Devrun) -> bool:
    starts = [ln for ln in d.lines if "starting (pid" in ln]
    pid = starts[-1].split("pid ")[1].split(",")[0]
    return any("ready http" in ln and f"(pid {pid}," in ln for ln in d.lines)


def test_restart_churn_leaks_nothing(tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    pa, pb = project(tmp_path)
    write(tmp_path / "devrun.yaml", config(pa, pb, 0).split("  b:")[0])
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    wait_for(lambda: body(pa).startswith("a v1 "), 30, "a")
    warm(d, tmp_path, {"a": pa})
    start = snapshot(d)
    sock = tmp_path / ".devrun" / "control.sock"
    for _ in range(50):
        control.request(sock, "restart", apps=["a"])
    wait_for(lambda: last_started_is_ready(d), 30, f"the last generation ready; output:\n{d.output[-2500:]}")
    wait_for(lambda: body(pa).startswith("a v"), 15, "a serving after the churn")
    assert "in use" not in d.output
    wait_for(lambda: settled(d, start) and steady(d, 1), 20,
             f"the runner back to {start}: {snapshot(d)}; output:\n{d.output[-2500:]}")
    assert d.interrupt() == 0
    with socket.socket() as s:  # the port is free again (TIME_WAIT aside, as devrun binds)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", pa))


def test_thirty_seconds_of_everything_at_once(tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    pa, pb = project(tmp_path)
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    wait_for(lambda: body(pa).startswith("a v1 ") and body(pb).startswith("b v1 "), 30, "both apps")
    version = warm(d, tmp_path, {"a": pa, "b": pb})
    start = snapshot(d)

    tree = tmp_path / "a" / "pkg"
    end = time.monotonic() + 30
    tick = 0
    round_ = 0
    while time.monotonic() < end:
        tick += 1
        folder = tree / f"f{tick % 7}" / "sub"
        if folder.exists():
            for p in sorted(folder.parent.rglob("*"), reverse=True):
                p.rmdir() if p.is_dir() else p.unlink()
            folder.parent.rmdir()
        else:
            folder.mkdir(parents=True)
            (folder / "gen.py").write_text("X = 1\n")  # a build dropping files into new folders
        if tick % 6 == 0:  # every 0.3 s: devrun.yaml edited (b restarts with a new env)
            round_ += 1
            write(tmp_path / "devrun.yaml", config(pa, pb, round_))
        if tick % 10 == 0:  # every 0.5 s: a code save
            version += 1
            write(tmp_path / "a" / "app.py", APP.format(tag="a", version=version))
        if tick % 60 == 0:  # now and then, a crash
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"http://127.0.0.1:{pa}/crash", timeout=2)
        time.sleep(0.05)  # the pace of the load itself, not a synchronisation
    assert d.proc is not None and d.proc.poll() is None, d.output[-3000:]

    # It still reloads in its normal time, and serves the last config.
    version += 1
    write(tmp_path / "a" / "app.py", APP.format(tag="a", version=version))
    wait_for(lambda: body(pa).startswith(f"a v{version} "), 5, f"a v{version} after the storm")
    wait_for(lambda: body(pb).endswith(f" {round_}"), 10, f"b with round {round_}")
    for sub in tree.iterdir():  # the tree back to how it was
        for p in sorted(sub.rglob("*"), reverse=True):
            p.rmdir() if p.is_dir() else p.unlink()
        sub.rmdir()
    warm(d, tmp_path, {"a": pa, "b": pb})  # b was restarted by the last edit: its first generation is spawned
    wait_for(lambda: settled(d, start) and steady(d, 2), 30,
             f"the runner back to {start}: {snapshot(d)} {names(d)}; output:\n{d.output[-4000:]}")
    kids = descendants(d.proc.pid)
    t0 = time.monotonic()
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(10) == 0
    assert time.monotonic() - t0 < 2.0
    wait_for(lambda: not [k for k in kids if Path(f"/proc/{k}").exists()], 3, "every process gone")
