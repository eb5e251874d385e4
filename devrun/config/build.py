"""Loading devrun.yaml: ``defaults:`` merging, env files, checks across apps, and located error
messages (with did-you-mean for unknown keys)."""

from __future__ import annotations

import difflib
import ipaddress
import os
from pathlib import Path

from pydantic import BaseModel, ValidationError
from pydantic.json_schema import JsonSchemaValue

from devrun import statefiles
from devrun.config import yamlsource
from devrun.config.environment import EnvFileError, InterpolationError, interpolate, interpolate_tree, read_env_file
from devrun.config.model import (
    App,
    AppConfig,
    BackoffConfig,
    Config,
    DebugConfig,
    DefaultsConfig,
    EnvFileConfig,
    FileModel,
    LiveReloadConfig,
)
from devrun.config.yamlsource import ConfigError, Document, KeyPath, Problem, YamlData

CONFIG_NAME = "devrun.yaml"


def json_schema() -> JsonSchemaValue:
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


def deep_merge(base: dict[str, YamlData], over: dict[str, YamlData]) -> dict[str, YamlData]:
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


def _literal_env(doc: Document, at: KeyPath, section: dict[str, YamlData]) -> dict[str, YamlData]:
    """section with each number in its `env:` replaced by the text written (`1.50`, `1e3`):
    an environment variable is text, and YAML's reading of it is not what the user typed."""
    env = section.get("env")
    if not isinstance(env, dict):
        return section
    text = {key: doc.literals.get((*at, "env", key), value)
            if isinstance(value, int | float) and not isinstance(value, bool) else value
            for key, value in env.items()}
    return {**section, "env": text}


def _read_env_file(doc: Document, path: KeyPath, merged: dict[str, YamlData], base: Path,
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
        sections: dict[str, type[BaseModel]] = {"debug": DebugConfig, "env_file": EnvFileConfig,
                                                "backoff": BackoffConfig, "live_reload": LiveReloadConfig}
        return sections.get(str(app_loc[0]))
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


def _found(data: YamlData, path: KeyPath) -> str | None:
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
