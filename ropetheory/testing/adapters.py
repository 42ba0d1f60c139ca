"""Adapters: public RoPE implementations called as ``fn(x, positions) -> rotated x`` for the audit.

Each adapter builds the implementation as its users run it, for a head width ``d``, a base (or a
model config) and the largest position audited, and returns an ``Adapter``: the function, the
channel layout it uses, the framework it takes arrays in, and the frequencies it *means* to use (its own
float32 ``inv_freq`` read back, so the audit measures the rotation, not the rounding of the frequencies).
Writing one for your own code is a few lines (docs/guide/audit.md)::

    def my_rope(x, positions):                 # x: torch (n, d) in the audited dtype, positions: int64 (n,)
        return my_module.apply(x[None, None], positions[None])[0, 0]

    ropetheory.testing.assert_rope_matches(my_rope, schedule="rope:base=500000,head_dim=128",
                                           framework="torch", dtype="bfloat16", max_position=131072)

Built in: ``transformers`` (the rotary class of any model config, every rope type), ``torchtune`` and
``torchtune-llama3`` (``RotaryPositionalEmbeddings``, ``Llama3ScaledRoPE``), ``rotary-embedding-torch``
(lucidrains), ``x-transformers``, ``liger`` (liger-kernel's Triton RoPE, CUDA only), ``mlx``
(``mx.fast.rope``), ``keras-hub`` (``RotaryEmbedding``, JAX backend), ``litgpt``, ``gemma-jax`` (Google
DeepMind's JAX ``apply_rope``), and two pure-numpy
ones: ``reference`` (exactly reduced angles, float64 tables rounded once) and ``float32-positions`` (the
classic bug: ``float32(position) * float32(inv_freq)``), kept as known-good and known-bad controls.
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import pathlib
from collections.abc import Callable
from typing import Any

import numpy as np
from ..core.checks import check_base, check_head_dim, check_integer
from ..core.errors import BadValue

__all__ = ["Adapter", "ADAPTERS", "build", "MissingDependency"]


class MissingDependency(ImportError):
    """An adapter's package is not installed; the message names what to install."""


@dataclasses.dataclass(frozen=True)
class Adapter:
    name: str
    fn: Callable[..., Any]
    layout: str
    framework: str
    theta: np.ndarray
    description: str
    dtypes: tuple[str, ...] = ("float32", "bfloat16", "float16")
    #: the factor the implementation scales cos and sin by (YaRN, LongRoPE), divided out before the audit
    attention_factor: float = 1.0


