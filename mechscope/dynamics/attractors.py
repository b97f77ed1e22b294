"""Is each memory of a trained target an attractor at the finder's stable band? (acceptance)

A flip-flop target claims 2ⁿ memories, each a *stable* fixed point: |λ|max < 1 − `STABLE_TOL`
(METHODS.md), the band the finder uses to call a point stable. Holding each memory for 500
zero-input steps does not show that: a slow attractor with |λ|max 0.9995 holds its output for
thousands of steps, yet the finder rightly calls it marginal (issue 16, 4-bit GRU seed 2: 8 of
its 16 memories at |λ|max 0.99907–0.99995). The band is not the thing to widen — loosening it
admits non-memory points. The target is what must meet the truth. So, per memory m:

1. run the step map in float64 from the zero state: one step with input m, then `hold_steps`
   steps at u = 0 (the hold trajectory the acceptance bar already runs);
2. damped Newton on F(h, 0) − h = 0 from its end state (the finder's own `newton_refine`);
3. the memory is an attractor when Newton reached a fixed point (q < `Q_FIXED`, the finder's
   `q_fixed`), its readout still reproduces m (every output within 0.5 of ±1, the scorer's rule)
   and the Jacobian there has |λ|max < 1 − tol.

Cost: 2ⁿ points, one batched Newton (≤ 50 Jacobians of the state) and one eigen-decomposition:
well under a second for the 5-bit, 64-unit GRU — nothing next to training.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from mechscope.dynamics.finder import FinderConfig, newton_refine, speed
from mechscope.dynamics.linearize import STABLE_TOL, jacobians
from mechscope.dynamics.wrappers import StepFunction

Q_FIXED: float = FinderConfig.model_fields["q_fixed"].default
"""A Newton end point with q below this is a fixed point (the finder's default `q_fixed`)."""
MEMORY_TOL = 0.5
"""A readout reproduces a memory when every output is within this of its ±1 (here and in
`score_flipflop`, which imports it: the scorer imports the zoo, the zoo this module)."""


def memory_attractors(
    step: StepFunction,
    readout: Callable[[Tensor], Tensor],
    memories: Tensor,
    hold_steps: int,
    tol: float = STABLE_TOL,
    newton_steps: int = 50,
) -> dict[str, Any]:
    """Check every memory [M, bits] is a stable fixed point of `step` at u = 0 (module docstring).

    `readout` maps states [M, n] to outputs [M, bits]. Returns "attractors_ok" (all memories pass),
    per-memory "memory_lambda_max" and "memory_q", "n_attractors" (how many pass) and
    "worst_lambda_max" (the largest |λ|max over the memories)."""
    mem = memories.to(torch.float64)
    n_mem = mem.shape[0]
    zero = torch.zeros(step.input_size, dtype=torch.float64)
    with torch.no_grad():
        h = step(torch.zeros(n_mem, step.state_size, dtype=torch.float64), mem)
        for _ in range(hold_steps):
            h = step(h, zero.expand(n_mem, -1))
    h = newton_refine(step, h.detach(), zero, newton_steps)
    with torch.no_grad():
        q = speed(step, h, zero.expand(n_mem, -1))
        y = readout(h).to(torch.float64)
    lam = torch.linalg.eigvals(jacobians(step, h, zero.expand(n_mem, -1)).detach()).abs().max(-1).values
    fixed = q < Q_FIXED
    clean = ((y - mem).abs() < MEMORY_TOL).all(-1)
    stable = lam < 1 - tol
    ok = fixed & clean & stable
    return {
        "attractors_ok": bool(ok.all()),
        "n_attractors": int(ok.sum()),
        "worst_lambda_max": round(float(lam.max()), 6),
        "memory_lambda_max": [round(float(v), 6) for v in lam],
        "memory_q": [float(v) for v in q],
    }
