"""Residual MLP "compressed computation" (APD / SPD papers): n signed sparse features, a fixed
random embedding into a d_embed residual stream, and a few small ReLU MLPs that must compute
ReLU of more features than they have neurons.

    r = embed(x) = x W_E                       (W_E: n × d_embed, unit-norm rows, frozen; site "embed")
    r ← r + mlp_out(ReLU(mlp_in(r)))           (per layer l; sites "layers.{l}.mlp_in" / ".mlp_out", no biases)
    y = unembed(r) = r W_Eᵀ                    (frozen; site "unembed")

Data: each x_i is uniform in [−1, 1] with probability p (0.01), else 0. Labels x + ReLU(x), MSE.

Ground truth. Write D = (W_E W_Eᵀ)⁻¹ W_E (rows d_i, the dual read vectors: d_i · W_E[j] = δ_ij)
and Π = W_Eᵀ D, the projection onto span(W_E). For each layer's `mlp_in` and each feature i,
T_i = (W_in W_E[i]ᵀ) d_iᵀ is rank 1 and active when x_i ≠ 0; Σ_i T_i = W_in Π. Layer l's input
lies in span(W_E) plus what layers < l write (columns of their W_out); with Π_l the projection onto
that span, the rest of W_in splits into "upstream" = W_in (Π_l − Π) (layers > 0: reads earlier
MLPs' outputs off span(W_E); rule "dense") and "unused" = W_in (I − Π_l) (rule "never": no input
ever reaches it; for layer 0, Π_0 = Π), so all of a layer's mechanisms sum to W_in exactly.
Each `mlp_out` is one dense mechanism of rank d_mlp. In activation space the residual stream
("embed") carries ±W_E[i] (features are signed: + active when x_i > 0, − when x_i < 0); for
transcoders, the MLP output of layer l carries W_out ReLU(W_in r_l(±e_i)), what the MLP writes for
that signed feature alone, read from r_l(±e_i), the layer's input on ±e_i alone (= ±W_E[i] at
layer 0; the model has no biases, so this ray is exact at every magnitude).

Why this truth for layers ≥ 1 (issue 19, checked against SPD's own causal-importance pattern,
resid-mlp-2l seed 0). Feature i reaches layer 1 along two rays r_1(±e_i) (layer 0 answers +x_i:
cos(r⁺, −r⁻) 0.60), so its use of W_in has rank 2. Two exact splits of it exist: *by path* (this
truth: the embedding piece T_i on both signs, plus the earlier MLPs' writes, "upstream") and *by
sign* (T±_i = (W_in r±_i) δ±_iᵀ, δ± the duals of one sign's rays, each exact on its own ray). Both
sum to W_in with "unused"; an oracle running only the active pieces is exact on every one-hot
input for the by-sign split, and for the by-path one up to the span(W_E) part of earlier layers'
writes, which the inactive T_j read (< 5 % of the output in the tests). SPD with enough components (C = 250 ≥ the 200 recurring lines) picks the split by path: for
99 of 100 features one piece fires on both signs and matches T_i (mmcs 0.98, activity_f1 1.0,
ml2r 0.93 after the read projection Π; 0.99 / 1.0 / 0.96 with the preset's lr_components 3e-4)
and a second fires on +x_i only, reading the upstream part; against the by-sign truth the same decomposition scores 0.72 / 0.82 / 0.70 — its pieces
leak onto the other sign's ray (δ⁺_i · r⁻_i ≈ 0.8), which random masks punish, and removing that
leak makes the duals ill-conditioned (pieces 6× ‖W_in‖ that cancel). What SPD does not share is
"upstream" as one dense piece: it splits it per feature, active on x_i > 0 (a per-feature truth
for it does not exist exactly: 100 features' upstream reads in d_mlp = 25 dimensions), so
`ci_pattern_errors` counts those pieces against the dense rule.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mechscope.bounds import BatchSize, Count, LearningRate, NonNegative, Prob, Steps
from mechscope.config import Config
from mechscope.core import ONEHOT_VALUE
from mechscope.zoo import register_task
from mechscope.zoo.base import ActiveRule, GroundTruth, Mechanism, Progress, Task, no_progress
from mechscope.zoo.cache import load_target, save_target, seeded_generator, target_path

SIGNS: tuple[tuple[float, ActiveRule, str], ...] = ((1.0, "pos", "+"), (-1.0, "neg", "-"))
"""Features are signed: each gives a + mechanism (x_i > 0) and a − mechanism (x_i < 0)."""
EVAL_SEED = 123_456_789
"""Seed of the held-out set on which the final loss is reported (apart from training seeds)."""


class ResidMLPConfig(Config):
    n_features: Count = 100
    d_embed: Count = 1000
    d_mlp: Count = 50
    """Neurons per layer."""
    n_layers: Count = 1
    feature_prob: Prob = 0.01
    steps: Steps = 1_000
    batch_size: BatchSize = 2048
    lr: LearningRate = 3e-3
    weight_decay: NonNegative = 0.01


class ResidMLPLayer(nn.Module):
    def __init__(self, d_embed: int, d_mlp: int) -> None:
        super().__init__()
        self.mlp_in = nn.Linear(d_embed, d_mlp, bias=False)
        self.mlp_out = nn.Linear(d_mlp, d_embed, bias=False)

    def forward(self, r: Tensor) -> Tensor:
        return r + self.mlp_out(F.relu(self.mlp_in(r)))  # (B, d_embed)


class ResidMLPModel(nn.Module):
    def __init__(self, W_E: Tensor, d_mlp: int, n_layers: int) -> None:
        super().__init__()
        n, d = W_E.shape
        self.embed = nn.Linear(n, d, bias=False)
        self.layers = nn.ModuleList([ResidMLPLayer(d, d_mlp) for _ in range(n_layers)])
        self.unembed = nn.Linear(d, n, bias=False)
        with torch.no_grad():
            self.embed.weight.copy_(W_E.T)  # (d, n)
            self.unembed.weight.copy_(W_E)  # (n, d)
        self.embed.weight.requires_grad_(False)
        self.unembed.weight.requires_grad_(False)

    @property
    def W_E(self) -> Tensor:
        return self.unembed.weight.detach()  # (n, d)

    def forward(self, x: Tensor) -> Tensor:
        r = self.embed(x)  # (B, d_embed)
        for layer in self.layers:
            r = layer(r)
        return self.unembed(r)  # (B, n)


def random_embedding(n: int, d: int, seed: int) -> Tensor:
    """W_E [n, d]: Gaussian rows normalised to unit norm, a pure function of the seed."""
    W = torch.randn(n, d, generator=seeded_generator(seed))
    return W / W.norm(dim=1, keepdim=True)


def dual_read_vectors(W_E: Tensor) -> Tensor:
    """D = (W_E W_Eᵀ)⁻¹ W_E [n, d] (float64 solve): rows d_i with d_i · W_E[j] = δ_ij."""
    W = W_E.double()
    return torch.linalg.solve(W @ W.T, W).to(W_E.dtype)


def reachable_projection(W_E: Tensor, writes: list[Tensor]) -> Tensor:
    """[d, d] projection onto span(W_E) + the spans of earlier layers' writes (rows of `writes`):
    everything a layer's input can contain. With no earlier layers it is Π, onto span(W_E)."""
    basis = torch.cat([W_E, *writes]).double().T  # (d, k)
    Q, _ = torch.linalg.qr(basis)  # (d, k), orthonormal columns (basis is full rank generically)
    return (Q @ Q.T).to(W_E.dtype)


