"""mechscope: did my interpretability method find the mechanisms that are really there?"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def score(decomposition_or_path: Any, task: Any, site: str | None = None, **kwargs: Any) -> dict[str, Any]:
    """Score a Decomposition, or a SAELens / sparsify / mechscope dictionary at a path, on a zoo
    task: `mechscope.score("out/my-sae", "tms-40-10", site="W")`. See `mechscope.score_command`."""
    from mechscope.score_command import score as _score

    return _score(decomposition_or_path, task, site=site, **kwargs)
