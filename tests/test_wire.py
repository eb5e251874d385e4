"""devrun.wire: every message the runner and its children exchange, through the one encoder and decoder."""

from __future__ import annotations

import json

import pytest

from devrun import wire

SPEC = wire.WorkerSpec(name="web", number=3, host="localhost", app="app:create_app()", cwd="/srv/app", listen_fd=5,
                       runner_pid=4321, lifeline_fd=7, graceful_timeout=2.5, debug=wire.DebugSpec(enabled=True),
                       watch_roots=("/srv/app", "/srv/lib"), live=True, pin_failures=2, event_fd=9, control_fd=None)

EVERY_MESSAGE = [
    wire.Loaded(), wire.Ready("Flask 3.1", True), wire.Failed("SyntaxError: x", "Traceback ..."), wire.Closed(),
    wire.Requests((wire.Served("GET", "/a?b=1", "200", 1.25, 1764700000.5), wire.Served("POST", "/b", "302"))),
    wire.Modules(("flask", "jinja2"), last=True), wire.Stale("/x.py"),
    wire.Pages(2), wire.Refreshed(2, "css"), wire.Writes(("app.log",)), wire.PinFailed(4), wire.PinOk(),
    wire.Dropped(12), wire.Become(SPEC), wire.Refresh("reload", ("templates/a.html",)),
    wire.Hello(("flask",), ("/srv/app",)), wire.ServerReady(("flask", "sys")), wire.Tainted("grpc", "thread"),
    wire.Fork(), wire.Forked(1234), wire.ForkFailed("out of processes"), wire.ServerStale("/venv/lib"),
]


def test_every_kind_is_listed_once_and_tested_here() -> None:
    assert sorted(wire.KINDS) == sorted(m.kind for m in EVERY_MESSAGE)


@pytest.mark.parametrize("message", EVERY_MESSAGE, ids=lambda m: m.kind)
def test_every_message_survives_its_own_encoding(message: wire.Message) -> None:
    line = wire.encode(message)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert wire.decode(line) == message


def test_the_spec_round_trips_through_the_environment_text() -> None:
    assert wire.WorkerSpec.from_json(SPEC.to_json()) == SPEC
    with pytest.raises(ValueError):
        wire.WorkerSpec.from_json(json.dumps({"name": "web"}))  # required fields missing


@pytest.mark.parametrize("line", [
    b"[" * 200_000, b"{" * 200_000, b"\xff\xfe", b"", b"null", b"[1]", b'{"type": 1}', b'{"type": "nosuch"}',
    b'{"type": "pages", "count": "2"}',  # a string where a number belongs
    b'{"type": "pages", "count": true}',  # a bool is not a count
    b'{"type": "writes", "paths": ["a", 3]}',
    b'{"type": "forked", "pid": 1.5}',
    b'{"type": "requests", "served": [["GET"], ["GET", 3]]}',  # one bad item spoils the batch
    b'{"type": "requests", "served": [["GET", "/", "200", 1.0, 2.0, "extra"]]}',  # more fields than there are
    b'{"type": "requests", "served": {"method": "GET"}}',  # not a list
    b'{"type": "become", "spec": {"name": "web"}}',  # a spec without its required fields
])
def test_what_a_child_s_code_may_write_to_the_pipe_is_no_message(line: bytes) -> None:
    assert wire.decode(line) is None


def test_missing_optional_fields_take_their_defaults_and_unknown_keys_are_ignored() -> None:
    assert wire.decode(b'{"type": "ready", "ms": 12.5, "future": [1]}') == wire.Ready()
    # A served request is a list: the fields it leaves out at the end take their defaults.
    assert wire.decode(b'{"type": "requests", "served": [["GET", "/", "200", 3]]}') == \
        wire.Requests((wire.Served("GET", "/", "200", 3.0),))


@pytest.mark.parametrize("text", ["é" * 5000, "x" * 10000, "\u2603" * 3000])
def test_a_bounded_encoding_shortens_text_never_the_json(text: str) -> None:
    line = wire.encode(wire.Failed("ValueError: " + text, "Traceback\n" + text + "\nEnd"), wire.MAX_WIRE)
    assert len(line) <= wire.MAX_WIRE
    decoded = wire.decode(line)
    # A traceback keeps its end (what went wrong), a summary its start (what it is about).
    assert isinstance(decoded, wire.Failed)
    assert decoded.traceback.endswith("End") and decoded.summary.startswith("ValueError")


def test_a_report_is_a_child_report_and_a_command_is_not() -> None:
    assert isinstance(wire.Ready(), wire.ChildReport)
    assert not isinstance(wire.Refresh(), wire.ChildReport) and not isinstance(wire.Become(SPEC), wire.ChildReport)
