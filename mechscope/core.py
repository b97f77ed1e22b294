"""mechscope's shared vocabulary: what zoo/, decompose/, metrics/ and dynamics/ all speak.

- `Task`: a model whose mechanisms are known (the zoo implements it);
- `GroundTruth` / `Mechanism`: those mechanisms, per site and space, with their activity rules;
- `TaskFacts`: the *public* face of a task that a method's `fit` is handed — its inputs, its sites
  and widths, its settings — and never its ground truth (reading it raises `BlindFitError`);
- `Progress`: the progress callback long work reports through;
- `derive_seed`: the one rule that turns a seed and a salt into an independent stream.

A *mechanism* lives at one site (a named module of the target) in one space:
- parameter space: a matrix T (d_out × d_in) of that module's weight;
- activation space: a vector t in that module's output (`direction`), optionally with the vector it
  reads from the module's input (`read`, for transcoders on an MLP).
It has a rank (1 for features; k for a dense mechanism such as the +ID identity) and an activity
rule: which inputs use it.

    task = get_task("tms-5-2")
    target = task.make_target(target_seed=0)        # cached on disk after the first call
    truth = task.ground_truth(target)               # Mechanisms in parameter / activation space
    x = task.sample(4096, torch.Generator().manual_seed(1))
    truth.active(x, "parameter")                    # bool[batch, n_true]
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from mechscope.config import Config

Space = Literal["parameter", "activation"]
SPACES: tuple[Space, ...] = ("parameter", "activation")

# How a mechanism's activity is read off the task's input features x[batch, n_features]:
#   "pos": x[:, feature] > 0      "neg": x[:, feature] < 0      "nonzero": x[:, feature] != 0
#   "dense": any feature non-zero (rank-k mechanisms used on every non-empty input)
#   "never": never used on data (e.g. the part of W_in outside span(W_E))
ActiveRule = Literal["pos", "neg", "nonzero", "dense", "never"]

ONEHOT_QUANTILE = 0.75
"""The percentile of its magnitude law at which the `onehot` evaluation set puts each feature."""

ONEHOT_VALUE = ONEHOT_QUANTILE
"""The `onehot` value of the SPD tasks (the SPD paper's 0.75): their magnitudes are U(0, 1)."""

_SEED_STRIDE = 1_000_003  # a prime larger than any salt we use, so (seed, salt) pairs never collide


def derive_seed(seed: int, salt: int) -> int:
    """The seed of stream `salt` of a run seeded `seed`: independent streams, one rule everywhere."""
    return (seed * _SEED_STRIDE + salt) % 2**63


def seeded_generator(seed: int, salt: int | None = None, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch.Generator on `device`: seeded with `seed` itself, or with stream `salt` of `seed`."""
    return torch.Generator(device).manual_seed(seed if salt is None else derive_seed(seed, salt))


@dataclass(frozen=True)
class Mechanism:
    """One true mechanism at one site in one space."""

    name: str
    space: Space
    site: str
    direction: Tensor
    """parameter space: T [d_out, d_in]; activation space: t [d] in the site's output."""
    rank: int
    rule: ActiveRule
    feature: int | None = None
    read: Tensor | None = None
    """activation space only: the direction it reads in the site's input (transcoders)."""
    factors: tuple[Tensor, Tensor] | None = None
    """parameter space, optional: (U [d_out, r], V [d_in, r]) with T = U Vᵀ, for a truth too large to
    hold dense (synth-sae-bench-4k: one 192 × 4,096 matrix per feature, ≈ 13 GB for 4,096 features;
    as factors 70 MB). `direction` is then a meta tensor of T's shape (no storage, so any code that
    would densify fails loudly instead of running the box out of memory); read T as `matrix()`."""

    @staticmethod
    def factored(
        name: str, site: str, U: Tensor, V: Tensor, rule: ActiveRule, feature: int | None = None
    ) -> Mechanism:
        """A parameter-space mechanism T = U Vᵀ stored as its factors (U [d_out, r], V [d_in, r])."""
        if U.dim() != 2 or V.dim() != 2 or U.shape[1] != V.shape[1]:
            raise ValueError(f"factors must be U [d_out, r], V [d_in, r]; got {tuple(U.shape)}, {tuple(V.shape)}")
        shape = torch.empty(U.shape[0], V.shape[0], device="meta")
        return Mechanism(name, "parameter", site, shape, int(U.shape[1]), rule, feature, factors=(U, V))

    def matrix(self) -> Tensor:
        """T itself: `direction`, or U Vᵀ formed now for a factored mechanism (small tasks, tests)."""
        if self.factors is None:
            return self.direction
        U, V = self.factors
        return U @ V.T


@dataclass
class GroundTruth:
    """The true mechanisms of one target, and what the target represents."""

    mechanisms: list[Mechanism]
    n_features: int
    represented: list[int]
    """Features the trained target actually represents; only these are scored."""
    read_projection: dict[str, Tensor] = field(default_factory=dict)
    """Per parameter site, a [d_in, d_in] projection applied to a component's read side before
    comparison (residual MLP: onto span(W_E), since the rest of W_in is never used on data)."""
    output_kind: Literal["mse", "logits"] = "mse"
    notes: list[str] = field(default_factory=list)
    hierarchy: list[tuple[int, int]] = field(default_factory=list)
    """(parent feature, child feature) pairs of a hierarchical task: the parent is active whenever
    the child is. Scored by `absorption` (does the child's component take over the parent's?)."""

    def in_space(self, space: Space, site: str | None = None) -> list[Mechanism]:
        return [m for m in self.mechanisms if m.space == space and (site is None or m.site == site)]

    def sites(self, space: Space) -> list[str]:
        return sorted({m.site for m in self.mechanisms if m.space == space})

    def active(self, x: Tensor, space: Space, site: str | None = None) -> Tensor:
        """bool[batch, n]: which inputs use each mechanism of `space` (in `in_space` order)."""
        return active_matrix(self.in_space(space, site), x)


def active_matrix(mechanisms: list[Mechanism], x: Tensor) -> Tensor:
    """bool[batch, len(mechanisms)] from each mechanism's rule applied to features x.

    "dense" reads whether the input has any non-zero entry, whatever its shape (a tracr
    sequence is [T, tokens]); the feature rules read column `feature` of x [batch, n_features]."""
    any_feature = (x != 0).flatten(1).any(dim=1)
    cols = []
    for m in mechanisms:
        if m.rule == "dense":
            cols.append(any_feature)
        elif m.rule == "never":
            cols.append(torch.zeros_like(any_feature))
        else:
            assert m.feature is not None, m.name
            xi = x[:, m.feature]
            cols.append({"pos": xi > 0, "neg": xi < 0, "nonzero": xi != 0}[m.rule])
    if not cols:
        return torch.zeros(x.shape[0], 0, dtype=torch.bool)
    return torch.stack(cols, dim=1)


Progress = Callable[[int, int], None]
"""A progress callback: `progress(done, total)`; the CLI draws it as a rich bar."""


def no_progress(done: int, total: int) -> None:
    """The default progress callback: silent."""


class Task(ABC):
    """A ground-truth task. Subclasses set `name`, `summary`, `Cfg` and implement the methods."""

    name: ClassVar[str]
    summary: ClassVar[str]
    family: ClassVar[str]
    """"tms", "resid-mlp", "rnn", …: which zoo family, for grouping in reports."""
    kind: ClassVar[Literal["decomposition", "dynamics"]] = "decomposition"
    output_kind: ClassVar[Literal["mse", "logits"]] = "mse"
    """What the target outputs — a public fact a method may use to choose its output loss."""
    Cfg: ClassVar[type[Config]]

    def __init__(self, config: Config | None = None, name: str | None = None, summary: str | None = None) -> None:
        """`name`/`summary` let one Task class serve several registered settings (tms-5-2, tms-40-10…)."""
        self.config = config if config is not None else self.Cfg()
        if name is not None:
            self.name = name  # type: ignore[misc]
        if summary is not None:
            self.summary = summary  # type: ignore[misc]

    @abstractmethod
    def make_target(self, target_seed: int, progress: Progress = no_progress) -> nn.Module:
        """The target network for this seed: trained (and cached) or constructed."""

    @abstractmethod
    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """n inputs from the task's data distribution, [n, n_features]."""

    @abstractmethod
    def ground_truth(self, target: nn.Module) -> GroundTruth:
        """The target's true mechanisms."""

    def onehot(self, value: float | None = None) -> Tensor:
        """The `onehot` evaluation set: each feature alone at `value`, by default 0.75 (SPD paper).

        0.75 is the 75th percentile of the U(0, 1) magnitudes of the SPD tasks; a task whose
        features have another magnitude law puts each at the same percentile of its own law.
        Tasks with signed features add each feature alone at −value too."""
        n = self.n_features
        return torch.eye(n) * (ONEHOT_VALUE if value is None else value)

    @property
    @abstractmethod
    def n_features(self) -> int: ...

    def activation_sites(self) -> list[str]:
        """Sites where an activation dictionary (SAE) is trained by default."""
        return []

    def mlp_sites(self) -> list[tuple[str, str]]:
        """(input site, output site) pairs of the target's MLPs, for transcoders; [] if none."""
        return []


class BlindFitError(RuntimeError):
    """A method tried to read the ground truth while fitting."""


class TaskFacts:
    """What a method may know about a task while it fits: the public facts, never the truth.

    A user with a real model knows its inputs (a sampler), its module names and widths and the
    task's own settings — not which mechanisms it uses. `fit` gets this view; `ground_truth` raises.
    A method that is sized from the truth (`sizing=oracle`, the `oracle` and `random` calibrations)
    is handed the truth explicitly in `FitContext.truth`, so every such read is visible."""

    def __init__(self, task: Task) -> None:
        self._task = task
        self.name: str = task.name
        self.family: str = task.family
        self.kind: str = task.kind
        self.output_kind: str = task.output_kind
        self.config: Config = task.config

    @property
    def n_features(self) -> int:
        """Width of the task's input x (the sampler's last dimension)."""
        return self._task.n_features

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        return self._task.sample(n, generator)

    def onehot(self, value: float | None = None) -> Tensor:
        return self._task.onehot(value)

    def activation_sites(self) -> list[str]:
        return self._task.activation_sites()

    def mlp_sites(self) -> list[tuple[str, str]]:
        return self._task.mlp_sites()

    def base(self) -> TaskFacts:
        """The facts of the task whose settings apply (a random-init control's original)."""
        base = getattr(self._task, "base", None)
        return TaskFacts(base()) if callable(base) else self

    def ground_truth(self, target: nn.Module) -> Any:
        raise BlindFitError(
            f"a method read the ground truth of task {self.name!r} while fitting; fits are blind — "
            "truth-sized runs must ask for it explicitly (sizing=oracle) and read FitContext.truth"
        )


def facts_of(task: Task | TaskFacts) -> TaskFacts:
    """The public view of `task` (itself if it is one already)."""
    return task if isinstance(task, TaskFacts) else TaskFacts(task)
