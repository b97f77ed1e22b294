"""Tasks: models whose mechanisms are known — the vocabulary lives in `mechscope.core`.

This module re-exports it for the zoo's task files; `decompose/`, `metrics/` and `dynamics/` import
`mechscope.core` directly and never the zoo.
"""

from __future__ import annotations

from mechscope.core import (
    SPACES,
    ActiveRule,
    GroundTruth,
    Mechanism,
    Progress,
    Space,
    Task,
    active_matrix,
    no_progress,
)

__all__ = [
    "SPACES",
    "ActiveRule",
    "GroundTruth",
    "Mechanism",
    "Progress",
    "Space",
    "Task",
    "active_matrix",
    "no_progress",
]
