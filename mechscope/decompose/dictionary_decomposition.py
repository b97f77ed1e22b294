"""Trained sparse dictionaries (SAEs, transcoders) behind the shared Decomposition interface.

Each decomposed site holds one `SparseCoder` that reads an activation at `read` (a module's input
or output) and writes the output of module `site`:

- SAE: read = (site, "output"), and the site's output is replaced by its own reconstruction;
- transcoder on an MLP: read = (mlp input module, "input"), site = the MLP's output module, whose
  output is replaced by the coder's prediction from the MLP's input.

`directions(site, "activation")` = decoder rows (what each latent writes); `read_directions(site)`
= encoder rows (what each latent reads — for a transcoder, a direction in the MLP's input);
`activity` = latent activations; `forward_with` = the target run with each site's activation
replaced by the reconstruction from the masked-in latents (decoder bias always kept).
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from mechscope.core import Space
from mechscope.decompose.activation_buffer import model_device
from mechscope.decompose.base import Admissible, Decomposition, Mask
from mechscope.decompose.dictionary import SparseCoder
from mechscope.hooks import Where, capture, get_module, replace_output


@dataclass
class SiteCoder:
    coder: SparseCoder
    read: tuple[str, Where]
    """Where the coder's input is read: (module, "input" | "output")."""

    def is_sae(self, site: str) -> bool:
        return self.read == (site, "output")


