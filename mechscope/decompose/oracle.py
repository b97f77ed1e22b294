"""`oracle`: the ground truth itself, as a decomposition — the top of the yardstick.

A calibration method, not a learning one: it reads the task's true mechanisms and returns them as
components, so every metric must show its best value on it (mmcs = ml2r = activity_f1 = 1,
faithfulness = 0). If the oracle does not score perfectly, the yardstick or the truth is wrong.

Parameter sites (one per weight with parameter truth), rank-1 components U[:, c] V[c, :]:
- each rank-1 mechanism T = u vᵀ is one component, active by its true rule;
- a dense rank-k mechanism is split by SVD into its k rank-1 parts, each active whenever any
  feature is non-zero;
- a "never" mechanism (the residual MLP's W_in (I − Π)) is split the same way, never active;
- whatever is left of the weight (e.g. the small columns of features TMS does not represent)
  is split by SVD into "remainder" components active on every non-empty input,
so Σ_c P_c = W to float precision and `forward_with(all on)` is the target.

Activation-only sites (truth only in activation space, e.g. the residual stream): one component
per true vector t_c, firing by its rule; ablating it subtracts its share (d̃_c·h) t̃_c of the
site's output h, with d̃ the dual basis of the distinct directions (pinv), gated by the rule.
Activity is the indicator of the true rule (1.0 / 0.0), read off the input features x.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

import torch
from torch import Tensor, nn

from mechscope.bounds import Positive
from mechscope.config import Config
from mechscope.core import ActiveRule, GroundTruth, Mechanism, Space, TaskFacts
from mechscope.decompose.base import (
    Decomposition,
    Mask,
    ParameterDecomposition,
    _batch_mask,
    factored_masked_output,
)
from mechscope.decompose.registry import FitContext, MethodSpec, always_reads_truth, register
from mechscope.hooks import replace_output


class OracleConfig(Config):
    remainder_tol: Positive = 1e-6
    """Singular values of the leftover weight below remainder_tol·‖W‖ are float noise, dropped."""


Rules = list[tuple[str, str, int | None]]
"""Per component: (name, rule, feature)."""


def rule_activity(rules: Rules, x: Tensor) -> Tensor:
    """[batch, C] 1.0 where each component's true rule holds on features x, else 0.0.

    The same rules as `active_matrix`, vectorised: the oracle has hundreds of components. A
    "dense" rule reads whether the input has any non-zero entry, whatever its shape (a tracr
    sequence is [T, tokens]); the feature rules read column `feature` of x [batch, n_features]."""
    any_feature = (x != 0).flatten(1).any(dim=1, keepdim=True)  # (B, 1)
    rule_of = [r for _, r, _ in rules]
    out = any_feature & torch.tensor([r == "dense" for r in rule_of], device=x.device)
    if any(r in ("pos", "neg", "nonzero") for r in rule_of):
        feat = torch.tensor([f if f is not None else 0 for _, _, f in rules], dtype=torch.long, device=x.device)
        xi = x[:, feat]  # (B, C)
        for rule, hit in {"pos": xi > 0, "neg": xi < 0, "nonzero": xi != 0}.items():
            out = out | (hit & torch.tensor([r == rule for r in rule_of], device=x.device))
    return out.float()


def rank_one_parts(M: Tensor, k: int | None = None, tol: float = 0.0) -> tuple[Tensor, Tensor]:
    """(U [k, o], V [k, i]) with Σ_k U[k] V[k]ᵀ = M: SVD, singular value folded into U."""
    U, S, Vh = torch.linalg.svd(M.double(), full_matrices=False)
    keep = int((tol < S).sum()) if k is None else k
    return (U[:, :keep] * S[:keep]).T.float(), Vh[:keep].float()


class OracleDecomposition(ParameterDecomposition):
    kind = "oracle"

    def __init__(
        self,
        target: nn.Module,
        param: dict[str, tuple[Tensor, Tensor, Rules]],
        act: dict[str, tuple[Tensor, Tensor, Rules]] | None = None,
    ) -> None:
        """param: {site: (U [C, o], V [C, i], rules)}; act: {site: (t [C, d], dual [C, d], rules)}."""
        act = act or {}
        super().__init__(target, [*param, *act])
        self.param = param
        self.act = act

    # --- components --------------------------------------------------------------------------
    def components(self, site: str) -> Tensor:
        U, V, _ = self.param[site]
        return torch.einsum("co,ci->coi", U, V)  # (C, o, i)

    def n_components(self, site: str) -> int:
        return len(self.param[site][2] if site in self.param else self.act[site][2])

    def factors(self, site: str) -> tuple[Tensor, Tensor] | None:
        if site not in self.param:
            return None
        U, V, _ = self.param[site]
        return U.unsqueeze(-1), V.unsqueeze(-1)

    def component_outputs(self, site: str, a: Tensor, transpose: bool = False) -> Tensor:
        U, V, _ = self.param[site]
        if transpose:
            return (a @ U.T)[:, :, None] * V[None]  # (B, C, i)
        return (a @ V.T)[:, :, None] * U[None]  # (B, C, o)

    def directions(self, site: str, space: Space) -> Tensor | None:
        if site in self.act:
            return self.act[site][0] if space == "activation" else None
        if space == "activation":
            U = self.param[site][0]
            return U / U.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return super().directions(site, space)

    def activity(self, x: Tensor) -> dict[str, Tensor]:
        sites = {**self.param, **self.act}
        return {s: rule_activity(v[2], x) for s, v in sites.items()}

    def _masked(self, site: str, m: Tensor, module: nn.Module, transpose: bool) -> Any:
        U, V = self.param[site][0], self.param[site][1]
        return factored_masked_output(U, V, m, module, transpose)

    # --- ablation ----------------------------------------------------------------------------
    def forward_with(self, x: Tensor, mask: Mask) -> Tensor:
        act_mask = {s: m for s, m in mask.items() if s in self.act}
        if not act_mask:
            return super().forward_with(x, mask)
        gates = self.activity(x)
        with ExitStack() as stack:
            for site, m in act_mask.items():
                off = (1.0 - _batch_mask(m, x.shape[0])) * gates[site]  # (B, C)
                if bool(off.any()):  # all on: the site's output is untouched
                    stack.enter_context(replace_output(self.target, site, self._drop(site, off)))
            return super().forward_with(x, {s: m for s, m in mask.items() if s in self.param})

    def _drop(self, site: str, off: Tensor) -> Any:
        t, dual, _ = self.act[site]

        rows = off.any(dim=1).nonzero().flatten()  # only rows with something ablated change

        def fn(_inputs: tuple[Any, ...], h: Tensor) -> Tensor:
            coef = h[rows] @ dual.T  # (R, …, C): each distinct direction's share of h (per position)
            gate = off[rows].view(rows.numel(), *[1] * (h.dim() - 2), off.shape[1])  # (R, 1…, C)
            return h.index_add(0, rows, -(gate * coef) @ t)  # (B, …, d)

        return fn

    # --- persistence -------------------------------------------------------------------------
    def state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        tensors: dict[str, Tensor] = {}
        cfg: dict[str, Any] = {"param": {}, "act": {}}
        for group, name_a, name_b in ((self.param, "U", "V"), (self.act, "t", "dual")):
            key = "param" if group is self.param else "act"
            for site, (A, B, rules) in group.items():
                tensors[f"{site}/{name_a}"], tensors[f"{site}/{name_b}"] = A, B
                cfg[key][site] = [list(r) for r in rules]
        return tensors, cfg

    @classmethod
    def from_state(
        cls, target: nn.Module, tensors: dict[str, Tensor], config: dict[str, Any]
    ) -> Decomposition:
        def rules(rs: list[list[Any]]) -> Rules:
            return [(str(n), str(r), None if f is None else int(f)) for n, r, f in rs]

        param = {s: (tensors[f"{s}/U"], tensors[f"{s}/V"], rules(r)) for s, r in config["param"].items()}
        act = {s: (tensors[f"{s}/t"], tensors[f"{s}/dual"], rules(r)) for s, r in config["act"].items()}
        return cls(target, param, act)


# --- building the oracle from the truth --------------------------------------------------------
def parameter_site(weight: Tensor, mechs: list[Mechanism], tol: float) -> tuple[Tensor, Tensor, Rules]:
    """Rank-1 parts of every true mechanism at one weight, plus the SVD of what is left."""
    Us: list[Tensor] = []
    Vs: list[Tensor] = []
    rules: Rules = []
    rest = weight.detach().double().clone()  # (o, i)
    for m in mechs:
        U, V = _parts(m)
        rest -= torch.einsum("ko,ki->oi", U.double(), V.double())
        Us.append(U)
        Vs.append(V)
        rule: ActiveRule = m.rule if m.rank == 1 or m.rule == "never" else "dense"
        rules += [(m.name if m.rank == 1 else f"{m.name}.{k}", rule, m.feature) for k in range(m.rank)]
    U, V = rank_one_parts(rest, tol=tol * float(weight.detach().norm()))
    Us.append(U)
    Vs.append(V)
    rules += [(f"remainder.{k}", "dense", None) for k in range(U.shape[0])]
    return torch.cat(Us), torch.cat(Vs), rules


def _parts(m: Mechanism) -> tuple[Tensor, Tensor]:
    """(U [k, o], V [k, i]) rank-1 parts of one mechanism: its SVD, or for a factored rank-1 truth
    u vᵀ the factors themselves with ‖v‖ folded into u (what the SVD gives, up to sign)."""
    if m.factors is not None and m.rank == 1:
        u, v = m.factors[0][:, 0].double(), m.factors[1][:, 0].double()
        n = float(v.norm())
        return (u * n)[None].float(), (v / max(n, 1e-30))[None].float()
    return rank_one_parts(m.matrix().double(), k=m.rank)


def activation_site(mechs: list[Mechanism]) -> tuple[Tensor, Tensor, Rules]:
    """True vectors t [C, d] and the duals of their distinct directions (one per feature)."""
    t = torch.stack([m.direction.float() for m in mechs])  # (C, d)
    keys = [m.feature if m.feature is not None else -1 - k for k, m in enumerate(mechs)]
    distinct = list(dict.fromkeys(keys))
    first = [keys.index(k) for k in distinct]
    basis = t[first].double()  # (K, d)
    duals = torch.linalg.pinv(basis).T  # (K, d): duals[k] · basis[j] = δ_kj
    # A component's share of h is (dual of its direction)·h along its own vector t_c; the sign
    # of t_c relative to the basis vector is folded into the dual.
    sign = torch.stack(
        [torch.sign((t[c].double() * basis[distinct.index(k)]).sum()) for c, k in enumerate(keys)]
    )
    dual = (duals[[distinct.index(k) for k in keys]] * sign[:, None]).float()
    rules: Rules = [(m.name, m.rule, m.feature) for m in mechs]
    return t, dual, rules


def build_oracle(target: nn.Module, truth: GroundTruth, tol: float = 1e-6) -> OracleDecomposition:
    modules = dict(target.named_modules())
    param = {}
    for site in truth.sites("parameter"):
        weight = modules[site].weight
        assert isinstance(weight, Tensor)
        param[site] = parameter_site(weight, truth.in_space("parameter", site), tol)
    act = {}
    for site in truth.sites("activation"):
        if site in param:
            continue  # the parameter components' write directions already cover it
        mechs = [m for m in truth.in_space("activation", site) if m.rule != "never"]
        if mechs:
            act[site] = activation_site(mechs)
    return OracleDecomposition(target, param, act)


def fit(target: nn.Module, task: TaskFacts, config: Config, ctx: FitContext) -> Decomposition:
    assert isinstance(config, OracleConfig)
    return build_oracle(target, ctx.require_truth("the oracle"), config.remainder_tol)


register(
    MethodSpec(
        name="oracle",
        summary="the true mechanisms as components (calibration: every metric at its best)",
        Cfg=OracleConfig,
        reads_truth=always_reads_truth,
        fit=fit,
        family="calibration",
    )
)
