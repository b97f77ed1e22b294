"""The settings of a sparse dictionary (SAE or transcoder): what every activation shares and what
each one adds — its sparsity pressure (L1 price, k, L0 price) and its warm-ups.

`None` sizes and prices are chosen from the data by the fit (`dictionary_sizing.blind_sizes`,
`sparsity_rules.l1_price`), or from the ground truth when `sizing="oracle"`. The coder and its
training loop are in `dictionary.py`.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from mechscope.bounds import BatchSize, Count, Fraction, LearningRate, Natural, NonNegative, Positive, Steps
from mechscope.config import Config

Activation = Literal["relu", "topk", "batchtopk", "jumprelu"]
ACTIVATIONS: tuple[Activation, ...] = ("relu", "topk", "batchtopk", "jumprelu")


class DictionaryConfig(Config):
    """Training settings shared by every activation. `None` sizes are chosen from the data
    (`blind_sizes`), or from the ground truth when `sizing="oracle"`."""

    activation: ClassVar[Activation]
    n_latents: Count | None = None
    """Dictionary size C; None: `expansion` × the site's width (see `blind_sizes`)."""
    expansion: Positive = 8.0
    """C = expansion × width of the site's activations, when n_latents is None (sizing=blind)."""
    sizing: Literal["blind", "oracle"] = "blind"
    """blind: None sizes come from the activations alone. oracle: from the ground truth
    (C = 2 × true directions at the site, k = their mean number active) — a calibration that
    knows what no user knows, reported as oracle-sized."""
    steps: Steps = 1_500
    batch_size: BatchSize | None = None
    """None: about 256k numbers per batch, between 128 and 1024 rows (1024 on TMS, 256 on a
    1000-d residual stream), so a step costs about the same on every task."""
    lr: LearningRate = 2e-3
    lr_reference_dim: Count | None = None
    """None: `lr` as set. d_ref: `lr` is the rate at input width d_ref, scaled by √(d_ref / d_in)
    on wider inputs (`resolved_lr`)."""
    init_norm: Positive = 1.0
    """Row norm of W_enc and W_dec at initialisation (normalised units; an SAE's W_enc = W_decᵀ)."""
    warmup_frac: Fraction = 0.05
    decay_frac: Fraction = 0.3
    """LR: linear warm-up over the first warmup_frac of steps, linear decay to 0 over the last decay_frac."""
    buffer_size: Count = 32_768
    """Activations held in the shuffled buffer (half is refilled each time it is consumed)."""
    b_dec_init: Literal["geometric_median", "mean"] = "geometric_median"
    dead_after_steps: Count = 100
    """A latent that has not fired for this many steps counts as dead (AuxK revives those)."""


class L1PriceOptions(Config):
    l1_rule: Literal["amplitude", "interference"] = "amplitude"
    """How an unset L1 price is read off the data. amplitude: λ = 2ρ/√L0 (`l1_amplitude_frac`);
    interference: λ = 2σ/√d, the soft threshold at σ (`l1_noise_frac`) standard deviations of the
    overlap a latent picks up from the other features (≈ 1/√d whatever the L0; `sparsity_rules`).
    Measured in RESULTS ("Two scorer artefacts fixed…"): interference gives better mmcs on every task
    tried, mixed activity_f1; sae-relu's default (`ReLUOptions`), not the JumpReLU warm-up's."""
    l1_amplitude_frac: Positive = 0.5
    """amplitude rule: λ = 2ρ/√L0 with ρ this fraction and L0 the activations' kurtosis estimate
    (`sparsity_rules.l1_price`): the soft threshold λ/2 at ρ × one feature's RMS amplitude."""
    l1_noise_frac: Positive = 1.0
    """interference rule: the soft threshold λ/2 at this many σ = 1/√d (`sparsity_rules.interference_price`)."""


