"""Budgets in samples seen: a bench preset says how many samples each fit may consume, and every
method's `steps` follows from its own batch size — so a grid compares methods at equal data.

    Budget("tms-40-10*", "*", samples=1_536_000)        # a preset's rule
    budget_sets(budget, method_config)                  # → ("method.steps=1500",) at batch 1024

*Samples seen* (`samples_seen`, a metrics.json key and a results.parquet column, DESIGN.md) is
`steps × batch_size` of a method that trains on batches of inputs or activations: the examples
its gradient steps consumed (per site for a multi-site dictionary). The few thousand activations
a method reads once to size itself (`blind_sizes`, JumpReLU's θ₀) are not counted. Methods without
both settings (the `oracle` / `random` calibrations, the fixed-point finder) have none (null).

A budget rule is soft like the preset's other rules: it applies only to methods whose config has
`steps` and `batch_size`, and a user's `--set method.steps=…` still wins (the column then records
what really ran). A method whose batch size is data-dependent (`batch_size: None`, the dictionary
rule of ~256k numbers per batch) gets the rule's `batch_size` set explicitly, so the steps — and
the samples — are known before any work.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass
from typing import Any

from mechscope.config import Config


@dataclass(frozen=True)
class Budget:
    """Every fit in the cells whose task and method match the globs sees `samples` samples."""

    tasks: str
    methods: str
    samples: int
    batch_size: int = 1_024
    """The batch of a method whose own `batch_size` is None (data-dependent); 1024 is what the
    dictionary rule picks on every site up to 256 wide."""

    def __post_init__(self) -> None:
        if self.samples <= 0 or self.batch_size <= 0:
            raise ValueError(f"budget {self.tasks}/{self.methods}: samples and batch_size must be > 0, "
                             f"got {self.samples}, {self.batch_size}")

    def matches(self, task: str, method: str) -> bool:
        return fnmatch.fnmatch(task, self.tasks) and fnmatch.fnmatch(method, self.methods)


def trains_on_batches(config: Config) -> bool:
    """Whether a method's config states a budget (`steps` and `batch_size`)."""
    fields = type(config).model_fields
    return "steps" in fields and "batch_size" in fields


def budget_sets(budget: Budget, config: Config) -> tuple[str, ...]:
    """The soft settings that give a method with this (resolved) config `budget.samples` samples:
    steps = ⌈samples / batch⌉ (≥ 1), plus the batch itself where the config leaves it to the data."""
    if not trains_on_batches(config):
        return ()
    own = getattr(config, "batch_size", None)
    batch = int(own) if own is not None else budget.batch_size
    steps = max(1, math.ceil(budget.samples / batch))
    return (*(() if own is not None else (f"method.batch_size={batch}",)), f"method.steps={steps}")


def samples_seen(config: Config, fitted: Any = None) -> int | None:
    """steps × batch_size of the fit that ran (None for a method that does not train on batches).
    A dictionary whose batch was left to the data gets it from its trained coders (the same rule
    `train_coder` used); several sites of different widths report the smallest."""
    if not trains_on_batches(config):
        return None
    steps = int(getattr(config, "steps", 0))
    batch = getattr(config, "batch_size", None)
    if batch is not None:
        return steps * int(batch)
    coders = getattr(fitted, "coders", None)
    if not coders:
        return None
    from mechscope.decompose.dictionary import default_batch_size

    return steps * min(default_batch_size(sc.coder.d_in, sc.coder.d_out) for sc in coders.values())
