"""Pydantic configs shared by tasks and methods, and the `--set KEY=VALUE` override rules.

Every task and method is configured by a frozen pydantic model with `extra="forbid"`, so a typo
in a key is an error, never a silently ignored setting. `config_hash` keys the target cache and
the bench table: it hashes the resolved values, not where the output goes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

C = TypeVar("C", bound="Config")


class Config(BaseModel):
    """Base for every config: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ConfigError(ValueError):
    """A user-facing, one-line configuration error."""


def config_hash(*parts: BaseModel | Mapping[str, Any] | int | str) -> str:
    """Stable 12-hex-digit hash of configs (and seeds): same values, same hash."""
    payload = [p.model_dump(mode="json") if isinstance(p, BaseModel) else p for p in parts]
    blob = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def with_overrides(config: C, overrides: Mapping[str, str], what: str) -> C:
    """Return `config` with string overrides parsed and validated by the config's own types.

    Values are parsed as JSON where possible (so `3`, `0.1`, `true`, `[1,2]` work) and otherwise
    kept as strings; pydantic then validates them. Errors are one line naming the key and value.
    """
    if not overrides:
        return config
    fields = type(config).model_fields
    updates: dict[str, Any] = {}
    for key, raw in overrides.items():
        if key not in fields:
            allowed = ", ".join(sorted(fields)) or "(none)"
            raise ConfigError(f"unknown {what} setting {key!r}; allowed: {allowed}")
        updates[key] = parse_value(raw)
    data = config.model_dump()
    data.update(updates)
    try:
        return type(config).model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "?"
        raise ConfigError(
            f"bad value for {what} setting {key!r}: {overrides.get(key, data.get(key))!r} ({first['msg']})"
        ) from None


def parse_value(raw: str) -> Any:
    """Parse a command-line value: JSON if it parses, else the raw string."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def split_overrides(
    pairs: list[str], task_fields: set[str], method_fields: set[str]
) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """Split `KEY=VALUE` strings into (task, method, run) overrides.

    `task.KEY` / `method.KEY` are explicit; a bare key goes to every config that has it
    (DESIGN.md: "a bare key is looked up in both"); `target_seed` is a run-level setting.
    """
    task: dict[str, str] = {}
    method: dict[str, str] = {}
    run: dict[str, str] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        key = key.strip()
        if key.startswith("task."):
            task[key[5:]] = value
        elif key.startswith("method."):
            method[key[7:]] = value
        elif key == "target_seed":
            run[key] = value
        else:
            hit = False
            if key in task_fields:
                task[key] = value
                hit = True
            if key in method_fields:
                method[key] = value
                hit = True
            if not hit:
                allowed = ", ".join(sorted(task_fields | method_fields | {"target_seed"}))
                raise ConfigError(f"unknown setting {key!r}; allowed: {allowed}")
    return task, method, run
