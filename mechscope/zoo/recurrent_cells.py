"""Modern recurrent cells as trainable zoo targets: a selective state-space (Mamba-style) stack and
a DeltaNet-style linear-attention stack, each run closed-loop, as one map on a joint state.

**Why closed-loop.** Both families update their state *linearly* in the state, with parameters
chosen by the layer's input: a selective SSM h' = Ā(x) ⊙ h + B̄(x) x, a delta rule
S' = S(I − β(x) k(x)k(x)ᵀ) + β(x) v(x)k(x)ᵀ. In a plain feed-forward stack layer l's input is
layer l−1's output, so at a constant model input u layer 1 is an affine map of its own state
(one fixed point, or an affine subspace of them), hence layer 2 sees a constant input, and so on:
the joint Jacobian is block lower-triangular with blocks Ā_l (or I − β kkᵀ), and the stack has
**exactly one** fixed point (SSM: |Ā| < 1), or a flat continuum of marginal ones (delta rule:
eigenvalue 1 orthogonal to k) — never 2ⁿ isolated attractors, whatever the nonlinearities between
layers (`tests/zoo/test_recurrent_cells.py` checks this). Deployed models become nonlinear
dynamical systems through their output loop (autoregressive generation). So the targets here
feed their last output o_{t−1} back into layer 1's input, as a language model feeds back its
token: x₁ = [u_t, o_{t−1}]. The joint state is every layer's state, flattened, then o:

    state = [h_1 (D·N) | … | h_L (D·N) | o (D)]        (deltanet: S_l is D×D, flattened)

and `readout` (a Linear on o, `readout_slice`) gives the outputs. `feedback=False` builds the
open-loop stack (o is still carried in the state, for the readout).

Selective SSM layer (Mamba's S6 block without the short causal convolution), width D, N states:

    x̂ = rmsnorm(x_in); x = silu(W_x x̂), z = W_z x̂       input branch, gate branch   [D]
    Δ = softplus(W_Δ x + b_Δ), B = W_B x, C = W_C x      input-dependent step, B, C  [D], [N], [N]
    h' = exp(Δ a) ⊙ h + (Δ B) ⊙ x                        a = −exp(a_log) < 0        [D, N]
    y = (h' C) + d ⊙ x;  out = W_o (y ⊙ silu(z)) (+ x_in)  gating between layers; a residual
                                                          from layer 2 on (layer 1's input holds
                                                          the fed-back o: a residual there would
                                                          be an unbounded linear loop)

DeltaNet layer (one head, width D): x = silu(W_x rmsnorm(x_in)), k = W_k x/‖·‖, q likewise,
v = W_v x, β = sigmoid(w_β·x); S' = S − β (S k − v) kᵀ; out = W_o (S' q) (+ x_in from layer 2 on).
Gated (the default; Gated DeltaNet): α = sigmoid(w_α·x) decays the state first,
S' = α S (I − β k kᵀ) + β v kᵀ; out = W_o((S' q + d ⊙ x) ⊙ silu(W_g x̂)) (+ x_in), then a
channel MLP out + W₂ silu(W₁ rmsnorm(out)).

`LinearGRU` is torch's GRU step with its weights as `nn.Linear` modules, for SPD.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ModernCell = Literal["ssm", "deltanet"]
MODERN_CELLS: tuple[str, ...] = ("ssm", "deltanet")


class SelectiveSSMLayer(nn.Module):
    """One Mamba-style selective SSM layer: (state [B, D·N], x_in [B, d_in]) → (state', out [B, D])."""

    def __init__(self, d_in: int, width: int, n_state: int) -> None:
        super().__init__()
        self.width, self.n_state = width, n_state
        self.state_size = width * n_state
        self.w_x = nn.Linear(d_in, width)
        self.w_z = nn.Linear(d_in, width)
        self.w_dt = nn.Linear(width, width)
        self.w_b = nn.Linear(width, n_state, bias=False)
        self.w_c = nn.Linear(width, n_state, bias=False)
        # S4D-real init a = −(1 … N); Δ starts small (softplus(−3) ≈ 0.05), as Mamba's dt init
        self.a_log = nn.Parameter(torch.log(torch.arange(1, n_state + 1, dtype=torch.float32)).repeat(width, 1))
        nn.init.constant_(self.w_dt.bias, -3.0)
        self.d = nn.Parameter(torch.ones(width))
        self.w_o = nn.Linear(width, width)
        self.norm = nn.RMSNorm(d_in, eps=1e-5)
        self.residual = d_in == width

    def forward(self, h: Tensor, x_in: Tensor) -> tuple[Tensor, Tensor]:
        xn = self.norm(x_in)  # pre-norm, as in Mamba blocks
        x = F.silu(self.w_x(xn))  # (B, D)
        z = self.w_z(xn)
        dt = F.softplus(self.w_dt(x))  # (B, D)
        b, c = self.w_b(x), self.w_c(x)  # (B, N)
        a = -torch.exp(self.a_log)  # (D, N)
        s = h.reshape(-1, self.width, self.n_state)
        s = torch.exp(dt[:, :, None] * a) * s + (dt[:, :, None] * b[:, None, :]) * x[:, :, None]
        y = (s * c[:, None, :]).sum(-1) + self.d * x  # (B, D)
        out = self.w_o(y * F.silu(z))
        return s.reshape(h.shape[0], self.state_size), out + x_in if self.residual else out


class DeltaNetLayer(nn.Module):
    """One DeltaNet (delta-rule linear attention) layer: matrix state S [D, D] flattened to D².

    `gated` (the default, Gated DeltaNet, Yang et al. 2025) multiplies the state by a decay
    α(x) ∈ (0, 1) before the delta update, gates the read-out (with a D skip), then adds a
    channel MLP (x + W₂ silu(W₁ rmsnorm(x))), as a transformer block does. Without α
    the delta rule keeps every direction of S orthogonal to k (eigenvalue exactly 1): a trained
    memory can then never be an attractor, only one point of a marginal continuum. `gated=False`
    is the plain layer (which did not learn the flip-flop: RESULTS.md)."""

    def __init__(self, d_in: int, width: int, gated: bool = True) -> None:
        super().__init__()
        self.width, self.gated = width, gated
        self.state_size = width * width
        self.w_x = nn.Linear(d_in, width)
        self.w_q = nn.Linear(width, width, bias=False)
        self.w_k = nn.Linear(width, width, bias=False)
        self.w_v = nn.Linear(width, width, bias=False)
        self.w_beta = nn.Linear(width, 1)
        self.w_o = nn.Linear(width, width)
        self.norm = nn.RMSNorm(d_in, eps=1e-5)
        self.residual = d_in == width
        if gated:
            self.w_alpha = nn.Linear(width, 1)
            nn.init.constant_(self.w_alpha.bias, 2.0)  # α starts near sigmoid(2) ≈ 0.88: a slow decay
            self.w_g = nn.Linear(d_in, width)
            self.d = nn.Parameter(torch.ones(width))  # the skip Mamba's y = Ch + D x has
            self.mlp_norm = nn.RMSNorm(width, eps=1e-5)
            self.mlp_in = nn.Linear(width, 2 * width)
            self.mlp_out = nn.Linear(2 * width, width)

    def forward(self, h: Tensor, x_in: Tensor) -> tuple[Tensor, Tensor]:
        xn = self.norm(x_in)
        x = F.silu(self.w_x(xn))  # (B, D)
        q = F.normalize(self.w_q(x), dim=-1, eps=1e-6)
        k = F.normalize(self.w_k(x), dim=-1, eps=1e-6)
        v = self.w_v(x)
        beta = torch.sigmoid(self.w_beta(x))  # (B, 1)
        s = h.reshape(-1, self.width, self.width)  # S: (B, d_v, d_k)
        if self.gated:
            s = torch.sigmoid(self.w_alpha(x))[:, :, None] * s  # α S
        err = (s @ k[:, :, None]).squeeze(-1) - v  # S k − v: (B, d_v)
        s = s - beta[:, :, None] * err[:, :, None] * k[:, None, :]  # S(I − β kkᵀ) + β v kᵀ
        read = (s @ q[:, :, None]).squeeze(-1)  # S' q: (B, d_v)
        if not self.gated:
            o = self.w_o(read)
            return s.reshape(h.shape[0], self.state_size), o + x_in if self.residual else o
        # no norm on S'q: with S ≈ noise early on it scales the noise up to unit size (RESULTS.md)
        o = self.w_o((read + self.d * x) * F.silu(self.w_g(xn)))
        o = o + x_in if self.residual else o
        o = o + self.mlp_out(F.silu(self.mlp_in(self.mlp_norm(o))))
        return s.reshape(h.shape[0], self.state_size), o


class CellStack(nn.Module):
    """L layers of one modern cell, closed-loop through o, read out linearly from o.

    `step(state, u)` is the whole map the fixed-point finder analyses (`as_step` uses it, with
    `state_size`, `input_size` and `readout_slice`); `rollout` trains it."""

    def __init__(
        self,
        cell: ModernCell,
        input_size: int,
        width: int,
        output_size: int,
        n_layers: int = 2,
        n_state: int = 8,
        feedback: bool = True,
        gated: bool = True,
    ) -> None:
        super().__init__()
        self.cell, self.feedback = cell, feedback
        self.input_size, self.width = input_size, width
        d0 = input_size + (width if feedback else 0)
        layers: list[nn.Module] = []
        for i in range(n_layers):
            d_in = d0 if i == 0 else width
            layers.append(SelectiveSSMLayer(d_in, width, n_state) if cell == "ssm" else DeltaNetLayer(d_in, width, gated))
        self.layers = nn.ModuleList(layers)
        self.layer_sizes = [int(layer.state_size) for layer in layers]  # type: ignore[arg-type]
        self.state_size = sum(self.layer_sizes) + width
        self.readout_slice = (self.state_size - width, self.state_size)
        self.readout = nn.Linear(width, output_size)

    def step(self, h: Tensor, u: Tensor) -> Tensor:
        """h' = F(h, u) on joint states h [B, state_size] and inputs u [B, m]."""
        a, b = self.readout_slice
        x = torch.cat([u, h[:, a:b]], dim=-1) if self.feedback else u
        new = []
        i = 0
        for layer, size in zip(self.layers, self.layer_sizes, strict=True):
            s, x = layer(h[:, i : i + size], x)
            new.append(s)
            i += size
        new.append(x)
        return torch.cat(new, dim=-1)

    def rollout(
        self, u: Tensor, state_noise: float = 0.0, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """(outputs [B, T, out], joint states [B, T, state_size]) from the zero state; with
        `state_noise`, Gaussian noise on the whole joint state after every step."""
        h = torch.zeros(u.shape[0], self.state_size, dtype=u.dtype)
        hs = []
        a, b = self.readout_slice
        for t in range(u.shape[1]):
            h = self.step(h, u[:, t])
            if state_noise:
                h = h + state_noise * torch.randn(h.shape, generator=generator, dtype=h.dtype)
            hs.append(h)
        states = torch.stack(hs, dim=1)
        return self.readout(states[..., a:b]), states

    def forward(self, u: Tensor, state_noise: float = 0.0, generator: torch.Generator | None = None) -> Tensor:
        return self.rollout(u, state_noise, generator)[0]


class LinearGRU(nn.Module):
    """One step of torch's GRU with its two weight matrices as `nn.Linear` modules, on x = [h, u]:

        [r̃ z̃ ñ]ᵢ = ih(u) = W_ih u + b_ih,   [r̃ z̃ ñ]ₕ = hh(h) = W_hh h + b_hh         [3H] each
        r = σ(r̃ᵢ + r̃ₕ), z = σ(z̃ᵢ + z̃ₕ), n = tanh(ñᵢ + r ⊙ ñₕ),   h' = (1 − z) ⊙ n + z ⊙ h

    exactly `nn.GRU`'s equations (`from_gru` copies a trained layer's weights). SPD decomposes
    `nn.Linear` modules and reads each one's input once per forward, so the step map — one call
    of each Linear — is what it decomposes: its subcomponents' causal importance is then defined
    per state, hence per fixed point (`mechscope.dynamics.spd_memories`)."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.state_size = hidden_size
        self.ih = nn.Linear(input_size, 3 * hidden_size)
        self.hh = nn.Linear(hidden_size, 3 * hidden_size)

    @classmethod
    def from_gru(cls, gru: nn.GRU) -> LinearGRU:
        """The same map as a one-layer, unidirectional `nn.GRU` (weights copied)."""
        if gru.num_layers != 1 or gru.bidirectional or not gru.bias:
            raise ValueError("LinearGRU copies a one-layer, unidirectional nn.GRU with biases")
        out = cls(gru.input_size, gru.hidden_size)
        w = {k: v.detach() for k, v in gru.named_parameters()}
        with torch.no_grad():
            out.ih.weight.copy_(w["weight_ih_l0"])
            out.ih.bias.copy_(w["bias_ih_l0"])
            out.hh.weight.copy_(w["weight_hh_l0"])
            out.hh.bias.copy_(w["bias_hh_l0"])
        return out

    def step(self, h: Tensor, u: Tensor) -> Tensor:
        """h' = F(h, u) on batches h [B, H], u [B, m]."""
        i_r, i_z, i_n = self.ih(u).chunk(3, dim=-1)
        h_r, h_z, h_n = self.hh(h).chunk(3, dim=-1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        return (1 - z) * n + z * h

    def forward(self, x: Tensor) -> Tensor:
        """x = [h, u] [B, H + m] → h' [B, H]."""
        return self.step(x[..., : self.hidden_size], x[..., self.hidden_size :])
