"""Bench presets: which tasks, methods and seeds, and the per-cell settings that make them fit a budget.

A preset's `sets` are `(task glob, method glob, ("scope.key=value", ...))` rules. Unlike a user's
`--set`, a preset setting is *soft*: it applies only where the task's or method's config has that
field, so one rule ("every method trains 1,500 steps") covers methods with different configs.

A preset's `sweeps` add a fourth grid axis, the method's sparsity knob: a `Sweep(tasks, methods,
"method.k", ("1", "2", "4"), default="2")` expands each matching cell into one cell per value
(cell key, run dir `runs/<task>/<method>@k=4/seed-<n>`, and the table's `knob` column "k=4" all
carry it). The first sweep matching a (task, method) wins; tasks matching `default_knob_only` run
only the sweep's default value (the random-init controls: one reference point, not a curve).

- `quick`: every task family and every method at small settings — the README's main job, sized to
  finish in ≤ 10 minutes on 2 CPU cores including target training on an empty cache.
- `full`: the published settings (each method's `paper` preset, the tasks' own defaults), 3 seeds.
- `stress`: issue 9's grid: stress variants, their random-init controls, knob sweeps — see `_STRESS_DOC`.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass


@dataclass(frozen=True)
class Sweep:
    """A sparsity knob swept over `values` in the cells whose task and method match the globs."""

    tasks: str
    methods: str
    key: str
    """A `method.FIELD` (or `task.FIELD`) setting, applied as a hard `--set` (a typo is an error)."""
    values: tuple[str, ...]
    default: str
    """The value the report calls "the default knob" (and the controls' only one); one of `values`."""

    def __post_init__(self) -> None:
        if self.default not in self.values:
            raise ValueError(f"sweep {self.key}: default {self.default!r} is not one of {self.values}")

    def label(self, value: str) -> str:
        """The `knob` column's text: "k=4" for `method.k` = 4."""
        return f"{self.key.split('.', 1)[-1]}={value}"


@dataclass(frozen=True)
class Knob:
    """One cell's point on its sweep ("" label: the cell is not swept)."""

    label: str = ""
    setting: str | None = None
    """The `scope.key=value` that puts the cell there."""
    default: bool | None = None
    """Whether this is the sweep's default value (None when not swept)."""


@dataclass(frozen=True)
class Preset:
    name: str
    summary: str
    tasks: tuple[str, ...]
    """Task names in report order; names not registered in this install are skipped."""
    seeds: int
    sets: tuple[tuple[str, str, tuple[str, ...]], ...] = ()
    task_seeds: tuple[tuple[str, int], ...] = ()
    """(task glob, seeds): fewer seeds for expensive tasks (unless `--seeds` is given)."""
    sweeps: tuple[Sweep, ...] = ()
    default_knob_only: tuple[str, ...] = ()
    """Task globs whose swept cells run only at the sweep's default value."""

    def seeds_for(self, task: str) -> int:
        return next((n for pattern, n in self.task_seeds if fnmatch.fnmatch(task, pattern)), self.seeds)

    def knobs_for(self, task: str, method: str) -> list[Knob]:
        """The knob points of a (task, method): one unswept `Knob()` unless a sweep matches."""
        sweep = next((s for s in self.sweeps if fnmatch.fnmatch(task, s.tasks) and fnmatch.fnmatch(method, s.methods)),
                     None)
        if sweep is None:
            return [Knob()]
        only_default = any(fnmatch.fnmatch(task, g) for g in self.default_knob_only)
        values = (sweep.default,) if only_default else sweep.values
        return [Knob(sweep.label(v), f"{sweep.key}={v}", v == sweep.default) for v in values]


_QUICK_TASKS = (
    "tms-5-2",
    "tms-5-2-id",
    "tms-40-10",
    "resid-mlp-1l",
    "flipflop-3bit",
    "sine-generator",
    "integrator",
    "linear-rnn",
    "selective-ssm",
)

_QUICK_SETS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    # One target per task, decomposed by every method seed (the full preset trains one per seed).
    ("*", "*", ("target_seed=0",)),
    # Targets: fewer training steps than the papers (the cache keys on them, so these targets
    # never mix with full-preset ones).
    ("tms-5-2*", "*", ("task.steps=3000",)),
    ("tms-40-10*", "*", ("task.steps=2000", "task.batch_size=2048")),
    ("resid-mlp*", "*", ("task.batch_size=512",)),
    # Methods: short fits.
    ("*", "sae-*", ("method.steps=1500",)),
    ("*", "transcoder-*", ("method.steps=1500",)),
    ("*", "spd", ("method.steps=2500",)),
    ("tms-40-10*", "spd", ("method.steps=1000",)),  # C = 200 components: ~3× a 5-2 step
    # The residual MLP's 1,000-dim stream makes every step ~100× a TMS step: shorter, smaller fits.
    ("resid-mlp*", "sae-*", ("method.steps=200", "method.batch_size=256", "method.buffer_size=8192")),
    ("resid-mlp*", "transcoder-*", ("method.steps=200", "method.batch_size=256", "method.buffer_size=8192")),
    ("resid-mlp*", "spd", ("method.steps=300", "method.batch_size=256")),
    # Fixed points: fewer starts and iterations than the finder's defaults.
    ("*", "fixed-points", ("method.n_starts=256", "method.max_iters=300")),
)

