"""The runner's side of an app's fork server (`reload: fork`).

A ForkLauncher hands out generations like generation.spawn does, but forks them from a fork
server that has gevent patched and the app's third-party modules imported: the shared
preloader (preloader.py) while that has all the app imports, else a server of the app's own.
It learns what to preload from what each generation imported outside the project, starts a
better-preloaded server in the background when that grows, restarts the server when a
preloaded file or the installed packages change, and falls back to spawn (saying so) whenever
no server is ready.

The main thread never waits long on a server: it waits for a fork's answer FORK_WAIT at most,
and never again on a server that missed that; such a server's late answer is picked up on a
later tick, and one that has not answered in FORK_TIMEOUT is replaced. A hung server costs its
own app spawns, never another app's reload or the runner's loop more than FORK_WAIT, once.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Protocol

from devrun import statefiles, wire
from devrun.config import App
from devrun.runner import generation
from devrun.runner.generation import ForkedChild, Generation, Post
from devrun.watch.patterns import Matcher

Say = Callable[[str, str], None]  # a notice of the app's: (text, level)

# A fork answers in 5 to 20 ms here (Falcon, Django). The main thread waits this long at most for
# one, and never again on a server that missed it once.
FORK_WAIT = 0.25
# A server that has not answered a fork by then is hung (a library's at-fork hook, a deadlock):
# replaced in the background, its app spawning meanwhile.
FORK_TIMEOUT = 5.0
# Deaths (or hangs) of an app's fork servers after which it spawns for the rest of the run.
MAX_SERVER_DEATHS = 8
# A fork server preloads for about as long as a generation starts: while other apps are still
# starting it would take their CPU, so it waits for them, this long at most.
MAX_DEFER = 10.0


class ServerState(Enum):
    STARTING = "starting"  # preloading
    READY = "ready"
    TAINTED = "tainted"  # a preload started a thread or imported project code: replaced without it
    GONE = "gone"


class ForkServerGone(Exception):
    pass


class Stale(Exception):
    """A preloaded file or the installed packages changed: the server must be replaced."""


@dataclass
class Asked:
    """A fork asked of a server and not answered yet: the runner's ends of the new generation's
    pipes, kept until the answer comes (or never does)."""

    event_r: int
    out_r: int
    control_w: int
    at: float

    def release(self) -> None:
        """Close our ends: a spare forked anyway finds its control pipe closed and exits."""
        for fd in (self.event_r, self.out_r, self.control_w):
            with contextlib.suppress(OSError):
                os.close(fd)


class ServerProcess(Protocol):
    """What a ForkServer needs of its process: subprocess.Popen, or an AdoptedServer."""

    pid: int

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def kill(self) -> None: ...


class AdoptedServer:
    """A fork server forked from the shared preloader, and adopted by the runner (a subreaper).
    Its reaper thread waits for it (wait() with no timeout); everyone else only polls."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None
        self._reaped = threading.Event()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if timeout is None:
            self.returncode = generation.wait_exit(self.pid)
            self._reaped.set()
        else:
            self._reaped.wait(timeout)
        return -signal.SIGKILL if self.returncode is None else self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, signal.SIGKILL)


def spawned_server(app: App, env: dict[str, str]) -> Callable[[socket.socket], ServerProcess]:
    """How an app's own fork server starts: `python -m devrun.worker --forkserver`, in the app's
    folder and environment."""
    return functools.partial(start_server, app.root, generation.child_environment(app, env))


def start_server(cwd: Path, env: dict[str, str], theirs: socket.socket) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "devrun.worker", "--forkserver"],
        cwd=cwd,
        env={**env, "DEVRUN_FORKSERVER": str(theirs.fileno()),
             "DEVRUN_LIFELINE_FD": str(generation.lifeline_fd()), "DEVRUN_RUNNER_PID": str(os.getpid())},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,  # what preloading prints would only repeat a generation's
        stderr=None if os.environ.get("DEVRUN_DEBUG_FORKSERVER") else subprocess.DEVNULL,
        # Not the listener: it comes with each fork request, so a fork server never
        # holds the app's port (one outliving the runner would keep it answering).
        pass_fds=(theirs.fileno(), generation.lifeline_fd()),
        start_new_session=True,
    )


