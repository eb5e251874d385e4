"""Two of a supervisor's policies, as small values it owns: the crash-loop backoff and the
hold on reloads while git rewrites the tree. Time is a parameter; nothing here acts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

# A generation that stayed up this long was not crash-looping.
STABLE_AFTER = 5.0
# A crash loop settles: this many crashes in a row, each soon after its start, and the app waits
# for a change (or `devrun restart`) instead of restarting for ever.
MAX_CRASHES = 8
# How long a reload waits for a git checkout or rebase (.git/index.lock) to finish.
GIT_LOCK_WAIT = 10.0


def backoff_delay(failures: int, base: float = 0.5, cap: float = 10.0) -> float:
    """Seconds to wait before restart number `failures` (1-based) of a crash loop."""
    if failures <= 0:
        return 0.0
    return min(base * 2.0 ** min(failures - 1, 32), cap)  # bounded exponent: no overflow


@dataclass
class Backoff:
    """Crashes in a row, and when the next restart is due."""

    initial: float = 0.5
    cap: float = 10.0
    failures: int = 0
    restart_at: float | None = None

    def reset(self) -> None:
        """A change, or a start asked for: a new attempt, not part of a crash loop."""
        self.failures = 0
        self.restart_at = None

    def cancel(self) -> None:
        """No restart is needed any more (a newer generation serves, or the app stopped)."""
        self.restart_at = None

    def crashed(self, now: float, uptime: float) -> float | None:
        """Count a crash; the delay until the restart, or None once the loop has gone on too
        long (then only a change restarts the app)."""
        if uptime >= STABLE_AFTER:
            self.failures = 0
        self.failures += 1
        if self.failures >= MAX_CRASHES:
            return None
        delay = backoff_delay(self.failures, self.initial, self.cap)
        self.restart_at = now + delay
        return delay

    def due(self, now: float) -> bool:
        """True once, when the restart's time has come."""
        if self.restart_at is not None and now >= self.restart_at:
            self.restart_at = None
            return True
        return False


@dataclass
class GitHold:
    """Changes kept back while git rewrites the working tree, released as one reload."""

    busy: Callable[[], bool]
    paths: dict[str, None] = field(default_factory=dict)  # ordered, without repeats
    until: float | None = None

    def keep(self, paths: tuple[str, ...], now: float) -> bool:
        """Hold these changes if git is busy and the wait is not over; starts the wait."""
        if not self.busy():
            return False
        if self.until is None:
            self.until = now + GIT_LOCK_WAIT
        if now >= self.until:
            return False
        self.paths.update(dict.fromkeys(paths))
        return True

    @property
    def waiting(self) -> bool:
        return bool(self.paths)

    def due(self, now: float) -> bool:
        """Held changes whose wait is over: git is done, or it took too long."""
        return self.waiting and (not self.busy() or (self.until is not None and now >= self.until))

    def take(self, paths: tuple[str, ...] = ()) -> tuple[str, ...]:
        """The held changes (then these), and the hold is over."""
        out = tuple({**self.paths, **dict.fromkeys(paths)})
        self.clear()
        return out

    def clear(self) -> None:
        self.paths.clear()
        self.until = None
