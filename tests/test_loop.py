"""The runner's loop, driven by scripted inbox histories with fake launchers and no processes
(honcho's test_manager is the model): each history is a sequence of inbox items and edits, and
the assertions are what the loop asked of the launchers and said to the views."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import pytest

from devrun import events, wire
from devrun.config import App, load_config
from devrun.runner.generation import ChildExited, ChildMessage
from devrun.runner.inbox import FilesTouched, FromChild
from devrun.runner.launcher import SpawnLauncher
from devrun.runner.loop import CONFIG_KEY, Runner
from tests.test_supervisor import FakeGen

YAML = """\
apps:
  web:
    app: app:app
    port: {web}
    reload_delay: 0.01
  api:
    app: api:app
    port: {api}
"""


class FakeLauncher(SpawnLauncher):
    """Records what the supervisor asks for; each spawn is a FakeGen."""

    def __init__(self, app: App, log: list[tuple[str, str, int]]):
        self.app, self.log = app, log
        self.gens: list[FakeGen] = []
        self.closed = False

    def spawn(self, app: App, number: int, *args: object, **kwargs: object) -> FakeGen:
        gen = FakeGen(app.name, number, 1000 + number)
        self.gens.append(gen)
        self.log.append(("spawn", app.name, number))
        return gen

    def learn(self, names: list[str], last: bool) -> None:
        self.log.append(("learn", self.app.name, len(names)))

    def close(self) -> None:
        self.closed = True
        self.log.append(("close", self.app.name, 0))


class FakeWatcher:
    def __init__(self) -> None:
        self.changes: list[tuple[str, str, bool]] = []

    def drain(self) -> list[tuple[str, str, bool]]:
        out, self.changes = self.changes, []
        return out

    def add(self, *args: object, **options: object) -> None:
        pass

    def remove(self, *args: object) -> None:
        pass

    def watch_file(self, *args: object) -> None:
        pass

    def unwatch_file(self, *args: object) -> None:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Harness:
    def __init__(self, tmp_path: Path) -> None:
        self.file = tmp_path / "devrun.yaml"
        self.ports = {"web": free_port(), "api": free_port()}
        self.file.write_text(YAML.format(**self.ports))
        (tmp_path / "app.py").write_text("")
        self.log: list[tuple[str, str, int]] = []
        self.launchers: dict[str, FakeLauncher] = {}
        self.seen: list[events.Event] = []
        view = type("View", (), {"handle": staticmethod(self.seen.append)})()
        self.runner = Runner(load_config(self.file), None, [view], launcher=self.launcher)
        self.runner.watcher = self.runner.apps.watcher = self.watcher = FakeWatcher()  # type: ignore[assignment]

    def launcher(self, app: App, listener: socket.socket, env: dict[str, str]) -> FakeLauncher:
        self.launchers[app.name] = launcher = FakeLauncher(app, self.log)
        return launcher

    def start(self) -> None:
        for app in self.runner.apps.wanted:
            self.runner.apps.add(app)

    def gen(self, app: str, index: int = -1) -> FakeGen:
        return self.launchers[app].gens[index]

    def say(self, app: str, gen: FakeGen, message: wire.ChildReport) -> None:
        self.runner._handle(FromChild(self.runner.apps.supervisors[app], ChildMessage(gen, message)))  # type: ignore[arg-type]

    def save(self, key: str, path: str, code: bool = True) -> None:
        """A file event, as the watcher reports it, and the loop's steps until it is due."""
        self.watcher.changes.append((key, path, code))
        self.runner._handle(FilesTouched())
        deadline = self.runner.debouncer.next_deadline()
        assert deadline is not None
        for due_key, batch in self.runner.debouncer.due(deadline):
            self.runner._changed(due_key, batch)

    def close(self) -> None:
        for sup in self.runner.apps.supervisors.values():
            sup.stop()
            if sup.fallback is not None:
                sup.fallback.close()
        for listener in self.runner.apps.listeners.values():
            listener.close()


@pytest.fixture
def h(tmp_path: Path) -> object:
    harness = Harness(tmp_path)
    yield harness
    harness.close()


