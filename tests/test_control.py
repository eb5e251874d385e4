"""The control channel over real Unix sockets: protocol, refusals, streams, stale sockets, paths."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import socket
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from devrun.control import server as control
from devrun.control.client import request, stream
from devrun.control.protocol import AlreadyRunning, Busy, ControlError, NotRunning, UnsafeFolder, socket_path
from devrun.control.server import ControlServer, Send, probe
from tests.helpers import wait_for


def fail(args: dict[str, Any]) -> Any:
    raise RuntimeError("boom: " + str(args.get("why")))


def refuse(args: dict[str, Any]) -> Any:
    raise ControlError("no app named nope")


HANDLERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "ping": lambda args: "pong",
    "echo": lambda args: {"got": args},
    "fail": fail,
    "refuse": refuse,
}


def three(args: dict[str, Any], send: Send) -> None:
    for n in range(3):
        send({"n": n})


def broken(args: dict[str, Any], send: Send) -> None:
    send({"n": 0})
    raise RuntimeError("stream broke")


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., ControlServer]]:
    """Start a ControlServer on tmp_path/control.sock (or a given path); all are closed afterwards."""
    servers: list[ControlServer] = []

    def start(
        streams: Mapping[str, control.Stream] | None = None,
        path: Path | None = None,
        handlers: Mapping[str, control.Handler] | None = None,
    ) -> ControlServer:
        server = ControlServer(
            path or tmp_path / "control.sock", {**HANDLERS, **(handlers or {})}, {"three": three, **(streams or {})}
        )
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.close()


def raw(path: Path, data: bytes) -> dict[str, Any]:
    """Send bytes as they are; the one reply line, after checking the server then hangs up."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        # The server may stop reading at its limit and hang up: its reply is waiting all the same.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break  # it hung up with our excess bytes unread; what it sent first is received
            if not chunk:
                break
            received += chunk
    lines = received.splitlines()
    assert len(lines) == 1, received
    return json.loads(lines[0])


def test_round_trip(serve: Callable[..., ControlServer]) -> None:
    server = serve()
    assert request(server.path, "echo", app="web", n=2) == {"got": {"app": "web", "n": 2}}
    assert raw(server.path, b'{"v": 1, "verb": "ping"}\n') == {"v": 1, "ok": True, "result": "pong"}


def test_handler_error_is_an_error_reply_and_the_server_keeps_answering(
    serve: Callable[..., ControlServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = serve()
    with pytest.raises(ControlError, match=r"^boom: disk$"):
        request(server.path, "fail", why="disk")
    # The traceback goes to the runner's log, not to the client.
    assert "RuntimeError: boom: disk" in caplog.text
    reply = raw(server.path, b'{"v": 1, "verb": "fail"}\n')
    assert reply == {"v": 1, "ok": False, "error": "boom: None"}  # str(exc), no traceback
    with pytest.raises(ControlError, match="no app named nope"):
        request(server.path, "refuse")
    assert request(server.path, "ping") == "pong"


@pytest.mark.parametrize("verb", ["nope", "close", "_call", "__class__", "start"])
def test_only_allow_listed_verbs(serve: Callable[..., ControlServer], verb: str) -> None:
    server = serve()
    with pytest.raises(ControlError) as caught:
        request(server.path, verb)
    assert str(caught.value) == f"unknown verb {verb!r}; allowed verbs: echo, fail, ping, refuse, three"
    assert request(server.path, "ping") == "pong"


OVERSIZED = b'{"v": 1, "verb": "echo", "args": {"pad": "' + b"x" * (70 * 1024) + b'"}}\n'


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"not json\n", "malformed request: expected one line of JSON"),
        (b"\xff\xfe\n", "malformed request: expected one line of JSON"),
        (b"[" * 50_000 + b"\n", "malformed request: expected one line of JSON"),
        (b"[1, 2]\n", "expected a JSON object, got list"),
        (b'{"v": 2, "verb": "ping"}\n', 'unsupported protocol version 2: this runner speaks "v": 1'),
        (b'{"verb": "ping"}\n', "unsupported protocol version None"),
        (b'{"v": true, "verb": "ping"}\n', "unsupported protocol version True"),
        (b'{"v": 1}\n', "unknown verb None; allowed verbs: echo, fail, ping, refuse, three"),
        (b'{"v": 1, "verb": "ping", "args": [1]}\n', '"args" must be a JSON object, got list'),
        (OVERSIZED, "request too long: the limit is 65536 bytes"),
        (OVERSIZED[:-1], "request too long: the limit is 65536 bytes"),  # and no newline at all
    ],
    ids=["not-json", "not-utf8", "deep-nesting", "array", "v2", "no-v", "v-true", "no-verb", "args-list",
         "oversized", "oversized-no-newline"],
)
def test_bad_request_gets_an_error_and_the_server_keeps_answering(
    serve: Callable[..., ControlServer], data: bytes, expected: str
) -> None:
    server = serve()
    reply = raw(server.path, data)
    assert reply["v"] == 1 and reply["ok"] is False
    assert expected in reply["error"]
    assert request(server.path, "ping") == "pong"


