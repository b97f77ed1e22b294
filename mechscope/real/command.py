"""Real-model commands: `cache-activations`, `train-sae`, `decompose-model`, `planted`.

Typer command functions that `mechscope/cli.py` registers on the one `mechscope` app (through
`COMMANDS`), so they run under its error guard — also data-parallel, where torchrun launches the
same app:

    mechscope cache-activations --model DIR --dataset corpus.txt --sites 'encoder.layer.3.output' --out cache/
    torchrun --standalone --nproc-per-node 2 -m mechscope.cli train-sae --cache cache/ \
        --site encoder.layer.3.output --out sae/
    torchrun --standalone --nproc-per-node 2 -m mechscope.cli decompose-model --model DIR \
        --dataset corpus.txt --modules 'encoder.layer.3.intermediate.dense' --out spd/

Training is the zoo's: `train-sae` runs `dictionary.train_coder`, `decompose-model` runs
`spd.fit` (see real/spd_model.py). User mistakes (missing model path, unknown site, too little
text, an `--out` that is a file) become one-line `ConfigError`s for the CLI's guard. Progress is
the `Progress` callback every trainer reports through: a bar on a terminal, plain lines otherwise
(rank 0 only).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError

from mechscope.config import ConfigError, check_device
from mechscope.core import Progress, no_progress
from mechscope.decompose.parallel import Placement

if TYPE_CHECKING:
    from torch import Tensor, nn

    from mechscope.core import Task, TaskFacts
    from mechscope.decompose.spd import SPDConfig

Opt = typer.Option


@contextmanager
def _user_errors() -> Iterator[None]:
    """Missing files, bad sites, bad values and unwritable places are the user's: re-raise them as
    one-line ConfigErrors (the CLI's guard prints them, exit 2)."""
    try:
        yield
    except ConfigError:
        raise
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "?"
        raise ConfigError(f"bad value for {key!r}: {first.get('input')!r} ({first['msg']})") from None
    except (FileNotFoundError, KeyError, ValueError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        raise ConfigError(str(msg)) from None
    except OSError as err:  # permissions, a file where a directory should be, a full disk
        raise ConfigError(f"cannot write {err.filename or ''!s}: {err.strerror or err}") from None


def _out_dir(out: Path) -> Path:
    """`--out` must be a directory (created if missing), never an existing file."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {str(out)!r} is an existing file; pass a directory")
    return out


def _device(device: str) -> str:
    return check_device(device)


def _positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a finite number > 0, got {value}")


def _lines(label: str, every_s: float = 30.0) -> Progress:
    """Progress as plain lines on stderr (a log, not a terminal): each 10 %, and at least every
    `every_s` seconds while something moves."""
    last = {"tenth": -1, "t": time.monotonic()}

    def report(done: int, total: int) -> None:
        tenth = 10 * done // max(total, 1)
        now = time.monotonic()
        if tenth > last["tenth"] or now - last["t"] >= every_s:
            last["tenth"], last["t"] = tenth, now
            print(f"mechscope: {label}: {done}/{total}", file=sys.stderr, flush=True)

    return report


@contextmanager
def _drawn(label: str, stage: str, placement: Placement) -> Iterator[Progress]:
    """The CLI's drawing of a `Progress` callback: the `decompose` bar on a terminal, plain lines
    otherwise, nothing on ranks other than 0."""
    if not placement.main:
        yield no_progress
    elif sys.stderr.isatty():
        from mechscope.bench.progress import SingleProgress

        with SingleProgress(label) as bar:
            yield lambda done, total: bar.update(stage, done, total)
    else:
        yield _lines(f"{label} · {stage}")


def _windows(model_path: str, dataset: Path, seq_len: int, tokens: int, device: str) -> Any:
    from mechscope.real.models import load_model, token_windows

    lm = load_model(model_path, device)
    return lm, token_windows(lm.tokenizer, dataset, seq_len, tokens)


def cache_activations(
    model: Annotated[str, Opt(help="local Hugging Face model directory")],
    dataset: Annotated[Path, Opt(help="a UTF-8 text file")],
    sites: Annotated[str, Opt(help="comma-separated module names or globs")],
    out: Annotated[Path, Opt(help="cache directory (resumed if it holds part of this cache)")],
    tokens: Annotated[int, Opt(min=1, help="tokens to cache")] = 65_536,
    seq_len: Annotated[int, Opt(min=2)] = 64,
    shard_seqs: Annotated[int, Opt(min=1, help="sequences per shard")] = 256,
    dtype: Annotated[str, Opt(help="float32 or float16")] = "float32",
    device: Annotated[str, Opt()] = "cpu",
) -> None:
    """Stream activations of SITES over DATASET into sharded safetensors (resumable)."""
    from mechscope.real.activation_cache import ActivationCache, build_cache
    from mechscope.real.models import OutputModel

    with _user_errors():
        _out_dir(out)
        lm, ids = _windows(model, dataset, seq_len, tokens, _device(device))
        with _drawn("caching activations", "shards", Placement()) as progress:
            build_cache(OutputModel(lm.model, lm.has_lm_head), ids, sites.split(","), out, shard_seqs,
                        dtype=dtype, model_id=lm.path, progress=progress)  # type: ignore[arg-type]  # fmt: skip
        cache = ActivationCache(out)
        print(f"{cache.n_rows} activations × {len(cache.sites)} sites in {out} ({cache.disk_bytes() / 1e6:.1f} MB)")


def train_sae(
    cache: Annotated[Path, Opt(help="an activation cache directory")],
    site: Annotated[str, Opt()],
    out: Annotated[Path, Opt()],
    activation: Annotated[str, Opt(help="topk, batchtopk, relu or jumprelu")] = "topk",
    n_latents: Annotated[int, Opt(min=1)] = 1024,
    k: Annotated[int, Opt(min=1, help="latents kept per row (topk, batchtopk)")] = 32,
    steps: Annotated[int, Opt(min=1)] = 2_000,
    batch_size: Annotated[int, Opt(min=1)] = 1_024,
    lr: Annotated[float, Opt()] = 2e-3,
    dead_after_steps: Annotated[int, Opt(min=1, help="steps without firing before AuxK revives a latent")] = 100,
    seed: Annotated[int, Opt(min=0)] = 0,
    device: Annotated[str, Opt()] = "cpu",
    mixed_precision: Annotated[bool, Opt(help="bf16 autocast on GPU")] = False,
) -> None:
    """Train an SAE on cached activations (the zoo's trainer; data-parallel under torchrun)."""
    from safetensors.torch import save_file

    from mechscope.decompose import sae as sae_configs
    from mechscope.decompose.dictionary import DictionaryConfig
    from mechscope.decompose.parallel import join_torchrun
    from mechscope.files import atomic_text, atomic_write
    from mechscope.real.activation_cache import ActivationCache
    from mechscope.real.train import sae_eval, train_cached_coder

    with _user_errors():
        _out_dir(out)
        _positive("--lr", lr)
        c = ActivationCache(cache)
        kinds: dict[str, type[DictionaryConfig]] = {"topk": sae_configs.SAETopKConfig, "batchtopk": sae_configs.SAEBatchTopKConfig,
                 "relu": sae_configs.SAEReLUConfig, "jumprelu": sae_configs.SAEJumpReLUConfig}  # fmt: skip
        if activation not in kinds:
            raise ConfigError(f"unknown --activation {activation!r}; allowed: {', '.join(kinds)}")
        values: dict[str, Any] = {"n_latents": n_latents, "steps": steps, "batch_size": batch_size, "lr": lr,
                                  "dead_after_steps": dead_after_steps}  # fmt: skip
        if activation in ("topk", "batchtopk"):
            values["k"] = k
        cfg = kinds[activation].model_validate(values)
        dev, placement = join_torchrun(_device(device))
        t0 = time.perf_counter()
        with _drawn(f"SAE {site}", "steps", placement) as progress:
            coder = train_cached_coder(c, site, cfg, seed, None, progress, dev, placement, mixed_precision)
        if placement.main:
            state = {k_: v.detach().contiguous().cpu() for k_, v in coder.state_dict().items()}
            atomic_write(out / "sae.safetensors", lambda p: save_file(state, str(p)))
            metrics = {**sae_eval(coder, c.rows(site, _eval_rows(c.n_rows))), "wall_s": time.perf_counter() - t0,
                       "world": placement.world, "site": site, "config": cfg.model_dump()}  # fmt: skip
            atomic_text(out / "metrics.json", json.dumps(metrics, indent=1))
            print(f"{activation} SAE {site}: FVE {metrics['fve']:.3f}, L0 {metrics['l0']:.1f}, dead {metrics['dead_frac']:.3f}")


def _eval_rows(n: int) -> Any:
    import torch

    return torch.arange(0, n, max(1, n // 8_192))


def decompose_model(
    model: Annotated[str, Opt(help="local Hugging Face model directory")],
    dataset: Annotated[Path, Opt(help="a UTF-8 text file")],
    modules: Annotated[str, Opt(help="comma-separated Linear/Conv1D/Embedding names or globs")],
    out: Annotated[Path, Opt()],
    tokens: Annotated[int, Opt(min=1)] = 16_384,
    seq_len: Annotated[int, Opt(min=2)] = 32,
    steps: Annotated[int, Opt(min=1)] = 200,
    batch_size: Annotated[int, Opt(min=1, help="sequences per step")] = 8,
    n_components: Annotated[int, Opt("--C", min=1, help="subcomponents per module")] = 64,
    importance_coeff: Annotated[float, Opt(min=0)] = 1e-4,
    faithfulness_warmup_steps: Annotated[int, Opt(min=0)] = 200,
    lr: Annotated[float | None, Opt(help="default: the SPD preset's")] = None,
    preset: Annotated[str, Opt(help="SPD preset for the settings not given here: fast or paper")] = "fast",
    seed: Annotated[int, Opt(min=0)] = 0,
    device: Annotated[str, Opt()] = "cpu",
) -> None:
    """SPD of MODULES of a real model with the zoo's SPD (KL of next-token outputs with an LM head, MSE otherwise)."""
    from mechscope.decompose.spd import SPDConfig
    from mechscope.real.models import OutputModel
    from mechscope.real.spd_model import TokenTask

    with _user_errors():
        _out_dir(out)
        if lr is not None:
            _positive("--lr", lr)
        fields: dict[str, object] = {
            "preset": preset, "modules": modules.split(","), "steps": steps, "batch_size": batch_size,
            "C": n_components, "importance_coeff": importance_coeff,
            "faithfulness_warmup_steps": faithfulness_warmup_steps,
        }  # fmt: skip
        if lr is not None:  # unset: the preset's table decides
            fields["lr"] = lr
        cfg = SPDConfig.model_validate(fields)
        lm, ids = _windows(model, dataset, seq_len, tokens, _device(device))
        held = max(1, ids.shape[0] // 8)
        if ids.shape[0] - held < 1:
            raise ConfigError(f"--tokens {tokens} gives {ids.shape[0]} window(s) of {seq_len}; need at least 2")
        task = TokenTask(ids[:-held], lm.has_lm_head, lm.path)
        report = run_decompose_model(OutputModel(lm.model, lm.has_lm_head), task, cfg, out, ids[-held:], seed, device)
        if report is not None:
            print(json.dumps(report, indent=1))


def run_decompose_model(
    target: nn.Module, task: Task | TaskFacts, cfg: SPDConfig, out: Path, held_out: Tensor, seed: int = 0,
    device: str = "cpu",
) -> dict[str, Any] | None:  # fmt: skip
    """`decompose-model` after loading: SPD (resumable from `out`) on this process's share, then
    rank 0 saves `out/decomposition` and `out/metrics.json` (the masked-loss report on `held_out`)
    and returns the report (None on other ranks). Any module and task go: the tests run a zoo
    target through it."""
    from mechscope.decompose.parallel import join_torchrun
    from mechscope.files import atomic_text
    from mechscope.real.spd_model import fit_spd, masked_loss_report

    dev, placement = join_torchrun(device)
    t0 = time.perf_counter()
    with _drawn("SPD", "steps", placement) as progress:
        dec = fit_spd(target, task, cfg, seed, dev, placement, progress, checkpoint_dir=str(out))
    if not placement.main:
        return None
    dec.save(out / "decomposition")
    logits = task.output_kind == "logits"
    report = {**masked_loss_report(dec, held_out, logits), "wall_s": time.perf_counter() - t0, "world": placement.world}
    atomic_text(out / "metrics.json", json.dumps(report, indent=1))
    (out / "spd-checkpoint.pt").unlink(missing_ok=True)  # finished: nothing to resume
    return report


def planted(
    model: Annotated[str, Opt(help="local Hugging Face model directory")],
    out: Annotated[Path, Opt()],
    methods: Annotated[str, Opt(help="comma-separated registered methods, or 'all' (every registered method)")] = "all",
    seed: Annotated[int, Opt(min=0)] = 0,
    control: Annotated[bool, Opt(help="also score the randomly re-initialised control")] = True,
) -> None:
    """Plant known rank-1 feature → output rules in a real model and score each method on them."""
    from mechscope.files import atomic_text
    from mechscope.real.planted import run_planted

    with _user_errors():
        _out_dir(out)
        rows = run_planted(model, methods.split(","), seed, control)
        atomic_text(out / "planted.json", json.dumps(rows, indent=1))
        for r in rows:
            print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))


COMMANDS: dict[str, Callable[..., None]] = {
    "cache-activations": cache_activations,
    "train-sae": train_sae,
    "decompose-model": decompose_model,
    "planted": planted,
}
