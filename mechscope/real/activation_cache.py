"""A disk cache of a real model's activations: sharded safetensors, resumable, read memory-mapped.

Training a dictionary on a real model spends most of its time in the model's forward pass; caching
the activations once lets every SAE/transcoder run (and every hyper-parameter sweep) read them back
at disk speed. Layout of a cache directory:

    manifest.json               {"key", "sites": {site: d}, "dtype", "shard_seqs", "n_seqs", "shards": [...]}
    shard_00000.safetensors     {site: [rows, d]} for sequences [0, shard_seqs), rows = tokens
    shard_00001.safetensors     ...

Shard i always holds sequences [i·shard_seqs, (i+1)·shard_seqs), so an interrupted build resumes
by skipping the shards the manifest lists: the manifest is rewritten atomically (temp + rename)
*after* each shard file is in place, so a shard is either listed and complete or rewritten —
never duplicated, never lost. `key` (model, sites, data, dtype) guards against resuming into a
cache of something else.

    build_cache(model, ids, ["encoder.layer.3.output"], "cache/", shard_seqs=64)
    cache = ActivationCache("cache/")
    source = cache.source("encoder.layer.3.output", torch.Generator().manual_seed(0))
    x, _ = source(1024)       # 1024 rows drawn without replacement from a fresh permutation per epoch
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from mechscope.config import config_hash
from mechscope.core import Progress, no_progress
from mechscope.decompose.activation_buffer import Source
from mechscope.files import atomic_text, atomic_write
from mechscope.hooks import capture
from mechscope.real.models import resolve_sites

CacheDtype = Literal["float32", "float16"]
_TORCH = {"float32": torch.float32, "float16": torch.float16}
_NUMPY = {"F32": np.float32, "F16": np.float16}
MANIFEST = "manifest.json"


def cache_key(model_id: str, sites: list[str], ids: Tensor, dtype: str) -> str:
    """What the cache holds: model, sites, the exact token ids (hashed) and storage dtype."""
    ids_hash = config_hash(str(tuple(ids.shape)), int(ids.sum()), int((ids * torch.arange(ids.numel()).view_as(ids)).sum()))
    return config_hash(model_id, ",".join(sites), ids_hash, dtype)


def build_cache(
    model: nn.Module,
    ids: Tensor,
    sites: list[str],
    directory: str | Path,
    shard_seqs: int = 64,
    batch_seqs: int = 16,
    dtype: CacheDtype = "float32",
    model_id: str = "",
    progress: Progress = no_progress,
    on_shard: Callable[[int], None] | None = None,
) -> Path:
    """Write the outputs of `sites` on token ids [n_seq, seq] into `directory`, resuming if it holds
    part of the same cache. `on_shard(i)` runs after shard i is committed (tests interrupt there)."""
    sites = resolve_sites(model, sites)
    if shard_seqs < 1 or batch_seqs < 1:
        raise ValueError(f"shard_seqs and batch_seqs must be ≥ 1; got shard_seqs={shard_seqs}, batch_seqs={batch_seqs}")
    if dtype not in _TORCH:
        raise ValueError(f"cache dtype {dtype!r} is not supported; allowed: {', '.join(_TORCH)}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    key = cache_key(model_id or type(model).__name__, sites, ids, dtype)
    n_seq = ids.shape[0]
    n_shards = -(-n_seq // shard_seqs)
    manifest = _load_manifest(directory)
    if manifest is not None and (manifest["key"] != key or manifest["shard_seqs"] != shard_seqs):
        raise ValueError(f"{directory} holds a cache of another model/sites/data; choose an empty directory")
    for stray in directory.glob(".shard_*"):  # temp files of an interrupted write
        stray.unlink()
    done = {s["index"] for s in manifest["shards"]} if manifest else set()
    manifest = manifest or {"key": key, "sites": {}, "dtype": dtype, "shard_seqs": shard_seqs,
                            "n_seqs": n_seq, "seq_len": int(ids.shape[1]), "shards": [], "complete": False}  # fmt: skip
    device = next(model.parameters()).device
    progress(len(done), n_shards)
    for i in range(n_shards):
        if i in done:
            continue
        chunk = ids[i * shard_seqs : (i + 1) * shard_seqs]
        parts: dict[str, list[Tensor]] = {s: [] for s in sites}
        with torch.no_grad():
            for b in range(0, chunk.shape[0], batch_seqs):
                with capture(model, sites, "output", stop=True) as acts:
                    model(chunk[b : b + batch_seqs].to(device))
                for s in sites:
                    parts[s].append(acts[s].reshape(-1, acts[s].shape[-1]).to("cpu", _TORCH[dtype]))
        tensors = {s: torch.cat(p).contiguous() for s, p in parts.items()}  # (rows, d) each
        name = f"shard_{i:05d}.safetensors"
        atomic_write(directory / name, lambda p: save_file(tensors, str(p)))  # noqa: B023  (called at once)
        manifest["sites"] = {s: int(t.shape[1]) for s, t in tensors.items()}
        manifest["shards"] = sorted([*manifest["shards"], {"index": i, "file": name, "rows": int(tensors[sites[0]].shape[0])}],
                                    key=lambda s: s["index"])  # fmt: skip
        manifest["complete"] = len(manifest["shards"]) == n_shards
        atomic_text(directory / MANIFEST, json.dumps(manifest, indent=1))
        progress(len(manifest["shards"]), n_shards)
        if on_shard is not None:
            on_shard(i)
    if not manifest["complete"]:  # every shard was already there
        manifest["complete"] = True
        atomic_text(directory / MANIFEST, json.dumps(manifest, indent=1))
    return directory


def _load_manifest(directory: Path) -> dict[str, Any] | None:
    path = directory / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def _memmap(path: Path) -> dict[str, np.memmap]:
    """Memory-map every tensor of a safetensors file without reading it (8-byte header length,
    JSON header, raw little-endian data)."""
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    out: dict[str, np.memmap] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        dt = _NUMPY[info["dtype"]]
        shape = tuple(info["shape"])
        out[name] = np.memmap(path, dtype=dt, mode="r", offset=8 + n + start, shape=shape)
        assert out[name].nbytes == end - start
    return out


class ActivationCache:
    """Read side of a cache: memory-mapped shards, random rows by global index."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        manifest = _load_manifest(self.directory)
        if manifest is None:
            raise FileNotFoundError(f"{directory} is not an activation cache (no {MANIFEST}); build it first")
        if not manifest["complete"]:
            raise ValueError(f"activation cache {directory} is incomplete; run cache-activations again to resume it")
        self.manifest = manifest
        self.sites: dict[str, int] = manifest["sites"]
        self.maps = [_memmap(self.directory / s["file"]) for s in manifest["shards"]]
        rows = torch.tensor([s["rows"] for s in manifest["shards"]])
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), rows.cumsum(0)])  # (n_shards + 1,)
        self.n_rows = int(self.offsets[-1])

    def disk_bytes(self) -> int:
        return sum((self.directory / s["file"]).stat().st_size for s in self.manifest["shards"])

    def _check_site(self, site: str) -> None:
        if site not in self.sites:
            raise KeyError(f"site {site!r} is not in the cache; cached sites: {', '.join(self.sites)}")

    def rows(self, site: str, idx: Tensor) -> Tensor:
        """[len(idx), d] float32 rows at global indices `idx` (any order)."""
        self._check_site(site)
        shard = torch.searchsorted(self.offsets, idx, right=True) - 1  # (n,)
        out = torch.empty(idx.numel(), self.sites[site])
        for s in shard.unique().tolist():
            sel = (shard == s).nonzero().squeeze(1)
            local = (idx[sel] - self.offsets[s]).numpy()
            order = np.argsort(local)  # sorted reads are sequential on disk
            block = torch.from_numpy(np.asarray(self.maps[s][site][local[order]], dtype=np.float32))
            out[sel[torch.from_numpy(order)]] = block
        return out

    def all(self, site: str) -> Tensor:
        return self.rows(site, torch.arange(self.n_rows))

    def source(self, site: str, generator: torch.Generator, write_site: str | None = None) -> Source:
        """A `Source` for `train_coder`: rows in a fresh random order each epoch (x, and y from
        `write_site` for a transcoder, else x itself)."""
        self._check_site(site)
        if write_site is not None:
            self._check_site(write_site)
        perm = torch.randperm(self.n_rows, generator=generator)
        pos = 0

        def take(n: int) -> tuple[Tensor, Tensor]:
            nonlocal perm, pos
            chunks = []
            while n > 0:
                if pos == self.n_rows:
                    perm, pos = torch.randperm(self.n_rows, generator=generator), 0
                k = min(n, self.n_rows - pos)
                chunks.append(perm[pos : pos + k])
                pos, n = pos + k, n - k
            idx = torch.cat(chunks)
            x = self.rows(site, idx)
            return x, (x if write_site is None else self.rows(write_site, idx))

        return take
