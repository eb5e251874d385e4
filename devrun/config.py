"""The devrun.yaml model: pydantic models (unknown keys forbidden), ``defaults:`` merging,
checks across apps, and located error messages.
"""

from __future__ import annotations

import difflib
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from devrun import yamlsource
from devrun.importspec import ImportSpecError, parse_import_string
from devrun.yamlsource import ConfigError, Document, KeyPath, Problem

CONFIG_NAME = "devrun.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DebugConfig(_Strict):
    enabled: bool = Field(False, description="Wrap the app in Werkzeug's debugger and turn on template auto-reload.")
    evalex: bool = Field(True, description="Allow the interactive console in the traceback page.")
    pin: bool = Field(True, description="Protect the console with a PIN (false is allowed on loopback only).")
    allow_remote: bool = Field(
        False, description="Allow the debugger on a host other than loopback. Dangerous: it executes code."
    )


class AppConfig(_Strict):
    app: str = Field(description="Import string: 'module:attr' or a factory call 'module:create_app()'.")
    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(ge=1, le=65535, description="Port to listen on.")
    cwd: str = Field(".", description="Working folder of the app, relative to devrun.yaml.")
    env: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="Extra environment variables for the app."
    )
    watch: list[str] = Field(
        default_factory=lambda: ["**/*.py"],
        description="Gitignore-style globs, relative to cwd, whose changes restart the app.",
    )
    ignore: list[str] = Field(
        default_factory=list, description="Gitignore-style globs to ignore, on top of the built-in ones."
    )
    reload_delay: float = Field(
        0.03, ge=0, le=10, description="Quiet period in seconds that coalesces a burst of changes."
    )
    graceful_timeout: float = Field(
        5.0, ge=0, le=300, description="Seconds a stopping app may take to finish its requests."
    )
    debug: DebugConfig = Field(default_factory=DebugConfig)

    @field_validator("app")
    @classmethod
    def _import_string(cls, value: str) -> str:
        try:
            parse_import_string(value)
        except ImportSpecError as exc:
            raise ValueError(str(exc)) from None
        return value

    def environment(self) -> dict[str, str]:
        def text(v: object) -> str:
            return str(v).lower() if isinstance(v, bool) else str(v)

        return {k: text(v) for k, v in self.env.items()}


class FileModel(_Strict):
    """The whole devrun.yaml."""

    apps: dict[str, AppConfig] = Field(description="The apps to run, by name.")
    defaults: dict[str, Any] = Field(
        default_factory=dict, description="Any app key; applies to every app, the app's own value wins."
    )


@dataclass(frozen=True)
class App:
    """One app of a loaded config, with its paths resolved."""

    name: str
    config: AppConfig
    root: Path  # absolute working folder

    @property
    def url(self) -> str:
        host = self.config.host
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        if ":" in shown:
            shown = f"[{shown}]"
        return f"http://{shown}:{self.config.port}/"


@dataclass(frozen=True)
class Config:
    file: Path
    apps: dict[str, App]


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


def build_config(doc: Document, base: Path) -> Config:
    data = doc.data
    if not isinstance(data, dict):
        raise ConfigError([doc.problem((), f"expected a mapping with an `apps:` key, found {_kind(data)}")])
    problems: list[Problem] = []
    defaults = data.get("defaults", {})
    if defaults is None:
        defaults = {}
    raw_apps = data.get("apps")
    merged_apps: Any = raw_apps
    if isinstance(raw_apps, dict) and isinstance(defaults, dict):
        merged_apps = {
            name: deep_merge(defaults, spec) if isinstance(spec, dict) else spec
            for name, spec in raw_apps.items()
        }
    if isinstance(defaults, dict):
        for key in defaults:
            if key not in AppConfig.model_fields:
                problems.append(doc.problem(("defaults", key), _unknown_key(key, AppConfig)))
    try:
        model = FileModel.model_validate({**data, "apps": merged_apps})
    except ValidationError as exc:
        problems.extend(_problems(doc, exc))
        raise ConfigError(_dedupe(problems)) from None
    if problems:
        raise ConfigError(problems)
    if not model.apps:
        raise ConfigError([doc.problem(("apps",), "no apps defined; add one under `apps:`")])

    apps: dict[str, App] = {}
    bound: dict[tuple[str, int], str] = {}
    for name, cfg in model.apps.items():
        root = (base / cfg.cwd).resolve()
        if not root.is_dir():
            problems.append(doc.problem(("apps", name, "cwd"), f"folder {str(root)!r} does not exist"))
        address = (cfg.host, cfg.port)
        if address in bound:
            problems.append(doc.problem(("apps", name, "port"),
                                        f"{cfg.host}:{cfg.port} is already used by app `{bound[address]}`; "
                                        "choose another port"))
        bound[address] = name
        if cfg.debug.enabled and not is_loopback(cfg.host) and not cfg.debug.allow_remote:
            problems.append(doc.problem(("apps", name, "host"),
                                        f"debug mode on {cfg.host!r} would let anyone who reaches it run "
                                        "code; use host 127.0.0.1, or set `debug.allow_remote: true` "
                                        "if you really mean it"))
        if cfg.debug.enabled and not cfg.debug.pin and not is_loopback(cfg.host):
            problems.append(doc.problem(("apps", name, "debug", "pin"),
                                        "the debugger PIN cannot be turned off off loopback"))
        apps[name] = App(name, cfg, root)
    if problems:
        raise ConfigError(problems)
    return Config(Path(doc.file).resolve(), apps)


def _kind(value: object) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", type(None): "nothing"}.get(
        type(value), type(value).__name__
    )


def _model_at(loc: KeyPath) -> type[BaseModel] | None:
    """The model that owns the last key of loc (for did-you-mean suggestions)."""
    if len(loc) <= 1:
        return FileModel
    if loc[0] == "apps" and len(loc) == 3:
        return AppConfig
    if loc[0] == "apps" and len(loc) == 4 and loc[2] == "debug":
        return DebugConfig
    return None


def _unknown_key(key: object, model: type[BaseModel] | None) -> str:
    msg = f"unknown key `{key}`"
    if model is not None:
        close = difflib.get_close_matches(str(key), list(model.model_fields), n=1, cutoff=0.6)
        if close:
            return f"{msg}; did you mean `{close[0]}`?"
        return f"{msg}; expected one of: {', '.join(model.model_fields)}"
    return msg


def _problems(doc: Document, exc: ValidationError) -> list[Problem]:
    out = []
    for err in exc.errors(include_url=False, include_input=False):
        loc: KeyPath = tuple(err["loc"])
        where = loc
        # A value that came from `defaults:` is reported where it is written.
        if loc[:1] == ("apps",) and len(loc) > 2 and loc not in doc.positions:
            from_defaults = ("defaults", *loc[2:])
            if from_defaults in doc.positions:
                where = from_defaults
        if err["type"] == "extra_forbidden":
            message = _unknown_key(loc[-1], _model_at(loc))
        elif err["type"] == "missing":
            where, message = loc[:-1], f"missing required key `{loc[-1]}`"
        else:
            message = err["msg"]
            found = _found(doc.data, where)
            if found is not None:
                message += f" (found {found})"
        line, col = doc.locate(where)
        out.append(Problem(doc.file, line, col, yamlsource.format_path(loc), message))
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
