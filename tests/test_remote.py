"""The runner's side of the control socket, without a runner: status from events, verbs as
Commands for the main thread, the attach stream; and the one-runner lock."""

from __future__ import annotations

import json
import os
import queue
import threading
from pathlib import Path
from typing import Any

import pytest

from devrun import events
from devrun.control import daemon, remote
from devrun.control.protocol import ControlError
from devrun.control.remote import RemoteView
from tests.helpers import wait_for

APPS = [("web", "http://127.0.0.1:5000/"), ("api", "http://127.0.0.1:5001/")]


def view(post: Any = None) -> RemoteView:
    return RemoteView(APPS, post or (lambda item: None), {"pid": 1, "pin": "123-456-789", "configured": ["web", "api"]})


def test_status_follows_the_events() -> None:
    v = view()
    v.handle(events.StateChanged("web", "ready", 7))
    v.handle(events.Ready("web", 7, APPS[0][1], 5.0))
    v.handle(events.Reloading("web", ("app.py",)))
    v.handle(events.Requests("web", (events.Request("web", "GET", "/", "200", 1.0),) * 3))
    v.handle(events.Pages("web", 2))
    v.handle(events.AppFailed("api", 9, "SyntaxError: bad", "tb"))
    v.handle(events.StateChanged("api", "error", 9))
    st = v.status({})
    web, api = st["apps"]
    assert (web["state"], web["pid"], web["reloads"], web["last_change"], web["pages"], web["requests"]) == \
        ("ready", 7, 1, ["app.py"], 2, 3)
    assert web["uptime"] is not None and web["uptime"] >= 0
    assert (api["state"], api["error"]) == ("error", "SyntaxError: bad")
    assert st["pid"] == 1 and st["config_problems"] == []
    v.handle(events.ConfigRejected("", ("devrun.yaml:2:3: apps.web.port: bad",)))
    assert v.status({})["config_problems"] == ["devrun.yaml:2:3: apps.web.port: bad"]
    v.handle(events.AppsChanged("", (("web", APPS[0][1]),)))
    st = v.status({})
    assert [a["name"] for a in st["apps"]] == ["web"] and st["apps"][0]["pid"] == 7 and st["config_problems"] == []


def test_a_verb_becomes_a_command_and_replies_once_the_main_thread_acted() -> None:
    inbox: queue.Queue[object] = queue.Queue()
    v = view(inbox.put)
    result: list[Any] = []
    t = threading.Thread(target=lambda: result.append(v.command("restart")({"apps": ["web"]})))
    t.start()
    command = inbox.get(timeout=5)
    assert isinstance(command, events.Command) and (command.verb, command.app) == ("restart", "web")
    assert not result  # no reply before the main thread has acted
    command.done.set()
    t.join(5)
    assert result == [{"verb": "restart", "apps": ["web"]}]


@pytest.mark.parametrize("args", [{"apps": ["nope"]}, {"apps": "web"}, {"apps": [1]}])
def test_a_bad_verb_argument_is_an_error_and_posts_nothing(args: dict[str, Any]) -> None:
    posted: list[object] = []
    with pytest.raises(ControlError):
        view(posted.append).command("stop")(args)
    assert posted == []


def test_attach_gets_the_apps_the_pin_and_the_history_then_live_events() -> None:
    v = view()
    v.handle(events.Ready("web", 7, APPS[0][1], 5.0))
    sent: list[dict[str, Any]] = []
    stop_after = 5

    def send(item: dict[str, Any]) -> bool:
        sent.append(item)
        return len(sent) < stop_after  # the client leaves after the fifth

    t = threading.Thread(target=v.events, args=({}, send))
    t.start()
    threading.Thread(target=lambda: [v.handle(events.Output("web", f"line {i}")) for i in range(3)]).start()
    t.join(10)
    assert not t.is_alive() and not v.subscribers  # a client that left is forgotten
    assert sent[0]["event"] == "AppsChanged" and sent[0]["apps"] == [list(a) for a in APPS]
    assert sent[1]["event"] == "Notice" and "123-456-789" in sent[1]["text"]
    assert sent[2]["event"] == "Ready" and events.from_dict(sent[2]) == events.Ready("web", 7, APPS[0][1], 5.0,
                                                                                     at=sent[2]["at"])
    assert [s["line"] for s in sent[3:]] == ["line 0", "line 1"]


