"""Attribution graphs: which components drive which, across the sites of one decomposition.

Nodes are the task's input features, every component of every group (`groups.py`) and the
target's outputs. The weight of edge u → d is the mean over evaluation inputs of the linearised
*direct* effect of u on d — gradient × activation, with every other site's components held fixed:

    A[b, u→d] = fires_d[b] · z_u[b] · ∂pre_d[b] / ∂z_u          (inputs: x_u ∂pre_d/∂x_u)
    weight(u→d) = mean_b |A[b, u→d]|,   signed(u→d) = mean_b A[b, u→d]

Each site's output is rewritten as Σ z W + err with the coefficients z as leaves (groups.py), so a
gradient from d stops at the nearest upstream site: paths through another site's components are
that site's edges, not u's. Downstream nonlinearities between sites (the MLP's ReLU that an SAE on
its output looks through) are differentiated at the clean input — for ReLU exactly the frozen-gate
linearisation. Outputs are nodes with `pre` = the target's output and every row in use.

Cost: one backward pass per *slot* — the j-th firing component of each row, all rows at once — so
a group with k firing components per row costs k passes whatever its size; inputs are streamed in
chunks and only the [C_d, C_u] accumulators are kept (never an [inputs × edges] tensor). A row
firing more than `max_slots` components keeps its `max_slots` largest.

    graph = build_graph(decomposition, x)          # AttributionGraph
    graph.prune(0.05).save("graph/")               # keep the strongest 5 % of edges
    check = ablation_check(decomposition, x, graph)  # linear weights vs. ablation effects
"""

from __future__ import annotations

import json
import math
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from mechscope.circuits.groups import (
    Group,
    check_multi_site,
    exact_writes_err,
    groups_of,
    rows,
    write_modules,
)
from mechscope.config import Config
from mechscope.decompose.base import Decomposition
from mechscope.files import atomic_text, atomic_write
from mechscope.hooks import capture, get_module

NodeKind = Literal["input", "component", "output"]


class GraphConfig(Config):
    chunk: int = 4_096
    """Inputs per streamed chunk. The number of backward passes per chunk does not grow with it
    (one per slot, all rows at once), so larger is faster; memory grows as chunk × components."""
    max_slots: int = 64
    """Firing components per row followed back (the largest |z|); more are dropped."""
    max_outputs: int = 32
    """Outputs followed per row: all when the target has at most this many, else the largest |y|
    (the others' incoming edges are dropped, as circuit-tracer follows only the top logits)."""
    gather_budget: int = 50_000_000
    """Floats of decoder rows gathered per group and chunk (rows × k × d); above it, a matmul per slot."""


@dataclass(frozen=True)
class Node:
    kind: NodeKind
    site: str
    """"input" / "output" for those kinds; the decomposition site for components."""
    index: int
    layer: int
    """Position in the forward pass: inputs 0, groups 1…, outputs last."""

    @property
    def name(self) -> str:
        return f"x{self.index}" if self.kind == "input" else f"y{self.index}" if self.kind == "output" else f"{self.site}/{self.index}"


@dataclass
class AttributionGraph:
    nodes: list[Node]
    src: Tensor
    """int64 [E] node ids."""
    dst: Tensor
    weight: Tensor
    """float [E] mean |attribution| (≥ 0)."""
    signed: Tensor
    """float [E] mean signed attribution."""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_edges(self) -> int:
        return int(self.src.numel())

    def node_ids(self, kind: NodeKind, site: str | None = None) -> list[int]:
        return [i for i, n in enumerate(self.nodes) if n.kind == kind and (site is None or n.site == site)]

    def normalized(self) -> Tensor:
        """[E] each edge's share of its destination's total incoming weight (in [0, 1])."""
        total = torch.zeros(len(self.nodes), dtype=self.weight.dtype).index_add_(0, self.dst, self.weight)
        return self.weight / total[self.dst].clamp_min(1e-30)

    def prune(self, keep: float, by: Literal["weight", "normalized"] = "normalized") -> AttributionGraph:
        """The strongest fraction `keep` ∈ (0, 1] of edges (ties broken by order)."""
        if not 0 < keep <= 1:
            raise ValueError(f"keep must be in (0, 1], got {keep}")
        score = self.normalized() if by == "normalized" else self.weight
        k = max(1, math.ceil(keep * self.n_edges)) if self.n_edges else 0
        idx = score.topk(k).indices.sort().values if k < self.n_edges else torch.arange(self.n_edges)
        return AttributionGraph(self.nodes, self.src[idx], self.dst[idx], self.weight[idx], self.signed[idx],
                                {**self.meta, "kept_fraction": keep * float(self.meta.get("kept_fraction", 1.0))})

    # --- persistence ------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        """`graph.safetensors` (edges) + `graph.json` (nodes, meta), written atomically."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {"src": self.src.to(torch.int64).contiguous(), "dst": self.dst.to(torch.int64).contiguous(),
                   "weight": self.weight.float().contiguous(), "signed": self.signed.float().contiguous()}
        atomic_write(directory / "graph.safetensors", lambda p: save_file(tensors, str(p)))
        nodes = [{"name": n.name, "kind": n.kind, "site": n.site, "index": n.index, "layer": n.layer} for n in self.nodes]
        atomic_text(directory / "graph.json", json.dumps({"nodes": nodes, "meta": self.meta}, indent=1))

    @classmethod
    def load(cls, directory: str | Path) -> AttributionGraph:
        directory = Path(directory)
        body = json.loads((directory / "graph.json").read_text())
        t = load_file(str(directory / "graph.safetensors"))
        nodes = [Node(n["kind"], n["site"], n["index"], n["layer"]) for n in body["nodes"]]
        return cls(nodes, t["src"], t["dst"], t["weight"], t["signed"], body["meta"])


