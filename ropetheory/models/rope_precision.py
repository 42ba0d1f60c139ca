"""Does the RoPE error matter? An exact rotary for transformers models, and its cost on a real model.

``rotary_precision(model, mode)`` replaces, for a ``with`` block, the ``(cos, sin)`` every rotary
embedding of a loaded transformers model returns:

* ``exact``: angles ``p theta_j`` from the integer position ``p`` and the schedule's float64 frequencies
  (``rt.from_config``), reduced exactly (``ropetheory.testing.exact_cos_sin``), cos and sin in float64,
  times the attention factor, then rounded once to the layer's dtype. The only error is that one rounding.
* ``transformers``: the model's own (``inv_freq`` in float32, the product ``p * inv_freq`` in float32:
  an angle error up to about ``p theta_j 2^-24``, 4e-3 rad at ``p = 65536`` for ``theta_j = 1``).
* ``bf16-cache``: the exact values rounded to bfloat16 (a cos/sin cache kept in bf16, as some servers
  keep it), then used in the layer's dtype.

``precision_cost(model, ids, L)`` runs the same tokens under each mode (chunked, with a KV cache) and
reports per position range ``[0, L)``, ``[L, 2L)``, ``[2L, 4L)``, ``[4L, 8L)``: the largest cos/sin error
against float64, the mean KL divergence of the next-token distribution from ``exact``'s, the share of
positions whose top-1 token agrees with ``exact``'s, and perplexity.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..core.errors import BadValue

__all__ = ["MODES", "rotary_precision", "precision_cost"]

MODES = ("exact", "transformers", "bf16-cache")


def _model_theta(model) -> np.ndarray:
    """The frequencies of the model's rotating planes, float64, from its config (``rt.from_config``)."""
    from ..schedules.hf import frequencies_from_config
    sched = frequencies_from_config(model.config.to_dict())
    return np.array(sched.theta)[: (sched.rotary_dim or 2 * sched.planes) // 2]


def _exact_tables(position_ids, theta: np.ndarray, scaling: float, dtype, cache_dtype=None):
    """transformers' ``(cos, sin)`` layout ``(B, n, 2 * planes)`` from the exactly reduced angles
    (``ropetheory.testing.exact_cos_sin``), times ``scaling``, rounded once to ``cache_dtype`` (if any) and
    then to ``dtype``."""
    import torch
    from ..testing import exact_cos_sin
    pos = position_ids.detach().cpu().numpy().astype(np.int64)
    c, s = exact_cos_sin(theta, pos.ravel())
    out = []
    for table in (c, s):
        t = torch.as_tensor(np.concatenate((table, table), axis=-1).reshape(*pos.shape, -1) * scaling,
                            device=position_ids.device)
        out.append((t if cache_dtype is None else t.to(cache_dtype)).to(dtype))
    return out[0], out[1]


@contextlib.contextmanager
def rotary_precision(model, mode: str) -> Iterator[None]:
    """Inside the block, every rotary embedding of ``model`` returns ``mode``'s cos and sin (module
    docstring); the model is unchanged afterwards."""
    import torch
    from .retrofit import rotary_modules
    if mode not in MODES:
        raise BadValue(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "transformers":
        yield
        return
    theta = _model_theta(model)
    cache = torch.bfloat16 if mode == "bf16-cache" else None
    handles = []
    for m in rotary_modules(model):
        def hook(module, args, kwargs, output, m=m):
            position_ids = kwargs["position_ids"] if "position_ids" in kwargs else args[1]
            return _exact_tables(position_ids, theta, float(m.attention_scaling), output[0].dtype, cache)
        handles.append(m.register_forward_hook(hook, with_kwargs=True))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _table_error(model, n: int, mode: str, edges: list[tuple[int, int]]) -> list[float]:
    """Largest |cos - cos_64|, |sin - sin_64| of ``mode``'s tables over each position range."""
    import torch
    from .retrofit import rotary_modules
    m = rotary_modules(model)[0]
    dev = m.inv_freq.device
    pos = torch.arange(n, device=dev)[None]
    x = torch.zeros(1, device=dev, dtype=next(model.parameters()).dtype)
    with torch.no_grad(), rotary_precision(model, mode):
        cos, sin = m(x, pos)
    ref_c, ref_s = _exact_tables(pos, _model_theta(model), float(m.attention_scaling), torch.float64)
    err = torch.maximum((cos.double() - ref_c).abs().amax(-1), (sin.double() - ref_s).abs().amax(-1))[0]
    return [float(err[a:b].max()) for a, b in edges]


def precision_cost(model, ids: np.ndarray, *, L: int, tokens_per_pass: int = 4096,
                   modes: tuple[str, ...] = MODES) -> list[dict[str, Any]]:
    """Per mode and position range: the table error, KL from ``exact``, top-1 agreement and perplexity."""
    import torch
    from .forward import chunked_passes, pass_edges
    if modes[0] != "exact":
        raise BadValue("the first mode must be 'exact': the others are compared with it")
    n = int(ids.size)
    edges = [(a, b) for a, b in [(0, L), (L, 2 * L), (2 * L, 4 * L), (4 * L, 8 * L)] if a < n - 1]
    edges = [(a, min(b, n - 1)) for a, b in edges]
    dev = next(model.parameters()).device
    x = torch.as_tensor(ids.astype(np.int64), device=dev)[None]
    ref_logp: list[Any] = []
    rows = []
    for mode in modes:
        nll, kl, agree = np.zeros(n - 1), np.zeros(n - 1), np.zeros(n - 1, dtype=bool)
        with rotary_precision(model, mode), torch.no_grad():
            for k, (s, e, out) in enumerate(chunked_passes(model, x, pass_edges(n, tokens_per_pass))):
                logp = torch.log_softmax(out.logits[0].float(), -1)
                del out                                         # one pass's logits held at a time
                m = min(e, n - 1) - s
                tgt = x[0, s + 1:s + 1 + m]
                nll[s:s + m] = -logp[:m].gather(1, tgt[:, None])[:, 0].double().cpu().numpy()
                if mode == "exact":
                    ref_logp.append(logp)
                    agree[s:s + m] = True
                else:
                    ref = ref_logp[k]
                    # in float64; the log-probabilities themselves carry float32 rounding, so |KL| below
                    # about 1e-7 (a few units of 2^-24) is rounding, and may be slightly negative
                    r64 = ref[:m].double()
                    kl[s:s + m] = (r64.exp() * (r64 - logp[:m].double())).sum(-1).cpu().numpy()
                    agree[s:s + m] = (ref.argmax(-1) == logp.argmax(-1))[:m].cpu().numpy()
        err = _table_error(model, n, mode, edges)
        for (a, b), te in zip(edges, err, strict=True):
            rows.append({"mode": mode, "start": a, "end": b, "table_error": te, "mean_kl": float(kl[a:b].mean()),
                         "max_kl": float(kl[a:b].max()), "top1_agreement": float(agree[a:b].mean()),
                         "ppl": float(np.exp(nll[a:b].mean()))})
    return rows
