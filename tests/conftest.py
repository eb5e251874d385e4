from __future__ import annotations

import _posixsubprocess
import os
import signal
import subprocess
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest

from tests.helpers import Devrun

if TYPE_CHECKING:
    from pluggy import Result


def pytest_configure(config: pytest.Config) -> None:
    # A shell without job control starts `cmd &` with SIGINT ignored, and an ignored signal stays
    # ignored through exec: every devrun the tests start would then shrug off the Ctrl-C they send
    # it. A handler of our own is reset to the default at exec, so each child gets a real SIGINT.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


# Every way a test can start a process: Popen covers subprocess.run/check_output and os.popen;
# os.fork covers pty.fork's fallback, os.spawn* and multiprocessing's "fork"; fork_exec covers
# multiprocessing's "spawn" and "forkserver", which start their interpreter without Popen.
_SPAWNERS: list[tuple[object, str, str]] = [
    (subprocess.Popen, "__init__", "subprocess.Popen"),
    (os, "fork", "os.fork"),
    (os, "forkpty", "os.forkpty"),
    (os, "posix_spawn", "os.posix_spawn"),
    (os, "posix_spawnp", "os.posix_spawnp"),
    (os, "system", "os.system"),
    (_posixsubprocess, "fork_exec", "_posixsubprocess.fork_exec"),
]
_STARTED = pytest.StashKey[list[str]]()


def _refuse(item: pytest.Item, what: str, skip_self: bool) -> Callable[..., NoReturn]:
    def refused(*args: object, **kwargs: object) -> NoReturn:
        shown = args[1:] if skip_self else args
        first = repr(shown[0]) if shown else repr(kwargs["args"]) if "args" in kwargs else ""
        call = f"{what}({first})"
        item.stash[_STARTED].append(call)
        # pytest.fail raises a BaseException: an `except Exception` in the code under test lets it by.
        pytest.fail(f"{item.nodeid} started a process, {call}, but is not marked `process`: mark it "
                    "@pytest.mark.process (a module of them: pytestmark = pytest.mark.process) so that "
                    '`pytest -m "not process"` stays the fast unit layer')
    return refused


@pytest.fixture(autouse=True)
def _processes_only_when_marked(request: pytest.FixtureRequest) -> Iterator[None]:
    """An unmarked test fails the moment it starts a process (the unit layer stays unit tests).

    Autouse and function-scoped, so it is set up before and torn down after the test's other
    fixtures: a process started by one of them counts too. Module- or session-scoped fixtures are
    set up before it and are not checked."""
    item = request.node
    if not isinstance(item, pytest.Item) or item.get_closest_marker("process") is not None:
        yield
        return
    item.stash[_STARTED] = []
    real = [(owner, name, what, getattr(owner, name)) for owner, name, what in _SPAWNERS if hasattr(owner, name)]
    for owner, name, what, _ in real:
        setattr(owner, name, _refuse(item, what, skip_self=name == "__init__"))
    try:
        yield
    finally:
        for owner, name, _, original in real:
            setattr(owner, name, original)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                               ) -> Generator[None, Result[pytest.TestReport], None]:
    # The refusal raised where the process was started; code that catches BaseException, or a
    # thread (whose exception pytest only warns about), would hide it: the test fails here instead.
    outcome = yield
    report = outcome.get_result()
    started = item.stash.get(_STARTED, [])
    if started and report.passed:
        report.outcome = "failed"
        report.longrepr = (f"{item.nodeid} started a process, {started[0]}, but is not marked `process` "
                           "(the refusal was caught, or raised in another thread)")
    started.clear()


@pytest.fixture
def devrun() -> Iterator[Callable[..., Devrun]]:
    """Start `devrun ARGS...` in a folder; every process it started is killed afterwards."""
    started: list[Devrun] = []

    def start(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Devrun:
        d = Devrun(list(args), cwd, env).start()
        started.append(d)
        return d

    yield start
    for d in started:
        d.kill()
