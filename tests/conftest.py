from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import Devrun


def pytest_configure(config: pytest.Config) -> None:
    # A shell without job control starts `cmd &` with SIGINT ignored, and an ignored signal stays
    # ignored through exec: every devrun the tests start would then shrug off the Ctrl-C they send
    # it. A handler of our own is reset to the default at exec, so each child gets a real SIGINT.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


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
