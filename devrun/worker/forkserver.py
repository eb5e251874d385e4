"""The fork server: one per app, in the app's folder and environment. It has gevent patched
and the app's third-party modules imported once; each generation is a fork of it, so a reload
pays only for the project's own imports.

Protocol over a Unix socket with the runner, one devrun.wire message each way:
  runner -> Hello(preload, project_roots)
  server -> ServerReady(modules) (every module it has: a forked generation reports them all
            among its imports, and they are preloaded already), or Tainted(culprit, module)
  runner -> Fork() with SCM_RIGHTS fds: the generation's event and output pipes, the app's
            listening socket (the server itself never keeps it) and the runner's control pipe
            to the generation
  server -> Forked(pid), ServerStale(path), or ForkFailed(why) (it could not fork)

Every generation forked here is a spare: set up, and waiting for its full spec on its control
pipe (a Become) before it imports anything of the project. The runner hands it a spec only once it has its
pid, so one whose answer came too late (or never) imports nothing and serves nothing: it exits
when the runner closes its control pipe. The runner keeps one per app and hands it the next
reload's spec, so a reload does not wait for a fork. Given its spec, a spare first makes the
server's staleness check itself (it has the server's snapshot): if a preloaded file changed it
reports Stale and exits, and the runner replaces the server.

Hygiene: no threads and no running gevent hub here; stdio flushed before each fork; a module
whose file is in the project is never imported here (it would be served stale). A preloaded
module may well create a hub without running it (Falcon's `falcon.util.sync` makes a
ThreadPoolExecutor at import, whose patched SimpleQueue asks for one): so every blocking or
fd call here is the unpatched stdlib's, os.close included (see _close).
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import importlib
import os
import signal
import socket
import sys
import time

from gevent import monkey

from devrun.wire import (
    Become,
    Fork,
    Forked,
    ForkFailed,
    Hello,
    Message,
    ServerReady,
    ServerStale,
    Stale,
    Tainted,
    WorkerSpec,
    decode,
    encode,
)

SOCK_ENV = "DEVRUN_FORKSERVER"
RUNNER_ENV = "DEVRUN_RUNNER_PID"
MAX_FDS = 8

# The standard library as it was before gevent patched it: this process must never start a
# gevent hub (a forked child would inherit a half-used event loop), so it blocks for real.
_fork, _waitpid = monkey.get_original("os", ["fork", "waitpid"])
# gevent (25.8.1 on) patches os.close too: where a hub exists in the thread, closing a pipe or a
# socket is deferred to the hub's next loop iteration, which never comes here (nor in a spare
# before it has its spec). With Falcon preloaded, the write end of the pid pipe then stayed open
# in the server itself, so reading the pid never ended, every fork "got no answer", and the
# fds it was handed (the app's listening socket among them) were never closed.
_close = monkey.get_original("os", "close")
_select = monkey.get_original("select", "select")
_Socket = monkey.get_original("socket", "socket")
_sleep = monkey.get_original("time", "sleep")


def project_modules(roots: tuple[str, ...]) -> list[str]:
    return [name for name, module in list(sys.modules.items())
            if (path := getattr(module, "__file__", None)) and os.path.abspath(path).startswith(roots)]


def os_threads() -> int:
    """Real OS threads of this process (Linux; 1 elsewhere, where nothing can be checked)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def preload(names: tuple[str, ...], roots: tuple[str, ...]) -> tuple[str, str] | None:
    """Import names; return (culprit, why) if one of them pulled in project code (why: that
    module's name) or started an OS thread (why: "thread"): a fork copies only the forking
    thread, so a lock another thread held stays held for ever in every generation."""
    threads = os_threads()
    for name in names:
        if name in sys.modules:
            continue
        try:
            importlib.import_module(name)
        except BaseException:  # a module that cannot be imported on its own is just not preloaded
            continue
        tainted = project_modules(roots)
        if tainted:
            return name, tainted[0]
        if os_threads() > threads:
            return name, "thread"
    return None