# --- the two passes ----------------------------------------------------------------------------
def _order(dec: Decomposition, groups: list[Group], x: Tensor) -> list[Group]:
    """Groups in the order the forward pass reaches their reads."""
    seen: list[str] = []
    names = sorted({g.read[0] for g in groups})
    with ExitStack() as stack, torch.no_grad():
        for name in names:
            def hook(*_a: Any, name: str = name) -> None:
                if name not in seen:
                    seen.append(name)
            get_module(dec.target, name)
            stack.callback(get_module(dec.target, name).register_forward_pre_hook(hook).remove)
        dec.target(x[:1])
    return sorted(groups, key=lambda g: seen.index(g.read[0]) if g.read[0] in seen else len(seen))


@torch.no_grad()
def _clean(dec: Decomposition, groups: list[Group], x: Tensor) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor]]:
    """(z, fires, err) per group / write module on the clean pass."""
    mods = write_modules(groups)
    ins = sorted({g.read[0] for g in groups if g.read[1] == "input"})
    outs = sorted({g.read[0] for g in groups if g.read[1] == "output"} | set(mods))
    with torch.no_grad(), capture(dec.target, ins, "input") as a_in, capture(dec.target, outs, "output") as a_out:
        dec.target(x)
    z, fires = {}, {}
    for g in groups:
        a = rows((a_in if g.read[1] == "input" else a_out)[g.read[0]])
        z[g.site], fires[g.site] = g.act(a), g.fires(a)
    return z, fires, exact_writes_err(groups, z, {m: a_out[m] for m in mods})


def module_outputs(groups: list[Group], z: dict[str, Tensor], err: dict[str, Tensor]) -> dict[str, Tensor]:
    """{write module: Σ_g z_g W_g,m + err_m} [rows, d_m]."""
    out = {}
    for m in write_modules(groups):
        new = err[m]
        for g in groups:
            if m in g.writes:
                new = new + z[g.site] @ g.writes[m]
        out[m] = new
    return out


def rewritten_pass(
    dec: Decomposition, groups: list[Group], x: Tensor, outs: dict[str, Tensor]
) -> tuple[Tensor, dict[str, Tensor]]:
    """Run the target with each write module's output replaced by `outs[m]` ([rows, d_m], see
    `module_outputs`); returns (output, {site: pre-activation of each group read on this pass})."""
    pres: dict[str, Tensor] = {}
    by_read: dict[tuple[str, str], list[Group]] = {}
    for g in groups:
        by_read.setdefault(g.read, []).append(g)
    with ExitStack() as stack:
        for (name, where), gs in by_read.items():  # reads first: a read at a write module sees its own output
            module = get_module(dec.target, name)
            if where == "input":
                def pre_hook(_m: Any, args: tuple[Any, ...], gs: list[Group] = gs) -> None:
                    for g in gs:
                        pres[g.site] = g.code(rows(args[0]))
                stack.callback(module.register_forward_pre_hook(pre_hook).remove)
            else:
                def out_hook(_m: Any, _i: Any, out: Tensor, gs: list[Group] = gs) -> None:
                    for g in gs:
                        pres[g.site] = g.code(rows(out))
                stack.callback(module.register_forward_hook(out_hook).remove)
        for m, new in outs.items():
            def replace(_m: Any, _i: Any, out: Tensor, new: Tensor = new) -> Tensor:
                return new.reshape(out.shape)
            stack.callback(get_module(dec.target, m).register_forward_hook(replace).remove)
        y = dec.target(x)
    return y, pres


