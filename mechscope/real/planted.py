"""Ground truth inside a real model: planted rank-1 feature → output rules, and a random control.

A zoo toy has known mechanisms because we built it; a real model's are unknown. So we *plant* K
known mechanisms into a real model and ask whether a method finds them among the real weights:

    context ──(real model, fixed)──► a = attention output of layer L at the first token   [d]
    x [K] sparse features ──────────► h = a + Σ_i x_i D_i          D_i ⊥ every context state
    planted rule (new module)        h ← h + W_write ReLU(W_read h),  W_read = [v_i], W_write = [u_i]
                                     with v_i · a = 0 and v_i · D_j = δ_ij, so ReLU(W_read h) = x
    rest of layer L (real MLP + LayerNorm) ──► output [d]    (MSE: the model has no LM head here)

True mechanisms, one per feature i, active when x_i > 0: in parameter space e_i v_iᵀ at
`planted.read` and u_i e_iᵀ at `planted.write`; in activation space the direction D_i + u_i that
feature i adds to the output of `planted`. The task is an ordinary mechscope `Task`, so
`mechscope.metrics.score` scores any registered method on it exactly as on the zoo.

The control (`random_init=True`) re-initialises every weight of the model and of the planted rule
at random — and the feature embedding D too (how features enter the stream is a weight: kept, an
SAE on the control finds D_i and scores cos(D_i, D_i + u_i) = 0.71 against the truth for a
mechanism that is not there) — but keeps scoring against the planted directions: a method's
numbers there show how much "structure" it reports in a network that has none.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Annotated, Any, ClassVar

import torch
from pydantic import Field
from torch import Tensor, nn

from mechscope.config import Config, ConfigError
from mechscope.core import GroundTruth, Mechanism, Progress, Task, no_progress, seeded_generator
from mechscope.hooks import capture
from mechscope.real.models import LoadedModel, load_model, minilm_path

CONTEXT = "The committee approved the new budget after a long debate about schools and roads."
_MODELS: dict[str, LoadedModel] = {}


class PlantedConfig(Config):
    model: str | None = None
    """Local model directory (a BERT-style encoder); None: the MiniLM shipped for the tests."""
    layer: Annotated[int, Field(ge=0)] = 5
    """Plant between the attention and the MLP of this layer."""
    n_features: Annotated[int, Field(ge=1)] = 8
    p: Annotated[float, Field(gt=0, le=1)] = 0.1
    """Probability that a feature is active; its value is then uniform in [0, 1]."""
    scale: Annotated[float, Field(gt=0)] = 1.0
    """Norm of each planted direction, relative to the context state's norm."""
    random_init: bool = False
    """The control: every weight re-initialised at random."""


class PlantedRule(nn.Module):
    """h + W_write ReLU(W_read h): K rank-1 feature → output rules."""

    def __init__(self, d: int, k: int) -> None:
        super().__init__()
        self.read = nn.Linear(d, k, bias=False)
        self.write = nn.Linear(k, d, bias=False)

    def forward(self, h: Tensor) -> Tensor:
        return h + self.write(self.read(h).relu())


class PlantedTarget(nn.Module):
    """Features x [B, K] → the real layer's output [B, d] with the planted rule inside it."""

    base: Tensor
    D: Tensor

    def __init__(self, base: Tensor, D: Tensor, rule: PlantedRule, intermediate: nn.Module, output: nn.Module) -> None:
        super().__init__()
        self.register_buffer("base", base)  # (d,) attention output at the first token
        self.register_buffer("D", D)  # (K, d) how features enter the stream
        self.planted = rule
        self.intermediate, self.output = intermediate, output  # the layer's real MLP (BERT naming)

    def forward(self, x: Tensor) -> Tensor:
        h = self.planted(self.base + x @ self.D)  # (B, d)
        return self.output(self.intermediate(h), h)  # BertOutput: LayerNorm(dense(act) + h)


def _loaded(path: str) -> LoadedModel:
    if path not in _MODELS:
        _MODELS[path] = load_model(path)
    return _MODELS[path]


