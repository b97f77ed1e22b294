"""Stress tests: a constructed superposition target whose data break one assumption at a time.

No training: the target is the feature dictionary itself,

    h = W x            (W: d × n, no bias; site "W"; the model's output is h)

with W's columns near-orthogonal unit vectors (or scaled, `norm_range`) drawn from the target
seed. Every feature i is represented, and its true mechanisms are exact: the rank-1 weight
W[:, i] e_iᵀ (parameter space) and the direction W[:, i] (activation space), both active when
x_i > 0. What changes between the registered variants is only the input distribution:

    stress-iid             independent features, p = 0.05
    stress-correlated      pairs (2j, 2j+1) whose on-indicators correlate with ρ = `pair_corr`
    stress-anticorrelated  pairs that are never on together
    stress-hierarchical    trees: a parent followed by `children` children; the parent is on
                           whenever a child is, and alone with `parent_alone_prob`
    stress-zipf            Zipfian probabilities (0.3 … 0.002) and feature norms spread over
                           `norm_range` (independent of the probabilities)
    stress-dense           `n_dense` features on with p = 0.8 among sparse ones
    stress-overcomplete    80 features in d = 10 (the bench preset caps the dictionary below 80)

Magnitudes are U[0, 1] for every on feature. Each variant also has a random-init control
(`<name>-control`, see `ControlTask`): the same architecture with redrawn weights, scored
against the original target's truth.
"""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING, Annotated, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from mechscope.bounds import Prob
from mechscope.config import Config, ConfigError
from mechscope.zoo import get_task, register_task
from mechscope.zoo import tms as _tms  # noqa: F401  (tms-40-10 must be registered for its control)
from mechscope.zoo.base import GroundTruth, Mechanism, Progress, Task, no_progress
from mechscope.zoo.cache import load_target, save_target, seeded_generator, target_path

if TYPE_CHECKING:
    from mechscope.zoo.synth_sae_bench import SynthConfig


class StressConfig(Config):
    n_features: Annotated[int, Field(ge=2)] = 40
    d: Annotated[int, Field(ge=1)] = 10
    p: Prob = 0.05
    """Firing probability of every sparse feature (children too, in the hierarchical variant)."""
    zipf: tuple[Prob, Prob] | None = None
    """(p_max, p_min): feature i fires with p_max (i + 1)^−α, α set so the last one has p_min."""
    n_dense: Annotated[int, Field(ge=0)] = 0
    """Features 0 … n_dense − 1 fire with `dense_prob` instead."""
    dense_prob: Prob = 0.8
    pairs: Literal["none", "correlated", "exclusive"] = "none"
    """"none"; "correlated": pairs (2j, 2j+1) with on-indicator correlation `pair_corr`;
    "exclusive": pairs never on together (each keeps its marginal probability)."""
    pair_corr: Annotated[float, Field(ge=-1, le=1)] = 0.8
    children: Annotated[int, Field(ge=0)] = 0
    """> 0: features form trees of 1 parent + `children` children (parent first)."""
    parent_alone_prob: Prob = 0.05
    """Probability that a parent fires on an input where none of its children does."""
    norm_range: tuple[Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)]] = (1.0, 1.0)
    """(min, max) column norms of W, log-spaced, assigned to features in a seeded random order."""
    ortho_steps: Annotated[int, Field(ge=0)] = 300
    """Adam steps pushing down the largest pairwise |cos| of W's columns."""

    @model_validator(mode="after")
    def _check(self) -> StressConfig:
        if self.pairs != "none" and self.n_features % 2:
            raise ValueError(f"pairs need an even n_features, got {self.n_features}")
        if self.pairs != "none" and self.children:
            raise ValueError("pairs and children (hierarchy) cannot be combined")
        if self.children and self.n_features % (self.children + 1):
            raise ValueError(
                f"n_features={self.n_features} is not a multiple of children + 1 = {self.children + 1}"
            )
        if self.n_dense > self.n_features:
            raise ValueError(f"n_dense={self.n_dense} exceeds n_features={self.n_features}")
        if self.zipf is not None and not self.zipf[1] < self.zipf[0]:
            raise ValueError(f"zipf=(p_max, p_min) needs p_min < p_max, got {self.zipf}")
        if self.norm_range[0] > self.norm_range[1]:
            raise ValueError(f"norm_range=(min, max) needs min ≤ max, got {self.norm_range}")
        return self


