"""Decomposition methods. Each import below registers one method (one file each)."""

# --- method registrations: one line per method file ---
from mechscope.decompose import (
    clt,  # noqa: F401
    oracle,  # noqa: F401
    random_components,  # noqa: F401
    sae,  # noqa: F401
    sae_matryoshka,  # noqa: F401
    saelens_peers,  # noqa: F401  (registers only when sae_lens is installed)
    sparsify_peer,  # noqa: F401  (registers only when sparsify is installed)
    spd,  # noqa: F401
    transcoder,  # noqa: F401
)
from mechscope.decompose.base import Decomposition, ParameterDecomposition, load_decomposition
from mechscope.decompose.registry import METHODS, FitContext, MethodSpec, get_method, load_plugins, register
from mechscope.dynamics import method as _fixed_points  # noqa: F401  (the "dynamics" family's method)

load_plugins()  # third-party methods: entry-point group `mechscope.methods`

__all__ = [
    "METHODS",
    "Decomposition",
    "FitContext",
    "MethodSpec",
    "ParameterDecomposition",
    "get_method",
    "load_decomposition",
    "load_plugins",
    "register",
]
