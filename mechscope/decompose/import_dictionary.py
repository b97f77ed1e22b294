"""Dictionaries trained elsewhere, as mechscope `SparseCoder`s: SAELens directories, sparsify
checkpoints, mechscope run directories.

    coder = load_dictionary("out/sae-W")          # cfg.json + sae_weights.safetensors (SAELens)
    coder = load_dictionary("ckpt/layers.0")      # cfg.json + sae.safetensors (sparsify)

Both formats are read from their files alone (no library import): SAELens stores W_enc as
[d_in, d_sae] and applies z = act(W_enc(x − b_dec·apply_b_dec_to_input) + b_enc); sparsify stores
`encoder.weight` [C, d_in] and always subtracts b_dec (SAEs) before a TopK. Where the library *is*
installed, `check_against_saelens` / `check_against_sparsify` compare encodings and reconstructions
of the converted coder with the library's own on a batch (≤ 1e-5), so a conversion is never
trusted unchecked.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor

from mechscope.decompose.dictionary import Activation, SparseCoder

TOLERANCE = 1e-5
"""Largest |difference| allowed between a converted coder and the library's own, relative to the
batch's largest activation (float32 sums in another order differ by ~1e-7)."""

_SAELENS_SAE: dict[str, Activation] = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu"}
_SAELENS_TRANSCODER: dict[str, Activation] = {"transcoder": "relu", "jumprelu_transcoder": "jumprelu"}


class DictionaryFormatError(ValueError):
    """A path that is not a dictionary mechscope can read (one line, naming the path)."""


def saelens_coder(cfg: dict[str, Any], tensors: dict[str, Tensor], where: str = "SAELens SAE") -> SparseCoder:
    """A SAELens inference SAE (its cfg.json body and weights) as a SparseCoder."""
    arch = cfg.get("architecture", "standard")
    table = {**_SAELENS_SAE, **_SAELENS_TRANSCODER}
    if arch not in table:
        raise DictionaryFormatError(
            f"{where}: architecture {arch!r} is not supported; supported: {', '.join(table)}"
        )
    norm = cfg.get("normalize_activations", "none")
    if norm not in ("none", None):
        raise DictionaryFormatError(
            f"{where}: normalize_activations={norm!r} is not supported (fold it first); supported: none"
        )
    W_enc = tensors["W_enc"].float().t().contiguous()  # (C, d_in)
    b_enc, W_dec, b_dec = tensors["b_enc"].float(), tensors["W_dec"].float(), tensors["b_dec"].float()
    C, d_in = W_enc.shape
    activation = table[arch]
    if activation == "topk" and cfg.get("rescale_acts_by_decoder_norm", False):
        # z ranks and scales pre·‖W_dec[c]‖, and decodes z/‖W_dec[c]‖: fold the norms into the weights
        norms = W_dec.norm(dim=1)
        W_enc, b_enc, W_dec = W_enc * norms[:, None], b_enc * norms, W_dec / norms[:, None]
    sae = bool(cfg.get("apply_b_dec_to_input", arch in _SAELENS_SAE)) and arch in _SAELENS_SAE
    coder = SparseCoder(d_in, W_dec.shape[1], C, activation, cfg.get("k"), sae)
    with torch.no_grad():
        coder.W_enc.copy_(W_enc)
        coder.b_enc.copy_(b_enc)
        coder.W_dec.copy_(W_dec)
        coder.b_dec.copy_(b_dec)
        if activation == "jumprelu":  # SAELens: ReLU(pre)·H(pre − θ) = pre·H(pre − θ) for θ ≥ 0
            coder.log_threshold.copy_(tensors["threshold"].float().clamp_min(1e-30).log())
    return coder.eval()


def sparsify_coder(
    cfg: dict[str, Any], tensors: dict[str, Tensor], where: str = "sparsify checkpoint"
) -> SparseCoder:
    """A sparsify SparseCoder checkpoint (cfg.json body and sae.safetensors) as a SparseCoder."""
    if cfg.get("activation", "topk") != "topk":
        raise DictionaryFormatError(
            f"{where}: activation {cfg.get('activation')!r} is not supported; supported: topk"
        )
    if cfg.get("skip_connection") or "W_skip" in tensors:
        raise DictionaryFormatError(f"{where}: skip connections are not supported")
    W_enc, b_enc = tensors["encoder.weight"].float(), tensors["encoder.bias"].float()  # (C, d_in), (C,)
    W_dec, b_dec = tensors["W_dec"].float(), tensors["b_dec"].float()
    transcode = bool(cfg.get("transcode", False))
    coder = SparseCoder(W_enc.shape[1], W_dec.shape[1], W_enc.shape[0], "topk", int(cfg["k"]), not transcode)
    with torch.no_grad():
        coder.W_enc.copy_(W_enc)
        coder.b_enc.copy_(b_enc)
        coder.W_dec.copy_(W_dec)
        coder.b_dec.copy_(b_dec)
    return coder.eval()