def _need(module: str, install: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependency(f"the {module!r} adapter needs {install} ({e})") from None


def _torch_theta(inv_freq: Any, d: int) -> np.ndarray:
    th = np.zeros(d // 2)
    inv = np.asarray(inv_freq.detach().double().cpu().numpy()).ravel()
    th[:inv.size] = inv[: d // 2]
    return th


def _device(x: Any, device: str) -> Any:
    return x.to(device)


# ---------------------------------------------------------------------------------------------------
def reference(d: int, base: float, max_position: int, device: str = "cpu", config: Any = None) -> Adapter:
    from ..schedules import rope as rope_schedule
    from . import exact_cos_sin
    theta = rope_schedule(d, base).theta

    def fn(x, pos):
        c, s = exact_cos_sin(theta, pos)
        c, s = c.astype(x.dtype), s.astype(x.dtype)
        P = x.shape[-1] // 2
        a, b = x[:, :P], x[:, P:]
        return np.concatenate([c * a - s * b, s * a + c * b], axis=-1)
    return Adapter("reference", fn, "half", "numpy", theta, "exactly reduced angles, float64 tables rounded once "
                                                            "to the dtype (a known-good control)")


def float32_positions(d: int, base: float, max_position: int, device: str = "cpu", config: Any = None) -> Adapter:
    inv = (1.0 / (base ** (np.arange(0, d, 2, dtype=np.float32) / np.float32(d)))).astype(np.float32)

    def fn(x, pos):
        ang = pos.astype(np.float32)[:, None] * inv[None]
        c, s = np.cos(ang).astype(x.dtype), np.sin(ang).astype(x.dtype)
        P = x.shape[-1] // 2
        a, b = x[:, :P], x[:, P:]
        return np.concatenate([c * a - s * b, s * a + c * b], axis=-1)
    return Adapter("float32-positions", fn, "half", "numpy", inv.astype(np.float64),
                   "float32(position) * float32(inv_freq), then cos/sin (a known-bad control)")


def transformers_rope(d: int, base: float, max_position: int, device: str = "cpu", config: Any = None) -> Adapter:
    """The rotary class transformers' Llama family uses (``LlamaRotaryEmbedding``: every rope type through
    ``ROPE_INIT_FUNCTIONS``) and its ``apply_rotary_pos_emb``, for ``config`` (a mapping) or plain RoPE."""
    _need("torch", "torch (pip install 'ropetheory[models]')")
    tf = _need("transformers", "transformers (pip install 'ropetheory[models]')")
    from transformers.models.llama import modeling_llama as ml
    fields = dict(config or {"head_dim": d, "rope_theta": base, "max_position_embeddings": max_position})
    fields.setdefault("num_attention_heads", 1)
    fields.setdefault("hidden_size", fields.get("head_dim", d) * fields["num_attention_heads"])
    keep = {k: v for k, v in fields.items() if k not in ("architectures", "model_type", "layer_types",
                                                        "sliding_window", "torch_dtype", "dtype")}
    cfg = tf.LlamaConfig(**keep)
    rot = ml.LlamaRotaryEmbedding(config=cfg).to(device)
    dd = int(getattr(cfg, "head_dim", None) or d)

    # length-dependent rope types (dynamic, longrope) pick their frequencies from the longest position of
    # a call: one call at max_position first, so inv_freq (the frequencies audited against) is the one the
    # audit's calls, which all reach max_position, use
    import torch
    with torch.no_grad():
        probe = torch.zeros(1, 1, 1, dd, device=device)
        rot(probe, torch.tensor([[max_position]], device=device))
    scale = float(getattr(rot, "attention_scaling", 1.0))      # yarn/longrope scale cos and sin: not a rotation

    def fn(x, pos):
        xq = _device(x, device)[None, None]                                  # (1, 1, n, d)
        cos, sin = rot(xq, _device(pos, device)[None])
        q, _ = ml.apply_rotary_pos_emb(xq, xq, cos / scale, sin / scale)
        return q[0, 0]
    return Adapter(
        "transformers",
        fn,
        "half",
        "torch",
        _torch_theta(rot.inv_freq, dd),
        f"transformers {tf.__version__} LlamaRotaryEmbedding (rope_type "
        f"{(getattr(cfg, 'rope_parameters', None) or {}).get('rope_type', 'default')}) + apply_rotary_pos_emb",
        attention_factor=scale,
    )


def _source_module(package: str, rel: str, install: str) -> Any:
    """The source file ``rel`` of an installed ``package`` loaded on its own, without the package's
    ``__init__`` (``import torchtune`` needs torchao, ``import gemma`` kauldron and grain; their RoPE files
    need only torch or JAX)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependency(f"the {package} adapters need {package} ({install})")
    path = pathlib.Path(next(iter(spec.submodule_search_locations))) / rel
    mspec = importlib.util.spec_from_file_location(f"_ropetheory_{package}_{path.stem}", path)
    assert mspec is not None and mspec.loader is not None
    mod = importlib.util.module_from_spec(mspec)
    mspec.loader.exec_module(mod)
    return mod


def _torchtune_module(rel: str) -> Any:
    return _source_module("torchtune", rel, "pip install --no-deps torchtune==0.6.1")


def _torchtune(name: str, source: str, cls: str, description: str, d: int, base: float, max_position: int,
               device: str) -> Adapter:
    """A torchtune RoPE module (``cls`` in the source file ``source``) called on ``(b, s, h, d)`` inputs."""
    _need("torch", "torch")
    rot = getattr(_torchtune_module(source), cls)(dim=d, max_seq_len=max_position + 1, base=base).to(device)

    def fn(x, pos):
        y = rot(_device(x, device)[None, :, None, :], input_pos=_device(pos, device)[None])   # (b, s, h, d)
        return y[0, :, 0, :]
    return Adapter(name, fn, "interleaved", "torch", _torch_theta(rot.theta, d), description)


def torchtune(d: int, base: float, max_position: int, device: str = "cpu", config: Any = None) -> Adapter:
    return _torchtune("torchtune", "modules/position_embeddings.py", "RotaryPositionalEmbeddings",
                      "torchtune 0.6 RotaryPositionalEmbeddings (cached float32 tables)", d, base, max_position, device)


def torchtune_llama3(d: int, base: float, max_position: int, device: str = "cpu", config: Any = None) -> Adapter:
    return _torchtune("torchtune-llama3", "models/llama3_1/_position_embeddings.py", "Llama3ScaledRoPE",
                      "torchtune 0.6 Llama3ScaledRoPE (scale 8, old context 8192)", d, base, max_position, device)


def rotary_embedding_torch(d: int, base: float, max_position: int, device: str = "cpu",
                           config: Any = None) -> Adapter:
    ret = _need("rotary_embedding_torch", "rotary-embedding-torch (pip install 'ropetheory[audit]')")
    import torch
    rot = ret.RotaryEmbedding(dim=d, theta=base).to(device)

    def fn(x, pos):
        freqs = rot(_device(pos, device).to(torch.float32))
        return ret.apply_rotary_emb(freqs, _device(x, device))
    return Adapter("rotary-embedding-torch", fn, "interleaved", "torch", _torch_theta(rot.freqs, d),
                   "lucidrains rotary-embedding-torch RotaryEmbedding + apply_rotary_emb")


def x_transformers(d: int, base: float, max_position: int, device: str = "cpu", config: Any = None) -> Adapter:
    xt = _need("x_transformers.x_transformers", "x-transformers (pip install 'ropetheory[audit]')")
    import torch
    rot = xt.RotaryEmbedding(d, base=base).to(device)

    def fn(x, pos):
        freqs, scale = rot(_device(pos, device).to(torch.float32)[None])          # (1, n, d)
        return xt.apply_rotary_pos_emb(_device(x, device)[None], freqs, scale)[0]
    return Adapter("x-transformers", fn, "interleaved", "torch", _torch_theta(rot.inv_freq, d),
                   "x-transformers RotaryEmbedding + apply_rotary_pos_emb")


def liger(d: int, base: float, max_position: int, device: str = "cuda", config: Any = None) -> Adapter:
    """liger-kernel's fused Triton RoPE, fed the cos/sin transformers computes (CUDA only)."""
    _need("liger_kernel", "liger-kernel (and a CUDA GPU)")
    tf = _need("transformers", "transformers")
    from liger_kernel.transformers.rope import liger_rotary_pos_emb
    from transformers.models.llama import modeling_llama as ml
    rot = ml.LlamaRotaryEmbedding(config=tf.LlamaConfig(head_dim=d, rope_theta=base, num_attention_heads=1,
                                                         hidden_size=d, max_position_embeddings=max_position))
    rot = rot.to(device)

    def fn(x, pos):
        xq = _device(x, device)[None, None].contiguous()
        cos, sin = rot(xq, _device(pos, device)[None])
        q, _ = liger_rotary_pos_emb(xq, xq.clone(), cos, sin)
        return q[0, 0]
    return Adapter("liger", fn, "half", "torch", _torch_theta(rot.inv_freq, d),
                   "liger-kernel Triton RoPE (liger_rotary_pos_emb) on transformers' cos/sin")


def mlx(d: int, base: float, max_position: int, device: str = "cpu", config: Any = None) -> Adapter:
    """MLX's fused ``mx.fast.rope`` (not traditional: planes ``(j, j + d/2)``), one row per batch element
    with its position as that element's offset (MLX's CPU backend on Linux, Metal on a Mac)."""
    mx = _need("mlx.core", "mlx (pip install 'mlx[cpu]' on Linux)")
    from ..schedules import rope as rope_schedule
    mx_dtype = {"float32": mx.float32, "bfloat16": mx.bfloat16, "float16": mx.float16}

    def fn(x, pos):
        xm = mx.array(np.asarray(x, dtype=np.float32)).astype(mx_dtype[str(x.dtype)])[:, None, :]
        y = mx.fast.rope(xm, d, traditional=False, base=float(base), scale=1.0,
                         offset=mx.array(np.asarray(pos, dtype=np.int32)))
        return np.asarray(y.astype(mx.float32))[:, 0, :].astype(x.dtype)
    return Adapter("mlx", fn, "half", "numpy", rope_schedule(d, base).theta,
                   "MLX mx.fast.rope (fused kernel; frequencies base^(-2j/d) formed inside it)")


def keras_hub(d: int, base: float, max_position: int, device: str = "cpu", config: Any = None) -> Adapter:
    """keras-hub's ``RotaryEmbedding`` layer at the dtype policy of its input, called with explicit
    positions, on the JAX backend (set ``KERAS_BACKEND`` before anything imports keras to pick another)."""
    import os
    os.environ.setdefault("KERAS_BACKEND", "jax")
    layers = _need("keras_hub.layers", "keras-hub (pip install keras-hub)")
    from ..schedules import rope as rope_schedule
    made: dict[str, Any] = {}

    def fn(x, pos):
        name = str(x.dtype)
        layer = made.setdefault(name, layers.RotaryEmbedding(max_wavelength=base, dtype=name))
        y = layer(np.asarray(x, dtype=np.float32).astype(x.dtype)[None], positions=np.asarray(pos)[None])
        return np.asarray(y, dtype=np.float32)[0].astype(x.dtype)
    return Adapter("keras-hub", fn, "half", "numpy", rope_schedule(d, base).theta,
                   "keras-hub RotaryEmbedding (float32 phase, cos/sin in the compute dtype), JAX backend")


def litgpt(d: int, base: float, max_position: int, device: str = "cpu", config: Any = None) -> Adapter:
    """litgpt's ``build_rope_cache`` (float32 tables for every position to ``max_position``) indexed by the
    positions, as ``GPT.forward`` does with a KV cache, and its ``apply_rope``."""
    _need("torch", "torch")
    model = _need("litgpt.model", "litgpt (pip install litgpt)")
    cos, sin = model.build_rope_cache(seq_len=max_position + 1, n_elem=d, base=base)
    cos, sin = cos.to(device), sin.to(device)

    def fn(x, pos):
        p = _device(pos, device)
        return model.apply_rope(_device(x, device)[None], cos[p][None], sin[p][None])[0]
    import torch
    inv_freq = 1.0 / (base ** (torch.arange(0, d, 2).float() / d))     # build_rope_cache's own float32 line
    return Adapter("litgpt", fn, "half", "torch", _torch_theta(inv_freq, d),
                   "litgpt build_rope_cache (float32 cache) + apply_rope")


def gemma_jax(d: int, base: float, max_position: int, device: str = "cpu", config: Any = None) -> Adapter:
    """Google DeepMind's JAX Gemma library (``gemma``): ``gm.math._positional_embeddings.apply_rope`` on
    ``(1, n, 1, d)`` inputs with int32 positions, as its transformer passes them (timescales
    ``base^(2j/d)`` in float32, positions divided by them in float32)."""
    _need("jax", "jax")
    import jax.numpy as jnp
    mod = _source_module("gemma", "gm/math/_positional_embeddings.py", "pip install --no-deps gemma==3.3.0")

    def fn(x, pos):
        y = mod.apply_rope(x[None, :, None, :], jnp.asarray(pos, jnp.int32)[None], base_frequency=base)
        return y[0, :, 0, :]
    timescale = base ** ((2.0 / d) * jnp.arange(0, d // 2, dtype=jnp.float32))     # its own float32 line
    return Adapter("gemma-jax", fn, "half", "jax", 1.0 / np.asarray(timescale, dtype=np.float64),
                   "Google DeepMind gemma (JAX) apply_rope (float32 timescales, float32 phase)")


ADAPTERS: dict[str, Callable[..., Adapter]] = {
    "reference": reference,
    "float32-positions": float32_positions,
    "transformers": transformers_rope,
    "torchtune": torchtune,
    "torchtune-llama3": torchtune_llama3,
    "rotary-embedding-torch": rotary_embedding_torch,
    "x-transformers": x_transformers,
    "liger": liger,
    "mlx": mlx,
    "keras-hub": keras_hub,
    "litgpt": litgpt,
    "gemma-jax": gemma_jax,
}


def build(name: str, *, head_dim: int = 128, base: float = 5e5, max_position: int = 4096, device: str = "cpu",
          config: Any = None) -> Adapter:
    """The adapter ``name`` (``ADAPTERS``) for a head width, base and largest position."""
    if name not in ADAPTERS:
        raise BadValue(f"unknown audit target {name!r}; known: {', '.join(ADAPTERS)}")
    if config is None:                                 # a config gives its own head width and base
        head_dim = check_head_dim(head_dim)
        base = check_base(base)
    max_position = check_integer("max_position", max_position, lo=1)
    return ADAPTERS[name](head_dim, base, max_position, device=device, config=config)
