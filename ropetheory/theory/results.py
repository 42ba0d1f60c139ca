"""The claim checks' result types: one frozen value per checked case, flat so that a row of
``verify.csv`` is its ``to_dict()``.

``Rank1Claims`` is ``theorems.check_rank1_claims``'s verdict on Lemma 1 (or its partial extension),
Theorem 1 and Lemma 2 for one rank-1 cloud; ``Counterexample`` is ``theorems.check_counterexample``'s
comparison of the observed limit with the paper's formula and the exact one. Field names are the
columns of ``verify.csv``; ``result["lam"]`` reads a field like ``result.lam``.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from ..core.verdicts import Verdict

__all__ = ["Rank1Claims", "Counterexample"]


class _FlatResult:
    """Item access and ``to_dict`` for a flat frozen dataclass of scalars."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: every field, in declaration order (the CSV's column order)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    def __getitem__(self, key: str) -> Any:
        names = [f.name for f in dataclasses.fields(self)]  # type: ignore[arg-type]
        if key not in names:
            raise KeyError(f"{key!r}: a {type(self).__name__} has {names}")
        return getattr(self, key)


@dataclasses.dataclass(frozen=True)
class Rank1Claims(_FlatResult):
    """Lemma 1, Theorem 1 and Lemma 2 for ``X = u v^T`` under one schedule and weighting.

    ``lambda = lim rho_n^2`` is the predicted limit (``theorems.predicted_limit``); at each
    ``n in {10^4, 10^6, 10^12}`` (``theorems.CHECK_LENGTHS``) ``rho_<n>`` is the observed ``rho_n``,
    ``err_<n> = |rho_n^2 - lambda|``, ``eps_<n>`` the certified bound on it and ``eps_over_err_<n>``
    their ratio (None where the error is at the float64 floor).
    """

    paper_hypotheses: bool          # Lemma 1's frequency hypotheses hold
    nope_planes: int                # planes with theta_j == 0 mod 2 pi
    claim: str                      # "Lemma 1" or its partial-schedule extension
    max_e: float                    # max_j e_j, e_j = ||v_j||^2
    e0: float                       # energy on the NoPE planes
    lam: float                      # lambda = lambda_max(Gbar)
    rho_limit: float                # sqrt(lambda)
    paper_formula: float | None     # Lemma 1's max_j e_j / 2 (None with NoPE planes)
    partial_formula: float          # max(e_0, max_{theta_j>0} e_j / 2)
    rho_1e4: float
    rho_1e6: float
    rho_1e12: float
    err_1e4: float
    err_1e6: float
    err_1e12: float
    eps_1e4: float
    eps_1e6: float
    eps_1e12: float
    eps_over_err_1e4: float | None
    eps_over_err_1e6: float | None
    eps_over_err_1e12: float | None
    rate: float | None              # slope of log(error envelope) in log n; None at the noise floor
    shrink_factor: float            # 1 / sqrt(lambda)
    srank_limit: float              # 1 / lambda (Theorem 1)
    srank_1e12: float
    srank_relerr_1e12: float        # |srank_n lambda - 1| at 10^12
    frob_max_dev: float             # max_n |frob_ratio_n - 1| (Lemma 2)
    bound_contains_error: bool      # err_n <= eps_n (+ FLOAT_SLACK) at every checked n
    lemma1_verdict: Verdict
    theorem1_verdict: Verdict
    lemma2_verdict: Verdict


@dataclasses.dataclass(frozen=True)
class Counterexample(_FlatResult):
    """A case that breaks one of Lemma 1's hypotheses: observed ``rho_n^2`` against the paper's
    formula and the exact limit ``lambda``."""

    frequency_hypotheses: bool      # Lemma 1's frequency hypotheses hold
    tv_hypothesis: bool             # TV_n = o(W_n) holds for the weights
    observed_rho2_1e6: float
    observed_rho2_1e12: float
    paper_formula: float            # max(e_0, max_{theta_j>0} e_j / 2)
    exact_limit: float              # lambda
    paper_verdict: Verdict
    exact_verdict: Verdict
