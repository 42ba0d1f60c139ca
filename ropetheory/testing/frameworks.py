"""Calling an implementation in its framework: the dtypes an audit knows, inputs rounded to a dtype and
handed over as numpy, torch or JAX arrays, outputs read back as float64 numpy."""
from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
from ..core.errors import BadValue

__all__ = ["DTYPES", "dtype_name", "round_to", "to_framework", "positions_to_framework", "to_numpy"]

#: the dtypes an audit knows: name -> (bits of significand incl. the implicit one, smallest subnormal)
DTYPES: dict[str, tuple[int, float]] = {"float64": (53, 2.0 ** -1074), "float32": (24, 2.0 ** -149),
                                        "float16": (11, 2.0 ** -24), "bfloat16": (8, 2.0 ** -133)}


def dtype_name(dtype: Any) -> str:
    """The audit's name of ``dtype``: a name (``"bf16"``, ``"float32"``), a numpy scalar type or dtype
    (``np.float32``, ``np.dtype("float16")``, ml_dtypes' bfloat16), a torch or JAX dtype."""
    if isinstance(dtype, type):                         # a scalar type such as np.float32: its dtype's name
        with contextlib.suppress(TypeError):
            dtype = np.dtype(dtype)
    name = getattr(dtype, "name", None) or str(dtype)
    name = name.replace("torch.", "").replace("jnp.", "")
    name = {"half": "float16", "bf16": "bfloat16", "fp16": "float16", "fp32": "float32", "float": "float32",
            "double": "float64", "fp64": "float64"}.get(name, name)
    if name not in DTYPES:
        raise BadValue(f"dtype must be one of {sorted(DTYPES)} (or their numpy/torch/JAX objects), got {dtype!r}")
    return name


def round_to(x: np.ndarray, name: str) -> np.ndarray:
    """``x`` rounded to the dtype and back to float64 (the values the implementation receives)."""
    import ml_dtypes
    np_dtype = {"bfloat16": ml_dtypes.bfloat16, "float16": np.float16, "float32": np.float32,
                "float64": np.float64}[name]
    return np.asarray(x.astype(np_dtype), dtype=np.float64)


def to_framework(x: np.ndarray, name: str, framework: str) -> Any:
    if framework == "numpy":
        import ml_dtypes
        return x.astype({"bfloat16": ml_dtypes.bfloat16}.get(name, name))
    if framework == "torch":
        import torch
        return torch.tensor(x, dtype=torch.float64).to(getattr(torch, name))
    if framework == "jax":
        import jax.numpy as jnp
        return jnp.asarray(x).astype(name)
    raise BadValue(f"framework must be 'numpy', 'torch' or 'jax', got {framework!r}")


def positions_to_framework(pos: np.ndarray, framework: str) -> Any:
    if framework == "torch":
        import torch
        return torch.tensor(pos, dtype=torch.int64)
    if framework == "jax":
        import jax.numpy as jnp
        return jnp.asarray(pos, dtype=jnp.int64)
    return pos


def to_numpy(y: Any) -> np.ndarray:
    if hasattr(y, "detach"):                                       # torch
        y = y.detach().to("cpu")
        return y.double().numpy() if y.is_floating_point() else y.numpy()
    return np.asarray(np.asarray(y).astype(np.float64))
