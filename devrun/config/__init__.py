"""The devrun.yaml model: pydantic models (unknown keys forbidden), ``defaults:`` merging,
checks across apps, and located error messages.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import pathspec
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    create_model,
    field_validator,
)

from devrun import statefiles
from devrun.config import yamlsource
from devrun.config.environment import EnvFileError, InterpolationError, interpolate, interpolate_tree, read_env_file
from devrun.config.yamlsource import ConfigError, Document, KeyPath, Problem
from devrun.importspec import ImportSpecError, parse_import_string

CONFIG_NAME = "devrun.yaml"


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
DefaultsConfig = create_model(
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
    defaults: DefaultsConfig = Field(  # type: ignore[valid-type]
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


def json_schema() -> dict[str, Any]:
    """The JSON Schema of devrun.yaml, from the models (shipped as docs/devrun.schema.json)."""
    schema = FileModel.model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "devrun.yaml",
        **{k: v for k, v in schema.items() if k != "title"},
    }


def find_config(start: Path | None = None) -> Path | None:
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / CONFIG_NAME
        if candidate.is_file():
            return candidate
    return None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Mappings merge key by key, the override wins; lists and scalars replace."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(path: Path) -> Config:
    doc = yamlsource.load(path)
    return build_config(doc, path.resolve().parent)


def build_config(doc: Document, base: Path, environ: dict[str, str] | None = None) -> Config:
    """Validate a parsed devrun.yaml; every problem found is reported at once."""
    environ = dict(os.environ if environ is None else environ)
    data = doc.data
    if not isinstance(data, dict):
        raise ConfigError([doc.problem((), f"expected a mapping with an `apps:` key, found {_kind(data)}")])
    problems: list[Problem] = []
    for key in data:
        if key not in FileModel.model_fields:
            problems.append(doc.problem((key,), _unknown_key(key, FileModel)))
    defaults = data.get("defaults")
    if defaults is None:
        defaults = {}
    try:
        DefaultsConfig.model_validate(defaults)
    except ValidationError as exc:
        problems.extend(_problems(doc, exc, ("defaults",)))
    defaults = _literal_env(doc, ("defaults",), defaults) if isinstance(defaults, dict) else {}
    raw_apps = data.get("apps")
    if raw_apps is None or raw_apps == {}:
        problems.append(doc.problem(("apps",), "no apps defined; add one under `apps:` "
                                    "(see `devrun init` or devrun.yaml.example)"))
        raise ConfigError(_dedupe(problems))
    if not isinstance(raw_apps, dict):
        problems.append(doc.problem(("apps",), f"expected a mapping of app names to apps, found {_kind(raw_apps)}"))
        raise ConfigError(_dedupe(problems))

    apps: dict[str, App] = {}
    for name, raw in raw_apps.items():
        path: KeyPath = ("apps", name)
        bad_name = statefiles.name_problem(name)
        if bad_name:
            # Not `apps.<name>`: that would print the name raw, control characters and all. Its
            # settings are checked once it has a name that can be printed and used in file names.
            line, col = doc.locate(("apps", str(name)))
            problems.append(Problem(doc.file, line, col, "apps", bad_name))
            continue
        if not isinstance(raw, dict):
            problems.append(doc.problem(path, f"expected a mapping with `app:` and `port:`, found {_kind(raw)}"))
            continue
        merged = deep_merge(defaults, _literal_env(doc, path, raw))
        env_path, file_env = _read_env_file(doc, path, merged, base, environ, problems)
        variables = {**environ, **file_env}
        unresolved: list[KeyPath] = []

        def bad_reference(sub: KeyPath, message: str, app_path: KeyPath = path,
                          unresolved: list[KeyPath] = unresolved) -> None:
            unresolved.append((*app_path, *sub))
            problems.append(_at(doc, (*app_path, *sub), message))

        merged = interpolate_tree(merged, variables, bad_reference)
        try:
            cfg = AppConfig.model_validate(merged)
        except ValidationError as exc:
            # A value whose ${VAR} failed is reported once, for the variable.
            skip = {yamlsource.format_path(_written_at(doc, u)) for u in unresolved}
            problems.extend(p for p in _problems(doc, exc, path) if p.path not in skip)
            continue
        apps[name] = App(name, cfg, (base / cfg.cwd).resolve(), file_env, env_path)
    problems.extend(_cross_checks(doc, apps))
    if problems:
        raise ConfigError(_dedupe(problems))
    return Config(Path(doc.file).resolve(), apps)


def _literal_env(doc: Document, at: KeyPath, section: dict[str, Any]) -> dict[str, Any]:
    """section with each number in its `env:` replaced by the text written (`1.50`, `1e3`):
    an environment variable is text, and YAML's reading of it is not what the user typed."""
    env = section.get("env")
    if not isinstance(env, dict):
        return section
    text = {key: doc.literals.get((*at, "env", key), value)
            if isinstance(value, int | float) and not isinstance(value, bool) else value
            for key, value in env.items()}
    return {**section, "env": text}


def _read_env_file(doc: Document, path: KeyPath, merged: dict[str, Any], base: Path,
                   environ: dict[str, str], problems: list[Problem]) -> tuple[Path | None, dict[str, str]]:
    raw = merged.get("env_file")
    if raw is None:
        return None, {}
    try:
        spec = EnvFileConfig.model_validate({"path": raw} if isinstance(raw, str) else raw)
        file = (base / interpolate(spec.path, environ)).absolute()
    except (ValidationError, InterpolationError):
        return None, {}  # reported with its location when the whole app is validated
    if not file.is_file():
        if not spec.optional:
            problems.append(_at(doc, (*path, "env_file"),
                                f"env file {str(file)!r} not found; create it, fix the path, or mark it "
                                "`optional: true` (env_file: {path: .env, optional: true})"))
        return file, {}
    try:
        return file, read_env_file(file)
    except EnvFileError as exc:  # at the line of the env file itself, as a config error is
        problems.append(Problem(str(file), exc.line, 1, yamlsource.format_path((*path, "env_file")), str(exc)))
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(_at(doc, (*path, "env_file"), f"cannot read env file {str(file)!r}: {exc}"))
    return file, {}


