"""Theory that needs more than the spectral engine: certified searches over schedule parameters.

Holds :mod:`ropetheory.theory.base_bound` (Men et al.'s base bound: rigorous enclosures) and
:mod:`ropetheory.theory.base_search` (the device-resident branch and bound over them). May import numpy, jax and mpmath; of the package, nothing but the public names of
:mod:`ropetheory.store`. The rank-1 limits and bounds of the paper itself still live in
:mod:`ropetheory.theorems` (the architecture issue moves them here).
"""
from .base_bound import B_values, enclose_B, BaseSearchResult, MEN_TABLE2, MAX_L  # noqa: F401
from .base_search import search_feasible_bases  # noqa: F401

__all__ = ["B_values", "enclose_B", "search_feasible_bases", "BaseSearchResult", "MEN_TABLE2", "MAX_L"]
