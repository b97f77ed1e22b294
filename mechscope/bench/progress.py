"""The bench's progress display (rich, on stderr): one overall bar plus one bar per running cell.

Overall: cells done / total with the elapsed time and an ETA. Each worker slot gets a bar for the
cell it is running, fed by the target's and the method's `progress(done, total)` callbacks.

When stderr is not a terminal (a log file, CI, a pipe), the same events are plain lines instead —
one per cell started and finished, and a stage's progress at most every `PLAIN_EVERY_S` seconds —
so a long job is never silent for minutes.
"""

from __future__ import annotations

import sys
import time
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

PLAIN_EVERY_S = 30.0


def _plain() -> bool:
    return not sys.stderr.isatty()


class _Lines:
    """Progress as plain lines on stderr, throttled per slot."""

    def __init__(self) -> None:
        self._last: dict[int, float] = {}

    def say(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    def stage(self, slot: int, text: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done >= total or now - self._last.get(slot, 0.0) >= PLAIN_EVERY_S:
            self._last[slot] = now
            self.say(f"{text} {done}/{total}")


class BenchProgress:
    def __init__(self, total: int, done: int = 0, show: bool = True) -> None:
        self.show = show
        self._lines = _Lines() if show and _plain() else None
        self._total, self._done = total, done
        if self._lines is not None:
            show = False
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
        self._done += 1
        if self._lines is not None:
            self._lines.say(f"bench cells {self._done}/{self._total} done")
        self._bars.advance(self._overall)

    def start(self, slot: int, label: str) -> None:
        self._labels[slot] = label
        if self._lines is not None:
            self._lines.say(f"start {label}")
        if slot in self._slots:
            self._bars.reset(self._slots[slot], description=f"  {label}", total=1, completed=0, visible=True)
        else:
            self._slots[slot] = self._bars.add_task(f"  {label}", total=1)

    def update(self, slot: int, stage: str, done: int, total: int) -> None:
        if slot not in self._slots:
            self.start(slot, "")
        label = self._labels.get(slot, "")
        if self._lines is not None:
            self._lines.stage(slot, f"  {label} · {stage}", done, max(total, 1))
        self._bars.update(self._slots[slot], description=f"  {label} · {stage}", completed=done,
                          total=max(total, 1))

    def stop(self, slot: int) -> None:
        if slot in self._slots:
            self._bars.update(self._slots[slot], visible=False)


class SingleProgress:
    """One bar for one run (`mechscope decompose`): the target's training, then the method's fit."""

    def __init__(self, label: str, show: bool = True) -> None:
        self._lines = _Lines() if show and _plain() else None
        if self._lines is not None:
            show = False
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
        if self._lines is not None:
            self._lines.stage(0, f"{self._label} · {stage}", done, max(total, 1))
        self._bars.update(self._bar, description=f"{self._label} · {stage}", completed=done, total=max(total, 1))
