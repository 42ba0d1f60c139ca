"""Where a computation runs: the one place a kernel's backend-dependent choices (chunk sizes, eigenvalue
methods, batching) read the platform from.

A command's ``--device`` is a ``jax.default_device`` scope (``ropetheory.flags.device_scope``); nothing
here reads or sets a process-wide choice.
"""
from __future__ import annotations

from typing import Any

import jax

__all__ = ["compute_platform"]


def compute_platform(*where: Any) -> str:
    """The platform (``"cpu"``, ``"gpu"``, ``"tpu"``) a computation runs on.

    ``where``: devices, meshes or arrays the computation is tied to; the first that names a device decides
    (a ``jax.Device``; a ``jax.sharding.Mesh``'s first device; a committed, concrete ``jax.Array``'s device).
    Otherwise the default device in scope (``jax.default_device(...)``, which ``--device`` sets for a
    command), else JAX's default backend. Host (numpy) arrays and uncommitted or traced arrays go where the
    default device is, so they do not decide.
    """
    for w in where:
        if isinstance(w, jax.Device):
            return w.platform
        if isinstance(w, jax.sharding.Mesh):
            return w.devices.flat[0].platform
        if isinstance(w, jax.Array) and not isinstance(w, jax.core.Tracer) and w.committed:
            return next(iter(w.devices())).platform
    scoped = jax.config.jax_default_device  # type: ignore[attr-defined]  # (options are untyped attributes)
    if scoped is not None:
        return scoped if isinstance(scoped, str) else scoped.platform
    return jax.default_backend()
