#!/usr/bin/env bash
# Create .venv (if missing) and install mechscope with the CPU build of torch first.
# An unpinned torch would pull a multi-GB CUDA wheel; set TORCH_SPEC to choose another build,
# e.g. TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu124".
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
stamp=".venv/.mechscope-installed"
want="$(cat pyproject.toml; echo "$TORCH_SPEC")"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# shellcheck disable=SC2086
.venv/bin/python -m pip install --quiet $TORCH_SPEC
.venv/bin/python -m pip install --quiet -e ".[dev]"
printf '%s' "$want" > "$stamp"
