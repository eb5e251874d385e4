"""The child's side of the event pipe: never blocks, batches request lines, counts what it had
to drop.

Request lines are the one report whose rate the app's traffic sets. Sent one by one, each
would cost the child a write and the runner a wake-up, a decode and a pass through every view:
under load the runner spent more CPU than the app. So they wait in a batch, sent BATCH_WAIT
after the first one (or as soon as a batch is as big as one atomic write), and before any other
report, so the runner sees them in the order they happened.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from devrun.wire import MAX_WIRE, Dropped, Message, Requests, Served, encode

# How long a request line may wait for others: short enough that a log line looks immediate.
BATCH_WAIT = 0.05
# The bytes of served requests in one message, leaving room in MAX_WIRE for the envelope.
BATCH_BYTES = MAX_WIRE - 512
# Each served request's path is cut to this many characters: a log line, not a record.
MAX_PATH = 512  # even as \u escapes, one request fits a message
# Lines kept while the runner's pipe is full; beyond this they are dropped and counted.
MAX_PENDING = 10_000

Later = Callable[[float, Callable[[], None]], object]  # run a function after a delay (gevent's spawn_later)


class Reporter:
    def __init__(self, fd: int | None, later: Later | None = None, clock: Callable[[], float] = time.monotonic):
        self.fd = fd
        self.clock = clock
        self.later = later  # None: every request line is sent at once
        self.dropped = 0
        self.batch: list[Served] = []
        self.batch_bytes = 0
        self.flush_due = False
        self.batch_started = 0.0  # clock() at the batch's first line
        if fd is not None:
            os.set_blocking(fd, False)

    def send(self, message: Message) -> None:
        if self.fd is None:
            return
        # Request lines go first, to keep the order; if the pipe is full they wait, and this
        # message is still tried: a lifecycle report outranks log lines.
        self.flush()
        if self.dropped and not isinstance(message, Dropped):
            pending, self.dropped = self.dropped, 0
            self.send(Dropped(pending))
        if not self._write(encode(message, MAX_WIRE)):
            self.dropped += 1

    def served(self, request: Served) -> None:
        """A request was answered: into the batch, sent soon."""
        if self.fd is None:
            return
        if len(request.path) > MAX_PATH:
            request = request._replace(path=request.path[:MAX_PATH] + "...")
        if len(self.batch) >= MAX_PENDING:
            self.dropped += 1
            return
        size = _size(request)
        if self.batch and self.batch_bytes + size > BATCH_BYTES:
            self.flush()  # a full message: it goes now
        if not self.batch:
            self.batch_started = self.clock()
        self.batch.append(request)
        self.batch_bytes += size
        if self.later is None:
            self.flush()
        elif not self.flush_due:
            self.flush_due = True
            self.later(BATCH_WAIT, self._flush_later)

    def _flush_later(self) -> None:
        self.flush_due = False
        if not self.batch:
            return
        # A full batch went out meanwhile: the lines waiting now came after it, and get their
        # own BATCH_WAIT (sent now, they would make a busy app's batches small).
        young = BATCH_WAIT - (self.clock() - self.batch_started)
        if young > 0.005 or not self.flush():
            assert self.later is not None
            self.flush_due = True  # and if the runner is behind: try again, keeping what waits
            self.later(young if young > 0.005 else BATCH_WAIT, self._flush_later)
        elif self.dropped:  # an app that only serves requests says what it lost all the same
            pending, self.dropped = self.dropped, 0
            self.send(Dropped(pending))

    def flush(self) -> bool:
        """Send the waiting request lines; False if the pipe was full (they keep waiting)."""
        while self.batch and self.fd is not None:
            size, count = 0, 0
            for request in self.batch:
                size += _size(request)
                if count and size > BATCH_BYTES:
                    break
                count += 1
            data = encode(Requests(tuple(self.batch[:count])))
            while len(data) > MAX_WIRE and count > 1:  # escapes made it longer than estimated
                count //= 2
                data = encode(Requests(tuple(self.batch[:count])))
            if not self._write(data):
                return False
            del self.batch[:count]
        self.batch_bytes = sum(map(_size, self.batch))
        return True

    def _write(self, data: bytes) -> bool:
        if self.fd is None:
            return True
        try:
            os.write(self.fd, data)
        except BlockingIOError:
            # The runner fell behind: losing a log line beats stalling a request.
            return False
        except OSError:
            self.fd = None  # the runner is gone; parent-death handling ends us
        return True


def _size(request: Served) -> int:
    """About what it takes as JSON (flush checks the real size)."""
    return len(request.path) + len(request.method) + 48
