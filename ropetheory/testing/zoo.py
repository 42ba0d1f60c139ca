"""A zoo of real RoPE bugs, each re-created small and faithful, for the audit and its diagnosis to name.

Every entry is ``fn(x, positions) -> rotated x`` (numpy; ``x (n, d)`` in the audited dtype, int64
positions), as the package's other audited implementations, with the public thread that reported it.
A re-creation keeps its bug and otherwise does what a correct implementation does: where the bug is not
about precision, the cos/sin tables are the exact ones rounded once to the dtype (a float32 angle would
add the angle-precision finding every float32 implementation has, docs/guide/audit.md); where it is, the
arithmetic is the thread's, dtype by dtype. Head width 32 and a few thousand positions keep each audit
fast. ``CONTROLS`` are correct implementations that no diagnosis may flag.

``run_zoo()`` diagnoses every entry in every dtype it applies to; ``ropetheory audit --zoo`` prints and
saves that table.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import ml_dtypes
import numpy as np

from . import exact_cos_sin
from .diagnosis import diagnose
from ..core.errors import BadValue

__all__ = ["HEAD_DIM", "ZooBug", "ZOO", "CONTROLS", "run_zoo", "zoo_bug"]

#: head width of every entry: 16 planes are enough for every signature and keep the audits fast
HEAD_DIM = 32
P = HEAD_DIM // 2
LOW = ("bfloat16", "float16")
ALL = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class ZooBug:
    """One re-created bug: ``build()`` returns the implementation; ``schedule`` (frequencies or a model
    config, with ``layer_type``) is what it should compute; ``expected`` the class a diagnosis must name."""
    name: str
    bug: str
    sources: tuple[str, ...]
    expected: str
    schedule: Any
    build: Callable[[], Callable[..., Any]]
    max_position: int
    dtypes: tuple[str, ...]
    layout: str = "half"
    layer_type: str | None = None


def _np(name: str) -> Any:
    return ml_dtypes.bfloat16 if name == "bfloat16" else np.dtype(name)


def _rope(base: float) -> np.ndarray:
    return base ** (-np.arange(P) / P)


def _inv_freq32(base: float) -> np.ndarray:
    """transformers' float32 ``1 / base ** (arange(0, d, 2) / d)``."""
    e = np.arange(0, HEAD_DIM, 2, dtype=np.float32) / np.float32(HEAD_DIM)
    return (np.float32(1.0) / (np.float32(base) ** e)).astype(np.float32)


def _rotate(x: np.ndarray, c: Any, s: Any, layout: str = "half") -> np.ndarray:
    """The rotation in ``x``'s dtype from tables rounded to it."""
    c, s = np.asarray(c).astype(x.dtype), np.asarray(s).astype(x.dtype)
    if layout == "half":
        a, b = x[:, :P], x[:, P:]
        return np.concatenate([c * a - s * b, s * a + c * b], axis=-1)
    a, b = x[:, 0::2], x[:, 1::2]
    return np.stack([c * a - s * b, s * a + c * b], axis=-1).reshape(x.shape)


def _exact(theta: np.ndarray, scale: float = 1.0, layout: str = "half",
           positions: Callable[[np.ndarray], np.ndarray] = lambda p: p) -> Callable[..., Any]:
    """A correct RoPE (exact tables, scaled by ``scale``, rounded once), at ``positions(p)``."""
    def fn(x, pos):
        c, s = exact_cos_sin(theta, positions(np.asarray(pos)))
        return _rotate(x, scale * c, scale * s, layout)
    return fn


def _per_row(thetas: Callable[[int], np.ndarray], scale: float) -> Callable[..., Any]:
    """Each position rotated with its own frequencies ``thetas(p)`` (float64 angles reduced mod 2 pi)."""
    def fn(x, pos):
        ang = np.mod(np.stack([p * thetas(int(p)) for p in pos]), 2 * math.pi)
        return _rotate(x, scale * np.cos(ang), scale * np.sin(ang))
    return fn


