"""Component groups: the linear view of a decomposition that attribution graphs are built on.

Every method that splits activations or weights into components can be read the same way at each
of its sites: a group of C components *reads* an activation `a` (a module's input or output) and
gives each component a coefficient, and *writes* that coefficient times a fixed vector into one or
more module outputs:

    pre = code(a)                 [rows, C]  affine in a (SAE/transcoder: W_enc a + b; SPD: V a)
    z   = act(a)                  [rows, C]  the coefficient actually used (after the nonlinearity)
    out_m ← Σ_groups z W_m + err_m           W_m [C, d_out]: what each component writes into module m

`err_m` is what the components miss on the clean pass (biases, reconstruction error), held fixed, so
the rewritten network computes exactly the clean output and attributions are taken at the true
operating point. A component *fires* on a row when `fires(a)` says so (a dictionary latent > 0,
an SPD causal importance > 0.1).

    groups = groups_of(decomposition)      # one Group per site (a CLT writes into several modules)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from mechscope.decompose.base import Decomposition
from mechscope.decompose.dictionary import SparseCoder
from mechscope.decompose.dictionary_decomposition import DictionaryDecomposition
from mechscope.decompose.spd_components import SiteComponents
from mechscope.decompose.spd_presets import Kind
from mechscope.hooks import Where


@dataclass
class Group:
    """The components of one decomposition site, read at one place, written to some modules."""

    site: str
    read: tuple[str, Where]
    n: int
    code: Callable[[Tensor], Tensor]
    """read activation [rows, d_in] → pre-activation [rows, C] (affine: what attributions target)."""
    act: Callable[[Tensor], Tensor]
    """read activation → coefficient z [rows, C] that multiplies the writes."""
    fires: Callable[[Tensor], Tensor]
    """read activation → bool [rows, C]: which components are in use on each row."""
    writes: dict[str, Tensor]
    """module name → [C, d_out]: what one unit of each coefficient adds to that module's output."""


def dictionary_groups(dec: DictionaryDecomposition) -> list[Group]:
    """SAEs and transcoders: read where the coder reads, write its decoder rows into the site."""
    out = []
    for site, sc in dec.coders.items():
        coder = sc.coder

        def fires(a: Tensor, coder: SparseCoder = coder) -> Tensor:
            return coder.encode(a) > 0

        out.append(Group(site, sc.read, coder.n_latents, coder.pre_acts, coder.encode, fires,
                         {site: coder.W_dec.detach()}))  # fmt: skip
    return out


def spd_groups(dec: Decomposition) -> list[Group]:
    """SPD: component c reads V[c]·a at its module's input and writes U[:, c]; fires where its
    causal importance exceeds the method's threshold (0.1)."""
    from mechscope.decompose import spd_losses as L
    from mechscope.decompose.spd import SPDDecomposition

    assert isinstance(dec, SPDDecomposition)
    out = []
    for site_info, comp in zip(dec.site_info, dec._typed, strict=True):
        if site_info.kind != "linear":
            raise ValueError(f"circuit graphs support SPD on nn.Linear sites; {site_info.name!r} is {site_info.kind}")
        kind, threshold = site_info.kind, dec.fire_threshold

        def code(a: Tensor, comp: SiteComponents = comp, kind: Kind = kind) -> Tensor:
            return comp.read(kind, a)

        def fires(a: Tensor, comp: SiteComponents = comp, kind: Kind = kind, threshold: float = threshold) -> Tensor:
            return L.hard_sigmoid(comp.ci_pre(comp.read(kind, a))) > threshold

        U = comp.U.detach().T  # (C, d_out)
        out.append(Group(site_info.name, (site_info.name, "input"), int(U.shape[0]), code, code, fires,
                         {site_info.name: U}))  # fmt: skip
    return out


GROUP_BUILDERS: dict[str, Callable[[Decomposition], list[Group]]] = {
    "dictionary": dictionary_groups,  # type: ignore[dict-item]
    "spd": spd_groups,
}
"""Decomposition kind → how to read it as groups. Methods with their own kind (the CLT) add theirs."""


def groups_of(dec: Decomposition) -> list[Group]:
    """The decomposition as component groups, or a one-line error for kinds that have no linear view."""
    groups = getattr(dec, "graph_groups", None)
    if callable(groups):
        return list(groups())
    builder = GROUP_BUILDERS.get(dec.kind)
    if builder is None:
        known = ", ".join(sorted(GROUP_BUILDERS))
        raise ValueError(f"decomposition kind {dec.kind!r} has no attribution-graph view; supported: {known}, clt")
    return builder(dec)


def check_multi_site(groups: list[Group]) -> None:
    if len(groups) < 2:
        sites = ", ".join(g.site for g in groups) or "(none)"
        raise ValueError(f"an attribution graph needs components at two or more sites; this decomposition has {sites}")


def rows(a: Tensor) -> Tensor:
    """[..., d] → [rows, d]: sequence positions become rows."""
    return a.reshape(-1, a.shape[-1])


def exact_writes_err(groups: list[Group], z: dict[str, Tensor], outs: dict[str, Tensor]) -> dict[str, Tensor]:
    """err_m = clean output of m − Σ_g z_g W_g,m: what the components miss, held fixed."""
    err = {m: rows(o).clone() for m, o in outs.items()}
    for g in groups:
        for m, W in g.writes.items():
            err[m] = err[m] - z[g.site] @ W
    return {m: e.detach() for m, e in err.items()}


def write_modules(groups: list[Group]) -> list[str]:
    return sorted({m for g in groups for m in g.writes})
