"""Toy Models of Superposition (Elhage et al. 2022): n sparse features through m < n hidden dims.

    h = W x            (W: m × n, no bias; site "W")
    h = I h            (+ID variants only: a frozen m × m identity; site "identity")
    y = ReLU(Wᵀ h + b) (tied second layer; module "W_T" shares W's weight)

Data: each x_i is 0 with probability 1 − p, else uniform in [0, 1]. Trained with MSE on x.
The published recipe (AdamW, wd 0.01, lr 5e-3, 10k steps) leaves some seeds with a feature that
never gets a direction (‖W[:, i]‖ ≈ 0). We train from Xavier-normal weights and, when a feature is
still unrepresented, retrain from a seed derived from `target_seed` (`restarts`); every attempt is
recorded in the cached target's info.json, so the target stays a deterministic function of its seed.
True mechanisms: per represented feature i, the rank-1 weight W[:, i] e_iᵀ (parameter space) and
the hidden direction W[:, i] (activation space), both active when x_i > 0; for +ID the identity is
one dense rank-m mechanism, active on every input with a non-zero feature.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mechscope.bounds import BatchSize, Count, LearningRate, Natural, NonNegative, Prob, Steps
from mechscope.config import Config
from mechscope.zoo import register_task
from mechscope.zoo.base import GroundTruth, Mechanism, Progress, Task, no_progress
from mechscope.zoo.cache import load_target, save_target, seeded_generator, target_path

REPRESENTED_NORM = 0.5
"""A feature is represented when ‖W[:, i]‖ exceeds this (a clean 5-2 pentagon has ≈ 1.1)."""
RESTARTS_5_2 = 4
"""Default `restarts` of the 5-2 tasks, a safety net (benchmarks/tms_seeds.py: seeds 0–9 need none).
The 40-10 tasks train without restarts: an attempt costs minutes, and a 40-10 target that leaves
a feature or two unrepresented is still a valid target (only represented features are scored)."""
STEPS_40_10 = 5_000
"""The 40-10 tasks stop at 5k of the published 10k steps: on seeds 0–2 the features represented
and the held-out loss at 2.5k, 5k and 10k steps agree (loss within 0.1 %), so 5k keeps a 2× margin
and halves the slowest target's training (benchmarks/tms_seeds.py --checkpoints)."""
RESTART_SEED_STRIDE = 100_003
"""Attempt k of target seed s trains from seed s + k·stride (k = 0 is the seed itself)."""


class TMSConfig(Config):
    n_features: Count = 5
    n_hidden: Count = 2
    identity: bool = False
    feature_prob: Prob = 0.05
    steps: Steps = 10_000
    batch_size: BatchSize = 1024
    lr: LearningRate = 5e-3
    weight_decay: NonNegative = 0.01
    lr_schedule: Literal["constant", "cosine"] = "constant"
    init: Literal["xavier", "reference"] = "xavier"
    """"xavier": Xavier-normal W, zero bias (Elhage et al.'s notebook). "reference": torch's default
    nn.Linear init for W and b, as the SPD reference trainer uses for 5-2."""
    restarts: Natural = 0
    """Extra attempts, from derived seeds, while some feature is unrepresented; the best attempt
    (most features represented, then lowest loss) is kept."""


class TiedTranspose(nn.Module):
    """Applies the transpose of another Linear's weight: the tied second layer of TMS."""

    _source: nn.Linear

    def __init__(self, source: nn.Linear) -> None:
        super().__init__()
        object.__setattr__(self, "_source", source)  # not a submodule: no duplicate parameters

    def forward(self, h: Tensor) -> Tensor:
        return F.linear(h, self._source.weight.T)


class TMSModel(nn.Module):
    tied: ClassVar[dict[str, str]] = {"W_T": "W"}

    def __init__(self, n_features: int, n_hidden: int, identity: bool) -> None:
        super().__init__()
        self.W = nn.Linear(n_features, n_hidden, bias=False)
        self.identity: nn.Linear | None = None
        if identity:
            self.identity = nn.Linear(n_hidden, n_hidden, bias=False)
            self.identity.weight.data.copy_(torch.eye(n_hidden))
            self.identity.weight.requires_grad_(False)
        self.W_T = TiedTranspose(self.W)
        self.b_final = nn.Parameter(torch.zeros(n_features))

    def forward(self, x: Tensor) -> Tensor:
        h = self.W(x)  # (B, m)
        if self.identity is not None:
            h = self.identity(h)
        return F.relu(self.W_T(h) + self.b_final)  # (B, n)


