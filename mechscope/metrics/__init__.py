"""The yardstick: pure scoring functions of (Decomposition, GroundTruth, evaluation inputs).

`score(...)` is the one entry point the CLI and the bench call; every key it returns is defined in
DESIGN.md's metrics table and must not drift.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

EVAL_DATA_SEED = 987_654_321
"""Seed of the `data` evaluation set: fixed, and independent of every training seed."""
EVAL_DATA_SIZE = 4096


@dataclass
class Match:
    """One matched pair (Hungarian) of a true mechanism and a component."""

    space: str
    site: str
    mechanism: str
    component: int
    similarity: float


@dataclass
class Score:
    metrics: dict[str, Any]
    """The metrics.json body: top-level keys, `sites.<site>.<key>`, `spaces.<space>.<key>`."""
    matches: list[Match] = field(default_factory=list)
    tensors: dict[str, Tensor] = field(default_factory=dict)
    """Matrices saved beside metrics.json, never inside it: e.g. `onehot_activity.<site>`
    ([n_onehot, C]), `similarity.<space>.<site>` ([n_true, C])."""
