"""Compare two bench results tables cell by cell: which metric values changed, and by how much.

    python benchmarks/compare_results.py BEFORE/results.parquet AFTER/results.parquet [--tol 0]

Cells are matched on (task, method, seed, target_seed, knob); cost columns (wall_s, peak_mem_mb),
`config_hash` and bookkeeping columns are not compared. Prints one line per changed value and a
summary table; exits 0 either way (a difference is a finding to explain, not a crash).
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import pyarrow.parquet as pq

KEY = ("task", "method", "seed", "target_seed", "knob")
SKIP = {"wall_s", "peak_mem_mb", "config_hash", "samples_seen", "reason", "error"}


def rows(path: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    table = pq.read_table(path).to_pylist()
    return {tuple(r.get(k) for k in KEY): r for r in table}


def same(a: Any, b: Any, tol: float) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) and math.isnan(b):
            return True
        return abs(a - b) <= tol * max(1.0, abs(a))
    return bool(a == b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--tol", type=float, default=0.0, help="relative tolerance for floats")
    args = parser.parse_args()
    before, after = rows(args.before), rows(args.after)
    only_before = sorted(set(before) - set(after), key=str)
    only_after = sorted(set(after) - set(before), key=str)
    changed: dict[str, int] = {}
    n_cells_changed = 0
    for key in sorted(set(before) & set(after), key=str):
        b, a = before[key], after[key]
        diffs = []
        for col in sorted((set(b) | set(a)) - SKIP - set(KEY)):
            vb, va = b.get(col), a.get(col)
            if vb is None and va is None:
                continue
            if not same(vb, va, args.tol):
                diffs.append((col, vb, va))
                changed[col] = changed.get(col, 0) + 1
        if diffs:
            n_cells_changed += 1
            name = "/".join(str(k) for k in key if k is not None)
            for col, vb, va in diffs:
                print(f"{name:<45} {col:<28} {vb!r:>24} -> {va!r}")
    print()
    print(f"cells: {len(before)} before, {len(after)} after, {len(set(before) & set(after))} in both, "
          f"{n_cells_changed} with a changed value")
    for key in only_before:
        print("only before:", key)
    for key in only_after:
        print("only after: ", key)
    if changed:
        print("| metric | cells changed |\n|---|---|")
        for col, n in sorted(changed.items(), key=lambda kv: -kv[1]):
            print(f"| {col} | {n} |")


if __name__ == "__main__":
    main()
