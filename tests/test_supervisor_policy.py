"""Unit tests for the pure restart/reload policy: runner.policy (backoff, git hold) and debounce.Debouncer.

The Debouncer is pure: time is a plain number handed to add() and due(), as the runner's loop does.
"""

from __future__ import annotations

import pytest

from devrun.runner.policy import GIT_LOCK_WAIT, MAX_CRASHES, STABLE_AFTER, Backoff, GitHold, backoff_delay
from devrun.watch import debounce, watcher
from devrun.watch.debounce import MAX_WAIT, Debouncer

# -- backoff_delay -----------------------------------------------------------------------


@pytest.mark.parametrize("failures", [0, -1, -100])
def test_no_failures_means_no_delay(failures: int) -> None:
    assert backoff_delay(failures) == 0.0


@pytest.mark.parametrize(
    ("failures", "delay"),
    [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (6, 10.0), (7, 10.0), (50, 10.0), (1000, 10.0)],
)
def test_doubles_from_half_a_second_up_to_the_cap(failures: int, delay: float) -> None:
    assert backoff_delay(failures) == delay


def test_delays_never_decrease_and_never_exceed_the_cap() -> None:
    delays = [backoff_delay(n) for n in range(0, 64)]
    assert delays == sorted(delays)
    assert max(delays) == 10.0
    assert delays.count(10.0) == 64 - 6  # capped from failure 6 on


def test_custom_base_and_cap() -> None:
    assert backoff_delay(1, base=0.1, cap=1.0) == pytest.approx(0.1)
    assert backoff_delay(3, base=0.1, cap=1.0) == pytest.approx(0.4)
    assert backoff_delay(5, base=0.1, cap=1.0) == 1.0
    assert backoff_delay(2, base=3.0, cap=100.0) == 6.0
    assert backoff_delay(0, base=3.0, cap=100.0) == 0.0


@pytest.mark.parametrize("failures", [1025, 5000])
def test_regression_a_very_long_crash_loop_overflows(failures: int) -> None:
    """Regression (was a bug, devrun/supervisor.py:43): `base * 2 ** (failures - 1)` is computed before the cap, and
    from failures=1025 on the int 2**1024 cannot be converted to float: OverflowError instead of
    the 10 s cap. failures only resets on a change or after 5 s of uptime, so an app that keeps
    crashing for ~3 hours (1024 restarts at 10 s) would crash the runner in _on_exit."""
    assert backoff_delay(failures) == 10.0



# -- Backoff and GitHold -------------------------------------------------------------------


def test_backoff_counts_a_crash_loop_and_settles_after_max_crashes() -> None:
    backoff = Backoff(0.5, 10.0)
    delays = []
    for n in range(MAX_CRASHES - 1):
        delay = backoff.crashed(now=100.0 + n, uptime=0.1)
        assert delay is not None and backoff.restart_at == 100.0 + n + delay
        delays.append(delay)
    assert delays == [backoff_delay(n) for n in range(1, MAX_CRASHES)]
    assert backoff.crashed(now=200.0, uptime=0.1) is None  # waits for a change from now on


def test_a_crash_after_a_stable_run_starts_counting_again() -> None:
    backoff = Backoff(0.5, 10.0)
    backoff.crashed(now=0.0, uptime=0.1)
    backoff.crashed(now=1.0, uptime=0.1)
    assert backoff.crashed(now=2.0, uptime=STABLE_AFTER) == 0.5 and backoff.failures == 1


def test_a_restart_is_due_once_and_cancel_or_reset_drops_it() -> None:
    backoff = Backoff(0.5, 10.0)
    backoff.crashed(now=10.0, uptime=0.1)
    assert not backoff.due(10.4) and backoff.due(10.5) and not backoff.due(11.0)
    backoff.crashed(now=20.0, uptime=0.1)
    backoff.cancel()
    assert backoff.restart_at is None and backoff.failures == 2
    backoff.reset()
    assert backoff.failures == 0


def test_git_hold_keeps_changes_while_busy_and_releases_them_once() -> None:
    busy = [True]
    hold = GitHold(lambda: busy[0])
    assert hold.keep(("a.py",), now=0.0) and hold.keep(("b.py", "a.py"), now=1.0)
    assert hold.until == GIT_LOCK_WAIT and not hold.due(2.0)
    busy[0] = False
    assert hold.due(2.0)
    assert hold.take(("c.py",)) == ("a.py", "b.py", "c.py") and not hold.waiting and hold.until is None
    assert not hold.keep(("d.py",), now=3.0)  # git is done: nothing is held


