"""Stochastic Parameter Decomposition (SPD; Bushnaq, Braun, Sharkey et al. 2025).

SPD splits each chosen weight W (d_out × d_in) of a target into C rank-1 subcomponents
P_c = U[:, c] V[c, :] and learns, per subcomponent, a *causal importance* g_c(x) ∈ [0, 1]: how much
the output on input x depends on keeping P_c. Training asks that the parts sum to W (faithfulness),
that the output survive when every part is randomly scaled down to its importance (stochastic
reconstruction, all sites at once and one site at a time), and that as few parts as possible be
important (importance minimality). Clean SPD of a toy model gives one live subcomponent per true
mechanism and lets all the others die.

    method = get_method("spd")
    dec = fit_blind(method, target, task, method.Cfg(), FitContext(seed=0))
    dec.activity(x)["W"]           # [batch, C] causal importance (fires above 0.1)
    dec.directions("W", "parameter")  # [C, d_out·d_in] the rank-1 subcomponents
    dec.forward_with(x, {"W": keep})  # the target with only the kept subcomponents

Which modules: `modules` is a list of fnmatch patterns over the target's module names (default per
task: TMS "W" and "identity"; residual MLP every `layers.*.mlp_in`/`mlp_out`). `nn.Linear`,
`nn.Embedding` and Hugging Face `Conv1D` can be decomposed. A module the target ties to a site
(`target.tied = {"W_T": "W"}`) reuses that site's subcomponents transposed, with the same mask.
The subcomponents, CI MLPs and masked forward are in `spd_components.py`, the losses and gates in
`spd_losses.py`, the per-task settings in `spd_presets.py`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from mechscope.bounds import BatchSize, LearningRate, Steps
from mechscope.config import Config, config_hash
from mechscope.core import GroundTruth, Space, Task, TaskFacts, active_matrix, seeded_generator
from mechscope.decompose import spd_losses as L
from mechscope.decompose.activation_buffer import model_device
from mechscope.decompose.base import Mask, ParameterDecomposition
from mechscope.decompose.registry import FitContext, MethodSpec, register
from mechscope.decompose.spd_components import (
    SiteComponents,
    as_components,
    masked_output,
    masked_sites,
    target_pass,
)
from mechscope.decompose.spd_presets import (
    Preset,
    Site,
    SPDSettings,
    glob_escape,
    select_sites,
    weight_matrix,
)
from mechscope.decompose.spd_presets import task_defaults as spd_task_defaults
from mechscope.files import atomic_write


class SPDConfig(Config):
    """SPD's knobs, each with a concrete default. Where good values differ by task, the one table in
    spd_presets.py (row `preset` × task) supplies them to every field the caller did not set; the
    run path resolves a config once, so config.yaml records exactly what trained.

    The class defaults are the table's generic fast row."""

    preset: Preset = "fast"
    """Which table row: "fast" (ours, the default) or "paper" (METHODS.md's settings)."""
    modules: list[str] = Field(default_factory=lambda: ["*"])
    """fnmatch patterns of module names to decompose (task default: `spd_presets.task_modules`)."""
    steps: Steps = 10_000
    batch_size: BatchSize = 256
    lr: LearningRate = 1e-3
    lr_warmup_frac: float = Field(0.0, ge=0, le=1)
    lr_final_frac: float = Field(0.0, ge=0, le=1)
    lr_components: LearningRate = 1e-3
    """Adam's lr for U and V (the table's, else the resolved `lr`)."""
    C: int = Field(100, ge=1)
    """Subcomponents per decomposed module."""
    ci_hidden: int = Field(16, ge=1)
    faithfulness_coeff: float = Field(1.0, ge=0)
    stochastic_coeff: float = Field(1.0, ge=0)
    layerwise_coeff: float = Field(1.0, ge=0)
    importance_coeff: float = Field(1e-4, ge=0)
    pnorm: float = Field(2.0, gt=0)
    importance_warmup_frac: float = Field(0.0, ge=0, le=1)
    faithfulness_warmup_steps: int = Field(0, ge=0)
    faithfulness_warmup_lr: float = Field(1e-2, gt=0)
    dense_importance: float = Field(1.0, ge=0)
    dense_spares: int = Field(-1, ge=-1)
    """Spare components a dense site keeps beyond its principal axes (−1: all C; see SPDSettings)."""
    subset_groups: int = Field(0, ge=0)
    leaky_alpha: float = Field(0.01, ge=0, le=1)
    fused: bool = True
    layerwise_when_single: bool = True
    init: Literal["random", "data"] = "random"
    init_pool: int = Field(16_384, ge=1)
    init_peel: bool = False
    init_axes: bool = False
    ci_init: Literal["random", "ramp"] = "random"
    skip_zero_rows: bool = True
    threads: int = Field(0, ge=0)
    """torch threads while fitting (0: leave as is)."""
    prefetch: int = Field(16, ge=1)
    output_loss: Literal["auto", "mse", "kl"] = "auto"
    """"auto": KL on a target that outputs logits, else MSE (the task's public `output_kind`)."""
    checkpoint_every: int = Field(2000, ge=1)

    def task_defaults(self, task: Any) -> dict[str, Any]:
        row = spd_task_defaults(task, self.preset)
        if "lr_components" not in row:  # U, V step like the CI MLPs unless the row says otherwise
            row["lr_components"] = self.lr if "lr" in self.model_fields_set else row.get("lr", self.lr)
        return row

    def settings(self) -> SPDSettings:
        """The training loop's view: the SPDSettings fields of this (resolved) config."""
        return SPDSettings(**{k: getattr(self, k) for k in SPDSettings.model_fields})


