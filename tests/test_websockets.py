"""WebSockets under `devrun up`: flask-sock (simple-websocket) and Flask-SocketIO in its gevent
mode, on apps written as their docs write them, driven over 127.0.0.1.

An upgrade is logged as 101 (the library writes that response itself, so pywsgi has no status
for it); a refused one is logged as what it was. A reload asks every open WebSocket to close
(1001, going away), so clients reconnect to the new code at once, and shuts what does not answer
by the graceful timeout, so the old generation exits on its own by then.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import simple_websocket
from wsproto.connection import Connection, ConnectionType
from wsproto.events import CloseConnection

from tests.helpers import Devrun, free_port, wait_for, write

pytestmark = pytest.mark.process  # every test here starts processes

GRACE = 1.0  # the apps' graceful_timeout: small, so "by the timeout" is measurable
SLACK = 0.5  # what the runner may add to it: reaping the old generation and printing the line

# flask-sock's own example (its README and docs), a version marker aside.
ECHO_APP = """
    from flask import Flask
    from flask_sock import Sock

    app = Flask(__name__)
    sock = Sock(app)


    @sock.route('/echo')
    def echo(ws):
        while True:
            data = ws.receive()
            ws.send(data)
"""

# Flask-SocketIO's documented first app, with the async mode devrun serves it in.
SOCKETIO_APP = """
    from flask import Flask
    from flask_socketio import SocketIO, emit

    app = Flask(__name__)
    app.config['SECRET_KEY'] = 'secret!'
    socketio = SocketIO(app, async_mode='gevent')


    @socketio.on('my event')
    def handle_my_custom_event(json):
        emit('my response', json)


    if __name__ == '__main__':
        socketio.run(app)