def _rank(M: Tensor) -> int:
    return int(torch.linalg.matrix_rank(M.double()))


class ResidMLPTask(Task):
    family = "resid-mlp"
    name = "resid-mlp"  # registered settings pass their own name and summary
    summary = ""
    Cfg = ResidMLPConfig
    config: ResidMLPConfig

    @property
    def n_features(self) -> int:
        return self.config.n_features

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        c = self.config
        on = torch.rand(n, c.n_features, generator=generator) < c.feature_prob
        value = torch.rand(n, c.n_features, generator=generator) * 2 - 1  # U[−1, 1]
        return torch.where(on, value, torch.zeros(()))

    @staticmethod
    def labels(x: Tensor) -> Tensor:
        """What the target is trained to output: x + ReLU(x)."""
        return x + F.relu(x)

    def onehot(self, value: float | None = None) -> Tensor:
        """Each feature alone at +value, then each alone at −value: [2n, n] (features are signed)."""
        eye = torch.eye(self.n_features) * (ONEHOT_VALUE if value is None else value)
        return torch.cat([eye, -eye])

    def build(self, target_seed: int) -> ResidMLPModel:
        """The untrained model for this seed: W_E from `target_seed`, MLPs at nn.Linear's init."""
        c = self.config
        W_E = random_embedding(c.n_features, c.d_embed, target_seed)
        model = ResidMLPModel(W_E, c.d_mlp, c.n_layers)
        gen = seeded_generator(target_seed + 1)
        with torch.no_grad():
            for layer in model.layers:
                assert isinstance(layer, ResidMLPLayer)
                for lin in (layer.mlp_in, layer.mlp_out):
                    bound = 1.0 / lin.weight.shape[1] ** 0.5  # U(±1/√fan_in), as nn.Linear
                    lin.weight.uniform_(-bound, bound, generator=gen)
        return model

    def make_target(self, target_seed: int, progress: Progress = no_progress) -> nn.Module:
        path = target_path(self.name, self.config, target_seed)
        model = self.build(target_seed)
        if load_target(path, model) is None:
            info = train_resid_mlp(model, self, target_seed, progress)
            save_target(path, model, info)
        model.eval()
        return model

    def activation_sites(self) -> list[str]:
        return ["embed"]

    def mlp_sites(self) -> list[tuple[str, str]]:
        return [(f"layers.{li}.mlp_in", f"layers.{li}.mlp_out") for li in range(self.config.n_layers)]

    def ground_truth(self, target: nn.Module) -> GroundTruth:
        assert isinstance(target, ResidMLPModel)
        W_E = target.W_E  # (n, d)
        n = W_E.shape[0]
        D = dual_read_vectors(W_E)  # (n, d)
        Pi = W_E.T @ D  # (d, d) projection onto span(W_E)
        mechs: list[Mechanism] = []
        writes_so_far: list[Tensor] = []
        rays = feature_rays(target)  # per layer: (r_l(+e_i), r_l(−e_i)) rows, each (n, d)
        for li, layer in enumerate(target.layers):
            assert isinstance(layer, ResidMLPLayer)
            W_in = layer.mlp_in.weight.detach()  # (d_mlp, d)
            W_out = layer.mlp_out.weight.detach()  # (d, d_mlp)
            site_in, site_out = f"layers.{li}.mlp_in", f"layers.{li}.mlp_out"
            reads = W_in @ W_E.T  # (d_mlp, n): column i = W_in W_E[i]ᵀ
            for i in range(n):
                T_i = torch.outer(reads[:, i], D[i])  # (d_mlp, d)
                mechs.append(Mechanism(f"feature{i}", "parameter", site_in, T_i, 1, "nonzero", i))
            # The layer's input lies in span(W_E) plus the span of earlier layers' writes, so W_in
            # splits exactly into the features (reading span(W_E)), "upstream" (reading what earlier
            # MLPs wrote outside span(W_E); layers > 0 only) and "unused" (never read on any input).
            Pi_l = reachable_projection(W_E, writes_so_far)  # (d, d)
            unused = W_in - W_in @ Pi_l  # W_in (I − Π_l)
            mechs.append(Mechanism("unused", "parameter", site_in, unused, _rank(unused), "never"))
            if writes_so_far:
                upstream = W_in @ Pi_l - W_in @ Pi  # W_in (Π_l − Π)
                mechs.append(Mechanism("upstream", "parameter", site_in, upstream, _rank(upstream), "dense"))
            writes_so_far.append(W_out.T)  # (d_mlp, d): rows are what this layer can write
            mechs.append(Mechanism("mlp_out", "parameter", site_out, W_out.clone(), W_out.shape[1], "dense"))
            for (_, rule, tag), ray in zip(SIGNS, rays[li], strict=True):  # ray: (n, d), r_l(±e_i)
                writes = F.relu(ray @ W_in.T) @ W_out.T  # (n, d): row i = W_out ReLU(W_in r_l(±e_i))
                for i in range(n):
                    mechs.append(
                        Mechanism(
                            f"feature{i}{tag}",
                            "activation",
                            site_out,
                            writes[i].clone(),
                            1,
                            rule,
                            i,
                            ray[i].clone(),
                        )
                    )
        for sign, rule, tag in SIGNS:
            for i in range(n):
                mechs.append(
                    Mechanism(f"feature{i}{tag}", "activation", "embed", sign * W_E[i].clone(), 1, rule, i)
                )
        read_projection = {f"layers.{li}.mlp_in": Pi.clone() for li in range(len(target.layers))}
        notes = [
            "mlp_in 'unused' = W_in(I − Π_l): the part no input ever reaches (rule never); not a feature"
        ]
        if len(target.layers) > 1:
            notes.append(
                "layers > 0: mlp_in 'upstream' = W_in(Π_l − Π) reads earlier MLP outputs outside span(W_E) "
                "(rule dense: used whenever an earlier neuron fires); SPD finds it as one piece per "
                "feature active on x_i > 0 instead (see the module docstring), so ci_pattern_errors "
                "count it there"
            )
        return GroundTruth(
            mechs,
            n_features=n,
            represented=list(range(n)),
            read_projection=read_projection,
            output_kind="mse",
            notes=notes,
        )


