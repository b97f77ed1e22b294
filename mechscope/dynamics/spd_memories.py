"""SPD on a trained flip-flop GRU, joined with its fixed points (issue 16, Build item 3).

SPD decomposes `nn.Linear` weights and reads each one's input once per forward pass, so it runs on
the GRU's *step map* x = [h, u] ↦ h' (`zoo.recurrent_cells.LinearGRU`: nn.GRU's equations with
W_ih, W_hh as the Linear modules `ih`, `hh`), on (state, input) pairs visited by the network on
the task's own sequences — blind: the sampler and the model, no memories. Then:

- **importance map** (blind): every subcomponent's causal importance g_c at every fixed point
  found (x = [h*, 0]): which parts of W_ih, W_hh the dynamics use at each memory and saddle;
- **ablation** (reads the truth, in `evaluate`): from each memory's stable fixed point, run the
  step map with subcomponents ablated (mask 0, all others 1) for `ablation_steps` zero-input steps
  and read the outputs out; bit j of memory m *changes* when its output is no longer within 0.5 of
  the memory's ±1 (the scorer's `MEMORY_TOL`). The candidate sets are every single subcomponent
  and, per bit b, the union of the subcomponents whose single ablation changes bit b and nothing
  else; a bit is *specific* when some candidate changes it in some memory and changes no other bit
  in any memory (`per_bit_specificity`, with its coverage: the share of memories it changes).

    spd = fit_step_spd(model, task_facts, settings, seed)        # an SPDDecomposition
    ci = importance_at(spd, points)                              # [K, sites·C]
    single = ablation_changes(spd, points, memories, readout, singles(spd), steps)
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import Tensor, nn

from mechscope.config import Config
from mechscope.core import GroundTruth, Task, TaskFacts, seeded_generator
from mechscope.dynamics.scoring import MEMORY_TOL
from mechscope.zoo.recurrent_cells import LinearGRU

POOL_SEQUENCES = 256
SITES = ("ih", "hh")


class StepPoolConfig(Config):
    """Where the step task's (state, input) pairs come from (it is keyed by its base task)."""

    base: str = ""
    base_config: dict[str, Any] = Field(default_factory=dict)
    n_sequences: int = POOL_SEQUENCES


class StepTask(Task):
    """The one-step map of a recurrent target as an SPD task: x = [h_{t−1}, u_t] drawn from the
    network's own trajectories on its task's sequences, y = h_t. Not registered (no weight-space
    truth: what is scored is the memories, through the dynamics)."""

    name = "gru-step"
    summary = "one step of a trained GRU on its visited (state, input) pairs"
    family = "rnn-step"
    kind = "decomposition"
    Cfg = StepPoolConfig

    def __init__(self, step: LinearGRU, task: TaskFacts | Task, seed: int) -> None:
        super().__init__(StepPoolConfig(base=task.name, base_config=task.config.model_dump(mode="json")))
        self.name = f"{task.name}-step"  # type: ignore[misc]
        gen = seeded_generator(seed, 17)
        u = task.sample(POOL_SEQUENCES, gen).float()  # (B, T, m)
        h = torch.zeros(u.shape[0], step.hidden_size)
        rows = []
        with torch.no_grad():
            for t in range(u.shape[1]):
                x = torch.cat([h, u[:, t]], dim=-1)
                rows.append(x)
                h = step(x)
        self.pool = torch.cat(rows)  # (B·T, H + m)
        self._width = int(self.pool.shape[1])

    @property
    def n_features(self) -> int:
        return self._width

    def make_target(self, target_seed: int, progress: Any = None) -> nn.Module:
        raise NotImplementedError("a step task wraps an already trained target; it trains none")

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        return self.pool[torch.randint(self.pool.shape[0], (n,), generator=generator)]

    def ground_truth(self, target: nn.Module) -> GroundTruth:
        return GroundTruth([], n_features=self._width, represented=[], notes=["scored through the dynamics"])


def step_target(model: nn.Module) -> LinearGRU:
    """The LinearGRU of a flip-flop GRU target, or a one-line error for another cell."""
    rnn = getattr(model, "rnn", None)
    if not isinstance(rnn, nn.GRU):
        raise ValueError(f"spd=true needs a GRU target (cell=gru); got {type(rnn or model).__name__}")
    return LinearGRU.from_gru(rnn).eval()


def fit_step_spd(model: nn.Module, task: TaskFacts | Task, settings: dict[str, Any], seed: int) -> Any:
    """SPD (the registry's `spd` method, blind) on the target's step map; returns its decomposition."""
    from mechscope.decompose.registry import FitContext, fit_blind, get_method

    spec = get_method("spd")
    step = step_target(model)
    step_task = StepTask(step, task, seed)
    config = spec.Cfg.model_validate({"modules": list(SITES), **settings}).resolved(step_task)
    return fit_blind(spec, step, step_task, config, FitContext(seed=seed))


def importance_at(spd: Any, points: Tensor) -> Tensor:
    """Causal importance of every subcomponent at x = [h*, 0]: [K, Σ_sites C] (sites in `SITES` order)."""
    step: LinearGRU = spd.target
    x = torch.cat([points.float(), torch.zeros(points.shape[0], step.input_size)], dim=-1)
    ci = spd.activity(x)
    return torch.cat([ci[s] for s in SITES], dim=-1)


def singles(spd: Any) -> list[list[tuple[str, int]]]:
    """One ablation set per subcomponent: [(site, index)], sites in `SITES` order."""
    return [[(s, c)] for s in SITES for c in range(spd.n_components(s))]


