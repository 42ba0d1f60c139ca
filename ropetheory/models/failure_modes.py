"""The second paper's four failure modes on a real model's heads, beside its Gaussian model's prediction.

``ropetheory.theory.positions`` defines them for one query ``q`` and key ``k`` (interleaved, ``d = 2P``)
through the score at relative distance ``m``, ``S(m) = <q, R_m k>``, ``m`` in ``[0, M)``, each computed
exactly by enumerating every ``m``:

* position inversion ``p_inv = P(S(m1) < S(m2))``, ``m1 ~ U[0, M/2)``, ``m2 ~ U[M/2, M)`` (claim: -> 1/2);
* position aliasing: some ``m1 != m2`` with ``|S(m1) - S(m2)| < eps`` (claim: probability -> 1);
* token inversion: for keys ordered ``S_1(0) > S_2(0)``, the share of ``m`` with ``S_1(m) < S_2(m)``;
* token aliasing: the share of ``m`` with ``|S_1(m) - S_2(m)| < eps``.

**Measured.** Per layer and key head, ``pairs`` triples ``(q, k_1, k_2)`` of the head's own vectors before
RoPE, as the model produced them (the capture stores the model's values exactly, in float32): ``q`` a
sampled query of one of the head's query heads (``LayerStream.query_samples``), ``k_1 != k_2`` keys at
positions ``>= 1`` (the sink key 0 left out), drawn with a seeded generator. The model's logit of a query
at position ``i`` and a key at ``j = i - m`` is ``(R_i q) . (R_j k) = <q, R_{-m} k> = <F q, R_m F k>``, ``F``
the reflection of every plane (its second channel negated, ``F R_a F = R_{-a}``): so the vectors handed to
``theory.positions`` are ``F`` of the interleaved ones (``paper_vector``), and ``S(m)`` is the logit the
model forms at distance ``m`` (tested against captured post-RoPE logits) up to its logit scale and the
square of its attention factor, on which no quantity here depends; with the layer's ``theta`` (NoPE planes
``theta_j = 0``, a constant term). The rotation is the exact one (only the content vectors are the
model's: one vector at many positions is never in a capture). ``M = min(k L, W)`` for each multiple ``k``
(``W`` a sliding window: no distance reaches past it).

**The model's own precision** enters through ``eps``, the resolution of the model's floating type at the
score's scale: ``eps = sqrt(2) u rms_m S_1(m)``, ``u`` the unit roundoff the capture's rotation check
recorded for the layer (``RotationCheck.unit_roundoff``: ``2^-8`` for bfloat16, ``2^-24`` for float32;
float32 assumed, and said, where no check ran). For the second paper's model (unit Gaussian entries,
``E rms^2 = 2P``) and bfloat16 it is on average its ``2^-7 sqrt(P)`` (``positions.bf16_eps``).

**Gaussian prediction.** The same quantities, the same ``theta``, ``M`` and ``eps`` rule, for
``gaussian_draws`` triples of independent standard Gaussian vectors (the paper's model; every quantity is
scale-free, so their norm does not matter).

Per head and ``M`` the means over the triples; per layer type and ``M`` the median over heads.

**Cost.** ``positions``' functions compute the ``M x P`` angles for every call; here one exactly reduced
``cos, sin`` table per layer schedule and ``M`` (``core.angles.rope_angles``, ``ANGLE_BLOCK`` positions at a
time) serves every triple of every head, ``S = cos @ Re(c) - sin @ Im(c)`` with ``c_j = conj(q_j) k_j``, and
the four quantities are counted from ``S`` as ``positions`` counts them (``modes_from_scores``, tested equal
to ``positions``' functions).
"""
from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp
import numpy as np

from ..core.angles import rope_angles, turn_chunks
from ..core.checks import check_integer, check_seed
from ..core.errors import BadType, BadValue
from .rotation import FLOAT32_UNIT_ROUNDOFF, hf_to_interleaved

__all__ = ["measure_failure_modes", "failure_rows", "modes_of", "modes_from_scores", "score_table", "table_scores",
           "score_eps", "paper_vector", "PAIRS", "GAUSSIAN_DRAWS", "FM_MULTIPLES", "MODES", "ANGLE_BLOCK"]

#: real (q, k1, k2) triples per head: each is an exact enumeration over M distances (two products with
#: the layer's table and three sorts of M scores)
PAIRS = 8
#: Gaussian triples per head for the model's prediction
GAUSSIAN_DRAWS = 8
#: the distance ranges [0, kL) measured
FM_MULTIPLES = (1, 8)
#: the four quantities, as the result names them
MODES = ("position_inversion", "position_aliasing", "token_inversion", "token_aliasing")
#: positions per block of the angle table: the exact reduction holds a few (block, P) float64 arrays
ANGLE_BLOCK = 16384