def test_a_last_line_without_newline_is_a_request(serve: Callable[..., ControlServer]) -> None:
    server = serve()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(server.path))
        sock.sendall(b'{"v": 1, "verb": "ping"}')
        sock.shutdown(socket.SHUT_WR)
        assert json.loads(sock.recv(1024)) == {"v": 1, "ok": True, "result": "pong"}


def test_a_silent_client_is_timed_out(serve: Callable[..., ControlServer], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(control, "REQUEST_TIMEOUT", 0.3)
    server = serve()
    reply = raw(server.path, b'{"v": 1, "verb": "pi')
    assert reply["error"] == "no complete request line within 0.3 s"
    assert request(server.path, "ping") == "pong"


def test_two_clients_at_once(serve: Callable[..., ControlServer]) -> None:
    items: queue.Queue[dict[str, Any] | None] = queue.Queue()
    sent: list[bool] = []

    def follow(args: dict[str, Any], send: Send) -> None:
        ok = send({"hello": args["who"]})
        while ok and (item := items.get(timeout=10)) is not None:
            ok = send(item)
            sent.append(ok)

    server = serve(streams={"follow": follow}, handlers={"push": items.put})
    try:
        events = stream(server.path, "follow", who="a")
        try:
            assert next(events) == {"hello": "a"}
            for n in range(3):  # the stream stays open while the other client talks
                assert request(server.path, "ping") == "pong"
                assert request(server.path, "push", n=n) is None
                assert next(events) == {"n": n}
        finally:
            events.close()
        # The client is gone: the stream function learns it from send() and returns.
        items.put({"n": 99})
        wait_for(lambda: len(sent) == 4, 5, "the stream's send() after the client left")
        assert sent == [True, True, True, False]
    finally:
        items.put(None)


def test_a_slow_handler_does_not_hold_up_other_clients(serve: Callable[..., ControlServer]) -> None:
    entered = threading.Event()
    release = threading.Event()

    def slow(args: dict[str, Any]) -> str:
        entered.set()
        release.wait(10)
        return "done"

    server = serve(handlers={"slow": slow})
    results: list[Any] = []
    client = threading.Thread(target=lambda: results.append(request(server.path, "slow", timeout=10)))
    client.start()
    try:
        assert entered.wait(5)
        assert request(server.path, "ping") == "pong"
        assert results == []
    finally:
        release.set()
        client.join(10)
    assert results == ["done"]


def test_stream_delivers_events_then_ends(serve: Callable[..., ControlServer]) -> None:
    server = serve(streams={"broken": broken})
    assert list(stream(server.path, "three")) == [{"n": 0}, {"n": 1}, {"n": 2}]
    events = stream(server.path, "broken")
    assert next(events) == {"n": 0}
    with pytest.raises(ControlError, match="^stream broke$"):
        next(events)
    # Mixing the two kinds up is said, not misread.
    with pytest.raises(ControlError, match="not a streaming verb"):
        list(stream(server.path, "ping"))
    with pytest.raises(ControlError, match="is a streaming verb"):
        request(server.path, "three")


def test_stream_send_is_false_once_the_client_left(serve: Callable[..., ControlServer]) -> None:
    results: list[bool] = []
    ended = threading.Event()

    def ticks(args: dict[str, Any], send: Send) -> None:
        n = 0
        while send({"n": n}):
            n += 1
        results.append(send({"n": n}))  # stays False
        ended.set()

    server = serve(streams={"ticks": ticks})
    events = stream(server.path, "ticks")
    assert [next(events)["n"] for _ in range(3)] == [0, 1, 2]
    events.close()
    assert ended.wait(5), "the stream function never saw the client leave"
    assert results == [False]


def test_close_ends_streams_and_wakes_silent_clients(serve: Callable[..., ControlServer]) -> None:
    ended = threading.Event()
    release = threading.Event()

    def waits(args: dict[str, Any], send: Send) -> None:
        send({"ready": True})
        release.wait(10)
        if not send({"after": "close"}):
            ended.set()

    server = serve(streams={"waits": waits})
    events = stream(server.path, "waits")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.settimeout(5)
        silent.connect(str(server.path))
        try:
            assert next(events) == {"ready": True}
            server.close()
            assert silent.recv(1024) == b""  # EOF now, not after REQUEST_TIMEOUT
            release.set()
            assert ended.wait(5), "send() after close() did not return False"
            assert list(events) == []
        finally:
            release.set()
            events.close()


def test_socket_file_is_owner_only(serve: Callable[..., ControlServer]) -> None:
    old = os.umask(0)  # the most permissive umask must not leak into the socket's mode
    try:
        server = serve()
    finally:
        os.umask(old)
    st = os.stat(server.path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.geteuid()


def test_a_foreign_uid_is_refused(serve: Callable[..., ControlServer], monkeypatch: pytest.MonkeyPatch) -> None:
    server = serve()
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        assert control._peer_uid(a) == os.geteuid()
    calls: list[socket.socket] = []

    def stranger(conn: socket.socket) -> int:
        calls.append(conn)
        return os.geteuid() + 1

    monkeypatch.setattr(control, "_peer_uid", stranger)
    reply = raw(server.path, b'{"v": 1, "verb": "ping"}\n')
    assert reply == {"v": 1, "ok": False, "error": "permission denied: this devrun runner belongs to another user"}
    with pytest.raises(ControlError, match="permission denied"):
        request(server.path, "ping")
    assert len(calls) == 2
    monkeypatch.undo()
    assert request(server.path, "ping") == "pong"


def test_connections_beyond_the_cap_are_refused_as_busy(
    serve: Callable[..., ControlServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(control, "MAX_CONNECTIONS", 2)
    entered: queue.Queue[None] = queue.Queue()
    release = threading.Event()

    def slow(args: dict[str, Any]) -> str:
        entered.put(None)
        release.wait(10)
        return "done"

    server = serve(handlers={"slow": slow})
    clients = [threading.Thread(target=request, args=(server.path, "slow"), kwargs={"timeout": 10}) for _ in range(2)]
    for client in clients:
        client.start()
    try:
        for _ in clients:
            entered.get(timeout=5)  # both slots are in a conversation: nothing to evict
        with pytest.raises(Busy, match="^busy: 2 control connections are open already$"):
            request(server.path, "ping")
        assert raw(server.path, b'{"v": 1, "verb": "ping"}\n') == {
            "v": 1, "ok": False, "error": "busy: 2 control connections are open already", "code": "busy"}
    finally:
        release.set()
        for client in clients:
            client.join(10)
    assert wait_for(lambda: request(server.path, "ping") == "pong", 5, "a slot after the slow clients left")


def test_idle_connections_give_their_slots_up_oldest_first(
    serve: Callable[..., ControlServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(control, "MAX_CONNECTIONS", 4)
    server = serve()
    idle = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(6)]
    try:
        for sock in idle:
            sock.connect(str(server.path))
            sock.settimeout(5)
        # Twice as many silent clients as slots, and still every request is answered, at once.
        for _ in range(4):
            assert request(server.path, "ping", timeout=3) == "pong"
        # The oldest silent clients were hung up on (EOF); the server is not waiting for them.
        assert idle[0].recv(10) == b""
    finally:
        for sock in idle:
            sock.close()


def test_a_client_does_not_connect_through_a_symlink(serve: Callable[..., ControlServer], tmp_path: Path) -> None:
    server = serve()
    link = tmp_path / "planted.sock"
    link.symlink_to(server.path)
    with pytest.raises(ControlError, match="is a symlink, not a runner's socket") as info:
        request(link, "ping")
    assert not isinstance(info.value, NotRunning)
    assert request(server.path, "ping") == "pong"


def test_a_symlink_in_place_of_the_lock_file_is_replaced(tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.write_text("keep\n")
    target.chmod(0o644)
    (tmp_path / "control.sock.lock").symlink_to(target)
    with ControlServer(tmp_path / "control.sock", HANDLERS) as server:
        assert request(server.path, "ping") == "pong"
    assert not (tmp_path / "control.sock.lock").is_symlink()
    assert target.read_text() == "keep\n" and stat.S_IMODE(target.stat().st_mode) == 0o644


def test_stale_socket_is_cleaned_up(serve: Callable[..., ControlServer], tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.listen()
    dead.close()  # as a killed runner leaves it: the file stays, nobody listens
    assert path.exists() and not probe(path)
    with pytest.raises(NotRunning):
        request(path, "ping")
    serve()
    assert probe(path)
    assert request(path, "ping") == "pong"


def test_a_leftover_plain_file_is_cleaned_up(serve: Callable[..., ControlServer], tmp_path: Path) -> None:
    (tmp_path / "control.sock").write_text("not a socket")
    server = serve()
    assert request(server.path, "ping") == "pong"


def test_a_live_socket_raises_already_running(serve: Callable[..., ControlServer]) -> None:
    first = serve()
    second = ControlServer(first.path, HANDLERS)
    with pytest.raises(AlreadyRunning, match="already answers"):
        second.start()
    second.close()  # must not remove the first runner's socket
    assert first.path.exists()
    assert request(first.path, "ping") == "pong"


def test_close_unlinks_only_its_own_socket(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    with ControlServer(path, HANDLERS):
        assert path.exists()
    assert not path.exists()
    assert not probe(path)
    with pytest.raises(NotRunning):
        request(path, "ping")

    server = ControlServer(path, HANDLERS)
    try:
        server.start()
        path.unlink()
        path.write_text("someone else's")  # e.g. a newer runner's socket
    finally:
        server.close()
    assert path.read_text() == "someone else's"


def test_request_on_a_missing_socket_raises_not_running(tmp_path: Path) -> None:
    with pytest.raises(NotRunning, match="no devrun runner is running here"):
        request(tmp_path / "control.sock", "status")
    with pytest.raises(NotRunning):
        request(tmp_path / "missing" / "control.sock", "status")
    events = stream(tmp_path / "control.sock", "logs")
    with pytest.raises(NotRunning):
        next(events)
    assert not probe(tmp_path / "control.sock")


def test_socket_path_is_in_the_state_dir_when_short(tmp_path: Path) -> None:
    state = tmp_path / ".devrun"
    assert socket_path(state) == state / "control.sock"


@pytest.fixture
def runtime(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    # Short as a real /run/user/UID is, whatever the length of pytest's tmp_path (longer under xdist),
    # so that a socket under it fits and the /tmp fallback is not taken.
    folder = Path(tempfile.mkdtemp(prefix="xdg-"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(folder))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def deep(tmp_path: Path) -> Path:
    state = tmp_path.joinpath(*["a-rather-long-folder-name"] * 6, ".devrun")
    state.mkdir(parents=True)
    assert len(os.fsencode(state / "control.sock")) > 108
    return state


def test_socket_path_for_a_deep_state_dir_is_short_and_private(
    serve: Callable[..., ControlServer], tmp_path: Path, runtime: Path
) -> None:
    state = deep(tmp_path)
    path = socket_path(state)
    assert path.parent == runtime / "devrun"
    assert len(os.fsencode(path)) <= 100
    st = os.lstat(path.parent)
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.geteuid()
    # Stable, so that a client finds what the runner bound; distinct per project.
    assert socket_path(state) == path
    assert socket_path(state / ".." / ".devrun") == path
    other = state.parent / "other"
    other.mkdir()
    assert socket_path(other) != path
    server = serve(path=path)
    assert request(socket_path(state), "ping") == "pong"
    assert server.path == path


def test_socket_path_falls_back_to_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "missing"))
    path = socket_path(deep(tmp_path))
    assert path.parent == Path(f"/tmp/devrun-{os.geteuid()}")
    assert stat.S_IMODE(os.lstat(path.parent).st_mode) == 0o700
    assert len(os.fsencode(path)) <= 100


def test_a_squatted_runtime_folder_is_refused(tmp_path: Path, runtime: Path) -> None:
    state = deep(tmp_path)
    squatted = runtime / "devrun"
    squatted.mkdir()
    squatted.chmod(0o755)
    with pytest.raises(UnsafeFolder, match="must be a folder .* with mode 0700"):
        socket_path(state)
    squatted.rmdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    squatted.symlink_to(elsewhere)
    with pytest.raises(UnsafeFolder, match="not a symlink"):
        socket_path(state)
