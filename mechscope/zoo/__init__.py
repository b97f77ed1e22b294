"""The ground-truth zoo: tasks whose true mechanisms are known, by name."""

from __future__ import annotations

from collections.abc import Callable

from mechscope.zoo.base import GroundTruth, Mechanism, Task

TASKS: dict[str, Callable[[], Task]] = {}


def register_task(name: str, factory: Callable[[], Task]) -> None:
    if name in TASKS:
        raise ValueError(f"task {name!r} registered twice")
    TASKS[name] = factory


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; available: {', '.join(TASKS)}")
    return TASKS[name]()


# --- task registrations: one import per task family file ---
from mechscope.zoo import (  # noqa: E402,F401
    linear_dynamics,
    resid_mlp,
    rnn_tasks,
    tms,
)

__all__ = ["TASKS", "GroundTruth", "Mechanism", "Task", "get_task", "register_task"]