def _hf(config: dict[str, Any], seq_len: int | None, layer_type: str | None = None) -> tuple[np.ndarray, float]:
    from ..schedules.hf import frequencies_from_config
    f = frequencies_from_config(config, seq_len=seq_len, layer_type=layer_type)
    return f.theta, f.attention_factor


def _mscale(factor: float) -> float:
    """YaRN's ``0.1 ln(factor) + 1`` (``yarn_get_mscale``)."""
    return 0.1 * math.log(factor) + 1.0


# ---------------------------------------------------------------------------------------------------
# precision of frequencies, positions, angles and tables
# ---------------------------------------------------------------------------------------------------
def _inv_freq_in_model_dtype() -> Callable[..., Any]:
    # sglang-jax #1472: inv_freq = jnp.asarray(self._inv_freq_np, dtype=self.dtype), then
    # freqs = einsum(positions.astype(float32), inv_freq) in float32; Modalities PR #462 (inv_freq.to(x.dtype)
    # before t * inv_freq); NeMo Automodel PR #2549 (model.to(bf16) rounds the fp32 inv_freq buffer, the
    # tables are then built in fp32 from it)
    inv32 = _inv_freq32(1e4)

    def fn(x, pos):
        inv = inv32.astype(x.dtype).astype(np.float32)
        ang = pos.astype(np.float32)[:, None] * inv[None]
        return _rotate(x, np.cos(ang), np.sin(ang))
    return fn


def _everything_in_model_dtype() -> Callable[..., Any]:
    # candle PR #3520 (qwen2: inv_freq and t cast to bf16 before the matmul, sin/cos on the bf16 result);
    # transformers #29496 (Mistral: t = arange(...).type_as(inv_freq) after a bf16 cast, outer product in bf16);
    # Megatron-LM #535 (seq.type_as(inv_freq) in fp16: tail positions collapse); transformers PR #29285
    inv32 = _inv_freq32(1e4)

    def fn(x, pos):
        t, inv = pos.astype(x.dtype), inv32.astype(x.dtype)
        ang = (t[:, None] * inv[None]).astype(x.dtype)
        return _rotate(x, np.cos(ang), np.sin(ang))
    return fn


def _bf16_cache() -> Callable[..., Any]:
    # transformers #25681: model.to(bf16) casts the cos_cached/sin_cached buffers, which then serve wider
    # activations; vLLM #863: cos/sin stored in the model dtype rather than float32
    inv32 = _inv_freq32(1e4)

    def fn(x, pos):
        ang = pos.astype(np.float32)[:, None] * inv32[None]
        c, s = np.cos(ang).astype(ml_dtypes.bfloat16), np.sin(ang).astype(ml_dtypes.bfloat16)
        return _rotate(x, c.astype(np.float32), s.astype(np.float32))
    return fn


def _fp16_rotation_f32_angle() -> Callable[..., Any]:
    # mlx-lm PR #1076 (closed): frequencies and angle in float32, the rotation at the fp16 input dtype;
    # the PR reports adjacent positions collapsing past 262k
    inv32 = _inv_freq32(1e4)

    def fn(x, pos):
        ang = pos.astype(np.float32)[:, None] * inv32[None]
        return _rotate(x.astype(np.float32), np.cos(ang), np.sin(ang)).astype(x.dtype)
    return fn


def _ggml_theta_scale() -> Callable[..., Any]:
    # ggml's CPU rope cache (ggml-cpu ops.cpp, rope_yarn cache init): theta = p; theta *= theta_scale per
    # plane, theta_scale = powf(freq_base, -2.0f/n_dims), all float32
    scale = np.float32(np.float32(1e4) ** np.float32(-2.0 / HEAD_DIM))

    def fn(x, pos):
        theta = pos.astype(np.float32)
        ang = np.empty((pos.size, P), dtype=np.float32)
        for j in range(P):
            ang[:, j] = theta
            theta = (theta * scale).astype(np.float32)
        return _rotate(x, np.cos(ang), np.sin(ang))
    return fn


