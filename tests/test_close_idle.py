"""A stopping generation shuts its idle keep-alive connections, but never one whose next
request already waits in the kernel (S4): that request is answered, with Connection: close."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devrun.worker.serve import close_idle
from tests.helpers import Devrun, free_port, get, wait_for, write


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = socket.create_connection(listener.getsockname(), timeout=5)
        server, _ = listener.accept()
        server.settimeout(5)
        with client, server:
            yield client, server


class Idle:
    """What close_idle reads of a handler: an idle keep-alive connection that served a request."""

    busy = False
    served = 1

    def __init__(self, sock: socket.socket):
        self.socket = sock


def arrived(sock: socket.socket) -> bool:
    return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))


def test_an_idle_connection_is_shut(pair: tuple[socket.socket, socket.socket]) -> None:
    client, server = pair
    close_idle({Idle(server)})  # type: ignore[arg-type]
    assert client.recv(100) == b""  # the client sees the connection end, at once


def test_one_whose_next_request_waits_unread_is_not(pair: tuple[socket.socket, socket.socket]) -> None:
    client, server = pair
    client.sendall(b"POST /order HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\nhi")
    wait_for(lambda: arrived(server), 5, "the request to reach the server's socket")
    close_idle({Idle(server)}, fresh=True)  # type: ignore[arg-type]
    assert server.recv(100).startswith(b"POST /order")
    server.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
    assert client.recv(100).endswith(b"ok")


SPIN_APP = """
    import os
    from gevent import monkey

    pause = monkey.get_original('time', 'sleep')  # blocks the whole generation, as CPU-bound work does
    VERSION = 1

    def app(environ, start_response):
        query = environ.get('QUERY_STRING', '')
        if query.startswith('spin='):
            name = query[5:]
            open(name + '-started', 'w').close()
            while not os.path.exists(name + '-release'):
                pause(0.005)
            body = b'spun'
        elif environ['REQUEST_METHOD'] == 'POST':
            body = b'posted:' + environ['wsgi.input'].read(int(environ.get('CONTENT_LENGTH') or 0))
            body += b' v%d' % VERSION
        else:
            body = b'v%d' % VERSION
        start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])
        return [body]
"""


def send(conn: socket.socket, request: str) -> None:
    conn.sendall(request.encode())


def read_response(conn: socket.socket) -> bytes:
    """One response (a Content-Length body), or what came before the connection ended."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(int(ln.split(b":", 1)[1]) for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length:"))
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def get_on(conn: socket.socket, path: str, port: int) -> bytes:
    send(conn, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n")
    return read_response(conn)


@pytest.mark.process
def test_a_request_sent_on_a_kept_alive_connection_during_a_reload_is_answered(
    tmp_path: Path, devrun: Callable[..., Devrun]
) -> None:
    """The generation is blocked (CPU-bound requests) while it is told to stop and while the
    next request arrives on an idle keep-alive connection: when it runs its stop, that request
    sits in the kernel, unread, and must not be shut away."""
    port = free_port()
    write(tmp_path / "app.py", SPIN_APP)
    write(tmp_path / "devrun.yaml", f"""
        defaults: {{reload_delay: 0.02, graceful_timeout: 30}}
        apps:
          web: {{app: "app:app", port: {port}}}
    """)
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    wait_for(lambda: get(f"http://127.0.0.1:{port}/", 2)[1] == "v1", 30, "the app")
    conns = [socket.create_connection(("127.0.0.1", port), timeout=20) for _ in range(3)]
    idle, first, second = conns
    try:
        for conn in conns:  # three kept-alive connections to generation 1
            assert get_on(conn, "/", port).endswith(b"v1")
        send(first, f"GET /?spin=a HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n")
        wait_for(lambda: (tmp_path / "a-started").exists(), 10, "generation 1 to be blocked")
        write(tmp_path / "app.py", SPIN_APP.replace("VERSION = 1", "VERSION = 2"))
        # Generation 2 is ready, so generation 1 has been sent SIGTERM (it handles it once unblocked).
        wait_for(lambda: get(f"http://127.0.0.1:{port}/", 2)[1] == "v2", 30, "generation 2")
        send(second, f"GET /?spin=b HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n")
        (tmp_path / "a-release").touch()
        # Generation 1 has seen SIGTERM and the second spin, and is blocked again: its stop runs next.
        wait_for(lambda: (tmp_path / "b-started").exists(), 10, "the second spin")
        send(idle, f"POST /order HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 2\r\n\r\nhi")
        (tmp_path / "b-release").touch()
        reply = read_response(idle)
        assert reply.startswith(b"HTTP/1.1 200 ") and reply.endswith(b"posted:hi v1"), (reply, d.output)
        assert b"connection: close" in reply.lower()
        assert read_response(first).endswith(b"spun") and read_response(second).endswith(b"spun")
    finally:
        for conn in conns:
            conn.close()
