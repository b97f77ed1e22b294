"""`random`: random rank-1 components — the floor of the yardstick.

A calibration method: as many Gaussian rank-1 components per site as that site has true rank
(rank-1 mechanisms plus the rank of dense ones), each scaled to carry ‖W‖_F/√C of the weight's
norm (C random near-orthogonal components then have about ‖W‖ in total). Activity mimics a causal
importance: min(1, |v̂_c · a(x)|), a(x) the site's input. Any method worth running must beat it on
every metric; if it does not, the metric cannot tell mechanisms from noise.

At sites with only activation truth, components are random unit vectors in the site's output with
activity |p_c · h(x)|; their ablation is a no-op (they do not reconstruct anything).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from mechscope.bounds import Count
from mechscope.config import Config
from mechscope.core import GroundTruth, Space, TaskFacts
from mechscope.decompose.base import Decomposition, Mask, ParameterDecomposition, factored_masked_output
from mechscope.decompose.registry import FitContext, MethodSpec, always_reads_truth, register
from mechscope.hooks import capture


class RandomConfig(Config):
    n_components: Count | None = None
    """Components per site; None = that site's true rank (what a perfect decomposition needs)."""


class RandomDecomposition(ParameterDecomposition):
    kind = "random"

    def __init__(
        self, target: nn.Module, param: dict[str, tuple[Tensor, Tensor]], act: dict[str, Tensor]
    ) -> None:
        """param: {site: (U [C, o], V [C, i])}; act: {site: p [C, d]} (unit rows)."""
        super().__init__(target, [*param, *act])
        self.param = param
        self.act = act

    def components(self, site: str) -> Tensor:
        U, V = self.param[site]
        return torch.einsum("co,ci->coi", U, V)  # (C, o, i)

    def n_components(self, site: str) -> int:
        return int(self.param[site][0].shape[0] if site in self.param else self.act[site].shape[0])

    def factors(self, site: str) -> tuple[Tensor, Tensor] | None:
        if site not in self.param:
            return None
        U, V = self.param[site]
        return U.unsqueeze(-1), V.unsqueeze(-1)

    def component_outputs(self, site: str, a: Tensor, transpose: bool = False) -> Tensor:
        U, V = self.param[site]
        if transpose:
            return (a @ U.T)[:, :, None] * V[None]  # (B, C, i)
        return (a @ V.T)[:, :, None] * U[None]  # (B, C, o)

    def directions(self, site: str, space: Space) -> Tensor | None:
        if site in self.act:
            return self.act[site] if space == "activation" else None
        if space == "activation":
            U = self.param[site][0]
            return U / U.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return super().directions(site, space)

    def activity(self, x: Tensor) -> dict[str, Tensor]:
        with (
            torch.no_grad(),
            capture(self.target, list(self.param), where="input") as inputs,
            capture(self.target, list(self.act)) as outputs,
        ):
            self.target(x)
        out = {}
        for s, (_, V) in self.param.items():
            a = inputs[s].reshape(-1, V.shape[1])
            out[s] = (a @ (V / V.norm(dim=1, keepdim=True).clamp_min(1e-12)).T).abs().clamp(max=1.0)
        for s, p in self.act.items():
            out[s] = (outputs[s].reshape(-1, p.shape[1]) @ p.T).abs()
        return out

    def _masked(self, site: str, m: Tensor, module: nn.Module, transpose: bool) -> Any:
        U, V = self.param[site][0], self.param[site][1]
        return factored_masked_output(U, V, m, module, transpose)

    def forward_with(self, x: Tensor, mask: Mask) -> Tensor:
        return super().forward_with(x, {s: m for s, m in mask.items() if s in self.param})

    def state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        tensors = {f"{s}/U": U for s, (U, _) in self.param.items()}
        tensors |= {f"{s}/V": V for s, (_, V) in self.param.items()}
        tensors |= {f"{s}/p": p for s, p in self.act.items()}
        return tensors, {"param": list(self.param), "act": list(self.act)}

    @classmethod
    def from_state(
        cls, target: nn.Module, tensors: dict[str, Tensor], config: dict[str, Any]
    ) -> Decomposition:
        param = {s: (tensors[f"{s}/U"], tensors[f"{s}/V"]) for s in config["param"]}
        return cls(target, param, {s: tensors[f"{s}/p"] for s in config["act"]})


def true_rank(truth: GroundTruth, space: Space, site: str) -> int:
    """Rank a perfect decomposition needs at `site`: scored rank-1 mechanisms + dense ranks."""
    return sum(m.rank for m in truth.in_space(space, site) if m.rule != "never")


def build_random(
    target: nn.Module, truth: GroundTruth, gen: torch.Generator, n_components: int | None = None
) -> RandomDecomposition:
    modules = dict(target.named_modules())
    param: dict[str, tuple[Tensor, Tensor]] = {}
    for site in truth.sites("parameter"):
        W = modules[site].weight.detach()  # (o, i)
        assert isinstance(W, Tensor)
        C = n_components or max(true_rank(truth, "parameter", site), 1)
        U = torch.randn(C, W.shape[0], generator=gen)
        V = torch.randn(C, W.shape[1], generator=gen)
        U = U / U.norm(dim=1, keepdim=True) * (float(W.norm()) / C**0.5)  # ‖U_c V_cᵀ‖ = ‖W‖/√C
        param[site] = (U.to(W.device), (V / V.norm(dim=1, keepdim=True)).to(W.device))
    act: dict[str, Tensor] = {}
    device = next(iter(target.parameters())).device
    for site in truth.sites("activation"):
        if site in param:
            continue
        d = truth.in_space("activation", site)[0].direction.shape[0]
        C = n_components or max(true_rank(truth, "activation", site), 1)
        p = torch.randn(C, d, generator=gen)
        act[site] = (p / p.norm(dim=1, keepdim=True)).to(device)
    return RandomDecomposition(target, param, act)


def fit(target: nn.Module, task: TaskFacts, config: Config, ctx: FitContext) -> Decomposition:
    assert isinstance(config, RandomConfig)
    return build_random(target, ctx.require_truth("random (sized like the truth)"), ctx.generator(), config.n_components)


register(
    MethodSpec(
        name="random",
        summary="random rank-1 components, as many as the true rank (calibration: the floor)",
        Cfg=RandomConfig,
        reads_truth=always_reads_truth,
        fit=fit,
        family="calibration",
    )
)