def feature_rays(target: ResidMLPModel) -> list[tuple[Tensor, Tensor]]:
    """Per layer l, (R⁺, R⁻) [n, d]: row i is the layer's input on the one-hot input +e_i, resp. −e_i.

    The model has no biases and ReLU is positively homogeneous, so r_l(v e_i) = |v| r_l(sign(v) e_i):
    each signed feature alone reaches layer l along one ray, whatever its magnitude."""
    n = target.W_E.shape[0]
    out: list[tuple[Tensor, Tensor]] = []
    with torch.no_grad():
        r = target.embed(torch.cat([torch.eye(n), -torch.eye(n)]))  # (2n, d)
        for layer in target.layers:
            out.append((r[:n].clone(), r[n:].clone()))
            r = layer(r)
    return out


def eval_loss(model: ResidMLPModel, task: ResidMLPTask, n: int = 32_768) -> float:
    """MSE against the labels on a fixed held-out sample."""
    x = task.sample(n, seeded_generator(EVAL_SEED))
    with torch.no_grad():
        return float(F.mse_loss(model(x), task.labels(x)))


def train_resid_mlp(
    model: ResidMLPModel, task: ResidMLPTask, seed: int, progress: Progress = no_progress
) -> dict[str, object]:
    """The published recipe: AdamW (wd 0.01), lr 3e-3 with half-cosine decay to 0, batch 2048."""
    c = task.config
    gen = seeded_generator(seed + 10_000)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / max(c.steps - 1, 1)))
    )
    loss = torch.tensor(0.0)
    for step in range(c.steps):
        x = task.sample(c.batch_size, gen)  # (B, n)
        loss = F.mse_loss(model(x), task.labels(x))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0 or step == c.steps - 1:
            progress(step + 1, c.steps)
    return {"final_loss": float(loss.detach()), "eval_loss": eval_loss(model, task)}


