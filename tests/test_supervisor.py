"""The AppSupervisor state machine, driven with fake generations and a fake clock."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from devrun import events, wire
from devrun.config import App, AppConfig
from devrun.events import AppStatus as State
from devrun.runner.generation import ChildExited, ChildMessage, Generation, GenState
from devrun.runner.launcher import SpawnLauncher
from devrun.runner.policy import GIT_LOCK_WAIT, MAX_CRASHES
from devrun.runner.supervisor import AppSupervisor


class FakeProc:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.stdout = None

    def wait(self) -> int:
        return 0


class FakeGen(Generation):
    """A real Generation, whose signals and messages are recorded instead of sent."""

    def __init__(self, app: str, number: int, pid: int) -> None:
        super().__init__(app, number, FakeProc(pid), started=0.0)
        self.signals: list[int] = []
        self.told: list[wire.Message] = []

    def signal_group(self, sig: int) -> None:
        self.signals.append(sig)

    def _signal_leader(self, sig: int) -> None:
        self.signals.append(sig)

    def tell(self, message: wire.Message) -> bool:
        self.told.append(message)
        return True

    def group_gone(self, now: float) -> bool:
        return True  # a fake leads no real group


class Rig(SpawnLauncher):
    def __init__(self, busy: bool = False, root: Path = Path("/tmp"), **cfg: object) -> None:
        self.now = 100.0
        self.gens: list[FakeGen] = []
        self.events: list[events.Event] = []
        self.busy = busy
        app = App("web", AppConfig.model_validate({"app": "m:app", "port": 5000, **cfg}), root)
        self.idle_ticks = 0
        self.idle_busy = False
        self.sup = AppSupervisor(app, None, {}, self.events.append, lambda item: None,  # type: ignore[arg-type]
                                 launcher=self, clock=lambda: self.now, busy=lambda: self.busy)  # type: ignore[arg-type]

    # The Rig is the supervisor's launcher too (SpawnLauncher's no-ops for the rest).
    def spawn(self, app: App, number: int, *args: object, **kwargs: object) -> FakeGen:
        gen = FakeGen(app.name, number, 1000 + number)
        self.gens.append(gen)
        return gen

    def idle_work(self) -> bool:
        return self.idle_busy

    def idle_tick(self) -> None:
        self.idle_ticks += 1

    def say(self, gen: FakeGen, message: wire.ChildReport) -> None:
        self.sup.handle(ChildMessage(gen, message))  # type: ignore[arg-type]

    def say_line(self, gen: FakeGen, line: bytes) -> None:
        """As the reader thread does: a line that is not a report of ours never arrives."""
        message = wire.decode(line)
        if isinstance(message, wire.ChildReport):
            self.say(gen, message)

    def exit(self, gen: FakeGen, code: int) -> None:
        self.sup.handle(ChildExited(gen, code))  # type: ignore[arg-type]

    def kinds(self) -> list[str]:
        return [type(e).__name__ for e in self.events]


def test_start_ready_reload_is_blue_green() -> None:
    r = Rig()
    r.sup.start()
    [g1] = r.gens
    assert r.sup.state is State.STARTING
    r.say(g1, wire.Ready())
    assert r.sup.state is State.READY and r.sup.current is g1
    r.sup.reload(("app.py",))
    g2 = r.gens[1]
    # The old generation keeps serving until the new one is ready.
    assert r.sup.state is State.RELOADING and g1.signals == []
    r.say(g2, wire.Ready())
    assert r.sup.current is g2 and g1.signals == [signal.SIGTERM]
    assert g1.kill_at == r.now + 5.0 + 1.0
    r.exit(g1, -signal.SIGTERM)
    assert r.sup.retiring == []
    kinds = [k for k in r.kinds() if k != "StateChanged"]
    assert kinds == ["Starting", "Ready", "Reloading", "Starting", "Ready", "Exited"]
    states = [e.state for e in r.events if isinstance(e, events.StateChanged)]
    assert states == ["starting", "ready", "reloading", "ready"]


def test_a_newer_change_kills_the_stale_pending_generation() -> None:
    r = Rig()
    r.sup.start()
    r.say(r.gens[0], wire.Ready())
    r.sup.reload(("a.py",))
    r.sup.reload(("b.py",))
    g1, g2, g3 = r.gens
    assert g2.signals == [signal.SIGKILL] and r.sup.pending is g3
    r.say(g2, wire.Ready())  # too late: it must never be promoted
    assert r.sup.current is g1
    r.say(g3, wire.Ready())
    assert r.sup.current is g3


def test_a_retired_generation_is_killed_after_its_grace() -> None:
    r = Rig(graceful_timeout=2)
    r.sup.start()
    r.say(r.gens[0], wire.Ready())
    r.sup.reload(("a.py",))
    r.say(r.gens[1], wire.Ready())
    g1 = r.gens[0]
    r.now += 2.9
    r.sup.tick()
    assert g1.signals == [signal.SIGTERM]
    r.now += 0.2
    r.sup.tick()
    assert g1.signals == [signal.SIGTERM, signal.SIGKILL]


def test_crash_backs_off_exponentially_and_a_change_restarts_at_once() -> None:
    r = Rig(backoff={"initial": 1, "max": 3})
    r.sup.start()
    r.say(r.gens[0], wire.Ready())
    delays = []
    for n in range(4):
        r.exit(r.gens[-1], 1)
        assert r.sup.state is (State.CRASHED if n == 0 else State.BACKOFF)
        delays.append(r.sup.backoff.restart_at - r.now)  # type: ignore[operator]
        r.now = r.sup.backoff.restart_at  # type: ignore[assignment]
        r.sup.tick()
        r.say(r.gens[-1], wire.Ready())
    assert delays == [1, 2, 3, 3]
    r.exit(r.gens[-1], 1)
    count = len(r.gens)
    r.sup.reload(("fix.py",))
    assert len(r.gens) == count + 1 and r.sup.backoff.restart_at is None


def test_a_crash_loop_settles_into_waiting_for_a_change() -> None:
    r = Rig(backoff={"initial": 0.1, "max": 0.2})
    r.sup.start()
    for _ in range(MAX_CRASHES - 1):
        r.say(r.gens[-1], wire.Ready())
        r.exit(r.gens[-1], 1)
        r.now = r.sup.backoff.restart_at  # type: ignore[assignment]
        r.sup.tick()
    r.say(r.gens[-1], wire.Ready())
    r.exit(r.gens[-1], 1)  # the last straw: no restart is scheduled
    assert r.sup.backoff.restart_at is None and r.sup.state is State.CRASHED
    count = len(r.gens)
    r.now += 3600
    r.sup.tick()
    assert len(r.gens) == count  # it waits, however long
    assert "waiting for a change" in str(r.events[-1])
    r.sup.reload(("fix.py",))  # a save starts it again, with a fresh backoff
    assert len(r.gens) == count + 1 and r.sup.backoff.failures == 0


def test_a_change_to_a_file_the_app_writes_itself_restarts_nothing() -> None:
    r = Rig()
    r.sup.start()
    r.say(r.gens[0], wire.Writes(paths=('app.log',)))
    r.say(r.gens[0], wire.Ready())
    r.sup.reload(("app.log",))
    r.sup.reload(("app.log",))
    assert len(r.gens) == 1
    warnings = [e for e in r.events if isinstance(e, events.Notice) and "app.log" in e.text]
    assert len(warnings) == 1 and "writes it itself" in warnings[0].text  # said once
    r.sup.reload(("app.log", "views.py"))  # with a real edit, it reloads
    assert len(r.gens) == 2


def test_the_debugger_pin_failures_are_handed_to_the_next_generation() -> None:
    r = Rig()
    seen: list[object] = []
    r.spawn = lambda app, number, *args, **kwargs: (seen.append(kwargs.get("pin_failures")),  # type: ignore[method-assign]
                                                    Rig.spawn(r, app, number))[1]
    r.sup.start()
    r.say(r.gens[0], wire.Ready())
    r.say(r.gens[0], wire.PinFailed(count=7))
    r.say_line(r.gens[0], b'{"type": "pin_failed", "count": "11"}')  # not a count: ignored
    r.sup.reload(("app.py",))
    assert seen == [0, 7]


def test_a_missing_folder_is_a_failed_start_and_its_return_starts_the_app(tmp_path: Path) -> None:
    root = tmp_path / "svc"
    root.mkdir()
    r = Rig(root=root)
    rewatched: list[bool] = []
    r.sup.rewatch = lambda: rewatched.append(True)
    r.sup.start()
    r.say(r.gens[0], wire.Ready())
    root.rmdir()
    r.sup.reload(("app.py",))
    assert len(r.gens) == 1 and r.gens[0].signals == [signal.SIGTERM]  # never serving vanished code
    assert r.sup.state is State.ERROR and "is missing" in r.events[-1].summary  # type: ignore[attr-defined]
    r.now += 5
    r.sup.tick()
    assert len(r.gens) == 1
    root.mkdir()
    r.now += 5
    r.sup.tick()
    assert len(r.gens) == 2 and rewatched == [True]


def test_a_start_that_fails_with_an_os_error_is_reported_not_raised() -> None:
    r = Rig()

    def fail(*args: object, **kwargs: object) -> FakeGen:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    r.spawn = fail  # type: ignore[method-assign]
    r.sup.start()
    assert r.sup.state is State.ERROR
    assert "Resource temporarily unavailable" in r.events[-1].summary  # type: ignore[attr-defined]


def test_a_generation_that_stayed_up_resets_the_backoff() -> None:
    r = Rig(backoff={"initial": 1, "max": 8})
    r.sup.start()
    r.say(r.gens[0], wire.Ready())
    r.exit(r.gens[0], 1)
    r.now = r.sup.backoff.restart_at  # type: ignore[assignment]
    r.sup.tick()
    r.say(r.gens[1], wire.Ready())
    r.now += 60
    r.exit(r.gens[1], 1)
    assert r.sup.backoff.restart_at == r.now + 1


def test_crash_of_the_old_generation_during_a_reload_spawns_nothing_extra() -> None:
    r = Rig()
    r.sup.start()
    r.say(r.gens[0], wire.Ready())
    r.sup.reload(("a.py",))
    r.exit(r.gens[0], 1)  # the old one dies while the new one loads
    r.say(r.gens[1], wire.Ready())
    r.now += 60
    r.sup.tick()
    assert len(r.gens) == 2 and r.sup.current is r.gens[1]


def test_new_code_that_dies_before_ready_replaces_the_old_code() -> None:
    r = Rig()
    r.sup.start()
    r.say(r.gens[0], wire.Ready())
    r.sup.reload(("a.py",))
    r.exit(r.gens[1], 3)
    # Never keep serving the code that was replaced.
    assert r.gens[0].signals == [signal.SIGTERM] and r.sup.current is None
    assert r.sup.state is State.CRASHED


def test_failed_load_is_served_and_reported() -> None:
    r = Rig()
    r.sup.start()
    r.say(r.gens[0], wire.Failed(summary='SyntaxError: invalid syntax (app.py, line 3)', traceback='tb'))
    assert r.sup.state is State.ERROR and r.sup.current is r.gens[0]
    failed = [e for e in r.events if isinstance(e, events.AppFailed)]
    assert failed[0].summary == "SyntaxError: invalid syntax (app.py, line 3)"


def test_changes_wait_for_git_and_reload_once() -> None:
    r = Rig(busy=True)
    r.sup.start()
    r.say(r.gens[0], wire.Ready())
    r.sup.reload(("a.py",))
    r.sup.reload(("b.py",))
    assert len(r.gens) == 1
    r.busy = False
    r.sup.tick()
    assert len(r.gens) == 2
    assert [e.paths for e in r.events if isinstance(e, events.Reloading)] == [("a.py", "b.py")]


def test_a_stuck_git_lock_is_waited_for_boundedly() -> None:
    r = Rig(busy=True)
    r.sup.start()
    r.sup.reload(("a.py",))
    r.now += GIT_LOCK_WAIT - 0.1
    r.sup.tick()
    assert len(r.gens) == 1
    r.now += 0.2
    r.sup.tick()
    assert len(r.gens) == 2


def test_stop_retires_everything_and_is_done_when_reaped() -> None:
    r = Rig()
    r.sup.start()
    r.say(r.gens[0], wire.Ready())
    r.sup.reload(("a.py",))
    r.sup.stop()
    assert all(g.signals == [signal.SIGTERM] for g in r.gens)
    assert not r.sup.done
    for g in r.gens:
        r.exit(g, 0)
    assert r.sup.done and r.sup.state is State.STOPPED
    r.sup.reload(("late.py",))  # changes after stop start nothing
    assert len(r.gens) == 2


@pytest.mark.parametrize("text", ["é" * 5000, "x" * 10000, "\u2603" * 3000])
def test_wire_messages_stay_whole_json_within_pipe_buf(text: str) -> None:
    import json

    data = wire.encode(wire.Failed("ValueError: " + text, "Traceback\n" + text + "\nEnd"), wire.MAX_WIRE)
    assert len(data) <= 4096 and data.endswith(b"\n")
    msg = json.loads(data)
    assert msg["type"] == "failed" and msg["traceback"].endswith("End") and msg["summary"].startswith("ValueError")
    decoded = wire.decode(data)
    assert isinstance(decoded, wire.Failed) and decoded.traceback.endswith("End")


def test_a_loaded_generation_accepts_only_after_the_old_one_stopped_accepting() -> None:
    r = Rig()
    r.sup.start()
    r.say(r.gens[0], wire.Loaded())
    g1 = r.gens[0]
    assert g1.signals == [signal.SIGUSR1]  # nothing older: go at once
    r.say(g1, wire.Ready())
    r.sup.reload(("a.py",))
    g2 = r.gens[1]
    r.say(g2, wire.Loaded())
    # The old one is told to stop; the new one waits for it to say it stopped accepting.
    assert g1.signals == [signal.SIGUSR1, signal.SIGTERM] and g2.signals == []
    r.say(g1, wire.Closed())
    assert g2.signals == [signal.SIGUSR1]
    r.say(g2, wire.Ready())
    assert r.sup.state is State.READY


def test_go_is_given_after_go_wait_even_if_the_old_one_never_says_closed() -> None:
    r = Rig()
    r.sup.start()
    r.say(r.gens[0], wire.Loaded())
    r.sup.reload(("a.py",))
    g2 = r.gens[1]
    r.say(g2, wire.Loaded())
    assert g2.signals == []
    r.now += 0.6
    r.sup.tick()
    assert g2.signals == [signal.SIGUSR1]


def test_the_runner_drops_output_not_lifecycle_when_it_falls_behind(tmp_path: Path) -> None:
    from devrun.config import Config
    from devrun.runner import loop as runner_module
    from devrun.runner.generation import ChildExited, ChildOutput
    from devrun.runner.loop import Runner

    app = App("web", AppConfig.model_validate({"app": "m:app", "port": 5000}), tmp_path)
    r = Runner(Config(tmp_path / "devrun.yaml", {"web": app}), ["web"], [])
    gen = FakeGen("web", 1, 10)
    owner: object = object()
    for i in range(runner_module.MAX_BACKLOG + 50):
        r.post_child(owner, ChildOutput(gen, f"line {i}"))  # type: ignore[arg-type]
    batch = wire.Requests((wire.Served("GET"),) * 3)  # three request lines: counted as three
    r.post_child(owner, ChildMessage(gen, batch))  # type: ignore[arg-type]
    r.post_child(owner, ChildExited(gen, 0))  # type: ignore[arg-type]
    assert r.inbox.qsize() == runner_module.MAX_BACKLOG + 1  # the exit is never dropped
    assert r.dropped == {"web": 53}
    seen: list[events.Event] = []
    r.views = [type("V", (), {"handle": staticmethod(seen.append)})()]
    r._report_dropped()
    assert [e.text for e in seen if isinstance(e, events.Notice)] == [
        "53 output/request lines dropped: the runner fell behind"]


def ready_rig(root: Path, templates: bool = True) -> tuple[Rig, FakeGen]:
    r = Rig(root=root)
    r.sup.start()
    [g1] = r.gens
    r.say(g1, wire.Loaded())
    r.say(g1, wire.Ready(framework='Flask 3.1', templates=templates))
    assert g1.state is GenState.ACCEPTING
    return r, g1


def test_a_template_edit_the_framework_cannot_apply_restarts_the_app(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "a.html").write_text("x")
    (tmp_path / "static").mkdir()
    (tmp_path / "static" / "site.css").write_text("x")
    r, g1 = ready_rig(tmp_path, templates=False)
    r.sup.refresh(("static/site.css",))  # a stylesheet is served from disk: swapped in place all the same
    assert g1.told == [wire.Refresh("css", ("static/site.css",))] and len(r.gens) == 1
    r.sup.refresh(("templates/a.html",))
    assert len(r.gens) == 2 and g1.told[-1] == wire.Refresh("css", ("static/site.css",))  # the old one not told
    assert [e.paths for e in r.events if isinstance(e, events.Reloading)] == [("templates/a.html",)]


def test_what_the_framework_is_is_said_once(tmp_path: Path) -> None:
    r, g1 = ready_rig(tmp_path)
    r.sup.reload(("app.py",))
    r.say(r.gens[1], wire.Loaded())
    r.say(r.gens[1], wire.Ready(framework='Flask 3.1', templates=True))
    assert [e.text for e in r.events if isinstance(e, events.Notice)] == ["Flask 3.1"]


def test_a_live_only_change_tells_the_serving_generation_and_restarts_nothing(tmp_path: Path) -> None:
    (tmp_path / "static").mkdir()
    (tmp_path / "static" / "site.css").write_text("x")
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "a.html").write_text("x")
    r, g1 = ready_rig(tmp_path)
    # An atomic save: the temporary file is gone by now, the stylesheet is what changed.
    r.sup.refresh(("static/site.css.tmp", "static/site.css"))
    assert g1.told == [wire.Refresh("css", ("static/site.css.tmp", "static/site.css"))]
    r.sup.refresh(("templates/a.html", "static/site.css"))
    assert isinstance(g1.told[-1], wire.Refresh) and g1.told[-1].how == "reload"
    assert len(r.gens) == 1 and g1.signals == [signal.SIGUSR1]  # no new generation, nothing stopped
    refreshing = [e for e in r.events if isinstance(e, events.Refreshing)]
    assert [e.css for e in refreshing] == [True, False]


def test_a_live_change_during_a_reload_is_left_to_the_new_generation(tmp_path: Path) -> None:
    r, g1 = ready_rig(tmp_path)
    r.sup.reload(("app.py",))
    r.sup.refresh(("templates/a.html",))
    assert g1.told == [] and r.gens[1].told == []
    assert not any(isinstance(e, events.Refreshing) for e in r.events)


def test_page_counts_and_refreshes_come_from_the_serving_generation_only(tmp_path: Path) -> None:
    r, g1 = ready_rig(tmp_path)
    r.say(g1, wire.Pages(count=2))
    r.say(g1, wire.Refreshed(pages=2, how='css'))
    r.sup.reload(("app.py",))
    g2 = r.gens[1]
    r.say(g2, wire.Loaded())
    r.say(g1, wire.Pages(count=0))  # the retiring one's streams are closing: not news
    r.say(g2, wire.Refreshed(pages=2, how='reload'))
    r.say(g2, wire.Refreshed(pages=0, how='reload'))  # nobody to tell: not worth a line
    assert [(type(e).__name__, getattr(e, "count", getattr(e, "pages", None))) for e in r.events
            if isinstance(e, events.Pages | events.Refreshed)] == [("Pages", 2), ("Refreshed", 2), ("Refreshed", 2)]


def test_after_a_tick_the_next_deadline_is_never_in_the_past() -> None:
    """The loop sleeps until next_deadline(): one in the past would spin the runner at 100 % CPU."""
    r = Rig()
    r.sup.start()  # loading, and slow: past SLOW_START with no fallback page to show
    for _ in range(3):
        r.now += 4.0
        r.sup.tick()
        assert r.sup.next_deadline() > r.now
    r.say(r.gens[0], wire.Loaded())
    r.say(r.gens[0], wire.Ready())
    r.sup.reload(("app.py",))
    r.say(r.gens[1], wire.Loaded())  # the old one retires; the new one waits for it to close
    for _ in range(3):
        r.now += 4.0
        r.sup.tick()
        assert r.sup.next_deadline() > r.now


def test_a_steady_stream_of_items_never_postpones_a_poll() -> None:
    """The loop ticks a supervisor once next_deadline() has passed, and between ticks handles
    items (a request line every 10 ms while a browser works): each item makes it ask again,
    and a deadline that moved with the clock would never come."""
    r = Rig()
    r.sup.start()
    r.say(r.gens[0], wire.Loaded())
    r.say(r.gens[0], wire.Ready())
    r.idle_busy = True  # a spare to fork: the launcher wants its idle ticks
    r.sup.tick()
    for _ in range(100):  # one second of items, as the loop sees them
        r.now += 0.01
        r.say(r.gens[0], wire.Requests((wire.Served("GET", "/"),)))
        if r.now >= r.sup.next_deadline():
            r.sup.tick()
    assert r.idle_ticks >= 5


def test_an_app_stopped_by_request_wakes_the_loop_for_nothing() -> None:
    r = Rig()
    r.sup.start()
    r.say(r.gens[0], wire.Ready())
    r.sup.stop(final=False)  # `devrun stop web`: its port says so until `devrun start`
    r.exit(r.gens[0], 0)
    r.sup.tick()
    assert r.sup.next_deadline() == float("inf")
