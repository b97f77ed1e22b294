"""Pydantic configs shared by tasks and methods, and the one `--set KEY=VALUE` parser.

Every task and method is configured by a frozen pydantic model with `extra="forbid"` and concrete
defaults at the class, so a typo in a key is an error and a config always says what it runs with.
Where a method's good settings differ by task family, its config declares them in one table
(`task_defaults`); `resolved(task)` lays the table under the fields the caller chose and returns a
config with every field set. The run path resolves once; a resolved config resolves to itself.

`config_hash` keys the target cache and the bench table: it hashes resolved values, never paths.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

C = TypeVar("C", bound="Config")
Scope = Literal["task", "method", "run"]
SCOPES: tuple[Scope, ...] = ("task", "method", "run")


class Config(BaseModel):
    """Base for every config: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def task_defaults(self, task: Any) -> dict[str, Any]:
        """This config's per-task values (its declared table) for `task`, given the fields chosen
        so far (e.g. `preset`); `{}`: the class defaults hold on every task."""
        return {}

    def resolved(self: C, task: Any) -> C:
        """Every field set: the chosen fields (`model_fields_set`) over the task's table over the
        class defaults. Idempotent, so a config read back from a run's config.yaml stays as it is."""
        if self.model_fields_set >= set(type(self).model_fields):
            return self
        chosen = {k: getattr(self, k) for k in self.model_fields_set}
        return type(self).model_validate({**self.model_dump(), **self.task_defaults(task), **chosen})


class RunConfig(Config):
    """The run's own settings (scope `run.`): which target to decompose."""

    target_seed: int = Field(0, ge=0)
    """Seed of the target network; `mechscope decompose` defaults it to `--seed`."""
    pgd_steps: int = Field(4, ge=0)
    """Ascent steps of the worst-case ablation `pgd_faithfulness` (0: a random admissible mask
    only); the scorer's default, `metrics.pgd.PGD_STEPS`."""


class ConfigError(ValueError):
    """A user-facing, one-line configuration error."""


def config_hash(*parts: BaseModel | Mapping[str, Any] | int | str) -> str:
    """Stable 12-hex-digit hash of configs (and seeds): same values, same hash."""
    payload = [p.model_dump(mode="json") if isinstance(p, BaseModel) else p for p in parts]
    blob = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


# --- `--set KEY=VALUE`: split once, parse once by the field's own type ---------------------------


@dataclass(frozen=True)
class Setting:
    """One `[scope.]key=value` pair as typed: the scope is None for a bare key."""

    scope: Scope | None
    key: str
    raw: str

    @property
    def text(self) -> str:
        return f"{self.scope + '.' if self.scope else ''}{self.key}={self.raw}"


def parse_sets(pairs: Sequence[str]) -> tuple[Setting, ...]:
    """`KEY=VALUE` strings → settings; one-line error for a pair without `=` or an empty key."""
    out: list[Setting] = []
    for pair in pairs:
        key, eq, raw = pair.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got {pair!r}")
        scope, dot, name = key.partition(".")
        if dot and scope in SCOPES and name:
            out.append(Setting(scope, name, raw))
        else:
            out.append(Setting(None, key, raw))
    return tuple(out)


def parse_field(cls: type[Config], key: str, raw: str, what: str) -> Any:
    """`raw` as a value of `cls.key`, validated by the field's own type and constraints: JSON when
    that fits the type (`3`, `1e-3`, `true`, `["W"]`), else the text itself (`paper`, `lstm`)."""
    info = cls.model_fields[key]
    kind: Any = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
    adapter: TypeAdapter[Any] = TypeAdapter(kind)
    try:
        return adapter.validate_json(raw)
    except ValidationError:
        pass
    try:
        return adapter.validate_python(raw)
    except ValidationError as err:
        raise ConfigError(f"bad value for {what} setting {key!r}: {raw!r} ({err.errors()[0]['msg']})") from None


def assign(
    sets: Sequence[Setting], configs: Mapping[Scope, type[Config]], names: Mapping[Scope, str], soft: bool = False
) -> dict[Scope, dict[str, Any]]:
    """Route each setting to its config and parse it: {scope: {key: value}}, later settings winning.

    A bare key goes to the one config that has it; in two it is an error naming both (`task.lr` /
    `method.lr`); in none, an error listing the allowed keys. `soft` (a bench preset's or a bench
    `--set`'s rules): a key the configs lack is skipped, and an ambiguous one is still an error."""
    out: dict[Scope, dict[str, Any]] = {s: {} for s in configs}
    for s in sets:
        scopes = [s.scope] if s.scope else [sc for sc in configs if s.key in configs[sc].model_fields]
        scopes = [sc for sc in scopes if sc in configs and s.key in configs[sc].model_fields]
        if s.scope is None and len(scopes) > 1:
            both = " / ".join(f"{sc}.{s.key}" for sc in scopes)
            raise ConfigError(f"setting {s.key!r} exists in more than one config: say which, {both}")
        if not scopes:
            if soft:
                continue
            raise ConfigError(f"unknown setting {s.text.split('=', 1)[0]!r}; allowed: {allowed_keys(configs)}")
        scope = scopes[0]
        out[scope][s.key] = parse_field(configs[scope], s.key, s.raw, names.get(scope, scope))
    return out


def allowed_keys(configs: Mapping[Scope, type[Config]]) -> str:
    """The keys `--set` accepts, bare where unambiguous and scoped where two configs share one."""
    counts: dict[str, int] = {}
    for cls in configs.values():
        for k in cls.model_fields:
            counts[k] = counts.get(k, 0) + 1
    keys = {k if counts[k] == 1 else f"{sc}.{k}" for sc, cls in configs.items() for k in cls.model_fields}
    return ", ".join(sorted(keys)) or "(none)"


def validated(cls: type[C], values: Mapping[str, Any], what: str) -> C:
    """`cls(**values)` with a one-line error naming the first bad key and its value."""
    try:
        return cls.model_validate(dict(values))
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "?"
        raise ConfigError(f"bad value for {what} setting {key!r}: {values.get(key)!r} ({first['msg']})") from None


def with_overrides(config: C, overrides: Mapping[str, str], what: str) -> C:
    """`config` with `{key: raw text}` overrides parsed by the config's own types (the library's
    form of `--set`; unknown keys and bad values are one-line `ConfigError`s)."""
    fields = type(config).model_fields
    updates: dict[str, Any] = {}
    for key, raw in overrides.items():
        if key not in fields:
            raise ConfigError(f"unknown {what} setting {key!r}; allowed: {', '.join(sorted(fields)) or '(none)'}")
        updates[key] = parse_field(type(config), key, raw, what)
    if not updates:
        return config
    chosen = {k: getattr(config, k) for k in config.model_fields_set}
    return validated(type(config), {**chosen, **updates}, what)


def check_device(device: str) -> str:
    """`device` if torch knows it and it is usable here, else a one-line ConfigError."""
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"unknown device {device!r}; allowed: cpu, cuda, cuda:N, mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but no CUDA GPU is available; use --device cpu")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {device!r} requested but MPS is not available; use --device cpu")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"unknown device {device!r}; allowed: cpu, cuda, cuda:N, mps")
    return device
