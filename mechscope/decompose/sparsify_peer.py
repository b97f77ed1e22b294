"""Peer row: a TopK SAE trained by EleutherAI's sparsify `Trainer`, on the very activations ours see.

sparsify's `Trainer` trains on a Hugging Face model: it runs `model(batch["input_ids"])` and
hooks the named modules. Here the "model" is `_ActivationStream`, whose one module (`site`)
outputs the next batch of mechscope's `ActivationBuffer` for the task's site — the same inputs,
seeds, batch size, steps, width and k (`blind_sizes`) as `sae-topk`. Everything else is sparsify's:
its encoder/decoder init, b_dec from the first batch, FVU loss, dead-latent bookkeeping, optimizer
and its checkpoint, which is read back through `import_dictionary.load_dictionary` (checked
equal to sparsify's own encode/decode on a batch).

Presets: `default` — sparsify's defaults (Signum under schedule-free, lr 5e-3 / √(C / 2¹⁴),
no AuxK); `short` — its Adam option at lr 2e-3 with a 5 % warm-up (its default warm-up of 1,000
steps would be two thirds of a zoo run). Registered only when `sparsify` is installed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mechscope.bounds import Count
from mechscope.config import Config, ConfigError
from mechscope.core import TaskFacts, derive_seed
from mechscope.decompose.activation_buffer import ActivationBuffer, task_source
from mechscope.decompose.dictionary import TopKOptions, default_batch_size
from mechscope.decompose.dictionary_decomposition import DictionaryDecomposition, SiteCoder
from mechscope.decompose.dictionary_sizing import blind_sizes
from mechscope.decompose.import_dictionary import load_dictionary, quiet_import
from mechscope.decompose.registry import FitContext, MethodSpec, register
from mechscope.decompose.sae import applies_to
from mechscope.decompose.saelens_peers import PeerConfig, peer_record


class SparsifyConfig(PeerConfig):
    """preset default: sparsify's own defaults (Signum); short: Adam at lr 2e-3, 5 % warm-up."""

    k: Count | None = None
    """None: the blind estimate `sae-topk` uses."""


class _ActivationStream(nn.Module):
    """Poses as a Hugging Face model for sparsify's Trainer: `site` outputs the next batch."""

    def __init__(self, buffer: ActivationBuffer, d: int) -> None:
        super().__init__()
        self.buffer, self.d = buffer, d
        self.site = nn.Identity()
        self.dummy_inputs = {"input_ids": torch.zeros(1, 1, dtype=torch.long)}

    @property
    def base_model(self) -> nn.Module:
        return self

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def forward(self, input_ids: Tensor, **_: Any) -> Tensor:
        rows = input_ids.shape[0]
        x = self.buffer.next()[0][:rows] if rows > 1 else torch.zeros(rows, self.d)
        return self.site(x[:, None, :])  # (rows, seq = 1, d)


class _Rows(torch.utils.data.Dataset[dict[str, Tensor]]):
    """`n` token ids of 1 — the Trainer only counts and batches them."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"input_ids": torch.ones(1, dtype=torch.long)}


def _silent(bar: Any, *args: Any, **kwargs: Any) -> Any:
    return bar(*args, **{**kwargs, "disable": True})


def train_sparsify(buffer: ActivationBuffer, d: int, n_latents: int, k: int, config: SparsifyConfig,
                   batch: int, seed: int, directory: Path) -> Path:  # fmt: skip
    """Train with sparsify's Trainer; returns the directory of its final checkpoint for `site`."""
    sparsify = quiet_import("sparsify")
    assert sparsify is not None
    import sparsify.trainer as trainer_module

    sae_cfg = sparsify.SparseCoderConfig(num_latents=n_latents, k=k)
    opt: dict[str, Any] = {}
    if config.preset == "short":
        opt = {"optimizer": "adam", "lr": 2e-3, "lr_warmup_steps": max(1, config.steps // 20)}
    cfg = sparsify.TrainConfig(sae_cfg, batch_size=batch, hookpoints=["site"], init_seeds=[seed],
                               log_to_wandb=False, save_every=10**9, save_dir=str(directory), run_name="peer", **opt)  # fmt: skip
    bar, precision = trainer_module.tqdm, torch.get_float32_matmul_precision()
    trainer_module.tqdm = partial(_silent, bar)  # it passes disable= itself
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # it prints its settings to stdout
            trainer = sparsify.Trainer(cfg, _Rows(config.steps * batch), _ActivationStream(buffer, d))
            trainer.fit()
    finally:
        trainer_module.tqdm = bar
        torch.set_float32_matmul_precision(precision)
    found = sorted(p.parent for p in directory.rglob("cfg.json") if (p.parent / "sae.safetensors").exists())
    if len(found) != 1:
        raise RuntimeError(f"sparsify wrote {len(found)} checkpoints under {directory}; expected one")
    return found[0]


def fit(target: nn.Module, task: TaskFacts, config: Config, ctx: FitContext) -> DictionaryDecomposition:
    assert isinstance(config, SparsifyConfig)
    sites = [config.site] if config.site else task.activation_sites()
    if not sites:
        raise ConfigError(f"task {task.name!r} names no activation site; set site=<module name>")
    coders: dict[str, SiteCoder] = {}
    for i, site in enumerate(sites):  # the seeds sae-topk uses: same stream, same blind sizes
        source = task_source(target, task, (site, "output"), (site, "output"), ctx.generator(10 + i))
        opts = TopKOptions(n_latents=config.n_latents, expansion=config.expansion, k=config.k)
        n_latents, k_blind = blind_sizes(opts, source(8_192)[0], ctx.generator(1 + i))
        assert k_blind is not None
        k = int(k_blind)  # TopK's k is a whole number
        d = source(1)[0].shape[1]
        batch = config.batch_size or default_batch_size(d, d)
        buffer = ActivationBuffer(source, max(config.buffer_size, 2 * batch), batch, ctx.generator(100 + i))
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = train_sparsify(
                buffer, d, n_latents, k, config, batch, derive_seed(ctx.seed, 300 + i), Path(tmp)
            )
            coder = load_dictionary(ckpt)  # checked against sparsify's encode/decode
        coder.trained = peer_record(config.n_latents, config.k, n_latents, k, batch, config.steps)
        coders[site] = SiteCoder(coder, (site, "output"))
    return DictionaryDecomposition(target, coders)


if importlib.util.find_spec("sparsify") is not None:
    register(
        MethodSpec(
            "sparsify-topk",
            "TopK SAE trained by EleutherAI sparsify's own Trainer (peer of sae-topk)",
            SparsifyConfig,
            fit,
            applies_to,
            "activation",
            peer=True,
        )
    )