def naive_losses(task: ResidMLPTask) -> dict[str, float]:
    """Reference points for the loss, per output element: no MLP at all (ReLU never computed),
    and the monosemantic baseline (one neuron per feature computes ReLU(x_i) exactly for
    n_layers·d_mlp features; the rest are not computed), both ignoring W_E W_Eᵀ interference."""
    c = task.config
    relu_sq = c.feature_prob / 6  # E[ReLU(x_i)²] = p · ½ · ⅓
    covered = min(1.0, c.n_layers * c.d_mlp / c.n_features)
    return {"no_mlp": relu_sq, "monosemantic": (1 - covered) * relu_sq}


def _resid(name: str, n: int, d_mlp: int, n_layers: int, steps: int, summary: str) -> None:
    cfg = ResidMLPConfig(n_features=n, d_mlp=d_mlp, n_layers=n_layers, steps=steps)
    register_task(name, lambda: ResidMLPTask(cfg, name, summary))


_resid("resid-mlp-1l", 100, 50, 1, 1_000, "residual MLP: 100 features computed by 1 layer of 50 ReLU neurons")
_resid(
    "resid-mlp-2l", 100, 25, 2, 1_000, "residual MLP: 100 features computed by 2 layers of 25 ReLU neurons"
)
_resid(
    "resid-mlp-3l", 102, 17, 3, 1_000, "residual MLP: 102 features computed by 3 layers of 17 ReLU neurons"
)