def snapshot() -> dict[str, int]:
    """mtimes of every preloaded file and of the import path's folders (installed packages)."""
    stamps: dict[str, int] = {}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path:
            stamps[path] = 0
    for entry in sys.path:
        if entry and os.path.isdir(entry):
            stamps[entry] = 0
    for path in stamps:
        try:
            stamps[path] = os.stat(path).st_mtime_ns
        except OSError:
            stamps[path] = -1
    return stamps


def changed(stamps: dict[str, int]) -> str | None:
    for path, mtime in stamps.items():
        try:
            now = os.stat(path).st_mtime_ns
        except OSError:
            now = -1
        if now != mtime:
            return path
    return None


PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15


def prctl(option: int, arg: object) -> None:
    """Linux only; elsewhere nothing happens."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(option, arg, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def set_name(name: bytes) -> None:
    """The process's short name (`ps -o comm`, top): fork server and generations share one
    command line, and this tells them apart."""
    prctl(PR_SET_NAME, name[:15])


def die_with(parent: int) -> None:
    """SIGKILL when parent goes, however it goes, and whatever this process is doing then: deep
    in a preload that hangs, or waiting on a fork that does. The lifeline is only watched
    between requests. Relative to the thread that forked us: the runner starts fork servers on
    its main thread only; the fork server has one thread."""
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it went before the line above
        os._exit(0)


def middle_dies_with(server: int) -> None:
    """In a child of the fork server: the middle process of a double fork. A generation's parent
    is the middle, never the server, and an app's own forks have the generation as parent: both
    are left alone."""
    if os.getppid() == server:
        die_with(server)


def send(sock: socket.socket, msg: Message) -> None:
    sock.sendall(encode(msg))


def main() -> int:
    set_name(b"devrun-forksrv")
    die_with(int(os.environ.pop(RUNNER_ENV)))
    # Registered before anything is preloaded, so it runs first in every child: the middle
    # process of a fork dies with the server even while a library's own at-fork hook hangs in it.
    os.register_at_fork(after_in_child=functools.partial(middle_dies_with, os.getpid()))
    sock = _Socket(fileno=int(os.environ.pop(SOCK_ENV)))
    sock.setblocking(True)
    lifeline = int(os.environ["DEVRUN_LIFELINE_FD"])
    import devrun.worker.serve  # noqa: F401 - what every generation runs

    data = b""
    while not data.endswith(b"\n"):  # the hello, and nothing after it, comes before we reply
        chunk = sock.recv(1 << 20)
        if not chunk:
            return 0
        data += chunk
    hello = decode(data)
    if not isinstance(hello, Hello):
        return 1
    roots = tuple(os.path.join(os.path.abspath(r), "") for r in hello.project_roots)
    culprit = preload(hello.preload, roots)
    if culprit:
        send(sock, Tainted(*culprit))
        return 0
    stamps = snapshot()
    # Everything preloaded moves to the collector's permanent generation: a generation's
    # collections then never walk (and so never write to, and copy) the pages it shares with us.
    gc.freeze()
    send(sock, ServerReady(tuple(sorted(sys.modules))))

    # Exited first-level children are reaped here; their own children (the generations) belong
    # to the runner, which is a subreaper. (gevent's signal.signal(SIGCHLD) would start a hub.)
    while True:
        readable, _, _ = _select([sock, lifeline], [], [])
        if lifeline in readable:
            return 0  # the runner is gone
        try:
            msg, fds, _flags, _addr = socket.recv_fds(sock, 1 << 20, MAX_FDS)
        except ConnectionResetError:
            return 0  # the runner closed our socket with a reply unread: retired all the same
        if not msg:
            return 0  # the runner closed our socket: we are retired
        stale = changed(stamps)
        if stale or not isinstance(decode(msg), Fork) or len(fds) != 4:
            for fd in fds:
                _close(fd)
            if stale:
                send(sock, ServerStale(stale))
                return 0
            send(sock, ForkFailed("not a fork request"))
            continue
        try:
            pid = spawn_generation(fds, sock, stamps)
        except OSError as exc:  # out of processes or fds: the runner spawns instead
            pid, why = 0, exc.strerror or str(exc)
        else:
            why = "the generation's fork failed"
        for fd in fds:  # before the answer: once the runner has it, the port is never held here
            _close(fd)
        send(sock, Forked(pid) if pid else ForkFailed(why))


def spawn_generation(fds: list[int], sock: socket.socket, stamps: dict[str, int]) -> int:
    """Double fork: the generation is reparented to the runner (a subreaper), which reaps it."""
    event_fd, output_fd, listen_fd, control_fd = fds
    sys.stdout.flush()
    sys.stderr.flush()
    read_pid, write_pid = os.pipe()
    try:
        first = _fork()
    except BaseException:
        _close(read_pid)
        _close(write_pid)
        raise
    if first == 0:
        try:
            _close(read_pid)
            middle = os.getpid()
            generation = _fork()
            if generation == 0:
                # Its own session before anyone learns its pid: the runner kills a retired fork
                # server's whole group, and must never take a generation along.
                os.setsid()
                os.write(write_pid, f"{os.getpid()}\n".encode())
                _close(write_pid)
                become_generation(listen_fd, control_fd, event_fd, output_fd, sock, middle, stamps)  # never returns
        finally:
            os._exit(0)
    _close(write_pid)
    try:
        pid = read_pid_line(read_pid)
    finally:
        _close(read_pid)
    _waitpid(first, 0)  # once it has exited, the generation is the runner's child
    return pid


def read_pid_line(fd: int) -> int:
    """The generation's pid, up to its newline (0: the middle process exited without one). Not
    up to EOF: whatever else came to hold the pipe's write end cannot make us wait."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(fd, 64)
        if not chunk:
            return 0
        data += chunk
    return int(data)


