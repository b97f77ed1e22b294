"""Print a stress bench's gated verdicts as markdown (what benchmarks/RESULTS.md records).

    python benchmarks/stress_verdicts.py STRESS_BENCH_DIR [--peers PEERS_BENCH_DIR]

Table 1, per method: mean mmcs over seeds at the default knob on each variant, `°` where the
method is not converged at this budget (mean mmcs < 0.95 on stress-iid at the same samples seen,
`mechscope/bench/convergence.py`), the number of seeds, and the report's one-line statement —
where mmcs drops below 0.9, judged only where converged. Table 2 (with --peers): a peers bench
(`mechscope bench --preset peers`) as task × method mmcs / activity_f1, mean ± std over seeds,
with samples seen and fit wall time; ours beside each peer.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from mechscope.bench.results import RESULTS, method_label, read_results
from mechscope.report.data import aggregate
from mechscope.report.html import order
from mechscope.report.stress import BASELINE, organise, statement


def stress_table(bench: Path) -> str:
    rows = read_results(bench / RESULTS)
    stress = organise(rows)
    variants = stress.variants
    out = ["| method | " + " | ".join(variants) + " | seeds | verdict (gated) |",
           "|---|" + "---|" * len(variants) + "---|---|"]
    for method in stress.methods:
        cells, seeds = [], set()
        for task in variants:
            point = stress.default.get((task, method))
            if point is None or point.mmcs is None:
                cells.append("–")
                continue
            seeds.add(len(point.cell.seeds))
            gate = stress.gate(method, point)
            mark = "" if method in ("oracle", "random") or gate.converged else "°"
            knob = f" ({point.knob})" if point.knob and task == BASELINE else ""
            std = f" ± {point.mmcs[1]:.3f}" if len(point.cell.seeds) > 1 else ""
            cells.append(f"{point.mmcs[0]:.3f}{std}{mark}{knob}")
        n = "/".join(str(s) for s in sorted(seeds))
        out.append(f"| {method} | " + " | ".join(cells) + f" | {n} | {statement(stress, method)} |")
    return "\n".join(out)


def _ms(values: list[float]) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "–"
    return f"{np.mean(values):.3f}" + (f" ± {np.std(values):.3f}" if len(values) > 1 else "")


def peers_table(bench: Path) -> str:
    rows = [r for r in read_results(bench / RESULTS) if r["status"] == "ok"]
    cells = aggregate(rows)
    methods = order(list(dict.fromkeys(m for _, m in cells)), cells)
    out = ["| task | method | mmcs | activity_f1 | seeds | samples seen | fit s (mean) |", "|---|---|---|---|---|---|---|"]
    for task in dict.fromkeys(t for t, _ in cells):
        for m in methods:
            mine = [r for r in rows if r["task"] == task and method_label(r) == m]
            if not mine:
                continue
            peer = "† " if mine[0].get("peer") else ""
            out.append(f"| {task} | {peer}{m} | {_ms([r['mmcs'] for r in mine])} | "
                       f"{_ms([r['activity_f1'] for r in mine])} | {len(mine)} | {mine[0].get('samples_seen')} | "
                       f"{np.mean([r['wall_s'] for r in mine]):.1f} |")
    return "\n".join(out)


def _pair(rows: list[dict[str, float]]) -> str:
    return f"{_ms([r['mmcs'] for r in rows])} / {_ms([r['activity_f1'] for r in rows])}" if rows else "–"


def peers_delta_table(bench: Path) -> str:
    """Issue 13's bar, per task × (ours, peer library): ours − the better of the peer's two presets,
    per metric (mean over seeds); ✓ when both ≥ −0.01."""
    rows = [r for r in read_results(bench / RESULTS) if r["status"] == "ok"]
    by: dict[tuple[str, str], list[dict[str, float]]] = {}
    for r in rows:
        by.setdefault((r["task"], method_label(r)), []).append(r)
    out = ["| task | ours | peer | ours mmcs / f1 | peer default mmcs / f1 | peer short mmcs / f1 | "
           "Δ vs peer's better (mmcs / f1) | seeds (ours / peer) | samples seen |", "|---|---|---|---|---|---|---|---|---|"]
    for task in dict.fromkeys(t for t, _ in by):
        for (t, label), mine in by.items():
            if t != task or mine[0].get("peer"):
                continue
            for peer in sorted({m.split("@")[0] for (t2, m), rs in by.items() if t2 == task and rs[0].get("peer_of") == label}):
                presets = {p: by.get((task, f"{peer}@preset={p}"), []) for p in ("default", "short")}
                mean = {p: {k: float(np.nanmean([r[k] for r in rs])) for k in ("mmcs", "activity_f1")}
                        for p, rs in presets.items() if rs}
                ours = {k: float(np.nanmean([r[k] for r in mine])) for k in ("mmcs", "activity_f1")}
                delta = {k: ours[k] - max(m[k] for m in mean.values()) for k in ours} if mean else {}
                ok = delta and all(v >= -0.01 for v in delta.values())
                seeds = f"{len(mine)} / {'+'.join(str(len(rs)) for rs in presets.values())}"
                d = f"{delta['mmcs']:+.3f} / {delta['activity_f1']:+.3f} {'✓' if ok else '**gap**'}" if delta else "–"
                out.append(f"| {task} | {label} | {peer} | {_pair(mine)} | {_pair(presets['default'])} | "
                           f"{_pair(presets['short'])} | {d} | {seeds} | {mine[0].get('samples_seen')} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench", type=Path, nargs="?")
    parser.add_argument("--peers", type=Path)
    args = parser.parse_args()
    if args.bench is not None:
        print(stress_table(args.bench))
    if args.peers is not None:
        print()
        print(peers_table(args.peers))
        print()
        print(peers_delta_table(args.peers))


if __name__ == "__main__":
    main()
