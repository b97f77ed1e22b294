"""The circuit table: edge_auroc, cpr, cmd, node_recall per task × method × seed.

Each method is fitted blind at every MLP of the task (`mechscope.circuits.tasks`), its graph built
on the task's `onehot` set (boolean-circuits: the truth tables) and scored against the true
circuit. Calibration rows: `oracle` (a graph of the true edges) and `random` (random weights).
`target_seed` = the seed. Rows are appended to --out as JSON lines (resumable: done rows are
skipped), and a markdown table of means (± std over seeds) is printed. With --graphs DIR each
row's graph (its strongest ≤ 20,000 edges) and its projection onto the true nodes are saved under
DIR/<task>/<method>/seed<k>/ (`save_scored`): the shortcut verdict and the report's drawings read them.

    .venv/bin/python benchmarks/circuits_table.py --tasks boolean-circuits,resid-mlp-2l \
        --methods oracle,random,neurons,sae-topk,transcoder-topk,clt-topk,spd --seeds 3 --out rows.jsonl
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch
import yaml

from mechscope.circuits import build_graph, groups_of
from mechscope.circuits.score import (
    calibration_graph,
    edge_scores,
    match,
    matching,
    project,
    save_scored,
    score_circuit,
    shortcut_report,
)
from mechscope.circuits.tasks import circuit_truth, fit_for_circuits
from mechscope.decompose import load_decomposition
from mechscope.decompose.base import Decomposition
from mechscope.decompose.registry import get_method
from mechscope.metrics.circuits import edge_auroc, node_recall
from mechscope.zoo import get_task

KEYS = ("edge_auroc", "cpr", "cmd", "node_recall")
STEPS = {("boolean-circuits", "spd"): {"steps": 2000}}
"""Per task × method settings for this table (others: the method's defaults — on resid-mlp SPD's
fast preset row, 1,500 steps, the one that reaches issue 19's recovery bar)."""


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def settings(task: str, method: str, steps: int | None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The method's settings in this table: STEPS, with --steps (and --set) overriding every trained method's."""
    sets = dict(STEPS.get((task, method), {}))
    if method not in ("oracle", "random", "neurons"):
        sets.update({"steps": steps} if steps is not None else {})
        sets.update(extra or {})
    return sets


def reuse_run(run_dir: Path, task_name: str, method: str, seed: int, sets: dict[str, Any], target: Any) -> Decomposition:
    """A saved decomposition in place of this row's fit — only when it is the same fit: same task,
    method, seed and target seed, and the method config this table would resolve (the module list
    aside: the run's patterns name the same MLP sites). Either a `mechscope decompose` run directory
    (its config.yaml says all that) or a fit this table saved under --graphs
    (G/<task>/<method>/seed<k>/decomposition: the path says the row, decomposition.json the settings)."""
    spec = get_method(method)
    mine = spec.Cfg(**sets).resolved(get_task(task_name)).model_dump()
    if not (run_dir / "config.yaml").is_file() and (run_dir / "decomposition.json").is_file():
        want_path = (task_name, method, f"seed{seed}", "decomposition")
        if run_dir.parts[-4:] != want_path:
            raise ValueError(f"--from-run {run_dir}: a table-saved fit must be at …/{'/'.join(want_path)}")
        saved = json.loads((run_dir / "decomposition.json").read_text())["config"].get("settings", {})
        diff = {k: (v, mine[k]) for k, v in saved.items() if k in mine and k != "modules" and mine[k] != v}
        if diff:
            raise ValueError(f"--from-run {run_dir}: method config differs from this table's (saved, table): {diff}")
        return load_decomposition(run_dir, target)
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    want = {"task": task_name, "method": method, "seed": seed, "target_seed": seed}
    got = {k: cfg.get(k) for k in want}
    if got != want:
        raise ValueError(f"--from-run {run_dir}: is {got}, this row is {want}")
    diff = {k: (v, mine.get(k)) for k, v in cfg["method_config"].items() if k != "modules" and mine.get(k) != v}
    if diff:
        raise ValueError(f"--from-run {run_dir}: method config differs from this table's (run, table): {diff}")
    return load_decomposition(run_dir / "decomposition", target)


def row(task_name: str, method: str, seed: int, graphs: Path | None = None, steps: int | None = None,
        from_run: Path | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    task = get_task(task_name)
    torch.manual_seed(seed)
    target = task.make_target(seed)
    truth = circuit_truth(task, target)
    c0 = cpu_s()
    sets = settings(task_name, method, steps, extra)
    dec: Decomposition | None = None
    x = task.onehot()
    if method in ("oracle", "random"):
        g, groups = calibration_graph(truth, method, torch.Generator().manual_seed(seed))
        s, lab, by = edge_scores(g, groups, truth)
        _, sim = match(g, groups, truth, 0.7)
        inter = truth.intermediates() or truth.features()
        feats = truth.features()
        out: dict[str, Any] = {"edge_auroc": edge_auroc(s, lab, by), "node_recall": node_recall(sim[[feats.index(i) for i in inter]])}
        graph = g
        out.update(shortcut_report(project(g, match(g, groups, truth, 0.7)[0], truth), sim, truth, 0.9))
    else:
        dec = reuse_run(from_run, task_name, method, seed, sets, target) if from_run else fit_for_circuits(method, target, task, seed, sets)
        graph = build_graph(dec, x)
        groups = groups_of(dec)
        out = score_circuit(dec, x, graph, groups, truth)
        out.pop("faithfulness_curve")
    if graphs is not None:
        assign, sim = match(graph, groups, truth, 0.7) if dec is None else matching(dec, x, graph, groups, truth, 0.7)
        save_scored(graphs / task_name / method / f"seed{seed}", graph, truth, assign, sim, project(graph, assign, truth))
        if dec is not None and from_run is None:  # the fit itself, so a row can be rescored without refitting
            dec.save(graphs / task_name / method / f"seed{seed}" / "decomposition")
    provenance = {"from_run": str(from_run)} if from_run else {}
    return {"task": task_name, "method": method, "seed": seed, "settings": sets, **provenance,
            **out, "cpu_s": cpu_s() - c0}


def table(rows: list[dict[str, Any]], tasks: list[str], methods: list[str]) -> str:
    """Markdown: one line per task × method × settings (rows of different settings never share a
    mean; a later row of the same cell and seed replaces an earlier one)."""
    latest: dict[tuple[str, str, str, int], dict[str, Any]] = {}
    for r in rows:
        sets = r.get("settings")
        sets = settings(r["task"], r["method"], None) if sets is None else sets  # rows from before the field
        latest[(r["task"], r["method"], json.dumps(sets, sort_keys=True), r["seed"])] = {**r, "settings": sets}
    lines = [f"| task | method | settings | seeds | {' | '.join(KEYS)} | hops (all seeds) | cpu_s / seed |",
             f"|---|---|---|---|{'---|' * (len(KEYS) + 2)}"]
    for t in tasks:
        for m in methods:
            cells = sorted({k[2] for k in latest if k[:2] == (t, m)})
            if not cells:
                lines.append(f"| {t} | {m} | – | 0 | not run |")
            for sets_key in cells:
                rs = [r for k, r in sorted(latest.items()) if k[:3] == (t, m, sets_key)]
                ok = [r for r in rs if "error" not in r]
                shown = ", ".join(f"{k}={v}" for k, v in json.loads(sets_key).items()) or "defaults"
                if any(r.get("from_run") for r in ok):
                    shown += f" (seeds {', '.join(str(r['seed']) for r in ok if r.get('from_run'))} scored from a decompose run)"
                if not ok:
                    lines.append(f"| {t} | {m} | {shown} | 0 | failed: {rs[0]['error'][:60]} |")
                    continue
                vals = []
                for k in KEYS:
                    v = [r[k] for r in ok if k in r]
                    vals.append("–" if not v else f"{v[0]:.3f}" if len(v) == 1 else f"{statistics.mean(v):.3f} ± {statistics.stdev(v):.3f}")
                hops = Counter(h["verdict"] for r in ok for h in r.get("hops", []))
                n_hops = sum(hops.values())
                vals.append(", ".join(f"{v} {n}/{n_hops}" for v, n in hops.most_common()) or "–")
                vals.append(f"{statistics.mean(r.get('cpu_s', 0.0) for r in ok):.0f}")
                lines.append(f"| {t} | {m} | {shown} | {len(ok)} | {' | '.join(vals)} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", default="boolean-circuits,resid-mlp-2l,resid-mlp-3l")
    ap.add_argument("--methods", default="oracle,random,neurons,sae-topk,transcoder-topk,clt-topk,spd")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--seed-list", default=None, help="comma-separated seeds to run instead of 0 … --seeds − 1")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--print-only", action="store_true", help="print the table of --out's rows, run nothing")
    ap.add_argument("--steps", type=int, default=None, help="training steps of every trained method (default: STEPS / theirs)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a method setting for every trained method of this run (YAML value); the row's settings say it")
    ap.add_argument("--out", type=Path, default=Path("circuits_rows.jsonl"))
    ap.add_argument("--graphs", type=Path, default=None, help="save each row's graph + projection here")
    ap.add_argument("--from-run", action="append", default=[], metavar="TASK:METHOD:SEED=RUN_DIR",
                    help="score this `mechscope decompose` run (or a fit saved under --graphs) instead of fitting the row (same config only)")
    args = ap.parse_args()
    runs: dict[tuple[str, str, int], Path] = {}
    for spec in args.from_run:
        key, _, path = spec.partition("=")
        t, m, k = key.split(":")
        runs[(t, m, int(k))] = Path(path)
    extra: dict[str, Any] = {}
    for item in args.set:
        key, eq, value = item.partition("=")
        if not eq:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE")
        extra[key] = yaml.safe_load(value)
    torch.set_num_threads(args.threads)
    done = set()
    if args.out.exists():
        for line in args.out.read_text().splitlines():
            r = json.loads(line)
            done.add((r["task"], r["method"], r["seed"]))
    seeds = [int(k) for k in args.seed_list.split(",")] if args.seed_list else list(range(args.seeds))
    for seed in [] if args.print_only else seeds:  # seed-major: every cell gets one seed before any gets three
        for t in args.tasks.split(","):
            for m in args.methods.split(","):
                if (t, m, seed) in done:
                    continue
                start = time.perf_counter()
                try:
                    r = row(t, m, seed, args.graphs, args.steps, runs.get((t, m, seed)), extra)
                except Exception as err:  # a failed cell is a row, not a crash of the whole table
                    r = {"task": t, "method": m, "seed": seed, "error": f"{type(err).__name__}: {err}"}
                r["wall_s"] = time.perf_counter() - start
                with args.out.open("a") as f:
                    f.write(json.dumps(r) + "\n")
                print(json.dumps(r), flush=True)
    rows = [json.loads(line) for line in args.out.read_text().splitlines()]
    print(table(rows, args.tasks.split(","), args.methods.split(",")))

if __name__ == "__main__":
    main()
