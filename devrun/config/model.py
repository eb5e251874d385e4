"""The devrun.yaml model: pydantic models (unknown keys forbidden), with the descriptions the
JSON Schema and the docs show, and the loaded result (App, Config)."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import pathspec
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    create_model,
    field_validator,
)

from devrun import statefiles
from devrun.importspec import ImportSpecError, parse_import_string


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DebugConfig(_Strict):
    enabled: bool = Field(False, description="Wrap the app in Werkzeug's debugger and turn on the framework's own "
                          "switch that lets exceptions reach it (docs/frameworks.md).")
    evalex: bool = Field(True, description="Allow the interactive console in the traceback page.")
    pin: bool = Field(True, description="Protect the console with a PIN (false is allowed on loopback only).")
    allow_remote: bool = Field(
        False, description="Allow the debugger on a host other than loopback. Dangerous: it executes code."
    )


class LiveReloadConfig(_Strict):
    enabled: bool | None = Field(
        None, description="Refresh open browser pages once new code is ready; default: the app's debug.enabled."
    )
    watch: list[Glob] = Field(
        default_factory=lambda: ["**/templates/**", "**/static/**", "**/*.tpl", "**/*.jinja2", "**/*.pt"],
        description="Gitignore-style globs, relative to cwd, of templates and static files: an edit takes "
        "effect without a restart where the framework allows it (else the app restarts), and open pages "
        "refresh (a *.css change swaps stylesheets in place).",
    )
    allow_remote: bool = Field(
        False, description="Allow live reload on a host other than loopback (also allowed by debug.allow_remote)."
    )


class BackoffConfig(_Strict):
    initial: Seconds = Field(0.5, gt=0, le=60, description="Seconds before the first restart of a crashed app.")
    max: Seconds = Field(10.0, gt=0, le=600, description="The longest wait between restarts of a crash loop.")


class EnvFileConfig(_Strict):
    path: str = Field(description="A dotenv file, relative to devrun.yaml.")
    optional: bool = Field(False, description="If true, a missing file is not an error.")


def glob_problem(pattern: str) -> str | None:
    """Why a watch/ignore pattern is unusable, or None."""
    if not pattern.strip():
        return "empty pattern"
    depth = 0
    for ch in pattern:
        if ch == "[":
            depth += 1
        elif ch == "]" and depth:
            depth -= 1
    if depth:
        return f"{pattern!r} has an unclosed `[`; escape it as `\\[` to match a literal bracket"
    try:
        pathspec.GitIgnoreSpec.from_lines([pattern])
    except Exception as exc:  # pathspec raises its own error types per version
        return f"{pattern!r} is not a valid gitignore-style pattern ({exc})"
    return None


def _env_text(value: object) -> object:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return str(value)
    if value is None:
        return ""
    return value  # str passes; anything else fails as "should be a valid string"


_LEADING_ZERO = re.compile(r"[-+]?0[0-9_]+")


def _number(value: object) -> object:
    """Numbers only: not a boolean (pydantic would take true for 1), and not text with a leading
    zero, which YAML 1.1 tools read as octal (`port: 010` is 8 there, 10 elsewhere)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number, found {str(value).lower()}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"expected a finite number, found {value}")
    if isinstance(value, str) and _LEADING_ZERO.fullmatch(value.strip()):
        text = value.strip()
        decimal = text.replace("_", "").lstrip("+-").lstrip("0") or "0"
        raise ValueError(f"{text!r} has a leading zero, which older YAML reads as an octal number: "
                         f"write the number without it (`{decimal}`)")
    return value


Port = Annotated[int, BeforeValidator(_number)]
Seconds = Annotated[float, BeforeValidator(_number)]


def _check_glob(pattern: str) -> str:
    problem = glob_problem(pattern)
    if problem:
        raise ValueError(problem)
    return pattern


# Checked one by one, so an error names the item (`apps.web.watch[1]`) and its line.
Glob = Annotated[str, AfterValidator(_check_glob)]

# Environment values are text; numbers and booleans are written the way YAML shows them.
EnvValue = Annotated[str, BeforeValidator(_env_text),
                     WithJsonSchema({"type": ["string", "number", "boolean", "null"]})]


