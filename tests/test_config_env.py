"""env_file, ${VAR} interpolation and glob validation in devrun.yaml."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from devrun.config import Config, build_config
from devrun.config.environment import InterpolationError, interpolate
from devrun.config.yamlsource import ConfigError, parse


def load(tmp: Path, text: str, environ: dict[str, str] | None = None) -> Config:
    file = tmp / "devrun.yaml"
    file.write_text(textwrap.dedent(text))
    return build_config(parse(file.read_text(), str(file)), tmp, environ or {})


def problems(tmp: Path, text: str, environ: dict[str, str] | None = None) -> list:
    with pytest.raises(ConfigError) as info:
        load(tmp, text, environ)
    return info.value.problems


@pytest.mark.parametrize(("text", "expected"), [
    ("${A}", "1"), ("x-${A}-y", "x-1-y"), ("${MISSING:-fallback}", "fallback"), ("${A:-fallback}", "1"),
    ("${MISSING:-}", ""), ("$$", "$"), ("$${A}", "${A}"), ("plain $A", "plain $A"), ("${A}${B}", "12"),
])
def test_interpolate(text: str, expected: str) -> None:
    assert interpolate(text, {"A": "1", "B": "2"}) == expected


@pytest.mark.parametrize(("text", "fragment"), [
    ("${MISSING}", "`MISSING` is not set"), ("${", "unclosed"), ("${1BAD}", "not a variable reference"),
    ("${A B}", "not a variable reference"),
])
def test_interpolate_errors(text: str, fragment: str) -> None:
    with pytest.raises(InterpolationError, match=fragment):
        interpolate(text, {})


def test_variables_come_from_the_environment_and_the_env_file(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("PORT=5055\nexport SECRET='s3 cr3t'\n# comment\nEMPTY=\n")
    cfg = load(tmp_path, """
        defaults:
          env_file: .env
        apps:
          web:
            app: "${MODULE:-hello}:app"
            port: "${PORT}"
            env: {GREETING: "hi ${USER_NAME}", PORT: "${PORT}"}
    """, {"USER_NAME": "ann"})
    web = cfg.apps["web"]
    assert web.config.app == "hello:app"
    assert web.config.port == 5055
    # The app gets the env file's variables, and `env:` on top of them.
    assert web.environment() == {"PORT": "5055", "SECRET": "s3 cr3t", "EMPTY": "", "GREETING": "hi ann"}


def test_env_wins_over_env_file(tmp_path: Path) -> None:
    (tmp_path / "dev.env").write_text("MODE=file\n")
    cfg = load(tmp_path, """
        apps:
          web: {app: "m:app", port: 5000, env_file: dev.env, env: {MODE: yaml}}
    """)
    assert cfg.apps["web"].environment()["MODE"] == "yaml"


def test_missing_env_file_is_an_error_unless_optional(tmp_path: Path) -> None:
    [p] = problems(tmp_path, """
        apps:
          web:
            app: "m:app"
            port: 5000
            env_file: .env.local
    """)
    assert (p.line, p.path) == (6, "apps.web.env_file")
    assert ".env.local" in p.message and "optional: true" in p.message
    cfg = load(tmp_path, """
        apps:
          web: {app: "m:app", port: 5000, env_file: {path: .env.local, optional: true}}
    """)
    assert cfg.apps["web"].environment() == {}


def test_undefined_variable_is_one_located_error(tmp_path: Path) -> None:
    [p] = problems(tmp_path, """
        apps:
          web:
            app: "m:app"
            port: "${NO_SUCH_PORT}"
    """)
    assert (p.line, p.col, p.path) == (5, 5, "apps.web.port")
    assert "NO_SUCH_PORT" in p.message and "${NO_SUCH_PORT:-value}" in p.message


def test_undefined_variable_in_defaults_is_reported_at_the_defaults_line(tmp_path: Path) -> None:
    found = problems(tmp_path, """
        defaults:
          host: "${HOST_VAR}"
        apps:
          a: {app: "m:app", port: 5000}
          b: {app: "m:app", port: 5001}
    """)
    assert [(p.line, p.path) for p in found] == [(3, "defaults.host")]


@pytest.mark.parametrize(("pattern", "fragment"), [
    ("src/[abc.py", "unclosed `[`"), ("", "empty pattern"), ("!", "not a valid"),
])
def test_invalid_globs(tmp_path: Path, pattern: str, fragment: str) -> None:
    [p] = problems(tmp_path, f"""
        apps:
          web:
            app: "m:app"
            port: 5000
            watch: ["**/*.py", "{pattern}"]
    """)
    assert p.path.startswith("apps.web.watch") and p.line == 6
    assert fragment in p.message


def test_respect_gitignore_defaults_to_true(tmp_path: Path) -> None:
    cfg = load(tmp_path, """
        apps:
          a: {app: "m:app", port: 5000}
          b: {app: "m:app", port: 5001, respect_gitignore: false}
    """)
    assert cfg.apps["a"].config.respect_gitignore is True
    assert cfg.apps["b"].config.respect_gitignore is False


def test_yaml_12_booleans_keep_norway(tmp_path: Path) -> None:
    cfg = load(tmp_path, """
        apps:
          web: {app: "m:app", port: 5000, env: {NO: "x", ANSWER: yes, FLAG: true}}
    """)
    assert cfg.apps["web"].config.env == {"NO": "x", "ANSWER": "yes", "FLAG": "true"}


def test_a_broken_env_file_line_is_reported_at_its_file_and_line(tmp_path: Path) -> None:
    # python-dotenv alone skips such a line with a log record: the app would start without it.
    (tmp_path / ".env").write_text("GOOD=1\nBROKEN=\"never closed\nLATER=2\n")
    found = problems(tmp_path, """
        apps:
          web: {app: "hello:app", port: 5055, env_file: .env}
    """)
    assert len(found) == 1
    assert (found[0].file, found[0].line, found[0].path) == (str(tmp_path / ".env"), 2, "apps.web.env_file")
    assert "BROKEN=\"never closed" in found[0].message and "close every quote" in found[0].message


def test_the_env_file_path_is_kept_even_when_an_optional_file_is_missing(tmp_path: Path) -> None:
    cfg = load(tmp_path, """
        apps:
          web: {app: "hello:app", port: 5055, env_file: {path: .env.local, optional: true}}
    """)
    assert cfg.apps["web"].env_path == tmp_path / ".env.local"  # watched, so creating it counts
    assert cfg.apps["web"].file_env == {}
