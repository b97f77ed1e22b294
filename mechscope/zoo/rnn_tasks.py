"""Trained recurrent networks with known fixed-point structure (Sussillo & Barak 2013).

    u[B, T, m] ──nn.RNN / nn.GRU / nn.LSTM (site "rnn")──► h[B, T, H] ──Linear ("readout")──► y

`cell=ssm|deltanet` builds a closed-loop selective-SSM (Mamba-style) or DeltaNet stack instead
(`zoo.recurrent_cells`, `n_layers`, `n_state`, `feedback`), trained by the same loop; the finder
then works on the stack's joint state.

- **flipflop** (`--set n_bits=1…6 cell=rnn|gru|lstm`; presets flipflop-2bit … flipflop-5bit):
  n channels of sparse ±1 pulses (every channel pulses at t = 0, so every memory is defined);
  each output holds the sign of its channel's last pulse. Truth: 2ⁿ stable fixed points at u = 0,
  one per memory, plus saddles between them. The hidden size and training steps scale with n
  (`FlipFlopConfig.width` / `n_steps`). A target is accepted only at ≥ 99 % bit accuracy with
  every memory held for `hold_steps` zero-input steps *and* an attractor at the finder's stable
  band (|λ|max < 1 − `attractor_tol`, `dynamics.attractors`); a failing seed is retrained from
  derived seeds (recorded in its info).
- **sine-generator**: a constant input level u_j sets the frequency ω_j; the output is sin(ω_j t).
  Truth: per input, a fixed point whose unstable directions are a complex pair of angle ≈ ω_j
  (the centre of the limit cycle).
- **integrator**: one channel of small noisy pulses; the output is their running sum. Truth: a
  line of slow points with one eigenvalue ≈ 1 along the line (an approximate line attractor).
"""

from __future__ import annotations

import functools
import re
import time
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from mechscope.bounds import Count, LearningRate, NonNegative, Positive, Steps
from mechscope.config import Config, ConfigError
from mechscope.dynamics.attractors import memory_attractors
from mechscope.dynamics.linearize import STABLE_TOL
from mechscope.dynamics.wrappers import as_step, readout_fn
from mechscope.zoo import register_task
from mechscope.zoo.base import GroundTruth, Progress, Task, no_progress
from mechscope.zoo.cache import load_target, save_target, seeded_generator, target_path
from mechscope.zoo.recurrent_cells import MODERN_CELLS, CellStack

Cell = Literal["rnn", "gru", "lstm", "ssm", "deltanet"]
"""rnn / gru / lstm: one torch layer; ssm / deltanet: a closed-loop stack (`zoo.recurrent_cells`)."""


@dataclass(frozen=True)
class ExpectedStructure:
    """The fixed-point structure a dynamics target should have at one input (for scoring)."""

    kind: Literal["closed-form", "flipflop", "oscillator", "line-attractor"]
    point: Tensor | None = None
    """closed-form: the one fixed point [n]."""
    eigvals: Tensor | None = None
    """closed-form: its Jacobian's eigenvalues [n] (complex)."""
    memories: Tensor | None = None
    """flipflop: the 2^bits memory states [2^bits, bits] in {−1, +1}: one stable point each."""
    omega: float | None = None
    """oscillator: the output frequency (radians per step)."""


class RecurrentConfig(Config):
    cell: Cell = "gru"
    hidden_size: Annotated[int | None, Field(ge=1)] = 32
    """None: the task's choice (`width`)."""
    steps: Annotated[int | None, Field(ge=1)] = 1500
    """None: the task's choice (`n_steps`)."""
    batch_size: Annotated[int, Field(ge=1)] = 64
    seq_len: Annotated[int, Field(ge=2)] = 50
    lr: Annotated[float, Field(gt=0)] = 1e-2
    input_noise: NonNegative = 0.02
    state_noise: NonNegative = 0.0
    activity_l2: NonNegative = 0.0
    """Penalty on mean h²: the sine generator's limit cycle stays small, so its dynamics near the
    fixed point stay close to their linearisation (whose angle then gives the frequency)."""
    max_attempts: Annotated[int, Field(ge=1)] = 3
    n_layers: Annotated[int, Field(ge=1, le=4)] = 2
    """ssm / deltanet: layers in the stack (rnn / gru / lstm: always one layer)."""
    n_state: Annotated[int, Field(ge=1, le=64)] = 4
    """ssm: states per channel (N)."""
    feedback: bool = True
    """ssm / deltanet: feed the last output back into layer 1 (see `zoo.recurrent_cells`: without
    it the stack has one fixed point per input, whatever it learned)."""

    def width(self) -> int:
        """The hidden size actually built (ssm / deltanet: the stack's width D, kept small because
        the finder forms full Jacobians of the joint state)."""
        if self.hidden_size is not None:
            return self.hidden_size
        return {"ssm": 16, "deltanet": 8}.get(self.cell, 32)

    def n_steps(self) -> int:
        """The training steps actually run."""
        return 1500 if self.steps is None else self.steps


