"""Step 2 of a diagnosis: the expected operator under one changed assumption (layout, offset, rounded
frequencies, another base, the scaling dropped, the other LongRoPE factors, another layer type's
parameters, per-step frequencies); the one that explains an implementation names its bug."""
from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .frameworks import round_to
from .probe import Finding, Run

__all__ = ["EXPLAINED_SHARE", "COMMON_BASES", "Alternative", "structural", "precision", "plain_alternatives",
           "config_alternatives", "best_alternative"]

#: an alternative explains an implementation when it leaves at most this share of the worst floor ratio
#: (a precision bug left under a structural one keeps the residual above the floor)
EXPLAINED_SHARE = 0.1
#: bases an implementation may hard-code or mix up: Llama 2 and most defaults (10^4), Llama 3 (5 10^5),
#: Qwen2 / CodeLlama / Gemma 3's global layers (10^6)
COMMON_BASES = (1e4, 5e5, 1e6)


#: (class, kind, one sentence, the expected output under the changed assumption, computed on demand)
Alternative = tuple[str, str, str, Callable[[], np.ndarray]]


def structural(run: Run) -> list[Alternative]:
    """The other channel layout, positions off by 1 or 2, and the positions ignored (rows as 0..n-1)."""
    other = "interleaved" if run.layout == "half" else "half"
    alts: list[Alternative] = [("layout", f"{other} pairing", f"channels paired {other} where {run.layout} is "
                                f"expected", lambda: run.exact(layout=other))]
    for k in (1, -1, 2, -2):
        alts.append(("offset", f"position {k:+d}", f"each row rotated as position p{k:+d}",
                     functools.partial(run.exact, pos=run.pos + k)))
    rows = np.arange(run.pos.size)
    if not np.array_equal(rows, run.pos):
        alts.append(("offset", "positions ignored", "rows rotated as 0, 1, ..., n-1 whatever the positions",
                     lambda: run.exact(pos=rows)))
    return alts


def precision(run: Run) -> list[Alternative]:
    """The frequencies rounded to bfloat16, float16 or float32 (each that changes them)."""
    alts: list[Alternative] = []
    for name in ("bfloat16", "float16", "float32"):
        th = round_to(run.theta, name)
        if not np.array_equal(th, run.theta):
            alts.append(("frequency precision", name, f"inverse frequencies rounded to {name} (up to "
                         f"{np.max(np.abs(th / np.where(run.theta > 0, run.theta, 1) - 1)):.2g} relative)",
                         functools.partial(run.exact, theta=th)))
    return alts


def _geometric_base(theta: np.ndarray) -> float | None:
    """``b`` when ``theta_j = b^(-j/P)`` (a plain RoPE schedule), else None."""
    P = theta.size
    if P < 2 or theta[0] != 1.0 or theta[1] <= 0:
        return None
    b = float(theta[1] ** -P)
    return b if np.allclose(theta, b ** (-np.arange(P) / P), rtol=1e-9) else None


def _base_alternatives(run: Run, base: float | None, make: Callable[[float], np.ndarray]) -> list[Alternative]:
    return [("frequency selection", "wrong base", f"base {b:g} where {base:g} is expected",
             functools.partial(run.exact, theta=make(b)))
            for b in COMMON_BASES if base is not None and not math.isclose(b, base, rel_tol=1e-6)]


def plain_alternatives(run: Run) -> list[Alternative]:
    base = _geometric_base(run.theta)
    P = run.theta.size
    return _base_alternatives(run, base, lambda b: b ** (-np.arange(P) / P))


def _config_theta(config: Mapping[str, Any], seq_len: int | None, layer_type: str | None) -> np.ndarray:
    from ..schedules.hf import frequencies_from_config
    return frequencies_from_config(config, seq_len=seq_len, layer_type=layer_type).theta


def _with_params(config: Mapping[str, Any], layer_type: str | None, **params: Any) -> dict[str, Any]:
    """``config`` with its (layer type's) rope parameters updated; ``rope_scaling`` folded into them."""
    cfg = dict(config)
    rp = cfg.pop("rope_parameters", None) or cfg.pop("rope_scaling", None) or {}
    rp = dict(rp)
    if layer_type is not None:
        rp[layer_type] = {**rp[layer_type], **params}
    else:
        rp.update(params)
    cfg["rope_parameters"] = rp
    return cfg


def config_alternatives(run: Run, config: Mapping[str, Any], seq_len: int,
                         layer_type: str | None) -> list[Alternative]:
    from ..schedules.hf import load_rope_config
    rc = load_rope_config(config, layer_type)
    alts: list[Alternative] = []
    if rc.rope_type != "default":
        dropped = _config_theta(_with_params(config, layer_type, rope_type="default"), None, layer_type)
        alts.append(("frequency selection", "scaling dropped", f"rope_type {rc.rope_type!r} applied as plain RoPE "
                     f"(base {rc.rope_theta:g})", lambda: run.exact(theta=dropped)))
    alts += _base_alternatives(run, rc.rope_theta, lambda b: _config_theta(
        _with_params(config, layer_type, rope_theta=b), seq_len, layer_type))
    raw = config.get("rope_parameters") or {}
    for other in [k for k, v in raw.items() if isinstance(v, Mapping) and k != layer_type]:
        th = _config_theta(config, seq_len, other)
        alts.append(("frequency selection", "other layer type", f"the {other} layers' rope parameters where the "
                     f"{layer_type} layers' apply", functools.partial(run.exact, theta=th)))
    if rc.rope_type == "longrope":
        orig = int(rc.require("original_max_position_embeddings"))
        short = seq_len <= orig
        th = _config_theta(config, orig // 2 if not short else orig + 1, layer_type)
        alts.append(("frequency selection", "short/long factor", f"{'long' if short else 'short'}_factor where "
                     f"{'short' if short else 'long'}_factor applies (sequence length {seq_len}, original {orig})",
                     lambda: run.exact(theta=th)))
    if rc.rope_type in ("longrope", "dynamic"):
        steps = np.stack([_config_theta(config, int(p) + 1, layer_type) for p in run.pos])
        alts.append(("frequency selection", "per-step frequencies", "each position rotated with the frequencies "
                     "of its own step (cached keys keep them) where the sequence's apply",
                     functools.partial(run.exact, theta=steps)))
    return alts


def best_alternative(run: Run, Y: np.ndarray, alts: list[Alternative], worst: float) -> Finding | None:
    best, best_ratio = None, math.inf
    for cls, kind, detail, make in alts:
        r = float(np.max(run.ratio(Y, make())))
        if r < best_ratio:
            best, best_ratio = Finding(cls, kind, detail), r
    if best is not None and best_ratio <= max(1.0, EXPLAINED_SHARE * worst):
        return best
    return None