def paper_vector(x: np.ndarray, rotary_dim: int) -> np.ndarray:
    """``F`` of ``x`` interleaved: transformers' channel order -> the planes of ``theory.positions``, each
    plane's second channel negated, so that ``S(m) = <F q, R_m F k>`` is the logit at distance ``m`` (module
    docstring)."""
    v = hf_to_interleaved(np.asarray(x, dtype=np.float64), int(rotary_dim))
    v[1::2] = -v[1::2]
    return v


def score_eps(S: np.ndarray, unit_roundoff: float) -> float:
    """``sqrt(2) u rms(S)``: the floating type's resolution at the scale of the scores ``S`` (module docstring)."""
    return math.sqrt(2.0) * float(unit_roundoff) * float(np.sqrt(np.mean(np.square(S))))


Triple = tuple[np.ndarray, np.ndarray, np.ndarray]


def score_table(theta: np.ndarray, M: int) -> tuple[np.ndarray, np.ndarray]:
    """``cos(m theta_j), sin(m theta_j)``, ``(M, P)`` float64, for ``m = 0..M-1``, from exactly reduced angles."""
    th = np.asarray(theta, dtype=np.float64)
    ch = jnp.asarray(turn_chunks(th))
    ang = np.concatenate([np.asarray(rope_angles(jnp.arange(a, min(M, a + ANGLE_BLOCK)), ch))
                          for a in range(0, M, ANGLE_BLOCK)])
    return np.cos(ang), np.sin(ang)


def table_scores(table: tuple[np.ndarray, np.ndarray], q: np.ndarray, k: np.ndarray) -> np.ndarray:
    """``S(m) = <q, R_m k> = sum_j Re(conj(zq_j) zk_j e^{i m theta_j})`` (interleaved ``q, k``) for every ``m``
    of ``table``: ``positions.scores`` with the angles computed once."""
    c = (q[0::2] - 1j * q[1::2]) * (k[0::2] + 1j * k[1::2])
    return table[0] @ c.real - table[1] @ c.imag


def modes_from_scores(S: np.ndarray, D: np.ndarray, eps: float) -> dict[str, float]:
    """The four quantities (``MODES``) from ``S = S_1(m)`` and ``D = S_1(m) - S_2(m)`` over ``m = 0..M-1``,
    counted as ``theory.positions`` counts them: ``p_inv = #{S(m1) < S(m2)} / h^2`` over the halves
    (``h = M // 2``); aliasing 1.0 if two sorted scores lie closer than ``eps``, else 0.0; token inversion the
    share of ``m`` with ``D(m) < 0`` after orienting ``D(0) > 0``; token aliasing the share with ``|D| < eps``."""
    h = S.size // 2
    second = np.sort(S[h:2 * h])
    less = int(np.sum(h - np.searchsorted(second, S[:h], side="right")))
    D = -D if D[0] < 0 else D
    return {"position_inversion": less / (h * h),
            "position_aliasing": float(np.min(np.diff(np.sort(S))) < eps),
            "token_inversion": float(np.mean(D < 0)), "token_aliasing": float(np.mean(np.abs(D) < eps))}


def _modes(table: tuple[np.ndarray, np.ndarray], triple: Triple, unit_roundoff: float) -> dict[str, float]:
    q, k1, k2 = triple
    S = table_scores(table, q, k1)
    return modes_from_scores(S, S - table_scores(table, q, k2), score_eps(S, unit_roundoff))


def modes_of(theta: np.ndarray, q: np.ndarray, k1: np.ndarray, k2: np.ndarray, M: int,
             unit_roundoff: float) -> dict[str, float]:
    """The four quantities of one triple (interleaved vectors) over ``m = 0..M-1``, ``eps`` by ``score_eps``."""
    M = check_integer("M", M, lo=2)
    return _modes(score_table(theta, M), (q, k1, k2), unit_roundoff)


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {m: float(np.mean([r[m] for r in rows])) for m in MODES}


def _real_triples(st, h: int, rng: np.random.Generator, pairs: int) -> list[Triple]:
    """``pairs`` triples ``(q, k1, k2)`` of key head ``h`` (transformers' channel order, float64)."""
    n = int(st.n_done)
    G = st.group_size
    out = []
    for _ in range(pairs):
        g = h * G + int(rng.integers(0, G))
        s = int(rng.integers(0, st.query_sample_positions[st.query_sample_positions < n].size))
        j1, j2 = rng.choice(np.arange(1, n), size=2, replace=False)
        out.append((st.query_samples["pre"][g, s].astype(np.float64), st.keys["pre"][h, int(j1)],
                    st.keys["pre"][h, int(j2)]))
    return out


