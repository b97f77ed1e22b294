"""A local causal language model, trained by mechscope on a text file: nothing downloads.

Researchers judge SAEs, transcoders and SPD on causal LMs by the next-token loss that survives a
splice. The tests and the demo need such a model without the network, so this module trains one:
a Hugging Face `GPT2LMHeadModel` (the real GPT-2 architecture: Conv1D layers, pre-LayerNorm blocks,
tied unembedding) with a byte-level BPE tokenizer trained on the same text. Both are written with
`save_pretrained`, so the result loads through `load_model(path)` exactly like a user's GPT-2.

    lm = local_lm(CORPUS, PRESETS["demo"], seed=0)     # trained once, then read from the cache
    lm.path, lm.info["held_out_ce"]                     # a model directory; nats per token
    loaded = load_model(lm.path)                        # mechscope.real.models: the user's path

The corpus is split in blocks of `block_tokens` tokens; every `held_out_every`-th block is held
out (so every licence in the corpus is seen in training and tested on text it did not see). The
model is cached like a zoo target under `$MECHSCOPE_CACHE/lms/gpt2-<hash>`, the hash taken over
the config, the seed and the corpus bytes; the directory is written to a temp dir and renamed into
place, and its weights' SHA-256 is checked on every load (a damaged entry is rebuilt).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import Field
from torch import Tensor

from mechscope.config import Config, ConfigError, config_hash
from mechscope.core import Progress, no_progress, seeded_generator
from mechscope.decompose.parallel import Placement, precision
from mechscope.files import atomic_text
from mechscope.real.splice import next_token_ce
from mechscope.zoo.cache import cache_dir, remove_entry, sha256_file

CORPUS = Path(__file__).parents[2] / "tests" / "data" / "licenses_corpus.txt"
"""The licence texts the repository ships (Apache-2.0, GPL-3.0, LGPL-3.0, MPL, MIT, BSD …)."""
EOS = "<|endoftext|>"
INFO, WEIGHTS = "mechscope_lm.json", "model.safetensors"


class CausalLMConfig(Config):
    """Size and training budget of the local GPT-2. Defaults: the demo model (≈1 M parameters)."""

    n_layer: Annotated[int, Field(ge=1, le=48)] = 4
    d_model: Annotated[int, Field(ge=8)] = 128
    n_head: Annotated[int, Field(ge=1)] = 4
    seq_len: Annotated[int, Field(ge=4, le=1024)] = 64
    vocab_size: Annotated[int, Field(ge=260, le=65_536)] = 1_024
    """BPE vocabulary, including the 256 byte tokens and the end-of-text token."""
    steps: Annotated[int, Field(ge=1)] = 400
    batch_size: Annotated[int, Field(ge=1)] = 32
    lr: Annotated[float, Field(gt=0)] = 3e-3
    warmup_steps: Annotated[int, Field(ge=0)] = 30
    weight_decay: Annotated[float, Field(ge=0)] = 0.01
    block_tokens: Annotated[int, Field(ge=16)] = 512
    held_out_every: Annotated[int, Field(ge=2)] = 10
    """Every n-th block of the corpus is held out for `held_out_ce`."""


_TINY = CausalLMConfig(n_layer=2, d_model=32, n_head=2, seq_len=32, vocab_size=300, steps=60, batch_size=16, lr=1e-2,
                       warmup_steps=5, block_tokens=256)  # fmt: skip
PRESETS: dict[str, CausalLMConfig] = {"demo": CausalLMConfig(), "tiny": _TINY}
"""`demo`: the model of the benchmarks and the README (≤ 3 CPU-minutes); `tiny`: the tests' (seconds)."""


@dataclass(frozen=True)
class LocalLM:
    path: Path
    """A directory `load_model` / `from_pretrained` reads: config.json, model.safetensors, tokenizer."""
    info: dict[str, Any]
    """held_out_ce, train_ce, n_params, corpus tokens, config, seed, cpu_s."""


# --- the tokenizer and the token stream ----------------------------------------------------------
def _read_corpus(path: str | Path) -> str:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"corpus {str(path)!r} does not exist; pass a local UTF-8 text file")
    text = p.read_text(encoding="utf-8")
    if not text.strip():
        raise ValueError(f"corpus {str(path)!r} is empty; pass a text file with some text in it")
    return text


