"""Changed paths -> one batch per key, once the key's files have been quiet for its delay.

Pure: no thread, no lock, no clock of its own; time is a parameter. The runner's loop owns
one: it adds the paths it drains from the watcher (with the loop's time), sleeps until
`next_deadline()` and takes what is `due` then. A key is due once it has been quiet for its
delay (an app's ``reload_delay``), and at the latest ``MAX_WAIT`` after its first change, so a
steady stream still reloads. A batch holds the changed files an app's ``watch`` matches (code:
a restart) and, apart, those only its ``live_reload.watch`` matches (the browser refreshes,
the process stays).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["MAX_WAIT", "Batch", "Debouncer"]

MAX_WAIT = 1.0


@dataclass(frozen=True)
class Batch:
    code: tuple[str, ...] = ()  # restart the app
    live: tuple[str, ...] = ()  # refresh the browser only

    @property
    def paths(self) -> tuple[str, ...]:
        return self.code + self.live


@dataclass
class _Pending:
    first: float
    last: float
    paths: dict[str, bool] = field(default_factory=dict)  # ordered: path -> code (else live)


class Debouncer:
    """Collects paths per key; a key is due once it has been quiet for its delay."""

    def __init__(self) -> None:
        self.delays: dict[str, float] = {}
        self.pending: dict[str, _Pending] = {}

    def set_delay(self, key: str, delay: float) -> None:
        self.delays[key] = delay

    def forget(self, key: str) -> None:
        """Drop a key's delay and the paths it has pending (its app was removed)."""
        self.delays.pop(key, None)
        self.pending.pop(key, None)

    def add(self, key: str, path: str, code: bool, now: float) -> None:
        entry = self.pending.get(key)
        if entry is None:
            entry = self.pending[key] = _Pending(now, now)
        entry.last = now
        # A path seen as code once stays code: the restart refreshes the browser as well.
        entry.paths[path] = entry.paths.get(path, False) or code

    def due(self, now: float) -> list[tuple[str, Batch]]:
        """Pop and return the batches whose quiet period has passed."""
        out = []
        for key, entry in list(self.pending.items()):
            if now >= self._deadline(key, entry):
                del self.pending[key]
                out.append((key, Batch(tuple(p for p, code in entry.paths.items() if code),
                                       tuple(p for p, code in entry.paths.items() if not code))))
        return out

    def next_deadline(self) -> float | None:
        """When the next key falls due (`due` of that time returns it); None: nothing pending."""
        return min((self._deadline(key, entry) for key, entry in self.pending.items()), default=None)

    def _deadline(self, key: str, entry: _Pending) -> float:
        delay = self.delays.get(key, 0.03)
        return min(entry.last + delay, entry.first + max(MAX_WAIT, delay))