def project_roots(app: App) -> list[str]:
    return [str(app.root), *Matcher(app.root, app.config.watch).roots]


class ForkServer:
    """One fork server process and the socket to it: an app's own, or the shared preloader."""

    def __init__(self, name: str, preload: list[str], roots: list[str],
                 start: Callable[[socket.socket], ServerProcess]):
        self.name = name
        self.preload = preload
        self.state = ServerState.STARTING
        self.taint: tuple[str, str] | None = None
        # What it has imported once ready: what it was asked to preload, what that pulled in, and
        # its own modules, which its generations report among their imports too.
        self.loaded: set[str] = set()
        self.asked: Asked | None = None  # one fork at a time: the protocol is a sequence
        self.slow = False  # missed FORK_WAIT once: a reload never waits for it again
        self.sock, theirs = socket.socketpair()
        self.buffer = b""
        try:
            self.proc = start(theirs)
        except BaseException:
            self.sock.close()
            raise
        finally:
            theirs.close()
        generation.known_pids.add(self.proc.pid)
        threading.Thread(target=self._reap, name=f"devrun-{name}-forkserver", daemon=True).start()
        try:
            self._send(wire.Hello(tuple(preload), tuple(roots)))
        except ForkServerGone:
            self.close()
            raise

    def _reap(self) -> None:
        self.proc.wait()
        generation.known_pids.discard(self.proc.pid)

    def _send(self, msg: wire.Message, fds: list[int] | None = None) -> None:
        data = wire.encode(msg)
        try:
            if fds:
                socket.send_fds(self.sock, [data], fds)
            else:
                self.sock.sendall(data)
        except OSError as exc:
            self.state = ServerState.GONE
            raise ForkServerGone(str(exc)) from None

    def _reply(self, timeout: float) -> wire.Message | None:
        """The server's next message; None if none arrived within timeout. Anything that is not
        one of the protocol's messages means the server is broken: gone."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            # poll, not select: select() cannot take an fd above FD_SETSIZE (1024).
            poller = select.poll()
            poller.register(self.sock, select.POLLIN)
            if not poller.poll(max(0, int((deadline - time.monotonic()) * 1000))):
                return None
            try:
                chunk = self.sock.recv(65536)
            except OSError:  # reset: the server died with our request unread
                chunk = b""
            if not chunk:
                self.state = ServerState.GONE
                raise ForkServerGone("the fork server exited")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        message = wire.decode(line)
        if message is None:
            self.state = ServerState.GONE
            raise ForkServerGone("the fork server said something that is not the protocol")
        return message

    def poll(self) -> ServerState:
        """Non-blocking: has it finished preloading?"""
        if self.state is ServerState.STARTING:
            try:
                reply = self._reply(0)
            except ForkServerGone:
                self.state = ServerState.GONE
                return self.state
            if isinstance(reply, wire.Tainted):
                self.taint = (reply.culprit, reply.module)
                self.state = ServerState.TAINTED
            elif isinstance(reply, wire.ServerReady):
                self.loaded = set(reply.modules)
                self.state = ServerState.READY
            elif reply is not None:
                self.state = ServerState.GONE
        if self.state is ServerState.READY and self.proc.poll() is not None:
            self.state = ServerState.GONE
        return self.state

    def ask(self, listener: socket.socket, fork: wire.Fork | None = None) -> None:
        """Ask for a fork (a spare: it waits for its spec, see ForkLauncher.spawn); the answer
        is picked up by answer(). Sending never waits: one small request at a time."""
        event_r, event_w = os.pipe()
        out_r, out_w = os.pipe()
        control_r, control_w = generation.control_pipe()
        try:  # the spare's spec comes later, on its control pipe
            self._send(fork or wire.Fork(), [event_w, out_w, listener.fileno(), control_r])
        except ForkServerGone:
            for fd in (event_r, out_r, control_w):
                os.close(fd)
            raise
        finally:
            os.close(event_w)
            os.close(out_w)
            os.close(control_r)
        self.asked = Asked(event_r, out_r, control_w, time.monotonic())

    def fork_server(self, fork: wire.Fork, sock: socket.socket) -> int:
        """Have this server fork a fork server that talks to us on sock: its pid. The answer
        is waited for (FORK_WAIT at most: a fork takes milliseconds): a server that misses it
        is gone, as one whose answer is not a pid is."""
        assert self.asked is None
        self._send(fork, [sock.fileno()])
        reply = self._reply(FORK_WAIT)
        if isinstance(reply, wire.Forked) and reply.pid > 0:
            return reply.pid
        self.state = ServerState.GONE
        if isinstance(reply, wire.ServerStale):
            raise Stale(reply.path)
        raise ForkServerGone(reply.why if isinstance(reply, wire.ForkFailed) and reply.why
                             else f"no answer to a fork in {FORK_WAIT * 1000:.0f} ms")

    def answer(self, app: str, post: Post, timeout: float = 0.0) -> Generation | None:
        """The spare asked for, once the server has answered (None while it has not)."""
        asked = self.asked
        assert asked is not None
        reply: wire.Message | None
        try:
            reply = self._reply(timeout)
        except ForkServerGone:
            reply = wire.ForkFailed("it exited")
        if reply is None:
            return None
        self.asked = None
        if not isinstance(reply, wire.Forked) or reply.pid <= 0:
            asked.release()
            self.state = ServerState.GONE
            if isinstance(reply, wire.ServerStale):
                raise Stale(reply.path)
            raise ForkServerGone(reply.why if isinstance(reply, wire.ForkFailed) and reply.why else "it exited")
        child = ForkedChild(reply.pid, asked.out_r)
        spare = Generation(app, 0, child, control_fd=asked.control_w)
        return generation.start_readers(spare, asked.event_r, post)

    def close(self) -> None:
        """Retire it. Its generations live on (each has left the server's session before its
        pid is reported); the server holds nothing worth a graceful exit and may be deep in
        preloading or stuck in a fork, so its whole group is killed: a half-forked child of
        a server that stopped answering may hold the app's listening socket."""
        self.state = ServerState.GONE
        with contextlib.suppress(OSError):
            self.sock.close()
        if self.asked is not None:
            self.asked.release()
            self.asked = None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()

    def wait(self, timeout: float) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout)


