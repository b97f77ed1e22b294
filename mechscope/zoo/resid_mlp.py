"""Residual MLP "compressed computation" (APD / SPD papers): n signed sparse features, a fixed
random embedding into a d_embed residual stream, and a few small ReLU MLPs that must compute
ReLU of more features than they have neurons.

    r = embed(x) = x W_E                       (W_E: n × d_embed, unit-norm rows, frozen; site "embed")
    r ← r + mlp_out(ReLU(mlp_in(r)))           (per layer l; sites "layers.{l}.mlp_in" / ".mlp_out", no biases)
    y = unembed(r) = r W_Eᵀ                    (frozen; site "unembed")

Data: each x_i is uniform in [−1, 1] with probability p (0.01), else 0. Labels x + ReLU(x), MSE.

Ground truth. The model has no biases and ReLU is positively homogeneous, so feature i alone at
value v reaches layer l's input along one ray per sign: r_l(v e_i) = |v| r_l(sign(v) e_i). Stack
the rays of one sign, R± [n, d] (row i = r_l(±e_i)), and take their duals δ±_i (rows of
(R Rᵀ)⁻¹ R: δ_i · R[j] = δ_ij; the rays of one sign are independent since n + l·d_mlp ≤ d).
Feature i's `mlp_in` mechanism at sign ± is

    T±_i = (W_in r_l(±e_i)) δ±_iᵀ     rank 1: exactly W_in on its own ray, zero on every other
                                       feature's ray of that sign.

At layer 0 both rays are ±W_E[i] and δ±_i = d_i, the dual read vectors of W_E, so T⁺_i = T⁻_i =
(W_in W_E[i]ᵀ) d_iᵀ: one mechanism per feature, active when x_i ≠ 0 (the paper's truth). At layers
≥ 1 the earlier MLPs answer one sign only (layer 0 writes ReLU(x_i)-ish outputs for x_i > 0), so
the two rays differ (resid-mlp-2l seed 0, layer 1: cos(r⁺, −r⁻) 0.60; the pre-activations W_in r
agree only to cos 0.88 on average, 0.42 at worst), and no rank-1 piece reproduces feature i at both
signs: the truth there is two mechanisms per feature, "feature{i}+" (x_i > 0) and "feature{i}-"
(x_i < 0). What is left of W_in is never used by any single feature: "crosstalk" = W_in Π_l −
Σ T±_i (what one sign's mechanisms would do to the other sign's rays: the + and − mechanisms both
read the shared span(W_E) part, so it is large, about 0.8 ‖W_in‖ in resid-mlp-2l layer 1; layers > 0
only) and "unused" = W_in (I − Π_l), Π_l the projection onto span(W_E) + the earlier layers'
writes (columns of their W_out), which no input ever reaches. Both have rule "never", so all of a
layer's mechanisms sum to W_in exactly and an oracle that runs only the active ones is exact on
every one-hot input. Components are compared after projecting their read side with Π_l.
Why not the older truth (T_i on span(W_E) plus one dense "upstream" part W_in(Π_l − Π)): on
feature i's own one-hot input that T_i gives only the span(W_E) part of the ray, and "upstream"
must be on for every input (it reads 66 % of layer 1's input norm on data), yet SPD, whose only
unit is a rank-1 piece gated per input, finds no dense piece (dense_cos 0.0) and instead pieces
that read a feature's whole footprint; the truth should describe what each feature uses.
Each `mlp_out` is one dense mechanism of rank d_mlp. In activation space the residual stream
("embed") carries ±W_E[i] (features are signed: + active when x_i > 0, − when x_i < 0); for
transcoders, the MLP output of layer l carries W_out ReLU(W_in r_l(±e_i)), what the MLP writes for
that signed feature alone, read from its ray r_l(±e_i) (= ±W_E[i] at layer 0).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mechscope.bounds import BatchSize, Count, LearningRate, NonNegative, Prob, Steps
from mechscope.config import Config
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

    def onehot(self, value: float = 0.75) -> Tensor:
        """Each feature alone at +value, then each alone at −value: [2n, n] (features are signed)."""
        eye = torch.eye(self.n_features)
        return torch.cat([eye * value, eye * -value])

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
        mechs: list[Mechanism] = []
        writes_so_far: list[Tensor] = []
        read_projection: dict[str, Tensor] = {}
        split_layers: list[int] = []
        rays = feature_rays(target)  # per layer: (R⁺, R⁻), each (n, d)
        for li, layer in enumerate(target.layers):
            assert isinstance(layer, ResidMLPLayer)
            W_in = layer.mlp_in.weight.detach()  # (d_mlp, d)
            W_out = layer.mlp_out.weight.detach()  # (d, d_mlp)
            site_in, site_out = f"layers.{li}.mlp_in", f"layers.{li}.mlp_out"
            R_pos, R_neg = rays[li]
            T_pos, T_neg = sign_mechanisms(W_in, R_pos), sign_mechanisms(W_in, R_neg)  # (n, d_mlp, d)
            features = T_pos + T_neg
            if same_line(R_pos, R_neg):  # both signs deliver one line (layer 0): one mechanism
                features = T_pos
                for i in range(n):
                    mechs.append(Mechanism(f"feature{i}", "parameter", site_in, T_pos[i], 1, "nonzero", i))
            else:
                split_layers.append(li)
                for T, (_, rule, tag) in ((T_pos, SIGNS[0]), (T_neg, SIGNS[1])):
                    for i in range(n):
                        mechs.append(Mechanism(f"feature{i}{tag}", "parameter", site_in, T[i], 1, rule, i))
            # The rest of W_in: "crosstalk" (reachable but used by no single feature: what one
            # sign's mechanisms do to the other sign's rays; 0 when both signs share a line) and
            # "unused" W_in (I − Π_l) (no input ever reaches it). Both never active.
            Pi_l = reachable_projection(W_E, writes_so_far)  # (d, d)
            read_projection[site_in] = Pi_l
            crosstalk = W_in @ Pi_l - features.sum(0)
            if _rank(crosstalk) and float(crosstalk.norm()) > 1e-5 * float(W_in.norm()):
                mechs.append(
                    Mechanism("crosstalk", "parameter", site_in, crosstalk, _rank(crosstalk), "never")
                )
            unused = W_in - W_in @ Pi_l  # W_in (I − Π_l)
            mechs.append(Mechanism("unused", "parameter", site_in, unused, _rank(unused), "never"))
            writes_so_far.append(W_out.T)  # (d_mlp, d): rows are what this layer can write
            mechs.append(Mechanism("mlp_out", "parameter", site_out, W_out.clone(), W_out.shape[1], "dense"))
            for (sign, rule, tag), R in zip(SIGNS, (R_pos, R_neg), strict=True):
                ray = sign * R  # (n, d): row i = r_l(±e_i), what the MLP reads for that signed feature
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
        notes = [
            "mlp_in 'unused' = W_in(I − Π_l): the part no input ever reaches (rule never); not a feature"
        ]
        if split_layers:
            notes.append(
                f"layers {split_layers}: feature i delivers two rays r_l(±e_i) (earlier MLPs answer one sign), "
                "so its mlp_in mechanism is split by sign (feature{i}+ / feature{i}-, rank 1 each); "
                "'crosstalk' (rule never) is what no single feature uses; read projection Π_l (reachable span)"
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
    """Per layer l, (R⁺, R⁻) [n, d]: row i is the layer's input on the one-hot input ±e_i.

    The model has no biases and ReLU is positively homogeneous, so r_l(v e_i) = |v| r_l(sign(v) e_i):
    each signed feature alone reaches layer l along one ray, whatever its magnitude."""
    n = target.W_E.shape[0]
    out: list[tuple[Tensor, Tensor]] = []
    with torch.no_grad():
        r = target.embed(torch.cat([torch.eye(n), -torch.eye(n)]))  # (2n, d)
        for layer in target.layers:
            out.append((r[:n].clone(), -r[n:].clone()))  # R⁻ is signed so that layer 0's R⁻ = R⁺ = W_E
            r = layer(r)
    return out


def sign_mechanisms(W_in: Tensor, R: Tensor) -> Tensor:
    """[n, d_mlp, d] T_i = (W_in R[i]ᵀ) δ_iᵀ, δ_i the duals of the rays R (δ_i · R[j] = δ_ij):
    exactly what W_in does on feature i's ray, and nothing on any other feature's ray of that sign."""
    delta = dual_read_vectors(R)  # (n, d)
    return torch.einsum("on,nd->nod", W_in @ R.T, delta)


def same_line(R_pos: Tensor, R_neg: Tensor, tol: float = 1e-5) -> bool:
    """Both signs of every feature reach the layer along the same line (true at layer 0)."""
    return bool(torch.allclose(R_pos, R_neg, atol=tol * float(R_pos.abs().max())))


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
