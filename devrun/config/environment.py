"""An app's environment: ``.env`` files (python-dotenv) and ``${VAR}`` / ``${VAR:-default}``
interpolation in devrun.yaml string values.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Mapping
from pathlib import Path

from dotenv import dotenv_values
from dotenv.parser import parse_stream

from devrun.config.yamlsource import KeyPath, YamlData

_REF = re.compile(r"\$\$|\$\{([^}]*)\}|\$\{")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*$")


class InterpolationError(ValueError):
    pass


class EnvFileError(ValueError):
    """A line of a dotenv file that python-dotenv cannot parse (it would skip it, with a log line
    nobody reads, and the app would start without the variable)."""

    def __init__(self, line: int, text: str):
        self.line = line
        self.text = text
        super().__init__(f"cannot read {text!r} as `NAME=value`; fix it (quote a value with spaces or "
                         "`#`, close every quote) or remove it")


def interpolate(text: str, variables: Mapping[str, str]) -> str:
    """Replace ``${VAR}`` and ``${VAR:-default}``; ``$$`` is a literal ``$``."""

    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "$$":
            return "$"
        inner = match.group(1)
        if inner is None:
            raise InterpolationError("unclosed `${`; write `${NAME}`, or `$$` for a literal `$`")
        name, sep, default = inner.partition(":-")
        if not _NAME.match(name):
            raise InterpolationError(f"`${{{inner}}}` is not a variable reference like `${{NAME}}`")
        if name in variables:
            return variables[name]
        if sep:
            return default
        raise InterpolationError(
            f"environment variable `{name}` is not set; set it, add it to the env file, "
            f"or give a default: `${{{name}:-value}}`"
        )

    return _REF.sub(replace, text)


def interpolate_tree(data: YamlData, variables: Mapping[str, str], on_error: Callable[[KeyPath, str], None],
                     path: KeyPath = ()) -> YamlData:
    """Interpolate every string in nested dicts and lists; report errors with their key path."""
    if isinstance(data, str):
        try:
            return interpolate(data, variables)
        except InterpolationError as exc:
            on_error(path, str(exc))
            return data
    if isinstance(data, dict):
        return {k: interpolate_tree(v, variables, on_error, (*path, k)) for k, v in data.items()}
    if isinstance(data, list):
        return [interpolate_tree(v, variables, on_error, (*path, i)) for i, v in enumerate(data)]
    return data


def read_env_file(path: Path) -> dict[str, str]:
    """Values of a dotenv file; a key without a value (``KEY`` alone) is left out. A line that
    python-dotenv cannot parse raises EnvFileError (its own parser says which)."""
    text = path.read_text(encoding="utf-8")
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            raise EnvFileError(binding.original.line, binding.original.string.strip())
    return {k: v for k, v in dotenv_values(stream=io.StringIO(text)).items() if v is not None}