"""


def project(tmp_path: Path, app: str, **defaults: object) -> int:
    port = free_port()
    write(tmp_path / "app.py", app)
    extra = "".join(f", {key}: {json.dumps(value)}" for key, value in defaults.items())
    write(tmp_path / "devrun.yaml", f"""
        defaults: {{reload_delay: 0.02, graceful_timeout: {GRACE}{extra}}}
        apps:
          web: {{app: "app:app", port: {port}}}
    """)
    return port


def start(tmp_path: Path, devrun: Callable[..., Devrun]) -> Devrun:
    d = devrun("up", "--no-dashboard", cwd=tmp_path)
    d.wait_line(lambda ln: " ready http" in ln)
    return d


@contextlib.contextmanager
def bounded_sockets(seconds: float = 10.0) -> Iterator[None]:
    """simple_websocket.Client takes no timeout: the sockets it opens meanwhile get this one, so
    no read of theirs (its reader thread's included) can wait for ever."""
    before = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(before)


@pytest.fixture
def clients() -> Iterator[Callable[[str], simple_websocket.Client]]:
    opened: list[simple_websocket.Client] = []

    def connect(url: str) -> simple_websocket.Client:
        with bounded_sockets():
            ws = simple_websocket.Client.connect(url)
        opened.append(ws)
        return ws

    yield connect
    for ws in opened:
        with contextlib.suppress(Exception):
            ws.close()


def closed_by_server(ws: simple_websocket.Client, timeout: float) -> simple_websocket.ConnectionClosed:
    """Wait, bounded, for the server to end the WebSocket; what it said when it did."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            ws.receive(timeout=0.05)
        except simple_websocket.ConnectionClosed as closed:
            return closed
    raise AssertionError(f"the server kept the WebSocket open for {timeout}s")


def generation_pid(d: Devrun, number: int) -> str:
    line = d.wait_line(lambda ln: f"generation {number})" in ln)
    found = re.search(r"starting \(pid (\d+)", line)
    assert found, line
    return found.group(1)


def test_echo_and_the_log_shows_101(tmp_path: Path, devrun: Callable[..., Devrun],
                                    clients: Callable[[str], simple_websocket.Client]) -> None:
    port = project(tmp_path, ECHO_APP)
    d = start(tmp_path, devrun)
    ws = clients(f"ws://127.0.0.1:{port}/echo")
    ws.send("hello")
    assert ws.receive(timeout=5) == "hello"
    ws.send(b"\x00\x01")
    assert ws.receive(timeout=5) == b"\x00\x01"
    ws.close()
    d.wait_line(lambda ln: re.search(r"web +\| GET /echo 101 \d+ms$", ln) is not None, timeout=10)
    assert "GET /echo 000" not in d.output and "Traceback" not in d.output, d.output


def raw_request(port: int, head: str) -> bytes:
    """Send a request head on a fresh connection; everything the server sends until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head.encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        return data


def test_a_refused_upgrade_is_logged_as_what_it_was(tmp_path: Path, devrun: Callable[..., Devrun]) -> None:
    """Only an upgrade that happened is a 101: one simple-websocket refuses (no Sec-WebSocket-Key)
    gets Flask's 500, logged as 500, and its connection is closed rather than kept by the copy of
    the socket the library took; a plain GET of the route is flask-sock's 400."""
    port = project(tmp_path, ECHO_APP)
    d = start(tmp_path, devrun)
    refused = raw_request(port, f"GET /echo HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                                "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n")
    assert refused.startswith(b"HTTP/1.1 500 "), refused
    d.wait_line(lambda ln: "GET /echo 500 " in ln, timeout=10)
    plain = raw_request(port, f"GET /echo HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")
    assert plain.startswith(b"HTTP/1.1 400 "), plain
    d.wait_line(lambda ln: "GET /echo 400 " in ln, timeout=10)
    assert "GET /echo 101" not in d.output, d.output


def test_a_reload_closes_the_socket_and_the_next_one_runs_the_new_code(
    tmp_path: Path, devrun: Callable[..., Devrun], clients: Callable[[str], simple_websocket.Client]
) -> None:
    port = project(tmp_path, ECHO_APP)
    d = start(tmp_path, devrun)
    old = clients(f"ws://127.0.0.1:{port}/echo")
    old.send("hi")
    assert old.receive(timeout=5) == "hi"
    write(tmp_path / "app.py", ECHO_APP.replace("ws.send(data)", "ws.send(data.upper())"))
    # A proper close, at once: not the old generation's HTTP 500 written among the frames when
    # its timeout killed the handler (which the client read as a protocol error, 1002).
    closed = closed_by_server(old, timeout=GRACE + 10)
    assert closed.reason == 1001, (closed.reason, closed.message, d.output)
    d.wait_line(lambda ln: "GET /echo 101 " in ln, timeout=10)
    new = wait_for(lambda: clients(f"ws://127.0.0.1:{port}/echo"), 10, "a WebSocket to the new generation")
    new.send("hi")
    assert new.receive(timeout=5) == "HI"
    assert "GET /echo 500" not in d.output and "Traceback" not in d.output, d.output


def raw_upgrade(port: int, path: str) -> tuple[socket.socket, bytes]:
    """A WebSocket handshake by hand, for a client that then never answers: the socket and
    whatever came after the 101 response's head."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, data
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 101 "), head
    return s, rest


def test_a_client_that_never_answers_the_close_is_cut_by_the_graceful_timeout(
    tmp_path: Path, devrun: Callable[..., Devrun]
) -> None:
    port = project(tmp_path, ECHO_APP)
    d = start(tmp_path, devrun)
    old_pid = generation_pid(d, 1)
    s, rest = raw_upgrade(port, "/echo")
    with s:
        write(tmp_path / "app.py", ECHO_APP.replace("ws.send(data)", "ws.send(data.upper())"))
        frames = Connection(ConnectionType.CLIENT, trailing_data=rest)  # wsproto reads what comes
        events: list[object] = list(frames.events())
        while not events:
            chunk = s.recv(65536)
            assert chunk, "the connection ended without a Close frame"
            frames.receive_data(chunk)
            events = list(frames.events())
        asked = time.monotonic()
        assert isinstance(events[0], CloseConnection) and events[0].code == 1001, events
        while s.recv(65536):  # never answered: the server must end the connection itself
            pass
        cut = time.monotonic() - asked
    assert cut <= GRACE, f"the connection outlived the graceful timeout: {cut:.2f}s"
    d.wait_line(lambda ln: f"stopped (pid {old_pid})" in ln, timeout=GRACE + SLACK)
    d.wait_line(lambda ln: "GET /echo 101 " in ln, timeout=5)
    assert "GET /echo 500" not in d.output and "Traceback" not in d.output, d.output


class EngineIO:
    """A Socket.IO client as a browser's runs it, by hand (python-socketio's Client needs
    `requests` and `websocket-client`, not installed): the Engine.IO long-polling handshake over
    HTTP, then the upgrade of that session to a WebSocket."""

    def __init__(self, port: int):
        self.base = f"127.0.0.1:{port}/socket.io/?EIO=4"
        opened = self.poll("transport=polling")
        assert opened.startswith("0"), opened
        self.handshake = json.loads(opened[1:])
        self.sid = self.handshake["sid"]

    def poll(self, query: str, data: str | None = None) -> str:
        body = data.encode() if data is not None else None
        with urllib.request.urlopen(f"http://{self.base}&{query}", data=body, timeout=10) as r:
            return r.read().decode()

    def connect(self, ws_connect: Callable[[str], simple_websocket.Client]) -> simple_websocket.Client:
        """Join the default namespace over polling, then upgrade to a WebSocket, as engine.io-client does."""
        assert self.poll(f"transport=polling&sid={self.sid}", "40") == "OK"
        assert self.poll(f"transport=polling&sid={self.sid}").startswith("40")
        ws = ws_connect(f"ws://{self.base}&transport=websocket&sid={self.sid}")
        ws.send("2probe")
        assert ws.receive(timeout=5) == "3probe"
        ws.send("5")  # upgrade: from now on the session's packets travel on the WebSocket
        return ws


def event(ws: simple_websocket.Client, name: str) -> list[object]:
    """The next Socket.IO event of that name the server sends (its pings are answered meanwhile)."""
    end = time.monotonic() + 10
    while time.monotonic() < end:
        packet = ws.receive(timeout=0.5)
        if packet == "2":
            ws.send("3")
        elif isinstance(packet, str) and packet.startswith("42"):
            args = json.loads(packet[2:])
            if args[0] == name:
                return args[1:]
    raise AssertionError(f"no {name!r} event within 10s")


def test_flask_socketio_in_gevent_mode(tmp_path: Path, devrun: Callable[..., Devrun],
                                       clients: Callable[[str], simple_websocket.Client]) -> None:
    """`app` is what devrun serves: SocketIO(app) put its middleware in app.wsgi_app. Without
    gevent-websocket, the gevent mode speaks WebSocket through simple-websocket."""
    port = project(tmp_path, SOCKETIO_APP)
    d = start(tmp_path, devrun)
    session = EngineIO(port)
    assert session.handshake["upgrades"] == ["websocket"], session.handshake
    ws = session.connect(clients)
    ws.send('42["my event",{"data":"hi"}]')
    assert event(ws, "my response") == [{"data": "hi"}]
    d.wait_line(lambda ln: re.search(r"POST /socket\.io/\?EIO=4&transport=polling&sid=\S+ 200 ", ln) is not None)

    write(tmp_path / "app.py", SOCKETIO_APP.replace("emit('my response', json)",
                                                    "emit('my response', {'v': 2, **json})"))
    closed = closed_by_server(ws, timeout=GRACE + 10)
    assert closed.reason == 1001, (closed.reason, closed.message, d.output)
    d.wait_line(lambda ln: re.search(r"GET /socket\.io/\?EIO=4&transport=websocket&sid=\S+ 101 ", ln) is not None)
    # What a Socket.IO client does when its transport closes: a new session, on the new code.
    again = wait_for(lambda: EngineIO(port), 10, "a new Engine.IO session")
    ws = again.connect(clients)
    ws.send('42["my event",{"data":"hi"}]')
    assert event(ws, "my response") == [{"v": 2, "data": "hi"}]
    assert "Traceback" not in d.output, d.output


def test_with_debug_and_live_reload_a_websocket_ends_cleanly(
    tmp_path: Path, devrun: Callable[..., Devrun], clients: Callable[[str], simple_websocket.Client]
) -> None:
    port = project(tmp_path, ECHO_APP, debug={"enabled": True})
    d = start(tmp_path, devrun)
    ws = clients(f"ws://127.0.0.1:{port}/echo")
    ws.send("hello")
    assert ws.receive(timeout=5) == "hello"
    ws.close()
    d.wait_line(lambda ln: "GET /echo 101 " in ln, timeout=10)
    assert "Traceback" not in d.output, d.output