def wait_for_spec(fd: int) -> WorkerSpec:
    """A spare's first line on its control pipe: the spec of the generation it becomes. The
    runner sends nothing else before the generation is serving; anything read past the line is
    handed on to the reader of later messages all the same."""
    data = b""
    while b"\n" not in data:
        chunk = os.read(fd, 65536)
        if not chunk:  # the runner dropped the spare (or died): nothing to become
            os._exit(0)
        data += chunk
    line, rest = data.split(b"\n", 1)
    become = decode(line)
    if not isinstance(become, Become):
        os._exit(1)
    return dataclasses.replace(become.spec, control_pending=rest.decode("latin-1"))


def become_generation(listen_fd: int, control_fd: int, event_fd: int, output_fd: int, sock: socket.socket,
                      middle: int, stamps: dict[str, int]) -> None:
    code = 1
    try:
        # Wait until the middle process has exited and we belong to the runner, so that the
        # runner-is-alive check in run() sees the runner as our parent.
        deadline = time.monotonic() + 2.0
        while os.getppid() == middle and time.monotonic() < deadline:
            _sleep(0.0002)
        # A spare says so until it is handed its spec (`ps`, and the tests, tell them apart).
        set_name(b"devrun-spare")
        sock.close()
        os.dup2(output_fd, 1)
        os.dup2(output_fd, 2)
        _close(output_fd)
        import gevent

        gevent.reinit()
        from devrun.worker.serve import run

        # The fds are ours, whatever numbers the runner has for them.
        spec = wait_for_spec(control_fd)
        set_name(b"devrun-gen")
        stale = changed(stamps)  # as the server checks before a fork, checked now, by us
        if stale:
            os.write(event_fd, encode(Stale(stale)))
            os._exit(0)
        code = run(dataclasses.replace(spec, listen_fd=listen_fd, control_fd=control_fd, event_fd=event_fd))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
