"""A key dump (``.capture``'s format: pre- and post-RoPE keys and queries, ``(layers, heads, n, head_dim)``,
and a ``meta`` naming the schedule) through the real-model analysis: the streaming statistics
(``.stream.LayerStream``, chunk by chunk, no ``n x n`` matrix), the one rotation check (``.rotation``),
the per-head analysis (``.study.analyze_streams``) and the claims. Used by ``ropetheory analyze DUMP``
and by ``ropetheory.training`` for the keys of a trained model.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .rotation import check_rotation, chunk_is_checked, unit_roundoff_of

__all__ = ["analyze_dump", "DUMP_CHUNK"]

#: positions fed to the streaming statistics per step when a dump is analysed
DUMP_CHUNK = 4096


def analyze_dump(dump: dict) -> dict[str, Any]:
    """Stream a key dump through ``ropetheory.models.stream.LayerStream`` and analyse it; the rotation is
    checked on the dump's own arrays (``.rotation``: first and last chunk) with the unit roundoff the capture
    recorded, or, where the dump records none, that of its post-RoPE arrays' type (the type the rotated
    vectors were stored in: a float64 dump is held to float64's bound, not float32's)."""
    from . import study
    from .stream import LayerStream
    meta = dump["meta"]
    Kp, Ko, Qp, Qo = dump["keys_pre"], dump["keys_post"], dump["queries_pre"], dump["queries_post"]
    layers, kv_heads, n, d = Kp.shape
    cfg = meta.get("config", {}) or {}
    L = study.training_length(cfg, meta.get("max_position_embeddings") or n)
    grid = study.analysis_grid(n, L)
    sched = {"layer_type": "full_attention", "theta": np.asarray(meta["theta"], dtype=np.float64),
             "rotary_dim": int(meta["rotary_dim"]), "attention_factor": float(meta.get("attention_factor", 1.0)),
             "window": None, "rope_type": meta.get("rope_type"), "rope_theta": meta.get("rope_theta")}
    unit = (meta.get("rotation_check") or {}).get("unit_roundoff") or max(unit_roundoff_of(Ko.dtype),
                                                                          unit_roundoff_of(Qo.dtype))
    streams = []
    for li in range(layers):
        st = LayerStream(n_total=n, grid=grid, kv_heads=kv_heads, q_heads=Qp.shape[1], head_dim=d,
                         scale=study.attention_scale(cfg, d), query_stride=max(1, n // 4096))
        for s in range(0, n, DUMP_CHUNK):
            e = min(n, s + DUMP_CHUNK)
            q_pre, k_pre, q_post, k_post = Qp[li, :, s:e], Kp[li, :, s:e], Qo[li, :, s:e], Ko[li, :, s:e]
            if chunk_is_checked(s, e, n):
                st.rotation = check_rotation(((q_pre, q_post), (k_pre, k_post)), sched["theta"], sched["rotary_dim"],
                                             np.arange(s, e), sched["attention_factor"], unit).merged(st.rotation)
            st.add(q_pre, k_pre, q_post, k_post)
        streams.append(st)
    cap = {"streams": streams, "schedules": [sched] * layers, "grid": grid, "nll": np.zeros(max(n - 1, 1)),
           "seconds": 0.0}
    res = study.analyze_streams(cap, L=L)
    res["meta"] = {"model": meta.get("architecture", "dump"), "quantised": False,
                   "rotation_check": meta.get("rotation_check"), "rope_type": meta.get("rope_type")}
    res["claims"] = study.claims(res)
    return res
