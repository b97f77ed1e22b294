"""Cross-layer transcoders (CLT; Ameisen et al. 2025, "Circuit tracing"): one sparse dictionary
whose layer-l latents read the residual stream at layer l's MLP input and write into the MLP
outputs of layer l *and every later layer*:

    z_l  = TopK(ReLU(W_enc^l a_l + b_enc^l))                  [B, C]   a_l = input of MLP l
    m̂_m  = Σ_{l ≤ m} z_l W_dec^{l→m} + b_dec^m                [B, d]   m_m = output of MLP m
    loss = Σ_m ‖m_m − m̂_m‖²        (per-layer activations scaled to E‖·‖² = 1, as dictionary.py)

A feature computed once and used by several later MLPs needs one latent instead of one per layer
— which is also the CLT's known failure on multi-hop circuits: a layer-0 latent can read a, b, c
and write y = XOR(AND(a, b), c) straight into layer 1's output, skipping the intermediate h
(`boolean-circuits` tests for it). Each latent's decoders are unit-norm jointly over the layers
it writes. `forward_with` replaces every MLP output by the CLT's prediction, computed on the same
pass from the (replaced) residual stream. Registered as `clt-topk`; sites are the MLP outputs.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from mechscope.bounds import BatchSize, Count, Fraction, LearningRate, Steps
from mechscope.config import Config, ConfigError
from mechscope.core import Space, Task, TaskFacts
from mechscope.decompose.base import Decomposition, Mask
from mechscope.decompose.dictionary import lr_lambda
from mechscope.decompose.registry import FitContext, MethodSpec, register
from mechscope.hooks import capture, get_module


class CLTTopKConfig(Config):
    n_latents: Count | None = None
    """Latents per layer; None: twice the task's true directions (rows of `task.onehot()`), as SAEs."""
    k: Count | None = None
    """Latents kept per layer and input; None: the mean number of active input features (≥ 1)."""
    steps: Steps = 1_500
    batch_size: BatchSize = 512
    lr: LearningRate = 2e-3
    warmup_frac: Fraction = 0.05
    decay_frac: Fraction = 0.3


