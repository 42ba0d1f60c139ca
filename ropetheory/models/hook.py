"""The one place where ropetheory meets a transformers model's attention: ``attention_hook``.

transformers (>= 5) looks each layer's attention function up by name in ``AttentionInterface``
(``config._attn_implementation``) and the mask function in ``AttentionMaskInterface``. This module
registers one name, ``HOOK_NAME``, in both; ``attention_hook(model, handler)`` points the model at it
(``model.set_attn_implementation``) for a ``with`` block and restores the model's own implementation
afterwards. Every attention layer call then reaches ``handler(call)`` with an ``AttentionCall``: the
chunk's post-RoPE queries, the post-RoPE keys the layer attends to (cache included), their positions,
and the ``cos, sin`` the layer rotated with (read, unchanged, by a forward pre-hook on the attention
module: transformers passes them to the layer, not to the attention function). The pre-RoPE vectors
are recovered from those ``cos, sin`` by the inverse rotation in float64.

``handler`` returns ``None`` (the model's own attention function then runs on the same tensors:
the same numbers as without the hook) or the attention output ``(B, c, Hq, d)`` it computed, usually
``eager(call, edit)``: float64 logits, one kv head's group at a time, which ``edit`` may change.
"""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
from typing import Any
from collections.abc import Callable
from ..core.errors import BadValue, BadType

__all__ = ["HOOK_NAME", "AttentionCall", "attention_hook", "eager", "invert_rope"]

HOOK_NAME = "ropetheory"

#: attention-function keywords that change the softmax (Gemma 2's logit soft-capping, gpt-oss's learned
#: sinks): ``eager`` refuses a layer that passes one rather than compute other attention than the model's
UNSUPPORTED_BY_EAGER = ("softcap", "s_aux", "sinks")

#: the models under a hook, by ``id`` of the config their attention modules read
_ACTIVE: dict[int, _HookState] = {}


@dataclasses.dataclass
class _HookState:
    handler: Callable
    original: str
    mask_impl: str
    rope: dict = dataclasses.field(default_factory=dict)     # id(attention module) -> (cos, sin) of the chunk
    tables: dict = dataclasses.field(default_factory=dict)   # layer type -> (cos, sin) by position, so far


