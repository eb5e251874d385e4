"""devrun.worker.reporting: the child's reports, request lines in batches, over a real pipe."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from devrun import wire
from devrun.worker import reporting
from devrun.worker.reporting import Reporter


class Timers:
    """The `later` and the clock a Reporter is given: time passes when the test fires what was
    asked for (up to the latest delay)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.due: list[tuple[float, Callable[[], None]]] = []  # (when, what)

    def __call__(self, delay: float, fn: Callable[[], None]) -> None:
        self.due.append((self.now + delay, fn))

    def clock(self) -> float:
        return self.now

    def fire(self) -> None:
        """Time moves on to the next timer, which runs."""
        if self.due:
            self.due.sort(key=lambda item: item[0])
            when, fn = self.due.pop(0)
            self.now = max(self.now, when)
            fn()


def reporter_for(fd: int, timers: Timers) -> Reporter:
    return Reporter(fd, timers, timers.clock)


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    os.set_blocking(r, False)
    yield r, w
    for fd in (r, w):
        os.close(fd)


def received(fd: int) -> list[wire.Message]:
    data = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        data += chunk
    lines = data.split(b"\n")
    assert lines[-1] == b""
    out = [wire.decode(line) for line in lines[:-1]]
    assert all(m is not None for m in out), "every line is one whole message"
    return out  # type: ignore[return-value]  # checked just above


def served(i: int, path: str = "/") -> wire.Served:
    return wire.Served("GET", f"{path}{i}", "200", 1.5, 1764700000.0 + i)


def test_request_lines_wait_for_one_batch_sent_after_a_moment(pipe: tuple[int, int]) -> None:
    timers = Timers()
    reporter = reporter_for(pipe[1], timers)
    for i in range(5):
        reporter.served(served(i))
    assert received(pipe[0]) == []  # nothing written yet
    assert [when for when, _ in timers.due] == [100.0 + reporting.BATCH_WAIT]  # one timer for the batch
    timers.fire()
    assert received(pipe[0]) == [wire.Requests(tuple(served(i) for i in range(5)))]


def test_any_other_report_sends_the_waiting_requests_first(pipe: tuple[int, int]) -> None:
    timers = Timers()
    reporter = reporter_for(pipe[1], timers)
    reporter.served(served(1))
    reporter.send(wire.Closed())
    assert received(pipe[0]) == [wire.Requests((served(1),)), wire.Closed()]
    timers.fire()  # the timer finds nothing left to send
    assert received(pipe[0]) == []


def test_a_busy_app_s_lines_are_split_into_messages_that_each_fit_one_atomic_write(pipe: tuple[int, int]) -> None:
    timers = Timers()
    reporter = reporter_for(pipe[1], timers)
    # Control characters are written as \u escapes: six bytes each, beyond the size estimate.
    sent = [served(i, "/\x01" * 200) for i in range(40)] + [served(i, "/é") for i in range(200)]
    data_lines = []
    for request in sent:
        reporter.served(request)
        data_lines += received(pipe[0])  # the runner reads meanwhile: the pipe never fills
    timers.fire()
    data_lines += received(pipe[0])
    assert not reporter.batch and reporter.dropped == 0
    assert len(data_lines) > 1
    assert all(len(wire.encode(m)) <= wire.MAX_WIRE for m in data_lines)
    got = [r for m in data_lines if isinstance(m, wire.Requests) for r in m.served]
    assert got == sent  # every line, in order


def test_a_long_path_is_cut_so_one_request_always_fits(pipe: tuple[int, int]) -> None:
    reporter = Reporter(pipe[1])  # no timer: sent at once
    reporter.served(wire.Served("GET", "/" + "\x02" * 5000, "414", 0.1))
    [message] = received(pipe[0])
    assert isinstance(message, wire.Requests)
    assert message.served[0].path.endswith("...") and len(message.served[0].path) == reporting.MAX_PATH + 3


def test_a_full_pipe_keeps_the_lines_until_the_runner_reads_again(pipe: tuple[int, int]) -> None:
    timers = Timers()
    reporter = reporter_for(pipe[1], timers)
    filler = b"x" * 4096
    written = 0
    while True:  # fill the pipe: the runner is not reading
        try:
            written += os.write(pipe[1], filler)
        except BlockingIOError:
            break
    for i in range(3):
        reporter.served(served(i))
    timers.fire()
    assert timers.due, "a full pipe asks to try again later"
    assert reporter.dropped == 0
    while written > 0:  # the runner catches up
        written -= len(os.read(pipe[0], 65536))
    timers.fire()
    assert received(pipe[0]) == [wire.Requests(tuple(served(i) for i in range(3)))]


def test_beyond_the_pending_bound_lines_are_counted_and_the_count_is_reported(
        pipe: tuple[int, int], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reporting, "MAX_PENDING", 4)
    timers = Timers()
    reporter = reporter_for(pipe[1], timers)
    for i in range(6):
        reporter.served(served(i))
    reporter.send(wire.Pages(1))
    assert received(pipe[0]) == [wire.Requests(tuple(served(i) for i in range(4))), wire.Dropped(2), wire.Pages(1)]


def test_lines_that_follow_a_full_batch_wait_their_own_moment(pipe: tuple[int, int]) -> None:
    timers = Timers()
    reporter = reporter_for(pipe[1], timers)
    first: list[wire.Served] = []
    while True:  # a batch as full as one message takes
        line = served(len(first))
        if reporter.batch and reporter.batch_bytes + reporting._size(line) > reporting.BATCH_BYTES:
            break
        reporter.served(line)
        first.append(line)
    assert received(pipe[0]) == []
    timers.now += reporting.BATCH_WAIT / 2
    reporter.served(line)  # it does not fit: the full batch goes at once, this line starts the next
    assert received(pipe[0]) == [wire.Requests(tuple(first))]
    timers.fire()  # the timer set for the first batch: the line waiting now is younger than BATCH_WAIT
    assert received(pipe[0]) == []
    timers.fire()
    assert received(pipe[0]) == [wire.Requests((line,))]
    assert timers.now == 100.0 + reporting.BATCH_WAIT * 1.5


def test_lines_dropped_beyond_the_bound_are_reported_by_the_next_timed_send_too(
        pipe: tuple[int, int], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reporting, "MAX_PENDING", 2)
    timers = Timers()
    reporter = reporter_for(pipe[1], timers)
    for i in range(5):
        reporter.served(served(i))
    timers.fire()
    assert received(pipe[0]) == [wire.Requests((served(0), served(1))), wire.Dropped(3)]
