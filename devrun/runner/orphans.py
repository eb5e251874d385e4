"""What the runner adopts as a subreaper: processes that left an app's process group (setsid, a
daemonising double fork) and outlived their parent, and forked generations before they are
known. Reaped as they exit, reported once each, and stopped with the runner. Linux only."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Collection

from devrun.runner import generation

# How often a subreaper runner looks for processes that escaped an app's process group.
ORPHAN_SCAN = 2.0


class Orphans:
    def __init__(self) -> None:
        self.subreaper = False
        self.escaped: set[int] = set()  # adopted processes already reported
        self.scan_at = 0.0

    def adopt(self) -> bool:
        """Become the subreaper (once): True if the runner is one."""
        if not self.subreaper:
            self.subreaper = generation.become_subreaper()
        return self.subreaper

    def next_deadline(self) -> float | None:
        return self.scan_at if self.subreaper else None

    def tick(self, now: float, groups: Collection[int]) -> list[str]:
        """Reap what exited; every ORPHAN_SCAN, the notices for processes newly found outside
        every generation's group (groups: the process groups the generations lead)."""
        if not self.subreaper:
            return []
        generation.reap_orphans()
        if now < self.scan_at:
            return []
        self.scan_at = now + ORPHAN_SCAN
        out = []
        for pid, group in generation.adopted_orphans():
            # Still in a generation's group: killed with that group (see AppSupervisor.groups).
            if pid not in self.escaped and group not in groups:
                self.escaped.add(pid)
                out.append(f"process {pid} ({generation.process_name(pid)}) escaped its app's process group; "
                           "devrun stops it when it stops")
        return out

    def stop(self, wait: float) -> None:
        """SIGTERM what we adopted, SIGKILL what is still there after `wait` seconds."""
        if not self.subreaper:
            return
        pids = [pid for pid, _ in generation.adopted_orphans()]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + wait
        while pids and time.monotonic() < deadline:
            generation.reap_orphans()
            pids = [pid for pid, _ in generation.adopted_orphans()]
            if pids:
                time.sleep(0.02)  # polling the exits of processes we cannot wait for one by one
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        generation.reap_orphans()
