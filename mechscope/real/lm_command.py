"""Causal-LM commands: `train-lm` (the local GPT-2) and `lm-decompose` (SAE / transcoder / SPD on one
site, scored by the next-token loss that survives the splice, with a latent dashboard).

    mechscope train-lm --preset demo                          # trains once (≈ 1–2 CPU-min), then cached
    mechscope lm-decompose --model local:demo --site transformer.h.2 --method sae-topk --k 32 --out runs/sae
    mechscope lm-decompose --model local:demo --site transformer.h.2.mlp --method spd --out runs/spd
    mechscope lm-decompose --model path/to/gpt2 --dataset corpus.txt --site transformer.h.6 ...
    torchrun --standalone --nproc-per-node 2 -m mechscope.cli lm-decompose ... --device cuda --mixed-precision
    mechscope lm-sweep --site transformer.h.0.mlp --method spd --grid importance_coeff=1e-4,1e-3 --backend ray

A run directory holds `config.yaml` (the resolved settings), `metrics.json` (ce_loss_recovered,
kl_spliced, fve, l0, dead_frac, the three CEs, samples_seen, wall_s), `decomposition/`, and
`dashboard/index.html` (one page per firing latent); SPD runs add CE / KL under the worst-case
(PGD) masks of `metrics/pgd.py` (`ce_loss_recovered_pgd`, `kl_spliced_pgd`, `pgd_faithfulness`). The text is split as the local LM was trained
(blocks of 512 tokens, every 10th held out): the decomposition trains on the training blocks and
every metric and the dashboard use the held-out blocks. Progress goes to stderr — a rich bar on a
terminal, plain lines otherwise — and each command ends with a short summary table.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from mechscope.config import ConfigError, config_hash

Opt = typer.Option
DICTIONARY_METHODS = ("sae-topk", "sae-batchtopk", "sae-relu", "sae-jumprelu", "transcoder-topk", "transcoder-jumprelu")
METHODS = (*DICTIONARY_METHODS, "spd")


# --- progress and the summary table -----------------------------------------------------------
class LineProgress:
    """`progress(done, total)` for one stage: a rich bar when stderr is a terminal, otherwise a plain
    line at every 10 % (and at the end) — readable in CI logs and under `nohup`."""

    def __init__(self, label: str, tty: bool | None = None, quiet: bool = False) -> None:
        self.label, self.t0, self.last, self.quiet = label, time.perf_counter(), -1, quiet
        self.tty = sys.stderr.isatty() if tty is None else tty
        self._bar: Any = None
        if self.tty and not quiet:
            from rich.progress import Progress as Bar

            self._bar = Bar(transient=True)
            self._bar.start()
            self._task = self._bar.add_task(label, total=None)

    def __call__(self, done: int, total: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=done, total=total)
            return
        if self.quiet:  # ranks other than 0 of a torchrun job
            return
        tenth = 10 * done // max(1, total)
        if tenth > self.last:
            self.last = tenth
            print(f"{self.label}: {done}/{total} ({100 * done / max(1, total):.0f}%) {time.perf_counter() - self.t0:.1f}s",
                  file=sys.stderr, flush=True)  # fmt: skip

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def summary_table(rows: Sequence[tuple[str, Any]]) -> str:
    """Two aligned columns, floats to 4 significant digits."""
    width = max(len(k) for k, _ in rows)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  -----"]
    for k, v in rows:
        lines.append(f"{k:<{width}}  {v:.4g}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    return "\n".join(lines)


def _user_errors(fn: Callable[[], object]) -> None:
    """Missing files, bad sites and bad values are the user's: one-line ConfigErrors."""
    from pydantic import ValidationError

    try:
        fn()
    except ConfigError:
        raise
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "?"
        raise ConfigError(f"bad value for {key!r}: {first.get('input')!r} ({first['msg']})") from None
    except (FileNotFoundError, KeyError, ValueError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        raise ConfigError(str(msg).splitlines()[0] if str(msg) else type(err).__name__) from None


# --- train-lm ------------------------------------------------------------------------------------
def train_lm_command(
    preset: Annotated[str, Opt(help="demo (the benchmark model) or tiny (the tests')")] = "demo",
    corpus: Annotated[Path | None, Opt(help="UTF-8 text file; default: the licence corpus the repository ships")] = None,
    seed: Annotated[int, Opt()] = 0,
    device: Annotated[str, Opt(help="cpu, cuda, cuda:N (under torchrun: each rank its own GPU)")] = "cpu",
    mixed_precision: Annotated[bool, Opt(help="bf16 autocast on a GPU (cached as a separate model)")] = False,
    steps: Annotated[int | None, Opt(help="optimiser steps (default: the preset's)")] = None,
) -> None:
    """Train (or read from $MECHSCOPE_CACHE) the local GPT-2 and print its directory and held-out CE.
    Data-parallel under `torchrun` (gloo on CPU, NCCL on GPUs): rank 0 stores and prints."""
    from mechscope.config import check_device
    from mechscope.decompose.parallel import join_torchrun
    from mechscope.real.causal_lm import CORPUS, PRESETS, local_lm

    def run() -> None:
        if preset not in PRESETS:
            raise ConfigError(f"unknown LM preset {preset!r}; allowed: {', '.join(PRESETS)}")
        cfg = PRESETS[preset] if steps is None else PRESETS[preset].model_validate({**PRESETS[preset].model_dump(), "steps": steps})
        dev, placement = join_torchrun(check_device(device))
        bar = LineProgress(f"training GPT-2 ({preset})", quiet=not placement.main)
        try:
            lm = local_lm(corpus or CORPUS, cfg, seed, bar, dev, placement, mixed_precision)
        finally:
            bar.close()
        if not placement.main:
            return
        i = lm.info
        print(lm.path)
        print(summary_table([("held_out_ce", i["held_out_ce"]), ("n_params", i["n_params"]),
                             ("train_tokens", i["train_tokens"]), ("held_out_tokens", i["held_out_tokens"]),
                             ("cpu_s (training)", i["cpu_s"]), ("world (training)", i.get("world", 1))]))  # fmt: skip

    _user_errors(run)


# --- lm-decompose --------------------------------------------------------------------------------
def resolve_model(model: str, lm_seed: int, main: bool = True) -> Path:
    """`local:<preset>` → the cached local GPT-2 (trained now if missing); else a model directory."""
    if model.startswith("local:"):
        from mechscope.real.causal_lm import CORPUS, local_lm

        bar = LineProgress(f"training local GPT-2 ({model})", quiet=not main)
        try:
            return local_lm(CORPUS, model.split(":", 1)[1], lm_seed, bar).path
        finally:
            bar.close()
    return Path(model)


def _mlp_input(site: str) -> str:
    """The module whose output feeds an MLP: GPT-2's `h.N.ln_2` for `h.N.mlp`."""
    if site.endswith(".mlp"):
        return site[: -len(".mlp")] + ".ln_2"
    raise ConfigError(f"a transcoder needs --read (the module whose output is the MLP's input) for site {site!r}")


def lm_decompose(
    site: Annotated[str, Opt(help="module to decompose: a block (residual stream), an MLP (transcoder / spd)")],
    out: Annotated[Path, Opt(help="run directory")],
    model: Annotated[str, Opt(help="local:demo, local:tiny, or a local Hugging Face causal-LM directory")] = "local:demo",
    method: Annotated[str, Opt(help=", ".join(METHODS))] = "sae-topk",
    dataset: Annotated[Path | None, Opt(help="UTF-8 text; default: the shipped licence corpus")] = None,
    read: Annotated[str | None, Opt(help="transcoder: module whose output is the MLP's input (default h.N.ln_2)")] = None,
    n_latents: Annotated[int | None, Opt(help="dictionary size [1024]; spd: components per module [256]")] = None,
    k: Annotated[int, Opt(help="latents kept per token (topk / batchtopk)")] = 32,
    steps: Annotated[int | None, Opt(help="[2000]; spd [600]")] = None,
    batch_size: Annotated[int | None, Opt(help="activations per step [1024]; spd: sequences [16]")] = None,
    lr: Annotated[float | None, Opt(help="default: the method's own")] = None,
    tokens: Annotated[int, Opt(help="training tokens at most")] = 1_000_000,
    seq_len: Annotated[int | None, Opt(help="default: min(64, the model's context)")] = None,
    seed: Annotated[int, Opt()] = 0,
    lm_seed: Annotated[int, Opt(help="seed of a local:<preset> model")] = 0,
    importance_coeff: Annotated[float, Opt(help="spd: importance-minimality coefficient")] = 1e-4,
    pnorm: Annotated[float, Opt(help="spd: p of the importance-minimality penalty Σ g^p")] = 2.0,
    pgd_steps: Annotated[int, Opt(help="spd: ascent steps of the worst-case (PGD) masks; 0 = a random admissible mask")] = 4,
    dashboard: Annotated[bool, Opt(help="write dashboard/ (latent pages)")] = True,
    device: Annotated[str, Opt(help="cpu, cuda, cuda:N (under torchrun: each rank its own GPU)")] = "cpu",
    mixed_precision: Annotated[bool, Opt(help="bf16 autocast on a GPU (no effect on CPU)")] = False,
) -> None:
    """Decompose one site of a causal LM; score it by the next-token loss that survives the splice.
    Data-parallel under `torchrun` (gloo on CPU, NCCL on GPUs): rank 0 caches, writes and prints."""
    spd = method == "spd"
    n_latents = n_latents or (256 if spd else 1_024)
    steps = steps or (600 if spd else 2_000)
    batch_size = batch_size or (16 if spd else 1_024)
    run = Run(site, out, model, method, dataset, read, n_latents, k, steps, batch_size, lr, tokens, seq_len, seed, lm_seed,
              importance_coeff, pnorm, pgd_steps, dashboard, device, mixed_precision)  # fmt: skip
    _user_errors(lambda: _lm_decompose(run))


@dataclass(frozen=True)
class Run:
    """One `lm-decompose` run's settings (what `lm-sweep` varies)."""

    site: str
    out: Path
    model: str = "local:demo"
    method: str = "sae-topk"
    dataset: Path | None = None
    read: str | None = None
    n_latents: int = 1_024
    k: int = 32
    steps: int = 2_000
    batch_size: int = 1_024
    lr: float | None = None
    tokens: int = 1_000_000
    seq_len: int | None = None
    seed: int = 0
    lm_seed: int = 0
    importance_coeff: float = 1e-4
    pnorm: float = 2.0
    pgd_steps: int = 4
    dashboard: bool = True
    device: str = "cpu"
    mixed_precision: bool = False


def _lm_decompose(r: Run) -> dict[str, Any] | None:
    """The run; returns its metrics on rank 0 (None on other ranks)."""
    import yaml

    from mechscope.config import check_device
    from mechscope.decompose.parallel import join_torchrun
    from mechscope.hooks import get_module
    from mechscope.metrics.pgd import check_pgd_steps
    from mechscope.real.causal_lm import CORPUS, corpus_windows
    from mechscope.real.models import OutputModel, load_model

    site, out, method, seed = r.site, r.out, r.method, r.seed
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; allowed: {', '.join(METHODS)}")
    check_pgd_steps(r.pgd_steps)
    if not r.pnorm > 0:
        raise ConfigError(f"--pnorm must be > 0, got {r.pnorm}")
    dev, placement = join_torchrun(check_device(r.device))
    if r.model.startswith("local:"):  # a bad preset or site fails now, not after training the model
        from mechscope.real.causal_lm import PRESETS, check_site

        preset = r.model.split(":", 1)[1]
        if preset not in PRESETS:
            raise ConfigError(f"unknown LM preset {preset!r}; allowed: {', '.join(PRESETS)}")
        check_site(preset, r.site)
        if r.method.startswith("transcoder") and r.read:
            check_site(preset, r.read)
    if r.dataset is not None:
        from mechscope.real.causal_lm import _read_corpus

        _read_corpus(r.dataset)  # a missing or empty text file fails before any model loads
    t0 = time.perf_counter()
    lm = load_model(resolve_model(r.model, r.lm_seed, placement.main), dev)
    if not lm.has_lm_head:
        raise ConfigError(f"ce_loss_recovered needs a causal LM with an LM head; {lm.path} has none")
    target = OutputModel(lm.model, True)
    get_module(target, site)
    n_pos = int(getattr(lm.model.config, "n_positions", 64) or 64)
    T = r.seq_len or min(64, n_pos)
    if n_pos < T:
        raise ConfigError(f"--seq-len {T} exceeds the model's context of {n_pos} tokens")
    text = r.dataset or CORPUS
    train_ids = corpus_windows(lm.tokenizer, text, T, r.tokens, split="train").to(dev)
    held = corpus_windows(lm.tokenizer, text, T, split="held_out").to(dev)
    settings = {"model": str(lm.path), "dataset": str(text), "site": site, "method": method, "n_latents": r.n_latents,
                "k": r.k, "steps": r.steps, "batch_size": r.batch_size, "lr": r.lr, "tokens": int(train_ids.numel()),
                "seq_len": T, "seed": seed, "lm_seed": r.lm_seed, "importance_coeff": r.importance_coeff, "read": r.read}  # fmt: skip
    if method == "spd":
        settings.update({"pnorm": r.pnorm, "pgd_steps": r.pgd_steps})
    if r.mixed_precision:
        settings["mixed_precision"] = True  # bf16 changes what trains; device and world size do not
    fitted = (_fit_spd if method == "spd" else _fit_dictionary)(r, target, train_ids, held, str(lm.path), dev, placement)
    if fitted is None:
        return None
    dec, metrics, samples = fitted
    metrics = {"task": f"lm:{Path(lm.path).name}", "method": method, "seed": seed, **metrics, "samples_seen": samples,
               "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time(), "device": dev,
               "world": placement.world, "config_hash": config_hash(settings)}  # fmt: skip
    from mechscope.files import atomic_text

    dec.save(out / "decomposition")
    atomic_text(out / "config.yaml", yaml.safe_dump({**settings, "config_hash": metrics["config_hash"]}, sort_keys=False))
    atomic_text(out / "metrics.json", json.dumps(metrics, indent=1, default=str))
    index = None
    if r.dashboard:
        index = _write_dashboards(dec, held, lm, method, metrics, out / "dashboard")
    print(f"{method} on {site} of {Path(lm.path).name}: {out / 'metrics.json'}")
    print(summary_table([(key, metrics[key]) for key in SUMMARY_KEYS if key in metrics]))
    if index is not None:
        print(f"dashboard: {index}")
    return metrics


SUMMARY_KEYS = ("ce_loss_recovered", "kl_spliced", "ce_loss_recovered_pgd", "kl_spliced_pgd", "fve", "l0", "dead_frac",
                "ce_clean", "ce_spliced", "ce_zero_ablated", "samples_seen", "wall_s")  # fmt: skip


Fitted = tuple[Any, dict[str, Any], int] | None
"""(decomposition, metrics, samples seen) on rank 0; None on the other ranks of a torchrun job."""


def _fit_dictionary(r: Run, target: Any, train_ids: Any, held: Any, model_id: str, dev: str, placement: Any) -> Fitted:
    from mechscope.decompose import sae as sae_mod
    from mechscope.decompose.parallel import precision
    from mechscope.real.activation_cache import ActivationCache, build_cache
    from mechscope.real.splice import evaluate_dictionary
    from mechscope.real.train import train_sae_cached

    family, variant = r.method.split("-", 1)
    configs: dict[str, Any] = {"topk": sae_mod.SAETopKConfig, "batchtopk": sae_mod.SAEBatchTopKConfig,
                               "relu": sae_mod.SAEReLUConfig, "jumprelu": sae_mod.SAEJumpReLUConfig}  # fmt: skip
    fields: dict[str, Any] = {"n_latents": r.n_latents, "steps": r.steps, "batch_size": r.batch_size}
    if variant in ("topk", "batchtopk"):
        fields["k"] = r.k
    if r.lr is not None:
        fields["lr"] = r.lr
    config = configs[variant].model_validate(fields)
    write = None
    read_site = r.site
    if family == "transcoder":
        read_site, write = r.read or _mlp_input(r.site), r.site
    sites = [read_site] + ([write] if write else [])
    if placement.main:  # one process writes the cache; the others wait for it
        bar = LineProgress("caching activations")
        try:
            with precision(dev, False):
                build_cache(target, train_ids, sites, r.out / "activations", shard_seqs=128, model_id=model_id,
                            progress=bar)  # fmt: skip
        finally:
            bar.close()
    _barrier(placement)
    cache = ActivationCache(r.out / "activations")
    bar = LineProgress(f"training {r.method}", quiet=not placement.main)
    try:
        dec = train_sae_cached(target, cache, read_site, config, seed=r.seed, write_site=write, progress=bar, device=dev,
                               placement=placement, mixed_precision=r.mixed_precision)  # fmt: skip
    finally:
        bar.close()
    if not placement.main:
        return None
    bar = LineProgress("splice metrics")
    metrics = evaluate_dictionary(dec, held, write or r.site)
    bar(1, 1)
    bar.close()
    return dec, metrics, r.steps * r.batch_size


def _barrier(placement: Any) -> None:
    if placement.world > 1:
        import torch.distributed as dist

        dist.barrier()


def _fit_spd(r: Run, target: Any, train_ids: Any, held: Any, model_id: str, dev: str, placement: Any) -> Fitted:
    from mechscope.decompose.parallel import precision
    from mechscope.decompose.spd import SPDConfig
    from mechscope.real.spd_model import TokenTask, fit_spd
    from mechscope.real.splice import evaluate_spd
    from mechscope.real.splice_pgd import pgd_splice

    modules = [n for n, m in target.named_modules() if n.startswith(f"{r.site}.") and type(m).__name__ in ("Linear", "Conv1D")]
    if not modules:
        raise ConfigError(f"site {r.site!r} holds no Linear / Conv1D module for SPD (pass an MLP, e.g. transformer.h.2.mlp)")
    fields: dict[str, Any] = {"modules": modules, "steps": r.steps, "batch_size": r.batch_size, "C": r.n_latents,
                              "importance_coeff": r.importance_coeff, "pnorm": r.pnorm}  # fmt: skip
    if r.lr is not None:
        fields["lr"] = r.lr
    bar = LineProgress("training spd", quiet=not placement.main)
    try:
        config = SPDConfig.model_validate(fields)
        with precision(dev, r.mixed_precision):
            dec = fit_spd(target, TokenTask(train_ids, True, model_id), config, r.seed, dev, placement, bar)
    finally:
        bar.close()
    if not placement.main:
        return None
    bar = LineProgress("splice metrics (CI and PGD masks)")
    metrics = evaluate_spd(dec, held, r.site)
    metrics.update(pgd_splice(dec, held, metrics["ce_clean"], metrics["ce_zero_ablated"], r.pgd_steps))
    bar(1, 1)
    bar.close()
    return dec, metrics, r.steps * r.batch_size * int(train_ids.shape[1])


def _write_dashboards(dec: Any, held: Any, lm: Any, method: str, metrics: dict[str, Any], directory: Path) -> Path:
    """dashboard/index.html for a one-site run; dashboard/<site>/index.html per site (SPD on an MLP's
    two weights) with a top-level index linking them."""
    from mechscope.files import atomic_text
    from mechscope.real.latents import dashboard_data, unembedding
    from mechscope.report.dashboard import write_dashboard

    unembed = unembedding(lm.model)
    bar = LineProgress("dashboard")
    pages = []
    for i, s in enumerate(dec.sites):
        data = dashboard_data(dec, held, lm.tokenizer, s, method, metrics, unembed=unembed)
        pages.append(write_dashboard(data, directory if len(dec.sites) == 1 else directory / s))
        bar(i + 1, len(dec.sites))
    bar.close()
    if len(pages) == 1:
        return pages[0]
    links = "".join(f"<li><a href='{p.parent.name}/index.html'>{p.parent.name}</a></li>" for p in pages)
    atomic_text(directory / "index.html", f"<!doctype html><meta charset='utf-8'><title>{method}</title>"
                                          f"<h1>{method}: one dashboard per decomposed module</h1><ul>{links}</ul>")  # fmt: skip
    return directory / "index.html"


# lm-sweep builds on this module's Run and _lm_decompose (every name above is defined by now).
from mechscope.real.lm_sweep import lm_sweep  # noqa: E402

COMMANDS: dict[str, Callable[..., None]] = {"train-lm": train_lm_command, "lm-decompose": lm_decompose,
                                            "lm-sweep": lm_sweep}  # fmt: skip

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)
for _name, _fn in COMMANDS.items():
    app.command(_name)(_fn)


def main() -> None:
    """`python -m mechscope.real.lm_command …`: errors as one line, exit 2."""
    try:
        app(standalone_mode=False)
    except ConfigError as err:
        print(f"mechscope: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
