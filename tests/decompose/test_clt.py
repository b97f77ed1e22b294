"""clt-topk: trains to a faithful replacement, writes into later layers, saves and loads."""

from pathlib import Path

import torch

from mechscope.circuits import build_graph, groups_of
from mechscope.decompose import FitContext, get_method, load_decomposition
from mechscope.decompose.registry import fit_blind
from mechscope.zoo import get_task


def test_clt_fits_writes_forward_and_round_trips(tmp_path: Path) -> None:
    task = get_task("boolean-circuits")
    target = task.make_target(0)
    spec = get_method("clt-topk")
    dec = fit_blind(spec, target, task, spec.Cfg(steps=300), FitContext(seed=0))
    x = task.sample(512, torch.Generator().manual_seed(1))
    y = target(x)
    mse = float((dec.forward_with(x, dec.all_on(512)) - y).pow(2).mean())
    empty = float((dec.forward_with(x, {s: torch.zeros(dec.n_components(s)) for s in dec.sites}) - y).pow(2).mean())
    assert mse < 0.25 * empty  # 300 steps: ≈ 0.10 · empty (1,000 steps: 0.003 · empty)
    groups = groups_of(dec)
    assert sorted(groups[0].writes) == ["layers.0.mlp_out", "layers.1.mlp_out"] and list(groups[1].writes) == ["layers.1.mlp_out"]
    graph = build_graph(dec, task.onehot())
    assert graph.n_edges > 0
    dec.save(tmp_path)
    back = load_decomposition(tmp_path, target)
    torch.testing.assert_close(back.forward_with(x, back.all_on(512)), dec.forward_with(x, dec.all_on(512)))
