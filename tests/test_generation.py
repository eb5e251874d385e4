"""Reading a generation's pipes: bounded lines, and never pinned by a process that holds a pipe."""

from __future__ import annotations

import os
import threading
import time

from devrun.runner import generation
from devrun.runner.generation import Generation, read_lines
from tests.helpers import wait_for


class _Proc:
    pid = 0
    stdout = None

    def wait(self) -> int:
        return 0


def reader(limit: int, split_long: bool) -> tuple[Generation, int, list[bytes], threading.Thread]:
    gen = Generation("web", 1, _Proc())
    r, w = os.pipe()
    lines: list[bytes] = []
    thread = threading.Thread(target=read_lines, args=(gen, r, lines.append, limit, split_long), daemon=True)
    thread.start()
    return gen, w, lines, thread


def test_an_endless_event_line_is_skipped_not_buffered_and_the_next_one_arrives() -> None:
    gen, w, lines, thread = reader(1024, split_long=False)
    os.write(w, b"[" * 5000)  # a child writing garbage to its event pipe, with no newline
    os.write(w, b"[" * 5000 + b"\n")
    os.write(w, b'{"type":"ready"}\n')
    os.close(w)
    thread.join(5)
    assert lines == [b'{"type":"ready"}']


def test_a_long_output_line_is_cut_into_pieces() -> None:
    gen, w, lines, thread = reader(10, split_long=True)
    os.write(w, b"a" * 25 + b"\nend")
    os.close(w)
    thread.join(5)
    assert lines == [b"a" * 10, b"a" * 10, b"a" * 5, b"end"]


def test_a_pipe_held_open_by_another_process_stops_pinning_the_reader_after_the_reap() -> None:
    gen, w, lines, thread = reader(1024, split_long=True)
    os.write(w, b"last words\n")
    # w stays open, as an escaped grandchild keeps the generation's stdout open.
    wait_for(lambda: lines == [b"last words"], 5, "the line")
    assert thread.is_alive()  # still waiting for more: the generation has not been reaped
    gen.reaped_at = time.monotonic() - generation.LINGER
    thread.join(5 * generation.POLL_MS / 1000)
    assert not thread.is_alive()
    os.close(w)