def _cross_checks(doc: Document, apps: dict[str, App]) -> list[Problem]:
    problems = []
    bound: list[tuple[str, int, str]] = []
    for name, app in apps.items():
        cfg = app.config
        if not app.root.is_dir():
            problems.append(_at(doc, ("apps", name, "cwd"), f"folder {str(app.root)!r} does not exist "
                                f"(cwd {cfg.cwd!r} is relative to {Path(doc.file).resolve().parent})"))
        clash = next((other for host, port, other in bound if port == cfg.port and _overlap(host, cfg.host)), None)
        if clash is not None:
            problems.append(_at(doc, ("apps", name, "port"),
                                f"{cfg.host}:{cfg.port} is already used by app `{clash}`; choose another port"))
        bound.append((cfg.host, cfg.port, name))
        if cfg.debug.enabled and not is_loopback(cfg.host) and not cfg.debug.allow_remote:
            problems.append(_at(doc, ("apps", name, "host"),
                                f"debug mode on {cfg.host!r} would let anyone who reaches it run code; "
                                "use host 127.0.0.1, or set `debug.allow_remote: true` if you mean it"))
        # With debug on, the debugger's own error above says it; its allow_remote covers both.
        if (cfg.live and not cfg.debug.enabled and not is_loopback(cfg.host)
                and not cfg.live_reload.allow_remote):
            problems.append(_at(doc, ("apps", name, "host"),
                                f"live reload on {cfg.host!r} would inject its script for anyone who reaches "
                                "the app; use host 127.0.0.1, set `live_reload.allow_remote: true` if you "
                                "mean it, or `live_reload.enabled: false`"))
        if cfg.debug.enabled and not cfg.debug.pin and not is_loopback(cfg.host):
            problems.append(_at(doc, ("apps", name, "debug", "pin"),
                                "the debugger PIN cannot be turned off on a non-loopback host"))
    return problems


WILDCARDS = frozenset({"", "0.0.0.0", "::"})


def _overlap(a: str, b: str) -> bool:
    """Would listening on both addresses (same port) collide? A wildcard takes every address."""
    def norm(host: str) -> str:
        return "127.0.0.1" if host == "localhost" else host

    return norm(a) == norm(b) or a in WILDCARDS or b in WILDCARDS


def _at(doc: Document, loc: KeyPath, message: str) -> Problem:
    """A problem at loc, named and located where the value is written (the app, or `defaults:`)."""
    written = _written_at(doc, loc)
    line, col = doc.locate(written)
    return Problem(doc.file, line, col, yamlsource.format_path(written), message)


def _written_at(doc: Document, loc: KeyPath) -> KeyPath:
    if loc[:1] == ("apps",) and len(loc) > 2 and loc not in doc.positions:
        from_defaults = ("defaults", *loc[2:])
        if from_defaults in doc.positions:
            return from_defaults
    return loc


def _kind(value: object) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", type(None): "nothing"}.get(
        type(value), type(value).__name__
    )


def _model_at(loc: KeyPath) -> type[BaseModel] | None:
    """The model that owns the last key of loc (for did-you-mean suggestions)."""
    app_loc = loc[2:] if loc[:1] == ("apps",) else loc[1:] if loc[:1] == ("defaults",) else None
    if len(loc) <= 1 or app_loc is None:
        return FileModel
    if len(app_loc) == 1:
        return AppConfig
    if len(app_loc) == 2:
        return {"debug": DebugConfig, "env_file": EnvFileConfig, "backoff": BackoffConfig,
                "live_reload": LiveReloadConfig}.get(str(app_loc[0]))
    return None


def _unknown_key(key: object, model: type[BaseModel] | None) -> str:
    msg = f"unknown key `{key}`"
    if model is not None:
        close = difflib.get_close_matches(str(key), list(model.model_fields), n=1, cutoff=0.6)
        if close:
            return f"{msg}; did you mean `{close[0]}`?"
        return f"{msg}; expected one of: {', '.join(model.model_fields)}"
    return msg


def _problems(doc: Document, exc: ValidationError, prefix: KeyPath) -> list[Problem]:
    out = []
    for err in exc.errors(include_url=False, include_input=False):
        loc: KeyPath = (*prefix, *err["loc"])
        if err["type"] == "extra_forbidden":
            message = _unknown_key(loc[-1], _model_at(loc))
            out.append(_at(doc, loc, message))
            continue
        if err["type"] == "missing":
            line, col = doc.locate(_written_at(doc, loc[:-1]))
            out.append(Problem(doc.file, line, col, yamlsource.format_path(loc),
                               f"missing required key `{loc[-1]}`"))
            continue
        message = err["msg"]
        if err["type"] == "value_error":
            message = message.removeprefix("Value error, ")
        found = _found(doc.data, _written_at(doc, loc))
        if found is not None and err["type"] != "value_error":
            message += f", found {found}"
        out.append(_at(doc, loc, message))
    return out


def _found(data: Any, path: KeyPath) -> str | None:
    for part in path:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    if isinstance(data, (dict, list)):
        return _kind(data)
    text = repr(data)
    return text if len(text) <= 60 else text[:57] + "..."


def _dedupe(problems: list[Problem]) -> list[Problem]:
    seen, out = set(), []
    for p in problems:
        key = (p.line, p.col, p.message)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return sorted(out, key=lambda p: (p.line, p.col))
