"""One AppSupervisor per app: its state, its generations, and every restart decision.

Driven from the runner's main thread only (so it needs no locks): it is told about file
changes, child messages and exits, and a clock tick; it emits events and never draws.
Reloads are blue/green: the new generation loads and serves before the old one is retired.
"""

from __future__ import annotations

import itertools
import math
import socket
import time
from collections import deque
from collections.abc import Callable

from devrun import events, wire
from devrun.config import App
from devrun.events import AppStatus
from devrun.runner.fallback import Fallback
from devrun.runner.generation import ChildExited, ChildMessage, ChildOutput, Generation, Post
from devrun.runner.inbox import ChildItem
from devrun.runner.launcher import Launcher, SpawnLauncher
from devrun.runner.policy import MAX_CRASHES, Backoff, GitHold
from devrun.watch.patterns import git_busy

Emit = Callable[[events.Event], None]

# How long a retired generation may outlive its graceful timeout before SIGKILL.
KILL_MARGIN = 1.0
# A loaded generation starts accepting once the previous one has stopped, or after this long.
GO_WAIT = 0.5
# A first start slower than this gets the runner's "still starting" page instead of a wait.
SLOW_START = 3.0
RECENT_OUTPUT = 40
# How often an app's folder is checked for being there: one that vanished in a way no watched
# file reported (the folder itself renamed) still turns into "folder missing".
ROOT_CHECK = 1.0
# A spare generation for the next reload is forked while the app is idle: not right after a
# reload, when the browser's requests want the CPU.
SPARE_AFTER = 0.2
# While something can only be polled (git's lock, a process group emptying, a fork server's
# answer), the supervisor wants a tick this often.
POLL = 0.1
# Files the app said it writes, kept per app: every generation may say so again, or name new
# temporary files; the set stays bounded.
MAX_APP_WRITES = 1024
# A request line whose time is older than this is not believed (it waited a day in a pipe?).
LATE_LINE = 86400.0
# While a first generation waits for its launcher (the shared preloader starting), the launcher
# is asked this often: its readiness is a non-blocking read, and every millisecond here is
# cold-start time.
LAUNCH_POLL = 0.005


