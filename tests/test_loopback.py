"""devrun.loopback: which peers and Host headers may see devrun's own pages (F6, F13, S8)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from devrun.loopback import BAD_HOST, FOREIGN_PEER, LOOPBACK, Trust, host_name, is_loopback_address


@pytest.mark.parametrize(("addr", "expected"), [
    ("127.0.0.1", True), ("127.5.6.7", True), ("::1", True), ("::ffff:127.0.0.1", True),
    ("10.1.2.3", False), ("192.0.2.2", False), ("::ffff:10.0.0.1", False), ("fe80::1%eth0", False),
    ("0.0.0.0", False), ("", False), (None, False), ("localhost", False),
])
def test_loopback_peers(addr: str | None, expected: bool) -> None:
    assert is_loopback_address(addr) is expected


@pytest.mark.parametrize(("header", "expected"), [
    ("localhost:8000", "localhost"), ("LocalHost", "localhost"), ("[::1]:27122", "::1"), ("[::1]", "::1"),
    ("127.0.0.1", "127.0.0.1"), ("evil.example:80", "evil.example"),
    ("localhost:0", None), ("localhost:99999", None), ("localhost:", None), ("a b", None), ("[zz]", None),
    ("[127.0.0.1]", None), ("", None), (None, None), ("localhost:80:80", None), ("user@localhost", None),
])
def test_host_names(header: str | None, expected: str | None) -> None:
    assert host_name(header) == expected


@pytest.mark.parametrize("header", [
    "localhost", "localhost:5000", "app.localhost:5000", "127.0.0.1", "127.9.9.9:1", "[::1]:27122", "LOCALHOST",
])
def test_loopback_names_are_trusted(header: str) -> None:
    assert LOOPBACK.host_ok(header)


@pytest.mark.parametrize("header", [
    "attacker.example:27109", "localhost.attacker.example", "127.0.0.1.nip.io", "10.0.0.1", "0.0.0.0:80",
    ".localhost", "a..localhost", "localhost:abc", None, "", "[::2]",
])
def test_other_names_are_not(header: str | None) -> None:
    assert not LOOPBACK.host_ok(header)


def test_a_configured_loopback_host_is_trusted_a_configured_other_host_only_with_the_opt_in() -> None:
    assert Trust("::1").host_ok("[::1]:27122")  # F13: the debugger console on host ::1
    assert not Trust("devbox.lan").host_ok("devbox.lan:8000")
    remote = Trust("devbox.lan", remote=True)
    assert remote.host_ok("devbox.lan:8000") and remote.host_ok("192.168.1.5:8000") and remote.host_ok("localhost")
    # S8: the opt-in widens the peers and the configured name, never to any name (DNS rebinding).
    assert not remote.host_ok("attacker.example:8000")


def test_refusals_say_whether_the_name_or_the_peer_is_wrong() -> None:
    assert LOOPBACK.refusal("localhost:1", "127.0.0.1") is None
    assert LOOPBACK.refusal("[::1]:1", "::1") is None
    assert LOOPBACK.refusal("evil.example:1", "127.0.0.1") == BAD_HOST
    assert LOOPBACK.refusal("localhost:1", "10.1.2.3") == FOREIGN_PEER
    assert LOOPBACK.refusal(None, "127.0.0.1") == BAD_HOST
    assert Trust(remote=True).refusal("localhost:1", "10.1.2.3") is None
    assert Trust(remote=True).refusal("evil.example", "10.1.2.3") == BAD_HOST
    assert LOOPBACK.refuses({"HTTP_HOST": "localhost", "REMOTE_ADDR": "10.1.2.3"}) == FOREIGN_PEER


@pytest.mark.process
def test_the_runner_side_imports_nothing_heavy() -> None:
    code = ("import sys, devrun.loopback, devrun.runner.fallback; "
            "heavy = [m for m in ('gevent', 'werkzeug') if m in sys.modules]; print(heavy); sys.exit(bool(heavy))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