class ReLUOptions(DictionaryConfig, L1PriceOptions):
    """ReLU + L1. Defaults measured at 1,500 steps (benchmarks/RESULTS.md, helper sae13): a small
    initial dictionary (rows of norm 0.1, as SAELens's) converges tms-40-10, stress-iid and
    resid-mlp-1l. With unit-norm rows, lr 1e-2 on 1,000-d inputs moved each encoder row by ~0.3 a
    step (latents died on resid-mlp-1l), so the rate scales as 1/√d_in above a reference width."""

    activation: ClassVar[Activation] = "relu"
    lr: LearningRate = 1e-2
    lr_reference_dim: Count | None = 90
    """1e-2 up to 90-d inputs, then √(90/d_in) of it. Measured (RESULTS "ReLU's price ramp…",
    3 seeds at the peers bench's budget): synth-sae-bench (d = 128) mmcs 0.468 at 10 (the TMS width),
    0.479 at 90; 1e-2 flat 0.468, 2e-2 0.427 (seed 0); resid-mlp-1l (1,000-d) 1.000 either way."""
    init_norm: Positive = 0.1
    l1_rule: Literal["amplitude", "interference"] = "interference"
    """Measured (RESULTS "ReLU's price ramp…"): better mmcs than the amplitude rule on every task but
    stress-correlated (−0.004; synth-sae-bench +0.121, Zipfian +0.065). sae-jumprelu's warm-up keeps
    the amplitude rule (its L0 phase was tuned on it)."""
    l1_ramp_samples: Natural = 200_000
    """The L1 price rises linearly from 0 to λ over the first this many samples seen (as SAELens's
    `l1_warm_up_steps`; at most the whole run): early on a cheap, dense code lets every latent turn
    towards a feature, then the price sparsifies it. A count, not a share of the run: the turn takes
    some hundreds of steps however long the run, and a dense code costs the dense step (at d = 512,
    8,192 latents, a ramp over 70 % of 1,500 steps kept 40 % of them dense). Measured (RESULTS
    "ReLU's price ramp…", "…in samples"): synth-sae-bench's 300 × 1,024 mmcs 0.479 → 0.510 (3 seeds;
    a 30 % ramp 0.505); the stress variants' 1,500 × 1,024 at 13 % as good as at 70 % or better."""
    l1_coef: NonNegative | None = None
    """L1 price λ (normalised units); None: from the data (`l1_rule`)."""


class TopKOptions(DictionaryConfig):
    activation: ClassVar[Activation] = "topk"
    k: Count | None = None
    """Latents kept per input; None: estimated from the activations' kurtosis (`blind_sizes`)."""
    aux_coef: NonNegative = 1 / 32
    k_aux: Count | None = None
    """Dead latents used by AuxK; None: half the output dimension."""


class BatchTopKOptions(TopKOptions):
    activation: ClassVar[Activation] = "batchtopk"
    k: Positive | None = None  # type: ignore[assignment]
    """Mean latents kept per input over a batch (k·B per batch, as SAELens's `k: float`): it may be
    fractional, below 1 when most inputs use no feature. None: from the activations (`blind_sizes`)."""
    threshold_momentum: Fraction = 0.99
    topk_warmup_frac: Fraction = 0.7
    """Train the first fraction of steps with per-row TopK (k per input), then with the batch
    competition; θ is estimated from the batch phase only. From a random start the batch
    competition settles on mixtures of features (stress-iid seed 0: 9 of 40 features matched at
    cos > 0.95, mmcs 0.82 — SAELens's BatchTopK 0.80–0.83); per-row TopK finds the features
    (0.998) and the batch phase, begun where the lr decays (0.7), keeps them (0.985 / F1 1.0)."""


class JumpReLUOptions(DictionaryConfig, L1PriceOptions):
    activation: ClassVar[Activation] = "jumprelu"
    lr: LearningRate = 1e-2  # measured on TMS 40-10 at 1500 steps: MMCS 0.90 (0.76 at lr 2e-3, θ₀ 0.1, λ 3e-3)
    l0_coef: NonNegative = 0.05
    bandwidth: Positive = 0.05
    """ε of the rectangle kernel, in units of the normalised activation (E‖x‖² = 1)."""
    init_threshold: Positive | None = None
    """θ₀ in normalised units; None: `init_threshold_rms` × the RMS of the initial pre-activations."""
    init_threshold_rms: Fraction = 0.03
    """θ₀ as a fraction of the RMS pre-activation at initialisation (`jumprelu_init_threshold`)."""
    l0_grad_to_encoder: bool = True
    """Also pass the L0 pseudo-derivative to the pre-activations (Anthropic 2025); False = paper."""
    l1_warmup_frac: Fraction = 0.0
    """Train the first fraction of steps as an L1 SAE (price `warmup_l1_coef` on z·‖W_dec‖, free
    decoder norms, as `relu`), then fold the decoder norms into encoder, bias and θ (the same
    function, unit-norm decoder) and train on with the L0 price. 0: L0 from the start."""
    warmup_l1_coef: NonNegative | None = None
    """L1 price of the warm-up; None: sae-relu's rule (`l1_amplitude_frac`)."""
