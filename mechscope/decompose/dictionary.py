"""Sparse dictionaries over activations: the one coder behind every SAE and transcoder.

A coder reads an input activation x [B, d_in] and writes a target y [B, d_out] (an SAE: y = x;
a transcoder: x = an MLP's input, y = its output):

    pre = W_enc (x − b_dec·[sae]) + b_enc          [B, C]    C latents
    z   = act(pre)                                   [B, C]    sparse, ≥ 0
    ŷ   = z W_dec + b_dec                            [B, d_out]

W_dec's rows are the dictionary directions. The four activations and their sparsity pressure:

- `relu`: z = ReLU(pre); loss ‖y − ŷ‖² + λ Σ_c z_c ‖W_dec[c]‖ (L1 weighted by decoder norm, so the
  decoder may stay unconstrained without the penalty being dodged by shrinking z).
- `topk` (Gao et al. 2024): keep the k largest ReLU(pre) per row; unit-norm decoder; AuxK:
  the top-k_aux *dead* latents reconstruct the residual y − ŷ (coefficient 1/32) to revive them.
- `batchtopk` (Bussmann et al. 2024): keep the k·B largest over the whole batch; at inference a
  single threshold θ (running mean of the smallest kept value) replaces the batch competition.
- `jumprelu` (Rajamanoharan et al. 2024): z = pre · H(pre − θ_c) with learned θ; loss
  ‖y − ŷ‖² + λ·L0, the step's gradient passed to θ through a rectangle-kernel pseudo-derivative
  of bandwidth ε.

Training works on activations scaled to E‖x‖² = 1 (so one set of hyper-parameters serves a
10-d toy and a 1000-d residual stream) and folds the scales back into the weights at the end.
`train_coder` is the one training loop — for the zoo, for a real model's activation cache, on any
device, and data-parallel under torchrun (`parallel.Placement`: each rank trains on its share of
every global batch and gradients are averaged).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mechscope.config import ConfigError
from mechscope.core import Progress, no_progress
from mechscope.decompose.activation_buffer import ActivationBuffer, Source, geometric_median
from mechscope.decompose.auxk import dense_aux_loss, sparse_aux_loss, uses_sparse_aux
from mechscope.decompose.dictionary_config import (
    ACTIVATIONS,
    Activation,
    BatchTopKOptions,
    DictionaryConfig,
    JumpReLUOptions,
    L1PriceOptions,
    ReLUOptions,
    TopKOptions,
)
from mechscope.decompose.dictionary_kernels import (
    Entries,
    ThetaBand,
    _BandDecoderTap,
    _BandPrice,
    _BatchTopKEncode,
    _Encode,
    _EncodeAt,
    _JumpReLU,
    _Step,
    _TopKEncode,
    jumprelu_entries,
    row_norms,
    sparse_decode,
)
from mechscope.decompose.parallel import Placement, precision
from mechscope.decompose.sparse_code import code_decode, code_entries, latent_block
from mechscope.decompose.sparsity_rules import interference_price, l1_price, site_width, sparsity_estimate

__all__ = [  # the settings live in dictionary_config.py; importers may take them from here too
    "ACTIVATIONS", "Activation", "BatchTopKOptions", "DictionaryConfig", "JumpReLUOptions", "L1PriceOptions",
    "ReLUOptions", "SparseCoder", "TopKOptions", "TrainStep", "default_batch_size", "jumprelu_init_threshold",
    "lr_lambda", "resolve_l1_price", "resolved_lr", "train_coder", "trained_record",
]  # fmt: skip

SPARSE_BELOW = 0.12
"""ReLU / JumpReLU train on the firing entries alone (decoder, its backward, W_enc's gradient;
`sparse_code.py`) when at most this fraction of the batch's [B, C] pre-activations fire: the sparse
step costs the dense one at ≈ 13 % (B = 1024, C = 8192, d = 512, 1 thread: 0.34 vs 0.37 s at 12 %,
0.20 vs 0.39 s at 5 %; RESULTS.md)."""


# --- the coder --------------------------------------------------------------------------------
class TrainStep(NamedTuple):
    loss: Tensor
    """What is minimised: reconstruction + sparsity (+ AuxK)."""
    mse: Tensor
    """Mean over the batch of ‖y − ŷ‖² (normalised units)."""
    fired: Tensor
    """bool [C]: which latents fired on some row of the batch."""
    l0: float
    """Mean number of firing latents per row."""


class SparseCoder(nn.Module):
    """The dictionary: encoder [C, d_in], decoder [C, d_out] (rows are directions), biases, θ."""

    batch_threshold: Tensor

    def __init__(
        self, d_in: int, d_out: int, n_latents: int, activation: Activation, k: float | None = None,
        sae: bool = True, generator: torch.Generator | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation {activation!r}; allowed: {', '.join(ACTIVATIONS)}")
        if activation == "topk" and (k is None or k != int(k) or not 1 <= k <= n_latents):
            raise ConfigError(f"k={k} must be a whole number between 1 and the dictionary size n_latents={n_latents}")
        if activation == "batchtopk" and (k is None or not 0 < k <= n_latents):
            raise ConfigError(f"k={k} must be above 0 and at most the dictionary size n_latents={n_latents}")
        self.activation: Activation = activation
        self.k = k
        self.sae = sae
        """SAE: input and output are one space, so b_dec is subtracted before encoding."""
        self.d_in, self.d_out, self.n_latents = d_in, d_out, n_latents
        W_dec = torch.randn(n_latents, d_out, generator=generator)
        W_dec = W_dec / W_dec.norm(dim=1, keepdim=True)
        # SAE: encoder starts as the decoder's transpose; a transcoder reads another space.
        W_enc = W_dec.clone() if sae and d_in == d_out else torch.randn(n_latents, d_in, generator=generator)
        W_enc = W_enc / W_enc.norm(dim=1, keepdim=True)
        self.W_enc = nn.Parameter(W_enc)  # (C, d_in)
        self.b_enc = nn.Parameter(torch.zeros(n_latents))  # (C,)
        self.W_dec = nn.Parameter(W_dec)  # (C, d_out)
        self.b_dec = nn.Parameter(torch.zeros(d_out))  # (d_out,)
        self.log_threshold = nn.Parameter(torch.zeros(n_latents), requires_grad=activation == "jumprelu")
        self.register_buffer("batch_threshold", torch.zeros(()))  # batchtopk's inference θ
        self._xw: Tensor | None = None  # training's x W_encᵀ, reused (`_xw_out`)
        self.per_row = False
        """batchtopk training: keep the k largest per row instead of k·B per batch (the warm-up)."""
        self.l1_phase = False
        """jumprelu training: L1 price and free decoder norms instead of the L0 price (the warm-up)."""
        self.l1_scale = 1.0
        """relu training: the share of the L1 price charged this step (`l1_ramp_samples`' ramp)."""
        self.batch_select: dict[str, int] = {"candidates": 2 * math.ceil(k or 1)}
        """batchtopk: the per-row candidates its selection shortcut takes (`batch_topk_select`)."""
        self.trained: dict[str, Any] = {}
        """What the training run resolved (sizes, batch, samples seen; `train_coder` fills it):
        saved with the decomposition, so a run records the blind sizes it actually used."""

    @property
    def threshold(self) -> Tensor:
        """Per-latent inference threshold θ [C] (0 for relu/topk)."""
        if self.activation == "jumprelu":
            return self.log_threshold.exp()
        if self.activation == "batchtopk":
            return self.batch_threshold.expand(self.n_latents)
        return torch.zeros(self.n_latents, device=self.W_enc.device)

    def check_input(self, x: Tensor, what: str = "input") -> None:
        d = self.d_in if what == "input" else self.d_out
        if x.dim() != 2 or x.shape[1] != d:
            raise ValueError(f"{what} activation has shape {tuple(x.shape)}; the dictionary expects [batch, {d}]")

    def pre_acts(self, x: Tensor) -> Tensor:
        """[B, C] encoder pre-activations."""
        return F.linear(x, self.W_enc, self._enc_bias())

    def _enc_bias(self) -> Tensor:
        # W_enc (x − b_dec) + b_enc = W_enc x + (b_enc − W_enc b_dec): x itself needs no gradient.
        return self.b_enc - self.W_enc @ self.b_dec if self.sae else self.b_enc

    def encode(self, x: Tensor) -> Tensor:
        """[B, C] latent activations at inference (batchtopk uses its threshold, not the batch)."""
        self.check_input(x)
        pre = self.pre_acts(x)
        if self.activation == "relu":
            return pre.relu()
        if self.activation == "topk":
            assert self.k is not None
            vals, idx = pre.topk(int(self.k), dim=-1)
            return torch.zeros_like(pre).scatter_(-1, idx, vals.relu())
        return pre * (pre > self.threshold)

    def decode(self, z: Tensor) -> Tensor:
        """[B, d_out] = z W_dec + b_dec."""
        return torch.addmm(self.b_dec, z, self.W_dec)

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

    # --- training ---------------------------------------------------------------------------
    def train_step(self, x: Tensor, y: Tensor, cfg: DictionaryConfig, dead: Tensor) -> TrainStep:
        """Loss on one normalised batch; `dead` bool [C] marks latents AuxK should revive."""
        B = x.shape[0]
        band: ThetaBand | None = None
        kept: Tensor | None = None  # TopK's / BatchTopK's pre-activations, read again by AuxK
        if self.activation == "topk":
            assert self.k is not None
            bias = self._enc_bias()
            kept = self._kept_pre_acts(x, bias)
            vals, idx = _TopKEncode.apply(x, self.W_enc, bias, int(self.k), kept)  # (B, k)
            y_hat = F.embedding_bag(idx, self.W_dec, per_sample_weights=vals, mode="sum") + self.b_dec
            fired = torch.zeros(self.n_latents, dtype=torch.bool, device=x.device)
            fired[idx[vals > 0]] = True
            l0 = float((vals > 0).sum()) / B
        elif self.activation == "batchtopk":
            assert isinstance(cfg, BatchTopKOptions)
            kept = self._kept_pre_acts(x, self._enc_bias())
            vals, rows, cols = self.batchtopk_entries(x, cfg, kept)
            y_hat = sparse_decode(self.b_dec.expand(B, -1), rows, cols, vals, self.W_dec)
            fired = torch.zeros(self.n_latents, dtype=torch.bool, device=x.device)
            fired[cols[vals > 0]] = True
            l0 = float((vals > 0).sum()) / B
        else:
            bias = self._enc_bias()
            with torch.no_grad():  # x W_encᵀ (B, C); its bias is added to every entry only if dense
                pre = torch.mm(x, self.W_enc.t(), out=self._xw_out(x)).detach()  # (an alias: no graph of its own)
            sparse = self._gradient_entries(pre, cfg, bias.detach())
            if sparse is None:
                pre = _Encode.apply(x, self.W_enc, bias, pre)
                z = self._train_latents(pre, cfg)
                y_hat = self.decode(z)
                on = z > 0  # one pass for both (count_nonzero on floats took 26 ms, on bools 5)
                fired, l0 = on.any(0), int(torch.count_nonzero(on)) / B
            else:  # the same latents on the entries that carry value (the rest are 0 with 0 gradient
                code, band = sparse  # but JumpReLU's band-only entries: θ's pseudo-gradient, `band`)
                cols = code.cols
                b_dec = self.b_dec if self.sae else None  # (pre: x W_encᵀ; the bias added at the entries)
                pre = _EncodeAt.apply(x, self.W_enc, self.b_enc, b_dec, bias.detach(), pre, code)
                z = self._train_latents(pre, cfg, cols)
                y_hat = code_decode(self.b_dec.expand(B, -1), z, self.W_dec, code)
                if band is not None:  # θ's pseudo-gradient through the decoder (and the price, below)
                    theta_all = self.log_threshold.exp()
                    y_hat = _BandDecoderTap.apply(y_hat, theta_all, self.W_dec.detach(), band)
                fired = torch.zeros(self.n_latents, dtype=torch.bool, device=x.device).index_fill_(0, cols[z > 0], True)
                l0 = float((z > 0).sum()) / B
        mse = (y_hat - y).pow(2).sum(-1).mean()
        loss = mse
        l1_price = cfg.l1_coef if isinstance(cfg, ReLUOptions) else (
            cfg.warmup_l1_coef if isinstance(cfg, JumpReLUOptions) and self.l1_phase else None
        )
        if l1_price is None and (isinstance(cfg, ReLUOptions) or self.l1_phase):
            raise ConfigError("the L1 price is unresolved (None): train_coder sets it from the data (resolve_l1_price)")
        # dense z [B, C] (Σ_b first: 1 pass, a broadcast gradient) or sparse z [entries] of latents `cols`
        if l1_price is not None:  # relu, and jumprelu's L1 warm-up: L1 weighted by decoder norm
            norms = row_norms(self.W_dec)
            l1 = z.sum(0) * norms if z.dim() == 2 else z * norms.index_select(0, cols)
            loss = loss + l1_price * self.l1_scale * l1.sum() / B
        elif isinstance(cfg, JumpReLUOptions):
            theta = self.log_threshold.exp()
            theta = theta if pre.dim() == 2 else theta[cols]
            l0_soft = _Step.apply(pre, theta, cfg.bandwidth, cfg.l0_grad_to_encoder).sum() / B
            loss = loss + cfg.l0_coef * l0_soft
        elif isinstance(cfg, TopKOptions) and cfg.aux_coef > 0 and bool(dead.any()):
            loss = loss + cfg.aux_coef * self._aux_loss(x, (y - y_hat).detach(), dead, cfg, kept)
        if band is not None and isinstance(cfg, JumpReLUOptions):  # the band's price pseudo-gradients (value 0)
            loss = loss + _BandPrice.apply(theta_all, self.W_enc, bias, x, self.W_dec.detach(), band, l1_price, cfg)
        return TrainStep(loss, mse.detach(), fired, l0)

    def _xw_out(self, x: Tensor) -> Tensor | None:
        """The [B, C] output of x W_encᵀ kept from the last training step (CPU): a fresh 32 MB
        tensor a step (B = 1024, C = 8192) costs ~15 ms of page faults, glibc mapping allocations
        that large anew. None (a new tensor) under autocast or on an accelerator's caching allocator."""
        if x.device.type != "cpu" or torch.is_autocast_enabled("cpu"):
            return None
        shape = (x.shape[0], self.n_latents)
        if self._xw is None or self._xw.shape != shape or self._xw.dtype != torch.result_type(x, self.W_enc):
            self._xw = torch.empty(shape, dtype=torch.result_type(x, self.W_enc))
        return self._xw

    def _kept_pre_acts(self, x: Tensor, bias: Tensor) -> Tensor | None:
        """x W_encᵀ + bias [B, C] without a graph, in the buffer kept between steps (`_xw_out`; None
        where there is none): TopK's selection and then AuxK read the one product."""
        if (out := self._xw_out(x)) is None:
            return None
        return torch.addmm(bias.detach(), x, self.W_enc.detach().t(), out=out)

    def _train_latents(self, pre: Tensor, cfg: DictionaryConfig, cols: Tensor | None = None) -> Tensor:
        """z from pre [B, C], or from pre at sparse entries [entries] whose latents are `cols`."""
        if self.activation == "relu":
            return pre.relu()
        if self.activation == "jumprelu":
            assert isinstance(cfg, JumpReLUOptions)
            theta = self.log_threshold.exp()
            return _JumpReLU.apply(pre, theta if cols is None else theta[cols], cfg.bandwidth)
        raise ValueError(f"no dense training latents for {self.activation!r} (batchtopk: batchtopk_entries)")

    def _gradient_entries(self, pre: Tensor, cfg: DictionaryConfig, bias: Tensor | float = 0.0) -> Entries | None:
        """The entries (a `SparseCode`) of the pre-activations pre + bias [B, C] that carry value
        (ReLU: > 0, JumpReLU: > θ; off them z = 0 with 0 gradient) and JumpReLU's band-only entries
        (`ThetaBand`; None if none, or if they too are few: then listed with the rest, as > θ − ε/2,
        widened by 0.1 % of ε against rounding), or None (train dense) when over `SPARSE_BELOW` of
        the entries carry value."""
        limit = SPARSE_BELOW * pre.numel()
        block = latent_block(self.n_latents, self.d_out, self.W_dec.element_size())
        if self.activation == "relu":
            found = code_entries(pre, -bias, limit, block)
            return None if found is None else (found[0], None)
        assert isinstance(cfg, JumpReLUOptions)  # θ on pre without its bias
        theta = self.log_threshold.detach().exp() - bias
        return jumprelu_entries(pre, theta, cfg.bandwidth, limit, block)

    def batchtopk_entries(self, x: Tensor, cfg: BatchTopKOptions, pre: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """BatchTopK's training code as sparse entries (vals, rows, cols) [k·B]: the k·B largest
        ReLU pre-activations over the whole batch (during the warm-up, `per_row`: the k largest of
        each row); after the warm-up, updates the inference threshold θ. `pre`: the pre-activations
        already computed without a graph (`_kept_pre_acts`), or None."""
        assert self.k is not None
        if self.per_row:  # a fractional k keeps ⌊k⌋ (at least 1) per row here
            k_row = max(1, int(self.k))
            v, idx = _TopKEncode.apply(x, self.W_enc, self._enc_bias(), k_row, pre)  # (B, k_row)
            rows = torch.arange(x.shape[0], device=x.device).repeat_interleave(k_row)
            return v.flatten(), rows, idx.flatten()
        n_kept = max(1, round(self.k * x.shape[0]))
        vals, rows, cols = _BatchTopKEncode.apply(x, self.W_enc, self._enc_bias(), n_kept, self.batch_select, pre)
        with torch.no_grad():  # inference θ: running mean of the smallest kept positive value
            kept = vals[vals > 0]
            if kept.numel():
                m = cfg.threshold_momentum
                first = bool(self.batch_threshold == 0)
                self.batch_threshold.copy_(kept.min() if first else m * self.batch_threshold + (1 - m) * kept.min())
        return vals, rows, cols

    def _aux_loss(self, x: Tensor, residual: Tensor, dead: Tensor, cfg: TopKOptions, pre: Tensor | None = None) -> Tensor:
        """AuxK (auxk.py): the top-k_aux dead latents reconstruct what the live ones missed; `pre`:
        this step's pre-activations [B, C] without a graph, if kept (then, on a wide dictionary, sparse)."""
        n_dead = int(dead.sum())
        k_aux = min(cfg.k_aux or max(1, self.d_out // 2), n_dead)
        if pre is not None and uses_sparse_aux(pre, n_dead, k_aux):
            b_dec = self.b_dec if self.sae else None
            return sparse_aux_loss(x, self.W_enc, self.b_enc, b_dec, self.W_dec, residual, dead, k_aux, pre)
        return dense_aux_loss(x, self.W_enc, self._enc_bias(), self.W_dec, residual, dead, k_aux)

    @torch.no_grad()
    def after_step(self) -> None:
        """Keep decoder rows unit-norm (all but relu and jumprelu's L1 warm-up, whose penalty
        already counts the norm)."""
        if self.activation != "relu" and not self.l1_phase:
            self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8))

    @torch.no_grad()
    def fold_decoder_norms(self) -> None:
        """Unit-norm decoder rows, the same function: row c's norm n_c moves into W_enc[c], b_enc[c]
        and θ_c (pre and θ scale by n_c, so the gate is unchanged and z_c·W_dec[c] too)."""
        n = self.W_dec.norm(dim=1).clamp_min(1e-8)
        self.W_dec.div_(n[:, None])
        self.W_enc.mul_(n[:, None])
        self.b_enc.mul_(n)
        self.log_threshold.add_(n.log())

    @torch.no_grad()
    def fold_scales(self, s_in: float, s_out: float) -> None:
        """Turn a coder trained on x/s_in → y/s_out into one on raw activations (same latents ×s_out)."""
        self.W_enc.mul_(s_out / s_in)
        self.b_enc.mul_(s_out)
        self.b_dec.mul_(s_out)
        self.log_threshold.add_(math.log(s_out))
        self.batch_threshold.mul_(s_out)


# --- training loop -----------------------------------------------------------------------------
def jumprelu_init_threshold(cfg: JumpReLUOptions, pre: Tensor) -> float:
    """θ₀ from the initial pre-activations pre [N, C]: a fixed fraction of their RMS.

    A latent whose pre-activations never reach θ gets neither a reconstruction gradient nor a
    threshold gradient (the kernel sees only pre within ε/2 of θ), so it never fires. A random unit
    encoder row gives pre ~ ‖x‖/√d: RMS 0.32 on a 10-d toy but 0.03 on a 1000-d stream, where a
    fixed θ₀ = 0.3 is ~10 RMS above almost every pre-activation (1 % of latents ever reach it on
    8k inputs; 88 % ended dead). At 0.03 RMS every latent starts as a near-ReLU, firing on about
    half its inputs, and the L0 price raises θ from there. Measured (seed 0, θ₀ as a fraction of
    the RMS): tms-40-10 mmcs / activity_f1 0.93 / 0.73 at 0.95 (the old 0.3), 0.95 / 0.86 at 0.32,
    0.99 / 0.97 at 0.1, 0.998 / 1.000 at 0.03; resid-mlp-1l 0.999 / 0.99 at 0.1, 0.32 and 0.95."""
    if cfg.init_threshold is not None:
        return cfg.init_threshold
    rms = float(pre.pow(2).mean().sqrt())
    return max(cfg.init_threshold_rms * rms, 1e-8)


def resolved_lr(cfg: DictionaryConfig, d_in: int) -> float:
    """The Adam rate for inputs of width d_in: `lr`, or lr · min(1, √(d_ref / d_in)) when
    `lr_reference_dim` is set. Adam moves every coordinate of an encoder row by about lr a step,
    i.e. the row by lr·√d_in: the rate that suits a 10-d toy swings a 1,000-d row ten times as far."""
    if cfg.lr_reference_dim is None:
        return cfg.lr
    return cfg.lr * min(1.0, math.sqrt(cfg.lr_reference_dim / d_in))


def default_batch_size(d_in: int, d_out: int) -> int:
    """About 256k numbers per batch, 128–1024 rows: a step costs about the same on every task."""
    return min(1_024, max(128, 262_144 // max(d_in, d_out)))


def lr_lambda(steps: int, warmup_frac: float, decay_frac: float) -> Callable[[int], float]:
    """Linear warm-up, flat, then linear decay to 0 over the last `decay_frac` of the steps."""
    warm = max(1, int(steps * warmup_frac))
    decay_start = int(steps * (1 - decay_frac))

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if step >= decay_start:
            return max(0.0, (steps - step) / max(1, steps - decay_start))
        return 1.0

    return f


def resolve_l1_price(cfg: DictionaryConfig, y: Tensor) -> DictionaryConfig:
    """`cfg` with an unset L1 price (ReLU's `l1_coef`, JumpReLU's `warmup_l1_coef`) set from the
    target activations y [N, d_out] alone: `l1_price` of their kurtosis L0 estimate, or with
    `l1_rule="interference"` `interference_price` of their width."""
    field = "l1_coef" if isinstance(cfg, ReLUOptions) else "warmup_l1_coef" if isinstance(cfg, JumpReLUOptions) else None
    if field is None or getattr(cfg, field) is not None or (isinstance(cfg, JumpReLUOptions) and cfg.l1_warmup_frac == 0):
        return cfg
    assert isinstance(cfg, L1PriceOptions)
    if cfg.l1_rule == "interference":
        return cfg.model_copy(update={field: interference_price(site_width(y), cfg.l1_noise_frac)})
    l0 = sparsity_estimate(y, torch.Generator().manual_seed(0))  # its own generator: the fit's draws stay put
    return cfg.model_copy(update={field: l1_price(l0, cfg.l1_amplitude_frac)})


def train_coder(
    source: Source, cfg: DictionaryConfig, n_latents: int, k: float | None, sae: bool,
    generator: torch.Generator, progress: Progress = no_progress, device: str | torch.device | None = None,
    placement: Placement = Placement(), mixed_precision: bool = False,
    make_coder: Callable[..., SparseCoder] | None = None,
) -> SparseCoder:  # fmt: skip
    """Train one coder on the activations `source` yields; returns it on the raw scale, on `device`
    (None: where the source's activations are).

    Initialisation and data are drawn on the CPU from `generator`, so a seed gives the same coder
    on every device. Data-parallel (`placement.world` > 1): every rank draws the same buffer and
    trains on its rows of each global batch of `batch_size`; the latents that fired are OR-ed over
    ranks, so AuxK revives the same dead latents everywhere. `make_coder` builds a SparseCoder
    subclass with its own `train_step` (Matryoshka's nested losses)."""
    if isinstance(cfg, TopKOptions) and k is not None and k > n_latents:
        raise ConfigError(f"k={k} is larger than the dictionary (n_latents={n_latents})")
    x0, y0 = source(1)
    batch = cfg.batch_size or default_batch_size(x0.shape[1], y0.shape[1])
    rows = placement.share(batch)
    buffer = ActivationBuffer(source, max(cfg.buffer_size, 2 * batch), batch, generator)
    x0, y0 = buffer.sample(min(cfg.buffer_size, 8_192))
    cfg = resolve_l1_price(cfg, y0)
    s_in = float(x0.pow(2).sum(-1).mean().sqrt().clamp_min(1e-12))
    s_out = s_in if sae else float(y0.pow(2).sum(-1).mean().sqrt().clamp_min(1e-12))
    coder = (make_coder or SparseCoder)(x0.shape[1], y0.shape[1], n_latents, cfg.activation, k, sae, generator)
    with torch.no_grad():
        coder.W_enc.mul_(cfg.init_norm)
        coder.W_dec.mul_(cfg.init_norm)
        y0n = y0 / s_out
        coder.b_dec.copy_(geometric_median(y0n) if cfg.b_dec_init == "geometric_median" else y0n.mean(0))
        if isinstance(cfg, JumpReLUOptions):
            coder.log_threshold.fill_(math.log(jumprelu_init_threshold(cfg, coder.pre_acts(x0 / s_in))))
    dev = torch.device(device) if device is not None else x0.device
    coder.to(dev)
    params = [p for p in coder.parameters() if p.requires_grad]
    # the fused kernel: the same Adam update in one pass, 10 ms a step at 8.4M parameters where the
    # per-tensor loop took 49 ms (CPU, 1 thread) — it was half a sparse ReLU step
    opt = torch.optim.Adam(params, lr=resolved_lr(cfg, x0.shape[1]), fused=dev.type in ("cpu", "cuda"))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg.steps, cfg.warmup_frac, cfg.decay_frac))
    since_fired = torch.zeros(n_latents, dtype=torch.long, device=dev)
    # at least one batch-phase step, so the inference θ is estimated
    warm_steps = min(int(cfg.topk_warmup_frac * cfg.steps), cfg.steps - 1) if isinstance(cfg, BatchTopKOptions) else 0
    l1_steps = int(cfg.l1_warmup_frac * cfg.steps) if isinstance(cfg, JumpReLUOptions) else 0
    ramp_steps = min(math.ceil(cfg.l1_ramp_samples / batch), cfg.steps) if isinstance(cfg, ReLUOptions) else 0
    for step in range(cfg.steps):
        coder.per_row = step < warm_steps
        coder.l1_phase = step < l1_steps
        coder.l1_scale = min(1.0, (step + 1) / ramp_steps) if ramp_steps else 1.0
        if l1_steps and step == l1_steps:
            coder.fold_decoder_norms()  # L1 warm-up over: the same SAE with a unit-norm decoder
        x, y = buffer.next()
        x, y = x[rows].to(dev, non_blocking=True), y[rows].to(dev, non_blocking=True)
        with precision(dev, mixed_precision):
            out = coder.train_step(x / s_in, y / s_out, cfg, since_fired > cfg.dead_after_steps)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        placement.sync(params)
        opt.step()
        sched.step()
        coder.after_step()
        since_fired = torch.where(placement.any_rank(out.fired), 0, since_fired + 1)
        if step % 100 == 0 or step == cfg.steps - 1:
            progress(step + 1, cfg.steps)
    coder.per_row = coder.l1_phase = False
    coder.l1_scale, coder._xw = 1.0, None
    if l1_steps >= cfg.steps:
        coder.fold_decoder_norms()
    coder.fold_scales(s_in, s_out)
    coder.eval()
    coder.trained = trained_record(cfg, n_latents, k, batch)
    return coder


def trained_record(cfg: DictionaryConfig, n_latents: int, k: float | None, batch: int) -> dict[str, Any]:
    """The sizes and budget a fit resolved, and where each size came from (`setting` when the user
    set it, else the config's `sizing`, blind or oracle)."""
    k_set = isinstance(cfg, TopKOptions) and cfg.k is not None
    return {
        "n_latents": n_latents, "n_latents_from": "setting" if cfg.n_latents is not None else cfg.sizing,
        "k": k, "k_from": None if k is None else ("setting" if k_set else cfg.sizing),
        "batch_size": batch, "steps": cfg.steps, "samples_seen": cfg.steps * batch,
        **({"l1_coef": cfg.l1_coef} if isinstance(cfg, ReLUOptions) else {}),
        **({"warmup_l1_coef": cfg.warmup_l1_coef} if isinstance(cfg, JumpReLUOptions) else {}),
    }  # fmt: skip
