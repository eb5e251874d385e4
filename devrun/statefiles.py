"""Safe writes into devrun's state folder, `.devrun/` beside devrun.yaml.

The folder sits in a project that may come from anywhere: git stores symlinks, so a cloned
repository can carry `.devrun/runner.pid -> ~/.bashrc`. Every file devrun writes there goes
through the functions below, which hold one rule: never write through a symlink, and never
into a folder (or a file) that belongs to someone else. A link is refused with a one-line
error that names it and the fix, or, for a file that is devrun's alone to write, replaced by
a file of devrun's own; its target is never touched.

Only the last part of each path is guarded by O_NOFOLLOW; the folders above it are checked
with lstat() when devrun first uses them (`state_dir`, `private_dir`). That is what a
repository can plant; a process of the same user racing devrun could do more anyway.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import stat
from pathlib import Path

STATE_DIR = ".devrun"
GITIGNORE = "# devrun's state: never committed\n*\n"

# App names become file names (`logs/<app>.log`, `preload-<app>.json`): nothing that could
# leave the folder, hide a file, or be read as an option.
NAME_RULE = "1 to 63 letters, digits, `_`, `.` or `-`, starting with a letter or digit, without `..`"
_NAME_BODY = r"(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9_.-]{0,62}"
NAME_PATTERN = f"^{_NAME_BODY}$"  # for the JSON Schema (editors); Python uses fullmatch
_NAME = re.compile(_NAME_BODY)


class UnsafeState(OSError):
    """A path in `.devrun/` that devrun refuses to use; the text names it and the fix."""

    def __str__(self) -> str:
        return str(self.strerror)  # the whole sentence, without OSError's "[Errno 40] " in front


def name_problem(name: object) -> str | None:
    """Why name cannot be an app's name (and so a part of a file name), or None."""
    if not isinstance(name, str):
        return f"an app name is text; quote it (`'{name}':`)"
    if _NAME.fullmatch(name):
        return None
    shown = repr(name) if len(name) <= 40 else repr(name[:37]) + "..."
    return f"app name {shown} is not allowed: use {NAME_RULE} (names are used in file names under .devrun/)"


def check_name(name: str) -> None:
    problem = name_problem(name)
    if problem:
        raise ValueError(problem)


def state_dir(root: Path) -> Path:
    """`root/.devrun`, created 0700 (with a .gitignore), or checked to be a real folder of ours
    and tightened to 0700 if it was looser."""
    folder = private_dir(Path(root) / STATE_DIR)
    ignore = folder / ".gitignore"
    if not os.path.lexists(ignore):
        # Logs, pid and socket are this machine's: never committed, whatever the repo ignores.
        with contextlib.suppress(FileExistsError):
            fd = open_private(ignore, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            with open(fd, "w") as f:
                f.write(GITIGNORE)
    return folder


def private_dir(folder: Path) -> Path:
    """A folder of devrun's state: created 0700, or refused when it is a symlink, not a folder,
    or another user's; a looser mode is tightened."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(folder, 0o700)
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if os.path.islink(folder):
            raise UnsafeState(errno.ELOOP, f"{folder} is a symlink; devrun keeps its state only in a real "
                              f"folder of its own: remove the link (rm {_quote(folder)}) and run again") from None
        if exc.errno == errno.ENOTDIR:
            raise UnsafeState(errno.ENOTDIR, f"{folder} is not a folder; remove it and run again") from None
        raise
    try:
        st = os.fstat(fd)
        uid = os.geteuid()
        if st.st_uid != uid:
            raise UnsafeState(errno.EPERM, f"{folder} belongs to uid {st.st_uid}, not to you (uid {uid}); devrun "
                              f"writes only into a folder of its own: remove it (rm -r {_quote(folder)}) and run again")
        if st.st_mode & 0o077:
            os.fchmod(fd, 0o700)
    finally:
        os.close(fd)
    return folder


def open_private(path: Path, flags: int, mode: int = 0o600, *, replace_link: bool = False) -> int:
    """os.open() for a file in a state folder, never through a symlink: O_NOFOLLOW and O_CLOEXEC
    are added, and a created file gets mode (0600). The file must be a regular file of ours
    with no other hard link; a looser mode is tightened.

    A symlink at path is refused with UnsafeState, or, with replace_link, removed (the link,
    not its target) so that a new file takes its place: for files only devrun writes."""
    flags |= os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # a planted FIFO must not hang open()
    try:
        fd = os.open(path, flags, mode)
    except OSError as exc:
        if exc.errno != errno.ELOOP and not (exc.errno == errno.EEXIST and os.path.islink(path)):
            raise
        if not os.path.islink(path):
            raise
        if not replace_link or not flags & os.O_CREAT:
            raise link_refused(path) from None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        fd = os.open(path, flags | os.O_EXCL, mode)
    try:
        os.set_blocking(fd, True)
        st = os.fstat(fd)
        _check_file(path, st)
        if st.st_mode & 0o077:
            os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        raise
    return fd


def link_refused(path: Path) -> UnsafeState:
    return UnsafeState(errno.ELOOP, f"{path} is a symlink; devrun never writes through one: "
                       f"remove it (rm {_quote(path)}) and run again")


def _check_file(path: Path, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeState(errno.EINVAL, f"{path} is not a regular file; remove it and run again")
    uid = os.geteuid()
    if st.st_uid != uid:
        raise UnsafeState(errno.EPERM, f"{path} belongs to uid {st.st_uid}, not to you (uid {uid}); "
                          "remove it and run again")
    if st.st_nlink > 1:
        # A hard link would make a write here a write to some other name of the same file.
        raise UnsafeState(errno.EMLINK, f"{path} has other hard links; devrun writes only to a file of its own: "
                          f"remove it (rm {_quote(path)}) and run again")


def write_private_atomic(path: Path, data: bytes, *, fsync: bool = False) -> None:
    """Replace path with a 0600 file holding data: written to a new temporary file in the same
    folder, then renamed over path. A symlink at path is replaced, its target never written;
    a reader sees the old content or the new, never a part."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_private(path: Path, limit: int = 16 * 1024 * 1024) -> bytes:
    """The content of a state file, never read through a symlink (OSError for one)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnsafeState(errno.EINVAL, f"{path} is not a regular file")
        chunks, size = [], 0
        while size < limit and (chunk := os.read(fd, min(65536, limit - size))):
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _quote(path: Path) -> str:
    import shlex

    return shlex.quote(os.fspath(path))