def measure_failure_modes(cap: dict, *, L: int, multiples: tuple[int, ...] = FM_MULTIPLES, pairs: int = PAIRS,
                          gaussian_draws: int = GAUSSIAN_DRAWS, seed: int = 0) -> dict[str, Any]:
    """The four failure modes on every key head of a capture (``.forward.capture_streams``'s result, or any
    dict with its ``streams`` and ``schedules``), measured and predicted (module docstring)."""
    if not isinstance(cap, dict) or "streams" not in cap or "schedules" not in cap:
        raise BadType("cap must be a capture dict with 'streams' and 'schedules' (capture_streams' result)")
    L = check_integer("L", L, lo=2)
    pairs, gaussian_draws = check_integer("pairs", pairs, lo=1), check_integer("gaussian_draws", gaussian_draws, lo=1)
    seed = check_seed("seed", seed)
    ks = [check_integer("multiples", k, lo=1) for k in multiples]
    rows, skipped = [], []
    tables: dict[tuple[bytes, int], tuple[np.ndarray, np.ndarray]] = {}
    for li, (st, sc) in enumerate(zip(cap["streams"], cap["schedules"], strict=True)):
        if st.n_done < 3:
            skipped.append({"layer": li, "why": f"{st.n_done} positions: two keys past the sink need n >= 3"})
            continue
        theta = np.asarray(sc["theta"], dtype=np.float64)
        r = int(sc["rotary_dim"])
        if 2 * theta.size != st.head_dim:
            raise BadValue(f"layer {li}: theta has {theta.size} planes for head_dim {st.head_dim}")
        u = st.rotation.unit_roundoff if st.rotation is not None else FLOAT32_UNIT_ROUNDOFF
        for h in range(st.kv_heads):
            rng = np.random.default_rng([seed, li, h])
            real: list[Triple] = [(paper_vector(q, r), paper_vector(k1, r), paper_vector(k2, r))
                                  for q, k1, k2 in _real_triples(st, h, rng, pairs)]
            gauss: list[Triple] = [(rng.standard_normal(st.head_dim), rng.standard_normal(st.head_dim),
                                    rng.standard_normal(st.head_dim)) for _ in range(gaussian_draws)]
            for k in ks:
                M = int(min(k * L, sc["window"]) if sc["window"] else k * L)
                key = (theta.tobytes(), M)
                if key not in tables:
                    tables[key] = score_table(theta, M)
                rows.append({"layer": li, "kv_head": h, "layer_type": sc["layer_type"], "k": k, "M": M,
                             "measured": _mean([_modes(tables[key], t, u) for t in real]),
                             "gaussian": _mean([_modes(tables[key], t, u) for t in gauss])})
    summary = []
    for lt in sorted({r["layer_type"] for r in rows}):
        for k in ks:
            mine = [r for r in rows if r["layer_type"] == lt and r["k"] == k]
            summary.append({"layer_type": lt, "k": k, "M": sorted({r["M"] for r in mine}), "heads": len(mine),
                            **{f"{src}_median": {m: float(np.median([r[src][m] for r in mine])) for m in MODES}
                               for src in ("measured", "gaussian")}})
    units = sorted({(st.rotation.unit_roundoff if st.rotation is not None else None) for st in cap["streams"]},
                   key=lambda x: -1.0 if x is None else x)
    return {"train_len": L, "multiples": ks, "pairs": pairs, "gaussian_draws": gaussian_draws, "seed": seed,
            "unit_roundoff": [FLOAT32_UNIT_ROUNDOFF if x is None else x for x in units],
            "precision_note": ("unit roundoff from the capture's rotation check" if None not in units else
                               "some layers ran no rotation check: float32 assumed there"),
            "eps_rule": "sqrt(2) * unit_roundoff * rms_m S_1(m)", "summary": summary, "heads": rows,
            "skipped": skipped}


def failure_rows(fm: dict) -> list[dict[str, Any]]:
    """``measure_failure_modes``' summary as a table, one row per layer type, multiple and mode, measured
    median over heads beside the Gaussian model's (for ``failure_modes.csv``)."""
    return [{"layer_type": s["layer_type"], "k": s["k"], "M": " ".join(str(m) for m in s["M"]), "heads": s["heads"],
             "mode": m, "measured_median": s["measured_median"][m], "gaussian_median": s["gaussian_median"][m]}
            for s in fm["summary"] for m in MODES]
