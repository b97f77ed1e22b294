"""The one interface every decomposition method returns.

A Decomposition splits a target network, at named *sites* (module names), into components:

- `directions(site, space)` → [C, d]: in parameter space each component's weight matrix,
  flattened (d = d_out·d_in); in activation space a vector in the site's output. `None` where the
  method has no object in that space (an SAE has no parameter components).
- `activity(x)` → {site: [batch, C]}: how much each component is used on each input (an SAE's latent
  activation, SPD's causal importance). A component *fires* when its activity exceeds
  `fire_threshold` (0.1 for causal importance, 0 for dictionary latents).
- `forward_with(x, mask)` → the target's output with only the masked-in components
  (mask {site: [batch, C] or [C]}, 1 = keep); sites absent from `mask` run all components.
- `save(dir)` / `load_decomposition(dir, target)`: safetensors + JSON, loadable without the
  method's training code.
- `admissible(x)` / `forward_admissible(x, masks)`: the box of masks the method itself calls
  harmless on each input, and the differentiable forward under them — what the worst-case
  ablation `pgd_faithfulness` (metrics/pgd.py) searches.

`ParameterDecomposition` implements `forward_with` for any set of weight components by hooking the
site modules; methods that split weights (oracle, random, SPD) subclass it.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from mechscope.core import Space
from mechscope.files import atomic_write
from mechscope.hooks import replace_output

Mask = dict[str, Tensor]

_CLASSES: dict[str, type[Decomposition]] = {}


@dataclass(frozen=True)
class Admissible:
    """Per site, the masks an adversary may choose on each input: `lo` ≤ m ≤ `hi`, each
    [rows, n_free(site)] (rows: the inputs, or a sequence model's tokens). `start` is the method's
    own evaluation point, the one `faithfulness` runs (all components on)."""

    lo: dict[str, Tensor]
    hi: dict[str, Tensor]
    start: dict[str, Tensor]


class Decomposition(ABC):
    """Components at named sites of `target`, with directions, activity and ablation."""

    fire_threshold: ClassVar[float] = 0.0
    signed_directions: ClassVar[bool] = False
    """True when a component's activity is never negative, so its activation direction's sign is
    what it writes (a latent with decoder −t is the opposite feature of t); the scorer then
    matches it to ±t by its signed cosine. False (SPD's u vᵀ = (−u)(−v)ᵀ): the sign is arbitrary."""
    kind: ClassVar[str]
    """Registry key of the class, stored in the saved JSON so `load_decomposition` can rebuild it."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:
            _CLASSES[cls.kind] = cls

    def __init__(self, target: nn.Module, sites: list[str]) -> None:
        self.target = target
        self.sites = list(sites)

    @abstractmethod
    def n_components(self, site: str) -> int: ...

    @abstractmethod
    def directions(self, site: str, space: Space) -> Tensor | None:
        """[C, d] component directions at `site` in `space`, or None if none exist there."""

    def factors(self, site: str) -> tuple[Tensor, Tensor] | None:
        """Parameter components as factors (U [C, d_out, r], V [C, d_in, r]), P_c = U[c] V[c]ᵀ, for
        methods that store them so; None otherwise. The scorer reads these against a factored truth
        instead of `directions(site, "parameter")`, which would form C dense matrices."""
        return None

    @abstractmethod
    def activity(self, x: Tensor) -> dict[str, Tensor]:
        """{site: [batch, C]} component activity on inputs x."""

    @abstractmethod
    def forward_with(self, x: Tensor, mask: Mask) -> Tensor:
        """Target output with only masked-in components (ablation)."""

    def fires(self, x: Tensor) -> dict[str, Tensor]:
        """{site: bool[batch, C]}: activity above this method's firing threshold."""
        return {s: a > self.fire_threshold for s, a in self.activity(x).items()}

    def reconstruct(self, x: Tensor) -> dict[str, Tensor]:
        """{site: [batch, d]} the method's reconstruction of each activation site (for `shrinkage`);
        empty for methods that do not reconstruct activations."""
        return {}

    def all_on(self, batch: int) -> Mask:
        return {s: torch.ones(batch, self.n_components(s)) for s in self.sites}

    # --- worst-case ablation (metrics/pgd.py) ----------------------------------------------
    def admissible(self, x: Tensor) -> Admissible:
        """Default box: a component that fires on an input is kept (mask 1); one that does not is
        claimed irrelevant there, so any mask in [0, 1] must leave the output unchanged."""
        with torch.no_grad():
            fires = self.fires(x)
        lo = {s: f.float() for s, f in fires.items()}
        ones = {s: torch.ones_like(v) for s, v in lo.items()}
        return Admissible(lo, ones, ones)

    def forward_admissible(self, x: Tensor, masks: Mask) -> Tensor:
        """Target output under masks from `admissible(x)`, differentiable in the masks."""
        return self.forward_with(x, masks)

    # --- persistence -----------------------------------------------------------------------
    @abstractmethod
    def state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """(tensors, json-able config) that `from_state` turns back into this decomposition."""

    @classmethod
    @abstractmethod
    def from_state(cls, target: nn.Module, tensors: dict[str, Tensor], config: dict[str, Any]) -> Decomposition:
        ...

    def save(self, directory: str | Path) -> None:
        """Write `components.safetensors` + `decomposition.json` atomically into `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors, config = self.state()
        meta = {"kind": self.kind, "sites": self.sites, "config": config}
        tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        atomic_write(directory / "components.safetensors", lambda p: save_file(tensors, str(p)))
        atomic_write(directory / "decomposition.json", lambda p: p.write_text(json.dumps(meta, indent=2)))


def load_decomposition(directory: str | Path, target: nn.Module) -> Decomposition:
    """Rebuild a saved decomposition of `target` (no training code needed)."""
    directory = Path(directory)
    meta = json.loads((directory / "decomposition.json").read_text())
    cls = _CLASSES.get(meta["kind"])
    if cls is None:
        known = ", ".join(sorted(_CLASSES))
        raise ValueError(f"unknown decomposition kind {meta['kind']!r} in {directory}; known: {known}")
    tensors = load_file(str(directory / "components.safetensors"))
    return cls.from_state(target, tensors, meta["config"])


class ParameterDecomposition(Decomposition):
    """Weight components P_c [d_out, d_in] per site with Σ_c P_c ≈ W_site.

    `forward_with` hooks each site module (an `nn.Linear`) so its output becomes
    Σ_c m_c · P_c a + bias, where a is the module's input. A target may tie a second module to a
    site (TMS uses Wᵀ as its second layer): `target.tied = {"W_T": "W"}` makes `W_T` compute
    Σ_c m_c · P_cᵀ a with the same mask.
    """

    fire_threshold: ClassVar[float] = 0.1

    @abstractmethod
    def components(self, site: str) -> Tensor:
        """[C, d_out, d_in] component matrices at `site`."""

    def n_components(self, site: str) -> int:
        return int(self.components(site).shape[0])

    def component_outputs(self, site: str, a: Tensor, transpose: bool = False) -> Tensor:
        """[batch, C, d_out]: each component's contribution P_c a (or P_cᵀ a if `transpose`)."""
        P = self.components(site)
        return torch.einsum("coi,bi->bco", P, a) if not transpose else torch.einsum("coi,bo->bci", P, a)

    def directions(self, site: str, space: Space) -> Tensor | None:
        P = self.components(site)
        if space == "parameter":
            return P.flatten(1)
        # Activation space: what the component writes into the module's output.
        U, _, _ = torch.linalg.svd(P, full_matrices=False)
        return U[:, :, 0]

    def admissible(self, x: Tensor) -> Admissible:
        """SPD's own bounds (Bushnaq et al. 2025, VPD): component c may be masked anywhere in
        [g_c(x), 1], g_c its causal importance (here `activity`, clamped to [0, 1]); all on is
        where `faithfulness` sits."""
        with torch.no_grad():
            lo = {s: a.float().clamp(0.0, 1.0) for s, a in self.activity(x).items()}
        ones = {s: torch.ones_like(v) for s, v in lo.items()}
        return Admissible(lo, ones, ones)

    def forward_with(self, x: Tensor, mask: Mask) -> Tensor:
        tied: dict[str, str] = getattr(self.target, "tied", {})
        modules = dict(self.target.named_modules())
        with ExitStack() as stack:
            for site in self.sites:
                if site not in mask:
                    continue
                m = _batch_mask(mask[site], x.shape[0])
                stack.enter_context(replace_output(self.target, site, self._masked(site, m, modules[site], False)))
                for alias, source in tied.items():
                    if source == site:
                        fn = self._masked(site, m, modules[alias], True)
                        stack.enter_context(replace_output(self.target, alias, fn))
            return self.target(x)

    def _masked(self, site: str, m: Tensor, module: nn.Module, transpose: bool) -> Any:
        def contributions(flat: Tensor) -> Tensor:  # (B, C, d_out)
            return self.component_outputs(site, flat, transpose)

        return _masked_output(lambda flat, mm: torch.einsum("bco,bc->bo", contributions(flat), mm), m, module)


def factored_masked_output(U: Tensor, V: Tensor, m: Tensor, module: nn.Module, transpose: bool) -> Any:
    """Hook computing Σ_c m_c U[:, c] V[c, :] a as ((a Vᵀ) ⊙ m) U (or the transpose for a tied
    module) without materialising the [batch, C, d_out] tensor of per-component outputs.

    `U` is [C, d_out] (write rows) and `V` is [C, d_in] (read rows)."""
    read, write = (U, V) if transpose else (V, U)
    return _masked_output(lambda flat, mm: ((flat @ read.T) * mm) @ write, m, module)


def _masked_output(combine: Any, m: Tensor, module: nn.Module) -> Any:
    """Forward hook: the module's output rebuilt from its input by `combine(a, mask)` + its bias.

    Inputs with extra leading dims (sequences) are flattened; a per-input mask is repeated over them."""

    def fn(inputs: tuple[Tensor, ...], output: Tensor) -> Tensor:
        a = inputs[0]
        flat = a.reshape(-1, a.shape[-1])
        mm = m if m.shape[0] == flat.shape[0] else m.repeat_interleave(flat.shape[0] // m.shape[0], 0)
        out = combine(flat, mm.to(flat.device, flat.dtype))
        bias = getattr(module, "bias", None)
        if isinstance(bias, Tensor):
            out = out + bias
        return out.reshape(*a.shape[:-1], out.shape[-1])

    return fn


def _batch_mask(mask: Tensor, batch: int) -> Tensor:
    return mask.expand(batch, -1) if mask.dim() == 1 else mask
