"""The child's side of the event pipe: never blocks, counts what it had to drop."""

from __future__ import annotations

import os

from devrun.wire import MAX_WIRE, Dropped, Message, encode


class Reporter:
    def __init__(self, fd: int | None):
        self.fd = fd
        self.dropped = 0
        if fd is not None:
            os.set_blocking(fd, False)

    def send(self, message: Message) -> None:
        if self.fd is None:
            return
        if self.dropped and not isinstance(message, Dropped):
            pending, self.dropped = self.dropped, 0
            self.send(Dropped(pending))
        try:
            os.write(self.fd, encode(message, MAX_WIRE))
        except BlockingIOError:
            # The runner fell behind: losing a log line beats stalling a request.
            self.dropped += 1
        except OSError:
            self.fd = None  # the runner is gone; parent-death handling ends us
