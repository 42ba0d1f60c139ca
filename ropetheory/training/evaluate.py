"""Evaluating a trained model past its training length, and analysing its keys and queries.

Variants: each trained schedule as trained, plus three inference-time changes (nothing retrained):
``rope+pi`` (Position Interpolation: ``theta / s``), ``rope+yarn`` (YaRN: its frequencies and its
attention factor on ``cos, sin``), both with ``s = max(1, n / L)`` at evaluation length ``n`` as Hugging
Face's ``linear`` / ``yarn`` rope types define them (``ropetheory.schedules.hf.frequencies_from_config``),
and ``rope_id+temp`` (RoPE-ID's length temperature on each query's logits,
``tau_i = (1 + 0.1 ln(max(1, (i + 1) / L)))^2``, ``ropetheory.schedules.length_temperature``).

* perplexity at length ``n``: ``exp`` of the mean next-token loss over positions ``[n/2, n)`` of held-out
  text rows of ``n`` tokens (BOS first): the loss a model reaches *at* that length, not averaged with
  the easy early positions;
* retrieval accuracy at length ``n`` and needle depth ``delta``: the fraction of rows (held-out filler,
  ``.tasks``) whose every answer digit is the argmax;
* geometry: one held-out row of the longest length goes through the model with capture on; its
  queries and keys (before and after RoPE, per layer and head) form a key dump
  (``ropetheory.models.capture``'s format, channels in the half layout that format uses) that
  ``ropetheory.models.dump.analyze_dump`` analyses as it does a pretrained model's (FSV ratio
  against length beside the rank-1 prediction, floor, reach, C1/C2 per head, sink share).
"""
from __future__ import annotations

import functools
from typing import Any

import numpy as np

from ..core.checks import pad_edge
from ..rope import rope_tables
from .loop import TrainConfig, schedule_theta
from .tasks import ANSWER_DIGITS, TASKS, task_rows, text_rows

__all__ = ["VARIANTS", "variants", "eval_tables", "evaluate", "geometry", "summarise_geometry", "DEPTHS"]

#: inference-time variants: name -> (trained schedule, change)
VARIANTS = {"rope+pi": ("rope", "pi"), "rope+yarn": ("rope", "yarn"), "rope_id+temp": ("rope_id", "temperature")}
#: needle depths evaluated (relative position of the needle in the filler)
DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
#: rows per forward call in evaluation (bounds memory at 16 L: rows x heads x n^2 float32 scores)
EVAL_ROWS_PER_CALL = 8


def variants(cfg: TrainConfig) -> list[tuple[str, str, str | None]]:
    """``(variant name, trained schedule, change)`` for every trained schedule and applicable change."""
    out: list[tuple[str, str, str | None]] = [(s, s, None) for s in cfg.schedules]
    out += [(v, s, ch) for v, (s, ch) in VARIANTS.items() if s in cfg.schedules]
    return out


def eval_tables(cfg: TrainConfig, schedule: str, change: str | None, n: int):
    """``(cos, sin, tau)`` float32 for an evaluation of length ``n``: ``(n, P)``, ``(n, P)``, ``(n,)``."""
    from ..schedules import length_temperature
    from ..schedules.hf import frequencies_from_config
    L, dh = cfg.train_len, cfg.model.head_dim
    theta, att = schedule_theta(schedule, dh, L), 1.0
    s = max(1.0, n / L)
    if change in ("pi", "yarn") and s > 1:
        rs = {"rope_type": "linear", "factor": s} if change == "pi" else \
            {"rope_type": "yarn", "factor": s, "original_max_position_embeddings": L}
        f = frequencies_from_config({"rope_theta": 10000.0, "head_dim": dh, "max_position_embeddings": L,
                                     "hidden_size": cfg.model.d_model, "num_attention_heads": cfg.model.heads,
                                     "rope_scaling": rs})
        theta, att = f.theta, f.attention_factor
    cos, sin = rope_tables(theta, n)
    tau = length_temperature(np.arange(1, n + 1), L) if change == "temperature" else np.ones(n)
    return (att * cos).astype(np.float32), (att * sin).astype(np.float32), tau.astype(np.float32)


@functools.cache
def _kernels():
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    from .model import hidden, logits

    @eqx.filter_jit
    def score(model, rows, cos, sin, tau):
        """Per row: next-token losses ``(n-1,)`` and whether every answer digit is the argmax."""
        def one(r):
            lg = logits(model, hidden(model, r, cos, sin, tau))[:-1]
            nll = -jnp.take_along_axis(jax.nn.log_softmax(lg, axis=-1), r[1:, None], axis=-1)[:, 0]
            hit = jnp.all(jnp.argmax(lg[-ANSWER_DIGITS:], axis=-1) == r[-ANSWER_DIGITS:])
            return nll, hit
        return jax.vmap(one)(rows)

    @eqx.filter_jit
    def capture(model, row, cos, sin):
        return hidden(model, row, cos, sin, None, capture=True)[1]
    return score, capture


