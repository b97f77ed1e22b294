"""What a component writes where the truth can see it: its effect at the nearest downstream site
that has true nodes.

The matcher compares a component's write with the true features of the module it writes into. A
component that writes into a module where the truth has no nodes — an SPD subcomponent of an MLP's
input layer writes U[:, c] into the hidden layer, the true features live in the MLP's output —
would otherwise stand for nothing, however cleanly it computes one feature. Its *lifted* write is
measured on the target itself: on each evaluation row where it fires, replace its module's output
by the module's offset (its output on a zero input: a Linear's bias) plus this component's own write
z_c W_c, run the network on, and read the nearest downstream module m' with true nodes, against the
same run with the offset alone:

    Δ_c(row) = out_m'(m(0) + z_c[row] W_c) − out_m'(m(0))

— for a ReLU MLP W_out (ReLU(b + z_c U_c) − ReLU(b)), for a bias-free one exactly W_out ReLU(z_c U_c),
the feature's own write when c is its parameter component (the truth defines features that way:
each alone). The rest of the network (other layers, attention) stays at that row. It is the
component's write *alone*, as a decoder row is a latent's, not the effect of removing it from the
full hidden layer: there the other components and the decomposition's error share its gates
(measured on resid-mlp-2l's layer 1, that version matched 0.75–0.79 of the features the
write-alone one matches at 0.98).
A component's coefficient can take either sign (SPD's V·a), and the two signs can write different
things downstream (ReLU(+U) and ReLU(−U) reach different neurons), so the lifted write is the mean
of Δ over its firing rows of each sign: two candidate directions, [C, 2, d_m']. For a component that
writes linearly into a true site this would give ±W_c — the ordinary match — so components that
already write into a site with true nodes are left as they are.
Nothing here reads the method's name: any group whose write modules hold no true node is lifted.

    lifted = lifted_writes(dec.target, x, groups, truth)   # {site: {m': [C, 2, d]}}
    assign, sim = match(graph, groups, truth, 0.7, lifted)
"""

from __future__ import annotations

from contextlib import ExitStack

import torch
from torch import Tensor, nn

from mechscope.circuits.groups import Group, rows
from mechscope.circuits.truth import CircuitTruth
from mechscope.hooks import capture, get_module, replace_output


def module_order(target: nn.Module, x: Tensor) -> list[str]:
    """Named modules in the order their forward calls end on one input (a module's output is
    complete when its forward returns)."""
    order: list[str] = []
    with ExitStack() as stack:
        for name, module in target.named_modules():
            if name:
                def hook(_m: nn.Module, _i: object, _o: object, name: str = name) -> None:
                    if name not in order:
                        order.append(name)

                stack.callback(module.register_forward_hook(hook).remove)
        with torch.no_grad():
            target(x[:1])
    return order


def downstream_site(module: str, order: list[str], true_sites: set[str]) -> str | None:
    """The first module after `module` in the forward order whose output holds true nodes."""
    if module not in order:
        return None
    return next((m for m in order[order.index(module) + 1:] if m in true_sites), None)


@torch.no_grad()
def lifted_writes(
    target: nn.Module, x: Tensor, groups: list[Group], truth: CircuitTruth, max_rows: int = 64, chunk: int = 4_096,
) -> dict[str, dict[str, Tensor]]:  # fmt: skip
    """{site: {m': [C, 2, d_m']}} for every group that writes only into modules with no true nodes:
    the mean of Δ_c (module docstring) over (at most `max_rows` of, the largest |z|) the rows where
    the component fires with a positive / negative coefficient (zeros where it never does)."""
    true_sites = {n.site for n in truth.nodes if n.kind == "feature" and n.site is not None}
    todo = [g for g in groups if g.writes and not any(m in true_sites for m in g.writes)]
    if not todo:
        return {}
    order = module_order(target, x)
    out: dict[str, dict[str, Tensor]] = {}
    for g in todo:
        for module, W in g.writes.items():
            down = downstream_site(module, order, true_sites)
            if down is None:
                continue
            with capture(target, [g.read[0]], g.read[1]) as seen, capture(target, [down], "output") as own:
                target(x)
            a = rows(seen[g.read[0]])
            z, fires = g.act(a), g.fires(a)
            T = a.shape[0] // x.shape[0]  # positions per input (1 without a sequence axis)
            rest = _offset(target, module, W.shape[-1]).expand(len(z), -1)  # the module's output on a zero input
            pairs_r, pairs_c, pairs_s = [], [], []
            for sign, sel in enumerate((fires & (z > 0), fires & (z < 0))):
                for c in sel.any(0).nonzero().flatten().tolist():
                    r = sel[:, c].nonzero().flatten()
                    r = r[z[r, c].abs().argsort(descending=True)[:max_rows]]
                    pairs_r.append(r)
                    pairs_c.append(torch.full_like(r, c))
                    pairs_s.append(torch.full_like(r, sign))
            if not pairs_r:
                continue
            pr, pc, ps = torch.cat(pairs_r), torch.cat(pairs_c), torch.cat(pairs_s)
            total, count = torch.zeros(g.n, 2, own[down].shape[-1]), torch.zeros(g.n, 2)
            for lo in range(0, len(pr), chunk):
                r, c, s = pr[lo:lo + chunk], pc[lo:lo + chunk], ps[lo:lo + chunk]
                alone = z[r, c, None] * W[c].to(z.dtype)  # [P, d_module]: the component's own write
                delta = _downstream(target, x, module, down, r, T, rest[r] + alone) - _downstream(target, x, module, down, r, T, rest[r])
                total.index_put_((c, s), delta.float(), accumulate=True)
                count.index_put_((c, s), torch.ones(len(r)), accumulate=True)
            out.setdefault(g.site, {})[down] = total / count.clamp_min(1)[..., None]
    return out


def _offset(target: nn.Module, module: str, d: int) -> Tensor:
    """[1, d] the output of `module` on a zero input (its bias; zeros when it cannot be called alone)."""
    m = get_module(target, module)
    d_in = getattr(m, "in_features", None)
    if isinstance(d_in, int):
        return m(torch.zeros(1, d_in)).reshape(1, d).float()
    return torch.zeros(1, d)


def _downstream(target: nn.Module, x: Tensor, module: str, down: str, r: Tensor, T: int, value: Tensor) -> Tensor:
    """[P, d_down]: `down`'s output at row r[i] when `module`'s output there (input r[i] // T,
    position r[i] % T) is replaced by value[i], the rest of the network on that input as it is."""
    b, t, idx = r // T, r % T, torch.arange(len(r))

    def put(_inputs: object, o: Tensor) -> Tensor:
        o = o.clone()
        o.reshape(len(r), T, o.shape[-1])[idx, t] = value.to(o.dtype)
        return o

    with replace_output(target, module, put), capture(target, [down], "output") as hit:
        target(x[b])
    return hit[down].reshape(len(r), T, -1)[idx, t]
