"""Export a trained dictionary in the format SAELens loads: `cfg.json` + `sae_weights.safetensors`.

    export_saelens(dec, "W", "out/sae-W")              # then, with SAELens installed:
    sae_lens.SAE.load_from_disk("out/sae-W")           # the same encoder/decoder

SAELens stores W_enc as [d_in, d_sae] and W_dec as [d_sae, d_out]; mechscope stores both with one
row per latent, so W_enc is transposed on the way out. Architectures: relu → "standard",
topk → "topk", jumprelu → "jumprelu", batchtopk → "jumprelu" with its single inference threshold
repeated per latent (what BatchTopK is at inference, and how SAELens itself saves BatchTopK).
Transcoders: jumprelu → "jumprelu_transcoder", relu → "transcoder"; SAELens has no TopK
transcoder. The export needs no SAELens at all — only its file format.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from mechscope.decompose.dictionary_decomposition import DictionaryDecomposition
from mechscope.files import atomic_write

_SAE_ARCH = {"relu": "standard", "topk": "topk", "jumprelu": "jumprelu", "batchtopk": "jumprelu"}
_TRANSCODER_ARCH = {"relu": "transcoder", "jumprelu": "jumprelu_transcoder"}


def saelens_files(dec: DictionaryDecomposition, site: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(cfg.json body, tensors) of the dictionary at `site` in SAELens's layout."""
    sc = dec.coders.get(site)
    if sc is None:
        raise KeyError(f"no dictionary at site {site!r}; sites: {', '.join(dec.sites)}")
    c = sc.coder
    is_sae = sc.is_sae(site)
    table = _SAE_ARCH if is_sae else _TRANSCODER_ARCH
    if c.activation not in table:
        kind = "SAE" if is_sae else "transcoder"
        raise ValueError(
            f"SAELens has no {c.activation} {kind}; exportable activations: {', '.join(sorted(table))}"
        )
    tensors = {
        "W_enc": c.W_enc.detach().t().contiguous(),  # (d_in, d_sae)
        "b_enc": c.b_enc.detach().clone(),
        "W_dec": c.W_dec.detach().clone(),  # (d_sae, d_out)
        "b_dec": c.b_dec.detach().clone(),
    }
    if table[c.activation].startswith("jumprelu"):
        tensors["threshold"] = c.threshold.detach().clone()
    cfg: dict[str, Any] = {
        "architecture": table[c.activation],
        "d_in": c.d_in,
        "d_sae": c.n_latents,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": is_sae,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {"hook_name": sc.read[0] if is_sae else f"{sc.read[0]}:{sc.read[1]}"},
    }
    if c.activation == "topk":
        cfg["k"] = c.k
        cfg["rescale_acts_by_decoder_norm"] = False
    if not is_sae:
        cfg["d_out"] = c.d_out
    return cfg, tensors


def export_saelens(dec: DictionaryDecomposition, site: str, directory: str | Path) -> Path:
    """Write the dictionary at `site` as a SAELens directory (atomically); returns the directory."""
    cfg, tensors = saelens_files(dec, site)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, write in (
        ("sae_weights.safetensors", lambda p: save_file(tensors, str(p))),
        ("cfg.json", lambda p: p.write_text(json.dumps(cfg, indent=2))),
    ):
        atomic_write(directory / name, write)
    return directory