class FlipFlopConfig(RecurrentConfig):
    state_noise: NonNegative = 0.05
    n_bits: Annotated[int, Field(ge=1, le=6)] = 3
    """Memory bits: 2^n_bits stable points. 1–6 (64 memories is the most the default finder's
    1024 starts cover reliably)."""
    hidden_size: Annotated[int | None, Field(ge=1)] = None
    steps: Annotated[int | None, Field(ge=1)] = None
    pulse_prob: Annotated[float, Field(gt=0, le=1)] = 0.05
    hold_steps: Annotated[int, Field(ge=1)] = 500
    attractor_tol: Annotated[float, Field(ge=0, lt=1)] = STABLE_TOL
    """Acceptance: every memory must be a fixed point with |λ|max < 1 − attractor_tol (the finder's
    stable band, METHODS.md), else the seed retrains. A field so that the cache key says which bar
    a cached target passed (adding it retrained every flip-flop target once)."""

    def width(self) -> int:
        """32 units up to 3 bits, 64 for 4–5, 96 for 6: 2^n memories need room to sit apart."""
        if self.hidden_size is not None or self.cell in MODERN_CELLS:
            return super().width()
        return 32 if self.n_bits <= 3 else 64 if self.n_bits <= 5 else 96

    def n_steps(self) -> int:
        """1500 steps up to 3 bits, 3000 for 4–5, 4000 for 6 (more memories, more to learn)."""
        if self.steps is not None:
            return self.steps
        return 1500 if self.n_bits <= 3 else 3000 if self.n_bits <= 5 else 4000


class SineConfig(RecurrentConfig):
    cell: Cell = "rnn"
    hidden_size: Count = 48
    n_freqs: Count = 4
    min_omega: Positive = 0.15
    max_omega: Positive = 0.45
    steps: Steps = 2000
    lr: LearningRate = 5e-3
    seq_len: Count = 80
    input_noise: NonNegative = 0.0
    activity_l2: NonNegative = 1.0


class IntegratorConfig(RecurrentConfig):
    cell: Cell = "rnn"
    pulse_std: NonNegative = 0.1
    steps: Steps = 1200
    input_noise: NonNegative = 0.0


