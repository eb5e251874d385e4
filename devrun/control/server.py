"""The runner's end of the control channel: `ControlServer` answers `status`, `logs`, `restart`,
`down`... from other terminals (the framing and the errors are in protocol.py).

Only the owner gets in: the socket file is 0600, in `.devrun/` or in a 0700 folder of ours,
and every peer's uid is checked too. The verbs are exactly the keys of the mappings the runner
hands to `ControlServer`: nothing is looked up by name on an object. Handlers run on the
connection's thread, so the runner's side must hand work to its main thread itself.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import reprlib
import select
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from devrun.control.protocol import (
    MAX_REQUEST,
    PROTOCOL,
    AlreadyRunning,
    ControlError,
    encode,
    encode_error,
)
from devrun.statefiles import open_private

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 32
# A client that connects and says nothing must not hold a thread for long; and when every slot
# is taken, the one that has waited longest without a complete request line gives its slot up.
REQUEST_TIMEOUT = 10.0
EVICT_WAIT = 1.0
BACKLOG = 128  # connections waiting to be accepted, beyond the ones being served
# A stream client that stops reading (a frozen terminal) counts as gone after this.
SEND_TIMEOUT = 10.0

Handler = Callable[[dict[str, Any]], Any]
Send = Callable[[dict[str, Any]], bool]
Stream = Callable[[dict[str, Any], Send], None]


class _BadRequest(Exception):
    pass


def probe(path: Path, timeout: float = 1.0) -> bool:
    """Whether a live server listens on path (a socket left by a killed runner refuses)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(os.fspath(path))
        except (BlockingIOError, TimeoutError):
            return True  # a full backlog: alive but busy, and certainly not ours to unlink
        except OSError:
            return False
        return True