# ---------------------------------------------------------------------------------------------------
# scaling semantics
# ---------------------------------------------------------------------------------------------------
def _yarn(factor: float, **keys: Any) -> dict[str, Any]:
    return {"head_dim": HEAD_DIM, "hidden_size": HEAD_DIM, "num_attention_heads": 1, "rope_theta": 1e4,
            "max_position_embeddings": int(4096 * factor),
            "rope_parameters": {"rope_type": "yarn", "factor": factor, "original_max_position_embeddings": 4096,
                                "rope_theta": 1e4, **keys}}


def _yarn_with(config: dict[str, Any], attention: float) -> Callable[[], Callable[..., Any]]:
    """YaRN's frequencies right, cos and sin scaled by ``attention``."""
    return lambda: _exact(_hf(config, None)[0], scale=attention)


LONGROPE = {"head_dim": HEAD_DIM, "hidden_size": HEAD_DIM, "num_attention_heads": 1, "rope_theta": 1e4,
            "max_position_embeddings": 16384, "original_max_position_embeddings": 2048,
            "rope_parameters": {"rope_type": "longrope", "rope_theta": 1e4, "factor": 8.0,
                                "short_factor": list(np.linspace(1.0, 1.25, P)),
                                "long_factor": list(np.linspace(1.0, 8.0, P))}}
ORIGINAL = 2048


def _longrope(long: Callable[[int], bool]) -> Callable[[], Callable[..., Any]]:
    """LongRoPE whose long/short choice for a call reaching position ``m`` is ``long(m + 1)``."""
    def build():
        short, att = _hf(LONGROPE, ORIGINAL)
        longf, _ = _hf(LONGROPE, ORIGINAL + 1)

        def fn(x, pos):
            theta = longf if long(int(np.max(pos)) + 1) else short
            return _exact(theta, scale=att)(x, pos)
        return fn
    return build


def _longrope_per_step() -> Callable[..., Any]:
    # vLLM #27414 (fixed by PR #27431): the factor is chosen per step, so keys cached before the switch keep
    # the short factor while the sequence's (the reference's, at its full length) is long
    short, att = _hf(LONGROPE, ORIGINAL)
    longf, _ = _hf(LONGROPE, ORIGINAL + 1)
    return _per_row(lambda p: longf if p + 1 > ORIGINAL else short, att)


DYNAMIC = {"head_dim": HEAD_DIM, "hidden_size": HEAD_DIM, "num_attention_heads": 1, "rope_theta": 1e4,
           "max_position_embeddings": 2048, "rope_parameters": {"rope_type": "dynamic", "factor": 4.0,
                                                                 "rope_theta": 1e4}}


def _dynamic_per_step() -> Callable[..., Any]:
    # transformers #25104: dynamic NTK keys cached at step p were rotated with base(max(p + 1, M)); the
    # sequence's own base is base(L)
    return _per_row(lambda p: _hf(DYNAMIC, p + 1)[0], 1.0)


