"""The on-disk cache of trained targets: `$MECHSCOPE_CACHE` (default ~/.cache/mechscope).

Targets are keyed by task name, task config and `target_seed`, so a bench never trains the same
target twice and a changed config never reuses a stale one. Writes are atomic (temp dir + rename).
Each entry records the SHA-256 of its weights; a damaged entry (missing file, bad header, wrong
hash, weights that do not fit the module) is reported by path, removed and rebuilt — never loaded,
never left in place to be retrained on every run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import nn

from mechscope.config import Config, config_hash
from mechscope.core import seeded_generator

__all__ = ["cache_dir", "load_target", "remove_entry", "save_target", "seeded_generator", "sha256_file", "target_path"]

log = logging.getLogger("mechscope")

WEIGHTS, INFO = "target.safetensors", "info.json"


def cache_dir() -> Path:
    return Path(os.environ.get("MECHSCOPE_CACHE", Path.home() / ".cache" / "mechscope"))


def target_path(task_name: str, config: Config, target_seed: int) -> Path:
    return cache_dir() / "targets" / f"{task_name}-{config_hash(config, target_seed)}"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_target(path: Path, module: nn.Module) -> dict[str, Any] | None:
    """Load cached weights into `module`; return the stored info, or None if not cached (or damaged,
    in which case the entry is removed so the caller's rebuild can take its place)."""
    if not path.exists():
        return None
    weights, info_file = path / WEIGHTS, path / INFO
    try:
        info: dict[str, Any] = json.loads(info_file.read_text())
        want = info.get("sha256")
        if want is not None and sha256_file(weights) != want:
            raise ValueError("weights do not match their recorded SHA-256")
        module.load_state_dict(load_file(str(weights)))
    except Exception as err:  # any damage: missing file, bad JSON or header, truncated, wrong shapes
        reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        log.warning("mechscope: cached target %s is damaged (%s); rebuilding it", path, reason[:200])
        remove_entry(path)
        return None
    return info


def save_target(path: Path, module: nn.Module, info: dict[str, Any]) -> None:
    """Atomically store a trained target and its info (losses, represented features…)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    state = {k: v.detach().contiguous().clone().cpu() for k, v in module.state_dict().items()}
    save_file(state, str(tmp / WEIGHTS))
    (tmp / INFO).write_text(json.dumps({**info, "sha256": sha256_file(tmp / WEIGHTS)}, indent=2))
    for f in (tmp / WEIGHTS, tmp / INFO):
        os.chmod(f, 0o666 & ~_umask())
    os.chmod(tmp, 0o777 & ~_umask())
    if path.exists():
        if _intact(path):  # another process stored the same target meanwhile: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
            return
        remove_entry(path)  # a damaged entry: replace it
    try:
        os.replace(tmp, path)
    except OSError:  # another process won the race: its target is identical
        shutil.rmtree(tmp, ignore_errors=True)


def _intact(path: Path) -> bool:
    try:
        want = json.loads((path / INFO).read_text()).get("sha256")
        return (path / WEIGHTS).exists() and (want is None or sha256_file(path / WEIGHTS) == want)
    except (OSError, ValueError):
        return False


def remove_entry(path: Path) -> None:
    """Move the entry aside (atomic), then delete it, so no reader sees a half-deleted target."""
    trash = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".trash-{path.name}."))
    with contextlib.suppress(OSError):
        os.replace(path, trash / "entry")
    shutil.rmtree(trash, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