class AppConfig(_Strict):
    app: str = Field(description="Import string: 'module:attr' or a factory call 'module:create_app()'.")
    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: Port = Field(ge=1, le=65535, description="Port to listen on.")
    cwd: str = Field(".", description="Working folder of the app, relative to devrun.yaml.")
    env: dict[str, EnvValue] = Field(
        default_factory=dict, description="Extra environment variables for the app (they win over env_file)."
    )
    env_file: EnvFileConfig | str | None = Field(
        None, description="A dotenv file whose variables the app gets; a string or {path, optional}."
    )
    watch: list[Glob] = Field(
        default_factory=lambda: ["**/*.py"],
        description="Gitignore-style globs, relative to cwd, whose changes restart the app.",
    )
    ignore: list[Glob] = Field(
        default_factory=list, description="Gitignore-style globs to ignore, on top of the built-in ones."
    )
    respect_gitignore: bool = Field(True, description="Also ignore what the project's .gitignore files ignore.")
    watch_mode: Literal["auto", "events", "poll"] = Field(
        "auto",
        description="auto: poll the folders on file systems where inotify gets no events (9p, virtiofs, FUSE, "
        "NFS, SMB...), use file events elsewhere; events: always file events; poll: always poll.",
    )
    reload_delay: Seconds = Field(
        0.03, ge=0, le=10, description="Quiet period in seconds that coalesces a burst of changes."
    )
    graceful_timeout: Seconds = Field(
        5.0, ge=0, le=300, description="Seconds a stopping app may take to finish its requests."
    )
    reload: Literal["fork", "spawn"] = Field(
        "fork" if hasattr(os, "fork") else "spawn",
        description="fork: fork each generation from a server with the dependencies preloaded (fast); "
        "spawn: start a fresh interpreter each time.",
    )
    backoff: BackoffConfig = Field(
        default_factory=BackoffConfig, description="Restart delays of a crashing app: doubling from initial to max."
    )
    debug: DebugConfig = Field(default_factory=DebugConfig)
    live_reload: LiveReloadConfig = Field(default_factory=LiveReloadConfig)

    @property
    def live(self) -> bool:
        """Is live reload on (explicitly, or following debug mode)?"""
        enabled = self.live_reload.enabled
        return self.debug.enabled if enabled is None else enabled

    @field_validator("app")
    @classmethod
    def _import_string(cls, value: str) -> str:
        try:
            parse_import_string(value)
        except ImportSpecError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("env_file", mode="before")
    @classmethod
    def _env_file_shorthand(cls, value: object) -> object:
        return {"path": value} if isinstance(value, str) else value


# `defaults:` holds any app key, none required; built from AppConfig so the two never drift.
# mypy checks a **dict against every keyword create_model has (__config__, __doc__, ...), which no
# dict of field definitions can match; pydantic's mypy plugin types the resulting model.
DefaultsConfig = create_model(  # type: ignore[call-overload]
    "DefaultsConfig",
    __config__=ConfigDict(extra="forbid", frozen=True),
    __doc__="Any app key; applies to every app, the app's own value wins.",
    **{
        name: (field.annotation | None, Field(None, description=field.description))  # type: ignore[operator]
        for name, field in AppConfig.model_fields.items()
    },
)


class FileModel(_Strict):
    """The whole devrun.yaml."""

    apps: dict[str, AppConfig] = Field(
        description=f"The apps to run, by name ({statefiles.NAME_RULE}).",
        json_schema_extra={"propertyNames": {"pattern": statefiles.NAME_PATTERN}},
    )
    defaults: DefaultsConfig = Field(
        default_factory=DefaultsConfig, description="Any app key; applies to every app, the app's own value wins."
    )


@dataclass(frozen=True)
class App:
    """One app of a loaded config, with its paths resolved and its env file read."""

    name: str
    config: AppConfig
    root: Path  # absolute working folder
    file_env: dict[str, str] = field(default_factory=dict)  # from env_file
    env_path: Path | None = None  # the env file, resolved, whether it exists or not (it is watched)

    @property
    def url(self) -> str:
        host = self.config.host
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
        if ":" in shown:
            shown = f"[{shown}]"
        return f"http://{shown}:{self.config.port}/"

    def environment(self) -> dict[str, str]:
        """What the app's process gets on top of the runner's environment."""
        return {**self.file_env, **self.config.env}


@dataclass(frozen=True)
class Config:
    file: Path
    apps: dict[str, App]