_STRESS_DOC = """The `stress` preset (issue 9): every stress variant and its random-init control, every method
that applies (oracle, random, the four SAEs, SPD; transcoders and fixed points are n/a rows), 3 seeds,
each method's sparsity knob swept over three values on the real variants (controls, and the
tms-40-10 pair, run the default value only: one reference point each).

Knob values — half, equal to and twice the natural setting, so each curve brackets the default:
- sae-topk, sae-batchtopk: `k` ∈ {½, 1, 2} × the variant's true mean L0 (rounded, ≥ 1); the default
  is round(L0), which is also the method's own default (`k=None`): {1, 2, 4} (default 2) on iid,
  correlated, anticorrelated and overcomplete (L0 = 2); {2, 3, 6} (3) on hierarchical (L0 ≈ 3.35);
  {2, 5, 10} (5) on dense (L0 = 5); {1, 2, 4} (1) on zipf (L0 ≈ 0.8); 7 on synth-sae-bench (L0 ≈ 7.3).
- sae-relu: `l1_coef` ∈ {0.1, 0.3, 1.0}, default 0.3 (the method's default).
- sae-jumprelu: `l0_coef` ∈ {0.01, 0.05, 0.25}, default 0.05 (the method's default).
- spd: `importance_coeff` (importance minimality) ∈ {3e-4, 1e-3, 3e-3}, default 1e-3 (the fast
  preset's TMS 40-10 value; the stress targets have the same 10 × 40 shape).

Budget (2 CPU cores, `--workers 2`): measured CPU time per cell on stress-iid is ~1.7 s for
oracle/random (scoring and figures), ~4.5 s for a 400-step SAE, ~7 s for a 300-step SPD with C = 50,
so the 40-feature part (~530 cells) needs ~1,900 CPU s (≈ 16 min on two free cores); SAEs train 400
steps, SPD 300 steps with SPD's fast-preset recipe (data init, zero rows skipped, p = 1). A
synth-sae-bench cell costs ~30–50 CPU s, so its 42 cells add ≈ 15–30 min: ≈ 45 min in all on an
idle box (estimated from CPU time). Measured on the shared 2-core box, load average 3–8 from other
jobs: the whole preset (588 cells + 162 n/a rows) took 89 min wall, 14 synth-sae-bench cells ≈ 16 min.
stress-overcomplete caps the dictionary at 40 latents and
SPD at C = 40 components for its 80 features (what gets merged). synth-sae-bench (1,024 features in
d = 128) runs with a 1,024-latent dictionary (SynthSAEBench's size: one latent per feature; SPD
C = 1,024), 300 SAE / 200 SPD steps, at the default knob only: one of its cells costs ~30–50 CPU s,
most of it scoring 1,024 mechanisms (parameter-space similarity, ablation specificity), so its knob
sweep alone would take longer than the rest of the grid (its sweeps are declared — k ∈ {4, 7, 14} —
but `default_knob_only` holds it at the default; drop it from there to sweep on a bigger machine).
Its 16,384 × 768 GPU version is not in this preset: run it with
`mechscope bench --preset stress --tasks synth-sae-bench-16k --device cuda`.

Read every variant against stress-iid, the baseline: at 400 steps BatchTopK, ReLU and JumpReLU SAEs
stay near 0.8 mmcs even there (measured: 0.78–0.81; at 800 steps 0.80–0.84), so "below 0.9" on a
variant means more than under-training only where the baseline is above it.
"""

_STRESS_VARIANTS = ("stress-iid", "stress-correlated", "stress-anticorrelated", "stress-hierarchical", "stress-zipf",
                    "stress-dense", "stress-overcomplete", "synth-sae-bench")
