"""What the report reads: aggregated rows of `results.parquet` and each run directory's tensors.

Also the per-method diagnosis of which true mechanisms were missed, split or merged, read off the
stored one-hot activity pattern and matches (seed 0 of each cell):

- *missed*: its best match has similarity < 0.9 (DESIGN.md's coverage threshold), or none;
- *split*: ≥ 2 selective components fire on the mechanism's one-hot input and on no other feature's;
- *merged*: a selective component fires on the one-hot inputs of ≥ 2 features (those are merged).
Here a component *fires* on a one-hot input when its activity there is above its method's firing
threshold and at least half of its largest one-hot activity — so the small interference a
dictionary latent picks up from a neighbouring feature in superposition is not called a merge.
A component firing on more than half of the features is *dense* (a bias-like or identity
component) and is left out of split/merged.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file

from mechscope.bench.results import RESULTS, method_label, read_results

COVERED = 0.9
STRONG = 0.5
"""A component fires *strongly* on a one-hot input at ≥ this fraction of its largest one-hot activity."""


@dataclass
class Cell:
    """One (task, method) — at one knob value — over seeds."""

    task: str
    method: str
    status: str
    seeds: list[int] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=dict)
    reason: str | None = None
    knob: str = ""
    """The knob label ("k=4") of a swept cell; "" when not swept."""
    about: dict[str, Any] = field(default_factory=dict)
    """What the method is, from the table's columns: `family`, `peer`, `peer_of`, `sizing`,
    `samples_seen`, `converged` (first ok row's values)."""

    @property
    def swept(self) -> bool:
        """A point of a knob curve (not a split sweep's own method, whose name carries its knob)."""
        return bool(self.knob) and not self.method.endswith(f"@{self.knob}")

    @property
    def oracle_sized(self) -> bool:
        return self.about.get("sizing") == "oracle"

    @property
    def peer(self) -> bool:
        return bool(self.about.get("peer"))

    def mean_std(self, key: str) -> tuple[float, float] | None:
        vals = [v for v in self.values.get(key, []) if v is not None and not math.isnan(v)]
        if not vals:
            return None
        return float(np.mean(vals)), float(np.std(vals))


def load_rows(bench: Path) -> list[dict[str, Any]]:
    return read_results(bench / RESULTS)


def is_default_knob(row: dict[str, Any]) -> bool:
    """A row not on a knob sweep, at its sweep's default value, or a split sweep's own method."""
    return not row.get("knob") or row.get("knob_default") is not False


def aggregate(rows: list[dict[str, Any]]) -> dict[tuple[str, str], Cell]:
    """(task, method label) → Cell at the default knob, in table order. Status: `ok` if any seed is
    ok, else `failed`/`n/a`. The other points of a knob sweep are the stress section's
    (`aggregate_knobs`); a split sweep's values are methods of their own (`method_label`)."""
    out: dict[tuple[str, str], Cell] = {}
    for row in rows:
        if not is_default_knob(row):
            continue
        key = (row["task"], method_label(row))
        cell = out.setdefault(key, Cell(row["task"], key[1], row["status"], knob=row.get("knob") or ""))
        _add(cell, row)
    return out


def aggregate_knobs(rows: list[dict[str, Any]]) -> dict[tuple[str, str, str], Cell]:
    """(task, method label, knob) → Cell over seeds, every point of every sweep, in table order."""
    out: dict[tuple[str, str, str], Cell] = {}
    for row in rows:
        knob, label = row.get("knob") or "", method_label(row)
        cell = out.setdefault((row["task"], label, knob), Cell(row["task"], label, row["status"], knob=knob))
        _add(cell, row)
    return out


ABOUT = ("family", "peer", "peer_of", "sizing", "samples_seen", "converged")


def _add(cell: Cell, row: dict[str, Any]) -> None:
    if row["status"] == "ok":
        if cell.status != "ok" or not cell.about:
            cell.about = {k: row.get(k) for k in ABOUT}
        cell.status = "ok"
        cell.seeds.append(int(row["seed"]))
        for k, v in row.items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                cell.values.setdefault(k, []).append(float(v))
    elif cell.status != "ok":
        cell.status = row["status"]
        cell.reason = row.get("reason")


@dataclass
class Artifacts:
    """A run dir's stored tensors and matches."""

    tensors: dict[str, np.ndarray]
    info: dict[str, Any]

    def tensor(self, prefix: str) -> tuple[str, np.ndarray] | None:
        """The first tensor whose name starts with `prefix` (its site is the rest of the name)."""
        for name in sorted(self.tensors):
            if name.startswith(prefix):
                return name[len(prefix):], self.tensors[name]
        return None


def run_dir(bench: Path, task: str, method: str, seed: int, knob: str = "") -> Path:
    """The cell's run dir; `method` may be a split sweep's label (`saelens-topk@preset=short`)."""
    folder = f"{method}@{knob}" if knob and not method.endswith(f"@{knob}") else method
    return bench / "runs" / task / folder / f"seed-{seed}"


def artifacts(bench: Path, task: str, method: str, seed: int, knob: str = "") -> Artifacts | None:
    return load_artifacts(run_dir(bench, task, method, seed, knob))


def load_artifacts(d: Path) -> Artifacts | None:
    """One run dir's tensors.safetensors and matches.json (None if either is missing)."""
    try:
        tensors = load_file(str(d / "tensors.safetensors"))
        info = json.loads((d / "matches.json").read_text())
    except (OSError, ValueError):
        return None
    return Artifacts(tensors, info)


def column_order(art: Artifacts, space: str, site: str, n_cols: int) -> list[int]:
    """Components permuted to the ground truth: matched ones in mechanism order, then the rest."""
    names = [m["name"] for m in art.info["mechanisms"] if m["space"] == space and m["site"] == site]
    by_mech = {m["mechanism"]: m["component"] for m in art.info["matches"]
               if m["space"] == space and m["site"] == site}
    first = [by_mech[n] for n in names if n in by_mech and by_mech[n] < n_cols]
    seen = set(first)
    return first + [c for c in range(n_cols) if c not in seen]


def onehot_features(n_rows: int, n_features: int) -> np.ndarray:
    """Feature of each one-hot row (signed tasks stack +v rows then −v rows)."""
    return np.arange(n_rows) % max(n_features, 1)


@dataclass
class Diagnosis:
    missed: list[str]
    split: list[str]
    merged: list[list[str]]
    note: str = ""


def diagnose(art: Artifacts) -> Diagnosis | None:
    """Missed / split / merged true mechanisms of one run (see the module docstring)."""
    info = art.info
    found = art.tensor("onehot_activity.")
    if found is None:
        return None
    site, act = found  # [n_onehot, C]
    n_features = int(info.get("n_features") or act.shape[0])
    peak = np.abs(act).max(0, keepdims=True)  # [1, C]
    fires = (act > float(info.get("fire_threshold", 0.0))) & (act >= STRONG * peak)
    feat = onehot_features(act.shape[0], n_features)
    per_comp = np.zeros((n_features, act.shape[1]), dtype=bool)  # [feature, C]
    for r in range(act.shape[0]):
        per_comp[feat[r]] |= fires[r]
    represented = info.get("represented") or list(range(n_features))
    n_feat_fired = per_comp[represented].sum(0)  # [C]
    dense = n_feat_fired > max(1, len(represented) // 2)
    selective = ~dense & (n_feat_fired > 0)
    mechs = [m for m in info["mechanisms"] if m["rank"] == 1 and m["rule"] != "never"]
    space = _recovery_space(info)
    best: dict[str, float] = {}
    for m in info["matches"]:
        if m["space"] == space:
            best[m["mechanism"]] = max(best.get(m["mechanism"], 0.0), float(m["similarity"]))
    names = sorted({m["name"] for m in mechs if m["space"] == space}, key=_natural)
    missed = [n for n in names if best.get(n, 0.0) < COVERED]
    name_of = {m["feature"]: m["name"] for m in mechs if m["space"] == space and m["feature"] is not None}
    split = [name_of.get(f, f"feature{f}") for f in represented
             if int((selective & per_comp[f] & (n_feat_fired == 1)).sum()) >= 2]
    merged = []
    for c in np.nonzero(selective & (n_feat_fired >= 2))[0]:
        group = [name_of.get(int(f), f"feature{f}") for f in represented if per_comp[f, c]]
        if group not in merged:
            merged.append(group)
    return Diagnosis(missed, split, merged, note=f"site {site}")


def _recovery_space(info: dict[str, Any]) -> str:
    spaces = {m["space"] for m in info["matches"]}
    return "parameter" if "parameter" in spaces else "activation"


def _natural(name: str) -> tuple[str, int]:
    head = name.rstrip("0123456789")
    tail = name[len(head):]
    return head, int(tail) if tail else -1
