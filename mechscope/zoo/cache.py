"""The on-disk cache of trained targets: `$MECHSCOPE_CACHE` (default ~/.cache/mechscope).

Targets are keyed by task name, task config and `target_seed`, so a bench never trains the same
target twice and a changed config never reuses a stale one. Writes are atomic (temp + rename).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import nn

from mechscope.config import Config, config_hash
from mechscope.core import seeded_generator

__all__ = ["cache_dir", "load_target", "save_target", "seeded_generator", "target_path"]


def cache_dir() -> Path:
    return Path(os.environ.get("MECHSCOPE_CACHE", Path.home() / ".cache" / "mechscope"))


def target_path(task_name: str, config: Config, target_seed: int) -> Path:
    return cache_dir() / "targets" / f"{task_name}-{config_hash(config, target_seed)}"


def load_target(path: Path, module: nn.Module) -> dict[str, Any] | None:
    """Load cached weights into `module`; return the stored info, or None if not cached."""
    weights = path / "target.safetensors"
    info = path / "info.json"
    if not (weights.exists() and info.exists()):
        return None
    module.load_state_dict(load_file(str(weights)))
    result: dict[str, Any] = json.loads(info.read_text())
    return result


def save_target(path: Path, module: nn.Module, info: dict[str, Any]) -> None:
    """Atomically store a trained target and its info (losses, represented features…)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    state = {k: v.detach().contiguous().clone() for k, v in module.state_dict().items()}
    save_file(state, str(tmp / "target.safetensors"))
    (tmp / "info.json").write_text(json.dumps(info, indent=2))
    try:
        os.replace(tmp, path)
    except OSError:  # another process won the race: its target is identical
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()