class DictionaryDecomposition(Decomposition):
    """One sparse coder per site; latents fire when > 0."""

    kind = "dictionary"
    fire_threshold: ClassVar[float] = 0.0
    signed_directions: ClassVar[bool] = True  # latents are ≥ 0: a decoder row's sign is what it writes

    def __init__(self, target: nn.Module, coders: dict[str, SiteCoder]) -> None:
        for site, sc in coders.items():
            get_module(target, site), get_module(target, sc.read[0])
        super().__init__(target, list(coders))
        self.coders = coders

    def coder(self, site: str) -> SparseCoder:
        if site not in self.coders:
            raise KeyError(f"no dictionary at site {site!r}; sites: {', '.join(self.sites)}")
        return self.coders[site].coder

    def n_components(self, site: str) -> int:
        return self.coder(site).n_latents

    def directions(self, site: str, space: Space) -> Tensor | None:
        if space == "parameter":
            return None
        return self.coder(site).W_dec.detach().clone()  # (C, d_out)

    def read_directions(self, site: str) -> Tensor:
        """[C, d_in] encoder rows: the direction each latent reads from its input activation."""
        return self.coder(site).W_enc.detach().clone()

    # --- running the target -----------------------------------------------------------------
    def _inputs(self, x: Tensor) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Clean activations ({site: coder input}, {site: site output}), each [rows, d]."""
        reads = {sc.read for sc in self.coders.values()}
        wheres: tuple[Where, ...] = ("input", "output")
        store: dict[tuple[str, Where], Tensor] = {}
        with torch.no_grad(), ExitStack() as stack:
            by_where: dict[Where, dict[str, Tensor]] = {}
            for where in wheres:
                names = sorted({n for n, w in reads if w == where} | (set(self.sites) if where == "output" else set()))
                if names:
                    by_where[where] = stack.enter_context(capture(self.target, names, where))
            self.target(x.to(model_device(self.target)))
            for where, acts in by_where.items():
                for name, a in acts.items():
                    store[(name, where)] = a.reshape(-1, a.shape[-1])
        ins = {s: store[sc.read] for s, sc in self.coders.items()}
        outs = {s: store[(s, "output")] for s in self.sites}
        return ins, outs

    @torch.no_grad()
    def activity(self, x: Tensor) -> dict[str, Tensor]:
        ins, _ = self._inputs(x)
        # [rows, C]: rows are the inputs (or, for a sequence model, its tokens)
        return {s: self.coder(s).encode(ins[s]) for s in self.sites}

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> dict[str, Tensor]:
        ins, _ = self._inputs(x)
        return {s: self.coder(s)(ins[s]) for s in self.sites}

    @torch.no_grad()
    def forward_with(self, x: Tensor, mask: Mask) -> Tensor:
        with ExitStack() as stack:
            for site, sc in self.coders.items():
                m = mask.get(site)
                reads = None
                if not sc.is_sae(site):  # transcoder: remember the MLP's input during this pass
                    reads = stack.enter_context(capture(self.target, [sc.read[0]], sc.read[1]))
                stack.enter_context(replace_output(self.target, site, self._replacer(site, sc, m, reads)))
            return self.target(x.to(model_device(self.target)))

    def _replacer(self, site: str, sc: SiteCoder, m: Tensor | None, reads: dict[str, Tensor] | None) -> Any:
        coder = sc.coder

        def fn(_inputs: tuple[Any, ...], output: Tensor) -> Tensor:
            a = output if reads is None else reads[sc.read[0]]
            flat = a.reshape(-1, a.shape[-1])
            z = coder.encode(flat)  # (rows, C)
            if m is not None:
                z = z * _rows_mask(m, z.shape[0], coder.n_latents, site).to(z.device, z.dtype)
            return coder.decode(z).reshape(output.shape)

        return fn

    # --- worst-case ablation (metrics/pgd.py) -----------------------------------------------
    def admissible(self, x: Tensor) -> Admissible:
        """Per site C + 1 free values per row. Latent j's coefficient is m_j · relu(pre_j(x)): a
        firing latent is kept (m_j = 1); a silent one may take any fraction m_j ∈ [0, 1] of the value
        its encoder computed before the sparsity gate dropped it (TopK's selection, JumpReLU's and
        BatchTopK's thresholds; a silent ReLU latent has nothing to give). The last column scales
        the reconstruction error a − x̂(a) in [0, 1]: 0 is the spliced reconstruction that
        `faithfulness` runs, 1 the clean activation."""
        with torch.no_grad():
            fires = self.fires(x)
        lo: dict[str, Tensor] = {}
        hi: dict[str, Tensor] = {}
        for s, f in fires.items():
            lo[s] = torch.cat([f.float(), torch.zeros(f.shape[0], 1, device=f.device)], dim=1)
            hi[s] = torch.ones_like(lo[s])
        return Admissible(lo, hi, lo)

    def forward_admissible(self, x: Tensor, masks: Mask) -> Tensor:
        with ExitStack() as stack:
            for site, sc in self.coders.items():
                reads = None
                if not sc.is_sae(site):
                    reads = stack.enter_context(capture(self.target, [sc.read[0]], sc.read[1]))
                fn = self._admissible_replacer(site, sc, masks.get(site), reads)
                stack.enter_context(replace_output(self.target, site, fn))
            return self.target(x)

    def _admissible_replacer(
        self, site: str, sc: SiteCoder, m: Tensor | None, reads: dict[str, Tensor] | None
    ) -> Any:
        coder = sc.coder

        def fn(_inputs: tuple[Any, ...], output: Tensor) -> Tensor:
            a = output if reads is None else reads[sc.read[0]]
            flat = a.reshape(-1, a.shape[-1])
            x_hat = coder(flat)
            if m is None:
                return x_hat.reshape(output.shape)
            mm = _rows_mask(m, flat.shape[0], coder.n_latents + 1, site).to(flat.dtype)
            ungated = coder.pre_acts(flat).relu()  # (rows, C)
            err = output.reshape(-1, output.shape[-1]) - x_hat
            out = coder.decode(mm[:, :-1] * ungated) + mm[:, -1:] * err
            return out.reshape(output.shape)

        return fn

    # --- persistence ------------------------------------------------------------------------
    def state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        tensors: dict[str, Tensor] = {}
        config: dict[str, Any] = {}
        for site, sc in self.coders.items():
            c = sc.coder
            for name, t in c.state_dict().items():
                tensors[f"{site}/{name}"] = t
            config[site] = {
                "read": list(sc.read), "activation": c.activation, "k": c.k, "sae": c.sae,
                "d_in": c.d_in, "d_out": c.d_out, "n_latents": c.n_latents,
            }  # fmt: skip
            if c.trained:  # what the fit resolved (blind sizes, batch, samples seen)
                config[site]["trained"] = c.trained
        return tensors, config

    @classmethod
    def from_state(cls, target: nn.Module, tensors: dict[str, Tensor], config: dict[str, Any]) -> Decomposition:
        coders: dict[str, SiteCoder] = {}
        for site, c in config.items():
            coder = SparseCoder(c["d_in"], c["d_out"], c["n_latents"], c["activation"], c["k"], c["sae"])
            coder.load_state_dict({k.split("/", 1)[1]: v for k, v in tensors.items() if k.split("/", 1)[0] == site})
            coder.trained = dict(c.get("trained", {}))
            coder.to(model_device(target)).eval()
            coders[site] = SiteCoder(coder, (c["read"][0], c["read"][1]))
        return cls(target, coders)


def _rows_mask(m: Tensor, rows: int, n_latents: int, site: str) -> Tensor:
    """A [C] or [batch, C] mask as [rows, C]; a sequence model's tokens share their input's row."""
    if m.shape[-1] != n_latents:
        raise ValueError(f"mask for site {site!r} has {m.shape[-1]} columns; the dictionary has {n_latents}")
    if m.dim() == 1:
        return m.expand(rows, -1)
    if m.shape[0] == rows:
        return m
    if rows % m.shape[0] == 0:
        return m.repeat_interleave(rows // m.shape[0], 0)
    raise ValueError(f"mask for site {site!r} has {m.shape[0]} rows; the activation has {rows}")