def dictionary_format(path: str | Path) -> str:
    """ "saelens", "sparsify" or "mechscope" (a run dir or its decomposition/); raises otherwise."""
    path = Path(path)
    if (path / "decomposition" / "decomposition.json").exists() or (path / "decomposition.json").exists():
        return "mechscope"
    if (path / "cfg.json").exists() and (path / "sae_weights.safetensors").exists():
        return "saelens"
    if (path / "cfg.json").exists() and (path / "sae.safetensors").exists():
        return "sparsify"
    raise DictionaryFormatError(
        f"{path} is not a dictionary: expected a SAELens directory (cfg.json + sae_weights.safetensors), "
        "a sparsify checkpoint (cfg.json + sae.safetensors) or a mechscope run directory (decomposition/)"
    )


def load_dictionary(path: str | Path) -> SparseCoder:
    """The SAELens or sparsify dictionary at `path` as a SparseCoder (checked against the library
    when it is installed)."""
    path = Path(path)
    kind = dictionary_format(path)
    if kind == "mechscope":
        raise DictionaryFormatError(f"{path} is a mechscope run directory: load it with load_decomposition")
    try:
        cfg = json.loads((path / "cfg.json").read_text())
        tensors = load_file(
            str(path / ("sae_weights.safetensors" if kind == "saelens" else "sae.safetensors"))
        )
    except (OSError, ValueError) as err:
        raise DictionaryFormatError(
            f"{path}: cannot read the dictionary ({type(err).__name__}: {err})"
        ) from err
    try:
        coder = (
            saelens_coder(cfg, tensors, str(path))
            if kind == "saelens"
            else sparsify_coder(cfg, tensors, str(path))
        )
    except KeyError as err:
        raise DictionaryFormatError(f"{path}: the weights lack tensor {err.args[0]!r}") from err
    check = check_against_saelens if kind == "saelens" else check_against_sparsify
    check(coder, path)
    return coder


def max_difference(ours: tuple[Tensor, Tensor], theirs: tuple[Tensor, Tensor]) -> float:
    """Largest |difference| of (encodings, reconstructions), relative to their largest entry."""
    return max(
        float((a - b).abs().max() / b.abs().max().clamp_min(1e-12)) for a, b in zip(ours, theirs, strict=True)
    )


def require_equal(coder: SparseCoder, encode: Any, decode: Any, x: Tensor, where: str) -> None:
    """Raise unless the coder's and the library's encodings and reconstructions of x agree."""
    with torch.no_grad():
        z_lib = encode(x)
        ours = (coder.encode(x), coder(x))
        theirs = (z_lib, decode(z_lib))
    diff = max_difference(ours, theirs)
    if not diff <= TOLERANCE:
        raise DictionaryFormatError(
            f"{where}: the converted dictionary differs from the library's by {diff:.2e} (> {TOLERANCE:g})"
        )


def probe_batch(coder: SparseCoder, n: int = 256, seed: int = 0) -> Tensor:
    """A batch that exercises the coder: its own decoder rows mixed and scaled, plus noise."""
    g = torch.Generator().manual_seed(seed)
    if coder.d_in == coder.d_out:
        mix = torch.rand(n, coder.n_latents, generator=g) * (
            torch.rand(n, coder.n_latents, generator=g) < 0.05
        )
        return (mix @ coder.W_dec.detach() + coder.b_dec.detach()) + 0.01 * torch.randn(
            n, coder.d_in, generator=g
        )
    return torch.randn(n, coder.d_in, generator=g)


def quiet_import(name: str) -> ModuleType | None:
    """Import a peer library (None if not installed) without its import-time noise: SAELens's
    dependencies warn (DeprecationWarning), sparsify prints to stdout — which `--json` keeps clean."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            return importlib.import_module(name)
        except ImportError:
            return None


def check_against_saelens(coder: SparseCoder, path: Path) -> None:
    sae_lens = quiet_import("sae_lens")
    if sae_lens is None:
        return
    sae = sae_lens.SAE.load_from_disk(str(path))
    require_equal(coder, sae.encode, sae.decode, probe_batch(coder), str(path))


def check_against_sparsify(coder: SparseCoder, path: Path) -> None:
    sparsify = quiet_import("sparsify")
    if sparsify is None:
        return
    eai = sparsify.SparseCoder.load_from_disk(path)

    def encode(x: Tensor) -> Tensor:
        out = eai.encode(x)
        return torch.zeros(x.shape[0], eai.num_latents).scatter_(1, out.top_indices, out.top_acts)

    def decode(z: Tensor) -> Tensor:
        vals, idx = z.topk(int(coder.k or 1), dim=-1)
        return eai.decode(vals, idx)

    require_equal(coder, encode, decode, probe_batch(coder), str(path))
