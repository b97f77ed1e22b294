"""SPD's rank-1 subcomponents, their causal-importance MLPs, and the masked forward.

Each decomposed site holds U [d_out, C] and V [C, d_in] (subcomponent c is U[:, c] V[c, :]) and, per
subcomponent, a 1 → H → 1 GELU MLP that maps the scalar V[c, :]·a(x) to pre-sigmoid causal
importance. `masked_sites` runs a target with its sites replaced by Σ_c m_c P_c in factored form
((a Vᵀ) ⊙ m) Uᵀ, for one or several groups of masks stacked along the batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from mechscope.decompose import spd_losses as L
from mechscope.decompose.activation_buffer import model_device
from mechscope.decompose.spd_presets import Kind, Site, weight_matrix
from mechscope.hooks import capture, replace_output


# --- the subcomponents and their causal-importance MLPs --------------------------------------------
class SiteComponents(nn.Module):
    """U [d_out, C], V [C, d_in] and the per-component CI MLP (1 → H → 1, GELU)."""

    importance_scale: Tensor

    def __init__(self, d_out: int, d_in: int, C: int, hidden: int) -> None:
        super().__init__()
        self.U = nn.Parameter(torch.zeros(d_out, C))
        self.V = nn.Parameter(torch.zeros(C, d_in))
        self.w1 = nn.Parameter(torch.zeros(C, hidden))
        self.b1 = nn.Parameter(torch.zeros(C, hidden))
        self.w2 = nn.Parameter(torch.zeros(C, hidden))
        self.b2 = nn.Parameter(torch.zeros(C))
        self.register_buffer("importance_scale", torch.ones(C), persistent=False)
        """Per-component weight of importance minimality (set by `init_`; not saved)."""

    @classmethod
    def for_site(cls, site: Site, C: int, hidden: int) -> SiteComponents:
        d_out, d_in = weight_matrix(site).shape
        return cls(d_out, d_in, C, hidden)

    def init_(
        self, W: Tensor, gen: torch.Generator, reads: Tensor | None = None, dense: bool = False, dense_importance: float = 1.0
    ) -> None:
        """Unit-norm random read/write vectors, each write scaled by its overlap uᵀ W v with W;
        CI MLPs Kaiming-normal (fan-in 1 in, fan-in H out), zero biases (reference code).

        With `reads` [k, d_in] (unit rows r_c; see `frequent_directions`) the first k components
        start as P_c = (W r_c) d_cᵀ, what W does along an input direction that recurs in the data,
        read through the dual vector d_c (rows of (R Rᵀ)⁺ R: d_c · r_j = δ_cj, so a component reads
        exactly zero on the other recurring directions; d_c = r_c when they are orthonormal, as for
        one-hot inputs), and the others at zero (U = 0), free to take up whatever W − Σ P_c is left. With `dense` (the
        reads are the input's principal axes: one dense mechanism, e.g. +ID's identity) those k
        start always important, g = 1 on every input (CI MLP output weights 0, bias 1.5), and their
        importance minimality is weighted by `dense_importance` (0: they stay always important; the
        spare components keep weight 1, so no extra piece comes alive to patch other sites' noise)."""
        C, H = self.w1.shape
        with torch.no_grad():
            V = torch.randn(self.V.shape, generator=gen)
            U = torch.randn(self.U.shape, generator=gen)
            V /= V.norm(dim=1, keepdim=True)
            U /= U.norm(dim=0, keepdim=True)
            U *= torch.einsum("oc,oi,ci->c", U, W.float(), V)  # overlap, (C,)
            if reads is not None:
                k = reads.shape[0]
                V[:k] = torch.linalg.pinv(reads @ reads.T) @ reads  # the dual read vectors
                U[:, :k] = W.float() @ reads.T  # (d_out, k)
                U[:, k:] = 0
            self.V.copy_(V)
            self.U.copy_(U)
            self.w1.copy_(torch.randn(C, H, generator=gen) * 2**0.5)
            self.w2.copy_(torch.randn(C, H, generator=gen) * (2 / H) ** 0.5)
            if reads is not None:  # the spare components start unimportant (g = 0 on every input)
                self.w2[reads.shape[0] :] = 0
                self.b2[reads.shape[0] :] = -1
            if reads is not None and dense:
                self.w2[: reads.shape[0]] = 0
                self.b2[: reads.shape[0]] = 1.5
                self.importance_scale[: reads.shape[0]] = dense_importance

    def ramp_ci_(self, k: int, a: Tensor, lo: float = 0.05, hi: float = 0.25) -> None:
        """Start the first k CI MLPs on g(s) ≈ clamp((|s| − lo·τ) / ((hi − lo)·τ), 0, 1), τ the 90th
        percentile of |s| = |V[c]·a| over the inputs a [N, d_in] that the component reads: important
        wherever it reads its direction, of either sign, and not on the rest (two GELU units)."""
        with torch.no_grad():
            s = (a.reshape(-1, a.shape[-1]).float() @ self.V[:k].T).abs()  # (N, k)
            tau = torch.stack([col[col > 1e-6].quantile(0.9) if (col > 1e-6).any() else col.new_ones(()) for col in s.T])
            kappa = 8 / tau  # sharp enough that GELU ≈ ReLU at the ramp
            self.w1[:k, :2] = torch.stack([kappa, -kappa], 1)
            self.b1[:k, :2] = -(kappa * lo * tau).unsqueeze(1)
            self.w2[:k] = 0
            self.w2[:k, :2] = (1 / (kappa * (hi - lo) * tau)).unsqueeze(1)
            self.b2[:k] = 0

    def read(self, kind: Kind, a: Tensor) -> Tensor:
        """Component activations V[c, :]·a, [..., C] (an embedding reads V's column at the index)."""
        return nn.functional.embedding(a, self.V.T) if kind == "embedding" else a @ self.V.T

    def ci_pre(self, inner: Tensor) -> Tensor:
        return L.ci_mlp(inner, self.w1, self.b1, self.w2, self.b2)  # (..., C)

    def weight(self) -> Tensor:
        return self.U @ self.V  # (d_out, d_in)


def as_components(comps: nn.ModuleList) -> list[SiteComponents]:
    """The typed view of a ModuleList of SiteComponents."""
    return [c for c in comps if isinstance(c, SiteComponents)]


def _fit_mask(m: Tensor, inner: Tensor) -> Tensor:
    """Broadcast a mask given per example ([B, C] or [C]) to component activations [B, ..., C]."""
    m = m.to(inner.device)
    if m.dim() == 1 or m.shape == inner.shape:
        return m
    if m.dim() == 2 and m.shape[0] == inner.shape[0]:
        return m.reshape(m.shape[0], *([1] * (inner.dim() - 2)), m.shape[-1])
    return m.reshape(inner.shape)


def masked_output(site: Site, comp: SiteComponents, a: Tensor, m: Tensor, transpose: bool, module: nn.Module) -> Tensor:
    """Σ_c m_c P_c a (+ bias) in factored form: ((a Vᵀ) ⊙ m) Uᵀ, or ((a U) ⊙ m) V for a tied Wᵀ."""
    inner = a @ comp.U if transpose else comp.read(site.kind, a)  # (..., C)
    out = (inner * _fit_mask(m, inner)) @ (comp.V if transpose else comp.U.T)  # (..., d)
    bias = getattr(module, "bias", None)
    return out + bias if isinstance(bias, Tensor) else out


@contextmanager
def masked_sites(
    target: nn.Module, sites: list[Site], comps: nn.ModuleList, masks: dict[str, list[Tensor | None]]
) -> Iterator[None]:
    """Within the context the target runs its sites from subcomponents with the given masks.

    The batch is G groups stacked along dim 0 (G = len of each list): group g of site s runs masked
    by masks[s][g], or with the original weight where that is None. One grouped forward computes the
    all-sites and every one-site-at-a-time reconstruction in a single pass through the model."""
    modules = dict(target.named_modules())

    def hook(site: Site, comp: SiteComponents, group_masks: list[Tensor | None], name: str, transpose: bool) -> Any:
        def fn(inputs: tuple[Any, ...], output: Tensor) -> Tensor:
            a, module = inputs[0], modules[name]
            if len(group_masks) == 1 and group_masks[0] is not None:
                return masked_output(site, comp, a, group_masks[0], transpose, module)
            chunks = zip(a.chunk(len(group_masks)), output.chunk(len(group_masks)), group_masks, strict=True)
            return torch.cat(
                [o if m is None else masked_output(site, comp, ai, m, transpose, module) for ai, o, m in chunks]
            )

        return fn

    with ExitStack() as stack:
        for site, comp in zip(sites, as_components(comps), strict=True):
            gm = masks.get(site.name)
            if gm is None or all(m is None for m in gm):
                continue
            stack.enter_context(replace_output(target, site.name, hook(site, comp, gm, site.name, False)))
            for alias in site.aliases:
                stack.enter_context(replace_output(target, alias, hook(site, comp, gm, alias, True)))
        yield


def target_pass(target: nn.Module, sites: list[Site], x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """The target's output on x and the input of every site and tied alias (what the CI MLPs read),
    computed on the target's device."""
    names = [n for s in sites for n in (s.name, *s.aliases)]
    with torch.no_grad(), capture(target, names, where="input") as acts:
        y = target(x.to(model_device(target)))
    return y, dict(acts)