def train_tokenizer(text: str, vocab_size: int) -> Any:
    """A byte-level BPE (GPT-2's scheme: any UTF-8 text encodes, no unknown token) trained on
    `text`, wrapped as a transformers fast tokenizer so `save_pretrained` / `AutoTokenizer` work."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )  # fmt: skip
    tok.train_from_iterator(_paragraphs(text), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, unk_token=EOS)


def _paragraphs(text: str) -> list[str]:
    """The text in paragraph-sized pieces that keep their newlines (tokenised one by one: fast,
    and the concatenated ids are the ids of the whole text up to merges across blank lines)."""
    parts = text.split("\n\n")
    return [p + "\n\n" for p in parts[:-1]] + [parts[-1]]


def encode_text(tokenizer: Any, text: str) -> Tensor:
    """[n] token ids of `text`, newlines kept (the LM was trained on them)."""
    ids: list[int] = []
    for piece in _paragraphs(text):
        if piece:
            ids.extend(tokenizer(piece, add_special_tokens=False)["input_ids"])
    return torch.tensor(ids, dtype=torch.long)


def split_blocks(ids: Tensor, block: int, every: int) -> tuple[Tensor, Tensor]:
    """(train, held-out) streams: blocks of `block` tokens, every `every`-th one held out."""
    n_blocks = ids.numel() // block
    if n_blocks < every:
        raise ValueError(f"the corpus has {ids.numel()} tokens; need ≥ {every * block} (block_tokens={block} × held_out_every={every})")
    blocks = ids[: n_blocks * block].view(n_blocks, block)
    held = torch.arange(n_blocks) % every == every - 1
    return blocks[~held].reshape(-1), blocks[held].reshape(-1)


def corpus_windows(tokenizer: Any, path: str | Path, seq_len: int, max_tokens: int | None = None,
                   split: str = "all", block: int = 512, every: int = 10) -> Tensor:  # fmt: skip
    """[n_seq, seq_len] non-overlapping windows of the corpus (or of its `train` / `held_out`
    blocks, split as the local LM was trained), at most `max_tokens` tokens."""
    if split not in ("all", "train", "held_out"):
        raise ValueError(f"split {split!r} is not one of all, train, held_out")
    ids = encode_text(tokenizer, _read_corpus(path))
    if split != "all":
        ids = split_blocks(ids, block, every)[split == "held_out"]
    if max_tokens is not None:
        ids = ids[:max_tokens]
    n_seq = ids.numel() // seq_len
    if n_seq == 0:
        raise ValueError(f"corpus {Path(path).name} has {ids.numel()} tokens in split {split!r}; need ≥ seq_len={seq_len}")
    return ids[: n_seq * seq_len].view(n_seq, seq_len)


# --- training ----------------------------------------------------------------------------------
def _lr(step: int, cfg: CausalLMConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


@torch.no_grad()
def held_out_ce(model: torch.nn.Module, stream: Tensor, seq_len: int, batch: int = 32) -> float:
    """Mean next-token CE over non-overlapping windows of `stream` (token-weighted)."""
    n = stream.numel() // seq_len
    windows = stream[: n * seq_len].view(n, seq_len)
    total, count = 0.0, 0
    for b in range(0, n, batch):
        x = windows[b : b + batch]
        total += float(next_token_ce(model(input_ids=x).logits, x)) * x[:, 1:].numel()
        count += x[:, 1:].numel()
    return total / max(1, count)


def _gpt2_config(cfg: CausalLMConfig, tokenizer: Any) -> Any:
    from transformers import GPT2Config

    if cfg.d_model % cfg.n_head:
        raise ConfigError(f"d_model={cfg.d_model} must be divisible by n_head={cfg.n_head}")
    return GPT2Config(
        vocab_size=len(tokenizer), n_positions=cfg.seq_len, n_embd=cfg.d_model, n_layer=cfg.n_layer, n_head=cfg.n_head,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id, architectures=["GPT2LMHeadModel"],
    )  # fmt: skip


def train_lm(text: str, cfg: CausalLMConfig, seed: int, directory: Path, progress: Progress = no_progress,
             device: str = "cpu", placement: Placement = Placement(), mixed_precision: bool = False) -> dict[str, Any]:  # fmt: skip
    """Train tokenizer + GPT-2 on `text` and save both into `directory` (rank 0); returns the info dict.

    On `device`; data-parallel by the project's one rule (`decompose/parallel.py`): every rank draws
    the same global batch, takes its `placement.share`, and gradients are averaged before each step,
    so N processes train what one trains (up to float summation order). `mixed_precision`: bf16
    autocast on a GPU (no effect on CPU)."""
    from transformers import GPT2LMHeadModel

    from mechscope.real.models import _quiet_transformers

    _quiet_transformers()
    cpu0 = time.process_time()
    tokenizer = train_tokenizer(text, cfg.vocab_size)
    train, held = split_blocks(encode_text(tokenizer, text), cfg.block_tokens, cfg.held_out_every)
    if train.numel() <= cfg.seq_len:
        raise ValueError(f"the corpus's training split has {train.numel()} tokens; need more than seq_len={cfg.seq_len}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # GPT2LMHeadModel draws its initial weights from the global RNG
        model = GPT2LMHeadModel(_gpt2_config(cfg, tokenizer))
    torch.nn.Module.to(model, device).train()  # (transformers types `.to` for dtypes only)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg.lr, betas=(0.9, 0.95))  # fmt: skip
    gen = seeded_generator(seed, 7)
    offsets = torch.arange(cfg.seq_len)
    share = placement.share(cfg.batch_size)
    params = list(model.parameters())
    loss = torch.zeros(())
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = _lr(step, cfg)
        start = torch.randint(0, train.numel() - cfg.seq_len, (cfg.batch_size,), generator=gen)
        x = train[start[:, None] + offsets][share].to(device)  # (B / world, T): this rank's rows
        with precision(device, mixed_precision):
            loss = next_token_ce(model(input_ids=x).logits, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        placement.sync(params)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if (step + 1) % 10 == 0 or step + 1 == cfg.steps:
            progress(step + 1, cfg.steps)
    model.eval().cpu()
    info = {
        "held_out_ce": held_out_ce(model, held, cfg.seq_len),
        "train_ce_last_batch": float(loss.detach()),
        "n_params": sum(p.numel() for p in model.parameters()),
        "train_tokens": int(train.numel()), "held_out_tokens": int(held.numel()),
        "config": cfg.model_dump(), "seed": seed, "cpu_s": time.process_time() - cpu0, "device": device,
        "world": placement.world, "mixed_precision": mixed_precision,
    }  # fmt: skip
    if placement.main:
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
    return info


def check_site(cfg: CausalLMConfig | str, site: str) -> None:
    """A site not in the local GPT-2 of `cfg` is a one-line error *before* anything trains: the
    module names come from a weightless copy (meta device) of the architecture."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from mechscope.hooks import get_module
    from mechscope.real.models import OutputModel

    c = PRESETS[cfg] if isinstance(cfg, str) else cfg
    with torch.device("meta"):
        model = GPT2LMHeadModel(GPT2Config(vocab_size=c.vocab_size, n_positions=c.seq_len, n_embd=c.d_model,
                                           n_layer=c.n_layer, n_head=c.n_head, bos_token_id=0, eos_token_id=0))  # fmt: skip
    get_module(OutputModel(model, True), site)


