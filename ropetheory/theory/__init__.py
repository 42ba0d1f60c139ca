"""The theory: what the paper (and the papers it builds on) claim, as functions with proofs attached.

Modules: ``.theorems`` (Theorem 1's limit, Lemma 1/2 checks, the certified non-asymptotic bound
``eps_n`` in Arb, convergence rates), ``.curve`` (the FSV curve with its certified tail),
``.criteria`` (Section 4's C1 and C2: the one definition),
``.beyond`` (beyond rank 1: noisy and stationary clouds), ``.positions`` (the second paper's
position and token inversion), ``.base_bound`` (Men et al.'s bound: rigorous enclosures of
``B(m; b)``) and ``.base_search`` (the certified, device-resident branch and bound over them).
May import numpy, jax, mpmath and python-flint, and ``ropetheory.core``, ``ropetheory.rope``,
``ropetheory.schedules``, ``ropetheory.spectra``, ``ropetheory.store``; never a study or a model.
"""
from .base_bound import B_values, enclose_B, BaseSearchResult, MEN_TABLE2, MAX_L  # noqa: F401
from .base_search import search_feasible_bases  # noqa: F401

__all__ = ["B_values", "enclose_B", "search_feasible_bases", "BaseSearchResult", "MEN_TABLE2", "MAX_L"]
