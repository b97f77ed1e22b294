"""`seed_stability`: do two runs of one method on one target find the same components?

A bench-level metric (it needs two decompositions): per common site, the MMCS from A's components
to B's and from B's to A's, averaged — in parameter space when both have parameter components
there (Frobenius cosine after the optional read projection), else activation space (|cos|).
Dead components carry arbitrary directions, so pass `x` to compare only components that fire on it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mechscope.decompose.base import Decomposition
from mechscope.metrics.matching import activation_similarity, parameter_similarity, project_read
from mechscope.metrics.recovery import mmcs


def _live(dec: Decomposition, x: Tensor | None) -> dict[str, Tensor] | None:
    if x is None:
        return None
    with torch.no_grad():
        return {s: f.any(dim=0) for s, f in dec.fires(x).items()}


def seed_stability(
    dec_a: Decomposition,
    dec_b: Decomposition,
    x: Tensor | None = None,
    read_projection: dict[str, Tensor] | None = None,
) -> float | None:
    """Symmetric MMCS between two decompositions, pooled over their common sites; None if none."""
    live_a, live_b = _live(dec_a, x), _live(dec_b, x)
    sims: list[float] = []
    weights: list[int] = []
    for site in [s for s in dec_a.sites if s in dec_b.sites]:
        A, B = dec_a.directions(site, "parameter"), dec_b.directions(site, "parameter")
        space = "parameter"
        if A is None or B is None:
            A, B = dec_a.directions(site, "activation"), dec_b.directions(site, "activation")
            space = "activation"
        if A is None or B is None:
            continue
        if live_a is not None and site in live_a:
            A = A[live_a[site]]
        if live_b is not None and site in live_b:
            B = B[live_b[site]]
        if A.shape[0] == 0 or B.shape[0] == 0:
            continue
        if space == "parameter":
            # Flattened [C, o·i]: a read projection needs the matrix shape, which Π's size gives.
            proj = (read_projection or {}).get(site)
            if proj is not None:
                d_in = proj.shape[0]
                A = project_read(A.reshape(A.shape[0], -1, d_in), proj).flatten(1)
                B = project_read(B.reshape(B.shape[0], -1, d_in), proj).flatten(1)
            S = parameter_similarity(B[:, None, :], A[:, None, :])  # (n_A, n_B)
        else:
            S = activation_similarity(B, A)  # (n_A, n_B)
        sims.append(0.5 * (mmcs([S]) + mmcs([S.T])))
        weights.append(A.shape[0] + B.shape[0])
    if not sims:
        return None
    return sum(s * w for s, w in zip(sims, weights, strict=True)) / sum(weights)
