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


# --- task registrations: one import per task family file, in the order `mechscope tasks` lists them ---
# isort: off
from mechscope.zoo import tms  # noqa: E402,F401
from mechscope.zoo import resid_mlp  # noqa: E402,F401
from mechscope.zoo import rnn_tasks  # noqa: E402,F401
from mechscope.zoo import linear_dynamics  # noqa: E402,F401
from mechscope.zoo import stress  # noqa: E402,F401
from mechscope.zoo import synth_sae_bench  # noqa: E402,F401
from mechscope.zoo import boolean_circuits  # noqa: E402,F401
from mechscope.zoo import tracr_programs  # noqa: E402,F401
# isort: on

__all__ = ["TASKS", "GroundTruth", "Mechanism", "Task", "get_task", "register_task"]