class TMSTask(Task):
    family = "tms"
    name = "tms"  # registered settings pass their own name and summary
    summary = ""
    Cfg = TMSConfig
    config: TMSConfig

    @property
    def n_features(self) -> int:
        return self.config.n_features

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        c = self.config
        on = torch.rand(n, c.n_features, generator=generator) < c.feature_prob
        return torch.where(on, torch.rand(n, c.n_features, generator=generator), torch.zeros(()))

    def build(self) -> TMSModel:
        c = self.config
        return TMSModel(c.n_features, c.n_hidden, c.identity)

    def make_target(self, target_seed: int, progress: Progress = no_progress) -> nn.Module:
        path = target_path(self.name, self.config, target_seed)
        model = self.build()
        if load_target(path, model) is None:
            info = train_tms(model, self, target_seed, progress)
            save_target(path, model, info)
        model.eval()
        return model

    def ground_truth(self, target: nn.Module) -> GroundTruth:
        assert isinstance(target, TMSModel)
        W = target.W.weight.detach()  # (m, n)
        n, m = self.config.n_features, self.config.n_hidden
        represented = [i for i in range(n) if float(W[:, i].norm()) > REPRESENTED_NORM]
        mechs: list[Mechanism] = []
        for i in represented:
            e_i = torch.zeros(n)
            e_i[i] = 1.0
            mechs.append(Mechanism(f"feature{i}", "parameter", "W", torch.outer(W[:, i], e_i), 1, "pos", i))
            mechs.append(Mechanism(f"feature{i}", "activation", "W", W[:, i].clone(), 1, "pos", i))
        if target.identity is not None:
            mechs.append(Mechanism("identity", "parameter", "identity", torch.eye(m), m, "dense"))
        notes = [] if len(represented) == n else [f"target represents {len(represented)}/{n} features"]
        return GroundTruth(mechs, n_features=n, represented=represented, notes=notes)

    def activation_sites(self) -> list[str]:
        return ["W"]


def init_tms(model: TMSModel, init: str, seed: int) -> None:
    """Initialise the trainable weights from `seed` alone (no global RNG state)."""
    gen = seeded_generator(seed)
    W, b = model.W.weight, model.b_final
    with torch.no_grad():
        if init == "xavier":
            nn.init.xavier_normal_(W, generator=gen)
            b.zero_()
        elif init == "reference":  # nn.Linear's default: U(±1/√fan_in) for weight and bias
            bound_w = 1.0 / W.shape[1] ** 0.5
            bound_b = 1.0 / W.shape[0] ** 0.5  # b belongs to the second layer, fan_in = m
            W.uniform_(-bound_w, bound_w, generator=gen)
            b.uniform_(-bound_b, bound_b, generator=gen)
        else:
            raise ValueError(f"unknown TMS init {init!r}; allowed: xavier, reference")


def fit_tms(model: TMSModel, task: TMSTask, seed: int, progress: Progress) -> float:
    """One training run of the published recipe (AdamW, MSE on x) from `seed`; returns final loss."""
    c = task.config
    init_tms(model, c.init, seed)
    gen = seeded_generator(seed + 10_000)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay)
    sched = (
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, c.steps)
        if c.lr_schedule == "cosine"
        else torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    )
    loss = torch.tensor(0.0)
    for step in range(c.steps):
        x = task.sample(c.batch_size, gen)  # (B, n)
        loss = F.mse_loss(model(x), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % 100 == 0 or step == c.steps - 1:
            progress(step + 1, c.steps)
    return float(loss.detach())


def eval_loss(model: TMSModel, task: TMSTask, n: int = 65_536) -> float:
    """MSE on a fixed held-out sample (seeded apart from training), comparable across seeds."""
    x = task.sample(n, seeded_generator(123_456_789))
    with torch.no_grad():
        return float(F.mse_loss(model(x), x))


def train_tms(model: TMSModel, task: TMSTask, seed: int, progress: Progress) -> dict[str, object]:
    """Train with restarts until every feature is represented (or `restarts` run out); returns info."""
    c = task.config
    attempts: list[dict[str, object]] = []
    best: tuple[int, float] | None = None  # (n_represented, eval loss) of the best attempt
    chosen, best_state = 0, {}
    for k in range(c.restarts + 1):
        attempt_seed = seed + k * RESTART_SEED_STRIDE
        final = fit_tms(model, task, attempt_seed, progress)
        norms = model.W.weight.detach().norm(dim=0)
        n_rep = int((norms > REPRESENTED_NORM).sum())
        loss = eval_loss(model, task)
        attempts.append(
            {"seed": attempt_seed, "n_represented": n_rep, "final_loss": final, "eval_loss": loss}
        )
        if best is None or (n_rep, -loss) > (best[0], -best[1]):
            best, chosen = (n_rep, loss), k
            best_state = {k_: v.detach().clone() for k_, v in model.state_dict().items()}
        if n_rep == c.n_features:
            break
    model.load_state_dict(best_state)
    norms = model.W.weight.detach().norm(dim=0)
    return {
        "final_loss": attempts[chosen]["final_loss"],
        "eval_loss": attempts[chosen]["eval_loss"],
        "feature_norms": [float(v) for v in norms],
        "n_represented": int((norms > REPRESENTED_NORM).sum()),
        "attempt": chosen,
        "attempts": attempts,
    }


def _tms(name: str, n: int, m: int, identity: bool, batch: int, summary: str) -> None:
    restarts, steps = (RESTARTS_5_2, 10_000) if n == 5 else (0, STEPS_40_10)
    cfg = TMSConfig(
        n_features=n, n_hidden=m, identity=identity, batch_size=batch, steps=steps, restarts=restarts
    )
    register_task(name, lambda: TMSTask(cfg, name, summary))


_tms("tms-5-2", 5, 2, False, 1024, "toy model of superposition: 5 features in 2 dims")
_tms("tms-40-10", 40, 10, False, 8192, "toy model of superposition: 40 features in 10 dims")
_tms("tms-5-2-id", 5, 2, True, 1024, "TMS 5-2 with a fixed 2×2 identity layer (a dense rank-2 mechanism)")
_tms(
    "tms-40-10-id",
    40,
    10,
    True,
    8192,
    "TMS 40-10 with a fixed 10×10 identity layer (a dense rank-10 mechanism)",
)
