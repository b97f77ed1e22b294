"""What a blind fit reads off the activations about their sparsity: how many features an input
uses (`sparsity_estimate`) and the L1 price that follows from it (`l1_price`), or the price at the
interference floor of the site's width (`interference_price`, from `site_width`).

Both work on data alone — no ground truth — so a user with a real model gets the same rule as
the zoo. They live apart from `dictionary_sizing` because the training loop itself resolves the
price (`train_coder`), whatever path reached it (zoo fit, real model, torchrun).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

KURTOSIS_RATIO = 1.8
"""E m⁴ / (E m²)² of a feature's magnitude m when it fires; 1.8 for m ~ U(0, 1)."""


def sparsity_estimate(x: Tensor, generator: torch.Generator, n_dirs: int = 256) -> float:
    """Mean number of active features per input, estimated from the activations alone.

    Along a random unit direction u, u·x = Σ_i a_i f_i sums the L0 features active on the input.
    For independent sparse features (each firing with small probability, magnitude m) its excess
    kurtosis is κ ≈ 3 r / L0 with r = E m⁴ / (E m²)², since a sum's fourth cumulant adds while its
    variance squared grows with the number of terms. So L0 ≈ 3 r / κ, κ averaged over directions.
    Measured (seed 0, 20k inputs): tms-40-10 2.7 (true 2.0), resid-mlp-1l 1.04 (1.00),
    synth-sae-bench 5.9 (7.2). Dense (Gaussian-like) data has κ → 0, i.e. a large L0."""
    xc = x - x.mean(0)
    u = torch.randn(x.shape[1], n_dirs, generator=generator)
    p = xc @ (u / u.norm(dim=0))  # (N, n_dirs)
    kurt = float((p.pow(4).mean(0) / p.pow(2).mean(0).pow(2).clamp_min(1e-30) - 3).mean())
    return 3 * KURTOSIS_RATIO / max(kurt, 1e-6)


def l1_price(l0_estimate: float, amplitude_frac: float) -> float:
    """λ = 2ρ / √L0 for an L1 SAE on data scaled to E‖x‖² = 1.

    With L1 price λ the best code of a feature of amplitude a is the soft threshold a − λ/2: a
    latent drops every activation below λ/2. When L0 features share the unit energy, one feature's
    RMS amplitude is 1/√L0, so a fixed price is a threshold that rises with L0 in units of the
    features: 1.2 keeps the 10-d tasks (L0 ≈ 2) but silenced every latent of synth-sae-bench
    (L0 7.3, threshold 0.6 above its RMS amplitude 0.37). This puts the threshold at a fixed
    fraction ρ (`l1_amplitude_frac`) of that amplitude instead."""
    return 2 * amplitude_frac / math.sqrt(max(l0_estimate, 1e-6))


def site_width(x: Tensor) -> int:
    """Width of the activations x [N, d]: their numerical rank (singular values of the centred
    sample above 1e-4 of the largest). On a real model's residual stream this is d; a site whose
    activations span only part of its space (the zoo embeds 100 features in 1000 dims) gets the
    width of the part they use."""
    xc = x - x.mean(0)
    s = torch.linalg.svdvals(xc[:4_096])
    return max(1, int((s > 1e-4 * s[0]).sum())) if float(s[0]) > 0 else 1


def interference_price(width: int, noise_frac: float) -> float:
    """λ = 2σ/√d for an L1 SAE on data scaled to E‖x‖² = 1 on a site of width d.

    A latent aligned with feature i reads a_i + Σ_j a_j cos_ij: for near-orthogonal features the
    overlap's variance is Σ_j E a_j² cos² ≈ 1/d whatever the L0. The soft threshold λ/2 at `noise_frac`
    standard deviations of it rejects that overlap — the amplitude rule with ρ = σ√(L0/d)."""
    return 2 * noise_frac / math.sqrt(max(width, 1))
