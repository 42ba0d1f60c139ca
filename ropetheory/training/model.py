"""A small decoder-only transformer (equinox modules, pure forward function) with the package's RoPE.

Pre-norm (RMSNorm with a gain), causal multi-head attention, a GELU MLP of width ``4 D``, tied input and
output embeddings. Attention at layer ``l``, head ``h``, for query position ``i`` and key ``j <= i``:

    a_ij = softmax_j( tau_i * (R_i q_i) . (R_j k_j) / sqrt(d_h) ),

with ``R_i`` RoPE's rotation (``ropetheory.rope.rotate``, interleaved planes, from the exactly
reduced tables of ``ropetheory.rope.rope_tables``: float32 tables off by <= 3e-8 at any position;
the products are float32) and ``tau_i`` a per-query temperature (1 except for RoPE-ID's length
temperature at inference). The schedule is an input, not a parameter: the same model code trains
RoPE, half-RoPE, high-frequency RoPE, RoPE-ID and NoPE (``theta = 0``: the rotation is the identity),
and many models train at once, vmapped over stacked parameters.
"""
from __future__ import annotations

import dataclasses
import math

import equinox as eqx
import jax
import jax.numpy as jnp

from ..rope import rotate
from ..core.checks import check_integer
from ..core.errors import BadValue

__all__ = ["ModelConfig", "LM", "init_lm", "hidden", "logits", "loss", "param_count"]

#: RMSNorm's epsilon (float32 activations)
RMS_EPS = 1e-6


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    vocab: int = 8192
    d_model: int = 256
    layers: int = 4
    heads: int = 4

    def __post_init__(self):
        for k in ("vocab", "d_model", "layers", "heads"):
            object.__setattr__(self, k, check_integer(k, getattr(self, k), lo=1))
        if self.d_model % self.heads or (self.d_model // self.heads) % 2:
            raise BadValue(f"d_model {self.d_model} must split into {self.heads} heads of even width")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.heads


class Block(eqx.Module):
    g1: jax.Array
    wqkv: jax.Array      # (3 D, D)
    wo: jax.Array        # (D, D)
    g2: jax.Array
    w1: jax.Array        # (4 D, D)
    w2: jax.Array        # (D, 4 D)


class LM(eqx.Module):
    embed: jax.Array     # (V, D), tied with the output layer
    blocks: tuple
    gf: jax.Array
    heads: int = eqx.field(static=True)


def init_lm(cfg: ModelConfig, key: jax.Array) -> LM:
    """Normal(0, 0.02) weights; the residual outputs (``wo``, ``w2``) scaled by ``1/sqrt(2 layers)``."""
    D, std = cfg.d_model, 0.02
    keys = jax.random.split(key, 1 + 4 * cfg.layers)
    out_std = std / math.sqrt(2 * cfg.layers)

    def nrm(k, shape, s):
        return s * jax.random.normal(k, shape, jnp.float32)
    blocks = tuple(Block(g1=jnp.ones(D), wqkv=nrm(keys[1 + 4 * i], (3 * D, D), std),
                         wo=nrm(keys[2 + 4 * i], (D, D), out_std), g2=jnp.ones(D),
                         w1=nrm(keys[3 + 4 * i], (4 * D, D), std), w2=nrm(keys[4 + 4 * i], (D, 4 * D), out_std))
                   for i in range(cfg.layers))
    return LM(embed=nrm(keys[0], (cfg.vocab, D), std), blocks=blocks, gf=jnp.ones(D), heads=cfg.heads)


def param_count(model: LM) -> int:
    return int(sum(x.size for x in jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_array))))


def _rms(x, g):
    return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + RMS_EPS) * g


def hidden(model: LM, tokens: jax.Array, cos: jax.Array, sin: jax.Array, tau: jax.Array | None = None,
           capture: bool = False):
    """Final hidden states ``(n, D)`` of one row ``tokens (n,)``; with ``capture``, also per layer the
    queries and keys before and after RoPE, ``(layers, heads, n, d_h)`` each (q_pre, k_pre, q_post, k_post)."""
    n = tokens.shape[0]
    H = model.heads
    x = model.embed[tokens]
    D = x.shape[-1]
    dh = D // H
    mask = jnp.tril(jnp.ones((n, n), bool))
    taus = jnp.ones(n, x.dtype) if tau is None else tau.astype(x.dtype)
    caps = []
    for b in model.blocks:
        h = _rms(x, b.g1)
        q, k, v = (h @ b.wqkv.T).reshape(n, 3, H, dh).transpose(1, 2, 0, 3)      # (H, n, dh) each
        qr, kr = rotate(q, cos, sin), rotate(k, cos, sin)
        if capture:
            caps.append((q, k, qr, kr))
        s = jnp.einsum("hid,hjd->hij", qr * taus[None, :, None], kr) / math.sqrt(dh)
        s = jnp.where(mask[None], s, -jnp.inf)
        o = jnp.einsum("hij,hjd->hid", jax.nn.softmax(s, axis=-1), v).transpose(1, 0, 2).reshape(n, D)
        x = x + o @ b.wo.T
        h = _rms(x, b.g2)
        x = x + jax.nn.gelu(h @ b.w1.T) @ b.w2.T
    x = _rms(x, model.gf)
    if capture:
        return x, tuple(jnp.stack(t) for t in zip(*caps, strict=False))
    return x


def logits(model: LM, x: jax.Array) -> jax.Array:
    """Next-token logits from final hidden states (tied embeddings)."""
    return x @ model.embed.T


def loss(model: LM, rows: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Mean next-token cross-entropy (nats) over a batch ``rows (B, n)``."""
    import optax

    def one(r):
        lg = logits(model, hidden(model, r, cos, sin))[:-1]
        return optax.softmax_cross_entropy_with_integer_labels(lg, r[1:]).mean()
    return jax.vmap(one)(rows).mean()