class RecurrentModel(nn.Module):
    """One recurrent layer and a linear readout; the state is what the finder analyses."""

    def __init__(self, cell: Literal["rnn", "gru", "lstm"], input_size: int, hidden_size: int, output_size: int) -> None:
        super().__init__()
        layer = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[cell]
        self.rnn = layer(input_size, hidden_size, batch_first=True)
        self.readout = nn.Linear(hidden_size, output_size)

    def forward(self, u: Tensor, state_noise: float = 0.0, generator: torch.Generator | None = None) -> Tensor:
        """Outputs [B, T, out] for inputs u [B, T, m]."""
        return self.rollout(u, state_noise, generator)[0]

    def rollout(
        self, u: Tensor, state_noise: float = 0.0, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """(outputs [B, T, out], hidden states [B, T, H]). With `state_noise`, Gaussian noise is
        added to the whole state (LSTM: h and c) after every step, which trains memories that
        *attract* (|λ| clearly below 1) instead of ones held by a closed gate (|λ| ≈ 1)."""
        if not state_noise:
            h, _ = self.rnn(u)  # (B, T, H)
            return self.readout(h), h
        state: Any = None
        hs = []
        for t in range(u.shape[1]):
            _, state = self.rnn(u[:, t : t + 1], state)  # state: (1, B, H) or a pair
            parts = state if isinstance(state, tuple) else (state,)
            parts = tuple(p + state_noise * torch.randn(p.shape, generator=generator) for p in parts)
            state = parts if isinstance(state, tuple) else parts[0]
            hs.append(parts[0][0])  # the noisy h, as the next step sees it
        h = torch.stack(hs, dim=1)  # (B, T, H)
        return self.readout(h), h


class RecurrentTask(Task):
    """Shared training, caching and sampling; subclasses give inputs, targets and structure."""

    kind: ClassVar[Literal["decomposition", "dynamics"]] = "dynamics"
    family = "rnn"
    config: RecurrentConfig
    n_inputs: ClassVar[int] = 1
    n_outputs: ClassVar[int] = 1

    @property
    def input_size(self) -> int:
        return self.n_inputs

    @property
    def output_size(self) -> int:
        return self.n_outputs

    @property
    def n_features(self) -> int:
        return self.input_size

    def ground_truth(self, target: nn.Module) -> GroundTruth:
        return GroundTruth([], n_features=self.n_features, represented=[], notes=["dynamics task: see expected()"])

    def targets(self, u: Tensor) -> Tensor:
        """The desired outputs [B, T, out] for inputs u [B, T, m]."""
        raise NotImplementedError

    def analysis_inputs(self) -> list[Tensor]:
        """The constant inputs at which fixed points are found: u = 0 by default."""
        return [torch.zeros(self.input_size, dtype=torch.float64)]

    def expected(self, target: nn.Module, u: Tensor) -> ExpectedStructure:
        raise NotImplementedError

    def finder_defaults(self) -> dict[str, Any]:
        """Finder settings this task needs (FinderConfig keys); `--set` overrides them."""
        return {}

    def accept(self, model: RecurrentModel | CellStack, gen: torch.Generator) -> dict[str, Any]:
        """Quality checks of a trained target; must hold "ok": bool."""
        return {"ok": True}

    def build(self) -> RecurrentModel | CellStack:
        c = self.config
        if c.cell in MODERN_CELLS:
            return CellStack(
                c.cell, self.input_size, c.width(), self.output_size, c.n_layers, c.n_state, c.feedback  # type: ignore[arg-type]
            )
        return RecurrentModel(c.cell, self.input_size, c.width(), self.output_size)  # type: ignore[arg-type]

    def make_target(self, target_seed: int, progress: Progress = no_progress) -> nn.Module:
        path = target_path(self.name, self.config, target_seed)
        model = self.build()
        if load_target(path, model) is None:
            info: dict[str, Any] = {"task": self.name, "config": self.config.model_dump(mode="json")}
            rejected: list[dict[str, Any]] = []  # why each earlier attempt failed (scalars only)
            for attempt in range(self.config.max_attempts):
                # derived seeds are deterministic, so a retried target is reproducible
                train_seed = target_seed + 7919 * attempt
                torch.manual_seed(train_seed)  # the initial weights too: not whatever the global RNG holds
                model = self.build()
                info |= train_recurrent(model, self, train_seed, progress)
                info |= self.accept(model, seeded_generator(train_seed + 99_991))
                info |= {"attempt": attempt, "train_seed": train_seed}
                if info["ok"]:
                    break
                rejected.append({k: v for k, v in info.items() if isinstance(v, bool | int | float)})
            save_target(path, model, info | {"rejected": rejected})
        model.eval()
        return model


def train_recurrent(model: RecurrentModel | CellStack, task: RecurrentTask, seed: int, progress: Progress) -> dict[str, Any]:
    """Adam on MSE between outputs and targets, with gradient clipping; returns the final loss.

    Trains on one torch thread whatever the caller's setting, so a target is the same bit for bit
    from a test (2 threads), the CLI or a bench worker — the cache key cannot see thread counts."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(model, task, seed, progress)
    finally:
        torch.set_num_threads(threads)


def _train(model: RecurrentModel | CellStack, task: RecurrentTask, seed: int, progress: Progress) -> dict[str, Any]:
    c = task.config
    torch.manual_seed(seed)
    gen = seeded_generator(seed + 10_000)
    opt = torch.optim.Adam(model.parameters(), lr=c.lr)
    n_steps = c.n_steps()
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, n_steps, eta_min=c.lr * 0.05)
    loss = torch.tensor(0.0)
    curve: list[float] = []
    t0 = time.perf_counter()
    for step in range(n_steps):
        u = task.sample(c.batch_size, gen)  # (B, T, m)
        y = task.targets(u)
        noisy = u + c.input_noise * torch.randn(u.shape, generator=gen) if c.input_noise else u
        y_hat, h = model.rollout(noisy, c.state_noise, gen)
        loss = F.mse_loss(y_hat, y)
        if c.activity_l2:
            loss = loss + c.activity_l2 * h.pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if (step + 1) % 100 == 0:
            curve.append(round(float(loss.detach()), 5))
        if step % 50 == 0 or step == n_steps - 1:
            progress(step + 1, n_steps)
    return {"final_loss": float(loss.detach()), "loss_every_100": curve, "train_s": round(time.perf_counter() - t0, 1)}


class FlipFlopTask(RecurrentTask):
    """Registered as `flipflop` (any n_bits) and as the presets `flipflop-2bit` … `flipflop-5bit`,
    whose name fixes n_bits. Built directly, it takes the preset name of its config's n_bits."""

    name = "flipflop-3bit"
    summary = "3-bit flip-flop RNN (--set cell=rnn|gru|lstm|ssm|deltanet): 8 stable fixed points, one per memory"
    Cfg = FlipFlopConfig
    config: FlipFlopConfig

    def __init__(self, config: FlipFlopConfig | None = None, name: str | None = None, summary: str | None = None) -> None:
        super().__init__(config, name, summary)
        n = self.config.n_bits
        if name is None:
            self.name = f"flipflop-{n}bit" if 2 <= n <= 5 else "flipflop"  # type: ignore[misc]
        if summary is None:
            self.summary = (  # type: ignore[misc]
                f"{n}-bit flip-flop RNN (--set cell=rnn|gru|lstm|ssm|deltanet): {2**n} stable fixed points, one per memory"
            )

    @classmethod
    def generic(cls) -> FlipFlopTask:
        return cls(
            name="flipflop",
            summary="n-bit flip-flop RNN (--set n_bits=1…6, default 3; cell=rnn|gru|lstm|ssm|deltanet): "
            "2^n stable fixed points, one per memory",
        )

    @classmethod
    def preset(cls, n_bits: int) -> FlipFlopTask:
        return cls(FlipFlopConfig(n_bits=n_bits))

    @property
    def preset_bits(self) -> int | None:
        """The bit count a preset's name fixes (flipflop-4bit: 4), None for `flipflop`."""
        found = re.fullmatch(r"flipflop-(\d+)bit", self.name)
        return int(found[1]) if found else None

    @property
    def input_size(self) -> int:
        return self.config.n_bits

    @property
    def output_size(self) -> int:
        return self.config.n_bits

    def make_target(self, target_seed: int, progress: Progress = no_progress) -> nn.Module:
        preset, n = self.preset_bits, self.config.n_bits
        if preset is not None and n != preset:
            raise ConfigError(
                f"task {self.name!r} has n_bits={preset}, got n_bits={n}; "
                f"use 'flipflop --set n_bits={n}'" + (f" or 'flipflop-{n}bit'" if 2 <= n <= 5 else "")
            )
        return super().make_target(target_seed, progress)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        c = self.config
        on = torch.rand(n, c.seq_len, c.n_bits, generator=generator) < c.pulse_prob
        on[:, 0] = True
        sign = torch.randint(0, 2, (n, c.seq_len, c.n_bits), generator=generator) * 2.0 - 1.0
        return on * sign  # (n, T, bits)

    def targets(self, u: Tensor) -> Tensor:
        """Each channel holds the sign of its last pulse: a forward fill of the non-zero inputs."""
        t = torch.arange(u.shape[1])[None, :, None].expand_as(u)
        last = torch.where(u != 0, t, torch.zeros_like(t)).cummax(dim=1).values  # (B, T, bits)
        return u.gather(1, last)

    def memories(self) -> Tensor:
        """All 2^bits memory states in {−1, +1}: [2^bits, bits]."""
        b = self.config.n_bits
        bits = (torch.arange(2**b)[:, None] >> torch.arange(b)[None, :]) & 1
        return bits.double() * 2 - 1

    def accept(self, model: RecurrentModel | CellStack, gen: torch.Generator) -> dict[str, Any]:
        """≥ 99 % bit accuracy on fresh sequences, every memory held for `hold_steps`, and every
        memory an attractor at the finder's stable band: Newton from the end of its hold reaches
        a fixed point that still reads out the memory, with |λ|max < 1 − `attractor_tol`
        (`dynamics.attractors`). Holding alone passes slow attractors (|λ| 0.9995) that the
        finder rightly calls marginal, so the target would not meet the truth it claims."""
        c = self.config
        with torch.no_grad():
            u = self.sample(512, gen)
            acc = float((model(u).sign() == self.targets(u)).float().mean())
            mem = self.memories().float()  # (2^bits, bits)
            hold = torch.zeros(mem.shape[0], c.hold_steps + 1, c.n_bits)
            hold[:, 0] = mem
            y = model(hold)  # (2^bits, 1 + hold, bits)
            held = bool(((y.sign() == mem[:, None]) & (y.abs() > 0.5)).all())
        step = as_step(model)
        attr = memory_attractors(step, readout_fn(model, step), self.memories(), c.hold_steps, c.attractor_tol)
        ok = acc >= 0.99 and held and attr["attractors_ok"]
        return {"ok": ok, "bit_accuracy": acc, "memories_held": held} | attr

    def expected(self, target: nn.Module, u: Tensor) -> ExpectedStructure:
        return ExpectedStructure(kind="flipflop", memories=self.memories())


class SineTask(RecurrentTask):
    name = "sine-generator"
    summary = "sine-wave generator RNN: per input level an oscillatory unstable point of angle ω"
    Cfg = SineConfig
    config: SineConfig

    def omegas(self) -> Tensor:
        c = self.config
        return torch.linspace(c.min_omega, c.max_omega, c.n_freqs, dtype=torch.float64)

    def levels(self) -> Tensor:
        """The static input that selects frequency j: j / n_freqs + 0.25 (as Sussillo & Barak)."""
        return torch.arange(self.config.n_freqs, dtype=torch.float64) / self.config.n_freqs + 0.25

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        j = torch.randint(self.config.n_freqs, (n,), generator=generator)
        return self.levels().float()[j][:, None, None].expand(n, self.config.seq_len, 1).contiguous()

    def targets(self, u: Tensor) -> Tensor:
        levels = self.levels().float()
        j = (u[:, :1, 0, None] - levels).abs().argmin(-1)  # (B, 1)
        omega = self.omegas().float()[j]  # (B, 1)
        t = torch.arange(1, u.shape[1] + 1, dtype=torch.float32)[None, :]
        return torch.sin(omega * t)[..., None]  # (B, T, 1)

    def accept(self, model: RecurrentModel | CellStack, gen: torch.Generator) -> dict[str, Any]:
        """Mean squared error on twice the training length (the oscillation must persist)."""
        u = self.levels().float()[:, None, None].expand(-1, 2 * self.config.seq_len, 1)
        with torch.no_grad():
            mse = float(F.mse_loss(model(u), self.targets(u)))
        return {"ok": mse < 0.05, "long_mse": mse}

    def analysis_inputs(self) -> list[Tensor]:
        return [lv.reshape(1) for lv in self.levels()]

    def expected(self, target: nn.Module, u: Tensor) -> ExpectedStructure:
        j = int((self.levels() - float(u[0])).abs().argmin())
        return ExpectedStructure(kind="oscillator", omega=float(self.omegas()[j]))


class IntegratorTask(RecurrentTask):
    name = "integrator"
    summary = "integrator RNN: output the running sum of its input (a line attractor of slow points)"
    Cfg = IntegratorConfig
    config: IntegratorConfig

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        c = self.config
        return c.pulse_std * torch.randn(n, c.seq_len, 1, generator=generator)

    def targets(self, u: Tensor) -> Tensor:
        return u.cumsum(dim=1)

    def accept(self, model: RecurrentModel | CellStack, gen: torch.Generator) -> dict[str, Any]:
        u = self.sample(256, gen)
        with torch.no_grad():
            y = self.targets(u)
            r2 = 1 - float(F.mse_loss(model(u), y) / y.var())
        return {"ok": r2 > 0.95, "r2": r2}

    def expected(self, target: nn.Module, u: Tensor) -> ExpectedStructure:
        return ExpectedStructure(kind="line-attractor")

    def finder_defaults(self) -> dict[str, Any]:
        """A line attractor is a continuum of slow points: keep them (q up to 1e-4)."""
        return {"keep_slow": True, "q_slow": 1e-4}


register_task("flipflop", FlipFlopTask.generic)
for _n in (2, 3, 4, 5):  # flipflop-3bit is the name older runs and the quick bench use
    register_task(f"flipflop-{_n}bit", functools.partial(FlipFlopTask.preset, _n))
register_task("sine-generator", SineTask)
register_task("integrator", IntegratorTask)