def _slots(fires: Tensor, mag: Tensor, max_slots: int) -> Tensor:
    """[rows, S] component index of each row's j-th firing component (largest |z| first), −1 past the end."""
    score = torch.where(fires, mag.abs() + 1e-30, torch.zeros(()))
    s = min(max_slots, int(fires.sum(1).max()) if fires.numel() else 0)
    if s == 0:
        return torch.full((fires.shape[0], 0), -1, dtype=torch.long)
    val, idx = score.topk(s, dim=1)
    return torch.where(val > 0, idx, -1)


def _sparse_support(z: Tensor, C: int) -> tuple[Tensor, Tensor] | None:
    """(idx [rows, K], z at idx [rows, K]) of each row's non-zero coefficients, or None when
    rows are too dense for gathering to pay (then attributions are computed densely)."""
    nnz = int((z != 0).sum(1).max()) if z.numel() else 0
    if nnz > C // 8:
        return None
    vals, idx = z.abs().topk(max(nnz, 1), dim=1)
    return idx, z.gather(1, idx) * (vals > 0)


def build_graph(
    dec: Decomposition, x: Tensor, config: GraphConfig | None = None, groups: list[Group] | None = None
) -> AttributionGraph:
    """The attribution graph of `dec` on inputs x [batch, n_features] (see the module docstring).

    The backward passes stop at each write module's output o_m (a leaf); a component's
    attribution is then z_u Σ_m (∂pre_d/∂o_m) · W_m[u], gathered only where z_u ≠ 0."""
    cfg = config or GraphConfig()
    groups = _order(dec, groups if groups is not None else groups_of(dec), x)
    check_multi_site(groups)
    if not x.is_floating_point() or x.dim() < 2:
        raise ValueError(f"inputs must be a float tensor [batch, …, n_features]; got {x.dtype} {tuple(x.shape)}")
    n_in = x.shape[-1]
    with torch.no_grad():
        n_out = dec.target(x[:2]).shape[-1]
    sizes = [n_in, *[g.n for g in groups], n_out]
    out_id = len(sizes) - 1
    acc: dict[tuple[int, int], Tensor] = {}  # (d group, u group) → flat [size_d · size_u] Σ|A|
    sacc: dict[tuple[int, int], Tensor] = {}  # … Σ A
    n_rows = 0
    for start in range(0, x.shape[0], cfg.chunk):
        xc = x[start : start + cfg.chunk]
        B = xc.shape[0]
        z, fires, err = _clean(dec, groups, xc)
        leaves = {m: o.detach().clone().requires_grad_(True) for m, o in module_outputs(groups, z, err).items()}
        x_leaf = xc.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            y, pres = rewritten_pass(dec, groups, x_leaf, leaves)
        y_rows = rows(y)
        T = y_rows.shape[0] // B  # positions per input (1 for feature vectors)
        n_rows += B * T
        support = {g.site: _sparse_support(z[g.site], g.n) for g in groups}
        gathered: dict[str, dict[str, Tensor]] = {}  # W_m's rows at each row's non-zero coefficients
        for g in groups:
            sup = support[g.site]
            if sup is not None and sum(sup[0].numel() * W.shape[1] for W in g.writes.values()) <= cfg.gather_budget:
                gathered[g.site] = {m: W[sup[0]] for m, W in g.writes.items()}  # (rows, K, d_m)
        x_rows = rows(xc)
        out_fire = torch.ones_like(y_rows, dtype=torch.bool)
        if n_out > cfg.max_outputs:
            top = y_rows.detach().abs().topk(cfg.max_outputs, dim=1).indices
            out_fire = torch.zeros_like(out_fire).scatter_(1, top, True)
        targets = [(gi, pres[g.site], fires[g.site], cfg.max_slots) for gi, g in enumerate(groups, start=1)]
        targets.append((out_id, y_rows, out_fire, cfg.max_outputs))
        for di, pre, fire, max_slots in targets:
            slot_idx = _slots(fire, pre.detach(), max_slots)  # (rows, S)
            ups = [(gi, g) for gi, g in enumerate(groups, start=1) if gi < di]
            mods = sorted({m for _, g in ups for m in g.writes})
            for t in range(T):
                row_sel = torch.arange(B) * T + t  # rows of position t
                for j in range(slot_idx.shape[1]):
                    d = slot_idx[row_sel, j]  # (B,)
                    valid = d >= 0
                    if not bool(valid.any()):
                        continue
                    picked = pre[row_sel, d.clamp_min(0)] * valid
                    grads = torch.autograd.grad(picked.sum(), [x_leaf, *[leaves[m] for m in mods]], retain_graph=True,
                                                allow_unused=True)  # fmt: skip
                    G = dict(zip(mods, grads[1:], strict=True))
                    dv = d.clamp_min(0)
                    if grads[0] is not None:
                        _accumulate(acc, sacc, (di, 0), sizes, dv, valid, B, rows(grads[0]), x_rows, None, None)
                    for gi, g in ups:
                        Gs = {m: G[m] for m in g.writes if G.get(m) is not None}
                        if Gs:
                            _accumulate(acc, sacc, (di, gi), sizes, dv, valid, B, Gs, z[g.site], support[g.site],
                                        g.writes, gathered.get(g.site))  # fmt: skip
        del y, pres, leaves, x_leaf
    meta = {"n_inputs": int(x.shape[0]), "sites": [g.site for g in groups]}
    dense = {k: v.view(sizes[k[0]], sizes[k[1]]) for k, v in acc.items()}
    sdense = {k: v.view(sizes[k[0]], sizes[k[1]]) for k, v in sacc.items()}
    return _assemble(groups, sizes, dense, sdense, n_rows, meta)


