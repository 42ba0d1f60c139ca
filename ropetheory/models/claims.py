"""The paper's real-model claims (Figs. 2-6), judged per head from a saved analysis: each claim's
number, its threshold (a named constant), its verdict in the package's one vocabulary
(``ropetheory.core.verdicts.Verdict``) and a ``qualifier`` saying how it holds or fails where the word
alone would hide it ("" where it says nothing more)."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..core.verdicts import Verdict


# ---------------------------------------------------------------------------
# claims
# ---------------------------------------------------------------------------
#: "close to 1" for the intra-cluster cosines (docs/theory.md: "generally close to 1"): a documented choice
CLOSE_TO_ONE = 0.7


#: a head "has a sink" at length n if key 0 takes more than this share of the last queries' attention
SINK_SHARE = 0.5


#: a median key-query cosine within this of 0 reads as "near zero" rather than "negative" (opposed)
NEAR_ZERO = 0.05


def _at(res, key, h, n):
    g = res["grid"]
    i = max(j for j, m in enumerate(g) if m <= n)
    return h[key][i]


def _median(xs: list[Any]) -> float:
    """The median of the measured values (None = not measured); NaN when none was measured, which every
    verdict below reads as "does not hold" and the text shows as nan."""
    vals = [float(x) for x in xs if x is not None]
    return float(np.median(vals)) if vals else math.nan


def _negative(xs: list[Any]) -> int:
    return sum(1 for x in xs if x is not None and x < 0)


def _opposed(med: float, neg: int, total: int) -> tuple[Verdict, str]:
    """The verdict on "key-query cosine negative" and its qualifier: holds for a median below -NEAR_ZERO,
    or a negative median in at least two thirds of the heads; otherwise a median within NEAR_ZERO of 0
    is qualified as near zero."""
    if med <= -NEAR_ZERO or (med < 0 and neg >= 2 * total / 3):
        return Verdict.HOLDS, ""
    return Verdict.DOES_NOT_HOLD, "near zero, not opposed" if abs(med) < NEAR_ZERO else ""


def _row(claim: str, number: str, verdict: Verdict, qualifier: str = "") -> dict[str, Any]:
    return {"claim": claim, "number": number, "verdict": verdict, "qualifier": qualifier}


#: the qualifier of a claim about lengths past L on a text no longer than L
NOT_PAST_L = "not measured: n <= L"


def _cluster_claims(res: dict, nL: int) -> list[dict[str, Any]]:
    """Fig. 2 and Section 3.2: tight clusters, opposed before RoPE, more opposed after."""
    H, med = res["heads"], _median
    kk = [_at(res, "cos_kk_pre", h, nL) for h in H]
    qq = [_at(res, "cos_qq_pre", h, nL) for h in H]
    kq = [_at(res, "cos_kq_pre", h, nL) for h in H]
    kq_post = [_at(res, "cos_kq_post", h, nL) for h in H]
    after, _ = _opposed(med(kq_post), _negative(kq_post), len(kq))
    lower = med(kq_post) < med(kq)
    return [
        _row("tight clusters: intra-cluster cosines close to 1 (Fig. 2)",
             f"median key-key {med(kk):.3f}, query-query {med(qq):.3f} at n = {nL} (pre-RoPE)",
             Verdict.of(med(kk) >= CLOSE_TO_ONE and med(qq) >= CLOSE_TO_ONE)),
        _row("opposed clusters before RoPE: key-query cosine negative but small (Fig. 2)",
             f"median {med(kq):+.3f}; negative in {_negative(kq)}/{len(kq)} heads at n = {nL} (pre-RoPE)",
             *_opposed(med(kq), _negative(kq), len(kq))),
        _row("more opposed after RoPE: the post-RoPE key-query cosine below the pre-RoPE one (Section 3.2)",
             f"median {med(kq):+.3f} before -> {med(kq_post):+.3f} after RoPE; negative in "
             f"{_negative(kq)} -> {_negative(kq_post)} of {len(kq)} heads at n = {nL}",
             *((Verdict.HOLDS, "") if lower and after is Verdict.HOLDS else
               (Verdict.PARTLY, "lower after RoPE, not opposed") if lower else
               (Verdict.DOES_NOT_HOLD, ""))),
    ]


def _cloud_claims(res: dict, nL: int) -> list[dict[str, Any]]:
    """Fig. 4 and 5: rank-1-like clouds, the FSV's fall past L, the small-norm sink key."""
    H, med, L, n = res["heads"], _median, res["train_len"], res["n"]
    pc1 = [h["pc1_var"] for h in H]
    rho_L = [_at(res, "rho_measured", h, nL) for h in H]
    rho_n = [h["rho_measured"][-1] for h in H]
    norm = [h["sink_key_norm_ratio"] for h in H]
    rank1 = (Verdict.HOLDS if np.percentile(pc1, 10) >= 0.4 and max(pc1) >= 0.9 else
             Verdict.PARTLY if med(pc1) >= 0.5 else Verdict.DOES_NOT_HOLD)
    fsv = (Verdict.of((med(rho_L) - med(rho_n)) / math.log(n / L) > (1 - med(rho_L)) / math.log(L))
           if n > L else Verdict.NOT_TESTED)
    return [
        _row("rank-1-like clouds: PC1 variance from about half to nearly all (Fig. 4)",
             f"PC1 variance min {min(pc1):.2f}, median {med(pc1):.2f}, max {max(pc1):.2f}", rank1),
        _row("RoPE lowers the FSV mildly within L and sharply past it (Fig. 4)",
             f"median rho at L {med(rho_L):.3f}, at n = {n} {med(rho_n):.3f}" if n > L else
             f"median rho at n = {n} (< L) {med(rho_n):.3f}; past L not measured",
             fsv, "" if n > L else NOT_PAST_L),
        _row("small-norm sink key: ||k_0|| below the median key norm (Fig. 5)",
             f"median ||k_0|| / median ||k_i|| = {med(norm):.2f}; < 1 in "
             f"{sum(1 for x in norm if x is not None and x < 1)}/{len(norm)} heads", Verdict.of(med(norm) < 1)),
    ]


