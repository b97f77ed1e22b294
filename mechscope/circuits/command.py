"""`mechscope circuit RUN_DIR [--inputs onehot|data] [--out DIR] [--json]`: the body of the command.

Reads a run directory written by `mechscope decompose` (config.yaml + decomposition/), rebuilds
the target from the cache, builds the attribution graph on the chosen evaluation set, checks its
strongest edges against ablation, scores it against the task's true circuit where one is known,
and writes `graph.safetensors`, `graph.json` and `circuit.json` into --out (default
RUN_DIR/circuit). Every user mistake raises `ValueError` with a one-line message.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import yaml

from mechscope.circuits.ablation import ablation_check
from mechscope.circuits.graph import build_graph
from mechscope.circuits.groups import check_multi_site, groups_of
from mechscope.circuits.score import score_circuit
from mechscope.circuits.tasks import circuit_truth
from mechscope.files import atomic_text
from mechscope.metrics.eval_sets import EVAL_DATA_SEED, EVAL_DATA_SIZE

INPUTS = ("onehot", "data")


def run_circuit(run_dir: str | Path, inputs: str = "onehot", out: str | Path | None = None) -> dict[str, Any]:
    """Build, check, score and save the attribution graph of one run; returns circuit.json's body."""
    from mechscope.bench.run import with_task_config
    from mechscope.decompose import load_decomposition
    from mechscope.zoo import TASKS, get_task

    if inputs not in INPUTS:
        raise ValueError(f"unknown --inputs {inputs!r}; allowed: {', '.join(INPUTS)}")
    run_dir = Path(run_dir)
    cfg_path, dec_dir = run_dir / "config.yaml", run_dir / "decomposition"
    if not cfg_path.is_file() or not (dec_dir / "decomposition.json").is_file():
        raise ValueError(f"{run_dir} is not a run directory (needs config.yaml and decomposition/ from `mechscope decompose`)")
    config = yaml.safe_load(cfg_path.read_text())
    name = config.get("task")
    if name not in TASKS:
        raise ValueError(f"run directory {run_dir} names unknown task {name!r}")
    task = get_task(name)
    task = with_task_config(task, type(task.config)(**config.get("task_config", {})))
    target = task.make_target(int(config.get("target_seed", 0)))
    dec = load_decomposition(dec_dir, target)
    groups = groups_of(dec)
    check_multi_site(groups)
    x = task.onehot() if inputs == "onehot" else task.sample(EVAL_DATA_SIZE, torch.Generator().manual_seed(EVAL_DATA_SEED))
    graph = build_graph(dec, x, groups=groups)
    check = ablation_check(dec, x, graph, n_edges=200, groups=groups)
    body: dict[str, Any] = {
        "task": name, "method": config.get("method"), "seed": config.get("seed"), "target_seed": config.get("target_seed"),
        "inputs": inputs, "n_nodes": len(graph.nodes), "n_edges": graph.n_edges, "sites": [g.site for g in groups],
        "ablation_pearson": check.pearson, "ablation_rel_error": check.rel_error,
    }  # fmt: skip
    try:
        truth = circuit_truth(task, target)
    except ValueError:
        truth = None
    if truth is not None:
        body.update(score_circuit(dec, x, graph, groups, truth))
    out_dir = Path(out) if out is not None else run_dir / "circuit"
    graph.meta.update({"task": name, "method": config.get("method"), "inputs": inputs})
    graph.save(out_dir)
    atomic_text(out_dir / "circuit.json", json.dumps(body, indent=2))
    body["out"] = str(out_dir)
    return body