def test_git_hold_gives_up_waiting_after_git_lock_wait() -> None:
    hold = GitHold(lambda: True)
    assert hold.keep(("a.py",), now=0.0)
    assert hold.due(GIT_LOCK_WAIT) and not hold.keep(("b.py",), now=GIT_LOCK_WAIT)

# -- Debouncer ---------------------------------------------------------------------------


Batch = tuple[str, tuple[str, ...]]


class Harness:
    """A Debouncer and the time, from 100.0 on."""

    def __init__(self, delays: dict[str, float] | None = None) -> None:
        self.now = 100.0
        self.debouncer = Debouncer()
        for key, delay in (delays or {}).items():
            self.debouncer.set_delay(key, delay)

    def add(self, key: str, *paths: str, code: bool = True) -> None:
        for path in paths:
            self.debouncer.add(key, path, code, self.now)

    def at(self, t: float) -> list[Batch]:
        """Move the time to start+t and return what is due."""
        self.now = 100.0 + t
        return [(key, batch.paths) for key, batch in self.debouncer.due(self.now)]

    def add_at(self, t: float, key: str, *paths: str, code: bool = True) -> None:
        self.now = 100.0 + t
        self.add(key, *paths, code=code)


def test_nothing_happens_until_due_is_asked_and_due_pops_what_it_returns() -> None:
    h = Harness({"web": 0.1})
    h.add_at(0, "web", "app.py")
    assert h.at(5) == [("web", ("app.py",))]
    assert h.at(5) == []
    assert h.debouncer.next_deadline() is None


def test_nothing_is_due_without_changes() -> None:
    h = Harness()
    assert h.at(0) == []
    assert h.at(1000) == []


def test_burst_is_coalesced_into_one_batch() -> None:
    h = Harness({"web": 0.1})
    h.add_at(0.00, "web", "a.py")
    h.add_at(0.02, "web", "b.py")
    h.add_at(0.05, "web", "c.py")
    assert h.at(0.10) == []  # 0.05 after the last change: still inside the quiet period
    assert h.at(0.149) == []
    assert h.at(0.15) == [("web", ("a.py", "b.py", "c.py"))]
    assert h.at(0.16) == []  # popped: not delivered twice
    assert h.debouncer.next_deadline() is None


def test_each_change_restarts_the_quiet_period() -> None:
    h = Harness({"web": 0.2})
    for i in range(4):
        h.add_at(i * 0.15, "web", f"f{i}.py")  # every change lands inside the previous quiet period
        assert h.at(i * 0.15 + 0.19) == []
    assert h.at(0.45 + 0.2) == [("web", ("f0.py", "f1.py", "f2.py", "f3.py"))]


def test_single_change_is_due_exactly_after_its_delay() -> None:
    h = Harness({"web": 0.3})
    h.add_at(1.0, "web", "app.py")
    assert h.at(1.299) == []
    assert h.at(1.3) == [("web", ("app.py",))]


def test_default_delay_for_an_unknown_key_is_30_ms() -> None:
    h = Harness()
    h.add_at(0, "other", "x.py")
    assert h.at(0.029) == []
    assert h.at(0.031) == [("other", ("x.py",))]


def test_per_key_delays_are_respected() -> None:
    h = Harness()
    h.debouncer.set_delay("fast", 0.05)
    h.debouncer.set_delay("slow", 0.5)
    h.add_at(0, "fast", "f.py")
    h.add_at(0, "slow", "s.py")
    assert h.at(0.05) == [("fast", ("f.py",))]
    assert h.at(0.3) == []
    assert h.at(0.5) == [("slow", ("s.py",))]


def test_zero_delay_is_due_at_once() -> None:
    h = Harness({"web": 0.0})
    h.add_at(2.0, "web", "app.py")
    assert h.at(2.0) == [("web", ("app.py",))]