def ablation_changes(
    spd: Any,
    points: Tensor,
    memories: Tensor,
    readout: Any,
    sets: list[list[tuple[str, int]]],
    n_steps: int,
) -> Tensor:
    """bool [S, M, bits]: with set s ablated, from memory m's fixed point points[m], after n_steps
    zero-input steps bit j's output is no longer within MEMORY_TOL of memories[m, j]."""
    step: LinearGRU = spd.target
    S, M = len(sets), points.shape[0]
    masks = {s: torch.ones(S, M, spd.n_components(s)) for s in SITES}
    for i, chosen in enumerate(sets):
        for site, c in chosen:
            masks[site][i, :, c] = 0.0
    flat = {s: m.reshape(S * M, -1) for s, m in masks.items()}
    h = points.float().repeat(S, 1)  # (S·M, H): set-major, like the masks
    u = torch.zeros(h.shape[0], step.input_size)
    with torch.no_grad():
        for _ in range(n_steps):
            h = spd.forward_with(torch.cat([h, u], dim=-1), flat)
        y = readout(h.double()).reshape(S, M, -1)
    mem = memories.to(y.dtype)[None]  # (1, M, bits)
    return (y - mem).abs() >= MEMORY_TOL


def bit_sets(single: Tensor) -> list[list[int]]:
    """Per bit b, the ablation sets (indices into single's first axis) that change bit b in some
    memory and no other bit in any memory. single: bool [S, M, bits]."""
    changed = single.any(dim=1)  # (S, bits)
    only = changed & (changed.sum(-1, keepdim=True) == 1)
    return [only[:, b].nonzero().flatten().tolist() for b in range(single.shape[-1])]


def per_bit_specificity(changes: Tensor) -> dict[str, Any]:
    """Per-bit ablation specificity: a pure function of what each candidate ablation set did.

    changes: bool [S, M, bits] — ablating set s changes bit j of memory m. For bit b, a set is a
    *witness* when it changes bit b in at least one memory and no other bit in any memory; bit b is
    specific when it has a witness, and its coverage is the largest fraction of memories whose
    bit b one witness changes (an ablation that removes one of a bit's two attractors changes it in
    half of them). Returns `specificity` (fraction of specific bits), per bit `specific`,
    `coverage` and `witness` (the set's index, or None), and `mean_coverage`."""
    if changes.dim() != 3:
        raise ValueError(f"changes has shape {tuple(changes.shape)}; expected [sets, memories, bits]")
    _, M, n = changes.shape
    per = changes.sum(dim=1)  # (S, bits): memories in which set s changes bit j
    specific: list[bool] = []
    coverage: list[float] = []
    witness: list[int | None] = []
    for b in range(n):
        others = torch.cat([per[:, :b], per[:, b + 1 :]], dim=1).sum(-1)  # (S,)
        ok = (per[:, b] > 0) & (others == 0)
        if bool(ok.any()):
            best = int(torch.where(ok, per[:, b], -1).argmax())
            specific.append(True)
            coverage.append(int(per[best, b]) / M)
            witness.append(best)
        else:
            specific.append(False)
            coverage.append(0.0)
            witness.append(None)
    return {
        "specificity": sum(specific) / n if n else 0.0,
        "specific": specific,
        "coverage": coverage,
        "mean_coverage": sum(coverage) / n if n else 0.0,
        "witness": witness,
    }


def memory_points(points: Tensor, stable: Tensor, memories: Tensor, readout: Any) -> tuple[Tensor, Tensor]:
    """(the stable fixed point of each memory that has one [M', H], those memories [M', bits]):
    the first stable point whose readout is within MEMORY_TOL of the memory (as `score_flipflop`)."""
    pts, mem = [], []
    y = readout(points).to(memories.dtype)
    for m in range(memories.shape[0]):
        hit = stable & ((y - memories[m]).abs() < MEMORY_TOL).all(-1)
        if bool(hit.any()):
            pts.append(points[int(hit.nonzero()[0])])
            mem.append(memories[m])
    if not pts:
        return points[:0], memories[:0]
    return torch.stack(pts), torch.stack(mem)


def ablation_report(spd: Any, points: Tensor, memories: Tensor, readout: Any, n_steps: int) -> dict[str, Any]:
    """The whole per-bit ablation analysis at the memories' fixed points (reads the truth)."""
    if points.shape[0] == 0:
        return {"spd_per_bit_specificity": 0.0, "spd_note": "no memory has a stable fixed point"}
    base = ablation_changes(spd, points, memories, readout, [[]], n_steps)[0]  # nothing ablated
    all_sets = singles(spd)
    # only what an ablation changes counts: a memory the unablated decomposition already loses
    # (SPD not faithful there) is not the ablation's doing
    single = ablation_changes(spd, points, memories, readout, all_sets, n_steps) & ~base
    chosen = bit_sets(single)
    unions = [[p for i in idx for p in all_sets[i]] for idx in chosen if idx]
    joint = ablation_changes(spd, points, memories, readout, unions, n_steps) & ~base
    score = per_bit_specificity(torch.cat([single, joint]))  # candidates: every single, each bit's union
    names = [f"{s}[{c}]" for s, c in (st[0] for st in all_sets)] + [f"union of bit {b}'s" for b, i in enumerate(chosen) if i]
    return {
        "spd_per_bit_specificity": score["specificity"],
        "spd_mean_coverage": score["mean_coverage"],
        "spd_bits": score | {"witness": [None if w is None else names[w] for w in score["witness"]]},
        "spd_unablated_changes": int(base.sum()),
        "spd_components_changing_a_memory": int(single.any(dim=(1, 2)).sum()),
        "spd_components_changing_one_bit": [len(i) for i in chosen],
        "spd_memories_scored": int(points.shape[0]),
    }
