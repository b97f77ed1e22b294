"""Shortcut analysis: does each method's boolean-circuits graph find the multi-hop paths, and how
much of its edge_auroc deficit do the shortcut edges (a → y for a hop h → y) account for?

Reads the graphs `circuits_table.py --graphs DIR` saved (the projection S onto the true nodes) and
prints, per method over seeds: the hop verdicts, the mean second-hop share S(h, y) and shortcut
share Σ S(a, y), edge_auroc, and edge_auroc with the shortcut pairs left out of the candidates
(if the deficit is the shortcut, this climbs to the oracle's 1).

    .venv/bin/python benchmarks/circuits_shortcut.py --graphs DIR --task boolean-circuits
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import Counter
from pathlib import Path

from safetensors.torch import load_file

from mechscope.circuits.shortcut import hop_verdicts, shortcut_pairs
from mechscope.circuits.truth import CircuitTruth, TrueNode
from mechscope.metrics.circuits import edge_auroc


def load_truth(path: Path) -> CircuitTruth:
    body = json.loads(path.read_text())
    nodes = [TrueNode(n["name"], n["kind"], n["layer"], site=n["site"]) for n in body["nodes"]]
    return CircuitTruth(nodes, {(p, q) for p, q in body["edges"]}, body["notes"],
                        {(p, q) for p, q in body.get("excluded", [])})


def analyse(run: Path) -> dict[str, float | str]:
    truth = load_truth(run / "truth.json")
    t = load_file(str(run / "projection.safetensors"))
    S, sim = t["S"], t["sim"]
    best = sim.abs().max(dim=1).values if sim.shape[1] else sim.new_zeros(sim.shape[0])
    recovered = {f: bool(best[r] >= 0.9) for r, f in enumerate(truth.features())}
    hops = hop_verdicts(S, truth, recovered)
    p, q, lab = truth.candidates()
    auroc = edge_auroc(S[p, q], lab, by=q)
    truth.excluded = truth.excluded | shortcut_pairs(truth)
    p, q, lab = truth.candidates()
    return {"edge_auroc": auroc, "edge_auroc_no_shortcut": edge_auroc(S[p, q], lab, by=q),
            "path": statistics.mean(h.path for h in hops), "shortcut": statistics.mean(h.shortcut for h in hops),
            "verdicts": ",".join(h.verdict for h in hops)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--graphs", type=Path, required=True)
    ap.add_argument("--task", default="boolean-circuits")
    args = ap.parse_args()
    print("| method | seeds | hop verdicts (all seeds) | S(h, y) | Σ S(a, y) shortcut | edge_auroc | "
          "edge_auroc without shortcut pairs |\n|---|---|---|---|---|---|---|")
    for mdir in sorted((args.graphs / args.task).iterdir()):
        rows = [analyse(s) for s in sorted(mdir.iterdir()) if (s / "projection.safetensors").exists()]
        if not rows:
            continue
        counts = Counter(v for r in rows for v in str(r["verdicts"]).split(","))
        n = sum(counts.values())
        cells = [", ".join(f"{v} {c}/{n}" for v, c in counts.most_common())]
        for k in ("path", "shortcut", "edge_auroc", "edge_auroc_no_shortcut"):
            vals = [float(r[k]) for r in rows]
            cells.append(f"{statistics.mean(vals):.3f}" + (f" ± {statistics.stdev(vals):.3f}" if len(vals) > 1 else ""))
        print(f"| {mdir.name} | {len(rows)} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