def test_start_then_a_save_spawns_each_app_once_and_reloads_only_the_one_changed(h: Harness) -> None:
    h.start()
    assert h.log == [("spawn", "web", 1), ("spawn", "api", 1)]
    h.say("web", h.gen("web"), wire.Loaded())
    h.say("web", h.gen("web"), wire.Ready())
    h.save("web", "app.py")
    assert h.log[-1] == ("spawn", "web", 2)
    assert [e.paths for e in h.seen if isinstance(e, events.Reloading)] == [("app.py",)]
    # Messages go to the supervisor that started the generation: the new one loads, the old one retires.
    h.say("web", h.gen("web"), wire.Loaded())
    assert h.gen("web", 0).signals == [signal.SIGUSR1, signal.SIGTERM]


def test_a_burst_of_saves_is_one_reload(h: Harness) -> None:
    h.start()
    h.say("web", h.gen("web"), wire.Ready())
    for path in ("a.py", "b.py", "a.py"):
        h.watcher.changes.append(("web", path, True))
        h.runner._handle(FilesTouched())
    deadline = h.runner.debouncer.next_deadline()
    assert deadline is not None
    for key, batch in h.runner.debouncer.due(deadline):
        h.runner._changed(key, batch)
    assert [entry for entry in h.log if entry[0] == "spawn" and entry[1] == "web"] == [
        ("spawn", "web", 1), ("spawn", "web", 2)]
    assert [e.paths for e in h.seen if isinstance(e, events.Reloading)] == [("a.py", "b.py")]


def test_a_removed_app_s_late_changes_are_not_its_reloads(h: Harness) -> None:
    h.start()
    h.file.write_text(YAML.format(**h.ports).split("  api:")[0])  # api is gone
    h.save(CONFIG_KEY, str(h.file))
    assert ("close", "api", 0) in h.log and "api" not in h.runner.apps.supervisors
    h.watcher.changes.append(("api", "api.py", True))  # reported just before it was removed
    h.runner._handle(FilesTouched())
    assert h.runner.debouncer.next_deadline() is None  # nothing waits to restart an app that is no more


def test_a_config_edit_restarts_what_changed_and_leaves_the_rest(h: Harness) -> None:
    h.start()
    h.file.write_text(YAML.format(**h.ports).replace("reload_delay: 0.01", "reload_delay: 0.02"))
    h.save(CONFIG_KEY, str(h.file))
    assert h.log[2:] == [("close", "web", 0), ("spawn", "web", 1)]
    notices = [e.text for e in h.seen if isinstance(e, events.Notice) and e.app == "web"]
    assert notices == ["changed in devrun.yaml: restarting"]


def test_an_invalid_config_edit_changes_nothing(h: Harness) -> None:
    h.start()
    h.file.write_text("apps:\n  web:\n    app: app:app\n    port: not-a-port\n")
    h.save(CONFIG_KEY, str(h.file))
    assert h.log == [("spawn", "web", 1), ("spawn", "api", 1)]
    assert any(isinstance(e, events.ConfigRejected) for e in h.seen)


def test_commands_act_through_the_supervisors(h: Harness) -> None:
    h.start()
    h.say("web", h.gen("web"), wire.Ready())
    h.runner._handle(events.Command("restart", "web"))
    assert h.log[-1] == ("spawn", "web", 2)
    h.runner._handle(events.Command("stop", "api"))
    assert h.runner.apps.supervisors["api"].stopping and not h.launchers["api"].closed  # `devrun start` may follow
    h.runner._handle(events.Command("start", "api"))
    assert h.log[-1] == ("spawn", "api", 2)
    h.runner._handle(events.Command("quit"))
    assert h.runner.stop_requested == 1


def test_an_exit_reaches_only_its_own_app(h: Harness) -> None:
    h.start()
    web, api = h.gen("web"), h.gen("api")
    h.say("web", web, wire.Ready())
    h.say("api", api, wire.Ready())
    h.runner._handle(FromChild(h.runner.apps.supervisors["api"], ChildExited(api, 1)))  # type: ignore[arg-type]
    assert [e.app for e in h.seen if isinstance(e, events.Exited)] == ["api"]
    assert h.runner.apps.supervisors["web"].current is web


def test_the_loop_sleeps_until_the_earliest_deadline(h: Harness) -> None:
    h.start()
    h.watcher.changes.append(("web", "app.py", True))
    h.runner._handle(FilesTouched())
    debounced = h.runner.debouncer.next_deadline()
    assert debounced is not None and h.runner._next_deadline() <= debounced
