"""Activation-cache throughput and size on MiniLM: build speed, cached-training speed, disk per 1M.

    HF_HUB_OFFLINE=1 python benchmarks/activation_cache_speed.py [--device cuda]

Measures, for one MiniLM site (d = 384) over the shipped test corpus:
- build: activations written per second (model forward + safetensors shards);
- train: activations consumed per second by TopK-SAE training that reads the memory-mapped cache,
  and the same training on an in-memory tensor as the baseline (reported as a ratio, same run);
- disk: bytes per million activations, float32 and float16.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from mechscope.decompose.sae import SAETopKConfig
from mechscope.real.activation_cache import ActivationCache, build_cache
from mechscope.real.models import OutputModel, load_model, minilm_path, token_windows
from mechscope.real.train import train_cached_coder

SITE = "encoder.layer.1.output"
CORPUS = Path(__file__).parents[1] / "tests" / "data" / "licenses_corpus.txt"


class _InMemory(ActivationCache):
    """The baseline: the same rows held in RAM instead of memory-mapped shards."""

    def __init__(self, rows: torch.Tensor) -> None:
        self.sites, self.n_rows, self._rows = {SITE: rows.shape[1]}, rows.shape[0], rows

    def rows(self, site: str, idx: torch.Tensor) -> torch.Tensor:
        return self._rows[idx]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tokens", type=int, default=16_384)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(1)
    lm = load_model(minilm_path(), args.device)
    ids = token_windows(lm.tokenizer, CORPUS, 32, args.tokens)
    model = OutputModel(lm.model, False)
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in ("float32", "float16"):
            t0 = time.perf_counter()
            build_cache(model, ids, [SITE], Path(tmp) / dtype, shard_seqs=64, batch_seqs=32, dtype=dtype)  # type: ignore[arg-type]
            cache = ActivationCache(Path(tmp) / dtype)
            out[f"build_acts_per_s_{dtype}"] = cache.n_rows / (time.perf_counter() - t0)
            out[f"disk_mb_per_million_{dtype}"] = cache.disk_bytes() / cache.n_rows * 1e6 / 1e6
        cfg = SAETopKConfig(n_latents=1536, k=32, steps=args.steps, batch_size=512)
        cache = ActivationCache(Path(tmp) / "float32")
        for name, source in (("cached", cache), ("in_memory", _InMemory(cache.all(SITE)))):
            t0 = time.perf_counter()
            train_cached_coder(source, SITE, cfg, device=args.device)
            out[f"train_acts_per_s_{name}"] = args.steps * cfg.batch_size / (time.perf_counter() - t0)
    out["train_cached_over_in_memory"] = out["train_acts_per_s_cached"] / out["train_acts_per_s_in_memory"]
    out["n_activations"] = float(ids.numel())
    print(json.dumps({k: round(v, 3) for k, v in out.items()}, indent=1))


if __name__ == "__main__":
    main()