class Shared(Protocol):
    """The shared preloader, as an app's launcher uses it (preloader.py)."""

    def ready_for(self, name: str) -> bool: ...

    def learned(self, name: str, names: list[str]) -> None: ...

    def fork_server(self, app: App, env: dict[str, str], preload: list[str]) -> ForkServer | None: ...

    def fork_generation(self, app: App, env: dict[str, str], listener: socket.socket,
                        post: Post) -> Generation | None: ...

    def covers(self, names: list[str]) -> bool: ...

    def leave(self, name: str) -> None: ...

    def settling(self) -> bool: ...

    def usable(self) -> ForkServer | None: ...


class ForkLauncher:
    """Hands out generations for one app: forked when a server is ready, else spawned."""

    def __init__(self, app: App, listener: socket.socket, env: dict[str, str], notice: Say,
                 cache: Path | None = None, others_starting: Callable[[], bool] = lambda: False,
                 shared: Shared | None = None):
        self.app = app
        # The shared preloader this app's server and first generation are forked from, if any;
        # while the app has no server of its own (it imports nothing the preloader lacks),
        # every generation is.
        self.shared = shared
        self.group = shared  # left when the app closes, even after the app stopped using it
        self.launches = 0
        self.stored: list[str] | None = None  # what _store wrote last
        self.others_starting = others_starting
        # What the next server is to preload, while it waits for the other apps to start.
        self.deferred: list[str] | None = None
        self.deferred_at = 0.0
        self.listener = listener
        self.env = env
        self.notice = notice
        self.cache = cache
        self.deny: set[str] = set()
        self.learning: list[str] = []
        self.failures = 0
        # The first server starts once the first generation has said what it imported and the
        # other apps have started (MAX_DEFER): started now, its preloading would only compete
        # with those generations for the CPU.
        self.server: ForkServer | None = None
        self.next: ForkServer | None = None
        # A generation forked ahead of time by self.server, waiting for its spec: a reload then
        # costs a staleness check (a round trip) instead of a fork (about 10 ms here).
        self.spare: Generation | None = None
        self.post: Post | None = None
        # Closed with its app (removed or changed by a config edit); the app's retiring
        # generations may still report what they imported, which must not start a server.
        self.closed = False

    def idle_tick(self) -> None:
        """Start a server that waited for the other apps, and fork a spare if there is none
        (called when the app is idle, never on a reload's path)."""
        if self.closed:
            return
        if self.shared is not None and self.shared.settling():
            self.shared.usable()  # a better preloader that is ready replaces the first one now
        if self.deferred is not None and (not self._waits() or time.monotonic() - self.deferred_at > MAX_DEFER):
            deferred, self.deferred = self.deferred, None
            self._want(deferred)
        if self.spare is not None and not self.spare.exited:
            return
        self._promote_next()
        server = self.server
        if self.post is not None and self._shared_spare_pays() and self.shared is not None:
            self.spare = self.shared.fork_generation(self.app, self.env, self.listener, self.post)
            return
        if self.post is None or server is None or server.poll() is not ServerState.READY:
            return
        self._fork(server, self.post, spawning=False)

    def _shared_spare_pays(self) -> bool:
        """A spare of the shared preloader's, for an app without a server of its own, pays once
        the app has been reloaded: one that is never edited keeps none (a fork, some 2 MB)."""
        return (self.server is None and self.next is None and self.deferred is None and self.launches > 1
                and self.shared is not None and self.shared.usable() is not None)

    def _waits(self) -> bool:
        """Is a decision about the app's own server to wait: for the other apps to start (its
        preloading would take their CPU), or for a better shared preloader on its way?"""
        return self.others_starting() or (self.shared is not None and self.shared.settling())

    def idle_work(self) -> bool:
        """A spare to fork (or its answer to pick up), or a better server preloading."""
        if self.closed:
            return False
        no_spare = self.spare is None or self.spare.exited
        # A tainted or dead server forks nothing: the next spawn replaces it.
        usable = self.server is not None and self.server.state in (ServerState.STARTING, ServerState.READY)
        settling = self.shared is not None and self.shared.settling()
        return (self.next is not None or self.deferred is not None or settling
                or ((usable or self._shared_spare_pays()) and no_spare))

    def _fork(self, server: ForkServer, post: Post, spawning: bool) -> None:
        """Have server fork self.spare: ask (unless a fork is asked for already) and wait for the
        answer, until FORK_WAIT after the ask at most, and not at all on a server that missed
        that once. Main thread only, so every app waits meanwhile: about 10 ms. A late answer is
        picked up by a later call (idle_tick runs on every tick while the app is idle). A server
        that failed, or has not answered in FORK_TIMEOUT, is replaced (spawning: the generation
        being started is spawned instead, which is said)."""
        try:
            if server.asked is None:
                try:
                    server.ask(self.listener)
                except OSError:  # out of fds for the pipes: no spare now, the next call tries again
                    return
            asked = server.asked
            assert asked is not None
            wait = 0.0 if server.slow else max(0.0, FORK_WAIT - (time.monotonic() - asked.at))
            spare = server.answer(self.app.name, post, wait)
        except Stale as exc:
            self.notice(f"fork server: {exc} changed; restarting it", "info")
            self._replace(server.preload)
            return
        except ForkServerGone as exc:
            self._died(str(exc), spawning)
            return
        if spare is not None:
            self.spare = spare
        elif time.monotonic() - asked.at > FORK_TIMEOUT:
            self._died(f"no answer to a fork in {FORK_TIMEOUT:g} s", spawning, "hung")
        elif not server.slow:
            server.slow = True
            self.notice(f"fork server: no answer to a fork in {FORK_WAIT * 1000:.0f} ms; generations are "
                        f"spawned until it answers (it is replaced if it has not in {FORK_TIMEOUT:g} s)",
                        "warning")

    def _adopt_spare(self, server: ForkServer, post: Post, number: int, listener: socket.socket,
                     pin_failures: int = 0) -> Generation | None:
        if self.spare is not None and self.spare.exited:
            self.spare = None
        if self.spare is None:  # a reload right after the last one, or the server missed FORK_WAIT
            self._fork(server, post, spawning=True)
        spare, self.spare = self.spare, None
        if spare is None:
            return None
        return self._become(spare, number, listener, pin_failures)

    def _become(self, spare: Generation, number: int, listener: socket.socket, pin_failures: int) -> Generation | None:
        # It checks for stale preloads itself (see stale()): no round trip to the server here.
        spec = generation.generation_spec(self.app, number, listener, pin_failures, report_modules=True)
        spare.number = number
        if not spare.tell(wire.Become(spec)):
            self._drop(spare)
            return None
        return spare

    def ready(self) -> bool:
        """False while the first generation had better wait for the shared preloader."""
        return self.closed or self.server is not None or self.shared is None or self.shared.ready_for(self.app.name)

    def exited(self, gen: Generation) -> bool:
        """A generation no supervisor owns has exited: True if it was our spare (then the
        next refill forks another instead of trusting a dead one)."""
        if gen is not self.spare:
            return False
        gen.mark_exited()
        self.spare = None
        return True

    def _drop(self, spare: Generation | None) -> None:
        if spare is not None and not spare.exited:
            spare.kill()

    def spawn(self, app: App, number: int, listener: socket.socket, env: dict[str, str], post: Post,
              pin_failures: int = 0) -> Generation:
        self.post = post
        self.launches += 1
        self._promote_next()
        server = None if self.closed else self.server
        if server is not None:
            state = server.poll()
            if state is ServerState.TAINTED and server.taint and server.taint[0] == wire.SHARED_CULPRIT:
                self._leave_shared(server.taint[1], server.preload)
            elif state is ServerState.TAINTED and server.taint:
                culprit, module = server.taint
                why = ("started an OS thread (a fork of a threaded process may deadlock)" if module == "thread"
                       else f"imported project module {module}")
                self.notice(f"fork server: preloading {culprit} {why}; "
                            f"{culprit} will be imported by each generation instead", "warning")
                self.deny.add(culprit)
                kept = [m for m in server.preload if m != culprit]
                self._store(kept)
                self._replace(kept)
            elif state is ServerState.READY:
                gen = self._adopt_spare(server, post, number, listener, pin_failures)
                if gen is not None:
                    return gen
            elif state is ServerState.GONE:
                self._died("it exited")
        elif self.shared is not None and not self.closed:  # no server of its own (yet)
            spare, self.spare = self.spare, None
            if spare is None or spare.exited:
                spare = self.shared.fork_generation(app, env, listener, post)
            gen = None if spare is None else self._become(spare, number, listener, pin_failures)
            if gen is not None:
                return gen
        return generation.spawn(app, number, listener, env, post, report_modules=True, pin_failures=pin_failures)

    def stale(self, path: str, project: bool = False) -> None:
        """A spare found a preloaded file changed since its server started: replace the server
        (the supervisor starts the generation again, spawned meanwhile). project: the spare was
        forked from the shared preloader, which has path (a module of this app's) loaded."""
        if self.closed:
            return
        if project:
            self._leave_shared(path, self.stored or [])
            return
        if self.server is None and self.shared is not None:
            # The shared preloader finds itself stale on the next fork asked of it, and is
            # replaced (its apps spawning meanwhile): nothing of this app's to replace.
            self.notice(f"shared preloader: {path} changed; restarting it", "info")
            return
        self.notice(f"fork server: {path} changed; restarting it", "info")
        self._replace(self.server.preload if self.server else [])

    def learn(self, names: list[str], last: bool) -> None:
        """A generation reports what it imported from outside the project."""
        if self.closed:
            return
        self.learning.extend(names)
        if not last:
            return
        # devrun's own modules are in every fork server already (a generation forked from the
        # shared preloader reports them too): never part of what an app is learned to import.
        learned = [m for m in dict.fromkeys(self.learning)
                   if m not in self.deny and m != "devrun" and not m.startswith("devrun.")]
        self.learning = []
        if self.shared is not None:
            self.shared.learned(self.app.name, learned)
        if self._waits():
            self._store(learned)
            self.deferred, self.deferred_at = learned, time.monotonic()  # idle_tick decides then
            return
        self.deferred = None  # what this generation imported is the newer word
        self._want(learned)

    def _want(self, learned: list[str]) -> None:
        """What a generation imported, once no other app is starting: a server of the app's own
        to preload it, unless the shared preloader has it all (then it forks the app's
        generations itself, and the app keeps no server)."""
        current = self.next or self.server
        # Against what the server has, not only what it was asked for: a forked generation
        # reports the server's own modules too, and a new server for those would be a wasted
        # preload (and the end of the spare forked meanwhile).
        if current is not None and set(learned) <= set(current.preload) | current.loaded:
            return
        self._store(learned)
        if self.server is None and self.next is None and self.shared is not None and self.shared.covers(learned):
            return
        self._start_next(learned)

    def _leave_shared(self, module: str, preload: list[str]) -> None:
        """The shared preloader has this app's own module loaded: the app gets a server of its
        own, spawned (the preloader stays for the other apps)."""
        self.notice(f"fork server: the shared preloader has {module} of this project loaded; "
                    "this app's fork server is started on its own", "warning")
        self.shared = None
        self._replace(preload)

    def _start_next(self, preload: list[str]) -> None:
        if self.next is not None:
            self.next.close()
        self.next = self._start(preload)

    def close(self) -> None:
        """Stop its servers and its spare, and wait for the servers: none may outlive the runner."""
        self.closed = True
        self.deferred = None
        if self.group is not None:
            self.group.leave(self.app.name)
        self._drop(self.spare)
        self.spare = None
        for server in (self.server, self.next):
            if server is not None:
                server.close()
                server.wait(2.0)

    def _promote_next(self) -> None:
        if self.next is not None and self.next.poll() is not ServerState.STARTING:
            if self.server is not None:
                self.server.close()
            self.server, self.next = self.next, None
            self._drop(self.spare)  # forked by the old server: checked against what it preloaded
            self.spare = None

    def _replace(self, preload: list[str]) -> None:
        self._drop(self.spare)
        self.spare = None
        if self.server is not None:
            self.server.close()
        self.server = self._start(preload)

    def _start(self, preload: list[str]) -> ForkServer | None:
        """A new server, or None (generations are spawned) when it cannot start: the app's
        folder is gone, or the system is out of processes or fds."""
        if self.shared is not None:
            forked = self.shared.fork_server(self.app, self.env, preload)
            if forked is not None:
                return forked
        try:
            return ForkServer(self.app.name, preload, project_roots(self.app), spawned_server(self.app, self.env))
        except (OSError, ForkServerGone) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self.notice(f"fork server cannot start ({why}); spawning meanwhile", "warning")
            return None

    def _died(self, why: str, spawning: bool = True, what: str = "died") -> None:
        self._drop(self.spare)
        self.spare = None
        self.failures += 1
        if self.failures > MAX_SERVER_DEATHS:
            self.notice(f"fork server {what} ({why}) too often; using spawn from now on", "error")
            if self.server is not None:
                self.server.close()
            self.server = None
            return
        now = "this generation is spawned, and " if spawning else ""
        self.notice(f"fork server {what} ({why}); {now}a new server starts", "warning")
        self._replace(self.server.preload if self.server else [])

    def _store(self, names: list[str]) -> None:
        """Write down what is preloaded, for the curious (`.devrun/preload-<app>.json`)."""
        if self.cache is not None and names != self.stored:
            self.stored = names
            with contextlib.suppress(OSError):  # a symlink there is replaced, its target never written
                statefiles.write_private_atomic(self.cache, json.dumps(names).encode())