def _sink_claim(res: dict, nL: int) -> list[dict[str, Any]]:
    """Fig. 6 on the global layers (none: no row): the sink share collapses past L with RoPE only."""
    med, L, n = _median, res["train_len"], res["n"]
    glob = [h for h in res["heads"] if h["window"] is None]
    if not glob:
        return []
    s_rope_L = [_at(res, "sink_rope", h, nL) for h in glob]
    s_rope_n = [h["sink_rope"][-1] for h in glob]
    s_no_n = [h["sink_norope"][-1] for h in glob]
    s_no_L = [_at(res, "sink_norope", h, nL) for h in glob]
    has_L = sum(s is not None and s > SINK_SHARE for s in s_rope_L)
    has_n = sum(s is not None and s > SINK_SHARE for s in s_rope_n)
    ok = med(s_rope_n) < 0.5 * med(s_rope_L) and med(s_no_n) >= 0.5 * med(s_no_L)
    return [_row("the sink share collapses past L with RoPE and stays without it (Fig. 6; global layers)",
                 f"heads with a sink (share > {SINK_SHARE}): {has_L}/{len(glob)} at n = {nL}, "
                 f"{has_n}/{len(glob)} at n = {n}; median share with RoPE {med(s_rope_L):.3f} -> "
                 f"{med(s_rope_n):.3f}, without {med(s_no_L):.3f} -> {med(s_no_n):.3f}",
                 Verdict.of(ok) if n > L else Verdict.NOT_TESTED, "" if n > L else NOT_PAST_L)]


def claims(res: dict) -> list[dict[str, Any]]:
    """The paper's real-model claims (docs/theory.md) with the number behind each verdict: rows
    ``{claim, number, verdict, qualifier}``."""
    nL = min(res["train_len"], res["n"])
    return [*_cluster_claims(res, nL), *_cloud_claims(res, nL), *_sink_claim(res, nL),
            _row("PI / YaRN keep the clusters separated past L (Section 5)",
                 "needs runs with the rope replaced at inference: experiments/real_model_extension.py "
                 "(SmolLM2 table in docs/findings.md)", Verdict.NOT_TESTED, "not measured by a single run")]
