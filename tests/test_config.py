"""Unit tests for devrun.config and devrun.config.yamlsource: loading devrun.yaml files from tmp_path."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest

from devrun import config
from devrun.config import yamlsource
from devrun.config.yamlsource import ConfigError, Problem

# -- helpers -----------------------------------------------------------------------------


def write(folder: Path, text: str, name: str = "devrun.yaml") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def load(folder: Path, text: str) -> config.Config:
    return config.load_config(write(folder, text))


def problems(folder: Path, text: str) -> list[Problem]:
    path = write(folder, text)
    with pytest.raises(ConfigError) as info:
        config.load_config(path)
    found = info.value.problems
    assert found, "a ConfigError must carry at least one problem"
    for p in found:
        assert p.file == str(path)
    return found


def only(found: list[Problem]) -> Problem:
    assert len(found) == 1, [str(p) for p in found]
    return found[0]


def where(p: Problem) -> tuple[int, int, str]:
    return (p.line, p.col, p.path)


MINIMAL = """
apps:
  web:
    app: hello:app
    port: 5000
"""


# -- a valid file ------------------------------------------------------------------------


def test_minimal_app_gets_the_default_values(tmp_path: Path) -> None:
    cfg = load(tmp_path, MINIMAL)
    assert list(cfg.apps) == ["web"]
    app = cfg.apps["web"]
    assert app.name == "web"
    c = app.config
    assert c.app == "hello:app"
    assert c.port == 5000
    assert c.host == "127.0.0.1"
    assert c.cwd == "."
    assert c.env == {}
    assert c.watch == ["**/*.py"]
    assert c.ignore == []
    assert c.reload_delay == 0.03
    assert c.graceful_timeout == 5
    assert c.debug.enabled is False
    assert c.debug.evalex is True
    assert c.debug.pin is True
    assert c.debug.allow_remote is False
    assert app.root == tmp_path.resolve()
    assert app.url == "http://127.0.0.1:5000/"


def test_config_file_is_the_resolved_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, MINIMAL)
    monkeypatch.chdir(tmp_path)
    cfg = config.load_config(Path("devrun.yaml"))
    assert cfg.file == (tmp_path / "devrun.yaml").resolve()
    assert cfg.file.is_absolute()


def test_default_lists_are_not_shared_between_apps(tmp_path: Path) -> None:
    cfg = load(tmp_path, """
        apps:
          web: {app: a:app, port: 5000}
          api: {app: b:app, port: 5001}
    """)
    assert cfg.apps["web"].config.watch == cfg.apps["api"].config.watch == ["**/*.py"]
    assert cfg.apps["web"].config.watch is not cfg.apps["api"].config.watch


def test_every_key_of_an_app(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    cfg = load(tmp_path, """
        apps:
          api:
            app: "api:create_app('dev', db={'url': 'sqlite://'})"
            host: localhost
            port: 8080
            cwd: src
            env: {MODE: dev}
            watch: ["**/*.py", "templates/**"]
            ignore: ["tests/**"]
            reload_delay: 0.2
            graceful_timeout: 0
            debug: {enabled: true, evalex: false, pin: false}
    """)
    c = cfg.apps["api"].config
    assert c.app == "api:create_app('dev', db={'url': 'sqlite://'})"
    assert (c.host, c.port, c.cwd) == ("localhost", 8080, "src")
    assert c.env == {"MODE": "dev"}
    assert c.watch == ["**/*.py", "templates/**"]
    assert c.ignore == ["tests/**"]
    assert (c.reload_delay, c.graceful_timeout) == (0.2, 0)
    assert (c.debug.enabled, c.debug.evalex, c.debug.pin) == (True, False, False)
    assert cfg.apps["api"].root == (tmp_path / "src").resolve()
    assert cfg.apps["api"].url == "http://localhost:8080/"


def test_apps_keep_their_file_order(tmp_path: Path) -> None:
    cfg = load(tmp_path, """
        apps:
          zeta: {app: z:app, port: 5003}
          alpha: {app: a:app, port: 5001}
          mid: {app: m:app, port: 5002}
    """)
    assert list(cfg.apps) == ["zeta", "alpha", "mid"]


def test_defaults_deep_merge(tmp_path: Path) -> None:
    cfg = load(tmp_path, """
        defaults:
          reload_delay: 0.5
          watch: ["**/*.py", "templates/**"]
          ignore: ["tests/**"]
          env: {SHARED: one, OVERRIDDEN: from-defaults}
          debug:
            enabled: true
            evalex: false
        apps:
          web:
            app: web:app
            port: 5000
            watch: ["*.html"]
            env: {OVERRIDDEN: from-app, OWN: x}
            debug:
              evalex: true
          api:
            app: api:app
            port: 5001
            reload_delay: 0.1
    """)
    web, api = cfg.apps["web"].config, cfg.apps["api"].config
    # debug merges key by key: enabled comes from defaults, evalex from the app, pin is the default
    assert web.debug.enabled is True
    assert web.debug.evalex is True
    assert web.debug.pin is True
    assert api.debug.enabled is True
    assert api.debug.evalex is False
    # lists replace, they are not concatenated
    assert web.watch == ["*.html"]
    assert api.watch == ["**/*.py", "templates/**"]
    assert web.ignore == api.ignore == ["tests/**"]
    # scalars: the app wins
    assert web.reload_delay == 0.5
    assert api.reload_delay == 0.1
    # mappings merge
    assert web.env == {"SHARED": "one", "OVERRIDDEN": "from-app", "OWN": "x"}
    assert api.env == {"SHARED": "one", "OVERRIDDEN": "from-defaults"}


def test_empty_defaults_is_allowed(tmp_path: Path) -> None:
    cfg = load(tmp_path, "defaults:\n" + MINIMAL)
    assert cfg.apps["web"].config.port == 5000


def test_defaults_can_supply_a_required_key(tmp_path: Path) -> None:
    cfg = load(tmp_path, """
        defaults:
          app: shared:app
        apps:
          web: {port: 5000}
          api: {port: 5001, app: api:app}
    """)
    assert cfg.apps["web"].config.app == "shared:app"
    assert cfg.apps["api"].config.app == "api:app"


def test_cwd_is_relative_to_the_file_not_to_the_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project"
    (project / "services" / "web").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    write(project, """
        apps:
          web: {app: web:app, port: 5000, cwd: services/web}
          up: {app: up:app, port: 5001, cwd: ..}
          here: {app: here:app, port: 5002}
    """)
    monkeypatch.chdir(elsewhere)
    cfg = config.load_config(Path("../project/devrun.yaml"))
    assert cfg.apps["web"].root == (project / "services" / "web").resolve()
    assert cfg.apps["up"].root == tmp_path.resolve()
    assert cfg.apps["here"].root == project.resolve()
    assert cfg.apps["web"].config.cwd == "services/web"  # the config keeps what was written


def test_absolute_cwd_is_kept(tmp_path: Path) -> None:
    target = tmp_path / "abs"
    target.mkdir()
    cfg = load(tmp_path / "conf", f"""
        apps:
          web: {{app: web:app, port: 5000, cwd: "{target}"}}
    """)
    assert cfg.apps["web"].root == target.resolve()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("true", "true"),
        ("false", "false"),
        ("True", "true"),
        ("5", "5"),
        ("-3", "-3"),
        ("1.5", "1.5"),
        ("text", "text"),
        ("'5'", "5"),
        ("'true'", "true"),
        ("''", ""),
        ("0", "0"),
    ],
)
def test_env_values_are_stringified(tmp_path: Path, value: str, expected: str) -> None:
    cfg = load(tmp_path, f"""
        apps:
          web:
            app: web:app
            port: 5000
            env:
              VALUE: {value}
    """)
    env = cfg.apps["web"].environment()
    assert env == {"VALUE": expected}
    assert all(isinstance(v, str) for v in env.values())


def test_env_values_are_text_written_as_yaml_shows_them(tmp_path: Path) -> None:
    cfg = load(tmp_path, """
        apps:
          web:
            app: web:app
            port: 5000
            env: {FLAG: true, COUNT: 5, DISABLED: false, NAME: x}
    """)
    assert cfg.apps["web"].config.env == {"FLAG": "true", "COUNT": "5", "DISABLED": "false", "NAME": "x"}
    assert cfg.apps["web"].environment() == {"FLAG": "true", "COUNT": "5", "DISABLED": "false", "NAME": "x"}


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_debug_on_loopback_is_allowed(tmp_path: Path, host: str) -> None:
    cfg = load(tmp_path, f"""
        apps:
          web:
            app: web:app
            host: "{host}"
            port: 5000
            debug: {{enabled: true, pin: false}}
    """)
    assert cfg.apps["web"].config.debug.enabled is True
    assert cfg.apps["web"].config.host == host


def test_debug_on_a_remote_host_with_allow_remote(tmp_path: Path) -> None:
    cfg = load(tmp_path, """
        apps:
          web:
            app: web:app
            host: 0.0.0.0
            port: 5000
            debug: {enabled: true, allow_remote: true}
    """)
    assert cfg.apps["web"].config.debug.allow_remote is True
    assert cfg.apps["web"].url == "http://127.0.0.1:5000/"


def test_remote_host_without_debug_needs_no_allow_remote(tmp_path: Path) -> None:
    cfg = load(tmp_path, """
        apps:
          web: {app: web:app, host: 0.0.0.0, port: 5000}
    """)
    assert cfg.apps["web"].config.host == "0.0.0.0"


def test_same_port_on_different_hosts_is_allowed(tmp_path: Path) -> None:
    cfg = load(tmp_path, """
        apps:
          web: {app: web:app, host: 127.0.0.1, port: 5000}
          api: {app: api:app, host: 127.0.0.2, port: 5000}
    """)
    assert [a.config.port for a in cfg.apps.values()] == [5000, 5000]


# -- find_config -------------------------------------------------------------------------


def test_find_config_in_the_start_folder(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    assert config.find_config(tmp_path) == path.resolve()


def test_find_config_in_a_parent_folder(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    deep = tmp_path / "a" / "b" / "c"
    deep.mkdir(parents=True)
    assert config.find_config(deep) == path.resolve()


def test_find_config_prefers_the_nearest_file(tmp_path: Path) -> None:
    write(tmp_path, MINIMAL)
    inner = write(tmp_path / "sub", MINIMAL)
    (tmp_path / "sub" / "deeper").mkdir()
    assert config.find_config(tmp_path / "sub" / "deeper") == inner.resolve()


def test_find_config_defaults_to_the_working_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, MINIMAL)
    (tmp_path / "pkg").mkdir()
    monkeypatch.chdir(tmp_path / "pkg")
    assert config.find_config() == path.resolve()


def test_find_config_skips_a_folder_named_like_the_file(tmp_path: Path) -> None:
    if any((p / "devrun.yaml").exists() for p in tmp_path.parents):
        pytest.skip("a devrun.yaml exists above the temporary folder")
    (tmp_path / "devrun.yaml").mkdir()
    (tmp_path / "sub").mkdir()
    assert config.find_config(tmp_path / "sub") is None


def test_find_config_ignores_other_names(tmp_path: Path) -> None:
    if any((p / "devrun.yaml").exists() for p in tmp_path.parents):
        pytest.skip("a devrun.yaml exists above the temporary folder")
    write(tmp_path, MINIMAL, "devrun.yml")
    write(tmp_path, MINIMAL, "devrun.yaml.example")
    assert config.find_config(tmp_path) is None


# -- errors: unknown keys ----------------------------------------------------------------


def test_unknown_app_key_with_did_you_mean(tmp_path: Path) -> None:
    p = only(problems(tmp_path, """
        apps:
          web:
            app: web:app
            port: 5000
            ignroe: ["tests/**"]
    """))
    assert where(p) == (5, 5, "apps.web.ignroe")
    assert p.message == "unknown key `ignroe`; did you mean `ignore`?"


def test_unknown_nested_debug_key_with_did_you_mean(tmp_path: Path) -> None:
    p = only(problems(tmp_path, """
        apps:
          web:
            app: web:app
            port: 5000
            debug:
              enabled: true
              evalx: false
    """))
    assert where(p) == (7, 7, "apps.web.debug.evalx")
    assert p.message == "unknown key `evalx`; did you mean `evalex`?"


def test_unknown_key_without_a_close_match_lists_the_keys(tmp_path: Path) -> None:
    p = only(problems(tmp_path, """
        apps:
          web:
            app: web:app
            port: 5000
            zzzzzz: 1
    """))
    assert (p.line, p.col) == (5, 5)
    assert p.message.startswith("unknown key `zzzzzz`; expected one of: app, host, port, cwd, env")
    assert "reload_delay" in p.message
    assert "debug" in p.message


def test_unknown_top_level_key(tmp_path: Path) -> None:
    found = problems(tmp_path, "appps:\n  web: {app: web:app, port: 5000}\n")
    unknown = [p for p in found if "appps" in p.message]
    assert len(unknown) == 1
    assert (unknown[0].line, unknown[0].col) == (1, 1)
    assert unknown[0].message == "unknown key `appps`; did you mean `apps`?"


def test_unknown_key_in_defaults_is_reported_once_at_the_defaults_line(tmp_path: Path) -> None:
    p = only(problems(tmp_path, """
        defaults:
          reload_delay: 0.1
          ignroe: ["tests/**"]
        apps:
          web: {app: web:app, port: 5000}
          api: {app: api:app, port: 5001}
    """))
    assert where(p) == (3, 3, "defaults.ignroe")
    assert p.message == "unknown key `ignroe`; did you mean `ignore`?"


def test_unknown_nested_key_in_defaults(tmp_path: Path) -> None:
    p = only(problems(tmp_path, """
        defaults:
          debug:
            evalx: true
        apps:
          web: {app: web:app, port: 5000}
    """))
    assert (p.line, p.col) == (3, 5)
    assert p.path.endswith("debug.evalx")
    assert p.message == "unknown key `evalx`; did you mean `evalex`?"


# -- errors: required keys and values ----------------------------------------------------


def test_missing_port_is_reported_at_the_app(tmp_path: Path) -> None:
    p = only(problems(tmp_path, """
        apps:
          web:
            app: web:app
    """))
    assert where(p) == (2, 3, "apps.web.port")
    assert p.message == "missing required key `port`"


def test_missing_app_is_reported_at_the_app(tmp_path: Path) -> None:
    p = only(problems(tmp_path, """
        apps:
          web:
            app: web:app
            port: 5000
          api:
            port: 5001
    """))
    assert where(p) == (5, 3, "apps.api.app")
    assert p.message == "missing required key `app`"


def test_missing_app_and_port_are_both_reported(tmp_path: Path) -> None:
    found = problems(tmp_path, """
        apps:
          web:
            host: 127.0.0.1
    """)
    assert sorted(p.path for p in found) == ["apps.web.app", "apps.web.port"]
    assert {(p.line, p.col) for p in found} == {(2, 3)}


@pytest.mark.parametrize(("port", "bound"), [("70000", "65535"), ("65536", "65535"), ("0", "1"), ("-1", "1")])
def test_port_out_of_range(tmp_path: Path, port: str, bound: str) -> None:
    p = only(problems(tmp_path, f"""
        apps:
          web:
            app: web:app
            port: {port}
    """))
    assert where(p) == (4, 5, "apps.web.port")
    assert bound in p.message
    assert port in p.message  # the value found is shown


@pytest.mark.parametrize("port", ["1", "65535"])
def test_port_range_bounds_are_inclusive(tmp_path: Path, port: str) -> None:
    cfg = load(tmp_path, f"apps:\n  web: {{app: web:app, port: {port}}}\n")
    assert cfg.apps["web"].config.port == int(port)


def test_port_that_is_not_a_number(tmp_path: Path) -> None:
    p = only(problems(tmp_path, "apps:\n  web: {app: web:app, port: http}\n"))
    assert p.path == "apps.web.port"
    assert p.line == 2
    assert "integer" in p.message
    assert "'http'" in p.message


@pytest.mark.parametrize(
    ("key", "value"),
    [("reload_delay", "-0.1"), ("reload_delay", "11"), ("graceful_timeout", "301"), ("graceful_timeout", "-1")],
)
def test_delays_out_of_range(tmp_path: Path, key: str, value: str) -> None:
    p = only(problems(tmp_path, f"""
        apps:
          web:
            app: web:app
            port: 5000
            {key}: {value}
    """))
    assert where(p) == (5, 5, f"apps.web.{key}")


def test_duplicate_host_and_port_across_apps(tmp_path: Path) -> None:
    p = only(problems(tmp_path, """
        apps:
          web:
            app: web:app
            port: 5000
          api:
            app: api:app
            port: 5000
    """))
    assert where(p) == (7, 5, "apps.api.port")
    assert "127.0.0.1:5000" in p.message
    assert "`web`" in p.message


def test_duplicate_port_from_defaults_names_the_second_app(tmp_path: Path) -> None:
    found = problems(tmp_path, """
        defaults:
          port: 5000
        apps:
          web: {app: web:app}
          api: {app: api:app}
    """)
    p = only(found)
    assert "127.0.0.1:5000" in p.message
    assert "`web`" in p.message
    assert p.line in (2, 5)  # at the defaults' port, or at the app `api`


def test_nonexistent_cwd(tmp_path: Path) -> None:
    p = only(problems(tmp_path, """
        apps:
          web:
            app: web:app
            port: 5000
            cwd: no/such/folder
    """))
    assert where(p) == (5, 5, "apps.web.cwd")
    assert str((tmp_path / "no" / "such" / "folder").resolve()) in p.message
    assert "does not exist" in p.message


def test_cwd_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    p = only(problems(tmp_path, "apps:\n  web: {app: web:app, port: 5000, cwd: afile}\n"))
    assert p.path == "apps.web.cwd"
    assert p.line == 2


@pytest.mark.parametrize(
    ("app", "fragment"),
    [
        ("hello", "expected 'module:attr'"),
        ("'my-pkg:app'", "'my-pkg' is not a valid module name"),
        ("'pkg:1app'", "'1app' is not a valid attribute name"),
        ("\"pkg:create_app(config)\"", "must be literals"),
        ("\"pkg:create_app(**kw)\"", "create_app(**kw)"),
    ],
)
def test_bad_import_string(tmp_path: Path, app: str, fragment: str) -> None:
    p = only(problems(tmp_path, f"""
        apps:
          web:
            port: 5000
            app: {app}
    """))
    assert where(p) == (4, 5, "apps.web.app")
    assert fragment in p.message


def test_repeated_key_is_reported_at_its_second_occurrence(tmp_path: Path) -> None:
    p = only(problems(tmp_path, """
        apps:
          web:
            app: web:app
            port: 5000
            host: 127.0.0.1
            port: 5001
    """))
    assert where(p) == (6, 5, "apps.web.port")
    assert "repeated key `port`" in p.message
    assert "line 4" in p.message


def test_repeated_app_name(tmp_path: Path) -> None:
    p = only(problems(tmp_path, """
        apps:
          web: {app: a:app, port: 5000}
          api: {app: b:app, port: 5001}
          web: {app: c:app, port: 5002}
    """))
    assert where(p) == (4, 3, "apps.web")
    assert "repeated key `web`" in p.message
    assert "line 2" in p.message


def test_repeated_keys_are_all_reported(tmp_path: Path) -> None:
    found = problems(tmp_path, """
        apps:
          web:
            app: web:app
            app: web:app2
            port: 5000
            port: 5001
    """)
    assert [(p.line, p.path) for p in found] == [(4, "apps.web.app"), (6, "apps.web.port")]


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "   \n# x\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "devrun.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        config.load_config(path)
    p = only(info.value.problems)
    assert (p.line, p.col) == (1, 1)
    assert "empty" in p.message
    assert "apps" in p.message


@pytest.mark.parametrize(
    ("text", "kind"),
    [("- web\n- api\n", "a list"), ("just text\n", "a string"), ("42\n", "int"), ("---\n", "nothing")],
)
def test_top_level_not_a_mapping(tmp_path: Path, text: str, kind: str) -> None:
    p = only(problems(tmp_path, text))
    assert (p.line, p.col) == (1, 1)
    assert "expected a mapping" in p.message
    assert p.message.endswith(f"found {kind}")


@pytest.mark.parametrize("text", ["apps: {}\n", "apps:\n", "defaults: {port: 5000}\n"])
def test_no_apps(tmp_path: Path, text: str) -> None:
    found = problems(tmp_path, text)
    assert any(p.path == "apps" and "apps" in p.message for p in found)


def test_apps_not_a_mapping(tmp_path: Path) -> None:
    p = only(problems(tmp_path, "apps:\n  - web\n"))
    assert p.path == "apps"
    assert p.line == 1


@pytest.mark.parametrize(
    "tag",
    [
        "!!python/object/apply:os.mkdir [{marker}]",
        "!!python/object:collections.OrderedDict {{}}",
        "!!python/name:os.system",
        "!!python/module:os",
    ],
)
def test_python_tags_are_refused(tmp_path: Path, tag: str) -> None:
    marker = tmp_path / "created-by-yaml"
    value = tag.format(marker=f'"{marker}"')
    p = only(problems(tmp_path, f"""
        apps:
          web:
            port: 5000
            app: {value}
    """))
    assert (p.line, p.col) == (4, 10)
    assert "python/" in p.message
    assert "constructor" in p.message
    assert not marker.exists()


def test_tab_indentation(tmp_path: Path) -> None:
    path = tmp_path / "devrun.yaml"
    path.write_text("apps:\n  web:\n\tapp: web:app\n    port: 5000\n")
    with pytest.raises(ConfigError) as info:
        config.load_config(path)
    p = only(info.value.problems)
    assert p.line == 3
    assert "tab" in p.message
    assert "spaces" in p.message
    src, caret = p.excerpt.split("\n")
    assert src == "     app: web:app"  # the tab shown as one space, after a 4-space indent
    assert caret.strip() == "^"
    assert len(caret) - 1 == 4 + p.col - 1  # the caret sits under the reported column
    assert "\t" not in p.excerpt
    assert p.excerpt in str(p)


def test_syntax_error_has_an_excerpt_with_a_caret(tmp_path: Path) -> None:
    p = only(problems(tmp_path, """
        apps:
          web: {app: web:app, port: 5000]
    """))
    assert (p.line, p.col) == (2, 33)
    assert p.path == ""
    assert "tab" not in p.message
    assert p.excerpt == "      web: {app: web:app, port: 5000]\n" + " " * 36 + "^"


def test_several_errors_are_reported_in_one_go(tmp_path: Path) -> None:
    found = problems(tmp_path, """
        apps:
          web:
            app: web:app
            port: 70000
            ignroe: []
            debug: {evalx: true}
          api:
            port: 5001
            reload_delay: -1
    """)
    assert [(p.line, p.path) for p in found] == [
        (4, "apps.web.port"),
        (5, "apps.web.ignroe"),
        (6, "apps.web.debug.evalx"),
        (7, "apps.api.app"),
        (9, "apps.api.reload_delay"),
    ]


def test_config_error_str_lists_every_problem_located(tmp_path: Path) -> None:
    path = write(tmp_path, """
        apps:
          web:
            app: web:app
            port: 0
          api:
            app: api:app
    """)
    with pytest.raises(ConfigError) as info:
        config.load_config(path)
    lines = str(info.value).splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{path}:4:5: apps.web.port: ")
    assert lines[1] == f"{path}:5:3: apps.api.port: missing required key `port`"


def test_value_from_defaults_is_located_at_the_defaults_line(tmp_path: Path) -> None:
    found = problems(tmp_path, """
        defaults:
          graceful_timeout: 5
          reload_delay: 99
        apps:
          web: {app: web:app, port: 5000}
          api: {app: api:app, port: 5001}
    """)
    p = only(found)  # one place in the file, one problem
    assert (p.line, p.col) == (3, 3)
    assert p.path.endswith("reload_delay")
    assert "99" in p.message


def test_nested_value_from_defaults_is_located_at_the_defaults_line(tmp_path: Path) -> None:
    p = only(problems(tmp_path, """
        defaults:
          debug:
            enabled: maybe
        apps:
          web:
            app: web:app
            port: 5000
            debug: {evalex: true}
    """))
    assert (p.line, p.col) == (3, 5)
    assert p.path.endswith("debug.enabled")
    assert "'maybe'" in p.message


def test_value_overridden_by_the_app_is_located_at_the_app(tmp_path: Path) -> None:
    p = only(problems(tmp_path, """
        defaults:
          reload_delay: 0.1
        apps:
          web:
            app: web:app
            port: 5000
            reload_delay: 99
    """))
    assert where(p) == (7, 5, "apps.web.reload_delay")


def test_debug_on_a_remote_host_is_an_error(tmp_path: Path) -> None:
    p = only(problems(tmp_path, """
        apps:
          web:
            app: web:app
            port: 5000
            host: 0.0.0.0
            debug:
              enabled: true
    """))
    assert where(p) == (5, 5, "apps.web.host")
    assert "'0.0.0.0'" in p.message
    assert "allow_remote" in p.message


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::", "", "example.com"])
def test_debug_needs_allow_remote_off_loopback(tmp_path: Path, host: str) -> None:
    p = only(problems(tmp_path, f"""
        apps:
          web: {{app: web:app, port: 5000, host: "{host}", debug: {{enabled: true}}}}
    """))
    assert p.path == "apps.web.host"
    assert "allow_remote" in p.message


def test_debug_enabled_from_defaults_on_a_remote_host(tmp_path: Path) -> None:
    p = only(problems(tmp_path, """
        defaults:
          debug: {enabled: true}
        apps:
          web: {app: web:app, port: 5000, host: 0.0.0.0}
    """))
    assert p.path == "apps.web.host"
    assert p.line == 4


def test_debug_pin_cannot_be_turned_off_remotely_even_with_allow_remote(tmp_path: Path) -> None:
    p = only(problems(tmp_path, """
        apps:
          web:
            app: web:app
            port: 5000
            host: 0.0.0.0
            debug:
              enabled: true
              allow_remote: true
              pin: false
    """))
    assert where(p) == (9, 7, "apps.web.debug.pin")
    assert "PIN" in p.message


def test_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    previous = "a"
    for name in "bcdefghij":  # 10 ** 10 strings once expanded
        lines.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 10)}]")
        previous = name
    path = tmp_path / "devrun.yaml"
    path.write_text("\n".join(lines) + "\n")
    start = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        config.load_config(path)
    elapsed = time.perf_counter() - start
    p = only(info.value.problems)
    assert "alias" in p.message
    assert str(yamlsource.MAX_NODES) in p.message
    assert elapsed < 5.0


def test_aliases_below_the_limit_are_fine(tmp_path: Path) -> None:
    cfg = load(tmp_path, """
        defaults:
          watch: &globs ["**/*.py", "*.html"]
        apps:
          web: {app: web:app, port: 5000, ignore: *globs}
    """)
    assert cfg.apps["web"].config.ignore == ["**/*.py", "*.html"]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        config.load_config(tmp_path / "devrun.yaml")
    p = only(info.value.problems)
    assert (p.line, p.col) == (1, 1)
    assert "cannot read" in p.message


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "devrun.yaml"
    path.write_bytes(b"apps:\n  web: {app: \xff\xfe, port: 5000}\n")
    with pytest.raises(ConfigError) as info:
        config.load_config(path)
    assert "UTF-8" in only(info.value.problems).message


# -- yamlsource on its own ---------------------------------------------------------------


def test_positions_of_keys_and_list_items() -> None:
    doc = yamlsource.parse("apps:\n  web:\n    watch:\n      - a\n      - b\n", "f.yaml")
    assert doc.data == {"apps": {"web": {"watch": ["a", "b"]}}}
    assert doc.positions[("apps",)] == (1, 1)
    assert doc.positions[("apps", "web")] == (2, 3)
    assert doc.positions[("apps", "web", "watch")] == (3, 5)
    assert doc.positions[("apps", "web", "watch", 1)] == (5, 9)
    assert doc.locate(("apps", "web", "nope", "deeper")) == (2, 3)
    assert doc.locate(("elsewhere",)) == (1, 1)


def test_format_path_and_problem_str() -> None:
    assert yamlsource.format_path(("apps", "web", "watch", 2)) == "apps.web.watch[2]"
    assert yamlsource.format_path(()) == ""
    assert str(Problem("f.yaml", 3, 7, "apps.web", "bad")) == "f.yaml:3:7: apps.web: bad"
    assert str(Problem("f.yaml", 1, 1, "", "empty")) == "f.yaml:1:1: empty"
    assert str(Problem("f.yaml", 2, 1, "", "x", "    ab\n    ^")) == "f.yaml:2:1: x\n    ab\n    ^"


def test_excerpt_marks_the_column() -> None:
    assert yamlsource.excerpt("a\n\tbc\n", 2, 3) == "     bc\n      ^"
    assert yamlsource.excerpt("a\n", 5, 1) == ""


# -- package bugs (left failing on purpose) ----------------------------------------------


@pytest.mark.parametrize("text", ["a: &x [*x]\n", "apps: &x {web: *x}\n"])
def test_regression_recursive_alias_crashes_with_recursion_error(tmp_path: Path, text: str) -> None:
    """Regression (was a bug, devrun/yamlsource.py:101 -> _walk at :149/:154): PyYAML composes a self-referencing
    anchor into a cyclic node graph; _walk follows it without cycle detection and hits Python's
    recursion limit (~1000 levels) long before MAX_NODES, so load_config raises RecursionError
    instead of a located ConfigError."""
    path = tmp_path / "devrun.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError):
        config.load_config(path)


def test_regression_deeply_nested_document_crashes_with_recursion_error(tmp_path: Path) -> None:
    """Regression (was a bug, devrun/yamlsource.py:96): PyYAML's composer is recursive; 3000 nested `[` raise
    RecursionError, which parse() does not catch (it only catches yaml errors)."""
    path = tmp_path / "devrun.yaml"
    path.write_text("apps:\n  web: " + "[" * 3000 + "]" * 3000 + "\n")
    with pytest.raises(ConfigError):
        config.load_config(path)


def test_regression_unhashable_literal_in_factory_call_crashes_config_loading(tmp_path: Path) -> None:
    """Regression (was a bug, devrun/importspec.py:60-66, surfacing in config.AppConfig._import_string): the
    TypeError from ast.literal_eval("{[]: 1}") is not an ImportSpecError, escapes the pydantic
    validator, and load_config raises TypeError instead of ConfigError."""
    path = write(tmp_path, """
        apps:
          web:
            app: "pkg:create_app({[]: 1})"
            port: 5000
    """)
    with pytest.raises(ConfigError):
        config.load_config(path)


def test_regression_env_value_of_wrong_type_is_reported_four_times_with_union_tags(tmp_path: Path) -> None:
    """Regression (was a bug, config/build.py _problems: loc is taken from pydantic as is): a non-scalar env value
    fails each member of `str | int | float | bool`, giving four problems at the same place whose
    paths end in pydantic's union tags: apps.web.env.X.str / .int / .float / .bool."""
    found = problems(tmp_path, """
        apps:
          web:
            app: web:app
            port: 5000
            env: {X: [1, 2]}
    """)
    assert [p.path for p in found] == ["apps.web.env.X"]


