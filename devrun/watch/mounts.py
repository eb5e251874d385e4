"""Which file system a watched folder lives on, and whether inotify sees its changes there.

inotify reports what goes through this machine's VFS. On a file system whose files also change
elsewhere (another machine, the host of a VM or of Docker Desktop, a FUSE daemon that fetches
from a server) the changes made there produce no event at all: devrun must poll those. The
kernel's mount table, `/proc/self/mountinfo` (proc(5)), names each mount's type.

Everything here but `read_mountinfo` is a pure function of the table's text, so tests can give
the text of any file system.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

WatchMode = Literal["auto", "events", "poll"]
WATCH_MODES: tuple[WatchMode, ...] = ("auto", "events", "poll")

MOUNTINFO = "/proc/self/mountinfo"

# Types whose files change where inotify cannot see it: network and cluster file systems, the
# shares of VMs and of WSL (9p: WSL2's /mnt/c; drvfs: WSL1's), Docker Desktop's bind mounts
# (virtiofs, gRPC FUSE, osxfs; "fakeowner" in its newer Linux VMs) and every FUSE file system
# (sshfs, rclone, gcsfuse, s3fs...). Some FUSE file systems are local and would deliver events,
# but a poll is merely slower where an event source would be silent for ever: FUSE polls.
REMOTE = frozenset({
    "9p", "virtiofs", "fakeowner", "drvfs", "wslfs",
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs", "coda", "ceph", "glusterfs", "lustre",
    "gpfs", "ocfs2", "gfs2", "beegfs", "orangefs", "pvfs2",
    "vboxsf", "vmhgfs", "prl_fs", "davfs",
    "fuse", "fuseblk",
})
# Known to deliver events; anything else not in REMOTE is assumed local too (most types are).
LOCAL = frozenset({
    "ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "overlay", "zfs", "f2fs", "bcachefs", "jfs",
    "reiserfs", "nilfs2", "hfsplus", "vfat", "exfat", "ntfs3", "squashfs", "iso9660", "ramfs",
    "aufs", "ecryptfs", "erofs", "udf", "devtmpfs",
})

_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class Mount:
    """One line of mountinfo."""

    mount_point: str
    fstype: str  # with a FUSE file system's subtype: "fuse.sshfs"
    source: str


@dataclass(frozen=True)
class Verdict:
    """How a folder is watched: `polls` when inotify gets no events there, and why."""

    mount_point: str
    fstype: str
    polls: bool
    why: str


def unescape(field: str) -> str:
    """The kernel writes space, tab, newline and backslash in a path as octal escapes (\\040)."""
    return _ESCAPE.sub(lambda m: chr(int(m[1], 8)), field)


def parse_mountinfo(text: str) -> list[Mount]:
    """The mounts in the order listed: `id parent major:minor root mount-point options
    [optional fields...] - fstype source super-options`. Lines that do not parse are skipped."""
    mounts = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            dash = fields.index("-", 6)  # the optional fields (shared:N, master:N...) end at "-"
        except ValueError:
            continue
        if len(fields) < dash + 3:
            continue
        mounts.append(Mount(unescape(fields[4]), unescape(fields[dash + 1]), unescape(fields[dash + 2])))
    return mounts


def find_mount(mounts: Sequence[Mount], path: str) -> Mount | None:
    """The mount `path` (absolute, symlinks resolved) lives on: the longest mount point that
    holds it. A mount point mounted twice shows the last mount, which is listed last."""
    best: Mount | None = None
    for mount in mounts:
        point = mount.mount_point
        inside = path == point or path.startswith(point if point.endswith("/") else point + "/")
        if inside and (best is None or len(point) >= len(best.mount_point)):
            best = mount
    return best


def judge(fstype: str) -> tuple[bool, str]:
    """(polls, why) for a mount's type."""
    base = fstype.split(".", 1)[0]
    if fstype in REMOTE or base in REMOTE:
        return True, f"{fstype}: inotify gets no events there"
    if base in LOCAL:
        return False, f"{fstype}: inotify gets its events"
    return False, f"{fstype}: assumed local, inotify gets its events"


def verdict(path: str, mountinfo: str | None) -> Verdict:
    """How to watch `path`, given the text of mountinfo (None: unreadable, not Linux)."""
    if mountinfo is None:
        return Verdict("", "", False, "no mount table to read: using file events")
    real = os.path.realpath(path)
    mount = find_mount(parse_mountinfo(mountinfo), real)
    if mount is None:
        return Verdict("", "", False, f"{real} is on no listed mount: using file events")
    polls, why = judge(mount.fstype)
    return Verdict(mount.mount_point, mount.fstype, polls, why)


def read_mountinfo(path: str = MOUNTINFO) -> str | None:
    """This process's mount table, or None where there is none (not Linux, no /proc)."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return f.read()
    except OSError:
        return None
