"""Does the RoPE error matter? An exact rotary for transformers models, and its cost on a real model.

``rotary_precision(model, mode)`` replaces, for a ``with`` block, the ``(cos, sin)`` every rotary
embedding of a loaded transformers model returns:

* ``exact``: angles ``p theta_j`` from the integer position ``p`` and the schedule's float64 frequencies
  (``rt.from_config``), reduced exactly (``ropetheory.testing.exact_cos_sin``, here compiled:
  ``exact_cos_sin_compiled``), cos and sin in float64, times the attention factor, then rounded once to
  the layer's dtype. The only error is that one rounding.
  Each position's angles are reduced once per rotary embedding and dtype (``ExactTable``, kept while the
  model lives); a forward then only indexes the table at its positions.
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
import functools
import weakref
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..core.errors import BadValue

__all__ = ["MODES", "ExactTable", "exact_table", "exact_tables", "forget_exact_tables", "exact_cos_sin_compiled",
           "rotary_precision", "precision_cost"]

MODES = ("exact", "transformers", "bf16-cache")


def _model_theta(model) -> np.ndarray:
    """The frequencies of the model's rotating planes, float64, from its config (``rt.from_config``)."""
    from ..schedules.hf import frequencies_from_config
    sched = frequencies_from_config(model.config.to_dict())
    return np.array(sched.theta)[: (sched.rotary_dim or 2 * sched.planes) // 2]


@functools.cache
def _compiled_angles():
    import jax
    from ..core.angles import rope_angles
    return jax.jit(rope_angles)


def exact_cos_sin_compiled(theta: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``ropetheory.testing.exact_cos_sin(theta, positions)`` bit for bit, its reduction compiled: the
    reduction's products of position pieces and frequency chunks are exact and each partial sum is taken
    mod 1 exactly, so fusing its ~40 elementwise passes over ``(n, P)`` into one changes no bit (tested)
    and runs about 20x faster than the passes one by one."""
    import jax.numpy as jnp
    from ..core.angles import turn_chunks
    from ..core.checks import check_positions, pad_to_bucket
    pos = check_positions(positions)
    if not pos.size:
        return np.zeros((0, theta.size)), np.zeros((0, theta.size))
    ang = np.asarray(_compiled_angles()(jnp.asarray(pad_to_bucket(pos)), jnp.asarray(turn_chunks(theta))))
    ang = ang[: pos.size]
    return np.cos(ang), np.sin(ang)


def _exact_tables(position_ids, theta: np.ndarray, scaling: float, dtype, cache_dtype=None):
    """transformers' ``(cos, sin)`` layout ``(B, n, 2 * planes)`` from the exactly reduced angles
    (``exact_cos_sin_compiled``), times ``scaling``, rounded once to ``cache_dtype`` (if any) and then to
    ``dtype``."""
    import torch
    pos = position_ids.detach().cpu().numpy().astype(np.int64)
    c, s = exact_cos_sin_compiled(theta, pos.ravel())
    out = []
    for table in (c, s):
        t = torch.as_tensor(np.concatenate((table, table), axis=-1).reshape(*pos.shape, -1) * scaling,
                            device=position_ids.device)
        out.append((t if cache_dtype is None else t.to(cache_dtype)).to(dtype))
    return out[0], out[1]


#: positions are added to an exact table in blocks of this many (rounded up), so a decoding loop (one new
#: position per call) reduces angles once per block instead of once per call; a float32 block of head_dim
#: 64 is 2 MiB of cos and sin
TABLE_BLOCK = 4096


class ExactTable:
    """``(cos, sin)`` of one rotary embedding for the positions ``0 .. len - 1``, in transformers' layout
    ``(len, 2 * planes)``: ``exact_cos_sin(theta, p) * scaling`` in float64, rounded once to
    ``cache_dtype`` (if any) and then to ``dtype`` (``_exact_tables``'s values, position by position).
    Each position's angles are reduced once (``builds`` counts the reductions): a call whose positions lie
    in the table only indexes it; one that reaches past it extends the table to the next multiple of
    ``TABLE_BLOCK`` (the new positions alone are reduced)."""

    def __init__(self, theta: np.ndarray, scaling: float, dtype, cache_dtype, device) -> None:
        import torch
        self.theta, self.scaling, self.dtype, self.cache_dtype = theta, scaling, dtype, cache_dtype
        width = 2 * theta.size
        self.cos = torch.empty(0, width, dtype=dtype, device=device)
        self.sin = torch.empty(0, width, dtype=dtype, device=device)
        self.builds = 0

    def __len__(self) -> int:
        return int(self.cos.shape[0])

    def extend(self, n: int) -> None:
        """Reduce the angles of positions ``len .. n' - 1``, ``n' = n`` rounded up to ``TABLE_BLOCK``."""
        import torch
        if n <= len(self):
            return
        stop = -(-n // TABLE_BLOCK) * TABLE_BLOCK
        pos = torch.arange(len(self), stop, device=self.cos.device)
        c, s = _exact_tables(pos, self.theta, self.scaling, self.dtype, self.cache_dtype)
        self.cos, self.sin = torch.cat((self.cos, c)), torch.cat((self.sin, s))
        self.builds += 1

    def lookup(self, position_ids):
        """The rows at ``position_ids`` (any shape ``S``): two tensors ``S + (2 * planes,)``."""
        import torch
        pos = position_ids.to(self.cos.device)
        if pos.numel():
            lo, hi = torch.aminmax(pos)
            if int(lo) < 0:
                raise BadValue(f"position_ids must be >= 0, got {int(lo)}")
            self.extend(int(hi) + 1)
        return self.cos[pos], self.sin[pos]


#: the exact tables of each rotary embedding, kept while the module lives and reused by every block that
#: patches it: keyed by the frequencies, the attention factor, both dtypes and the device
_TABLES: weakref.WeakKeyDictionary[Any, dict[tuple, ExactTable]] = weakref.WeakKeyDictionary()


def exact_table(module, theta: np.ndarray, dtype, cache_dtype=None, device=None) -> ExactTable:
    """The (possibly empty) exact table of rotary embedding ``module`` for the frequencies ``theta`` in
    ``dtype`` (after ``cache_dtype``) on ``device`` (default: the module's), created on first use and the
    same object afterwards."""
    scaling = float(module.attention_scaling)
    device = module.inv_freq.device if device is None else device
    key = (theta.tobytes(), scaling, dtype, cache_dtype, str(device))
    tables = _TABLES.setdefault(module, {})
    if key not in tables:
        tables[key] = ExactTable(theta, scaling, dtype, cache_dtype, device)
    return tables[key]


def exact_tables(model) -> list[ExactTable]:
    """Every exact table kept for ``model``'s rotary embeddings (empty before any exact or bf16-cache
    forward)."""
    from .retrofit import rotary_modules
    return [t for m in rotary_modules(model) for t in _TABLES.get(m, {}).values()]


def forget_exact_tables(model) -> None:
    """Drop the exact tables kept for ``model``'s rotary embeddings (their memory is freed; the next exact
    forward builds them again)."""
    from .retrofit import rotary_modules
    for m in rotary_modules(model):
        _TABLES.pop(m, None)


@contextlib.contextmanager
def rotary_precision(model, mode: str) -> Iterator[None]:
    """Inside the block, every rotary embedding of ``model`` returns ``mode``'s cos and sin (module
    docstring) from its ``ExactTable`` (built once per module, dtype and mode, and kept across blocks);
    transformers' own computation is skipped. The model is unchanged afterwards."""
    import torch
    from .retrofit import rotary_modules
    if mode not in MODES:
        raise BadValue(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "transformers":
        yield
        return
    theta = _model_theta(model)
    cache = torch.bfloat16 if mode == "bf16-cache" else None
    patched = []
    for m in rotary_modules(model):
        def forward(x, position_ids, *args, m=m, **kwargs):
            return exact_table(m, theta, x.dtype, cache, x.device).lookup(position_ids)
        patched.append((m, m.__dict__.get("forward")))
        m.forward = forward
    try:
        yield
    finally:
        for m, before in patched:
            if before is None:
                del m.forward
            else:
                m.forward = before


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
