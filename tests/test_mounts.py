"""Which folders are polled: mountinfo as the kernel writes it, per file system type, and the
`watch_mode` key that overrides the choice."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest

from devrun import config
from devrun.config.yamlsource import ConfigError
from devrun.watch import mounts
from devrun.watch.mounts import Mount, find_mount, parse_mountinfo, verdict

# Lines as /proc/self/mountinfo shows them on the systems named, under a local root.
ROOT = "27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard\n"
LINES = {
    # WSL2's Windows drive
    "9p": "72 27 0:53 / /mnt/c rw,noatime - 9p drvfs rw,dirsync,aname=drvfs;path=C:\\;uid=1000,"
          "symlinkroot=/mnt/,mmap,access=client,msize=65536,trans=fd,rfd=5,wfd=5\n",
    # a Docker Desktop bind mount, or a VM's shared folder
    "virtiofs": "1490 1460 0:155 /Users/me/proj /app rw,relatime master:714 - virtiofs virtiofs0 rw\n",
    "fuse.sshfs": "80 27 0:60 / /home/me/remote rw,nosuid,nodev,relatime shared:300 - fuse.sshfs me@host:/srv "
                  "rw,user_id=1000,group_id=1000\n",
    "nfs4": "90 27 0:61 / /net/proj rw,relatime shared:310 - nfs4 server:/export/proj rw,vers=4.2,rsize=1048576,"
            "hard,proto=tcp,sec=sys,clientaddr=10.0.0.2\n",
    "cifs": "91 27 0:62 / /mnt/share rw,relatime - cifs //srv/share rw,vers=3.1.1,cache=strict,username=me\n",
    "ext4": "92 27 259:3 / /srv/data rw,relatime shared:40 - ext4 /dev/nvme0n1p3 rw\n",
    # a container's root file system
    "overlay": "93 27 0:70 / /var/lib/docker/x/merged rw,relatime - overlay overlay rw,lowerdir=/l,upperdir=/u,"
               "workdir=/w\n",
    "tmpfs": "94 27 0:71 / /run/user/1000 rw,nosuid,nodev,relatime shared:200 - tmpfs tmpfs rw,size=1620k,mode=700\n",
}
INSIDE = {"9p": "/mnt/c/proj", "virtiofs": "/app/src", "fuse.sshfs": "/home/me/remote/site",
          "nfs4": "/net/proj/web", "cifs": "/mnt/share/app", "ext4": "/srv/data/app",
          "overlay": "/var/lib/docker/x/merged/app", "tmpfs": "/run/user/1000/app"}
POLLED = {"9p", "virtiofs", "fuse.sshfs", "nfs4", "cifs"}


def fstype_at(found: list[Mount], path: str) -> str:
    mount = find_mount(found, path)
    assert mount is not None, path
    return mount.fstype


@pytest.mark.parametrize("fstype", list(LINES))
def test_each_file_system_type_is_polled_or_not(fstype: str) -> None:
    found = parse_mountinfo(ROOT + LINES[fstype])
    mount = find_mount(found, INSIDE[fstype])
    assert mount is not None and mount.fstype == fstype
    polls, why = mounts.judge(mount.fstype)
    assert polls == (fstype in POLLED), why
    assert why.startswith(f"{fstype}: ")
    assert ("no events" in why) == polls


@pytest.mark.parametrize("fstype", ["fuse", "fuse.rclone", "fuse.gcsfuse", "fuse.grpcfuse", "fuse.osxfs",
                                    "fakeowner", "smb3", "vboxsf", "vmhgfs", "prl_fs", "drvfs", "glusterfs",
                                    "ceph", "lustre", "afs"])
def test_shares_and_every_fuse_file_system_poll(fstype: str) -> None:
    assert mounts.judge(fstype)[0]


@pytest.mark.parametrize("fstype", ["xfs", "btrfs", "zfs", "f2fs", "bcachefs", "ext3", "vfat", "squashfs"])
def test_local_file_systems_use_events(fstype: str) -> None:
    polls, why = mounts.judge(fstype)
    assert not polls and "assumed" not in why


def test_an_unknown_type_is_taken_for_local() -> None:
    polls, why = mounts.judge("weirdfs")
    assert not polls and "assumed local" in why


def test_escaped_mount_points_and_optional_fields() -> None:
    text = (ROOT + "95 27 0:80 / /media/me/My\\040Disk\\011x rw shared:5 master:3 propagate_from:2 unbindable"
            " - 9p my\\134share rw\n")
    found = parse_mountinfo(text)
    assert found[-1] == Mount("/media/me/My Disk\tx", "9p", "my\\share")
    assert find_mount(found, "/media/me/My Disk\tx/app/views.py") == found[-1]
    assert find_mount(found, "/media/me/My Disk") == found[0]  # a prefix of the name is not inside it


def test_the_longest_mount_point_wins_at_a_folder_boundary() -> None:
    text = ROOT + "40 27 0:90 / /mnt rw - tmpfs tmpfs rw\n" + LINES["9p"]
    found = parse_mountinfo(text)
    assert fstype_at(found, "/mnt/c/proj/app.py") == "9p"
    assert fstype_at(found, "/mnt/c") == "9p"
    assert fstype_at(found, "/mnt/cdrom/x") == "tmpfs"
    assert fstype_at(found, "/home/me") == "ext4"


def test_a_mount_point_mounted_twice_shows_the_last_mount() -> None:
    text = ROOT + "50 27 0:91 / /work rw - ext4 /dev/vdb rw\n" + "51 50 0:92 / /work rw - nfs4 srv:/w rw\n"
    assert fstype_at(parse_mountinfo(text), "/work/app") == "nfs4"
    text = ROOT + "51 27 0:92 / /work rw - nfs4 srv:/w rw\n" + "50 51 0:91 / /work rw - ext4 /dev/vdb rw\n"
    assert fstype_at(parse_mountinfo(text), "/work/app") == "ext4"


def test_broken_lines_are_skipped() -> None:
    found = parse_mountinfo("garbage\n" + "1 2 3:4 / /x rw - \n" + ROOT)
    assert [m.mount_point for m in found] == ["/"]


def test_no_mount_table_means_file_events() -> None:
    v = verdict("/anywhere", None)
    assert not v.polls and "no mount table" in v.why
    assert mounts.read_mountinfo("/nonexistent/mountinfo") is None
    v = verdict("/anywhere", "")
    assert not v.polls


def test_the_verdict_resolves_symlinks(tmp_path: Path) -> None:
    real = tmp_path / "share"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    point = os.path.realpath(real).replace(" ", "\\040")
    v = verdict(str(tmp_path / "link" / "app"), ROOT + f"99 27 0:99 / {point} rw - virtiofs v0 rw\n")
    assert (v.polls, v.fstype, v.mount_point) == (True, "virtiofs", os.path.realpath(real))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/mountinfo")
def test_this_machines_mount_table_parses() -> None:
    text = mounts.read_mountinfo()
    assert text is not None
    found = parse_mountinfo(text)
    assert len(found) == len([line for line in text.splitlines() if line.strip()])
    assert find_mount(found, "/") is not None


# -- the watch_mode key ----------------------------------------------------------------------


def write(folder: Path, text: str) -> Path:
    path = folder / "devrun.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def test_watch_mode_defaults_to_auto_and_comes_from_defaults(tmp_path: Path) -> None:
    cfg = config.load_config(write(tmp_path, """
        defaults:
          watch_mode: poll
        apps:
          web: {app: "hello:app", port: 5000}
          api: {app: "api:app", port: 5001, watch_mode: events}
        """))
    assert cfg.apps["web"].config.watch_mode == "poll"
    assert cfg.apps["api"].config.watch_mode == "events"
    cfg = config.load_config(write(tmp_path, 'apps:\n  web: {app: "hello:app", port: 5000}\n'))
    assert cfg.apps["web"].config.watch_mode == "auto"


def test_a_bad_watch_mode_names_the_key_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, """
        defaults:
          watch_mode: pol
        apps:
          web:
            app: hello:app
            port: 5000
            watch_mode: sometimes
        """)
    with pytest.raises(ConfigError) as info:
        config.load_config(path)
    found = sorted((p.line, p.col, p.path) for p in info.value.problems)
    assert found == [(2, 3, "defaults.watch_mode"), (7, 5, "apps.web.watch_mode")]
    text = "\n".join(str(p) for p in info.value.problems)
    assert f"{path}:7:5: apps.web.watch_mode:" in text and "'sometimes'" in text and "'poll'" in text
