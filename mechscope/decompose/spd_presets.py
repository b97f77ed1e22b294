"""SPD settings per task: the paper's (`preset=paper`) and our faster default (`preset=fast`).

A field left unset (None) in `SPDConfig` takes its value from the preset for the task's name (or,
failing that, its family); a field the user sets always wins. The resolved `SPDSettings` are saved
with the decomposition, so a run records exactly what it trained with.

Paper settings (METHODS.md): TMS 5-2 C = 20, Adam lr 1e-3 cosine, 40k steps, batch 4096,
importance 3e-3 with p = 1; TMS 40-10 C = 200, importance 1e-4, p = 2; residual MLP 1 layer
C = 100, lr 2e-3, importance 1e-5, p = 2, 30k steps.
"""

from __future__ import annotations

from typing import Any, Literal

from mechscope.config import Config

Preset = Literal["fast", "paper"]


class SPDSettings(Config):
    """Every SPD knob, fully resolved (no None): what `fit` actually runs with."""

    steps: int
    batch_size: int
    lr: float
    lr_warmup_frac: float = 0.0
    lr_final_frac: float = 0.0
    C: int
    ci_hidden: int = 16
    faithfulness_coeff: float = 1.0
    stochastic_coeff: float = 1.0
    layerwise_coeff: float = 1.0
    importance_coeff: float
    pnorm: float
    importance_warmup_frac: float = 0.0
    """Ramp the importance coefficient linearly from 0 over this fraction of the steps."""
    faithfulness_warmup_steps: int = 0
    """Steps of faithfulness-only training (lr `faithfulness_warmup_lr`) before the main loop."""
    faithfulness_warmup_lr: float = 1e-2
    leaky_alpha: float = 0.01
    fused: bool = True
    """Run the all-sites and the one-site-at-a-time masked forwards as one batched forward."""
    layerwise_when_single: bool = True
    """With one site, layerwise = stochastic with a second mask sample; False skips it."""
    init: Literal["random", "data"] = "random"
    """"data": start components on input directions that recur in a sample of the data."""
    init_pool: int = 16_384
    skip_zero_rows: bool = False
    """Leave examples on which every decomposed module reads zero out of the masked forwards: exact,
    as their error is 0 whatever the masks (see `spd.live_rows`); ~4× fewer rows on TMS 5-2."""
    prefetch: int = 16
    """Steps of data (and the target's activations on it) drawn at once."""


_PAPER_TMS = {"steps": 40_000, "batch_size": 4096, "lr": 1e-3, "ci_hidden": 16}
_PAPER_RESID = {"steps": 30_000, "batch_size": 2048, "lr": 2e-3, "C": 100, "importance_coeff": 1e-5, "pnorm": 2.0}

PAPER: dict[str, dict[str, Any]] = {
    "tms-5-2": {**_PAPER_TMS, "C": 20, "importance_coeff": 3e-3, "pnorm": 1.0},
    "tms-5-2-id": {**_PAPER_TMS, "C": 20, "importance_coeff": 3e-3, "pnorm": 1.0},
    "tms-40-10": {**_PAPER_TMS, "C": 200, "importance_coeff": 1e-4, "pnorm": 2.0},
    "tms-40-10-id": {**_PAPER_TMS, "C": 200, "importance_coeff": 1e-4, "pnorm": 2.0},
    "resid-mlp-1l": _PAPER_RESID,
    # Not in METHODS.md: our extrapolation (same coefficients, wider CI MLPs for 3 layers).
    "resid-mlp-2l": _PAPER_RESID,
    "resid-mlp-3l": {**_PAPER_RESID, "ci_hidden": 128},
    "tms": {**_PAPER_TMS, "C": 20, "importance_coeff": 3e-3, "pnorm": 1.0},
    "resid-mlp": _PAPER_RESID,
    "*": {"steps": 10_000, "batch_size": 256, "lr": 1e-3, "C": 100, "importance_coeff": 1e-4, "pnorm": 2.0},
}

FAST: dict[str, dict[str, Any]] = {
    "tms-5-2": {**PAPER["tms-5-2"], "steps": 3_000, "batch_size": 1024, "lr": 1e-2},
    "tms-5-2-id": {**PAPER["tms-5-2-id"], "steps": 3_000, "batch_size": 1024, "lr": 1e-2},
    "tms-40-10": {**PAPER["tms-40-10"], "steps": 5_000, "batch_size": 1024, "lr": 5e-3},
    "tms-40-10-id": {**PAPER["tms-40-10-id"], "steps": 5_000, "batch_size": 1024, "lr": 5e-3},
    "resid-mlp-1l": {**PAPER["resid-mlp-1l"], "steps": 10_000},
    "resid-mlp-2l": {**PAPER["resid-mlp-2l"], "steps": 10_000},
    "resid-mlp-3l": {**PAPER["resid-mlp-3l"], "steps": 10_000},
    "tms": {**PAPER["tms"], "steps": 3_000, "batch_size": 1024, "lr": 1e-2},
    "resid-mlp": {**PAPER["resid-mlp"], "steps": 10_000},
    "*": PAPER["*"],
}


def preset_values(preset: Preset, task_name: str, family: str) -> dict[str, Any]:
    """The preset's values for a task: by exact name, else by family, else the generic row."""
    table = PAPER if preset == "paper" else FAST
    return dict(table.get(task_name) or table.get(family) or table["*"])


def resolve(preset: Preset, overrides: dict[str, Any], task_name: str, family: str) -> SPDSettings:
    """Preset values for the task, then every non-None override on top."""
    values = preset_values(preset, task_name, family)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return SPDSettings(**values)
