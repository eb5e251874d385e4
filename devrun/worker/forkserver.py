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

The shared preloader (runner/preloader.py) is this same server, started for no app in
particular: its forks move into their app's folder and environment first (move_in), and a Fork
with server set makes an app's fork server instead of a spare (become_server), on the socket
that comes with it.

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
import importlib.util
import os
import signal
import socket
import sys
import sysconfig
import time
from collections.abc import Callable

from gevent import monkey

from devrun.wire import (
    SHARED_CULPRIT,
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
# Set for the shared preloader: one per interpreter, from which the apps' generations (and the
# fork servers of the apps that need their own) are forked (runner/preloader.py).
SHARED_ENV = "DEVRUN_SHARED_PRELOADER"
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


def own_roots(roots: tuple[str, ...]) -> tuple[str, ...]:
    """An app's project folders, as prefixes of its modules' paths."""
    return tuple(os.path.join(os.path.abspath(r), "") for r in roots)


def project_modules(roots: tuple[str, ...]) -> list[str]:
    return [name for name, module in list(sys.modules.items())
            if (path := getattr(module, "__file__", None)) and os.path.abspath(path).startswith(roots)]


def os_threads() -> int:
    """Real OS threads of this process (Linux; 1 elsewhere, where nothing can be checked)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def installed(name: str) -> bool:
    """Is the top-level package of name part of the interpreter's installation (the standard
    library, site-packages)? Found without importing anything."""
    try:
        spec = importlib.util.find_spec(name.partition(".")[0])
    except (ImportError, ValueError):
        return False
    if spec is None:
        return False
    where = [spec.origin] if spec.origin and os.path.isabs(spec.origin) else []
    where += list(spec.submodule_search_locations or [])
    if not where:
        return True  # built in or frozen
    homes = tuple(os.path.join(os.path.realpath(p), "") for key, p in sysconfig.get_paths().items()
                  if key in ("stdlib", "platstdlib", "purelib", "platlib"))
    return all(os.path.realpath(w).startswith(homes) for w in where)


def preload(names: tuple[str, ...], roots: tuple[str, ...], installed_only: bool = False) -> tuple[str, str] | None:
    """Import names; return (culprit, why) if one of them pulled in project code (why: that
    module's name) or started an OS thread (why: "thread"): a fork copies only the forking
    thread, so a lock another thread held stays held for ever in every generation.

    installed_only (the shared preloader): only what the interpreter has installed. A library
    of the user's own, on a PYTHONPATH folder, is the likeliest to read its app's environment
    at import, and the preloader imports with none of the apps' `env:`; the app's own fork
    server imports it, in the app's environment."""
    threads = os_threads()
    for name in names:
        if name in sys.modules or (installed_only and not installed(name)):
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
    shared = os.environ.pop(SHARED_ENV, "") == "1"
    set_name(b"devrun-preload" if shared else b"devrun-forksrv")
    die_with(int(os.environ.pop(RUNNER_ENV)))
    # Registered before anything is preloaded, so it runs first in every child: the middle
    # process of a fork dies with the server even while a library's own at-fork hook hangs in it.
    os.register_at_fork(after_in_child=functools.partial(middle_dies_with, os.getpid()))
    sock = _Socket(fileno=int(os.environ.pop(SOCK_ENV)))
    sock.setblocking(True)
    import devrun.worker.serve  # noqa: F401 - what every generation runs

    return serve_forks(sock, lifeline_fd(), shared)


def lifeline_fd() -> int:
    return int(os.environ["DEVRUN_LIFELINE_FD"])


def serve_forks(sock: socket.socket, lifeline: int, shared: bool = False) -> int:
    """Preload what the runner's Hello names, then fork for it until it closes our socket."""
    hello = read_hello(sock)
    if not isinstance(hello, Hello):
        return 0 if hello is None else 1
    roots = own_roots(hello.project_roots)
    # A server forked from the shared preloader starts with what that preloaded: none of it may
    # be this app's own code (another app's preloads were checked against their roots only).
    tainted = project_modules(roots)
    culprit = (SHARED_CULPRIT, tainted[0]) if tainted else preload(hello.preload, roots, shared)
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
        fork = decode(msg)
        if stale or not isinstance(fork, Fork) or len(fds) != (1 if fork.server else 4):
            for fd in fds:
                _close(fd)
            if stale:
                send(sock, ServerStale(stale))
                return 0
            send(sock, ForkFailed("not a fork request"))
            continue
        send(sock, fork_for(fork, fds, sock, stamps))


def read_hello(sock: socket.socket) -> Message | None:
    """The runner's first message (None: it closed the socket before saying one)."""
    data = b""
    while not data.endswith(b"\n"):  # the hello, and nothing after it, comes before we reply
        chunk = sock.recv(1 << 20)
        if not chunk:
            return None
        data += chunk
    return decode(data) or Fork()  # anything else that is not a Hello ends the server


def fork_for(fork: Fork, fds: list[int], sock: socket.socket, stamps: dict[str, int]) -> Message:
    """Fork what the runner asked for (a spare, or a fork server); the answer to send."""
    try:
        if fork.server:
            pid = double_fork(functools.partial(become_server, fds[0], sock, fork))
        else:
            pid = double_fork(functools.partial(become_generation, fds, sock, stamps, fork))
    except OSError as exc:  # out of processes or fds: the runner spawns instead
        pid, why = 0, exc.strerror or str(exc)
    else:
        why = "the fork failed"
    for fd in fds:  # before the answer: once the runner has it, the port is never held here
        _close(fd)
    return Forked(pid) if pid else ForkFailed(why)


def double_fork(then: Callable[[int], object]) -> int:
    """Fork twice; the grandchild runs then(pid of the middle process) and never returns. It is
    reparented to the runner (a subreaper), which reaps it; its pid is returned."""
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
            if _fork() == 0:
                # Its own session before anyone learns its pid: the runner kills a retired fork
                # server's whole group, and must never take a generation along.
                os.setsid()
                os.write(write_pid, f"{os.getpid()}\n".encode())
                _close(write_pid)
                then(middle)  # never returns
        finally:
            os._exit(0)
    _close(write_pid)
    try:
        pid = read_pid_line(read_pid)
    finally:
        _close(read_pid)
    _waitpid(first, 0)  # once it has exited, the grandchild is the runner's child
    return pid


def adopted(middle: int) -> None:
    """Wait until the middle process has exited and we belong to the runner, so that the
    runner-is-alive checks see the runner as our parent."""
    deadline = time.monotonic() + 2.0
    while os.getppid() == middle and time.monotonic() < deadline:
        _sleep(0.0002)


def move_in(fork: Fork) -> None:
    """A fork of the shared preloader takes its app's folder and environment, as a process
    spawned for that app would have started with them."""
    if not fork.cwd:
        return
    os.chdir(fork.cwd)
    os.environ.clear()
    os.environ.update(item.split("=", 1) for item in fork.env)  # type: ignore[misc]
    importlib.invalidate_caches()


def become_server(sock_fd: int, parent: socket.socket, fork: Fork, middle: int) -> None:
    """A fork server of one app, forked from the shared preloader: it preloads the rest of
    what that app imports, then forks its spares (serve_forks)."""

    def serve() -> int:
        adopted(middle)
        parent.close()
        lifeline = lifeline_fd()  # before the app's environment replaces ours
        set_name(b"devrun-forksrv" if fork.cwd else b"devrun-preload")  # an app's, or a better preloader
        die_with(os.getppid())  # the runner: it adopted us on its main thread (see die_with)
        os.register_at_fork(after_in_child=functools.partial(middle_dies_with, os.getpid()))
        move_in(fork)
        sock = _Socket(fileno=sock_fd)
        sock.setblocking(True)
        return serve_forks(sock, lifeline, shared=not fork.cwd)

    exit_with(serve)


def exit_with(body: Callable[[], int]) -> None:
    """Run what a fork is for and leave with its code, never returning into the parent's stack."""
    code = 1
    try:
        code = body()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


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


def become_generation(fds: list[int], sock: socket.socket, stamps: dict[str, int], fork: Fork,
                      middle: int) -> None:
    event_fd, output_fd, listen_fd, control_fd = fds

    def serve() -> int:
        adopted(middle)
        move_in(fork)
        # A spare says so until it is handed its spec (`ps`, and the tests, tell them apart).
        set_name(b"devrun-spare")
        # A fork of the shared preloader checks that it has none of its app's own code: that
        # would be served as it was when the preloader imported it (see runner/preloader.py).
        mine = project_modules(own_roots(fork.roots)) if fork.roots else []
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
        if mine:
            os.write(event_fd, encode(Stale(mine[0], project=True)))
            return 0
        stale = changed(stamps)  # as the server checks before a fork, checked now, by us
        if stale:
            os.write(event_fd, encode(Stale(stale)))
            return 0
        return run(dataclasses.replace(spec, listen_fd=listen_fd, control_fd=control_fd, event_fd=event_fd))

    exit_with(serve)