def lm_path(corpus: str | Path, cfg: CausalLMConfig, seed: int, mixed_precision: bool = False) -> Path:
    """Where the LM of (config, seed, corpus bytes) is cached (bf16 training is another model;
    the device and the number of processes are not part of the key: they train the same one)."""
    corpus_sha = hashlib.sha256(Path(corpus).read_bytes()).hexdigest()[:16] if Path(corpus).is_file() else "missing"
    extra = ("bf16",) if mixed_precision else ()
    return cache_dir() / "lms" / f"gpt2-{config_hash(cfg, seed, corpus_sha, *extra)}"


def _cached(path: Path) -> dict[str, Any] | None:
    """The stored info of an intact entry; None (and the entry removed) if missing or damaged."""
    if not path.exists():
        return None
    try:
        info: dict[str, Any] = json.loads((path / INFO).read_text())
        if sha256_file(path / WEIGHTS) != info["sha256"]:
            raise ValueError("weights do not match their recorded SHA-256")
        return info
    except (OSError, ValueError, KeyError):
        remove_entry(path)
        return None


def local_lm(corpus: str | Path = CORPUS, cfg: CausalLMConfig | str = "demo", seed: int = 0,
             progress: Progress = no_progress, device: str = "cpu", placement: Placement = Placement(),
             mixed_precision: bool = False) -> LocalLM:  # fmt: skip
    """The local GPT-2 for (corpus, config, seed): from the cache, or trained now and cached (by
    rank 0; under torchrun every rank trains its share, and all agree whether to train at all)."""
    if isinstance(cfg, str):
        if cfg not in PRESETS:
            raise ConfigError(f"unknown LM preset {cfg!r}; allowed: {', '.join(PRESETS)}")
        cfg = PRESETS[cfg]
    text = _read_corpus(corpus)
    path = lm_path(corpus, cfg, seed, mixed_precision)
    info = _cached(path)
    if not placement.any_rank(torch.tensor([info is None])).item():
        assert info is not None
        return LocalLM(path, info)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        info = train_lm(text, cfg, seed, tmp, progress, device, placement, mixed_precision)
        if not placement.main:
            placement.any_rank(torch.tensor([False]))  # wait until rank 0 has stored the model
            stored = _cached(path)
            return LocalLM(path, stored if stored is not None else info)
        info["sha256"] = sha256_file(tmp / WEIGHTS)
        info["corpus"] = str(corpus)
        atomic_text(tmp / INFO, json.dumps(info, indent=1))
        os.chmod(tmp, 0o777 & ~_umask())
        with contextlib.suppress(OSError):  # another process stored the same model meanwhile: keep theirs
            os.replace(tmp, path)
        placement.any_rank(torch.tensor([False]))  # the other ranks may read it now
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    stored = _cached(path)
    return LocalLM(path, stored if stored is not None else info)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask

