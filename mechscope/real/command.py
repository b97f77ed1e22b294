"""Real-model commands: `cache-activations`, `train-sae`, `decompose-model`, `planted`.

Typer command functions; `mechscope/cli.py` registers them on the main `mechscope` app. They also
run standalone — which is how `torchrun` launches them data-parallel:

    mechscope cache-activations --model DIR --dataset corpus.txt --sites 'encoder.layer.3.output' --out cache/
    torchrun --standalone --nproc-per-node 2 -m mechscope.real.command train-sae --cache cache/ \
        --site encoder.layer.3.output --out sae/
    torchrun --standalone --nproc-per-node 2 -m mechscope.real.command decompose-model --model DIR \
        --dataset corpus.txt --modules 'encoder.layer.3.intermediate.dense' --out spd/

User mistakes (missing model path, unknown site, too little text) are one-line `ConfigError`s.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from mechscope.config import ConfigError

T = TypeVar("T")
Opt = typer.Option


@contextmanager
def _user_errors() -> Iterator[None]:
    """Missing files, bad sites and bad values are the user's: re-raise them as one-line ConfigErrors."""
    try:
        yield
    except ConfigError:
        raise
    except (FileNotFoundError, KeyError, ValueError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        raise ConfigError(str(msg)) from None


def _progress_bar(label: str) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    """A rich progress bar on stderr (rank 0 only under torchrun); returns (update, close)."""
    from rich.progress import Progress as Bar

    from mechscope.real.distributed import world_info

    if world_info()[0] != 0:
        return (lambda done, total: None), (lambda: None)
    bar = Bar(transient=True)
    bar.start()
    task = bar.add_task(label, total=None)

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    return update, bar.stop


def _windows(model_path: str, dataset: Path, seq_len: int, tokens: int, device: str) -> Any:
    from mechscope.real.models import load_model, token_windows

    lm = load_model(model_path, device)
    return lm, token_windows(lm.tokenizer, dataset, seq_len, tokens)


def cache_activations(
    model: Annotated[str, Opt(help="local Hugging Face model directory")],
    dataset: Annotated[Path, Opt(help="a UTF-8 text file")],
    sites: Annotated[str, Opt(help="comma-separated module names or globs")],
    out: Annotated[Path, Opt(help="cache directory (resumed if it holds part of this cache)")],
    tokens: Annotated[int, Opt(help="tokens to cache")] = 65_536,
    seq_len: Annotated[int, Opt()] = 64,
    shard_seqs: Annotated[int, Opt(help="sequences per shard")] = 256,
    dtype: Annotated[str, Opt(help="float32 or float16")] = "float32",
    device: Annotated[str, Opt()] = "cpu",
) -> None:
    """Stream activations of SITES over DATASET into sharded safetensors (resumable)."""
    from mechscope.real.activation_cache import ActivationCache, build_cache
    from mechscope.real.models import OutputModel

    with _user_errors():
        lm, ids = _windows(model, dataset, seq_len, tokens, device)
        update, close = _progress_bar("caching activations")
        try:
            build_cache(OutputModel(lm.model, lm.has_lm_head), ids, sites.split(","), out, shard_seqs,
                        dtype=dtype, model_id=lm.path, progress=update)  # type: ignore[arg-type]  # fmt: skip
        finally:
            close()
        cache = ActivationCache(out)
        print(f"{cache.n_rows} activations × {len(cache.sites)} sites in {out} ({cache.disk_bytes() / 1e6:.1f} MB)")


def train_sae(
    cache: Annotated[Path, Opt(help="an activation cache directory")],
    site: Annotated[str, Opt()],
    out: Annotated[Path, Opt()],
    n_latents: Annotated[int, Opt()] = 1024,
    k: Annotated[int, Opt()] = 32,
    steps: Annotated[int, Opt()] = 2_000,
    batch_size: Annotated[int, Opt()] = 1_024,
    lr: Annotated[float, Opt()] = 2e-3,
    dead_after_steps: Annotated[int, Opt(help="steps without firing before AuxK revives a latent")] = 100,
    seed: Annotated[int, Opt()] = 0,
    device: Annotated[str, Opt()] = "cpu",
    mixed_precision: Annotated[bool, Opt(help="bf16 autocast on GPU")] = False,
) -> None:
    """Train a TopK SAE on cached activations (data-parallel under torchrun)."""
    from safetensors.torch import save_file

    from mechscope.real.activation_cache import ActivationCache
    from mechscope.real.distributed import TopKSAEConfig, init_distributed, train_topk_sae, world_info
    from mechscope.real.train import sae_eval

    with _user_errors():
        c = ActivationCache(cache)
        cfg = TopKSAEConfig(n_latents=n_latents, k=k, steps=steps, batch_size=batch_size, lr=lr,
                            dead_after_steps=dead_after_steps, mixed_precision=mixed_precision)  # fmt: skip
        sync = init_distributed(device)
        rank, world = world_info()
        update, close = _progress_bar("training SAE")
        t0 = time.perf_counter()
        try:
            coder = train_topk_sae(c, site, cfg, seed, rank, world, sync, device, update)
        finally:
            close()
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            save_file({k_: v.detach().contiguous() for k_, v in coder.state_dict().items()}, str(out / "sae.safetensors"))
            metrics = {**sae_eval(coder, c.rows(site, _eval_rows(c.n_rows))), "wall_s": time.perf_counter() - t0,
                       "world": world, "site": site, "config": cfg.model_dump()}  # fmt: skip
            (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
            print(f"SAE {site}: FVE {metrics['fve']:.3f}, L0 {metrics['l0']:.1f}, dead {metrics['dead_frac']:.3f}")


def _eval_rows(n: int) -> Any:
    import torch

    return torch.arange(0, n, max(1, n // 8_192))


def decompose_model(
    model: Annotated[str, Opt(help="local Hugging Face model directory")],
    dataset: Annotated[Path, Opt(help="a UTF-8 text file")],
    modules: Annotated[str, Opt(help="comma-separated Linear/Conv1D/Embedding names or globs")],
    out: Annotated[Path, Opt()],
    tokens: Annotated[int, Opt()] = 16_384,
    seq_len: Annotated[int, Opt()] = 32,
    steps: Annotated[int, Opt()] = 200,
    batch_size: Annotated[int, Opt()] = 8,
    n_components: Annotated[int, Opt("--C")] = 64,
    importance_coeff: Annotated[float, Opt()] = 1e-4,
    faithfulness_warmup_steps: Annotated[int, Opt()] = 200,
    seed: Annotated[int, Opt()] = 0,
    device: Annotated[str, Opt()] = "cpu",
) -> None:
    """SPD of MODULES of a real model (KL of next-token outputs with an LM head, MSE otherwise)."""
    from mechscope.real.distributed import init_distributed, world_info
    from mechscope.real.models import OutputModel
    from mechscope.real.spd_real import RealSPDConfig, fit_spd_real, masked_loss_report

    with _user_errors():
        lm, ids = _windows(model, dataset, seq_len, tokens, device)
        target = OutputModel(lm.model, lm.has_lm_head)
        cfg = RealSPDConfig(modules=modules.split(","), steps=steps, batch_size=batch_size, C=n_components,
                            importance_coeff=importance_coeff, faithfulness_warmup_steps=faithfulness_warmup_steps)  # fmt: skip
        sync = init_distributed(device)
        rank, world = world_info()
        held = max(1, ids.shape[0] // 8)
        update, close = _progress_bar("SPD")
        t0 = time.perf_counter()
        try:
            dec = fit_spd_real(target, ids[:-held], cfg, lm.has_lm_head, seed, rank, world, sync, update)
        finally:
            close()
        if rank == 0:
            dec.save(out / "decomposition")
            report = {**masked_loss_report(dec, ids[-held:], lm.has_lm_head), "wall_s": time.perf_counter() - t0, "world": world}
            (out / "metrics.json").write_text(json.dumps(report, indent=1))
            print(json.dumps(report, indent=1))


def planted(
    model: Annotated[str, Opt(help="local Hugging Face model directory")],
    out: Annotated[Path, Opt()],
    methods: Annotated[str, Opt(help="comma-separated registered methods, or 'all' (every registered method)")] = "all",
    seed: Annotated[int, Opt()] = 0,
    control: Annotated[bool, Opt(help="also score the randomly re-initialised control")] = True,
) -> None:
    """Plant known rank-1 feature → output rules in a real model and score each method on them."""
    from mechscope.real.planted import run_planted

    with _user_errors():
        rows = run_planted(model, methods.split(","), seed, control)
        out.mkdir(parents=True, exist_ok=True)
        (out / "planted.json").write_text(json.dumps(rows, indent=1))
        for r in rows:
            print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))


COMMANDS: dict[str, Callable[..., None]] = {
    "cache-activations": cache_activations,
    "train-sae": train_sae,
    "decompose-model": decompose_model,
    "planted": planted,
}

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)
for _name, _fn in COMMANDS.items():
    app.command(_name)(_fn)


def main() -> None:
    """`python -m mechscope.real.command …` (what torchrun runs): errors as one line, exit 2."""
    try:
        app(standalone_mode=False)
    except ConfigError as err:
        print(f"mechscope: error: {err}", file=sys.stderr)
        sys.exit(2)
    except typer.Abort:
        sys.exit(130)


if __name__ == "__main__":
    main()