# --- the target: a fixed feature dictionary -------------------------------------------------------
def near_orthogonal(
    n: int,
    d: int,
    generator: torch.Generator,
    steps: int,
    chunk: int = 4096,
    device: str = "cpu",
    power: int = 8,
    lr: float = 0.01,
) -> Tensor:
    """[d, n] unit columns with small pairwise |cos|: Gaussian, then Adam on L = Σ_{i≠j} cos_ij^power / n.

    power = 8 weights the largest overlaps most (a soft max), which lowers the maximum |cos| far
    below a random draw's (40 × 10: 0.96 → 0.39; Welch's bound is 0.28), where the plain squared
    cosine (power = 2, SynthSAEBench's frame potential) leaves it almost unchanged. The gradient is
    written out, ∂L/∂U = (2·power/n) U G^⊙(power−1) projected onto the sphere, in column chunks so
    the n × n Gram G never sits in memory whole (16,384 features). Deterministic given the generator."""
    W = torch.randn(d, n, generator=generator).to(device)
    W = W / W.norm(dim=0)
    W.requires_grad_(True)
    opt = torch.optim.Adam([W], lr=lr)
    threads = torch.get_num_threads()
    if device == "cpu" and n * n * d < 10**8:  # tiny matmuls: extra threads only add sync cost
        torch.set_num_threads(1)  # (40 × 10 on a loaded 2-core box: 12 s of CPU with 2 threads, 0.2 s with 1)
    try:
        _descend(W, opt, steps, chunk, power)
    finally:
        torch.set_num_threads(threads)
    W = W.detach()
    return (W / W.norm(dim=0)).cpu()


def _descend(W: Tensor, opt: torch.optim.Optimizer, steps: int, chunk: int, power: int) -> None:
    n = W.shape[1]
    for _ in range(steps):
        with torch.no_grad():
            norm = W.norm(dim=0)
            U = W / norm  # (d, n)
            grad = torch.empty_like(U)
            for start in range(0, n, chunk):
                G = U[:, start : start + chunk].T @ U  # (c, n) cosines of this chunk with all
                rows = torch.arange(G.shape[0], device=G.device)
                G[rows, rows + start] = 0.0
                grad[:, start : start + chunk] = U @ G.pow(power - 1).T
            grad = grad - U * (U * grad).sum(dim=0)  # tangent to the sphere: norms are not a loss
            W.grad = grad * (2 * power / n) / norm
        opt.step()


def max_abs_cos(W: Tensor) -> float:
    """Largest |cos| between two distinct columns of W."""
    U = W / W.norm(dim=0)
    G = (U.T @ U).abs()
    G.fill_diagonal_(0)
    return float(G.max())


