"""Peer rows: the SAE variants trained by SAELens's own code, on the very activations ours see.

Each `saelens-*` method builds SAELens's training SAE (`StandardTrainingSAE`, `TopKTrainingSAE`,
`BatchTopKTrainingSAE`, `JumpReLUTrainingSAE`, `MatryoshkaBatchTopKTrainingSAE`) and trains it
with SAELens's `SAETrainer` on a stream served by mechscope's `ActivationBuffer` — the same site,
the same inputs at the same seed, the same batch size and number of steps (so the same samples
seen) and the same blind width and k (`blind_sizes`) as the matching `sae-*` method. Only the
training recipe is SAELens's. The trained SAE is saved in SAELens's inference format, read back
as a mechscope `SparseCoder` and checked equal to SAELens's own encode/decode on a batch.

Two presets, both documented by SAELens's config classes:

- `default`: every SAELens default (Adam lr 3e-4 constant, no normalisation, decoder init norm
  0.1, L1 coefficient 1, JumpReLU θ₀ 0.01 / bandwidth 0.05 / L0 coefficient 1, TopK AuxK 1);
- `short`: the same with lr 2e-3 — SAELens's defaults are tuned for runs of ~10⁸ samples; at
  the zoo's ~10⁶ its TopK family stops short at lr 3e-4 (issue 13: 0.81–0.84 vs 0.88–1.00).

Registered only when `sae_lens` is installed (the import itself, tens of seconds, waits for a fit).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from mechscope.bounds import BatchSize, Count, LearningRate, Positive, Steps
from mechscope.config import Config, ConfigError
from mechscope.core import TaskFacts, derive_seed
from mechscope.decompose.activation_buffer import ActivationBuffer, task_source
from mechscope.decompose.dictionary import (
    BatchTopKOptions,
    DictionaryConfig,
    ReLUOptions,
    TopKOptions,
    default_batch_size,
)
from mechscope.decompose.dictionary_decomposition import DictionaryDecomposition, SiteCoder
from mechscope.decompose.dictionary_sizing import blind_sizes
from mechscope.decompose.import_dictionary import quiet_import, require_equal, saelens_coder
from mechscope.decompose.registry import FitContext, MethodSpec, register
from mechscope.decompose.sae import SiteOption, applies_to
from mechscope.decompose.sae_matryoshka import matryoshka_widths

Variant = Literal["standard", "topk", "batchtopk", "jumprelu", "matryoshka"]
PRESET_LR = {"default": 3e-4, "short": 2e-3}


class PeerConfig(SiteOption):
    """What mechscope decides for a peer library's trainer — site, sizes, budget, as for its
    `sae-*` twin — and which of the library's presets trains (SAELens here, sparsify_peer.py)."""

    preset: Literal["default", "short"] = "default"
    n_latents: Count | None = None
    """None: expansion × the site's width, as for `sae-*` (`blind_sizes`)."""
    expansion: Positive = 8.0
    steps: Steps = 1_500
    """Same default budget as `sae-*`: steps × batch_size samples seen."""
    batch_size: BatchSize | None = None
    """None: the rule `sae-*` uses (about 256k numbers per batch, 128–1024 rows)."""
    buffer_size: Count = 32_768


class SAELensConfig(PeerConfig):
    """preset default: SAELens's own defaults; short: the same with lr 2e-3 for a short run."""

    lr: LearningRate | None = None
    """None: the preset's learning rate (3e-4 default, 2e-3 short)."""
    k: Positive | None = None
    """TopK family: latents per input (TopK: a whole number; BatchTopK / Matryoshka: a batch mean,
    may be fractional, as SAELens's own `k: float`); None: the blind estimate the `sae-*` twin uses."""


def _training_sae(variant: Variant, d_in: int, n_latents: int, k: float | None) -> Any:
    """SAELens's training SAE for the variant, at its config's defaults apart from the sizes."""
    sae_lens = quiet_import("sae_lens")
    assert sae_lens is not None
    if variant == "standard":
        return sae_lens.StandardTrainingSAE(sae_lens.StandardTrainingSAEConfig(d_in=d_in, d_sae=n_latents))
    if variant == "jumprelu":
        return sae_lens.JumpReLUTrainingSAE(sae_lens.JumpReLUTrainingSAEConfig(d_in=d_in, d_sae=n_latents))
    assert k is not None
    if variant == "topk":
        return sae_lens.TopKTrainingSAE(sae_lens.TopKTrainingSAEConfig(d_in=d_in, d_sae=n_latents, k=int(k)))
    if variant == "batchtopk":
        return sae_lens.BatchTopKTrainingSAE(
            sae_lens.BatchTopKTrainingSAEConfig(d_in=d_in, d_sae=n_latents, k=k)
        )
    widths = matryoshka_widths(n_latents)
    cfg = sae_lens.MatryoshkaBatchTopKTrainingSAEConfig(
        d_in=d_in, d_sae=n_latents, k=k, matryoshka_widths=widths
    )
    return sae_lens.MatryoshkaBatchTopKTrainingSAE(cfg)


@contextlib.contextmanager
def _quiet_trainer() -> Iterator[None]:
    """SAELens's trainer draws a tqdm bar on stderr; mechscope draws its own progress."""
    from functools import partial

    import sae_lens.training.sae_trainer as trainer_module

    bar = trainer_module.tqdm
    trainer_module.tqdm = partial(bar, disable=True)
    try:
        yield
    finally:
        trainer_module.tqdm = bar