def _peer_uid(conn: socket.socket) -> int | None:
    """The effective uid of the process at the other end, or None where the OS cannot tell
    (then the 0600 socket in a private folder is the only guard)."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    # struct ucred: pid_t, uid_t, gid_t.
    _pid, uid, _gid = struct.unpack("iII", conn.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("iII")))
    return int(uid)


class ControlServer:
    def __init__(self, path: Path, handlers: Mapping[str, Handler], streams: Mapping[str, Stream] | None = None):
        self.path = path
        self._handlers = dict(handlers)
        self._streams = dict(streams or {})
        if self._handlers.keys() & self._streams.keys():
            raise ValueError(f"verbs both plain and streaming: {sorted(self._handlers.keys() & self._streams.keys())}")
        self._allowed = ", ".join(sorted([*self._handlers, *self._streams]))
        self._listener: socket.socket | None = None
        self._identity: tuple[int, int] | None = None
        self._thread: threading.Thread | None = None
        # close() writes to it: neither close() nor shutdown() reliably wakes another thread's accept().
        self._wake: tuple[int, int] | None = None
        self._closed = threading.Event()
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        # Connections whose request line is not read yet, oldest first (dicts keep insertion order).
        self._waiting: dict[socket.socket, None] = {}

    def __enter__(self) -> ControlServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        path = os.fspath(self.path)
        with _exclusive(f"{path}.lock"):
            _clear_stale(self.path)
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                # The umask closes the window between bind() and chmod() in which the socket
                # would exist with the default mode (the umask is process-wide, but only for an
                # instant, and only makes another thread's new file stricter); chmod as well
                # because not every system applies the umask to sockets.
                old = os.umask(0o177)
                try:
                    listener.bind(path)
                finally:
                    os.umask(old)
                st = os.lstat(path)
                self._identity = (st.st_dev, st.st_ino)
                os.chmod(path, 0o600)
                listener.listen(BACKLOG)
            except OSError as exc:
                listener.close()
                self._unlink_if_ours()
                if exc.errno == errno.EADDRINUSE:
                    raise AlreadyRunning(f"another devrun runner holds {path}") from None
                raise
        # Non-blocking: a client that leaves between poll() and accept() must not block the loop.
        listener.setblocking(False)
        self._listener = listener
        self._wake = os.pipe()
        self._thread = threading.Thread(target=self._accept_loop, name="devrun-control", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop accepting and remove the socket file. A handler that is running still replies;
        a stream's next send() returns False; a client that has not sent its request gets EOF."""
        if self._closed.is_set():
            return
        self._closed.set()
        if self._listener is not None and self._wake is not None and self._thread is not None:
            os.write(self._wake[1], b"x")
            self._thread.join(5)
            self._listener.close()
            for fd in self._wake:
                os.close(fd)
        self._unlink_if_ours()
        # Under the lock, so that no connection's fd is closed (and reused) under our shutdown().
        with self._lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RD)

    def _unlink_if_ours(self) -> None:
        # A newer runner may have replaced a socket it found stale: that file is not ours to remove.
        with contextlib.suppress(OSError):
            st = os.lstat(self.path)
            if (st.st_dev, st.st_ino) == self._identity:
                os.unlink(self.path)

    def _accept_loop(self) -> None:
        assert self._listener is not None and self._wake is not None
        poller = select.poll()  # not select(): the runner may hold more than FD_SETSIZE fds
        poller.register(self._listener, select.POLLIN)
        poller.register(self._wake[0], select.POLLIN)
        while True:
            poller.poll()
            if self._closed.is_set():
                return
            try:
                conn, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                log.exception("control socket: accept failed")
                self._closed.wait(0.1)  # out of fds, say: do not spin
                continue
            try:
                self._admit(conn)
            except Exception:
                log.exception("control socket: could not serve a connection")
                conn.close()

    def _admit(self, conn: socket.socket) -> None:
        conn.settimeout(REQUEST_TIMEOUT)
        uid = _peer_uid(conn)
        if uid is not None and uid != os.geteuid():
            _refuse(conn, "permission denied: this devrun runner belongs to another user")
            return
        if not self._slots.acquire(blocking=False) and not (
                self._evict_oldest_waiting() and self._slots.acquire(timeout=EVICT_WAIT)):
            _refuse(conn, f"busy: {MAX_CONNECTIONS} control connections are open already", "busy")
            return
        with self._lock:
            # Checked under the lock that close() takes, so that no connection escapes its shutdown().
            closing = self._closed.is_set()
            if not closing:
                self._conns.add(conn)
                self._waiting[conn] = None
        if closing:
            self._slots.release()
            _refuse(conn, "the runner is shutting down")
            return
        try:
            threading.Thread(target=self._serve, args=(conn,), name="devrun-control-conn", daemon=True).start()
        except Exception:
            self._forget(conn)
            raise

    def _evict_oldest_waiting(self) -> bool:
        """Make the connection that has waited longest without a whole request line give up
        its slot (its thread reads EOF and ends), so idle clients cannot lock everyone out.
        False when every slot is in a real conversation (a handler running, a stream)."""
        with self._lock:
            oldest = next(iter(self._waiting), None)
            if oldest is None:
                return False
            del self._waiting[oldest]
            with contextlib.suppress(OSError):
                oldest.shutdown(socket.SHUT_RD)
        return True

    def _forget(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.discard(conn)
            self._waiting.pop(conn, None)
        conn.close()
        self._slots.release()

    def _serve(self, conn: socket.socket) -> None:
        try:
            self._converse(conn)
        except OSError:
            pass  # the client went away mid-conversation
        except Exception:
            log.exception("control connection failed")
        finally:
            self._forget(conn)

    def _converse(self, conn: socket.socket) -> None:
        try:
            line = _read_request(conn)
            with self._lock:
                self._waiting.pop(conn, None)  # in a conversation now: never evicted
            if line is None:
                return  # connected and left without a word: a probe
            verb, args = self._parse(line)
        except _BadRequest as exc:
            conn.sendall(encode_error(str(exc)))
            return
        conn.settimeout(SEND_TIMEOUT)
        if verb in self._streams:
            self._stream(conn, verb, args)
        else:
            self._call(conn, verb, args)

    def _parse(self, line: bytes) -> tuple[str, dict[str, Any]]:
        try:
            request = json.loads(line)
        except (ValueError, RecursionError):
            raise _BadRequest(
                f'malformed request: expected one line of JSON like {{"v": {PROTOCOL}, "verb": "status", "args": {{}}}}'
            ) from None
        if not isinstance(request, dict):
            raise _BadRequest(f"malformed request: expected a JSON object, got {type(request).__name__}")
        version = request.get("v")
        # type() and not ==: true == 1 in Python.
        if type(version) is not int or version != PROTOCOL:
            raise _BadRequest(
                f'unsupported protocol version {reprlib.repr(version)}: this runner speaks "v": {PROTOCOL}'
            )
        verb = request.get("verb")
        if not isinstance(verb, str) or (verb not in self._handlers and verb not in self._streams):
            raise _BadRequest(f"unknown verb {reprlib.repr(verb)}; allowed verbs: {self._allowed}")
        args = request.get("args", {})
        if not isinstance(args, dict):
            raise _BadRequest(f'malformed request: "args" must be a JSON object, got {type(args).__name__}')
        return verb, args

    def _call(self, conn: socket.socket, verb: str, args: dict[str, Any]) -> None:
        try:
            reply = encode({"v": PROTOCOL, "ok": True, "result": self._handlers[verb](args)})
        except ControlError as exc:
            reply = encode_error(str(exc))  # a refusal the handler meant, such as an unknown app
        except Exception as exc:
            log.exception("control verb %r failed", verb)
            reply = encode_error(str(exc) or type(exc).__name__)
        conn.sendall(reply)

    def _stream(self, conn: socket.socket, verb: str, args: dict[str, Any]) -> None:
        lock = threading.Lock()
        gone = False

        def send(event: dict[str, Any]) -> bool:
            nonlocal gone
            data = encode({"v": PROTOCOL, "ok": True, "event": event})
            # A lock: the stream function may hand send() to whatever thread produces its events.
            with lock:
                if gone or self._closed.is_set():
                    gone = True
                    return False
                try:
                    conn.sendall(data)
                except OSError:
                    gone = True
                return not gone

        try:
            self._streams[verb](args, send)
        except Exception as exc:
            if not isinstance(exc, ControlError):
                log.exception("control stream %r failed", verb)
            with lock:
                if not gone:
                    conn.sendall(encode_error(str(exc) or type(exc).__name__))
        finally:
            # A send() kept by another thread must not write to the socket once it is closed.
            with lock:
                gone = True


def _refuse(conn: socket.socket, text: str, code: str | None = None) -> None:
    with conn, contextlib.suppress(OSError):
        conn.settimeout(1.0)
        conn.sendall(encode_error(text, code))


def _read_request(conn: socket.socket) -> bytes | None:
    """The request line, None for a client that closed without sending anything."""
    deadline = time.monotonic() + REQUEST_TIMEOUT
    data = bytearray()
    while True:
        newline = data.find(b"\n")
        if newline >= 0:
            data = data[:newline]
            break
        if len(data) > MAX_REQUEST:
            break
        # One deadline for the whole line, so a client trickling a byte at a time cannot stay either.
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _BadRequest(f"no complete request line within {REQUEST_TIMEOUT:g} s")
        conn.settimeout(remaining)
        try:
            chunk = conn.recv(65536)
        except TimeoutError:
            raise _BadRequest(f"no complete request line within {REQUEST_TIMEOUT:g} s") from None
        if not chunk:
            if not data:
                return None
            break  # a last line without its newline (`nc` sends that) is still a request
        data += chunk
    if len(data) > MAX_REQUEST:
        raise _BadRequest(f"request too long: the limit is {MAX_REQUEST} bytes per line")
    return bytes(data)


@contextlib.contextmanager
def _exclusive(lock_path: str) -> Iterator[None]:
    # Two runners starting at once must not both find the old socket stale and then unlink
    # each other's fresh one. flock is released by the kernel however its holder dies.
    # A symlink in its place is replaced: the runner lock (runner.pid) is held before this, so no
    # other runner of this project can be replacing it at the same time.
    fd = open_private(Path(lock_path), os.O_RDWR | os.O_CREAT, replace_link=True)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _clear_stale(path: Path) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISSOCK(st.st_mode) and probe(path):
        raise AlreadyRunning(f"a devrun runner already answers on {path}")
    # Left by a runner that was killed: nothing listens there any more.
    os.unlink(path)
