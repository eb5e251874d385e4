"""Unit tests for devrun.views.plainlog: clean(), describe_exit() and the one-line-per-event PlainLog."""

from __future__ import annotations

import io
import re
import signal

import pytest
from rich.console import Console

from devrun import events
from devrun.views.plainlog import COLORS, PlainLog, clean, describe_exit


@pytest.fixture(autouse=True)
def plain_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No variable that would make rich colour a StringIO or change its width."""
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS", "LINES", "JUPYTER_COLUMNS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")


def served(app: str, method: str, path: str, status: str, ms: float) -> events.Requests:
    """One request, as the runner hands requests to the views: in a batch."""
    return events.Requests(app, (events.Request(app, method, path, status, ms),))


def render(names: list[str], *evs: events.Event) -> str:
    out = io.StringIO()
    log = PlainLog(names, out)
    for ev in evs:
        log.handle(ev)
    return out.getvalue()


def one_line(names: list[str], ev: events.Event) -> str:
    text = render(names, ev)
    assert text.endswith("\n")
    lines = text.split("\n")[:-1]
    assert len(lines) == 1, lines
    return lines[0]


def render_colored(names: list[str], *evs: events.Event) -> str:
    """The same output as a colour terminal would get it."""
    out = io.StringIO()
    log = PlainLog(names, out)
    log.console = Console(file=out, force_terminal=True, color_system="standard", soft_wrap=True,
                          highlight=False, emoji=False)
    for ev in evs:
        log.handle(ev)
    return out.getvalue()


# -- clean -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("plain text", "plain text"),
        ("\x1b[31mred\x1b[0m", "red"),
        ("\x1b[1;38;5;196mbold\x1b[m done", "bold done"),
        ("\x1b[38;2;255;0;0mtruecolor\x1b[39m", "truecolor"),
        ("\x1b[2J\x1b[Hcleared", "cleared"),  # clear screen, cursor home
        ("\x1b[?25lhidden cursor\x1b[?25h", "hidden cursor"),  # private-mode CSI
        ("\x1b[10;20Hmoved", "moved"),
        ("\x1b]0;window title\x07after", "after"),  # OSC ended by BEL
        ("\x1b]8;;http://x.test/\x1b\\link\x1b]8;;\x1b\\", "link"),  # OSC 8 hyperlink, ST-terminated
    ],
)
def test_clean_strips_escape_sequences(raw: str, expected: str) -> None:
    assert clean(raw) == expected


def test_clean_strips_single_character_escapes() -> None:
    # ESC followed by one byte of 0x40-0x5F (Fe sequences) such as ESC M (reverse index).
    assert clean("a\x1bMb\x1bDc\x1b\\d") == "abcd"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a\rb", "a\\x0db"),
        ("bell\x07", "bell\\x07"),
        ("back\x08space", "back\\x08space"),
        ("nul\x00", "nul\\x00"),
        ("del\x7f", "del\\x7f"),
        ("vt\x0bff\x0c", "vt\\x0bff\\x0c"),
        ("\x1b", "\\x1b"),  # a lone ESC is shown, not swallowed
        ("\x1b[", "\\x1b["),  # an unfinished CSI cannot hide the text after it
        ("esc\x1b(Bx", "esc\\x1b(Bx"),  # escapes the pattern does not know are made visible
        ("\x1bcreset \x1b7saved", "\\x1bcreset \\x1b7saved"),
        ("\x1f\x01", "\\x1f\\x01"),
    ],
)
def test_clean_makes_other_control_characters_visible(raw: str, expected: str) -> None:
    assert clean(raw) == expected


def test_clean_keeps_tabs_and_unicode_and_shows_newlines() -> None:
    assert clean("a\tb") == "a\tb"
    assert clean("line\nnext") == "line\\x0anext"  # one event, one line
    assert clean("héllo → 世界 ✓") == "héllo → 世界 ✓"


def test_clean_result_has_no_escape_or_control_characters_left() -> None:
    raw = "".join(chr(c) for c in range(32)) + "\x7f" + "\x1b[31m" + "\x1b]2;t\x07"
    out = clean(raw)
    assert not any(ord(ch) < 32 and ch not in "\t\n" for ch in out)
    assert "\x7f" not in out


def test_clean_leaves_markup_like_text_alone() -> None:
    assert clean("[bold]x[/bold] [/tmp/x]") == "[bold]x[/bold] [/tmp/x]"


# -- describe_exit -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("returncode", "text"),
    [
        (0, "exited with code 0"),
        (1, "exited with code 1"),
        (3, "exited with code 3"),
        (255, "exited with code 255"),
        (-signal.SIGTERM, "killed by SIGTERM"),
        (-signal.SIGKILL, "killed by SIGKILL"),
        (-signal.SIGSEGV, "killed by SIGSEGV"),
        (-signal.SIGINT, "killed by SIGINT"),
        (-999, "killed by signal 999"),
    ],
)
def test_describe_exit(returncode: int, text: str) -> None:
    assert describe_exit(returncode) == text


# -- PlainLog: one line per event --------------------------------------------------------


NAMES = ["web", "api-server"]


def test_starting() -> None:
    assert one_line(NAMES, events.Starting("web", 2, 4242)) == "web        | starting (pid 4242, generation 2)"


def test_ready_rounds_milliseconds() -> None:
    line = one_line(NAMES, events.Ready("api-server", 17, "http://127.0.0.1:5001/", 12.6))
    assert line == "api-server | ready http://127.0.0.1:5001/ (pid 17, 13 ms)"


def test_reloading_lists_the_paths() -> None:
    line = one_line(NAMES, events.Reloading("web", ("app.py", "pkg/views.py")))
    assert line == "web        | reload (app.py, pkg/views.py)"


def test_reloading_shows_at_most_five_paths() -> None:
    paths = tuple(f"m{i}.py" for i in range(8))
    line = one_line(NAMES, events.Reloading("web", paths))
    assert line == "web        | reload (m0.py, m1.py, m2.py, m3.py, m4.py and 3 more)"


def test_reloading_exactly_five_paths_has_no_more() -> None:
    paths = tuple(f"m{i}.py" for i in range(5))
    assert one_line(NAMES, events.Reloading("web", paths)).endswith("(m0.py, m1.py, m2.py, m3.py, m4.py)")


@pytest.mark.parametrize("returncode", [0, -signal.SIGTERM])
def test_expected_clean_exit_is_stopped(returncode: int) -> None:
    line = one_line(NAMES, events.Exited("web", 99, returncode, True))
    assert line == "web        | stopped (pid 99)"


@pytest.mark.parametrize(
    ("returncode", "expected", "text"),
    [
        (-signal.SIGKILL, True, "killed by SIGKILL (pid 99)"),
        (1, True, "exited with code 1 (pid 99)"),
        (0, False, "exited with code 0 (pid 99)"),  # an app that ends on its own did not "stop"
        (-signal.SIGTERM, False, "killed by SIGTERM (pid 99)"),
        (2, False, "exited with code 2 (pid 99)"),
    ],
)
def test_other_exits_are_described(returncode: int, expected: bool, text: str) -> None:
    assert one_line(NAMES, events.Exited("web", 99, returncode, expected)) == f"web        | {text}"


def test_request() -> None:
    line = one_line(NAMES, served("api-server", "POST", "/items?id=3", "201", 4.4))
    assert line == "api-server | POST /items?id=3 201 4ms"


def test_request_path_is_cleaned() -> None:
    line = one_line(NAMES, served("web", "GET", "/\x1b[2Jx\ry", "404", 0.2))
    assert line == "web        | GET /x\\x0dy 404 0ms"


def test_output_line() -> None:
    assert one_line(NAMES, events.Output("web", "hello from the app")) == "web        | hello from the app"


def test_output_is_cleaned() -> None:
    line = one_line(NAMES, events.Output("web", "\x1b[32mOK\x1b[0m done\x07"))
    assert line == "web        | OK done\\x07"


def test_app_failed() -> None:
    line = one_line(NAMES, events.AppFailed("web", 5, "ImportError: No module named 'x'", "Traceback ..."))
    assert line == (
        "web        | error: ImportError: No module named 'x' (serving an error page until a change fixes it)"
    )
    assert "Traceback" not in line


def test_app_failed_summary_is_cleaned() -> None:
    line = one_line(NAMES, events.AppFailed("web", 5, "\x1b[31mSyntaxError\x1b[0m\r", ""))
    assert line.startswith("web        | error: SyntaxError\\x0d (serving")


@pytest.mark.parametrize("level", ["info", "warning", "error"])
def test_notice(level: str) -> None:
    line = one_line(NAMES, events.Notice("api-server", "crashed; restarting in 0.5s", level))
    assert line == "api-server | crashed; restarting in 0.5s"


def test_runner_notice_uses_the_devrun_prefix() -> None:
    assert one_line(NAMES, events.Notice("", "watching 2 apps")) == "devrun     | watching 2 apps"


def test_stopped_prints_nothing() -> None:
    assert render(NAMES, events.Stopped("web")) == ""


def test_every_event_type_but_stopped_and_state_prints_one_prefixed_line() -> None:
    evs: list[events.Event] = [
        events.Starting("web", 1, 10),
        events.Ready("web", 10, "http://127.0.0.1:5000/", 1.0),
        events.Reloading("web", ("a.py",)),
        events.Exited("web", 10, 0, True),
        served("web", "GET", "/", "200", 1.0),
        events.Output("web", "x"),
        events.AppFailed("web", 10, "boom", "tb"),
        events.Notice("web", "note"),
        events.Refreshing("web", ("templates/a.html",), False),
        events.Refreshed("web", 2, "reload"),
        events.Pages("web", 1),
        events.Stopped("web"),
        events.StateChanged("web", "ready", 10),  # the lines around it say it already
        events.AppsChanged("", (("web", "http://127.0.0.1:5000/"),)),  # so do the runner's notices
        events.ConfigRejected("", ("devrun.yaml:3:5: apps.web.port: bad",)),
    ]
    lines = render(["web"], *evs).splitlines()
    assert len(lines) == len(evs) - 4
    assert all(line.startswith("web    | ") for line in lines)  # padded to len("devrun")
    covered = {type(ev) for ev in evs} | {events.Request}  # a request comes inside Requests
    defined = {c for c in vars(events).values() if isinstance(c, type) and issubclass(c, events.Event)}
    assert covered == defined - {events.Event}


def test_prefix_is_padded_to_the_longest_name() -> None:
    text = render(["a", "much-longer-name"], events.Output("a", "x"), events.Output("much-longer-name", "y"))
    assert text == "a                | x\nmuch-longer-name | y\n"


def test_prefix_is_at_least_as_wide_as_devrun() -> None:
    text = render(["a"], events.Output("a", "x"), events.Notice("", "y"))
    assert text == "a      | x\ndevrun | y\n"


def test_unknown_app_name_still_gets_a_prefix() -> None:
    assert one_line(["web"], events.Output("other", "x")) == "other  | x"


def test_long_lines_are_not_wrapped() -> None:
    body = "word " * 100
    # rich before 15 drops a line's trailing spaces; what matters here is that nothing wraps.
    assert one_line(NAMES, events.Output("web", body)).rstrip() == "web        | " + body.rstrip()


# -- never markup ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "[/tmp/x]",
        "[bold]x[/bold]",
        "[red]not red[/red] [link=http://x]y[/link]",
        "[/]",
        "[bold",
        ":smile: :thumbs_up:",
        "\\[escaped]",
        "[[double]]",
    ],
)
def test_output_is_printed_literally(text: str) -> None:
    assert one_line(NAMES, events.Output("web", text)) == f"web        | {text}"


@pytest.mark.parametrize("text", ["[/tmp/x]", "[bold]x[/bold]", "[/]"])
def test_no_event_text_is_parsed_as_markup(text: str) -> None:
    cases: list[tuple[events.Event, str]] = [
        (served("web", "GET", f"/{text}", "200", 1.0), f"GET /{text} 200 1ms"),
        (events.AppFailed("web", 1, text, ""), f"error: {text} (serving"),
        (events.Notice("web", text), text),
        (events.Reloading("web", (text,)), f"reload ({text})"),
        (events.Ready("web", 1, f"http://h/{text}", 1.0), f"ready http://h/{text} (pid 1, 1 ms)"),
    ]
    for ev, expected in cases:
        assert expected in one_line(["web"], ev)


def test_markup_in_an_app_name_is_literal() -> None:
    assert one_line(["[red]x"], events.Output("[red]x", "y")) == "[red]x | y"


def test_plain_file_gets_no_colour_codes() -> None:
    text = render(NAMES, served("web", "GET", "/", "500", 1.0), events.Notice("", "bad", "error"))
    assert "\x1b" not in text


# -- colours on a terminal ---------------------------------------------------------------


RED, YELLOW, GREEN, DIM = "31", "33", "32", "2"  # SGR parameters


def body_codes(line: str) -> set[str]:
    """The SGR parameters used after the `name | ` prefix of one coloured line."""
    body = line[line.index("| ") + 2:]
    return {code for params in re.findall(r"\x1b\[([0-9;]*)m", body) for code in params.split(";")}


def test_apps_get_distinct_prefix_colours_in_order() -> None:
    names = [f"app{i}" for i in range(len(COLORS) + 1)]
    out = render_colored(names, *(events.Output(n, "x") for n in names))
    lines = out.splitlines()
    assert lines[0].startswith("\x1b[36m")  # cyan
    assert lines[1].startswith("\x1b[35m")  # magenta
    assert lines[2].startswith("\x1b[32m")  # green
    assert lines[-1].startswith("\x1b[36m")  # the colours wrap around


@pytest.mark.parametrize(
    ("ev", "code"),
    [
        (served("web", "GET", "/", "500", 1.0), RED),
        (served("web", "GET", "/", "503", 1.0), RED),
        (served("web", "GET", "/", "404", 1.0), YELLOW),
        (events.AppFailed("web", 1, "boom", ""), RED),
        (events.Exited("web", 1, 1, False), RED),
        (events.Notice("web", "x", "error"), RED),
        (events.Notice("web", "x", "warning"), YELLOW),
        (events.Reloading("web", ("a.py",)), YELLOW),
        (events.Ready("web", 1, "http://h/", 1.0), GREEN),
        (events.Starting("web", 1, 1), DIM),
        (events.Exited("web", 1, 0, True), DIM),
        (events.Exited("web", 1, -signal.SIGKILL, True), DIM),
    ],
)
def test_body_colour_by_event(ev: events.Event, code: str) -> None:
    assert code in body_codes(render_colored(["web"], ev))


@pytest.mark.parametrize(
    "ev",
    [
        served("web", "GET", "/", "200", 1.0),
        served("web", "GET", "/", "302", 1.0),
        events.Output("web", "x"),
        events.Notice("web", "x", "info"),
    ],
)
def test_ordinary_lines_are_not_red_or_yellow(ev: events.Event) -> None:
    codes = body_codes(render_colored(["web"], ev))
    assert RED not in codes
    assert YELLOW not in codes


def test_colour_codes_do_not_leak_from_app_output() -> None:
    line = render_colored(["web"], events.Output("web", "\x1b[31mred?\x1b[0m"))
    assert "\x1b[31m" not in line
    assert RED not in body_codes(line)
    assert "red?" in line


# -- package bugs (left failing on purpose) ----------------------------------------------


def test_regression_reloading_paths_are_not_cleaned() -> None:
    """Regression (was a bug, devrun/plainlog.py:57-58): Request paths, Output lines and AppFailed summaries
    go through clean(), but the changed file names of a Reloading event are printed raw, so a
    file named "\\x1b[2J.py" (or with a newline in its name) writes a terminal escape sequence
    (clear screen) or breaks the one-line-per-event format."""
    line = one_line(NAMES, events.Reloading("web", ("\x1b[2Jx.py", "a\nb.py")))
    assert "\x1b" not in line


@pytest.mark.parametrize(("event", "expected"), [
    (events.Refreshing("web", ("templates/a.html",), False), "web    | refresh pages (templates/a.html)"),
    (events.Refreshing("web", ("static/a.css", "static/b.css"), True),
     "web    | swap stylesheets (static/a.css, static/b.css)"),
    (events.Refreshed("web", 1, "reload"), "web    | refreshed 1 page"),
    (events.Refreshed("web", 3, "css"), "web    | swapped stylesheets in 3 pages"),
    (events.Pages("web", 0), "web    | live reload: 0 pages connected"),
])
def test_live_reload_lines(event: events.Event, expected: str) -> None:
    assert one_line(["web"], event) == expected
