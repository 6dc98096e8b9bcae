"""Loading and checking the one typed configuration: defaults < TOML file < environment < CLI flags.

The file (`--config PATH` or `KEFU_CONFIG`) uses Config's field names; tables only group them, so
`[limits] rate_per_s = 20` and a top-level `rate_per_s = 20` mean the same. Unknown keys, wrong types
and values Kefu cannot use stop the start with one line per problem (`kefu config check` prints them
without starting anything).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kefu.config import Config, ConfigError, env_values

_FIELDS = {f.name: f for f in dataclasses.fields(Config)}
_HINTS = typing.get_type_hints(Config)
_SECRET_FIELDS = ("secret",)
LOG_FORMATS = ("json", "text")
_POSITIVE_SUFFIXES = ("_s", "_bytes", "_size", "_limit", "_len", "_per_s", "_burst")
_NONZERO = ("max_message_size", "max_text_bytes", "max_cmid_len", "rate_per_s", "rate_burst", "replay_limit")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def load(path: Path | str | None = None, env: Mapping[str, str] | None = None, **flags: Any) -> Config:
    """The effective configuration; raises ConfigError listing every problem found."""
    env = os.environ if env is None else env
    path = path or env.get("KEFU_CONFIG") or None
    values: dict[str, Any] = file_values(Path(path)) if path else {}
    values.update(env_values(env))
    values.update({k: v for k, v in flags.items() if v is not None})
    config = Config(**values)
    problems = check(config)
    if problems:
        raise ConfigError("\n".join(problems))
    return config


def file_values(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            document = tomllib.load(file)
    except OSError as error:
        raise ConfigError(f"config file {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path}: {error}") from None
    flat: dict[str, Any] = {}
    for key, value in document.items():
        if isinstance(value, dict) and key not in _FIELDS:
            flat.update(value)  # a table only groups fields
        else:
            flat[key] = value
    problems: list[str] = []
    values: dict[str, Any] = {}
    for key, value in flat.items():
        if key not in _FIELDS:
            problems.append(f"{path}: unknown setting {key!r}")
            continue
        try:
            values[key] = _coerce(key, value)
        except ConfigError as error:
            problems.append(f"{path}: {error}")
    if problems:
        raise ConfigError("\n".join(problems))
    return values


def _coerce(key: str, value: Any) -> Any:
    """TOML already typed the value: accept it when it fits the field (ints for floats, strings for paths)."""
    hint = _HINTS[key]
    kinds = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in kinds:
        return None
    for kind in kinds:
        if kind is bool and isinstance(value, bool):
            return value
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if kind in (str, Path) and isinstance(value, str):
            return kind(value)
    wanted = " or ".join(getattr(k, "__name__", str(k)) for k in kinds if k is not type(None))
    raise ConfigError(f"{key}: expected {wanted}, got {type(value).__name__} {value!r}")


def check(config: Config) -> list[str]:
    """Everything wrong with a configuration, one sentence each (empty: it can start)."""
    problems: list[str] = []
    for name in ("http_port", "ws_port"):
        port = getattr(config, name)
        if not 0 <= port <= 65535:
            problems.append(f"{name}: {port} is not a TCP port (0-65535; 0 picks a free one)")
    if config.sqlite_sync.upper() not in ("FULL", "NORMAL"):
        problems.append(f"sqlite_sync: {config.sqlite_sync!r} is not FULL or NORMAL (OFF can lose acked messages)")
    if config.workers < 1:
        problems.append(f"workers: {config.workers} must be at least 1")
    for field in dataclasses.fields(Config):
        value = getattr(config, field.name)
        if (field.name.endswith(_POSITIVE_SUFFIXES) and value < 0) or (field.name in _NONZERO and value == 0):
            problems.append(f"{field.name}: {value} must be positive")
    if bool(config.tls_cert) != bool(config.tls_key):
        problems.append("tls_cert and tls_key (TLS_CERT, TLS_KEY) go together: set both or neither")
    for name in ("tls_cert", "tls_key"):
        path = getattr(config, name)
        if path and not os.access(path, os.R_OK):
            problems.append(f"{name}: cannot read {path}")
    if config.behind_proxy and not config.public_ws_url:
        problems.append("behind_proxy (KEFU_BEHIND_PROXY) needs public_ws_url (KEFU_PUBLIC_WS_URL): "
                        "the wss:// address the proxy serves")
    if config.public_ws_url and not config.public_ws_url.startswith(("ws://", "wss://")):
        problems.append(f"public_ws_url: {config.public_ws_url!r} must start with ws:// or wss://")
    if config.log_format not in LOG_FORMATS:
        problems.append(f"log_format: {config.log_format!r} is not one of {', '.join(LOG_FORMATS)}")
    if config.log_level.upper() not in LOG_LEVELS:
        problems.append(f"log_level: {config.log_level!r} is not one of {', '.join(LOG_LEVELS)}")
    return problems


def describe(config: Config) -> dict[str, Any]:
    """The effective settings as JSON-able values, with secrets and passwords masked."""
    shown: dict[str, Any] = {}
    for field in dataclasses.fields(Config):
        value = getattr(config, field.name)
        if field.name in _SECRET_FIELDS and value:
            value = "***"
        elif field.name in ("db_url", "redis_url") and value:
            value = _mask_url_password(value)
        shown[field.name] = str(value) if isinstance(value, Path) else value
    return shown


def _mask_url_password(url: str) -> str:
    scheme, sep, rest = url.partition("//")
    credentials, at, host = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    return f"{scheme}{sep}{credentials.split(':', 1)[0]}:***@{host}"