def test_live_reload_follows_debug_unless_set(tmp_path: Path) -> None:
    cfg = load(tmp_path, """
        defaults:
          debug: {enabled: true}
        apps:
          a: {app: web:app, port: 5000}
          b: {app: web:app, port: 5001, live_reload: {enabled: false}}
          c: {app: web:app, port: 5002, debug: {enabled: false}}
          d: {app: web:app, port: 5003, debug: {enabled: false}, live_reload: {enabled: true}}
    """)
    assert [cfg.apps[n].config.live for n in "abcd"] == [True, False, False, True]
    assert cfg.apps["a"].config.live_reload.watch == ["**/templates/**", "**/static/**", "**/*.tpl", "**/*.jinja2",
                                                      "**/*.pt"]


def test_live_reload_watch_globs_are_checked_per_item(tmp_path: Path) -> None:
    p = only(problems(tmp_path, """
        apps:
          web: {app: web:app, port: 5000, live_reload: {watch: ["**/*.html", "[oops"]}}
    """))
    assert p.path == "apps.web.live_reload.watch[1]"


def test_live_reload_needs_allow_remote_off_loopback(tmp_path: Path) -> None:
    p = only(problems(tmp_path, """
        apps:
          web: {app: web:app, port: 5000, host: 0.0.0.0, live_reload: {enabled: true}}
    """))
    assert p.path == "apps.web.host"
    assert "live_reload.allow_remote" in p.message and "live_reload.enabled: false" in p.message
    cfg = load(tmp_path, """
        apps:
          web: {app: web:app, port: 5000, host: 0.0.0.0, live_reload: {enabled: true, allow_remote: true}}
          api: {app: web:app, port: 5001, host: 0.0.0.0, debug: {enabled: true, allow_remote: true}}
    """)
    assert cfg.apps["web"].config.live and cfg.apps["api"].config.live


