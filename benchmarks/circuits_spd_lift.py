"""Where SPD's per-feature pieces sit on a residual MLP, and the check of the scorer's lift.

SPD's fast preset keeps each mlp_out as its dense principal axes (dense_importance 0), so its
per-feature subcomponents are at `mlp_in`, whose writes U[:, c] live in the hidden layer, where the
truth has no nodes. The circuit scorer matches such a component by its effect at the nearest
downstream module with true nodes (`mechscope/circuits/lift.py`, measured on the target at the
component's operating point). This prints, per decomposed module and over the components that fire
on the one-hot inputs, the fraction of true features at |cos| ≥ 0.9 with (a) the module's own
writes (mlp_out), (b) an mlp_in component lifted statically through the MLP, W_out ReLU(±U[:, c])
(one direction per sign; biases and other components left out), and (c) the scorer's lift.

    .venv/bin/python benchmarks/circuits_spd_lift.py resid-mlp-2l 1 G/resid-mlp-2l/spd/seed1/decomposition
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import Tensor

from mechscope.circuits import groups_of
from mechscope.circuits.lift import lifted_writes
from mechscope.circuits.tasks import circuit_truth
from mechscope.decompose import load_decomposition
from mechscope.zoo import get_task


def unit(m: Tensor) -> Tensor:
    return m / m.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def main() -> None:
    task_name, seed, directory = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    task = get_task(task_name)
    torch.manual_seed(seed)
    target = task.make_target(seed)
    truth, dec, x = circuit_truth(task, target), load_decomposition(directory, target), task.onehot()
    feats = truth.features()
    lifted = lifted_writes(target, x, groups_of(dec), truth)
    print("| module | writes compared | components firing | true features there | recall at 0.9 | median best cos |")
    print("|---|---|---|---|---|---|")
    for g in groups_of(dec):
        seen: dict[str, Tensor] = {}
        mod = target.get_submodule(g.read[0])
        if g.read[1] == "output":
            hook = mod.register_forward_hook(lambda m, a, o, seen=seen: seen.setdefault("a", o))
        else:
            hook = mod.register_forward_pre_hook(lambda m, a, seen=seen: seen.setdefault("a", a[0]))
        with torch.no_grad():
            target(x)
        hook.remove()
        alive = g.fires(seen["a"].reshape(-1, seen["a"].shape[-1])).any(0)
        for module, W in g.writes.items():
            site = f"layers.{module.split('.')[1]}.mlp_out"
            rows = [f for f in feats if truth.nodes[f].site == site]
            D = unit(torch.stack([d for f in rows if (d := truth.nodes[f].direction) is not None]).float())
            if module == site:
                cand, keep, what = W.float(), alive, "its own writes (the scorer's)"
            else:
                W_out = target.get_submodule(site).weight.detach()
                cand = torch.cat([torch.relu(W) @ W_out.T, torch.relu(-W) @ W_out.T]).float()
                keep, what = torch.cat([alive, alive]), "W_out ReLU(±U) (lifted)"
            shown = [(cand, keep, what)]
            if site in lifted.get(g.site, {}):
                L = lifted[g.site][site]
                shown.append((torch.cat([L[:, 0], L[:, 1]]), keep, "the scorer's lift (lift.py)"))
            for cand, keep, what in shown:
                s = (D @ unit(cand).T).abs()[:, keep]
                best = s.max(1).values if s.shape[1] else torch.zeros(len(rows))
                print(f"| {g.site} | {what} | {int(alive.sum())}/{g.n} | {len(rows)} | {float((best >= 0.9).float().mean()):.3f}"
                      f" | {float(best.median()):.3f} |")  # fmt: skip


if __name__ == "__main__":
    main()