def test_one_runner_per_config_and_a_stale_pid_file_is_taken_over(tmp_path: Path) -> None:
    cfg = tmp_path / "devrun.yaml"
    cfg.write_text("apps: {}\n")
    first = daemon.RunnerLock(cfg)
    first.acquire()
    try:
        assert daemon.running_pid(cfg) == os.getpid()
        with pytest.raises(daemon.AlreadyRunning) as info:
            daemon.RunnerLock(cfg).acquire()
        assert info.value.pid == os.getpid()
        assert isinstance(info.value, ControlError)  # one AlreadyRunning, the lock's and the socket's
    finally:
        first.release()
    # A runner killed with SIGKILL leaves its pid in the file, but not its lock.
    (tmp_path / ".devrun" / "runner.pid").write_text("999999\n")
    assert daemon.running_pid(cfg) is None
    again = daemon.RunnerLock(cfg)
    again.acquire()
    again.release()
    assert oct((tmp_path / ".devrun").stat().st_mode & 0o777) == "0o700"


def test_an_app_named_many_times_is_acted_on_once() -> None:
    inbox: queue.Queue[object] = queue.Queue()
    v = view(inbox.put)
    result: list[Any] = []
    t = threading.Thread(target=lambda: result.append(v.command("restart")({"apps": ["web"] * 300 + ["api", "web"]})))
    t.start()
    commands = [inbox.get(timeout=5), inbox.get(timeout=5)]
    for command in commands:
        command.done.set()  # type: ignore[attr-defined]
    t.join(5)
    assert [(c.verb, c.app) for c in commands] == [("restart", "web"), ("restart", "api")]  # type: ignore[attr-defined]
    assert inbox.empty() and result == [{"verb": "restart", "apps": ["web", "api"]}]


def test_the_attach_history_is_bounded_in_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(remote, "HISTORY_BYTES", 1_000_000)
    v = view()
    line = "x" * 16 * 1024  # the longest output line a child's reader passes on
    for i in range(200):  # about 3.2 MB of output: 200 events, far fewer than HISTORY (5000)
        v.handle(events.Output("web", f"{i} {line}"))
    kept = [data for data, _ in v.history]
    assert sum(len(json.dumps(d)) for d in kept) <= 1_000_000
    assert v.history_bytes == sum(size for _, size in v.history)
    assert len(kept) >= 50 and kept[-1]["line"].startswith("199 ")  # the newest are kept
    for i in range(10):
        v.handle(events.Requests("web", (events.Request("web", "GET", f"/{i}", "200", 1.0),)))
    assert len(v.history) <= remote.HISTORY


def test_an_attached_client_too_far_behind_in_bytes_is_dropped_and_told(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(remote, "SUBSCRIBER_BYTES", 200_000)
    v = view()
    sent: list[dict[str, Any]] = []
    reading = threading.Event()
    stuck = threading.Event()

    def send(item: dict[str, Any]) -> bool:
        sent.append(item)
        if item.get("event") == "Output":
            reading.set()
            stuck.wait(10)  # a client that stopped reading
        return True

    errors: list[BaseException] = []

    def attach() -> None:
        try:
            v.events({}, send)
        except ControlError as exc:
            errors.append(exc)

    t = threading.Thread(target=attach)
    t.start()
    wait_for(lambda: v.subscribers, 5, "the client to subscribe")
    v.handle(events.Output("web", "first"))
    assert reading.wait(5)
    for i in range(20):  # 20 lines of 16 KiB: more than 200 kB behind, far fewer than 10000 events
        v.handle(events.Output("web", f"{i} " + "y" * 16 * 1024))
    assert not v.subscribers  # dropped by the runner's thread, which never waited for it
    stuck.set()
    t.join(10)
    assert not t.is_alive() and len(errors) == 1 and "fell more than" in str(errors[0])
    assert len(sent) <= 4  # the apps, the PIN, "first": nothing of what it fell behind on



def test_a_batch_of_requests_crosses_the_socket_whole() -> None:
    batch = events.Requests("web", (events.Request("web", "GET", "/a", "200", 1.5, at=10.0),
                                    events.Request("web", "POST", "/b", "500", 3.0, at=11.0)), at=12.0)
    data = json.loads(json.dumps(events.to_dict(batch)))
    assert events.from_dict(data) == batch
    for bad in (["POST", "/b"], ["POST", 3, "500", 3.0, 11.0], ["GET", "/", "200", "fast", 1.0], None):
        data["requests"][1] = bad
        assert events.from_dict(data) is None
    assert events.from_dict({"event": "Requests", "app": "web"}) is None  # no requests at all
