"""Bench presets: which tasks, methods and seeds, and the per-cell settings that make them fit a budget.

A preset's `sets` are `(task glob, method glob, ("scope.key=value", ...))` rules. Unlike a user's
`--set`, a preset setting is *soft*: it applies only where the task's or method's config has that
field, so one rule ("every method trains 1,500 steps") covers methods with different configs.

- `quick`: every task family and every method at small settings — the README's main job, sized to
  finish in ≤ 10 minutes on 2 CPU cores including target training on an empty cache.
- `full`: the published settings (each method's `paper` preset, the tasks' own defaults), 3 seeds.
- `stress`: the quick settings over many seeds, to exercise the runner (workers, resume) at scale.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    name: str
    summary: str
    tasks: tuple[str, ...]
    """Task names in report order; names not registered in this install are skipped."""
    seeds: int
    sets: tuple[tuple[str, str, tuple[str, ...]], ...] = ()
    task_seeds: tuple[tuple[str, int], ...] = ()
    """(task glob, seeds): fewer seeds for expensive tasks (unless `--seeds` is given)."""

    def seeds_for(self, task: str) -> int:
        return next((n for pattern, n in self.task_seeds if fnmatch.fnmatch(task, pattern)), self.seeds)


_QUICK_TASKS = (
    "tms-5-2",
    "tms-5-2-id",
    "tms-40-10",
    "resid-mlp-1l",
    "flipflop-3bit",
    "sine-generator",
    "integrator",
    "linear-rnn",
    "selective-ssm",
)

_QUICK_SETS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    # One target per task, decomposed by every method seed (the full preset trains one per seed).
    ("*", "*", ("target_seed=0",)),
    # Targets: fewer training steps than the papers (the cache keys on them, so these targets
    # never mix with full-preset ones).
    ("tms-5-2*", "*", ("task.steps=3000",)),
    ("tms-40-10*", "*", ("task.steps=2000", "task.batch_size=2048")),
    ("resid-mlp*", "*", ("task.batch_size=512",)),
    # Methods: short fits.
    ("*", "sae-*", ("method.steps=1500",)),
    ("*", "transcoder-*", ("method.steps=1500",)),
    ("*", "spd", ("method.steps=2500",)),
    ("tms-40-10*", "spd", ("method.steps=1000",)),  # C = 200 components: ~3× a 5-2 step
    # The residual MLP's 1,000-dim stream makes every step ~100× a TMS step: shorter, smaller fits.
    ("resid-mlp*", "sae-*", ("method.steps=200", "method.batch_size=256", "method.buffer_size=8192")),
    ("resid-mlp*", "transcoder-*", ("method.steps=200", "method.batch_size=256", "method.buffer_size=8192")),
    ("resid-mlp*", "spd", ("method.steps=300", "method.batch_size=256")),
    # Fixed points: fewer starts and iterations than the finder's defaults.
    ("*", "fixed-points", ("method.n_starts=256", "method.max_iters=300")),
)

PRESETS: dict[str, Preset] = {
    "quick": Preset("quick", "every task family and method, small settings (≤ 10 min on 2 cores)",
                    _QUICK_TASKS, seeds=2, sets=_QUICK_SETS, task_seeds=(("resid-mlp*", 1),)),
    "full": Preset("full", "paper settings, 3 seeds", (*_QUICK_TASKS, "tms-40-10-id"), seeds=3,
                   sets=(("*", "*", ("method.preset=paper",)),)),
    "stress": Preset("stress", "quick settings over 10 seeds (exercises workers and resume)",
                     _QUICK_TASKS, seeds=10, sets=_QUICK_SETS),
}


def get_preset(name: str) -> Preset:
    from mechscope.config import ConfigError

    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; available: {', '.join(PRESETS)}")
    return PRESETS[name]