class AppSupervisor:
    def __init__(self, app: App, listener: socket.socket, env: dict[str, str], emit: Emit,
                 post: Post, launcher: Launcher | None = None,
                 clock: Callable[[], float] = time.monotonic, fallback: Fallback | None = None,
                 busy: Callable[[], bool] | None = None,
                 rewatch: Callable[[], None] | None = None):
        self.app = app
        self.listener = listener
        self.env = env
        self.emit = emit
        self.post = post
        self.launcher: Launcher = launcher or SpawnLauncher()
        self.clock = clock
        self.state = AppStatus.STOPPED
        self.current: Generation | None = None
        self.pending: Generation | None = None
        self.retiring: list[Generation] = []
        self.generation_numbers = itertools.count(1)
        self.backoff = Backoff(app.config.backoff.initial, app.config.backoff.max)
        self.reloads = 0
        self.stopping = False
        self.fallback = fallback
        self.rewatch = rewatch  # the app's folder is back: its watches went with it
        self.git = GitHold(busy or (lambda: git_busy(app.root)))
        self.recent_output: deque[str] = deque(maxlen=RECENT_OUTPUT)
        # Exited leaders whose process groups may still hold what the app started: each group
        # is killed at the generation's kill_at, so nothing outlives its generation for long.
        self.groups: list[Generation] = []
        self.missing = False  # the app's folder is gone: no generation until it is back
        self.root_check_at = 0.0
        # The next tick for what can only be polled: a point in time set by each tick, never
        # now + POLL, which a steady stream of items (request lines) would push back for ever.
        self.poll_at = 0.0
        self.app_writes: set[str] = set()  # watched files the app itself opened for writing
        self.app_writes_told: set[str] = set()
        self.pin_failures = 0  # wrong debugger PINs this run: a reload must not reset the lockout
        self.framework = ""  # the serving generation's framework, as it described it
        self.launch_waits = False  # a launch waits for the launcher (see Launcher.ready)
        self.launch_poll_at = 0.0

    @property
    def name(self) -> str:
        return self.app.name

    # -- decisions -------------------------------------------------------------------------

    def start(self) -> None:
        self.stopping = False
        self.backoff.reset()
        self._launch()

    def reload(self, paths: tuple[str, ...]) -> None:
        """Files changed: reload, unless git is rewriting the tree (then once, when it is done)."""
        if self.stopping:
            return
        paths = self._drop_self_triggered(paths)
        if not paths:
            return
        starting = self.git.until is None
        if self.git.keep(paths, self.clock()):
            if starting:
                self.emit(events.Notice(self.name, "git is changing the tree (.git/index.lock): "
                                                   "reloading once it is done"))
            return
        self._reload_now(paths)

    def _reload_now(self, paths: tuple[str, ...]) -> None:
        paths = self.git.take(paths)
        self.reloads += 1
        self.backoff.reset()  # a change is a new attempt, not part of a crash loop
        self.emit(events.Reloading(self.name, paths))
        self._launch()

    def _drop_self_triggered(self, paths: tuple[str, ...]) -> tuple[str, ...]:
        """The app writing a file its own watch globs match (a log, a SQLite database) would
        restart itself for ever. Its generations say which files they opened for writing; a
        change of those alone is the app's own doing, not an edit (said once per file)."""
        mine = [p for p in paths if p in self.app_writes]
        if not mine or len(mine) < len(paths):
            return paths
        for path in mine:
            if path not in self.app_writes_told:
                self.app_writes_told.add(path)
                self.emit(events.Notice(self.name, f"{path} changed, but the app writes it itself: not reloading "
                                        "for it; add it to ignore in devrun.yaml", "warning"))
        return ()

    def refresh(self, paths: tuple[str, ...]) -> None:
        """Only live-reload files changed: tell the open pages, keep the process. While a new
        generation is on its way there is nothing to do: its pages reload when it is ready."""
        gen = self.current
        if self.stopping or self.pending is not None or gen is None or gen.loading:
            return
        # An editor's atomic save writes a temporary file and renames it over the stylesheet: the
        # batch names both, but only files still there say what changed.
        present = [p for p in paths if (self.app.root / p).exists()]
        css = bool(present) and all(p.lower().endswith(".css") for p in present)
        if not css and not gen.templates_in_place:
            # The framework cannot apply a template edit in place (Falcon, plain WSGI, a failed
            # import): a restart, after which the pages refresh. Never the old file.
            self.reload(paths)
            return
        self.emit(events.Refreshing(self.name, paths, css, self.app.config.live))
        gen.tell(wire.Refresh("css" if css else "reload", paths))

    def restart(self) -> None:
        """A restart asked for by the user (dashboard key, control command): at once."""
        if not self.stopping:
            self._reload_now(())

    def stop(self, final: bool = True) -> None:
        """Retire every generation. final: the runner is done with this app; otherwise it was
        stopped by request (`devrun stop`) and its port says so until `devrun start`."""
        self.stopping = True
        self.launch_waits = False
        self.backoff.cancel()
        self.git.clear()
        for gen in (self.pending, self.current):
            if gen is not None:
                self._retire(gen)
        self.pending = self.current = None
        if final:
            self.launcher.close()
        if self.fallback is not None:
            if final:
                self.fallback.close()
            else:
                self.fallback.answer("stopped", f"The app was stopped with `devrun stop {self.name}`; "
                                     f"`devrun start {self.name}` starts it again.")
        self._set(AppStatus.STOPPED)

    @property
    def done(self) -> bool:
        """Stopped, every generation reaped, and every process group they led gone."""
        return (self.stopping and not self.retiring and not self.groups and self.pending is None
                and self.current is None)

    def generations(self) -> list[Generation]:
        """Every generation still running or leading a live process group."""
        return [g for g in (self.pending, self.current, *self.retiring, *self.groups) if g is not None]

    def kill_everything(self) -> None:
        """SIGKILL every generation and every process group a generation led (the runner is
        going, by request or by a bug of its own)."""
        for gen in self.generations():
            gen.kill()
        self.groups.clear()

    def tick(self) -> None:
        now = self.clock()
        self.poll_at = now + POLL
        for gen in self.retiring:
            if gen.kill_at is not None and now >= gen.kill_at and not gen.exited:
                gen.kill()
                gen.kill_at = None
        # What a generation left in its group after its leader exited is killed at its kill_at,
        # or forgotten as soon as the group is empty (then its number may be reused).
        self.groups = [g for g in self.groups if not g.group_gone(now)]
        if not self.stopping and now >= self.root_check_at:
            self.root_check_at = now + ROOT_CHECK
            self._check_root()
        if not self.stopping and self.backoff.due(now):
            self._launch()
        if self.launch_waits and not self.stopping and now >= self.launch_poll_at:
            self._launch()
        if self.git.due(now):
            self._reload_now(())
        self._maybe_accept()
        pending = self.pending
        if (pending is not None and self.current is None and now - pending.started >= SLOW_START
                and self.fallback is not None and not self.fallback.answering):
            self.fallback.answer("is still starting",
                                 f"generation {pending.number} (pid {pending.pid}) has been loading the app for "
                                 f"{now - pending.started:.0f} s; its output is below.", list(self.recent_output))
        if self._idle(now):
            self.launcher.idle_tick()

    def _at_rest(self) -> bool:
        """Serving, and nothing on its way."""
        gen = self.current
        return gen is not None and not gen.loading and self.pending is None and not self.stopping

    def _idle(self, now: float) -> bool:
        """At rest, and not just after a reload."""
        return self._at_rest() and self.current is not None and now - self.current.started > SPARE_AFTER

    def next_deadline(self) -> float:
        """When tick() has something to do next, at the latest: the loop sleeps until then
        (for ever, as far as this app goes, when it is stopped and nothing of it is left)."""
        times = [] if self.stopping else [self.root_check_at]
        if self.backoff.restart_at is not None:
            times.append(self.backoff.restart_at)
        times += [g.kill_at for g in self.retiring if g.kill_at is not None]
        current, pending = self.current, self.pending
        if current is not None and current.loading and current.accept_deadline is not None:
            times.append(current.accept_deadline)
        if (pending is not None and current is None and self.fallback is not None
                and not self.fallback.answering):
            times.append(pending.started + SLOW_START)
        if self.git.waiting or self.groups:
            times.append(self.poll_at)
        if self.launch_waits and not self.stopping:
            times.append(self.launch_poll_at)
        if current is not None and self._at_rest() and self.launcher.idle_work():
            # The launcher's idle work (a spare to fork, a fork server's late answer) is polled.
            times.append(max(current.started + SPARE_AFTER, self.poll_at))
        return min(times, default=math.inf)

    # -- what the children say -------------------------------------------------------------

    def handle(self, item: ChildItem) -> None:
        """What one of this app's processes said, printed or how it exited: its generations',
        and its launcher's spares' (which are the launcher's until one becomes a generation)."""
        gen = item.generation
        if isinstance(item, ChildExited):
            gen.close_control()  # on the main thread, as tell() and go() are (see close_control)
        if not self._owns(gen):
            if isinstance(item, ChildExited):
                self.launcher.exited(gen)
            return
        match item:
            case ChildMessage(_, message):
                self._on_message(gen, message)
            case ChildOutput(_, line):
                self.recent_output.append(line)
                self.emit(events.Output(self.name, line))
            case ChildExited(_, returncode):
                self._on_exit(gen, returncode)

    def _owns(self, gen: Generation) -> bool:
        return gen in (self.pending, self.current, *self.retiring)

    def _on_message(self, gen: Generation, msg: wire.ChildReport) -> None:
        match msg:
            case wire.Requests(served):
                now = time.time()
                # The child's own clock says when each was served; a time no clock of this
                # machine could give (NaN, the far past or future) is the child's code talking.
                self.emit(events.Requests(self.name, tuple(
                    events.Request(self.name, r.method, r.path, r.status, r.ms,
                                   at=r.at if now - LATE_LINE < r.at < now + 60 else now) for r in served)))
            case wire.Loaded() if gen is self.pending:
                # Loaded, not yet accepting: retire the previous generation first (see _maybe_accept).
                gen.accept_deadline = self.clock() + GO_WAIT
                self._promote(gen)
                self._maybe_accept()
            case wire.Closed():
                gen.mark_closed()
                self._maybe_accept()
            case wire.Ready() | wire.Failed() if gen in (self.pending, self.current):
                self._serving(gen, msg)
            case wire.Stale(path, project) if gen is self.pending:
                # A spare found its preloads out of date before importing anything: start it again.
                self.launcher.stale(path, project)
                self._launch()
            case wire.Modules(names, last):
                self.launcher.learn(list(names), last)
            case wire.Pages(count) if gen is self.current:
                self.emit(events.Pages(self.name, count))
            case wire.Refreshed(pages, how) if gen is self.current and pages > 0:
                self.emit(events.Refreshed(self.name, pages, how))
            case wire.Writes(paths) if len(self.app_writes) < MAX_APP_WRITES:
                self.app_writes.update(paths)
            case wire.PinFailed(count):
                # The next generations start from this count, so a reload never resets Werkzeug's lockout.
                self.pin_failures = max(self.pin_failures, count)
            case wire.PinOk():  # a right PIN resets Werkzeug's count: the next generation's too
                self.pin_failures = 0
            case wire.Dropped(count):
                self.emit(events.Notice(self.name, f"{count} request lines dropped (runner busy)", "warning"))

    def _serving(self, gen: Generation, msg: wire.Ready | wire.Failed) -> None:
        """The generation accepts connections: with the app (Ready) or its error page (Failed)."""
        if gen is self.pending:  # a child that skipped Loaded
            self._promote(gen)
            gen.mark_accepting()
        if self.fallback is not None:
            self.fallback.quiet()
        if isinstance(msg, wire.Ready):
            gen.templates_in_place = msg.templates
            self._framework(msg.framework)
            self._set(AppStatus.READY)
            # Measured here, from spawn: the child's own clock misses interpreter start-up.
            ms = (self.clock() - gen.started) * 1000
            self.emit(events.Ready(self.name, gen.pid, self.app.url, ms))
        else:
            self._set(AppStatus.ERROR)
            self.emit(events.AppFailed(self.name, gen.pid, msg.summary, msg.traceback))

    def _framework(self, described: str) -> None:
        """Say once what devrun does for the app's framework (again only if that changes)."""
        if described and described != self.framework:
            self.framework = described
            self.emit(events.Notice(self.name, described, "info"))

    def _maybe_accept(self) -> None:
        """Let the current generation accept once no older one still does (or after GO_WAIT)."""
        gen = self.current
        if gen is None or not gen.loading:
            return
        others_closed = all(g.done_accepting for g in self.retiring)
        if others_closed or (gen.accept_deadline is not None and self.clock() >= gen.accept_deadline):
            if self.fallback is not None:
                self.fallback.quiet()
            gen.accept()

    def _on_exit(self, gen: Generation, returncode: int) -> None:
        gen.mark_exited()
        expected = gen.told_to_stop
        self.emit(events.Exited(self.name, gen.pid, returncode, expected))
        if gen in self.retiring:
            self.retiring.remove(gen)
        gen.orphaned(self.clock() + self.app.config.graceful_timeout + KILL_MARGIN)
        if not gen.group_gone(self.clock()):
            self.groups.append(gen)
        self._maybe_accept()
        if expected or self.stopping:
            return
        if gen is self.pending:
            self.pending = None
            if self.current is not None:  # never keep serving the code that was replaced
                self._retire(self.current)
                self.current = None
        elif gen is self.current:
            self.current = None
        else:
            return
        delay = self.backoff.crashed(self.clock(), self.clock() - gen.started)
        how = events.describe_exit(returncode)
        if delay is None:
            self._set(AppStatus.CRASHED)
            self.emit(events.Notice(self.name, f"crashed ({how}) {MAX_CRASHES} times in a row; waiting for a "
                                    f"change (or `devrun restart {self.name}`)", "error"))
            if self.fallback is not None:
                self.fallback.answer("keeps crashing", f"The app's process {how}, {MAX_CRASHES} times in a row "
                                     "soon after starting; devrun waits for you to save a change. Its last output:",
                                     list(self.recent_output))
            return
        # One crash is "crashed"; crashing again right after a restart is a loop: "backing off".
        self._set(AppStatus.CRASHED if self.backoff.failures == 1 else AppStatus.BACKOFF)
        self.emit(events.Notice(self.name, f"crashed ({how}); restarting in {delay:.1f}s", "error"))
        if self.fallback is not None:
            self.fallback.answer("crashed", f"The app's process {how}; devrun restarts it in {delay:.1f} s, "
                                 "or at once when you save a change. Its last output:", list(self.recent_output))

    # -- process control -------------------------------------------------------------------

    def _launch(self) -> None:
        self.launch_waits = False
        if self.pending is not None:
            # A newer change arrived while this one was loading: its code is already stale.
            self.pending.kill()
            self.retiring.append(self.pending)
            self.pending = None
        if not self.app.root.is_dir():  # deleted or renamed (a branch switch, a build step)
            self._cannot_start(f"its folder {self.app.root} is missing", "devrun starts it again once the folder "
                               "is back.")
            self.missing = True
            return
        if not self.launcher.ready():
            # The launch is made on a tick once the launcher is ready; the app says it is starting.
            self.launch_waits = True
            self.launch_poll_at = self.clock() + LAUNCH_POLL
            self._set(AppStatus.RELOADING if self.current is not None else AppStatus.STARTING)
            return
        started = self.clock()  # before asking: a fork server's answer is part of the start
        try:
            gen = self.launcher.spawn(self.app, next(self.generation_numbers), self.listener, self.env, self.post,
                                      pin_failures=self.pin_failures)
        except OSError as exc:  # out of processes or fds, the folder gone at that very moment
            self._cannot_start(f"cannot start a process: {exc.strerror or exc}",
                               "devrun tries again when you save a change.")
            return
        gen.started = started
        self.pending = gen
        self._set(AppStatus.RELOADING if self.current is not None else AppStatus.STARTING)
        self.emit(events.Starting(self.name, gen.number, gen.pid))

    def _check_root(self) -> None:
        there = self.app.root.is_dir()
        if self.missing and there:
            self.missing = False
            self.emit(events.Notice(self.name, f"{self.app.root} is back: starting"))
            if self.rewatch is not None:
                self.rewatch()
            self._launch()
        elif not self.missing and not there:
            self._launch()  # says the folder is missing, and stops serving what it held

    def _cannot_start(self, summary: str, then: str) -> None:
        """No generation can start: never keep serving code whose files may be gone; say why on
        the port and in the views."""
        if self.current is not None:
            self._retire(self.current)
            self.current = None
        self.backoff.cancel()
        self._set(AppStatus.ERROR)
        self.emit(events.AppFailed(self.name, 0, summary, ""))
        if self.fallback is not None:
            self.fallback.answer("cannot start", f"{summary[0].upper()}{summary[1:]}; {then}")

    def _promote(self, gen: Generation) -> None:
        self.backoff.cancel()  # a crash of the old generation needs no restart any more
        old, self.current, self.pending = self.current, gen, None
        if old is not None:
            self._retire(old)

    def _retire(self, gen: Generation) -> None:
        gen.retire(self.clock() + self.app.config.graceful_timeout + KILL_MARGIN)
        if not gen.exited and gen not in self.retiring:
            self.retiring.append(gen)

    def _set(self, state: AppStatus) -> None:
        if state is not self.state:
            self.state = state
            gen = self.current or self.pending
            self.emit(events.StateChanged(self.name, state, gen.pid if gen else None))