def test_a_misspelt_live_reload_key_suggests_the_right_one(tmp_path: Path) -> None:
    p = only(problems(tmp_path, """
        apps:
          web: {app: web:app, port: 5000, live_reload: {enable: true}}
    """))
    assert "enabled" in p.message


# -- YAML 1.2 numbers (F9) and app names (F10) ---------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("12:30", "12:30"),  # YAML 1.1: 750 (base 60)
        ("01234", "01234"),  # YAML 1.1: 668 (octal)
        ("010", "010"),
        ("0x1F", "0x1F"),  # YAML 1.1: 31
        ("0o17", "0o17"),
        ("1_000", "1_000"),  # YAML 1.1: 1000
        ("2024-01-01", "2024-01-01"),  # YAML 1.1: a date, which is no string at all
        ("1.50", "1.50"),  # a number, but the variable keeps the text written
        ("1e3", "1e3"),
        (".inf", ".inf"),
        ("-7", "-7"),
        ("+7", "+7"),
        ("yes", "yes"),
    ],
)
def test_env_values_keep_the_text_written(tmp_path: Path, value: str, expected: str) -> None:
    cfg = load(tmp_path, f"""
        defaults:
          env: {{FROM_DEFAULTS: {value}}}
        apps:
          web:
            app: web:app
            port: 5000
            env:
              VALUE: {value}
    """)
    assert cfg.apps["web"].environment() == {"FROM_DEFAULTS": expected, "VALUE": expected}


