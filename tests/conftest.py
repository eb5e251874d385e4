from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import Devrun


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