def test_steady_stream_is_flushed_at_latest_max_wait_after_the_first_event() -> None:
    assert MAX_WAIT == 1.0
    h = Harness({"web": 0.1})
    t = 0.0
    flushed_at = None
    while t < 3.0:
        h.add_at(t, "web", f"f{round(t * 100)}.py")  # a change every 50 ms: never quiet for 100 ms
        out = h.at(t + 0.049)
        if out:
            flushed_at = t + 0.049
            break
        t += 0.05
    # Checking at t+0.049 after each change: the first check at or past 1.0 s is 1.049.
    assert flushed_at == pytest.approx(1.049)
    assert out[0][0] == "web"
    assert out[0][1][0] == "f0.py"
    assert len(out[0][1]) == 21  # changes at 0.00, 0.05, ..., 1.00


def test_max_wait_deadline_is_exact() -> None:
    h = Harness({"web": 0.5})
    for i in range(10):
        h.add_at(i * 0.1, "web", "app.py")  # last change at 0.9: quiet deadline would be 1.4
    assert h.at(MAX_WAIT - 0.001) == []
    assert h.at(MAX_WAIT) == [("web", ("app.py",))]


def test_a_new_stream_after_a_flush_gets_a_new_max_wait() -> None:
    h = Harness({"web": 0.5})
    for i in range(11):
        h.add_at(i * 0.1, "web", "a.py")
    assert h.at(1.0) == [("web", ("a.py",))]
    h.add_at(1.05, "web", "b.py")  # first event of the next batch
    assert h.at(1.5) == []
    assert h.at(1.55) == [("web", ("b.py",))]


def test_a_delay_longer_than_max_wait_is_honoured() -> None:
    # MAX_WAIT bounds a steady stream for the usual short delays; a user who asks for a longer
    # quiet period gets it (it was capped at MAX_WAIT, making reload_delay > 1 meaningless).
    h = Harness({"web": 5.0})
    h.add_at(0, "web", "app.py")
    assert h.at(4.999) == []
    assert h.at(5.0) == [("web", ("app.py",))]


def test_keys_are_kept_separate() -> None:
    h = Harness({"web": 0.1, "api": 0.3})
    h.add_at(0.00, "web", "web.py")
    h.add_at(0.08, "api", "api.py")  # a change of another app does not extend web's burst
    h.add_at(0.09, "web", "shared.py")
    assert h.at(0.185) == []
    assert h.at(0.19) == [("web", ("web.py", "shared.py"))]
    assert h.at(0.30) == []
    h.add_at(0.30, "api", "more.py")  # api's burst goes on; web's is gone
    assert h.at(0.599) == []
    assert h.at(0.60) == [("api", ("api.py", "more.py"))]
    assert h.debouncer.next_deadline() is None


def test_several_keys_due_at_once_come_back_together() -> None:
    h = Harness({"web": 0.1, "api": 0.1})
    h.add_at(0, "web", "w.py")
    h.add_at(0, "api", "a.py")
    assert sorted(h.at(0.2)) == [("api", ("a.py",)), ("web", ("w.py",))]
    assert h.at(0.3) == []


def test_paths_are_deduplicated_keeping_first_seen_order() -> None:
    h = Harness({"web": 0.1})
    h.add_at(0.00, "web", "b.py", "a.py", "b.py")
    h.add_at(0.01, "web", "c.py", "a.py")
    h.add_at(0.02, "web", "b.py")
    assert h.at(0.2) == [("web", ("b.py", "a.py", "c.py"))]


def test_same_path_for_two_keys_is_reported_to_both() -> None:
    h = Harness({"web": 0.1, "api": 0.1})
    h.add_at(0, "web", "shared/models.py")
    h.add_at(0, "api", "shared/models.py")
    assert sorted(h.at(0.1)) == [("api", ("shared/models.py",)), ("web", ("shared/models.py",))]


def test_add_uses_the_time_it_is_given() -> None:
    h = Harness({"web": 0.1})
    h.add_at(7.0, "web", "a.py")
    h.add_at(7.5, "web", "b.py")
    entry = h.debouncer.pending["web"]
    assert entry.first == pytest.approx(107.0)
    assert entry.last == pytest.approx(107.5)


def test_due_gives_batches_that_stay_importable_from_the_watcher() -> None:
    debouncer = Debouncer()
    debouncer.add("web", "app.py", True, 0.0)
    assert debouncer.due(1.0) == [("web", watcher.Batch(code=("app.py",)))]
    assert watcher.Batch is debounce.Batch