def test_yaml_numbers_are_yaml_1_2_core() -> None:
    doc = yamlsource.parse(
        "a: [010, 12:30, 0x1F, 01234, 1_000, 2024-01-01, 0o17, 00.5, 0, -0, +7, 42, -3, 1.5, 1., .5, 1e3, 2E-2,"
        " .inf, -.inf, .nan, true, yes, null]\n", "f.yaml")
    values = doc.data["a"]
    assert values[:8] == ["010", "12:30", "0x1F", "01234", "1_000", "2024-01-01", "0o17", "00.5"]
    assert values[8:13] == [0, 0, 7, 42, -3] and all(type(v) is int for v in values[8:13])
    assert values[13:18] == [1.5, 1.0, 0.5, 1000.0, 0.02] and all(type(v) is float for v in values[13:18])
    assert values[18] == float("inf") and values[19] == float("-inf") and values[20] != values[20]
    assert values[21:] == [True, "yes", None]


@pytest.mark.parametrize(("value", "fragment"), [
    ("010", "'010' has a leading zero"),
    ("0080", "(`80`)"),
    ("12:30", "valid integer"),
    ("0x1F", "valid integer"),
    ("true", "expected a number, found true"),
    ("'08080'", "leading zero"),
])
def test_a_port_yaml_1_1_would_misread_is_a_located_error(tmp_path: Path, value: str, fragment: str) -> None:
    p = only(problems(tmp_path, f"""
        apps:
          web:
            app: web:app
            port: {value}
    """))
    assert where(p) == (4, 5, "apps.web.port")
    assert fragment in p.message