_STRESS_TASKS = (*(x for t in _STRESS_VARIANTS for x in (t, f"{t}-control")), "tms-40-10", "tms-40-10-control")

_STRESS_SETS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("*", "sae-*", ("method.steps=400",)),
    ("*", "spd", ("method.steps=300", "method.C=50", "method.init=data", "method.skip_zero_rows=true",
                  "method.layerwise_when_single=false", "method.batch_size=1024", "method.lr=3e-3",
                  "method.pnorm=1.0", "method.importance_coeff=1e-3")),
    # More true features (80) than latents / components: the method must merge some.
    ("stress-overcomplete*", "sae-*", ("method.n_latents=40",)),
    ("stress-overcomplete*", "spd", ("method.C=40",)),
    # The classic TMS 40-10 target and its control, as the quick preset trains it (one cached target).
    ("tms-40-10*", "*", ("target_seed=0", "task.steps=2000", "task.batch_size=2048")),
    ("tms-40-10*", "spd", ("method.C=60",)),
    # SynthSAEBench at CPU size: one latent per feature, fewer steps on the 128-d stream.
    ("synth-sae-bench*", "sae-*", ("method.n_latents=1024", "method.steps=300")),
    ("synth-sae-bench*", "spd", ("method.C=1024", "method.steps=200", "method.batch_size=512")),
)


def _k_sweep(tasks: str, values: tuple[str, str, str]) -> tuple[Sweep, ...]:
    return tuple(Sweep(tasks, m, "method.k", values, default=values[1]) for m in ("sae-topk", "sae-batchtopk"))


_STRESS_SWEEPS: tuple[Sweep, ...] = (
    *_k_sweep("stress-hierarchical*", ("2", "3", "6")),
    *_k_sweep("stress-dense*", ("2", "5", "10")),
    *_k_sweep("synth-sae-bench*", ("4", "7", "14")),
    *(Sweep("stress-zipf*", m, "method.k", ("1", "2", "4"), default="1") for m in ("sae-topk", "sae-batchtopk")),
    *_k_sweep("*", ("1", "2", "4")),
    Sweep("*", "sae-relu", "method.l1_coef", ("0.1", "0.3", "1.0"), default="0.3"),
    Sweep("*", "sae-jumprelu", "method.l0_coef", ("0.01", "0.05", "0.25"), default="0.05"),
    Sweep("*", "spd", "method.importance_coeff", ("3e-4", "1e-3", "3e-3"), default="1e-3"),
)

PRESETS: dict[str, Preset] = {
    "quick": Preset("quick", "every task family and method, small settings (≤ 10 min on 2 cores)",
                    _QUICK_TASKS, seeds=2, sets=_QUICK_SETS, task_seeds=(("resid-mlp*", 1),)),
    "full": Preset("full", "paper settings, 3 seeds", (*_QUICK_TASKS, "tms-40-10-id"), seeds=3,
                   sets=(("*", "*", ("method.preset=paper",)),)),
    "stress": Preset("stress", "issue 9: stress variants + random-init controls, every method, 3 seeds, knob sweeps",
                     _STRESS_TASKS, seeds=3, sets=_STRESS_SETS, sweeps=_STRESS_SWEEPS,
                     default_knob_only=("*-control", "tms-40-10*", "synth-sae-bench*")),
}


def get_preset(name: str) -> Preset:
    from mechscope.config import ConfigError

    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; available: {', '.join(PRESETS)}")
    return PRESETS[name]


# --- circuits (issue 15) ------------------------------------------------------------------------
# The circuit tasks' bench cells (the usual per-cell metrics; the circuit metrics and the hop
# verdicts come from `benchmarks/circuits_table.py --graphs BENCH/circuits --out
# BENCH/circuits_rows.jsonl`, which the report's circuits section reads). Small fits, as the
# circuit table ran them on the shared 2-core box.
_CIRCUITS_TASKS = ("boolean-circuits", "resid-mlp-2l", "resid-mlp-3l", "tracr-reverse", "tracr-sort")
_CIRCUITS_SETS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("*", "*", ("method.steps=400",)),
    ("boolean-circuits", "*", ("method.steps=1500",)),
    ("boolean-circuits", "spd", ("method.steps=2000",)),
    ("resid-mlp*", "*", ("task.batch_size=512", "method.batch_size=256", "method.buffer_size=8192")),
)
PRESETS["circuits"] = Preset("circuits", "issue 15: the circuit tasks (boolean, resid-mlp-2l/3l, tracr), 3 seeds",
                             _CIRCUITS_TASKS, seeds=3, sets=_CIRCUITS_SETS)
