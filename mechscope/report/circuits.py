"""The report's "Circuits" section (issue 15): one layered attribution graph per task × method, and
whether each method finds the multi-hop paths or a shortcut.

It reads what `benchmarks/circuits_table.py --graphs BENCH/circuits --out BENCH/circuits_rows.jsonl`
writes: per task / method / seed a graph (`graph.json` + `graph.safetensors`, its strongest edges),
the projection onto the true nodes (`projection.safetensors`: each node's true match) and the true
circuit (`truth.json`); the rows carry the metrics and the hop verdicts.

A picture: columns are the graph's layers (inputs, each site in forward order, outputs), the
`top` strongest edges by normalised weight (each edge's share of what its destination receives)
with width ∝ that share; nodes are labelled with the true feature they stand for. Edge colour says
whether the pair they join is a true edge (green), a false one (red: a shortcut when it skips an
intermediate) or has an endpoint that stands for no true feature (grey).
"""

from __future__ import annotations

import html
import json
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from safetensors.torch import load_file

from mechscope.circuits.graph import AttributionGraph
from mechscope.report import figures

TOP_EDGES = 40
KEYS = ("edge_auroc", "cpr", "cmd", "node_recall")


def edge_classes(graph: AttributionGraph, assign: torch.Tensor, true_edges: set[tuple[int, int]]) -> list[str]:
    """Per edge: "true", "false" (both ends stand for true nodes, the pair is not a true edge) or
    "unmatched"."""
    out = []
    for s, d in zip(graph.src.tolist(), graph.dst.tolist(), strict=True):
        a, b = int(assign[s]), int(assign[d])
        out.append("unmatched" if a < 0 or b < 0 else "true" if (a, b) in true_edges else "false")
    return out


def layered_figure(graph: AttributionGraph, assign: torch.Tensor, truth: dict[str, Any], title: str,
                   top: int = TOP_EDGES) -> bytes:  # fmt: skip
    """PNG of the strongest `top` edges of `graph`, laid out by layer (see the module docstring)."""
    share = graph.normalized()
    k = min(top, graph.n_edges)
    idx = share.topk(k).indices if k else torch.zeros(0, dtype=torch.long)
    idx = idx[graph.weight[idx] > 1e-6 * float(graph.weight.max())] if k else idx  # float-noise edges
    src, dst, w = graph.src[idx].tolist(), graph.dst[idx].tolist(), share[idx].tolist()
    used = sorted(set(src) | set(dst))
    by_layer: dict[int, list[int]] = {}
    for n in used:
        by_layer.setdefault(graph.nodes[n].layer, []).append(n)
    pos = {}
    for layer, ns in by_layer.items():
        for j, n in enumerate(sorted(ns, key=lambda n: (int(assign[n]), graph.nodes[n].index))):
            pos[n] = (layer, (j + 0.5) / len(ns))
    names = [n["name"] for n in truth["nodes"]]
    true_edges = {(p, q) for p, q in truth["edges"]}
    sub = AttributionGraph(graph.nodes, torch.tensor(src, dtype=torch.long), torch.tensor(dst, dtype=torch.long),
                           torch.tensor(w), torch.tensor(w))  # fmt: skip
    colours = {"true": "#2a9d48", "false": "#d62828", "unmatched": "#9a9a9a"}
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    wmax = max(w, default=1.0)
    for (s, d, ww), cls in zip(zip(src, dst, w, strict=True), edge_classes(sub, assign, true_edges), strict=True):
        (x0, y0), (x1, y1) = pos[s], pos[d]
        ax.plot([x0, x1], [y0, y1], color=colours[cls], lw=0.5 + 3.5 * ww / wmax, alpha=0.7, zorder=1)
    for n, (x, y) in pos.items():
        a = int(assign[n])
        ax.scatter([x], [y], s=60, color="#264653" if a >= 0 else "#cccccc", zorder=2)
        label = names[a] if a >= 0 else graph.nodes[n].name
        ax.annotate(label, (x, y), fontsize=6, xytext=(4, 2), textcoords="offset points")
    layers = sorted(by_layer)
    ax.set_xticks(layers)
    ax.set_xticklabels(["inputs" if layer == 0 else "outputs" if layer == max(layers) and layer > 0 else f"site {layer}"
                        for layer in layers], fontsize=7)  # fmt: skip
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    for cls, c in colours.items():
        ax.plot([], [], color=c, label=cls)
    ax.legend(fontsize=6, loc="upper right", frameon=False)
    return figures.png(fig)


def load_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [r for r in (json.loads(line) for line in path.read_text().splitlines() if line.strip()) if "error" not in r]


def verdict_text(rows: list[dict[str, Any]]) -> str:
    """"shortcut 8/12, multi-hop 4/12" over the hops of every seed, or "–" without multi-hop circuits."""
    counts = Counter(h["verdict"] for r in rows for h in r.get("hops", []))
    n = sum(counts.values())
    return ", ".join(f"{v} {c}/{n}" for v, c in counts.most_common()) if n else "–"


def circuits_section(bench: Path) -> str:
    """The whole section; "" when the bench has no circuit results."""
    rows = load_rows(bench / "circuits_rows.jsonl")
    gdir = bench / "circuits"
    if not rows and not gdir.is_dir():
        return ""
    parts = ["<h2 id='circuits'>Circuits: attribution graphs against the true circuit</h2>",
             "<p class='note'>Mean over seeds. Hops: for each true two-hop step h → y, <b>multi-hop</b> = h has a "
             "component and y's incoming weight from h beats its weight straight from h's operands; "
             "<b>shortcut</b> = the operands are wired to y at least as strongly; <b>missing</b> = neither.</p>",
             "<table><tr><th>task</th><th>method</th><th>seeds</th>"
             + "".join(f"<th>{k}</th>" for k in KEYS) + "<th>hops</th></tr>"]
    cells: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        cells.setdefault((r["task"], r["method"]), []).append(r)
    for (task, method), rs in cells.items():
        vals = []
        for k in KEYS:
            v = [float(r[k]) for r in rs if k in r]
            vals.append(f"{statistics.mean(v):.3f}" if v else "–")
        parts.append(f"<tr><td>{html.escape(task)}</td><td>{html.escape(method)}</td><td>{len(rs)}</td>"
                     + "".join(f"<td>{v}</td>" for v in vals) + f"<td>{html.escape(verdict_text(rs))}</td></tr>")
    parts.append("</table>")
    if gdir.is_dir():
        for task_dir in sorted(p for p in gdir.iterdir() if p.is_dir()):
            parts.append(f"<h3>{html.escape(task_dir.name)}: strongest {TOP_EDGES} edges (seed 0)</h3>")
            for mdir in sorted(p for p in task_dir.iterdir() if p.is_dir()):
                run = mdir / "seed0"
                if not (run / "projection.safetensors").is_file():
                    continue
                graph = AttributionGraph.load(run)
                assign = load_file(str(run / "projection.safetensors"))["assign"]
                truth = json.loads((run / "truth.json").read_text())
                verdict = verdict_text(cells.get((task_dir.name, mdir.name), []))
                title = f"{task_dir.name} × {mdir.name} — hops: {verdict}"
                png = layered_figure(graph, assign, truth, title)
                parts.append(f"<img alt='{html.escape(title)}' src='{figures.data_uri(png)}'>")
    return "\n".join(parts)
