"""Constructed recurrent models whose fixed points are known in closed form (float64).

**linear-rnn**: h' = A h + B u with a random stable A that has complex eigenvalues. A = P D P⁻¹
where D is block diagonal — 2×2 rotation-scaling blocks r[[cos θ, −sin θ], [sin θ, cos θ]]
(eigenvalues r e^{±iθ}) and 1×1 real blocks — and P a random well-conditioned basis. For
constant u the one fixed point is h* = (I − A)⁻¹ B u and the Jacobian's eigenvalues are D's.

**selective-ssm**: a small diagonal selective state-space layer (Mamba-style). D channels, each
with N states; for input u ∈ R^m:

    Δ(u) = softplus(W_Δ u + b_Δ)           [D]       input-dependent step
    Ā(u) = exp(Δ(u) a)                      [D, N]    a < 0: input-dependent decay
    B(u) = W_B u                            [N]       input-dependent input matrix
    x(u) = W_x u                            [D]       what each channel integrates
    B̄(u) = (Ā − 1)/a · B(u)   (zero-order hold)   or   Δ(u) B(u)   (Euler)
    h' = Ā(u) ⊙ h + B̄(u) ⊙ x(u)            [D, N], flattened to D·N

For constant u it is linear in h, so h* = B̄ x / (1 − Ā) and the Jacobian is diag(Ā(u)). The trap
METHODS.md warns about: with zero-order hold and an input-*independent* B, h* = −B x / a does not
depend on Δ at all; B(u) depending on u (as in Mamba) keeps the point moving with the input.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from mechscope.bounds import Count, Natural
from mechscope.config import Config
from mechscope.zoo import register_task
from mechscope.zoo.base import GroundTruth, Progress, Task, no_progress
from mechscope.zoo.cache import seeded_generator
from mechscope.zoo.rnn_tasks import ExpectedStructure


def unroll(step: Callable[[Tensor, Tensor], Tensor], u: Tensor, state_size: int, dtype: torch.dtype) -> Tensor:
    """States [B, T, n] of `h ← step(h, u_t)` from h = 0 over inputs u [B, T, m]."""
    h = torch.zeros(u.shape[0], state_size, dtype=dtype)
    out = []
    for t in range(u.shape[1]):
        h = step(h, u[:, t])
        out.append(h)
    return torch.stack(out, dim=1)


class LinearRNNConfig(Config):
    state_size: Count = 16
    input_size: Count = 3
    n_complex_pairs: Natural = 5
    min_radius: Annotated[float, Field(ge=0, lt=1)] = 0.3
    max_radius: Annotated[float, Field(ge=0, lt=1)] = 0.95
    """Eigenvalue moduli lie in [min_radius, max_radius] < 1, so the RNN is stable."""
    seq_len: Count = 50

    @model_validator(mode="after")
    def _consistent(self) -> LinearRNNConfig:
        if self.min_radius > self.max_radius:
            raise ValueError(f"min_radius {self.min_radius} must be ≤ max_radius {self.max_radius}")
        if 2 * self.n_complex_pairs > self.state_size:
            raise ValueError(f"n_complex_pairs {self.n_complex_pairs} needs state_size ≥ {2 * self.n_complex_pairs}, "
                             f"got {self.state_size}")
        return self


class LinearRNN(nn.Module):
    """h' = A h + B u (float64); `step` is the map the fixed-point finder analyses."""

    def __init__(self, A: Tensor, B: Tensor, eigvals: Tensor) -> None:
        super().__init__()
        self.A = nn.Parameter(A, requires_grad=False)  # (n, n)
        self.B = nn.Parameter(B, requires_grad=False)  # (n, m)
        self.register_buffer("true_eigvals", eigvals)  # (n,) complex
        self.state_size = A.shape[0]
        self.input_size = B.shape[1]

    def step(self, h: Tensor, u: Tensor) -> Tensor:
        return h @ self.A.T + u @ self.B.T  # (B, n)

    def forward(self, u: Tensor) -> Tensor:
        """Run from h = 0 over u [B, T, m]; returns states [B, T, n]."""
        return unroll(self.step, u, self.state_size, self.A.dtype)

    def fixed_point(self, u: Tensor) -> Tensor:
        """Closed form h* = (I − A)⁻¹ B u for one input u [m]."""
        eye = torch.eye(self.state_size, dtype=self.A.dtype)
        return torch.linalg.solve(eye - self.A, self.B @ u.to(self.A.dtype))