def invert_rope(x, cos, sin):
    """Pre-RoPE vectors from transformers' ``x * cos + rotate_half(x) * sin`` on the first
    ``r = cos.shape[-1]`` channels (the rest pass through), in float64:
    ``(x_post * cos - rotate_half(x_post) * sin) / (cos^2 + sin^2)`` per plane (the denominator is the
    attention factor squared). ``x (..., n, d)``, ``cos, sin (n, r)``."""
    import torch
    x = x.double()
    r = cos.shape[-1]
    c, s = cos.double(), sin.double()
    rot, rest = x[..., :r], x[..., r:]
    half = torch.cat((-rot[..., r // 2:], rot[..., : r // 2]), dim=-1)
    return torch.cat(((rot * c - half * s) / (c * c + s * s), rest), dim=-1)


@dataclasses.dataclass
class AttentionCall:
    """One attention layer's call (batch element 0). ``query (Hq, c, d)`` and ``key (Hkv, Lk, d)`` post-RoPE,
    ``value (Hkv, Lk, d)``; ``q_pos (c,)``, ``k_pos (Lk,)`` absolute positions (the cache holds a contiguous
    run of keys ending at the chunk's last position); ``mask`` as the model's mask function built it;
    ``scaling`` the logit scale; ``cos, sin (c, r)`` the chunk's rotation."""
    layer: int
    module: Any
    query: Any
    key: Any
    value: Any
    mask: Any
    scaling: float
    q_pos: Any
    k_pos: Any
    cos: Any
    sin: Any
    _table: tuple
    extra: dict = dataclasses.field(default_factory=dict)     # the attention function's other keywords
    batch: int = 1                                             # the batch the layer ran (element 0 is here)

    @property
    def groups(self) -> int:
        return self.query.shape[0] // self.key.shape[0]

    def query_pre(self):
        """The chunk's pre-RoPE queries ``(Hq, c, d)``, float64."""
        return invert_rope(self.query, self.cos, self.sin)

    def key_pre(self, chunk_only: bool = False):
        """Pre-RoPE keys ``(Hkv, Lk, d)`` (``chunk_only``: the chunk's ``(Hkv, c, d)``), float64."""
        if chunk_only:
            return invert_rope(self.key[:, -self.query.shape[1]:], self.cos, self.sin)
        cos, sin = self._table
        return invert_rope(self.key, cos[self.k_pos], sin[self.k_pos])

    def visible(self):
        """``(c, Lk)`` bool: the keys each query attends to, read from the model's mask (causal when the
        mask function returned none)."""
        import torch
        if self.mask is None:
            return self.k_pos[None, :] <= self.q_pos[:, None]
        m = self.mask[0, 0]
        return m if m.dtype == torch.bool else m == 0


def _layer_type(module) -> str:
    types = getattr(module.config, "layer_types", None)
    return types[module.layer_idx] if types else "full_attention"


def _stash_rope(state: _HookState):
    def pre_hook(module, args, kwargs):
        sig = inspect.signature(module.forward)
        pe = sig.bind_partial(*args, **kwargs).arguments.get("position_embeddings")
        if pe is None:
            raise BadValue(f"{type(module).__name__} received no position_embeddings: the model does not use RoPE")
        state.rope[id(module)] = pe
    return pre_hook


def _record_table(state: _HookState, module, q_pos, cos, sin):
    """Keep the rotation of every position seen, per layer type, for the pre-RoPE keys of the cache."""
    import torch
    key = _layer_type(module)
    end = int(q_pos[-1]) + 1
    old = state.tables.get(key)
    if old is None or old[0].shape[0] < end:
        grown = [torch.zeros((end, cos.shape[-1]), dtype=cos.dtype, device=cos.device) for _ in range(2)]
        if old is not None:
            for g, o in zip(grown, old, strict=True):
                g[: o.shape[0]] = o
        old = tuple(grown)
    old[0][q_pos], old[1][q_pos] = cos, sin
    state.tables[key] = old
    return old


def _attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    import torch
    state = _ACTIVE[id(module.config)]
    cos, sin = (t[0] for t in state.rope[id(module)])
    c = query.shape[2]
    pos = kwargs.get("position_ids")
    q_pos = pos[0].to(query.device) if pos is not None else torch.arange(key.shape[2] - c, key.shape[2],
                                                                         device=query.device)
    end = int(q_pos[-1]) + 1
    k_pos = torch.arange(end - key.shape[2], end, device=query.device)
    call = AttentionCall(layer=module.layer_idx, module=module, query=query[0], key=key[0], value=value[0],
                         mask=attention_mask, scaling=float(scaling if scaling is not None else module.scaling),
                         q_pos=q_pos, k_pos=k_pos, cos=cos, sin=sin,
                         _table=_record_table(state, module, q_pos, cos, sin), extra=kwargs,
                         batch=int(query.shape[0]))
    out = state.handler(call)
    if out is not None:
        return out, None
    inner = ALL_ATTENTION_FUNCTIONS.get_interface(state.original, _eager_forward(module))
    return inner(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)


def _eager_forward(module):
    import sys
    return sys.modules[type(module).__module__].eager_attention_forward


def _mask(*args, config=None, **kwargs):
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
    impl = _ACTIVE[id(config)].mask_impl
    return ALL_MASK_ATTENTION_FUNCTIONS[impl](*args, config=config, **kwargs)


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface
    AttentionInterface.register(HOOK_NAME, _attention)
    AttentionMaskInterface.register(HOOK_NAME, _mask)


@contextlib.contextmanager
def attention_hook(model, handler: Callable, *, eager_mask: bool = False):
    """Route every attention layer of ``model`` through ``handler(call: AttentionCall)`` inside the block.

    ``eager_mask``: masks in the eager format (additive, 0 where visible), for a handler computing
    attention itself; otherwise the model's own mask function. On exit the model's attention
    implementation, its modules and the interfaces' lookups are as before.
    """
    if not callable(handler):
        raise BadType(f"handler must be callable, got {type(handler).__name__}")
    if not hasattr(model, "set_attn_implementation"):
        raise BadType(f"model must be a transformers PreTrainedModel, got {type(model).__name__}")
    _register()
    original = model.config._attn_implementation or "eager"
    if original == HOOK_NAME:
        raise BadValue("model is already under an attention_hook (hooks do not nest)")
    mods = [m for m in model.modules() if hasattr(m, "layer_idx") and hasattr(m, "config")
            and "position_embeddings" in inspect.signature(m.forward).parameters]
    if not mods:
        raise BadValue(f"{type(model).__name__} has no attention module taking position_embeddings "
                         f"(does not use RoPE)")
    state = _HookState(handler=handler, original=original, mask_impl="eager" if eager_mask else original)
    configs = {id(model.config)} | {id(m.config) for m in mods}
    handles = [m.register_forward_pre_hook(_stash_rope(state), with_kwargs=True) for m in mods]
    for cid in configs:
        _ACTIVE[cid] = state
    try:
        model.set_attn_implementation(HOOK_NAME)
        yield state
    finally:
        model.set_attn_implementation(original)
        for h in handles:
            h.remove()
        for cid in configs:
            _ACTIVE.pop(cid, None)


def eager(call: AttentionCall, edit: Callable | None = None, observe: Callable | None = None):
    """Attention computed here, one kv head's group at a time: float64 logits ``S (G, c, Lk)`` =
    ``scaling * q . k``; ``edit(call, h, S)`` may change ``S`` in place (the invisible entries are
    ignored); then ``-inf`` where the mask hides a key, ``observe(call, h, S)``, softmax and the values.
    Returns ``(B=1, c, Hq, d)`` in the values' dtype, as transformers' attention functions do."""
    import torch
    if call.batch != 1:
        raise BadValue(f"eager attention runs one sequence at a time; the model ran a batch of {call.batch}")
    unknown = sorted(k for k in UNSUPPORTED_BY_EAGER if call.extra.get(k) is not None)
    if unknown:
        raise BadValue(f"{type(call.module).__name__} passes {unknown} to its attention function: the eager "
                         f"path here computes plain softmax attention and would silently differ")
    G, vis = call.groups, call.visible()
    q, k, v = call.query.double(), call.key.double(), call.value.double()
    outs = []
    for h in range(k.shape[0]):
        S = (q[h * G:(h + 1) * G] @ k[h].T) * call.scaling
        if edit is not None:
            edit(call, h, S)
        S = S.masked_fill(~vis, -torch.inf)
        if observe is not None:
            observe(call, h, S)
        outs.append(torch.softmax(S, dim=-1) @ v[h])
    out = torch.cat(outs, dim=0).to(call.value.dtype)
    return out.transpose(0, 1).unsqueeze(0).contiguous()
