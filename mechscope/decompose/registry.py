"""The method registry: every decomposition method, by name.

A method is one file in `mechscope/decompose/` that defines a pydantic config and
`fit(target, facts, config, ctx) -> Decomposition`, and adds one `register(...)` line at its
bottom. `mechscope/decompose/__init__.py` imports each method file once so registration happens.

Fits are blind: `facts` is the task's public face (`TaskFacts`: sampler, sites, settings) and its
`ground_truth` raises. A method that is sized from the truth says so through `reads_truth(config)`;
the runner then hands it the truth in `ctx.truth`, and the run's config records it.

Third-party methods register through the entry-point group `mechscope.methods`: each entry point
names a `MethodSpec` (or a function returning one), e.g. in the plugin's pyproject.toml

    [project.entry-points."mechscope.methods"]
    my-method = "my_package.method:SPEC"

`load_plugins()` (run once when `mechscope.decompose` is imported) registers them beside ours.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points
from typing import Any

import torch
from torch import nn

from mechscope.config import Config
from mechscope.core import GroundTruth, Progress, Task, TaskFacts, facts_of, no_progress, seeded_generator
from mechscope.decompose.parallel import Placement


@dataclass
class FitContext:
    """What a method's `fit` gets besides the target and its config."""

    seed: int = 0
    device: str = "cpu"
    progress: Progress = no_progress
    checkpoint_dir: str | None = None
    """Where a long-running method may keep checkpoints to resume from (inside the run dir)."""
    truth: GroundTruth | None = None
    """The ground truth, handed over only to a method whose spec `reads_truth` for its config
    (calibrations, truth-sized runs); None for every blind fit."""
    placement: Placement = field(default_factory=Placement)
    """This process's share of a data-parallel (torchrun) fit; a plain process by default."""

    def generator(self, offset: int = 0) -> torch.Generator:
        return seeded_generator(self.seed, offset)

    def require_truth(self, why: str) -> GroundTruth:
        if self.truth is None:
            raise RuntimeError(f"{why} needs the ground truth, but this fit is blind (reads_truth is False)")
        return self.truth


FitFn = Callable[[nn.Module, TaskFacts, Config, FitContext], Any]
"""Returns a `Decomposition`; a "dynamics" method returns its analysis (`evaluate`, `tensors`, `figures`)."""


def never_reads_truth(config: Config) -> bool:
    return False


def always_reads_truth(config: Config) -> bool:
    return True


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
    reads_truth: Callable[[Config], bool] = never_reads_truth
    """Whether a fit with this config is handed the ground truth (`ctx.truth`)."""
    peer: bool = False
    """Trained by another library's own code (a peer row beside our variant of the same family)."""


METHODS: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    if spec.name in METHODS:
        raise ValueError(f"method {spec.name!r} registered twice")
    METHODS[spec.name] = spec
    return spec


PLUGIN_GROUP = "mechscope.methods"


def load_plugins() -> list[str]:
    """Register every `mechscope.methods` entry point not registered yet; returns their names.
    A plugin that fails to load is reported on stderr in one line and skipped."""
    loaded: list[str] = []
    for ep in entry_points(group=PLUGIN_GROUP):
        try:
            obj = ep.load()
            spec = obj if isinstance(obj, MethodSpec) else obj()
            if not isinstance(spec, MethodSpec):
                raise TypeError(f"it gave {type(spec).__name__}, not a MethodSpec")
        except Exception as err:  # a broken plugin must not break mechscope
            print(f"mechscope: warning: plugin {ep.name!r} ({ep.value}) not loaded: {err}", file=sys.stderr)
            continue
        if spec.name not in METHODS:
            register(spec)
            loaded.append(spec.name)
    return loaded


def get_method(name: str) -> MethodSpec:
    import mechscope.decompose  # noqa: F401  (fills the registry)

    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def is_peer(name: str) -> bool:
    """Whether `name` is a registered peer (another library's trainer): benches run those only when named."""
    return name in METHODS and METHODS[name].peer


def fit_blind(spec: MethodSpec, target: nn.Module, task: Task, config: Config, ctx: FitContext) -> Any:
    """Fit `spec` on `task` the one way every caller does: through the task's public facts, with the
    ground truth handed over only when the spec says this config reads it."""
    if spec.reads_truth(config):
        ctx = replace(ctx, truth=task.ground_truth(target))
    return spec.fit(target, facts_of(task), config, ctx)