class CrossLayerTranscoder(nn.Module):
    """W_enc [L, C, d_in], b_enc [L, C], W_dec [L, L, C, d_out] (used where l ≤ m), b_dec [L, d_out]."""

    def __init__(self, n_layers: int, d_in: int, d_out: int, n_latents: int, k: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        L, C = n_layers, n_latents
        self.n_layers, self.n_latents, self.k = L, C, k
        W_enc = torch.randn(L, C, d_in, generator=generator)
        self.W_enc = nn.Parameter(W_enc / W_enc.norm(dim=-1, keepdim=True))
        self.b_enc = nn.Parameter(torch.zeros(L, C))
        self.W_dec = nn.Parameter(torch.randn(L, L, C, d_out, generator=generator) * self.causal_mask()[..., None, None])
        self.b_dec = nn.Parameter(torch.zeros(L, d_out))
        self.normalize_()

    def causal_mask(self) -> Tensor:
        """[L, L] 1 where latent layer l may write into MLP m (l ≤ m)."""
        return torch.ones(self.n_layers, self.n_layers).triu()

    def pre_acts(self, layer: int, a: Tensor) -> Tensor:
        return a @ self.W_enc[layer].T + self.b_enc[layer]  # (B, C)

    def encode(self, layer: int, a: Tensor) -> Tensor:
        """[B, C] TopK(ReLU(pre)) of layer `layer`'s latents."""
        pre = self.pre_acts(layer, a)
        vals, idx = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter_(-1, idx, vals.relu())

    def decode(self, layer: int, zs: list[Tensor]) -> Tensor:
        """[B, d_out] the prediction of MLP `layer`'s output from the latents of layers ≤ it."""
        out = self.b_dec[layer].expand(zs[0].shape[0], -1)
        for l_src in range(layer + 1):
            out = out + zs[l_src] @ self.W_dec[l_src, layer]
        return out

    @torch.no_grad()
    def normalize_(self) -> None:
        """Each latent's decoders, over all layers it writes, to unit norm."""
        self.W_dec.mul_(self.causal_mask()[..., None, None])
        norm = self.W_dec.pow(2).sum(dim=(1, 3)).sqrt().clamp_min(1e-8)  # (L, C)
        self.W_dec.div_(norm[:, None, :, None])

    @torch.no_grad()
    def fold_scales(self, s_in: Tensor, s_out: Tensor) -> None:
        """From activations scaled by s_in[l] / s_out[m] back to raw units (latents × s_out... per layer)."""
        self.W_enc.div_(s_in[:, None, None])
        self.W_dec.mul_(s_out[None, :, None, None])
        self.b_dec.mul_(s_out[:, None])


def _activations(target: nn.Module, mlps: list[tuple[str, str]], x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
    ins, outs = [m[0] for m in mlps], [m[1] for m in mlps]
    with torch.no_grad(), capture(target, ins, "input") as a_in, capture(target, outs, "output") as a_out:
        target(x)
    return [a_in[n].reshape(-1, a_in[n].shape[-1]) for n in ins], [a_out[n].reshape(-1, a_out[n].shape[-1]) for n in outs]


def fit(target: nn.Module, task: TaskFacts, config: Config, ctx: FitContext) -> CLTDecomposition:
    assert isinstance(config, CLTTopKConfig)
    mlps = task.mlp_sites()
    if not mlps:
        raise ConfigError(f"task {task.name!r} has no MLP for a cross-layer transcoder")
    probe = task.sample(4_096, ctx.generator(1))
    C = config.n_latents if config.n_latents is not None else 2 * task.onehot().shape[0]
    k = config.k if config.k is not None else max(1, round(float((probe != 0).sum(-1).float().mean())))
    if not 1 <= k <= C:
        raise ConfigError(f"k={k} must be between 1 and n_latents={C}")
    a_in, a_out = _activations(target, mlps, probe)
    s_in = torch.stack([a.pow(2).sum(-1).mean().sqrt().clamp_min(1e-12) for a in a_in])
    s_out = torch.stack([a.pow(2).sum(-1).mean().sqrt().clamp_min(1e-12) for a in a_out])
    clt = CrossLayerTranscoder(len(mlps), a_in[0].shape[1], a_out[0].shape[1], C, k, ctx.generator(100))
    with torch.no_grad():
        for m, a in enumerate(a_out):
            clt.b_dec[m] = (a / s_out[m]).mean(0)
    opt = torch.optim.Adam(clt.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(config.steps, config.warmup_frac, config.decay_frac))
    data_gen = ctx.generator(10)
    for step in range(config.steps):
        xs, ys = _activations(target, mlps, task.sample(config.batch_size, data_gen))
        zs = [clt.encode(li, xs[li] / s_in[li]) for li in range(len(mlps))]
        loss = sum((clt.decode(m, zs) - ys[m] / s_out[m]).pow(2).sum(-1).mean() for m in range(len(mlps)))
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[union-attr]
        opt.step()
        sched.step()
        clt.normalize_()
        if step % 100 == 0 or step == config.steps - 1:
            ctx.progress(step + 1, config.steps)
    clt.fold_scales(s_in, s_out)
    clt.eval()
    return CLTDecomposition(target, mlps, clt)


class CLTDecomposition(Decomposition):
    """Sites are the MLP outputs; site m's components are the latents of layer m."""

    kind = "clt"
    fire_threshold: ClassVar[float] = 0.0
    signed_directions: ClassVar[bool] = True  # latents are ≥ 0: a decoder row's sign is what it writes

    def __init__(self, target: nn.Module, mlps: list[tuple[str, str]], clt: CrossLayerTranscoder) -> None:
        for a, b in mlps:
            get_module(target, a), get_module(target, b)
        super().__init__(target, [b for _, b in mlps])
        self.mlps, self.clt = mlps, clt

    def n_components(self, site: str) -> int:
        return self.clt.n_latents

    def directions(self, site: str, space: Space) -> Tensor | None:
        """Activation space: what each latent of this layer writes into its own layer's MLP output."""
        if space == "parameter":
            return None
        li = self.sites.index(site)
        return self.clt.W_dec[li, li].detach().clone()

    def read_directions(self, site: str) -> Tensor:
        return self.clt.W_enc[self.sites.index(site)].detach().clone()

    @torch.no_grad()
    def activity(self, x: Tensor) -> dict[str, Tensor]:
        a_in, _ = _activations(self.target, self.mlps, x)
        return {s: self.clt.encode(li, a_in[li]) for li, s in enumerate(self.sites)}

    @torch.no_grad()
    def forward_with(self, x: Tensor, mask: Mask) -> Tensor:
        zs: list[Tensor] = []
        with ExitStack() as stack:
            for li, (mlp_in, mlp_out) in enumerate(self.mlps):
                def read(_m: Any, args: tuple[Any, ...], li: int = li) -> None:
                    a = args[0].reshape(-1, args[0].shape[-1])
                    z = self.clt.encode(li, a)
                    m = mask.get(self.sites[li])
                    if m is not None:
                        m = m.to(z.dtype)
                        z = z * (m if m.dim() == 1 or m.shape[0] == z.shape[0] else m.repeat_interleave(z.shape[0] // m.shape[0], 0))
                    zs.append(z)

                def write(_m: Any, _i: Any, out: Tensor, li: int = li) -> Tensor:
                    return self.clt.decode(li, zs).reshape(out.shape)

                stack.callback(get_module(self.target, mlp_in).register_forward_pre_hook(read).remove)
                stack.callback(get_module(self.target, mlp_out).register_forward_hook(write).remove)
            return self.target(x)

    def graph_groups(self) -> list[Any]:
        """The circuit view (mechscope.circuits.groups): layer-l latents read MLP l's input and
        write into every MLP m ≥ l."""
        from mechscope.circuits.groups import Group

        groups = []
        for li, (mlp_in, _) in enumerate(self.mlps):
            def code(a: Tensor, li: int = li) -> Tensor:
                return self.clt.pre_acts(li, a)

            def act(a: Tensor, li: int = li) -> Tensor:
                return self.clt.encode(li, a)

            def fires(a: Tensor, li: int = li) -> Tensor:
                return self.clt.encode(li, a) > 0

            writes = {self.sites[m]: self.clt.W_dec[li, m].detach() for m in range(li, len(self.mlps))}
            groups.append(Group(self.sites[li], (mlp_in, "input"), self.clt.n_latents, code, act, fires, writes))
        return groups

    def state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        c = self.clt
        tensors = {k: v for k, v in c.state_dict().items()}
        return tensors, {"mlps": [list(m) for m in self.mlps], "n_latents": c.n_latents, "k": c.k,
                         "d_in": int(c.W_enc.shape[2]), "d_out": int(c.W_dec.shape[3])}  # fmt: skip

    @classmethod
    def from_state(cls, target: nn.Module, tensors: dict[str, Tensor], config: dict[str, Any]) -> CLTDecomposition:
        mlps = [(a, b) for a, b in config["mlps"]]
        clt = CrossLayerTranscoder(len(mlps), config["d_in"], config["d_out"], config["n_latents"], config["k"])
        clt.load_state_dict(tensors)
        clt.eval()
        return cls(target, mlps, clt)


def applies_to(task: Task) -> str | None:
    if task.kind == "dynamics":
        return "a cross-layer transcoder decomposes feed-forward MLPs, not fixed-point dynamics"
    if not task.mlp_sites():
        return "the target has no MLP to transcode"
    return None


register(MethodSpec("clt-topk", "TopK cross-layer transcoder: layer-l latents write every MLP output ≥ l",
                    CLTTopKConfig, fit, applies_to, "activation"))  # fmt: skip