def test_code_and_live_paths_of_a_burst_come_apart_and_code_wins_a_path_seen_as_both() -> None:
    debouncer = Debouncer()
    debouncer.add("web", "templates/a.html", False, 0.0)
    debouncer.add("web", "app.py", True, 0.0)
    debouncer.add("web", "static/site.css", False, 0.0)
    debouncer.add("web", "both.txt", False, 0.0)
    debouncer.add("web", "both.txt", True, 0.0)
    [(key, batch)] = debouncer.due(1.0)
    assert key == "web"
    assert batch.code == ("app.py", "both.txt")
    assert batch.live == ("templates/a.html", "static/site.css")


def test_a_path_seen_as_code_stays_code_when_seen_as_live_later() -> None:
    debouncer = Debouncer()
    debouncer.add("web", "page.py", True, 0.0)
    debouncer.add("web", "page.py", False, 0.01)
    assert debouncer.due(1.0) == [("web", debounce.Batch(code=("page.py",)))]


def test_forget_drops_a_keys_pending_paths_and_its_delay() -> None:
    h = Harness({"web": 0.5, "api": 0.1})
    h.add_at(0, "web", "w.py")
    h.add_at(0, "api", "a.py")
    h.debouncer.forget("web")
    assert h.debouncer.next_deadline() == pytest.approx(100.1)  # api's only
    assert h.at(2.0) == [("api", ("a.py",))]
    h.add_at(3.0, "web", "again.py")  # a key seen again after forget has the default delay
    assert h.at(3.029) == []
    assert h.at(3.031) == [("web", ("again.py",))]
    h.debouncer.forget("unknown")  # forgetting what was never there is harmless


def test_set_delay_replaces_a_keys_delay_and_applies_to_what_is_pending() -> None:
    h = Harness({"web": 0.5})
    h.add_at(0, "web", "a.py")
    h.debouncer.set_delay("web", 0.1)
    assert h.debouncer.next_deadline() == pytest.approx(100.1)
    assert h.at(0.1) == [("web", ("a.py",))]


def test_next_deadline_is_none_without_pending_paths() -> None:
    h = Harness({"web": 0.1})
    assert h.debouncer.next_deadline() is None
    h.add_at(0, "web", "a.py")
    h.at(0.1)
    assert h.debouncer.next_deadline() is None


def test_next_deadline_is_the_earliest_key_and_follows_the_quiet_period_and_max_wait() -> None:
    h = Harness({"web": 0.2, "api": 0.5})
    h.add_at(0.0, "api", "a.py")
    h.add_at(0.1, "web", "w.py")
    assert h.debouncer.next_deadline() == pytest.approx(100.3)  # web: 0.1 + 0.2, before api's 0.5
    h.add_at(0.2, "web", "w2.py")  # extends web's quiet period
    assert h.debouncer.next_deadline() == pytest.approx(100.4)
    h.add_at(0.3, "web", "w3.py")
    assert h.debouncer.next_deadline() == pytest.approx(100.5)  # web's 0.5 and api's 0.5 tie
    assert sorted(h.at(0.5)) == [("api", ("a.py",)), ("web", ("w.py", "w2.py", "w3.py"))]
    for i in range(10):  # a steady stream: MAX_WAIT after its first change bounds the deadline
        h.add_at(1.0 + i * 0.1, "api", "a.py")
    assert h.debouncer.next_deadline() == pytest.approx(100.0 + 1.0 + MAX_WAIT)


def test_due_at_the_next_deadline_is_never_too_early() -> None:
    """The loop sleeps until next_deadline(): due() at that time gives the key it named."""
    h = Harness({"web": 0.1, "api": 0.37, "slow": 5.0})
    for t, key in [(0.0, "web"), (0.05, "api"), (0.07, "web"), (0.1, "slow"), (0.3, "api")]:
        h.add_at(t, key, f"{key}.py")
    seen = []
    while (deadline := h.debouncer.next_deadline()) is not None:
        out = h.debouncer.due(deadline)
        assert out, f"nothing due at the next deadline {deadline}"
        seen += [key for key, _ in out]
    assert seen == ["web", "api", "slow"]