class StressModel(nn.Module):
    """h = W x: the feature dictionary as a bias-free Linear (site "W"); output h."""

    def __init__(self, n_features: int, d: int) -> None:
        super().__init__()
        self.W = nn.Linear(n_features, d, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.W(x)  # (B, d)


def feature_truth(W: Tensor, hierarchy: list[tuple[int, int]], notes: list[str]) -> GroundTruth:
    """Every feature i of h = W x: parameter W[:, i] e_iᵀ and activation W[:, i], active when x_i > 0."""
    n = W.shape[1]
    mechs: list[Mechanism] = []
    for i in range(n):
        e_i = torch.zeros(n)
        e_i[i] = 1.0
        mechs.append(Mechanism(f"feature{i}", "parameter", "W", torch.outer(W[:, i], e_i), 1, "pos", i))
        mechs.append(Mechanism(f"feature{i}", "activation", "W", W[:, i].clone(), 1, "pos", i))
    return GroundTruth(mechs, n_features=n, represented=list(range(n)), notes=notes, hierarchy=hierarchy)


# --- the tasks -----------------------------------------------------------------------------------
class DictionaryTask(Task):
    """A task whose target is a constructed feature dictionary h = W x (no training): subclasses say
    how W is drawn (`build`) and how x is sampled; the target, its cache and its truth are shared."""

    family = "stress"
    config: StressConfig | SynthConfig

    @property
    def n_features(self) -> int:
        return self.config.n_features

    def build(self, target_seed: int) -> StressModel:
        raise NotImplementedError

    def target_info(self, W: Tensor) -> dict[str, object]:
        """What is recorded next to the cached dictionary (its overlap statistics)."""
        return {"max_abs_cos": max_abs_cos(W), "norms": W.norm(dim=0).tolist()}

    def hierarchy(self) -> list[tuple[int, int]]:
        return []

    def make_target(self, target_seed: int, progress: Progress = no_progress) -> nn.Module:
        path = target_path(self.name, self.config, target_seed)
        model = StressModel(self.config.n_features, self.config.d)
        if load_target(path, model) is None:
            model = self.build(target_seed)
            save_target(path, model, self.target_info(model.W.weight.detach()))
        progress(1, 1)
        model.eval()
        return model

    def ground_truth(self, target: nn.Module) -> GroundTruth:
        assert isinstance(target, StressModel)
        return feature_truth(target.W.weight.detach(), self.hierarchy(), [])

    def activation_sites(self) -> list[str]:
        return ["W"]


class StressTask(DictionaryTask):
    name = "stress"  # registered settings pass their own name and summary
    summary = ""
    Cfg = StressConfig
    config: StressConfig

    def hierarchy(self) -> list[tuple[int, int]]:
        """(parent, child) pairs: trees of 1 parent + `children` children, parent first."""
        k = self.config.children
        if not k:
            return []
        return [(r, r + j) for r in range(0, self.n_features, k + 1) for j in range(1, k + 1)]

    def base_probs(self) -> Tensor:
        """[n] probability of each feature's own draw (a parent's: of firing alone)."""
        c = self.config
        if c.zipf is not None:
            p_max, p_min = c.zipf
            alpha = math.log(p_max / p_min) / math.log(c.n_features)
            probs = p_max * torch.arange(1, c.n_features + 1, dtype=torch.float64) ** -alpha
        else:
            probs = torch.full((c.n_features,), c.p, dtype=torch.float64)
        probs[: c.n_dense] = c.dense_prob
        if c.children:
            probs[:: c.children + 1] = c.parent_alone_prob
        return probs

    def feature_probs(self) -> Tensor:
        """[n] marginal probability that each feature is on (a parent: alone or with a child)."""
        probs = self.base_probs()
        k = self.config.children
        if k:
            groups = probs.view(-1, k + 1)
            off = (1 - groups).prod(dim=1)  # P(no child and not alone)
            probs = probs.clone()
            probs[:: k + 1] = 1 - off
        return probs.float()

    def pair_joint(self) -> Tensor:
        """[n/2, 3] per pair (2j, 2j+1): P(both on), P(only 2j), P(only 2j+1)."""
        c = self.config
        probs = self.base_probs()
        pa, pb = probs[0::2], probs[1::2]
        if c.pairs == "exclusive":
            both = torch.zeros_like(pa)
        else:
            both = pa * pb + c.pair_corr * (pa * (1 - pa) * pb * (1 - pb)).sqrt()
        bad = (both < -1e-12) | (both > torch.minimum(pa, pb) + 1e-12) | (pa + pb - both > 1 + 1e-12)
        if bool(bad.any()):
            raise ConfigError(f"pair_corr={c.pair_corr} is infeasible for these firing probabilities")
        return torch.stack([both, pa - both, pb - both], dim=1).float()

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        c = self.config
        probs = self.base_probs().float()
        on = torch.rand(n, c.n_features, generator=generator) < probs  # (n, F)
        if c.pairs != "none":
            joint = self.pair_joint().cumsum(dim=1)  # (F/2, 3) thresholds: both | a only | b only
            u = torch.rand(n, c.n_features // 2, 1, generator=generator)  # (n, F/2, 1)
            case = (u >= joint).sum(dim=-1)  # 0 both, 1 a only, 2 b only, 3 none
            on = torch.stack([(case == 0) | (case == 1), (case == 0) | (case == 2)], dim=-1).flatten(1)
        if c.children:
            trees = on.view(n, -1, c.children + 1)  # (n, trees, 1 + children)
            parent = trees[:, :, 0] | trees[:, :, 1:].any(dim=-1)
            on = torch.cat([parent.unsqueeze(-1), trees[:, :, 1:]], dim=-1).flatten(1)
        magnitude = torch.rand(n, c.n_features, generator=generator)
        return torch.where(on, magnitude, torch.zeros(()))

    def build(self, target_seed: int) -> StressModel:
        """The dictionary for `target_seed`: near-orthogonal unit columns, scaled by `norm_range`."""
        c = self.config
        gen = seeded_generator(target_seed)
        W = near_orthogonal(c.n_features, c.d, gen, c.ortho_steps)
        lo, hi = c.norm_range
        norms = torch.logspace(math.log10(lo), math.log10(hi), c.n_features)
        W = W * norms[torch.randperm(c.n_features, generator=gen)]
        model = StressModel(c.n_features, c.d)
        with torch.no_grad():
            model.W.weight.copy_(W)
        return model



# --- random-init controls ------------------------------------------------------------------------
CONTROL_SALT = 7_919
"""The control of target seed s redraws its weights from seed s · 1,000,003 + CONTROL_SALT."""


def redraw(model: nn.Module, seed: int) -> nn.Module:
    """A copy of `model` with every trainable parameter redrawn Gaussian at its original norm.

    Frozen parameters and buffers (e.g. a fixed identity) stay as they are; tied weights stay tied
    (deepcopy keeps the sharing). A zero tensor stays zero."""
    control = copy.deepcopy(model)
    gen = seeded_generator(seed, CONTROL_SALT)
    with torch.no_grad():
        for _, p in sorted(control.named_parameters()):
            if not p.requires_grad:
                continue
            fresh = torch.randn(p.shape, generator=gen)
            p.copy_(fresh * (p.norm() / fresh.norm().clamp_min(1e-12)))
    return control


class ControlTask(Task):
    """`<base>-control`: the base task's architecture with random weights, scored on its truth.

    A method that reports mechanisms here finds structure that is not there. Sampling, config and
    the sites are the base task's; `ground_truth(control)` is the ORIGINAL target's truth for the
    control's seed (kept on the control module as `control_seed`)."""

    family = "control"
    name = "control"
    summary = ""

    def __init__(self, base: Task, name: str) -> None:
        super().__init__(
            base.config, name, f"random-init control of {base.name}: its architecture, random weights"
        )
        self._base = base
        self.base_name = base.name
        self.Cfg = base.Cfg  # type: ignore[misc]

    def base(self) -> Task:
        """The base task with this task's (possibly overridden) config."""
        b = copy.copy(self._base)
        b.config = self.config
        return b

    @property
    def n_features(self) -> int:
        return self.base().n_features

    def make_target(self, target_seed: int, progress: Progress = no_progress) -> nn.Module:
        control = redraw(self.base().make_target(target_seed, progress), target_seed)
        control.control_seed = target_seed  # type: ignore[assignment]
        control.eval()
        return control

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        return self.base().sample(n, generator)

    def ground_truth(self, target: nn.Module) -> GroundTruth:
        seed = getattr(target, "control_seed", None)
        if not isinstance(seed, int):
            raise ConfigError(f"{self.name}: the target was not made by this control task (no control_seed)")
        base = self.base()
        truth = base.ground_truth(base.make_target(seed))
        truth.notes.append(f"control: random weights; truth is {base.name}'s for target seed {seed}")
        return truth

    def onehot(self, value: float | None = None) -> Tensor:
        return self.base().onehot(value)

    def activation_sites(self) -> list[str]:
        return self.base().activation_sites()

    def mlp_sites(self) -> list[tuple[str, str]]:
        return self.base().mlp_sites()

    def feature_probs(self) -> Tensor:
        probs = getattr(self.base(), "feature_probs", None)
        if probs is None:
            raise AttributeError(f"{self.base_name} has no feature_probs()")
        result: Tensor = probs()
        return result


def register_control(base_name: str) -> None:
    """Register `<base_name>-control` (the base task must be registered already)."""
    name = f"{base_name}-control"
    register_task(name, lambda: ControlTask(get_task(base_name), name))


def _stress(name: str, summary: str, **fields: object) -> None:
    cfg = StressConfig.model_validate(fields)
    register_task(name, lambda: StressTask(cfg, name, summary))
    register_control(name)


_stress("stress-iid", "stress baseline: 40 independent features (p = 0.05) in d = 10, h = W x")
_stress(
    "stress-correlated", "stress: feature pairs co-occur (on-indicator correlation 0.8)", pairs="correlated"
)
_stress("stress-anticorrelated", "stress: feature pairs are mutually exclusive", pairs="exclusive")
_stress(
    "stress-hierarchical",
    "stress: 10 trees of a parent and 3 children (parent on when a child is)",
    children=3,
)
_stress(
    "stress-zipf",
    "stress: Zipfian firing probabilities 0.3 … 0.002, feature norms 0.3 … 1",
    zipf=(0.3, 0.002),
    norm_range=(0.3, 1.0),
)
_stress("stress-dense", "stress: 4 dense features (p = 0.8) among 36 sparse ones (p = 0.05)", n_dense=4)
_stress(
    "stress-overcomplete",
    "stress: 80 features (p = 0.025, same mean L0 as stress-iid) in d = 10",
    n_features=80,
    p=0.025,
)
register_control("tms-40-10")
