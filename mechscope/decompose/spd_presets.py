"""SPD's one table of per-task settings — the paper's (`preset=paper`) and our faster default
(`preset=fast`), by task name, else family, else the generic row — and the sites SPD decomposes:
modules chosen by fnmatch patterns, with a default per task family (`task_modules`).

`SPDConfig.task_defaults` reads this table; the run path resolves a config once, so every field a
user did not set takes the table's value for the task (a field the user sets always wins), and the
run's config.yaml records the result. `SPDSettings` is the training loop's view of those values.

Paper settings (METHODS.md): TMS 5-2 C = 20, Adam lr 1e-3 cosine, 40k steps, batch 4096,
importance 3e-3 with p = 1; TMS 40-10 C = 200, importance 1e-4, p = 2; residual MLP 1 layer
C = 100, lr 2e-3, importance 1e-5, p = 2, 30k steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatch
from typing import Any, Literal

from torch import Tensor, nn

from mechscope.config import Config, ConfigError
from mechscope.core import TaskFacts

Preset = Literal["fast", "paper"]


class SPDSettings(Config):
    """Every SPD knob, fully resolved (no None): what `fit` actually runs with."""

    steps: int
    batch_size: int
    lr: float
    lr_warmup_frac: float = 0.0
    lr_final_frac: float = 0.0
    lr_components: float | None = None
    """Adam's lr for U and V (None: `lr`, the CI MLPs' lr)."""
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
    dense_importance: float = 1.0
    """Importance-minimality weight of a dense site (init "data" finds more recurring input
    directions than input dimensions: +ID's identity, the residual MLP's mlp_out). 1 is plain SPD;
    at 0 its components, which start always important, stay so."""
    dense_spares: int = -1
    """Components a dense site keeps beyond its principal axes (init "data"; −1: all C). Its
    spares start dead (U = 0, g = 0) and its axes carry it exactly, so on the residual MLP's
    mlp_out (17 axes, C = 250) the other 233 only cost compute (their CI MLPs and the (B, C) @ (C,
    1000) write); measured under heavy load the 3-layer step moved from 0.38 to 0.35–0.42 CPU-s."""
    subset_groups: int = 0
    """Layerwise reconstruction as N groups that each mask a random subset of k sites, k uniform in
    1 … n_sites (the reference's uniform-k subset routing), instead of one group per site (0): a
    step runs 1 + N masked forwards instead of 1 + n_sites."""
    leaky_alpha: float = 0.01
    fused: bool = True
    """Run the all-sites and the one-site-at-a-time masked forwards as one batched forward."""
    layerwise_when_single: bool = True
    """With one site, layerwise = stochastic with a second mask sample; False skips it."""
    init: Literal["random", "data"] = "random"
    """"data": start components on input directions that recur in a sample of the data."""
    init_pool: int = 16_384
    init_peel: bool = False
    """With init "data": also start components on the lines that recur once the found ones are
    projected out of the inputs (features that never fire alone; `spd_losses.peeled_directions`)."""
    init_axes: bool = False
    """With init "data": also start components on the input's own coordinate axes where the input
    is sparse in them (`spd_losses.axis_directions`: sparse codes such as SynthSAEBench's, where no
    line recurs)."""
    ci_init: Literal["random", "ramp"] = "random"
    """"ramp" (with init "data"): the data-aligned components' CI MLPs start important wherever
    they read their direction, of either sign (see SiteComponents.ramp_ci_); "random": Kaiming."""
    skip_zero_rows: bool = False
    """Leave examples on which every decomposed module reads zero out of the masked forwards: exact,
    as their error is 0 whatever the masks (see `spd_losses.live_rows`); ~4× fewer rows on TMS 5-2."""
    threads: int = 0
    """torch threads while fitting (0: leave as is). Tiny models gain nothing from intra-op threads,
    and on a busy machine a 2-thread op waits for its second core: 1 is much faster there."""
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
    # The reference's spd-paper configs (METHODS.md). 2 layers, as near as this engine gets: C = 400,
    # importance 1e-4, lr 3e-4, 25k steps, the layer-subset reconstruction (coefficient 2); not
    # here: its one shared CI network (per-component CI MLPs instead), its PGD reconstruction term,
    # faithfulness 0 (kept at 1). 3 layers: exactly the reference's settings.
    "resid-mlp-2l": {**_PAPER_RESID, "steps": 25_000, "lr": 3e-4, "C": 400, "importance_coeff": 1e-4,
                     "subset_groups": 1, "layerwise_coeff": 2.0},
    "resid-mlp-3l": {**_PAPER_RESID, "steps": 50_000, "lr": 1e-3, "C": 500, "ci_hidden": 128},
    "tms": {**_PAPER_TMS, "C": 20, "importance_coeff": 3e-3, "pnorm": 1.0},
    "resid-mlp": _PAPER_RESID,
    # Not in METHODS.md: the stress family (h = W x, one site W, 40 features in 10 dims unless
    # noted) takes TMS 40-10's paper settings; SynthSAEBench's 1,024 features get C = 2 × 1,024.
    "stress": {**_PAPER_TMS, "C": 200, "importance_coeff": 1e-4, "pnorm": 2.0},
    "synth-sae-bench": {**_PAPER_TMS, "C": 2048, "importance_coeff": 1e-4, "pnorm": 2.0},
    "synth-sae-bench-16k": {**_PAPER_TMS, "C": 32_768, "importance_coeff": 1e-4, "pnorm": 2.0},  # GPU size
    "*": {"steps": 10_000, "batch_size": 256, "lr": 1e-3, "C": 100, "importance_coeff": 1e-4, "pnorm": 2.0},
}

# Our default. What buys the speed on TMS 5-2 (benchmarks/spd_speed.py measures each):
# - init "data": components start on input directions that recur in the data (one per feature on
#   sparse data), so SPD refines a near-clean decomposition instead of untangling a random one;
# - skip_zero_rows: the ~77 % of TMS inputs that are all-zero leave the masked forwards (exact);
# - batch 1024 and 1k steps at a 3× higher lr instead of 4096 × 40k.
# - dense_importance 0: a dense site's pieces (+ID's identity, mlp_out) stay always important
#   instead of being carved off the inputs where they matter least (see SiteComponents.init_).
_FAST = {"init": "data", "skip_zero_rows": True, "layerwise_when_single": False, "threads": 1, "dense_importance": 0.0}
_FAST_40_10 = {"steps": 1_000, "batch_size": 1024, "lr": 3e-3, "importance_coeff": 1e-3, "pnorm": 1.0}
# Residual MLP: the data init already reads through the true dual vectors d_i (mmcs 0.999 at step
# 0), so U, V take 20× smaller steps than the CI MLPs (at lr 2e-3 Adam's ~lr-per-entry steps on
# ~1/√1000-sized read entries mixed features into shared components: mmcs 0.89 after 1.5k steps),
# and the CI MLPs start on the ramp (important on ±x_i; plain Kaiming left 41 % of the components
# unimportant on −x_i, where the target's MLP output is 7× smaller).
_FAST_RESID = {"steps": 1_500, "batch_size": 1024, "lr_components": 1e-4, "ci_init": "ramp"}
FAST: dict[str, dict[str, Any]] = {
    "tms-5-2": {**PAPER["tms-5-2"], **_FAST, "steps": 1_000, "batch_size": 1024, "lr": 3e-3},
    "tms-5-2-id": {**PAPER["tms-5-2-id"], **_FAST, "steps": 2_000, "batch_size": 1024, "lr": 3e-3},
    # p = 1 and a 10× importance coefficient: with p = 2 the spare components' small importances
    # are barely penalised and every component fires on most one-hot inputs after 1k steps.
    "tms-40-10": {**PAPER["tms-40-10"], **_FAST, **_FAST_40_10},
    "tms-40-10-id": {**PAPER["tms-40-10-id"], **_FAST, **_FAST_40_10},
    "resid-mlp-1l": {**PAPER["resid-mlp-1l"], **_FAST, **_FAST_RESID},
    # (2 and 3 layers start from the 1-layer paper row, not the deeper rows' reference recipes.)
    # Layers ≥ 1 see each feature along two lines (r_l(+e_i) ≠ −r_l(−e_i)): 2n recurring lines, so
    # C must exceed 2n for the data init to give every line a component (C = 100: layer 1 of 2l at
    # mmcs 0.58; C = 250: 0.98 with one piece per feature on both signs + one on x_i > 0; U, V at
    # lr 3e-4 instead of 1e-4: 0.993, ml2r 0.96 instead of 0.93, 161 pieces alive instead of 201).
    "resid-mlp-2l": {**_PAPER_RESID, **_FAST, **_FAST_RESID, "C": 250, "lr_components": 3e-4},
    # 3 layers: the same, with the per-component CI MLPs at 16 hidden units (the paper's 128 cost
    # 7.6× the step time: B × C × H GELUs per site), each mlp_out held by its 17 principal axes
    # alone (dense_spares 0: no measurable gain under load), and U, V at 5e-4: at 3e-4 layer 1's
    # pieces stay short of the truth (ml2r 0.894 / 0.891 on seeds 0 / 1; 5e-4: 0.919 on seed 0).
    "resid-mlp-3l": {**_PAPER_RESID, **_FAST, **_FAST_RESID, "C": 250, "lr_components": 5e-4,
                     "ci_hidden": 16, "dense_spares": 0},
    "tms": {**PAPER["tms"], **_FAST, "steps": 1_000, "batch_size": 1024, "lr": 3e-3},
    "resid-mlp": {**PAPER["resid-mlp"], **_FAST, **_FAST_RESID},
    # init_peel: children that only fire with their parent (hierarchical) and sparse features beside
    # always-on dense ones (dense) recur in no input, so the plain data init left them without a
    # component (mmcs 0.40 / 0.30 at the stress preset's 300 steps; peeled: 0.994 / 0.995).
    "stress": {**PAPER["stress"], **_FAST, **_FAST_40_10, "init_peel": True},
    # SynthSAEBench's inputs are the sparse code x itself (~7 of 1,024 on, Zipf-rare features never
    # alone): no line recurs, so the components start on the input's axes (init_axes), from a pool
    # big enough that the rarest features occur (p ≈ 5e-4), and U, V step at 1e-4 as on the residual
    # MLP (1,024-wide reads). 600 steps × 512 (the stress budget), seed 0: mmcs 0.026 → 0.999.
    "synth-sae-bench": {**PAPER["synth-sae-bench"], **_FAST, **_FAST_40_10, "batch_size": 256, "init_peel": True,
                        "init_axes": True, "init_pool": 65_536, "lr_components": 1e-4},
    # (16k: the same rules, the pool left at 16k inputs of width 16,384; not run — GPU size.)
    "synth-sae-bench-16k": {**PAPER["synth-sae-bench-16k"], **_FAST, **_FAST_40_10, "batch_size": 256, "threads": 0,
                            "init_peel": True, "init_axes": True, "lr_components": 1e-4},
    "*": {**PAPER["*"], "skip_zero_rows": True},
}


def preset_values(preset: Preset, task_name: str, family: str) -> dict[str, Any]:
    """The preset's values for a task: by exact name, else by family, else the generic row."""
    table = PAPER if preset == "paper" else FAST
    return dict(table.get(task_name) or table.get(family) or table["*"])


def settings_task(task: TaskFacts) -> TaskFacts:
    """The task whose presets and default sites apply: a random-init control (`<name>-control`,
    which has a `base()`) takes its original's, so that both are decomposed alike."""
    base = getattr(task, "base", None)
    return base() if callable(base) else task


def resolve(preset: Preset, overrides: dict[str, Any], task_name: str, family: str) -> SPDSettings:
    """Preset values for the task, then every non-None override on top."""
    values = preset_values(preset, task_name, family)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return SPDSettings(**values)


def task_modules(task: Any) -> list[str]:
    """The default module patterns of a task family: TMS its `W` (and the +ID variants' `identity`),
    the residual MLP every layer's `mlp_in`/`mlp_out`, any other target every supported untied module."""
    if task.family == "tms":
        return ["W", "identity"] if getattr(task.config, "identity", False) else ["W"]
    if task.family == "resid-mlp":
        return ["layers.*.mlp_in", "layers.*.mlp_out"]
    return ["*"]


def task_defaults(task: Any, preset: Preset) -> dict[str, Any]:
    """The table's row for `task` (a random-init control takes its original's): every SPDConfig
    field that differs by task, `modules` included."""
    like = settings_task(task)
    return {**preset_values(preset, like.name, like.family), "modules": task_modules(like)}


# --- sites: which modules, and how to read their weight --------------------------------------------
Kind = Literal["linear", "embedding", "conv1d"]
SUPPORTED = "nn.Linear, nn.Embedding, transformers Conv1D"


@dataclass
class Site:
    name: str
    kind: Kind
    module: nn.Module
    aliases: list[str]
    """Modules tied to this one (they compute with Wᵀ): same subcomponents, transposed."""


def module_kind(name: str, module: nn.Module) -> Kind:
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.Embedding):
        return "embedding"
    if type(module).__name__ == "Conv1D" and hasattr(module, "nf"):
        return "conv1d"
    raise ConfigError(f"SPD cannot decompose module {name!r} of type {type(module).__name__}; supported: {SUPPORTED}")