def train_saelens(
    variant: Variant, buffer: ActivationBuffer, d_in: int, n_latents: int, k: float | None, config: SAELensConfig,
    batch: int, seed: int,
) -> Any:  # fmt: skip
    """Train SAELens's SAE with SAELens's trainer on `config.steps` batches of `buffer`."""
    quiet_import("sae_lens")
    from sae_lens import SAETrainer
    from sae_lens.config import SAETrainerConfig

    torch.manual_seed(seed)  # SAELens initialises from the global generator
    sae = _training_sae(variant, d_in, n_latents, k)
    lr = config.lr if config.lr is not None else PRESET_LR[config.preset]
    # lr_end = lr / 10 is what SAELens's runner config fills in (used only by decaying schedules)
    trainer_cfg = SAETrainerConfig(
        total_training_samples=config.steps * batch, train_batch_size_samples=batch, lr=lr, lr_end=lr / 10
    )

    def stream() -> Iterator[Tensor]:
        while True:
            yield buffer.next()[0]

    with _quiet_trainer():
        return SAETrainer(trainer_cfg, sae, stream()).fit()


def peer_sizes(
    variant: Variant, config: SAELensConfig, x: Tensor, generator: torch.Generator
) -> tuple[int, float | None]:
    """The blind (n_latents, k) the matching `sae-*` method chooses for the same settings."""
    n, e = config.n_latents, config.expansion
    if variant == "topk" and config.k is not None and config.k != int(config.k):
        raise ConfigError(f"k={config.k} must be a whole number for saelens-topk (BatchTopK's k may be fractional)")
    opts: DictionaryConfig = (
        ReLUOptions(n_latents=n, expansion=e) if variant in ("standard", "jumprelu")
        else BatchTopKOptions(n_latents=n, expansion=e, k=config.k) if variant in ("batchtopk", "matryoshka")
        else TopKOptions(n_latents=n, expansion=e, k=None if config.k is None else int(config.k))
    )  # fmt: skip
    return blind_sizes(opts, x, generator)


def fit_variant(
    variant: Variant, target: nn.Module, task: TaskFacts, config: Config, ctx: FitContext
) -> DictionaryDecomposition:
    """One SAELens SAE per activation site, converted into mechscope's dictionary and checked."""
    sae_lens = quiet_import("sae_lens")
    assert isinstance(config, SAELensConfig) and sae_lens is not None
    sites = [config.site] if config.site else task.activation_sites()
    if not sites:
        raise ConfigError(f"task {task.name!r} names no activation site; set site=<module name>")
    coders: dict[str, SiteCoder] = {}
    for i, site in enumerate(sites):
        # the seeds sae-* uses: the same activation stream, the same blind sizes
        source = task_source(target, task, (site, "output"), (site, "output"), ctx.generator(10 + i))
        n_latents, k = peer_sizes(variant, config, source(8_192)[0], ctx.generator(1 + i))
        d_in = source(1)[0].shape[1]
        batch = config.batch_size or default_batch_size(d_in, d_in)
        buffer = ActivationBuffer(source, max(config.buffer_size, 2 * batch), batch, ctx.generator(100 + i))
        sae = train_saelens(
            variant, buffer, d_in, n_latents, k, config, batch, derive_seed(ctx.seed, 200 + i)
        )
        with tempfile.TemporaryDirectory() as tmp:
            sae.save_inference_model(tmp)  # SAELens's own export (BatchTopK → JumpReLU, TopK norms folded)
            inference = sae_lens.SAE.load_from_disk(tmp)
            body = json.loads((Path(tmp) / "cfg.json").read_text())
            coder = saelens_coder(
                body, load_file(str(Path(tmp) / "sae_weights.safetensors")), f"saelens-{variant}"
            )
        require_equal(
            coder, inference.encode, inference.decode, buffer.sample(512)[0], f"saelens-{variant} at {site!r}"
        )
        coder.trained = peer_record(config.n_latents, config.k, n_latents, k, batch, config.steps)
        coders[site] = SiteCoder(coder, (site, "output"))
    return DictionaryDecomposition(target, coders)


def peer_record(
    n_set: int | None, k_set: float | None, n_latents: int, k: float | None, batch: int, steps: int
) -> dict[str, Any]:
    """A peer's `SparseCoder.trained`: the sizes and budget it ran with (as `train_coder` records)."""
    return {
        "n_latents": n_latents, "n_latents_from": "setting" if n_set is not None else "blind",
        "k": k, "k_from": None if k is None else ("setting" if k_set is not None else "blind"),
        "batch_size": batch, "steps": steps, "samples_seen": steps * batch,
    }  # fmt: skip


def _fit(variant: Variant) -> Any:
    def fit(target: nn.Module, task: TaskFacts, config: Config, ctx: FitContext) -> DictionaryDecomposition:
        return fit_variant(variant, target, task, config, ctx)

    return fit


def available() -> bool:
    return importlib.util.find_spec("sae_lens") is not None


PEERS: dict[str, tuple[Variant, str]] = {
    "saelens-standard": ("standard", "ReLU + L1"),
    "saelens-topk": ("topk", "TopK"),
    "saelens-batchtopk": ("batchtopk", "BatchTopK"),
    "saelens-jumprelu": ("jumprelu", "JumpReLU"),
    "saelens-matryoshka": ("matryoshka", "Matryoshka BatchTopK"),
}
PEER_OF = {
    "saelens-standard": "sae-relu",
    "saelens-topk": "sae-topk",
    "saelens-batchtopk": "sae-batchtopk",
    "saelens-jumprelu": "sae-jumprelu",
    "saelens-matryoshka": "sae-matryoshka",
}
"""Each peer's own mechscope variant (the row it is shown beside)."""

if available():
    for _name, (_variant, _label) in PEERS.items():
        register(
            MethodSpec(
                _name,
                f"{_label} SAE trained by SAELens's own trainer (peer of {PEER_OF[_name]})",
                SAELensConfig,
                _fit(_variant),
                applies_to,
                "activation",
                peer=True,
            )
        )