def _scored(model, rows, tables):
    """``(nll (rows, n-1), hit (rows,))`` in calls of ``EVAL_ROWS_PER_CALL`` rows (one compiled program per n)."""
    import jax.numpy as jnp
    score, _ = _kernels()
    m = len(rows)
    rows = pad_edge(rows, m + -m % EVAL_ROWS_PER_CALL)    # full calls only: one program shape per n
    parts = [score(model, jnp.asarray(rows[i:i + EVAL_ROWS_PER_CALL]), *tables)
             for i in range(0, len(rows), EVAL_ROWS_PER_CALL)]
    return (
        np.concatenate([np.asarray(a) for a, _ in parts])[:m],
        np.concatenate([np.asarray(b) for _, b in parts])[:m],
    )


def evaluate(model, cfg: TrainConfig, data: dict, schedule: str, change: str | None, *, seed: int,
             multiples=(1, 2, 4, 8, 16), ppl_rows: int = 16, task_rows_per_cell: int = 20) -> dict[str, Any]:
    """Perplexity and retrieval accuracy of one model (one variant) at ``n = m L`` for ``m`` in ``multiples``.

    The rows depend on ``seed`` and ``n`` only: every model and variant of a seed sees the same rows.
    """
    import jax.numpy as jnp
    held, tm, dig = data["heldout"], data["recipe"]["templates"], data["recipe"]["digit_ids"]
    out: dict[str, Any] = {"lengths": [], "ppl": [], "retrieval": {k: [] for k in TASKS}}
    for m in multiples:
        n = int(m * cfg.train_len)
        tables = tuple(jnp.asarray(t) for t in eval_tables(cfg, schedule, change, n))
        rng = np.random.default_rng([seed, n, 0])
        nl, _ = _scored(model, text_rows(rng, held, n, ppl_rows), tables)
        out["lengths"].append(n)
        out["ppl"].append(float(np.exp(nl[:, n // 2 - 1:].mean())))
        for ki, kind in enumerate(TASKS):
            accs = []
            for di, depth in enumerate(DEPTHS):
                rng = np.random.default_rng([seed, n, 1 + ki, di])
                rows = task_rows(rng, held, n, task_rows_per_cell, kind=kind, depth=depth, templates=tm, digit_ids=dig)
                accs.append(float(_scored(model, rows, tables)[1].mean()))
            out["retrieval"][kind].append(accs)
    return out


def geometry(model, cfg: TrainConfig, data: dict, schedule: str, *, n: int, seed: int) -> dict[str, Any]:
    """The real-model analysis (``ropetheory.models.dump.analyze_dump``) of the model's keys and
    queries on one held-out row of ``n`` tokens (BOS first)."""
    import jax.numpy as jnp
    from ..core.layouts import from_interleaved
    from ..models.dump import analyze_dump
    _, cap_fn = _kernels()
    theta = schedule_theta(schedule, cfg.model.head_dim, cfg.train_len)
    cos, sin = (jnp.asarray(t) for t in rope_tables(theta, n, dtype=np.float32))
    row = text_rows(np.random.default_rng([seed, n, 99]), data["heldout"], n, 1)[0]
    qp, kp, qo, ko = (
        np.asarray(from_interleaved(t, "half"), dtype=np.float32) for t in cap_fn(model, jnp.asarray(row), cos, sin)
    )
    dh = cfg.model.head_dim
    cfgd = {"max_position_embeddings": cfg.train_len, "head_dim": dh, "num_attention_heads": cfg.model.heads,
            "num_key_value_heads": cfg.model.heads}
    meta = {"architecture": f"trained-{schedule}", "theta": theta.tolist(), "rotary_dim": dh, "head_dim": dh,
            "attention_factor": 1.0, "rope_type": schedule, "config": cfgd, "max_position_embeddings": cfg.train_len}
    return analyze_dump({"keys_pre": kp, "keys_post": ko, "queries_pre": qp, "queries_post": qo,
                         "positions": np.arange(n), "meta": meta})


def summarise_geometry(res: dict, L: int) -> dict[str, Any]:
    """Per model, medians over heads: the floor, ``rho`` at L and 4L, distance from the floor at L, drift
    ``rho(L) - rho(4L)``, the sink share at L and 4L and its drop, and the fractions of heads meeting C1, C2."""
    grid = list(res["grid"])

    def at(h, key, n):
        v = h[key][grid.index(n)] if n in grid else None
        return np.nan if v is None else float(v)
    heads = res["heads"]
    floor = np.array([h["predicted_floor"] for h in heads])
    r1, r4 = (np.array([at(h, "rho_measured", m * L) for h in heads]) for m in (1, 4))
    s1, s4 = (np.array([at(h, "sink_rope", m * L) for h in heads]) for m in (1, 4))

    def med(x):
        x = x[np.isfinite(x)]
        return float(np.median(x)) if x.size else None
    return {"floor": med(floor), "rho_L": med(r1), "rho_4L": med(r4), "dist_floor_L": med(r1 - floor),
            "drift_L_4L": med(r1 - r4), "sink_L": med(s1), "sink_4L": med(s4), "sink_drop": med(s1 - s4),
            "C1_frac": float(np.mean([h["C1"] for h in heads])), "C2_frac": float(np.mean([h["C2"] for h in heads]))}
