"""The method registry: every decomposition method, by name.

A method is one file in `mechscope/decompose/` that defines a pydantic config and
`fit(target, task, config, ctx) -> Decomposition`, and adds one `register(...)` line at its
bottom. `mechscope/decompose/__init__.py` imports each method file once so registration happens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from mechscope.config import Config
from mechscope.decompose.base import Decomposition
from mechscope.zoo.base import Progress, Task, no_progress


@dataclass
class FitContext:
    """What a method's `fit` gets besides the target and its config."""

    seed: int = 0
    device: str = "cpu"
    progress: Progress = no_progress
    checkpoint_dir: str | None = None
    """Where a long-running method may keep checkpoints to resume from (inside the run dir)."""
    extras: dict[str, object] = field(default_factory=dict)

    def generator(self, offset: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + offset)


FitFn = Callable[[nn.Module, Task, Config, FitContext], Decomposition]


@dataclass(frozen=True)
class MethodSpec:
    name: str
    summary: str
    Cfg: type[Config]
    fit: FitFn
    applies_to: Callable[[Task], str | None] = lambda task: None
    """Returns None when the method makes sense on `task`, else why not (the cell is `n/a`)."""
    family: str = "calibration"
    """"calibration", "activation", "parameter" or "dynamics"."""


METHODS: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    if spec.name in METHODS:
        raise ValueError(f"method {spec.name!r} registered twice")
    METHODS[spec.name] = spec
    return spec


def get_method(name: str) -> MethodSpec:
    import mechscope.decompose  # noqa: F401  (fills the registry)

    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}")
    return METHODS[name]