LLAMA3 = {"head_dim": HEAD_DIM, "hidden_size": HEAD_DIM, "num_attention_heads": 1, "rope_theta": 5e5,
          "max_position_embeddings": 131072,
          "rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0, "low_freq_factor": 1.0,
                              "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}
CODELLAMA = {"head_dim": HEAD_DIM, "hidden_size": HEAD_DIM, "num_attention_heads": 1, "rope_theta": 1e6,
             "max_position_embeddings": 16384}
GEMMA3 = {"head_dim": HEAD_DIM, "hidden_size": HEAD_DIM, "num_attention_heads": 1, "max_position_embeddings": 32768,
          "rope_parameters": {"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
                              "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}}


def _zoo() -> list[ZooBug]:
    y16, y128, y4, y64 = (_yarn(16.0, mscale=1.0, mscale_all_dim=1.0), _yarn(128.0, attention_factor=_mscale(128.0)),
                          _yarn(4.0), _yarn(64.0, attention_factor=1.0))
    plain = _rope(1e4)
    return [
        ZooBug("bf16-inv-freq", "inv_freq rounded to the model dtype before a float32 phase",
               ("sgl-project/sglang-jax#1472", "Modalities/modalities#462", "NVIDIA-NeMo/Automodel#2549"),
               "frequency precision", plain, _inv_freq_in_model_dtype, 32768, LOW),
        ZooBug("bf16-positions", "positions, inv_freq, phase and cos/sin all in the model dtype",
               ("huggingface/candle#3520", "huggingface/transformers#29496", "NVIDIA/Megatron-LM#535"),
               "angle precision", plain, _everything_in_model_dtype, 32768, LOW),
        ZooBug("bf16-cache", "cos/sin cache held in bf16 serving wider activations",
               ("huggingface/transformers#25681", "vllm-project/vllm#863"),
               "cache precision", plain, _bf16_cache, 4096, ("float32", "float16")),
        ZooBug("fp16-rotation", "float32 angle, rotation at fp16 past 262k", ("ml-explore/mlx-lm#1076",),
               "angle precision", plain, _fp16_rotation_f32_angle, 2 ** 19, ("float16",)),
        ZooBug("ggml-theta-scale", "angles by repeated float32 multiplication theta *= theta_scale",
               ("ggml-org/llama.cpp ggml_rope_cache_init",),
               "angle precision", plain, _ggml_theta_scale, 65536, ("float32",)),
        ZooBug("yarn-mscale-ignored", "mscale/mscale_all_dim ignored: 0.1 ln(s) + 1 applied where HF gives 1",
               ("vllm-project/vllm#48623",), "attention factor", y16, _yarn_with(y16, _mscale(16.0)), 8192, ALL),
        ZooBug("yarn-factor-twice", "HF's final attention_factor multiplied by YaRN's own mscale",
               ("sgl-project/sglang#33558",), "attention factor", y128, _yarn_with(y128, _mscale(128.0) ** 2),
               8192, ALL),
        ZooBug("yarn-factor-missing", "YaRN's attention factor never applied", ("guoqingbao/xinfer#329",),
               "attention factor", y4, _yarn_with(y4, 1.0), 8192, ALL),
        ZooBug("yarn-explicit-factor-dropped", "an explicit attention_factor dropped for 0.1 ln(s) + 1",
               ("vllm-project/vllm#48351",), "attention factor", y64, _yarn_with(y64, _mscale(64.0)), 8192, ALL),
        ZooBug("llama3-scaling-dropped", "Llama 3.1 rope scaling never read: plain RoPE at base 5e5",
               ("unslothai/unsloth#6197",), "frequency selection", LLAMA3, lambda: _exact(_rope(5e5)), 32768, ALL),
        ZooBug("longrope-off-by-one", "long_factor at exactly original_max_position_embeddings (< for <=)",
               ("unslothai/unsloth#10681",), "frequency selection", LONGROPE,
               _longrope(lambda L: not L < ORIGINAL), ORIGINAL - 1, ALL),
        ZooBug("longrope-allocated-length", "long/short chosen by the allocated context, not the sequence",
               ("ggml-org/llama.cpp#24823",), "frequency selection", LONGROPE, _longrope(lambda L: True), 1023, ALL),
        ZooBug("longrope-per-step", "factor switched mid-sequence: cached keys keep the short factor",
               ("vllm-project/vllm#27414", "vllm-project/vllm#27431"), "frequency selection", LONGROPE,
               _longrope_per_step, 4 * ORIGINAL - 1, ALL),
        ZooBug("dynamic-ntk-stale-keys", "dynamic NTK: cached keys keep the base of their own step",
               ("huggingface/transformers#25104",), "frequency selection", DYNAMIC, _dynamic_per_step, 8191, ALL),
        ZooBug("hard-coded-base", "rope_theta hard-coded to 10000 for CodeLlama's 1e6",
               ("deepspeedai/DeepSpeed#4442",), "frequency selection", CODELLAMA, lambda: _exact(_rope(1e4)),
               4096, ALL),
        ZooBug("local-layer-global-rope", "Gemma 3 sliding layers given the global base and linear scaling",
               ("vllm-project/vllm#29111",), "frequency selection", GEMMA3,
               lambda: _exact(_hf(GEMMA3, None, "full_attention")[0]), 4096, ALL, layer_type="sliding_attention"),
        ZooBug("interleaved-for-half", "traditional (interleaved) RoPE where the model pairs (j, j + d/2)",
               ("ml-explore/mlx-examples#97",), "layout", plain, lambda: _exact(plain, layout="interleaved"),
               4096, ALL),
        ZooBug("positions-ignored", "the start index ignored: rows rotated as 0..n-1",
               ("keras-team/keras-hub#1544", "NVIDIA/Megatron-LM#453"), "offset", plain,
               lambda: _exact(plain, positions=lambda p: np.arange(p.size)), 4096, ALL),
        ZooBug("off-by-one", "positions counted from 1 (synthetic: no public thread confirmed)", (),
               "offset", plain, lambda: _exact(plain, positions=lambda p: p + 1), 4096, ALL),
    ]


def _controls() -> list[ZooBug]:
    y4 = _yarn(4.0)
    return [
        ZooBug("reference", "exact tables rounded once (correct)", (), "correct", _rope(1e4),
               lambda: _exact(_rope(1e4)), 2 ** 20, ("float64", *ALL)),
        ZooBug("reference-interleaved", "exact tables, interleaved layout (correct)", (), "correct", _rope(5e5),
               lambda: _exact(_rope(5e5), layout="interleaved"), 2 ** 20, ("float64", *ALL), layout="interleaved"),
        ZooBug("yarn-registry", "YaRN as the registry computes it, attention factor included (correct)", (),
               "correct", y4, lambda: _exact(*_hf(y4, None)), 8192, ("float64", *ALL)),
    ]


ZOO: tuple[ZooBug, ...] = tuple(_zoo())
CONTROLS: tuple[ZooBug, ...] = tuple(_controls())


def zoo_bug(name: str) -> ZooBug:
    """The zoo entry or control ``name``."""
    for b in (*ZOO, *CONTROLS):
        if b.name == name:
            return b
    raise BadValue(f"unknown zoo entry {name!r}; known: {', '.join(b.name for b in (*ZOO, *CONTROLS))}")


def diagnose_bug(bug: ZooBug, dtype: str, n_vectors: int = 2) -> Any:
    """``diagnose`` of one entry in one dtype, with the entry's schedule, layout and range."""
    return diagnose(bug.build(), schedule=bug.schedule, layer_type=bug.layer_type, dtype=dtype, layout=bug.layout,
                    max_position=bug.max_position, n_vectors=n_vectors)


def run_zoo(entries: Any = None, n_vectors: int = 2) -> list[dict[str, Any]]:
    """One row per entry and dtype: the bug, its sources, the class expected and the class diagnosed, where
    it leaves the floor, and whether it was caught (diagnosed in its class; a control: not diagnosed)."""
    rows = []
    for bug in (ZOO + CONTROLS) if entries is None else entries:
        for dt in bug.dtypes:
            d = diagnose_bug(bug, dt, n_vectors)
            rows.append({"bug": bug.name, "description": bug.bug, "source": "; ".join(bug.sources) or "-",
                         "dtype": dt, "expected": bug.expected, "diagnosed": d.cls, "kind": d.kind,
                         "first_over_floor": d.first_over_floor, "worst_floor_ratio": d.worst_floor_ratio,
                         "caught": d.cls == bug.expected, "verdict": d.verdict()})
    return rows
