"""The two fixed evaluation sets every method is scored on.

- `onehot`: each feature alone at 0.75 (the SPD paper's probe; signed tasks add −0.75 too).
- `data`: `EVAL_DATA_SIZE` task samples drawn from a generator seeded with `EVAL_DATA_SEED`, a
  seed no training run uses, so scoring never sees a method's own training batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mechscope.core import Task

EVAL_DATA_SEED = 987_654_321
EVAL_DATA_SIZE = 4096


@dataclass(frozen=True)
class EvalSets:
    onehot: Tensor
    """[n_onehot, n_features]"""
    data: Tensor
    """[EVAL_DATA_SIZE, n_features]"""


def eval_sets(task: Task, n_data: int = EVAL_DATA_SIZE) -> EvalSets:
    """The `onehot` and `data` sets of `task` (deterministic: same task config, same tensors)."""
    data = task.sample(n_data, torch.Generator().manual_seed(EVAL_DATA_SEED))
    return EvalSets(onehot=task.onehot(), data=data)
