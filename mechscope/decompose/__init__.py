"""Decomposition methods. Each import below registers one method (one file each)."""

from mechscope.decompose.base import Decomposition, ParameterDecomposition, load_decomposition
from mechscope.decompose.registry import METHODS, FitContext, MethodSpec, get_method, register

# --- method registrations: one line per method file ---
from mechscope.decompose import oracle  # noqa: E402,F401
from mechscope.decompose import random_components  # noqa: E402,F401
from mechscope.decompose import sae  # noqa: E402,F401
from mechscope.decompose import spd  # noqa: E402,F401
from mechscope.decompose import transcoder  # noqa: E402,F401

__all__ = [
    "METHODS",
    "Decomposition",
    "FitContext",
    "MethodSpec",
    "ParameterDecomposition",
    "get_method",
    "load_decomposition",
    "register",
]