def weight_matrix(site: Site) -> Tensor:
    """The site's weight as the map it applies: [d_out, d_in]."""
    w = site.module.weight
    assert isinstance(w, Tensor)
    return w if site.kind == "linear" else w.T  # Embedding is [vocab, d], Conv1D is [d_in, d_out]


def _supported(module: nn.Module) -> bool:
    try:
        module_kind("", module)
    except ConfigError:
        return False
    return True


def select_sites(target: nn.Module, patterns: list[str]) -> list[Site]:
    """Sites matching `patterns`, in the model's module order; one-line errors for bad patterns.

    A wildcard pattern (`*`, `layers.*`) selects the supported modules among its matches; a plain
    module name must itself be supported."""
    modules = dict(target.named_modules())
    tied: dict[str, str] = getattr(target, "tied", {})
    chosen: list[str] = []
    for pat in patterns:
        hits = [n for n in modules if n and fnmatch(n, pat)]
        if any(ch in pat for ch in "*?["):
            hits = [n for n in hits if _supported(modules[n])]
        if not hits:
            close = ", ".join(n for n in list(modules)[1:12])
            raise ConfigError(f"module pattern {pat!r} matches no module of {type(target).__name__}; modules: {close}")
        for n in hits:
            if n in tied:
                if not any(fnmatch(tied[n], p) for p in patterns):
                    raise ConfigError(f"module {n!r} is tied to {tied[n]!r}: decompose {tied[n]!r} instead")
                continue
            module_kind(n, modules[n])  # raises for unsupported types
            if n not in chosen:
                chosen.append(n)
    if not chosen:
        raise ConfigError("SPD needs at least one module to decompose; got patterns " + repr(patterns))
    order = {n: i for i, n in enumerate(modules)}
    return [
        Site(n, module_kind(n, modules[n]), modules[n], [a for a, s in tied.items() if s == n])
        for n in sorted(chosen, key=order.__getitem__)
    ]


def glob_escape(name: str) -> str:
    """A module name as an fnmatch pattern that matches only itself."""
    return "".join(f"[{ch}]" if ch in "*?[" else ch for ch in name)