def _accumulate(
    acc: dict[tuple[int, int], Tensor], sacc: dict[tuple[int, int], Tensor], key: tuple[int, int], sizes: list[int],
    d: Tensor, valid: Tensor, B: int, grad: Tensor | dict[str, Tensor], z: Tensor,
    support: tuple[Tensor, Tensor] | None, writes: dict[str, Tensor] | None,
    gathered: dict[str, Tensor] | None = None,
) -> None:  # fmt: skip
    """Add |A| and A of one slot into the (d group, u group) accumulators.

    grad: ∂pre/∂(upstream leaf) — the input's gradient [rows, n_in] (writes None), or per write
    module ∂pre/∂o_m [rows, d_m]. Rows of one input (sequence positions) all count for its d."""
    n_d, n_u = sizes[key[0]], sizes[key[1]]
    if key not in acc:
        acc[key] = torch.zeros(n_d * n_u)
        sacc[key] = torch.zeros(n_d * n_u)
    T_u = z.shape[0] // B
    d_rows = d.repeat_interleave(T_u)  # (rows,) each upstream row's destination component
    v_rows = valid.repeat_interleave(T_u).to(z.dtype)
    if support is not None and writes is not None and gathered is not None:
        # ∂pre_d/∂z_u only where z_u ≠ 0: (∂pre/∂o_m) · W_m[u] with W_m's rows gathered once per chunk
        assert isinstance(grad, dict)
        idx, zval = support  # (rows, K)
        P = torch.zeros_like(zval)
        for m, gm in grad.items():
            P = P + torch.bmm(gathered[m], gm.reshape(-1, gm.shape[-1], 1)).squeeze(-1)  # (rows, K)
        a = P * zval * v_rows[:, None]
        flat = (d_rows[:, None] * n_u + idx).flatten()
    elif writes is None:
        assert isinstance(grad, Tensor)
        a = grad * z * v_rows[:, None]  # the input: x ∂pre/∂x
        flat = (d_rows[:, None] * n_u + torch.arange(n_u)[None, :]).flatten()
    else:
        assert isinstance(grad, dict)
        P = torch.zeros_like(z)  # (rows, C_u) = ∂pre_d/∂z_u, one BLAS product per module
        for m, gm in grad.items():
            P = P + gm.reshape(-1, gm.shape[-1]) @ writes[m].T
        a = P * z * v_rows[:, None]
        flat = (d_rows[:, None] * n_u + torch.arange(n_u)[None, :]).flatten()
    vals = a.flatten().float()
    acc[key].index_add_(0, flat, vals.abs())
    sacc[key].index_add_(0, flat, vals)


def _assemble(
    groups: list[Group], sizes: list[int], acc: dict[tuple[int, int], Tensor], sacc: dict[tuple[int, int], Tensor],
    n_rows: int, meta: dict[str, Any],
) -> AttributionGraph:  # fmt: skip
    nodes = [Node("input", "input", i, 0) for i in range(sizes[0])]
    offsets = [0]
    for gi, g in enumerate(groups, start=1):
        offsets.append(len(nodes))
        nodes += [Node("component", g.site, c, gi) for c in range(g.n)]
    offsets.append(len(nodes))
    nodes += [Node("output", "output", j, len(groups) + 1) for j in range(sizes[-1])]
    src, dst, w, sw = [], [], [], []
    for (di, ui), m in sorted(acc.items()):
        nz = (m > 0).nonzero()
        dd, uu = nz[:, 0], nz[:, 1]
        src.append(uu + offsets[ui])
        dst.append(dd + offsets[di])
        w.append(m[dd, uu] / max(n_rows, 1))
        sw.append(sacc[(di, ui)][dd, uu] / max(n_rows, 1))
    def cat(ts: list[Tensor], dt: torch.dtype) -> Tensor:
        return torch.cat(ts).to(dt) if ts else torch.zeros(0, dtype=dt)

    return AttributionGraph(nodes, cat(src, torch.long), cat(dst, torch.long), cat(w, torch.float32),
                            cat(sw, torch.float32), meta)  # fmt: skip
