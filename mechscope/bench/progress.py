"""The bench's progress display (rich, on stderr): one overall bar plus one bar per running cell.

Overall: cells done / total with the elapsed time and an ETA. Each worker slot gets a bar for the
cell it is running, fed by the target's and the method's `progress(done, total)` callbacks.
"""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class BenchProgress:
    def __init__(self, total: int, done: int = 0, show: bool = True) -> None:
        self.show = show
        self._bars = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(file=sys.stderr),
            disable=not show,
            transient=False,
        )
        self._overall = self._bars.add_task("[bold]bench cells", total=total, completed=done)
        self._slots: dict[int, TaskID] = {}
        self._labels: dict[int, str] = {}

    def __enter__(self) -> BenchProgress:
        self._bars.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._bars.__exit__(*exc)

    def cell_done(self) -> None:
        self._bars.advance(self._overall)

    def start(self, slot: int, label: str) -> None:
        self._labels[slot] = label
        if slot in self._slots:
            self._bars.reset(self._slots[slot], description=f"  {label}", total=1, completed=0, visible=True)
        else:
            self._slots[slot] = self._bars.add_task(f"  {label}", total=1)

    def update(self, slot: int, stage: str, done: int, total: int) -> None:
        if slot not in self._slots:
            self.start(slot, "")
        label = self._labels.get(slot, "")
        self._bars.update(self._slots[slot], description=f"  {label} · {stage}", completed=done,
                          total=max(total, 1))

    def stop(self, slot: int) -> None:
        if slot in self._slots:
            self._bars.update(self._slots[slot], visible=False)


class SingleProgress:
    """One bar for one run (`mechscope decompose`): the target's training, then the method's fit."""

    def __init__(self, label: str, show: bool = True) -> None:
        self._bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                              TimeElapsedColumn(), console=Console(file=sys.stderr), disable=not show,
                              transient=True)
        self._label = label
        self._bar = self._bars.add_task(label, total=1)

    def __enter__(self) -> SingleProgress:
        self._bars.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._bars.__exit__(*exc)

    def update(self, stage: str, done: int, total: int) -> None:
        self._bars.update(self._bar, description=f"{self._label} · {stage}", completed=done, total=max(total, 1))