def _randomise(module: nn.Module, gen: torch.Generator, std: float = 0.02) -> None:
    """Re-initialise Linear/Embedding weights N(0, std²), biases 0, LayerNorms to identity."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Linear | nn.Embedding):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * std)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.LayerNorm):
                m.weight.fill_(1.0)
                m.bias.zero_()


def _context_states(model: nn.Module, ids: Tensor, layer: int) -> Tensor:
    """[T, d] the attention output of `layer` (the MLP's input) at every context position."""
    site = f"encoder.layer.{layer}.intermediate"
    with torch.no_grad(), capture(model, [site], "input") as acts:
        model(input_ids=ids)
    return acts[site][0]


class PlantedTask(Task):
    name = "planted-real"
    summary = "K rank-1 feature→output rules planted in a real model's layer (MiniLM by default)"
    family = "planted"
    Cfg: ClassVar[type[Config]] = PlantedConfig

    @property
    def cfg(self) -> PlantedConfig:
        assert isinstance(self.config, PlantedConfig)
        return self.config

    @property
    def n_features(self) -> int:
        return self.cfg.n_features

    def make_target(self, target_seed: int, progress: Progress = no_progress) -> nn.Module:
        cfg = self.cfg
        lm = _loaded(cfg.model or str(minilm_path()))
        layers = getattr(getattr(lm.model, "encoder", None), "layer", None)
        if not isinstance(layers, nn.ModuleList):
            raise ConfigError(f"planting needs a BERT-style encoder (encoder.layer.N); {lm.path} has none")
        if cfg.layer >= len(layers):
            raise ConfigError(f"layer={cfg.layer} does not exist; the model has layers 0..{len(layers) - 1}")
        model = copy.deepcopy(lm.model)
        gen = seeded_generator(target_seed, 7)
        ids = lm.tokenizer(CONTEXT, return_tensors="pt")["input_ids"]
        states = _context_states(lm.model, ids, cfg.layer)  # planted directions: from the real model
        if cfg.random_init:
            _randomise(model, gen)
        base = _context_states(model, ids, cfg.layer)[0] if cfg.random_init else states[0]
        layer: Any = getattr(model, "encoder").layer[cfg.layer]  # noqa: B009
        d, K = base.shape[0], cfg.n_features
        # Directions orthogonal to every context state: planted reads never see the context.
        Q_ctx, _ = torch.linalg.qr(states.T)  # (d, T)
        R = torch.randn(d, 2 * K, generator=seeded_generator(target_seed, 11))
        R = R - Q_ctx @ (Q_ctx.T @ R)
        Q, _ = torch.linalg.qr(R)  # (d, 2K) orthonormal, ⊥ context
        alpha = float(states[0].norm()) * cfg.scale
        D = alpha * Q[:, :K].T  # (K, d)
        rule = PlantedRule(d, K)
        with torch.no_grad():
            rule.read.weight.copy_(Q[:, :K].T / alpha)  # v_i = q_i / α: v_i · D_j = δ_ij
            rule.write.weight.copy_(alpha * Q[:, K:])  # u_i = α q_{K+i}
        D_in = D
        if cfg.random_init:  # random directions of the same norm α
            G = torch.randn(K, d, generator=gen)
            D_in = alpha * G / G.norm(dim=1, keepdim=True)
        target = PlantedTarget(base, D_in, rule, layer.intermediate, layer.output)
        target.register_buffer("true_read", rule.read.weight.detach().clone())
        target.register_buffer("true_write", rule.write.weight.detach().clone())
        target.register_buffer("true_D", D.clone())
        if cfg.random_init:
            std = float(rule.read.weight.detach().norm() + rule.write.weight.detach().norm()) / (2 * (d * K) ** 0.5)
            _randomise(rule, gen, std=std)
        target.eval()
        return target

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        K = self.cfg.n_features
        on = torch.rand(n, K, generator=generator) < self.cfg.p
        return on * torch.rand(n, K, generator=generator)

    def ground_truth(self, target: nn.Module) -> GroundTruth:
        V: Any = target.true_read  # (K, d) rows v_i
        U: Any = target.true_write  # (d, K) columns u_i
        D: Any = target.true_D  # (K, d) the planted embedding (the control's target.D is random)
        K = self.cfg.n_features
        mechs: list[Mechanism] = []
        for i in range(K):
            e = torch.zeros(K)
            e[i] = 1.0
            mechs.append(Mechanism(f"read_{i}", "parameter", "planted.read", torch.outer(e, V[i]), 1, "pos", i))
            mechs.append(Mechanism(f"write_{i}", "parameter", "planted.write", torch.outer(U[:, i], e), 1, "pos", i))
            mechs.append(Mechanism(f"feature_{i}", "activation", "planted", D[i] + U[:, i], 1, "pos", i))
        notes = ["control: weights re-initialised at random; truth is what was planted"] if self.cfg.random_init else []
        return GroundTruth(mechs, K, list(range(K)), output_kind="mse", notes=notes)

    def activation_sites(self) -> list[str]:
        return ["planted"]

    def mlp_sites(self) -> list[tuple[str, str]]:
        """The planted rule is an MLP (read → ReLU → write, inside a skip): a transcoder reads its
        input h and predicts its output, so its writes are scored against D_i + u_i like an SAE's."""
        return [("planted", "planted")]


# --- running every method on the planted model and on its random control ------------------------
_DICT = {"steps": 800, "batch_size": 256, "buffer_size": 8_192}
# JumpReLU: the planted features are a small part of each normalised activation (the context state
# is constant), so random pre-activations start far below θ₀ = 0.3 and every latent dies; θ₀ = 0.005
# and a lighter L0 penalty fix it (planted MMCS 0.11 → 1.0). ReLU: L1 0.3 leaves 3 latents alive
# (MMCS 0.65); 0.1 finds all 8 (1.0).
_JUMP = {**_DICT, "init_threshold": 0.005, "l0_coef": 0.003}
FAST_SETTINGS: dict[str, dict[str, Any]] = {
    "sae-relu": {**_DICT, "l1_coef": 0.1}, "sae-topk": _DICT, "sae-batchtopk": _DICT, "sae-jumprelu": _JUMP,
    "transcoder-topk": _DICT, "transcoder-jumprelu": _JUMP,
    "spd": {"modules": ["planted.read", "planted.write"], "steps": 1_500, "batch_size": 256, "C": 20, "lr": 1e-2,
            "importance_coeff": 1e-2, "pnorm": 1.0},
}  # fmt: skip
"""Short runs with a bounded cost (each dictionary ≈ 12 s of one CPU thread, SPD ≈ 2 min), tuned
on the planted model only (never on the control). SPD at 400 steps / importance 3e-3: MMCS 0.44; 800
steps / 1e-2: 0.53 (coverage 0.5). Every table number is from `benchmarks/planted_all.py`. Run
with one torch thread on a shared machine: at 2 threads under load the same SAE fit costs 8× the
CPU (80 s vs 10 s, measured), which is how `sae-relu` once looked as if it never finished."""

REPORTED = (
    "mmcs", "mcc", "uniqueness", "coverage", "activity_f1", "latent_f1", "faithfulness", "l0", "l0_true", "n_alive",
)  # fmt: skip


def planted_methods(methods: list[str]) -> list[str]:
    """The method list, with "all" expanded to every registered method (registry order) but the
    "dynamics" family's (fixed points need a recurrent task)."""
    from mechscope.decompose.registry import METHODS, get_method

    get_method("oracle")  # fills the registry
    out: list[str] = []
    for name in methods:
        out += [n for n, spec in METHODS.items() if spec.family != "dynamics"] if name == "all" else [name]
    return list(dict.fromkeys(out))


def run_planted(
    model: str | None, methods: list[str], seed: int = 0, control: bool = True,
    settings: dict[str, dict[str, Any]] | None = None, n_features: int = 8,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """Fit and score each method (`"all"`: every registered one) on the planted model and its random
    control: one row each, with the CPU seconds of fit + score (`cpu_s`); `on_row` sees each row
    as soon as it is measured. A method that does not apply gets a row with status `n/a: why`."""
    from mechscope.decompose.registry import FitContext, fit_blind, get_method
    from mechscope.metrics import score

    settings = {**FAST_SETTINGS, **(settings or {})}
    rows: list[dict[str, Any]] = []
    for random_init in [False, True] if control else [False]:
        task = PlantedTask(PlantedConfig(model=model, random_init=random_init, n_features=n_features))
        target = task.make_target(seed)
        for name in planted_methods(methods):
            spec = get_method(name)
            reason = spec.applies_to(task)
            row: dict[str, Any] = {"model": "random-init control" if random_init else "planted", "method": name}
            if reason is not None:
                row["status"] = f"n/a: {reason}"
            else:
                cfg = spec.Cfg.model_validate(
                    {k: v for k, v in settings.get(name, {}).items() if k in spec.Cfg.model_fields}
                )
                t0 = time.process_time()
                metrics = score(fit_blind(spec, target, task, cfg, FitContext(seed=seed)), task).metrics
                row |= {"status": "ok", "cpu_s": time.process_time() - t0}
                row |= {k: metrics[k] for k in REPORTED if k in metrics}
            rows.append(row)
            if on_row is not None:
                on_row(row)
    return rows
