"""devrun.yaml: its model (config.model), loading and checking it (config.build), the YAML it is
read from (config.yamlsource), env files and ``${VAR}`` (config.environment), and ``devrun init``
(config.scaffold). The names the rest of devrun uses are re-exported here.
"""

from devrun.config.build import (
    CONFIG_NAME,
    WILDCARDS,
    build_config,
    deep_merge,
    find_config,
    is_loopback,
    json_schema,
    load_config,
)
from devrun.config.model import (
    App,
    AppConfig,
    BackoffConfig,
    Config,
    DebugConfig,
    DefaultsConfig,
    EnvFileConfig,
    EnvValue,
    FileModel,
    Glob,
    LiveReloadConfig,
    Port,
    Seconds,
    glob_problem,
)
from devrun.config.yamlsource import ConfigError, Problem

__all__ = [
    "CONFIG_NAME",
    "WILDCARDS",
    "App",
    "AppConfig",
    "BackoffConfig",
    "Config",
    "ConfigError",
    "DebugConfig",
    "DefaultsConfig",
    "EnvFileConfig",
    "EnvValue",
    "FileModel",
    "Glob",
    "LiveReloadConfig",
    "Port",
    "Problem",
    "Seconds",
    "build_config",
    "deep_merge",
    "find_config",
    "glob_problem",
    "is_loopback",
    "json_schema",
    "load_config",
]
