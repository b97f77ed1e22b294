"""The result types of `score`: a metrics dict plus the matches and matrices behind it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor


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