@pytest.mark.parametrize(("key", "value", "fragment"), [
    ("graceful_timeout", ".inf", "finite number"),
    ("reload_delay", ".nan", "finite number"),
    ("reload_delay", "true", "expected a number, found true"),
    ("reload_delay", "012", "leading zero"),
])
def test_delays_that_are_not_plain_numbers_are_located_errors(tmp_path: Path, key: str, value: str,
                                                              fragment: str) -> None:
    p = only(problems(tmp_path, f"""
        apps:
          web:
            app: web:app
            port: 5000
            {key}: {value}
    """))
    assert where(p) == (5, 5, f"apps.web.{key}")
    assert fragment in p.message


def test_plain_numbers_still_work(tmp_path: Path) -> None:
    cfg = load(tmp_path, """
        apps:
          web:
            app: web:app
            port: 5000
            reload_delay: 0.5
            graceful_timeout: 2
            backoff: {initial: 1e-1, max: 3}
    """).apps["web"].config
    assert (cfg.port, cfg.reload_delay, cfg.graceful_timeout, cfg.backoff.initial, cfg.backoff.max) == \
        (5000, 0.5, 2.0, 0.1, 3.0)


@pytest.mark.parametrize("name", ["'../../x'", "a/b", '"a\\0b"', "x" * 300, "'.hidden'", "a..b", "my app", "'-v'"])
def test_an_app_name_that_cannot_be_a_file_name_is_a_located_error(tmp_path: Path, name: str) -> None:
    found = problems(tmp_path, f"""
        apps:
          ok:
            app: web:app
            port: 5000
          {name}:
            app: web:app
            port: 5001
    """)
    p = only(found)
    assert (p.line, p.col, p.path) == (5, 3, "apps")
    assert "letters, digits" in p.message and "\0" not in str(p) and len(p.message) < 250


def test_a_number_as_app_name_says_to_quote_it(tmp_path: Path) -> None:
    p = only(problems(tmp_path, """
        apps:
          123:
            app: web:app
            port: 5000
    """))
    assert (p.line, p.col) == (2, 3) and "quote it" in p.message
    assert list(load(tmp_path, "apps:\n  '123': {app: web:app, port: 5000}\n").apps) == ["123"]
