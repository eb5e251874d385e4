"""The runner's 503 answer: details for loopback clients only (F6), and no client can stall it (S1).

Real sockets on 127.0.0.1; the listener is non-blocking, as gevent children leave it.
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
from collections.abc import Iterator

import pytest

from devrun.loopback import REFUSED_TEXT
from devrun.runner.fallback import MAX_READERS, Fallback, Pages

SECRET = "DATABASE_URL=postgres://admin:hunter2@db/app"


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    with sock:
        yield sock


@contextlib.contextmanager
def fallback_on(sock: socket.socket, output: list[str]) -> Iterator[Fallback]:
    fb = Fallback("web", sock)
    fb.answer("crashed", "The app's process exited with code 3.", output)
    try:
        yield fb
    finally:
        fb.close()


def ask(port: int, request: bytes, timeout: float = 5.0, source: str = "127.0.0.1",
        target: str = "127.0.0.1") -> bytes:
    with socket.create_connection((target, port), timeout=timeout, source_address=(source, 0)) as conn:
        conn.sendall(request)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
        return data


def request(host: str, path: str = "/", method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nAccept: */*\r\n\r\n".encode()


def test_a_loopback_client_sees_the_output(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    with fallback_on(listener, [SECRET]):
        reply = ask(port, request(f"127.0.0.1:{port}"))
        assert reply.startswith(b"HTTP/1.1 503 ") and SECRET.encode() in reply
        assert SECRET.encode() in ask(port, request(f"localhost:{port}"))


def test_a_foreign_host_gets_a_plain_503_and_no_events(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    with fallback_on(listener, [SECRET]):
        reply = ask(port, request(f"attacker.example:{port}"))
        assert reply.startswith(b"HTTP/1.1 503 ")
        assert b"hunter2" not in reply and b"web" not in reply and REFUSED_TEXT.encode() in reply
        events = ask(port, request(f"attacker.example:{port}", "/__devrun__/events?generation=x"))
        assert events.startswith(b"HTTP/1.1 400 ") and b"hello" not in events
        assert b"event: hello" in ask(port, request(f"127.0.0.1:{port}", "/__devrun__/events?generation=x"))
        # No Host (or two) is no loopback name either.
        assert b"hunter2" not in ask(port, b"GET / HTTP/1.0\r\n\r\n")
        two = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nHost: attacker.example\r\n\r\n".encode()
        assert b"hunter2" not in ask(port, two)


def test_a_foreign_peer_gets_the_plain_page_even_with_a_loopback_host() -> None:
    pages = Pages("web", "crashed", "detail", [SECRET])
    assert b"hunter2" in pages.choose(request("localhost:5000"), "127.0.0.1")
    assert b"hunter2" not in pages.choose(request("localhost:5000"), "10.1.2.3")
    assert pages.choose(request("localhost:5000", "/__devrun__/events"), "10.1.2.3").startswith(b"HTTP/1.1 403 ")
    head = pages.choose(request("localhost:5000", method="HEAD"), "127.0.0.1")
    assert head.endswith(b"\r\n\r\n") and b"hunter2" not in head


def test_the_page_is_bounded_whatever_the_app_printed() -> None:
    huge = ['"' * 16384 for _ in range(39)] + ["the-last-line"]
    pages = Pages("web", "crashed", "detail", huge)
    assert len(pages.full) < 100_000
    assert b"the-last-line" in pages.full


def test_clients_that_do_not_read_or_send_cannot_stall_the_fallback(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    held: list[socket.socket] = []
    # The largest page the app could cause: 40 output lines of 16 KiB that each grow sixfold when
    # escaped (3.9 MB: more than a loopback socket's send buffer takes from a client that never reads).
    with fallback_on(listener, ['"' * 16384] * 40), contextlib.ExitStack() as stack:
        for _ in range(MAX_READERS):  # every reader busy waiting for a request that never comes
            held.append(stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=5)))
        stuck = socket.socket()
        stack.enter_context(stuck)
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect(("127.0.0.1", port))
        stuck.sendall(request(f"127.0.0.1:{port}"))  # ... and then never reads the answer
        # Answered once a reader is free again: each gives up on its client within a few seconds.
        reply = ask(port, request(f"127.0.0.1:{port}"), timeout=20)
        assert reply.startswith(b"HTTP/1.1 503 ")


def test_a_listener_above_fd_setsize_is_still_answered() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 1200
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.skip(f"the fd limit ({hard}) is too low to open an fd above FD_SETSIZE")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    fillers: list[int] = []
    try:
        while True:
            fd = os.open(os.devnull, os.O_RDONLY)
            fillers.append(fd)
            if fd > 1100:
                break
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            sock.listen(16)
            sock.setblocking(False)
            assert sock.fileno() > 1024
            port = sock.getsockname()[1]
            with fallback_on(sock, [SECRET]):
                assert ask(port, request(f"127.0.0.1:{port}")).startswith(b"HTTP/1.1 503 ")
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
