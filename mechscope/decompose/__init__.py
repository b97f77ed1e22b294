"""Decomposition methods. Each import below registers one method (one file each)."""

from mechscope.decompose.base import Decomposition, ParameterDecomposition, load_decomposition
from mechscope.decompose.registry import METHODS, FitContext, MethodSpec, get_method, register

# --- method registrations: one line per method file ---

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