def make_linear_rnn(cfg: LinearRNNConfig, seed: int) -> LinearRNN:
    """A random stable A with `n_complex_pairs` complex pairs, built from its eigenvalues."""
    n, k = cfg.state_size, cfg.n_complex_pairs
    if 2 * k > n:
        raise ValueError(f"n_complex_pairs={k} needs state_size ≥ {2 * k}, got {n}")
    g = seeded_generator(seed)
    f64 = torch.float64
    radius = cfg.min_radius + (cfg.max_radius - cfg.min_radius) * torch.rand(n - k, generator=g, dtype=f64)
    D = torch.zeros(n, n, dtype=f64)
    eig: list[complex] = []
    for i in range(k):
        r, th = float(radius[i]), float(0.2 + (math.pi - 0.4) * torch.rand((), generator=g, dtype=f64))
        c, s = r * math.cos(th), r * math.sin(th)
        D[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] = torch.tensor([[c, -s], [s, c]], dtype=f64)
        eig += [complex(c, s), complex(c, -s)]
    for j in range(2 * k, n):
        lam = float(radius[k + j - 2 * k]) * (1 if j % 2 else -1)
        D[j, j] = lam
        eig.append(complex(lam, 0.0))
    # a well-conditioned, non-orthogonal basis: P = I + 0.3 · (random / √n)
    P = torch.eye(n, dtype=f64) + 0.3 * torch.randn(n, n, generator=g, dtype=f64) / math.sqrt(n)
    A = P @ D @ torch.linalg.inv(P)
    B = torch.randn(n, cfg.input_size, generator=g, dtype=f64) / math.sqrt(cfg.input_size)
    return LinearRNN(A, B, torch.tensor(eig, dtype=torch.complex128))


class SelectiveSSMConfig(Config):
    n_channels: Count = 4
    n_state: Count = 8
    input_size: Count = 3
    discretization: Literal["zoh", "euler"] = "zoh"
    seq_len: Count = 50