__all__ = [
    "SPDConfig",
    "SPDDecomposition",
    "Site",
    "SiteComponents",
    "fit",
    "masked_output",
    "masked_sites",
    "select_sites",
    "spd_loss",
    "target_pass",
    "weight_matrix",
]  # fmt: skip


# --- training --------------------------------------------------------------------------------------
def spd_loss(
    target: nn.Module,
    sites: list[Site],
    comps: nn.ModuleList,
    x: Tensor,
    y: Tensor,
    acts: dict[str, Tensor],
    s: SPDSettings,
    importance_coeff: float,
    output_loss: L.OutputLoss,
    gen: torch.Generator,
    rows: slice = slice(None),
    global_batch: int | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The SPD objective on one batch; returns (total, the unweighted terms).

    Data-parallel, x holds rows `rows` of a global batch of `global_batch` examples: the mask noise
    is drawn for the whole global batch and sliced, so example j gets the same mask on any number of
    processes (and the generator stays in step across ranks)."""
    cs = as_components(comps)
    B = x.shape[0]
    B_global = B if global_batch is None else global_batch
    live = L.live_rows(acts) if s.skip_zero_rows else None
    n_zero = 0 if live is None else B - live.numel()
    if live is not None:
        x, y, acts = x[live], y[live], {k: a[live] for k, a in acts.items()}
    pre = {site.name: comp.ci_pre(comp.read(site.kind, acts[site.name])) for site, comp in zip(sites, cs, strict=True)}
    g_mask = {n: L.lower_leaky_hard_sigmoid(p, s.leaky_alpha) for n, p in pre.items()}

    def sample(n: str) -> Tensor:  # r is drawn for all B rows, so skipping rows leaves the stream as is
        r = torch.rand((B_global, *g_mask[n].shape[1:]), generator=gen, device=x.device)[rows]
        return L.stochastic_mask(g_mask[n], r if live is None else r[live])

    # Group 0 masks every site; group 1 + i masks only site i (layerwise), the rest run the target's W
    # (or, with subset_groups N, groups 1 … N each mask a random subset of the sites).
    names = list(pre)
    groups: dict[str, list[Tensor | None]] = {n: [sample(n)] for n in names}
    layerwise = s.layerwise_coeff > 0 and (len(names) > 1 or s.layerwise_when_single)
    if layerwise and s.subset_groups:  # the reference's uniform-k subset routing, one subset per group
        for _ in range(s.subset_groups):
            k = int(torch.randint(1, len(names) + 1, (1,), generator=gen, device=gen.device))
            chosen = set(torch.randperm(len(names), generator=gen, device=gen.device)[:k].tolist())
            for j, n in enumerate(names):
                groups[n].append(sample(n) if j in chosen else None)
    elif layerwise:
        for i in range(len(names)):
            for j, n in enumerate(names):
                groups[n].append(sample(n) if i == j else None)
    G = len(groups[names[0]])
    if x.shape[0] == 0:
        outs: list[Tensor] | tuple[Tensor, ...] = [y] * G
    elif s.fused:
        with masked_sites(target, sites, comps, groups):
            outs = target(x.repeat(G, *([1] * (x.dim() - 1)))).chunk(G)
    else:
        outs = []
        for g in range(G):
            with masked_sites(target, sites, comps, {n: [gm[g]] for n, gm in groups.items()}):
                outs.append(target(x))
    # Every term is a mean over all B examples; skipped rows contribute 0 error and g(0).
    live_frac = x.shape[0] / B
    g_upper = [L.upper_leaky_hard_sigmoid(p, s.leaky_alpha) for p in pre.values()]
    weights = torch.full((x.shape[0],), 1 / B, device=x.device)
    if n_zero:
        # one stand-in row per site for the skipped examples, shaped like a kept row ([1, C], or [1, seq, C])
        zero_rows = [c.ci_pre(torch.zeros(1, *g.shape[1:], device=x.device)) for c, g in zip(cs, g_upper, strict=True)]
        g_upper = [torch.cat([g, L.upper_leaky_hard_sigmoid(z, s.leaky_alpha)]) for g, z in zip(g_upper, zero_rows, strict=True)]
        weights = torch.cat([weights, torch.full((1,), n_zero / B, device=x.device)])
    recon = [L.recon_loss(o, y, output_loss) * live_frac for o in outs]
    terms = {
        "faithfulness": L.faithfulness_loss([weight_matrix(site).detach() for site in sites], [c.weight() for c in cs]),
        "stochastic": recon[0],
        "layerwise": torch.stack(recon[1:]).mean() if layerwise else torch.zeros((), device=x.device),
        "importance": L.importance_minimality_loss(g_upper, s.pnorm, weights, scales=[c.importance_scale for c in cs]),
    }
    total = (
        s.faithfulness_coeff * terms["faithfulness"]
        + s.stochastic_coeff * terms["stochastic"]
        + s.layerwise_coeff * terms["layerwise"]
        + importance_coeff * terms["importance"]
    )
    return total, terms


@contextmanager
def _frozen(target: nn.Module) -> Iterator[None]:
    """The target's own parameters take no gradient while SPD trains (restored afterwards)."""
    flags = [(p, p.requires_grad) for p in target.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in flags:
            p.requires_grad_(f)


@contextmanager
def _threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _faithfulness_warmup(sites: list[Site], comps: nn.ModuleList, s: SPDSettings) -> None:
    """A few steps on faithfulness alone so that U V ≈ W before the masks start to matter."""
    cs = as_components(comps)
    opt = torch.optim.Adam([p for c in cs for p in (c.U, c.V)], lr=s.faithfulness_warmup_lr)
    Ws = [weight_matrix(site).detach() for site in sites]
    for _ in range(s.faithfulness_warmup_steps):
        loss = L.faithfulness_loss(Ws, [c.weight() for c in cs])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def fit(target: nn.Module, task: TaskFacts, config: Config, ctx: FitContext) -> SPDDecomposition:
    """Train SPD on `target` with inputs from `task`; resumes from `ctx.checkpoint_dir` if set.

    The one SPD loop: zoo tasks and real models (`mechscope decompose-model`, whose `task` samples
    token windows) alike, on `ctx.device`, data-parallel under torchrun (`ctx.placement`: every
    rank draws the same global batch and mask noise, trains on its share, gradients averaged; rank
    0 writes the checkpoint)."""
    assert isinstance(config, SPDConfig)
    config = config.resolved(task)  # a no-op for the run path's (already resolved) config
    s = config.settings()
    output_loss: L.OutputLoss = (
        ("kl" if task.output_kind == "logits" else "mse")
        if config.output_loss == "auto"
        else config.output_loss
    )
    device = torch.device(ctx.device)
    target.to(device)
    sites = select_sites(target, config.modules)
    comps = nn.ModuleList()
    init_gen = ctx.generator(1)
    if s.init == "data":
        pool = task.sample(s.init_pool, ctx.generator(4)).to(device)
        _, pool_acts = target_pass(target, sites, pool)
    for site in sites:
        reads, dense, C = None, False, s.C
        if s.init == "data" and pool_acts[site.name].is_floating_point():
            # More recurring directions than input dimensions are superposed, not read vectors: then
            # the site is one dense mechanism (+ID's identity, the residual MLP's mlp_out) and its
            # components start on the input's principal axes, always important.
            a = pool_acts[site.name].cpu()
            reads = L.frequent_directions(a, weight_matrix(site).shape[1])
            dense = reads is None
            if reads is not None and s.init_peel:
                more = L.peeled_directions(a, reads, s.C - reads.shape[0])
                reads = reads if more is None else torch.cat([reads, more])
            if reads is not None and s.init_axes:
                axes = L.axis_directions(a, reads, s.C - reads.shape[0])
                reads = reads if axes is None else torch.cat([reads, axes])
            reads = reads[: s.C] if reads is not None else L.principal_directions(a, s.C)  # most frequent first
            if dense and s.dense_spares >= 0:
                C = min(s.C, reads.shape[0] + s.dense_spares)
        comp = SiteComponents.for_site(site, C, s.ci_hidden)
        comp.init_(weight_matrix(site).detach().cpu(), init_gen, reads, dense, s.dense_importance)
        if s.ci_init == "ramp" and reads is not None and not dense:
            comp.ramp_ci_(reads.shape[0], pool_acts[site.name].cpu())
        comps.append(comp)
    comps.to(device)
    data_gen = ctx.generator(2)
    mask_gen = seeded_generator(ctx.seed, 3, device)
    # U, V may take a smaller step than the CI MLPs: Adam moves every entry by ~lr per step, and a
    # wide input (the residual MLP's d = 1000) has read-vector entries of only ~1/√d_in.
    uv = [p for c in as_components(comps) for p in (c.U, c.V)]
    ci = [p for c in as_components(comps) for p in (c.w1, c.b1, c.w2, c.b2)]
    lr_uv = s.lr if s.lr_components is None else s.lr_components
    opt = torch.optim.Adam([{"params": uv, "base_lr": lr_uv}, {"params": ci, "base_lr": s.lr}], lr=s.lr)

    # Draw `prefetch` steps of data and run the target on them at once (capped at ~64 MB).
    B = s.batch_size
    place = ctx.placement
    share = place.share(B)
    per = share.stop - share.start
    probe_y, probe_acts = target_pass(target, sites, task.sample(2, torch.Generator().manual_seed(0)).to(device))
    per_example = (probe_y.numel() + sum(a.numel() for a in probe_acts.values())) / 2 + task.n_features
    P = max(1, min(s.prefetch, int(16e6 // (B * per_example))))
    every = -(-config.checkpoint_every // P) * P

    ckpt = Path(ctx.checkpoint_dir) / "spd-checkpoint.pt" if ctx.checkpoint_dir else None
    # A checkpoint resumes only the same run: settings, sites, seed, and the same data (the task's
    # name and settings; a real model's TokenTask records its model and a hash of its token windows).
    key = config_hash(s, output_loss, ",".join(site.name for site in sites), ctx.seed, P, task.name, task.config)
    start = 0
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, weights_only=True)
        if state["key"] == key:
            comps.load_state_dict(state["comps"])
            opt.load_state_dict(state["opt"])
            data_gen.set_state(state["data_gen"])
            mask_gen.set_state(state["mask_gen"])
            start = int(state["step"])

    with _frozen(target), _threads(s.threads or torch.get_num_threads()):
        if start == 0 and s.faithfulness_warmup_steps:
            _faithfulness_warmup(sites, comps, s)
        warm = max(1, int(s.importance_warmup_frac * s.steps))
        for chunk0 in range(start, s.steps, P):
            n = min(P, s.steps - chunk0)
            x_all = task.sample(n * B, data_gen)  # the global batches, drawn alike on every rank
            if place.world > 1:  # keep this rank's rows of each of the n global batches
                x_all = x_all.view(n, B, *x_all.shape[1:])[:, share].flatten(0, 1)
            x_all = x_all.to(device)
            y_all, acts_all = target_pass(target, sites, x_all)
            for i in range(n):
                step = chunk0 + i
                for group in opt.param_groups:
                    group["lr"] = L.cosine_lr(step, s.steps, group["base_lr"], s.lr_warmup_frac, s.lr_final_frac)
                rows = slice(i * per, (i + 1) * per)
                acts = {k: a[rows] for k, a in acts_all.items()}
                imp = s.importance_coeff * min(1.0, (step + 1) / warm)
                loss, _ = spd_loss(target, sites, comps, x_all[rows], y_all[rows], acts, s, imp, output_loss, mask_gen,
                                   share, B)  # fmt: skip
                opt.zero_grad(set_to_none=True)
                loss.backward()
                place.sync(uv + ci)
                opt.step()
            done = chunk0 + n
            ctx.progress(done, s.steps)
            if ckpt is not None and place.main and done % every == 0 and done < s.steps:
                ckpt.parent.mkdir(parents=True, exist_ok=True)
                state = {"key": key, "step": done, "comps": comps.state_dict(), "opt": opt.state_dict(),
                         "data_gen": data_gen.get_state(), "mask_gen": mask_gen.get_state()}  # fmt: skip
                _save_checkpoint(ckpt, state)
    ctx.progress(s.steps, s.steps)
    return SPDDecomposition(target, sites, comps, s)


# --- the result ------------------------------------------------------------------------------------
class SPDDecomposition(ParameterDecomposition):
    """Rank-1 subcomponents per site; activity = causal importance; forward_with = masked forward."""

    kind = "spd"
    fire_threshold: ClassVar[float] = 0.1

    def __init__(self, target: nn.Module, sites: list[Site], comps: nn.ModuleList, settings: SPDSettings) -> None:
        super().__init__(target, [s.name for s in sites])
        self.site_info, self.comps, self.settings = sites, comps, settings
        self._typed = as_components(comps)

    def _comp(self, site: str) -> SiteComponents:
        return self._typed[self.sites.index(site)]

    def n_components(self, site: str) -> int:
        return int(self._comp(site).U.shape[1])

    def components(self, site: str) -> Tensor:
        c = self._comp(site)
        return torch.einsum("oc,ci->coi", c.U, c.V).detach()  # (C, d_out, d_in)

    def factors(self, site: str) -> tuple[Tensor, Tensor] | None:
        c = self._comp(site)
        return c.U.detach().T.unsqueeze(-1), c.V.detach().unsqueeze(-1)  # (C, o, 1), (C, i, 1)

    def component_outputs(self, site: str, a: Tensor, transpose: bool = False) -> Tensor:
        c, kind = self._comp(site), self.site_info[self.sites.index(site)].kind
        if transpose:
            return (a @ c.U).unsqueeze(-1) * c.V  # (batch, C, d_in)
        return c.read(kind, a).unsqueeze(-1) * c.U.T  # (batch, C, d_out)

    def directions(self, site: str, space: Space) -> Tensor | None:
        if space == "parameter":
            return self.components(site).flatten(1)
        U = self._comp(site).U.detach().T  # what each subcomponent writes, (C, d_out)
        return U / U.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def activity(self, x: Tensor) -> dict[str, Tensor]:
        _, acts = target_pass(self.target, self.site_info, x)
        with torch.no_grad():
            return {
                s.name: L.hard_sigmoid(c.ci_pre(c.read(s.kind, acts[s.name]))).reshape(-1, c.U.shape[1])
                for s, c in zip(self.site_info, self._typed, strict=True)
            }

    def forward_with(self, x: Tensor, mask: Mask) -> Tensor:
        masks: dict[str, list[Tensor | None]] = {s: [m.float()] for s, m in mask.items() if s in self.sites}
        with masked_sites(self.target, self.site_info, self.comps, masks):
            return self.target(x)

    def extra_metrics(self, task: Task, truth: GroundTruth) -> dict[str, float]:
        """`ci_pattern_errors`: one-hot CI-pattern entries off the ground-truth pattern, summed over sites."""
        onehot = task.onehot()
        fires = self.fires(onehot)
        errors = 0
        for site in self.sites:
            mechs = [m for m in truth.in_space("parameter", site) if m.rule != "never"]
            errors += L.ci_pattern_match(fires[site], active_matrix(mechs, onehot), [m.rank for m in mechs])[0]
        return {"ci_pattern_errors": float(errors)}

    def extra_tensors(self, task: Task, truth: GroundTruth) -> dict[str, Tensor]:
        """`ci_pattern.<site>`: causal importance on the one-hot inputs [n_onehot, C], its columns
        ordered as matched to the true mechanisms (then the rest), ready to draw as a heat map."""
        onehot = task.onehot()
        ci = self.activity(onehot)
        out: dict[str, Tensor] = {}
        for site in self.sites:
            mechs = [m for m in truth.in_space("parameter", site) if m.rule != "never"]
            _, order = L.ci_pattern_match(ci[site] > self.fire_threshold, active_matrix(mechs, onehot), [m.rank for m in mechs])
            out[f"ci_pattern.{site}"] = ci[site][:, order]
        return out

    def state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        tensors = {f"{s}.{k}": v for s, c in zip(self.sites, self.comps, strict=True) for k, v in c.state_dict().items()}
        sizes = {s: self.n_components(s) for s in self.sites}  # a dense site may hold fewer (dense_spares)
        return tensors, {"sites": self.sites, "settings": self.settings.model_dump(), "n_components": sizes}

    @classmethod
    def from_state(cls, target: nn.Module, tensors: dict[str, Tensor], config: dict[str, Any]) -> SPDDecomposition:
        settings = SPDSettings(**config["settings"])
        sites = select_sites(target, [glob_escape(n) for n in config["sites"]])
        comps = nn.ModuleList()
        for site in sites:
            comp = SiteComponents.for_site(site, config.get("n_components", {}).get(site.name, settings.C), settings.ci_hidden)
            comp.load_state_dict({k[len(site.name) + 1 :]: v for k, v in tensors.items() if k.startswith(site.name + ".")})
            comps.append(comp.to(model_device(target)))
        return cls(target, sites, comps, settings)


def _applies(task: Task) -> str | None:
    return None if task.kind == "decomposition" else "SPD decomposes weights against weight-space ground truth"


register(
    MethodSpec(
        name="spd",
        summary="Stochastic Parameter Decomposition: rank-1 weight subcomponents gated by causal importance",
        Cfg=SPDConfig,
        fit=fit,
        applies_to=_applies,
        family="parameter",
    )
)
