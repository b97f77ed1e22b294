"""SPD of a real model: its token windows as a task, fed to the one SPD loop (`decompose/spd.py`).

`mechscope decompose-model` trains exactly what `mechscope decompose TASK spd` trains — the same
losses, initialisations, presets, checkpoint/resume and device handling, data-parallel under
torchrun — on a task whose inputs are token windows instead of a zoo sampler:

- data: `TokenTask(ids)` samples windows [batch, seq] with replacement; causal importance and
  masks are then per token;
- output loss: KL(target ‖ masked) of next-token distributions when the model has an LM head
  (`output_kind` "logits"), MSE of the final hidden states when it has none;
- settings: the SPD preset row of family "real" (the generic row) under what the user sets.

`masked_loss_report` is SPD's standard check: the output loss with masks = causal importance,
with stochastic masks, with every subcomponent on, and with every subcomponent off (all-zero).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mechscope.config import Config, ConfigError
from mechscope.core import GroundTruth, Progress, Task, TaskFacts, facts_of, no_progress
from mechscope.decompose import spd
from mechscope.decompose import spd_losses as L
from mechscope.decompose.parallel import Placement
from mechscope.decompose.registry import FitContext
from mechscope.decompose.spd import SPDConfig, SPDDecomposition, masked_sites, target_pass
from mechscope.decompose.spd_components import as_components
from mechscope.real.activation_cache import cache_key

OutputKind = Literal["kl", "mse"]


class TokenTaskConfig(Config):
    """What identifies a real model's data (so a checkpoint resumes only the same run)."""

    model: str = ""
    """The model directory the windows are fed to."""
    data: str = ""
    """Hash of the token windows."""


class TokenTask(Task):
    """Token windows ids [n_seq, seq] of a real model as a task: a sampler and no ground truth."""

    name: ClassVar[str] = "real-model"
    summary: ClassVar[str] = "a real model on token windows of a text file (no ground truth)"
    family: ClassVar[str] = "real"
    Cfg: ClassVar[type[Config]] = TokenTaskConfig

    def __init__(self, ids: Tensor, logits: bool, model: str = "") -> None:
        if ids.dim() != 2 or ids.shape[0] == 0:
            raise ConfigError(f"token windows must be a non-empty [n_seq, seq] tensor, got shape {tuple(ids.shape)}")
        super().__init__(TokenTaskConfig(model=model, data=cache_key(model, [], ids, "ids")))
        self.ids = ids
        self.output_kind = "logits" if logits else "mse"  # type: ignore[misc]

    def make_target(self, target_seed: int, progress: Progress = no_progress) -> nn.Module:
        raise ConfigError("a real model is loaded from its directory, not built from a task")

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """n windows drawn with replacement, [n, seq]."""
        return self.ids[torch.randint(self.ids.shape[0], (n,), generator=generator)]

    def ground_truth(self, target: nn.Module) -> GroundTruth:
        raise ConfigError("a real model has no ground truth; score methods on `mechscope planted` instead")

    @property
    def n_features(self) -> int:
        return int(self.ids.shape[1])


def fit_spd(
    target: nn.Module, task: Task | TaskFacts, config: SPDConfig, seed: int = 0, device: str = "cpu",
    placement: Placement = Placement(), progress: Progress = no_progress, checkpoint_dir: str | None = None,
) -> SPDDecomposition:  # fmt: skip
    """SPD of `config.modules` of `target` on inputs from `task` (a `TokenTask`, or any task):
    `spd.fit` with a FitContext for this process."""
    if config.modules is None:
        raise ConfigError("decompose-model needs --modules: comma-separated module names or globs")
    ctx = FitContext(seed=seed, device=device, progress=progress, checkpoint_dir=checkpoint_dir, placement=placement)
    return spd.fit(target, facts_of(task), config, ctx)


def output_error(pred: Tensor, target: Tensor, kind: OutputKind) -> Tensor:
    """Mean per-token KL(target ‖ pred) of logits, or MSE of hidden states."""
    return L.recon_loss(pred, target, kind)


def cosine(pred: Tensor, target: Tensor) -> Tensor:
    """Mean per-token cosine similarity of hidden states (or outputs)."""
    return F.cosine_similarity(pred.flatten(0, -2), target.flatten(0, -2), dim=-1).mean()


@torch.no_grad()
def masked_loss_report(dec: SPDDecomposition, x: Tensor, has_lm_head: bool, seed: int = 0) -> dict[str, float]:
    """Output loss of the model run from its subcomponents under four kinds of mask, on inputs x.

    Keys `<mask>.kl` (LM head) or `<mask>.mse` and `<mask>.cosine` (hidden states), for masks
    `ci` (causal importance), `stochastic` (g + (1 − g) r), `all_on` (every subcomponent: tests
    U V ≈ W) and `zero` (none: what the output loses without these modules' weights); plus
    `l0_ci` (mean subcomponents with importance > 0.1 per token, summed over sites)."""
    kind: OutputKind = "kl" if has_lm_head else "mse"
    model, comps = dec.target, as_components(dec.comps)
    y, acts = target_pass(model, dec.site_info, x)
    x = x.to(y.device)
    ci = {s.name: L.hard_sigmoid(c.ci_pre(c.read(s.kind, acts[s.name]))) for s, c in zip(dec.site_info, comps, strict=True)}
    gen = torch.Generator().manual_seed(seed)
    masks = {
        "ci": ci,
        "stochastic": {n: L.stochastic_mask(g, torch.rand(g.shape, generator=gen).to(g.device)) for n, g in ci.items()},
        "all_on": {n: torch.ones_like(g) for n, g in ci.items()},
        "zero": {n: torch.zeros_like(g) for n, g in ci.items()},
    }
    out: dict[str, float] = {}
    for name, m in masks.items():
        with masked_sites(model, dec.site_info, dec.comps, {n: [t] for n, t in m.items()}):
            pred = model(x)
        out[f"{name}.{kind}"] = float(output_error(pred, y, kind))
        if kind == "mse":
            out[f"{name}.cosine"] = float(cosine(pred, y))
    out["l0_ci"] = float(sum((g > 0.1).float().sum(-1).mean() for g in ci.values()))
    out["n_components"] = float(sum(int(c.U.shape[1]) for c in comps))
    return out
