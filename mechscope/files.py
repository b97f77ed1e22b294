"""Atomic writes: a file is either its old self or its complete new self, never half written.

Every file mechscope writes goes through here (temp file in the same directory, then rename), and
keeps the user's umask: `mkstemp` creates files 0600, so the mode is set from the umask explicitly.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def _umask_mode(base: int = 0o666) -> int:
    mask = os.umask(0)
    os.umask(mask)
    return base & ~mask


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> None:
    """Run `write(tmp_path)`, then move the finished temp file onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` atomically."""
    atomic_write(path, lambda p: p.write_text(text))


def atomic_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    atomic_write(path, lambda p: p.write_bytes(data))
