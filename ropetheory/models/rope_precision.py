"""Does the RoPE error matter? An exact rotary for transformers models, and its cost on a real model.

``rotary_precision(model, mode)`` replaces, for a ``with`` block, the ``(cos, sin)`` every rotary
embedding of a loaded transformers model returns:

* ``exact``: angles ``p theta_j`` from the integer position ``p`` and the schedule's float64 frequencies
  (``rt.from_config``), reduced exactly (``ropetheory.testing.exact_cos_sin``, here compiled:
  ``exact_cos_sin_compiled``), cos and sin in float64, times the attention factor, then rounded once to
  the layer's dtype. The only error is that one rounding.
  Each position's angles are reduced once per rotary embedding, layer type, dtype and mode
  (``ExactTable``, kept while the model lives); a forward then only indexes the table at its positions.
  A rotary embedding holds one set of frequencies (``inv_freq``, ``attention_scaling``: Llama, Qwen2, ...)
  or one per layer type (``{layer_type}_inv_freq``, ``{layer_type}_attention_scaling``, called with the
  layer type: Gemma 3's ``sliding_attention`` base 1e4 and ``full_attention`` base 1e6); each set's
  ``theta_j`` and attention factor come from the registry (``rotary_frequencies``: the config's rope
  parameters for that layer type), checked against the module's own float32 ``inv_freq``.
* ``transformers``: the model's own (``inv_freq`` in float32, the product ``p * inv_freq`` in float32:
  an angle error up to about ``p theta_j 2^-24``, 4e-3 rad at ``p = 65536`` for ``theta_j = 1``).
* ``bf16-cache``: the exact values rounded to bfloat16 (a cos/sin cache kept in bf16, as some servers
  keep it), then used in the layer's dtype.

``precision_cost(model, ids, L)`` runs the same tokens under each mode (chunked, a KV cache per mode) and
reports per position range ``[0, L)``, ``[L, 2L)``, ``[2L, 4L)``, ``[4L, 8L)``: the largest cos/sin error
against float64, the attention-logit error, the mean KL divergence of the next-token distribution from
``exact``'s, the share of positions whose top-1 token agrees with ``exact``'s, and perplexity.
The attention-logit error is what the model's attention sees: through ``.hook.attention_hook`` (which
only observes here: the model's own attention function runs on the same tensors), for each pass and
each range it overlaps, the pass's last query in that range (position ``p``) has its logits
``S_hj = scaling * q_h . k_j`` over the keys it attends to computed in float64 from the layer's post-RoPE
``q, k`` in every mode; ``logit_error`` is the largest ``|S - S_exact|`` over those rows, layers, heads and
keys. It holds the rotation's own error and what earlier layers' differences carry in, as the model
experiences both.
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
           "rotary_precision", "precision_cost", "rotary_embeddings", "rotary_layer_types", "rotary_frequencies"]

MODES = ("exact", "transformers", "bf16-cache")
#: rope types whose frequencies transformers changes with the length of each call (``dynamic`` grows the
#: base, ``longrope`` switches factors past its original length): an exact table of fixed frequencies
#: would silently differ from them, so they are refused
LENGTH_DEPENDENT_ROPE_TYPES = ("dynamic", "longrope")
#: the registry's attention factor and the module's ``attention_scaling`` are the same float64 formula
#: (transformers computes it in Python floats): they agree to a few units of 2^-52; a larger difference
#: means another rope configuration
ATTENTION_FACTOR_REL = 1e-12


def rotary_layer_types(module) -> tuple[str | None, ...]:
    """The frequency sets a rotary embedding holds, in transformers' naming: ``(None,)`` for a module with
    one set (``inv_freq`` and ``attention_scaling``), else every layer type ``t`` of its ``layer_types``
    that has ``{t}_inv_freq`` and ``{t}_attention_scaling`` (Gemma 3: ``full_attention``,
    ``sliding_attention``); ``()`` for any other module."""
    if hasattr(module, "inv_freq") and hasattr(module, "attention_scaling"):
        return (None,)
    types = getattr(module, "layer_types", None)
    if not isinstance(types, (list, tuple)) or not all(isinstance(t, str) for t in types):
        return ()
    return tuple(t for t in types if hasattr(module, f"{t}_inv_freq") and hasattr(module, f"{t}_attention_scaling"))


def _held(module, layer_type: str | None, name: str):
    """The module's ``name`` (``inv_freq``, ``attention_scaling``) for ``layer_type`` (transformers'
    ``{layer_type}_{name}``; plain ``name`` for a module with one set)."""
    return getattr(module, name if layer_type is None else f"{layer_type}_{name}")


def rotary_embeddings(model) -> list[Any]:
    """The model's rotary embeddings: every module holding one or more frequency sets
    (``rotary_layer_types``)."""
    mods = [m for m in model.modules() if rotary_layer_types(m)]
    if not mods:
        raise BadValue(f"{type(model).__name__} has no rotary embedding (a module with inv_freq and "
                       f"attention_scaling, or with {{layer_type}}_inv_freq per layer type)")
    return mods


def rotary_frequencies(model, module, layer_type: str | None = None) -> tuple[np.ndarray, float]:
    """``(theta, attention_factor)`` of ``layer_type``'s frequency set of rotary embedding ``module``: the
    float64 ``theta_j`` of its rotating planes (``ropetheory.schedules.model_config.read_model_config``'s
    ``frequencies`` for that layer type's rope parameters, the first ``rotary_dim / 2`` entries) and the
    attention factor, from the module's own config (``module.config``, else ``model.config``).

    Refused: a layer type the module does not hold; a rope type in ``LENGTH_DEPENDENT_ROPE_TYPES``; and
    frequencies that are not the module's, i.e. an ``inv_freq`` farther than ``retrofit.INV_FREQ_REL`` (its
    float32 computation's error bound), or its dtype's eps where that is larger, from ``theta_j`` or an
    ``attention_scaling`` farther than ``ATTENTION_FACTOR_REL`` from the factor (a retrofitted module, or a
    config that is not the module's)."""
    import torch
    from ..schedules.hf import load_rope_config
    from ..schedules.model_config import read_model_config
    from .retrofit import INV_FREQ_REL
    held = rotary_layer_types(module)
    if layer_type not in held:
        raise BadValue(f"layer_type must be one of {held} for {type(module).__name__}, got {layer_type!r}")
    config = getattr(module, "config", None) or model.config
    facts = read_model_config(config.to_dict())
    key = None if layer_type is None else facts.rope_key(layer_type)
    rope_type = load_rope_config(facts.config, key).rope_type
    if rope_type in LENGTH_DEPENDENT_ROPE_TYPES:
        raise BadValue(f"rope_type {rope_type!r} changes its frequencies with each call's length; the exact "
                       f"rotary keeps fixed ones (supported: every other rope type)")
    sched = facts.frequencies(key)
    theta = np.array(sched.theta)[: (sched.rotary_dim or 2 * sched.planes) // 2]
    inv_freq = _held(module, layer_type, "inv_freq")
    # a model cast to a narrower dtype (``model.to(torch.bfloat16)``) casts the buffer too: one more rounding
    # of half its eps, relative
    rel = max(INV_FREQ_REL, torch.finfo(inv_freq.dtype).eps)
    own = inv_freq.detach().double().cpu().numpy()
    where = type(module).__name__ + ("" if layer_type is None else f" ({layer_type})")
    if own.shape != theta.shape or np.any(np.abs(own - theta) > rel * theta):
        raise BadValue(f"{where}: its inv_freq is not the config's frequencies (retrofitted, or another "
                       f"config?): the exact rotary would change the model")
    factor = float(sched.attention_factor)
    if abs(float(_held(module, layer_type, "attention_scaling")) - factor) > ATTENTION_FACTOR_REL * factor:
        raise BadValue(f"{where}: its attention_scaling is not the config's attention factor {factor!r}")
    return theta, factor


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
    """``(cos, sin)`` of one frequency set of a rotary embedding (``layer_type``: None for a module with one
    set) for the positions ``0 .. len - 1``, in transformers' layout
    ``(len, 2 * planes)``: ``exact_cos_sin(theta, p) * scaling`` in float64, rounded once to
    ``cache_dtype`` (if any) and then to ``dtype`` (``_exact_tables``'s values, position by position).
    Each position's angles are reduced once (``builds`` counts the reductions): a call whose positions lie
    in the table only indexes it; one that reaches past it extends the table to the next multiple of
    ``TABLE_BLOCK`` (the new positions alone are reduced)."""

    def __init__(self, theta: np.ndarray, scaling: float, dtype, cache_dtype, device,
                 layer_type: str | None = None) -> None:
        import torch
        self.theta, self.scaling, self.dtype, self.cache_dtype = theta, scaling, dtype, cache_dtype
        self.layer_type = layer_type
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
#: patches it: keyed by the layer type, the frequencies, the attention factor, both dtypes and the device
_TABLES: weakref.WeakKeyDictionary[Any, dict[tuple, ExactTable]] = weakref.WeakKeyDictionary()


def exact_table(module, theta: np.ndarray, dtype, cache_dtype=None, device=None, *, layer_type: str | None = None,
                scaling: float | None = None) -> ExactTable:
    """The (possibly empty) exact table of rotary embedding ``module``'s frequency set ``layer_type`` for the
    frequencies ``theta`` and attention factor ``scaling`` (default: the module's ``attention_scaling`` for
    that layer type) in ``dtype`` (after ``cache_dtype``) on ``device`` (default: the module's), created on
    first use and the same object afterwards."""
    scaling = float(_held(module, layer_type, "attention_scaling") if scaling is None else scaling)
    device = _held(module, layer_type, "inv_freq").device if device is None else device
    key = (layer_type, theta.tobytes(), scaling, dtype, cache_dtype, str(device))
    tables = _TABLES.setdefault(module, {})
    if key not in tables:
        tables[key] = ExactTable(theta, scaling, dtype, cache_dtype, device, layer_type)
    return tables[key]


def exact_tables(model) -> list[ExactTable]:
    """Every exact table kept for ``model``'s rotary embeddings (empty before any exact or bf16-cache
    forward)."""
    return [t for m in rotary_embeddings(model) for t in _TABLES.get(m, {}).values()]


def forget_exact_tables(model) -> None:
    """Drop the exact tables kept for ``model``'s rotary embeddings (their memory is freed; the next exact
    forward builds them again)."""
    for m in rotary_embeddings(model):
        _TABLES.pop(m, None)


def _called_layer_type(module, args: tuple, kwargs: dict) -> str | None:
    """The layer type a rotary embedding's forward was called with (transformers passes it third,
    ``forward(x, position_ids, layer_type)``, where the module holds one set per layer type); None for a
    module with one set."""
    layer_type = args[0] if args else kwargs.get("layer_type")
    held = rotary_layer_types(module)
    if layer_type not in held:
        raise BadValue(f"layer_type must be one of {held} for {type(module).__name__}, got {layer_type!r}")
    return layer_type


@contextlib.contextmanager
def rotary_precision(model, mode: str) -> Iterator[None]:
    """Inside the block, every rotary embedding of ``model`` returns ``mode``'s cos and sin (module
    docstring) for the layer type it is called with, from its ``ExactTable`` (built once per module, layer
    type, dtype and mode, and kept across blocks; frequencies and attention factor from
    ``rotary_frequencies``, read once on entry); transformers' own computation is skipped. The model is
    unchanged afterwards."""
    import torch
    if mode not in MODES:
        raise BadValue(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "transformers":
        yield
        return
    mods = rotary_embeddings(model)
    freqs = {(m, t): rotary_frequencies(model, m, t) for m in mods for t in rotary_layer_types(m)}
    cache = torch.bfloat16 if mode == "bf16-cache" else None
    patched = []
    for m in mods:
        def forward(x, position_ids, *args, m=m, **kwargs):
            t = _called_layer_type(m, args, kwargs)
            theta, scaling = freqs[m, t]
            return exact_table(m, theta, x.dtype, cache, x.device, layer_type=t, scaling=scaling).lookup(position_ids)
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
    """Largest |cos - cos_64|, |sin - sin_64| of ``mode``'s tables over each position range, over every
    rotary embedding and layer type."""
    import torch
    dtype = next(model.parameters()).dtype
    err = None
    for m in rotary_embeddings(model):
        for t in rotary_layer_types(m):
            dev = _held(m, t, "inv_freq").device
            pos = torch.arange(n, device=dev)[None]
            x = torch.zeros(1, device=dev, dtype=dtype)
            with torch.no_grad(), rotary_precision(model, mode):
                cos, sin = m(x, pos) if t is None else m(x, pos, t)
            theta, scaling = rotary_frequencies(model, m, t)
            ref_c, ref_s = _exact_tables(pos, theta, scaling, torch.float64)
            e = torch.maximum((cos.double() - ref_c).abs().amax(-1), (sin.double() - ref_s).abs().amax(-1))[0]
            err = e if err is None else torch.maximum(err, e)
    assert err is not None                                      # rotary_embeddings refuses a model without one
    return [float(err[a:b].max()) for a, b in edges]


#: rows of log-probabilities compared in float64 at a time: a ``(rows, vocab)`` float64 block is 0.5 GiB at
#: Gemma 3's 262144-token vocabulary
KL_ROWS = 256


def _kl(ref, logp) -> np.ndarray:
    """Per row, ``KL(ref || logp) = sum_v exp(ref_v) (ref_v - logp_v)`` of two ``(rows, vocab)`` float32
    log-probability tensors, in float64, ``KL_ROWS`` rows at a time."""
    out = [np.zeros(0)]
    for i in range(0, ref.shape[0], KL_ROWS):
        r64 = ref[i:i + KL_ROWS].double()
        out.append((r64.exp() * (r64 - logp[i:i + KL_ROWS].double())).sum(-1).cpu().numpy())
    return np.concatenate(out)


class _LogitError:
    """The attention-logit error of the module docstring: an ``attention_hook`` handler that keeps
    ``exact``'s sampled logit rows for the current pass and compares every other mode's with them."""

    def __init__(self, edges: list[tuple[int, int]], modes: tuple[str, ...]):
        self.edges, self.mode, self.start, self.end = edges, modes[0], 0, 0
        self.ref: dict[tuple[int, int], Any] = {}
        self.err = {m: [0.0] * len(edges) for m in modes}

    def begin(self, mode: str, start: int, end: int) -> None:
        self.mode, self.start, self.end = mode, start, end

    def __call__(self, call) -> None:
        q, k = call.query, call.key
        for r, (a, b) in enumerate(self.edges):
            if not (self.start < b and self.end > a):             # the pass does not overlap the range
                continue
            j = min(self.end, b) - 1 - self.start                 # its last query in the range
            vis = call.visible()[j]
            qj = q[:, j].double().reshape(k.shape[0], call.groups, -1)
            S = (qj @ k[:, vis].double().transpose(1, 2)) * call.scaling
            key = (call.layer, r)
            if self.mode == "exact":
                self.ref[key] = S
            else:
                e = float((S - self.ref[key]).abs().max())
                self.err[self.mode][r] = max(self.err[self.mode][r], e)
        return None


def precision_cost(model, ids: np.ndarray, *, L: int, tokens_per_pass: int = 4096,
                   modes: tuple[str, ...] = MODES) -> list[dict[str, Any]]:
    """Per mode and position range: the table error, the attention-logit error, KL from ``exact``, top-1
    agreement and perplexity (module docstring).

    The modes run in lockstep, pass by pass, each with its own KV cache (one ``chunked_passes`` generator
    per mode, advanced inside that mode's ``rotary_precision`` block), so only one pass of ``exact``'s
    log-probabilities is held: memory grows with ``tokens_per_pass`` times the vocabulary, not with the
    window (a window of 8 x 32768 tokens of Gemma 3's 262144-token vocabulary would be 275 GB of float32)."""
    import torch
    from .forward import chunked_passes, pass_edges
    from .hook import attention_hook
    if modes[0] != "exact":
        raise BadValue("the first mode must be 'exact': the others are compared with it")
    n = int(ids.size)
    edges = [(a, b) for a, b in [(0, L), (L, 2 * L), (2 * L, 4 * L), (4 * L, 8 * L)] if a < n - 1]
    edges = [(a, min(b, n - 1)) for a, b in edges]
    dev = next(model.parameters()).device
    x = torch.as_tensor(ids.astype(np.int64), device=dev)[None]
    cuts = pass_edges(n, tokens_per_pass)
    passes = {mode: chunked_passes(model, x, cuts) for mode in modes}
    nll = {mode: np.zeros(n - 1) for mode in modes}
    kl = {mode: np.zeros(n - 1) for mode in modes}
    agree = {mode: np.zeros(n - 1, dtype=bool) for mode in modes}
    obs = _LogitError(edges, modes)
    with torch.no_grad(), attention_hook(model, obs):
        for s0, e0 in zip(cuts[:-1], cuts[1:], strict=True):
            ref = None
            for mode in modes:
                obs.begin(mode, s0, e0)
                with rotary_precision(model, mode):
                    s, e, out = next(passes[mode])
                logp = torch.log_softmax(out.logits[0].float(), -1)
                del out                                         # one pass's logits held at a time
                m = min(e, n - 1) - s
                tgt = x[0, s + 1:s + 1 + m]
                nll[mode][s:s + m] = -logp[:m].gather(1, tgt[:, None])[:, 0].double().cpu().numpy()
                if ref is None:
                    ref = logp
                    agree[mode][s:s + m] = True
                else:
                    # the log-probabilities themselves carry float32 rounding, so |KL| below about 1e-7 (a
                    # few units of 2^-24) is rounding, and may be slightly negative
                    kl[mode][s:s + m] = _kl(ref[:m], logp[:m])
                    agree[mode][s:s + m] = (ref.argmax(-1) == logp.argmax(-1))[:m].cpu().numpy()
    rows = []
    for mode in modes:
        err = _table_error(model, n, mode, edges)
        for r, ((a, b), te) in enumerate(zip(edges, err, strict=True)):
            rows.append({"mode": mode, "start": a, "end": b, "table_error": te,
                         "logit_error": obs.err[mode][r],
                         "mean_kl": float(kl[mode][a:b].mean()), "max_kl": float(kl[mode][a:b].max()),
                         "top1_agreement": float(agree[mode][a:b].mean()),
                         "ppl": float(np.exp(nll[mode][a:b].mean()))})
    return rows
