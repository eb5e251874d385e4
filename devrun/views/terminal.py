"""The keyboard of an interactive terminal: cbreak mode (Ctrl-C still works), keys on a thread,
and the terminal's settings always put back."""

from __future__ import annotations

import contextlib
import os
import select
import sys
import termios
import threading
import tty
from collections.abc import Callable, Iterator

# Escape sequences of the keys the dashboard uses.
ARROWS = {"\x1b[A": "up", "\x1b[B": "down", "\x1bOA": "up", "\x1bOB": "down"}


def parse(data: str) -> list[str]:
    """Split what the terminal sent into keys: arrows by name, anything else by character."""
    keys = []
    i = 0
    while i < len(data):
        for seq, name in ARROWS.items():
            if data.startswith(seq, i):
                keys.append(name)
                i += len(seq)
                break
        else:
            if data[i] == "\x1b":  # some other escape sequence: skip it whole
                j = i + 1
                if j < len(data) and data[j] in "[O":
                    j += 1
                    while j < len(data) and not data[j].isalpha() and data[j] != "~":
                        j += 1
                i = j + 1
                continue
            keys.append(data[i])
            i += 1
    return keys


@contextlib.contextmanager
def keys(on_key: Callable[[str], None]) -> Iterator[None]:
    """Read keys from stdin (when it is a terminal) until the block ends."""
    if not sys.stdin.isatty():
        yield
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    stop_r, stop_w = os.pipe()

    def read() -> None:
        while True:
            ready, _, _ = select.select([fd, stop_r], [], [])
            if stop_r in ready:
                return
            try:
                data = os.read(fd, 1024).decode("utf-8", "replace")
            except OSError:
                return
            if not data:
                return
            for key in parse(data):
                on_key(key)

    thread = threading.Thread(target=read, name="devrun-keys", daemon=True)
    try:
        # Keys one by one, no echo; Ctrl-C still sends SIGINT. TCSANOW, not setcbreak's default
        # TCSAFLUSH, which throws away what was typed before: a key pressed as the first frame
        # appears (the dashboard draws before it reads keys) was lost.
        tty.setcbreak(fd, termios.TCSANOW)
        thread.start()
        yield
    finally:
        os.write(stop_w, b"x")
        thread.join(timeout=1)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        os.close(stop_r)
        os.close(stop_w)