class SelectiveSSM(nn.Module):
    """One diagonal selective SSM layer (float64); state is h [D, N] flattened to D·N."""

    def __init__(self, cfg: SelectiveSSMConfig, g: torch.Generator) -> None:
        super().__init__()
        d, n, m, f64 = cfg.n_channels, cfg.n_state, cfg.input_size, torch.float64
        self.discretization = cfg.discretization
        # S4D-real style decay rates a = −(1 … N) per channel, jittered
        a = -(torch.arange(1, n + 1, dtype=f64)[None, :] * (0.5 + torch.rand(d, n, generator=g, dtype=f64)))
        self.a = nn.Parameter(a, requires_grad=False)  # (D, N)
        self.W_dt = nn.Parameter(torch.randn(d, m, generator=g, dtype=f64) / math.sqrt(m), requires_grad=False)
        self.b_dt = nn.Parameter(torch.full((d,), -1.0, dtype=f64), requires_grad=False)
        self.W_B = nn.Parameter(torch.randn(n, m, generator=g, dtype=f64) / math.sqrt(m), requires_grad=False)
        self.W_x = nn.Parameter(torch.randn(d, m, generator=g, dtype=f64) / math.sqrt(m), requires_grad=False)
        self.n_channels, self.n_state = d, n
        self.state_size = d * n
        self.input_size = m

    def discretize(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """(Ā, B̄ ⊙ x) for inputs u [B, m]: each [B, D, N]."""
        dt = F.softplus(u @ self.W_dt.T + self.b_dt)  # (B, D)
        A_bar = torch.exp(dt[:, :, None] * self.a)  # (B, D, N)
        B_u = u @ self.W_B.T  # (B, N)
        x = u @ self.W_x.T  # (B, D)
        if self.discretization == "zoh":
            B_bar = (A_bar - 1) / self.a * B_u[:, None, :]
        else:
            B_bar = dt[:, :, None] * B_u[:, None, :]
        return A_bar, B_bar * x[:, :, None]

    def step(self, h: Tensor, u: Tensor) -> Tensor:
        A_bar, drive = self.discretize(u)
        out = A_bar * h.reshape(-1, self.n_channels, self.n_state) + drive
        return out.reshape(h.shape[0], self.state_size)

    def forward(self, u: Tensor) -> Tensor:
        """Run from h = 0 over u [B, T, m]; returns states [B, T, D·N]."""
        return unroll(self.step, u, self.state_size, self.a.dtype)

    def fixed_point(self, u: Tensor) -> Tensor:
        """Closed form h* = B̄ x / (1 − Ā) for one input u [m], flattened."""
        A_bar, drive = self.discretize(u.to(self.a.dtype)[None])
        return (drive / (1 - A_bar)).reshape(-1)

    def eigvals(self, u: Tensor) -> Tensor:
        """The Jacobian diag(Ā(u)) as complex eigenvalues [D·N]."""
        A_bar, _ = self.discretize(u.to(self.a.dtype)[None])
        return A_bar.reshape(-1).to(torch.complex128)


class _ConstructedTask(Task):
    """Shared parts: sequences of random constant-ish inputs, no training, empty GroundTruth."""

    kind: ClassVar[Literal["decomposition", "dynamics"]] = "dynamics"
    family = "linear-dynamics"

    @property
    def n_features(self) -> int:
        return int(self.config.input_size)  # type: ignore[attr-defined]

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """Input sequences [n, T, m]: a random level per sequence, switched once halfway."""
        m, T = self.n_features, int(self.config.seq_len)  # type: ignore[attr-defined]
        u = torch.randn(n, 2, m, generator=generator, dtype=torch.float64)
        return u.repeat_interleave(math.ceil(T / 2), dim=1)[:, :T]

    def ground_truth(self, target: nn.Module) -> GroundTruth:
        return GroundTruth([], n_features=self.n_features, represented=[], notes=["dynamics task: see expected()"])

    def analysis_inputs(self) -> list[Tensor]:
        """Inputs at which the fixed points are found and scored: 0 and three random ones."""
        g = seeded_generator(1234)
        rand = [torch.randn(self.n_features, generator=g, dtype=torch.float64) for _ in range(3)]
        return [torch.zeros(self.n_features, dtype=torch.float64), *rand]

    def expected(self, target: nn.Module, u: Tensor) -> ExpectedStructure:
        """One stable point at the closed form, with the closed-form eigenvalues."""
        assert isinstance(target, (LinearRNN, SelectiveSSM))
        eig = target.true_eigvals if isinstance(target, LinearRNN) else target.eigvals(u)
        return ExpectedStructure(kind="closed-form", point=target.fixed_point(u), eigvals=eig)  # type: ignore[arg-type]


class LinearRNNTask(_ConstructedTask):
    name = "linear-rnn"
    summary = "linear RNN h' = Ah + Bu, random stable A with complex eigenvalues (exact fixed point)"
    Cfg = LinearRNNConfig
    config: LinearRNNConfig

    def make_target(self, target_seed: int, progress: Progress = no_progress) -> nn.Module:
        return make_linear_rnn(self.config, target_seed).eval()


class SelectiveSSMTask(_ConstructedTask):
    name = "selective-ssm"
    summary = "diagonal selective state-space layer, input-dependent decay and B (exact fixed point)"
    Cfg = SelectiveSSMConfig
    config: SelectiveSSMConfig

    def make_target(self, target_seed: int, progress: Progress = no_progress) -> nn.Module:
        return SelectiveSSM(self.config, seeded_generator(target_seed)).eval()


register_task("linear-rnn", LinearRNNTask)
register_task("selective-ssm", SelectiveSSMTask)
