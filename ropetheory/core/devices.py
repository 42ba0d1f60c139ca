"""Where a computation runs: the one place a kernel's backend-dependent choices (chunk sizes, eigenvalue
methods, batching) read the platform from.

A command's ``--device`` is a ``jax.default_device`` scope (``ropetheory.flags.device_scope``); the one
process-wide setting touched here, OpenBLAS's thread count (``one_blas_thread``), is set for a block and
restored after it. The folder of JAX's persistent compilation cache the commands use, and its repair
(``compilation_cache_dir``, ``drop_untimed_cache_entries``), are here too: ``compilation_cache``
turns the cache on for a block (each command runs in one).
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import sys
from collections.abc import Iterator
from typing import Any

import jax

__all__ = ["compute_platform", "platform_class", "one_blas_thread", "compilation_cache", "compilation_cache_dir",
           "drop_untimed_cache_entries", "user_cache_dir"]

#: how long a repair waits for JAX's lock on a compilation cache folder before leaving the folder as it is
#: (JAX's own wait for the same lock is 10 s)
CACHE_LOCK_SECONDS = 10.0

#: threadpoolctl's view of the BLAS libraries loaded, by whether scipy.linalg (and its OpenBLAS) was among them:
#: found once each (finding them scans every loaded library)
_CONTROLLERS: dict[bool, Any] = {}


@contextlib.contextmanager
def one_blas_thread(enabled: bool = True, *, lapack: bool = True) -> Iterator[None]:
    """OpenBLAS (numpy's and scipy's) on one thread inside the block, as it was after; ``enabled=False``
    changes nothing.

    On CPU every top eigenvalue goes through JAX's LAPACK kernels (``sytrd``, ``syevd``), which call scipy's
    OpenBLAS while XLA already spreads a batch of matrices over its own thread pool: OpenBLAS's threads on
    top of those oversubscribe the cores and spin (65 tridiagonalisations of 128 x 128 took 2.2 s with them
    and 0.06 s without on 2 cores; a 200-point curve 3.1 s and 0.28 s). On a mesh of several CPU devices
    they also deadlock in ``sytrd``. Small numpy products (the capture's statistics) cost more CPU time
    threaded than not. A threaded BLAS may sum a product in another order; on one thread the numbers no
    longer depend on the core count.

    ``lapack``: the block may run JAX's LAPACK kernels; scipy.linalg is then imported first (jaxlib imports
    it at the first LAPACK kernel) so that the limit reaches its OpenBLAS: threadpoolctl sees only libraries
    already loaded. A block of numpy alone (``lapack=False``) limits the libraries loaded and imports nothing
    (scipy.linalg took 0.12-0.2 s, 2 cores); a JAX LAPACK kernel run inside such a block would run threaded."""
    if not enabled:
        yield
        return
    if lapack:
        import scipy.linalg  # noqa: F401
    key = "scipy.linalg" in sys.modules
    if key not in _CONTROLLERS:
        from threadpoolctl import ThreadpoolController
        _CONTROLLERS[key] = ThreadpoolController()
    with _CONTROLLERS[key].limit(limits=1, user_api="blas"):
        yield


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


def platform_class(*where: Any) -> str:
    """``"cpu"`` where ``compute_platform(*where)`` is the CPU, else ``"gpu"`` (any accelerator): the key of
    the per-platform tuning tables (``topeig.HOUSEHOLDER_UNROLL``, ``phase_stream.PHASE_TABLE_ROWS``)."""
    return "cpu" if compute_platform(*where) == "cpu" else "gpu"


def user_cache_dir() -> pathlib.Path:
    """The package's folder in the user's cache: ``$XDG_CACHE_HOME`` (else ``~/.cache``), then ``ropetheory``."""
    return pathlib.Path(os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache") / "ropetheory"


def compilation_cache_dir() -> pathlib.Path:
    """The user's cache folder for compiled programs, one per jax/jaxlib version (``user_cache_dir()``, then
    ``jax-<jax>-<jaxlib>``)."""
    import importlib.metadata as md
    return user_cache_dir() / f"jax-{md.version('jax')}-{md.version('jaxlib')}"


def drop_untimed_cache_entries(folder: str | os.PathLike[str]) -> int:
    """Remove the entries of JAX's compilation cache ``folder`` that its size-bounded cache cannot account
    for: a program file ``KEY-cache`` with no access-time file ``KEY-atime`` (written by a run without the
    size bound, where JAX writes the program only, or cut off between the two writes, so possibly a partial
    program). Before each write, the bounded cache reads the access time of every entry in the folder to find
    the least recently used: one such entry fails every later write ("Error writing persistent compilation
    cache entry ... -atime"). The folder is changed under JAX's own lock on it (``.lockfile``), so no bounded
    run is between its two writes; if the lock is not free within ``CACHE_LOCK_SECONDS``, nothing is
    removed (the next run repairs). Returns how many entries were removed; a missing folder has none."""
    import filelock
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        return 0
    try:
        with filelock.FileLock(folder / ".lockfile", timeout=CACHE_LOCK_SECONDS):
            names = set(os.listdir(folder))
            untimed = [n for n in names if n.endswith("-cache") and n.removesuffix("-cache") + "-atime" not in names]
            for name in untimed:
                (folder / name).unlink(missing_ok=True)
    except filelock.Timeout:
        return 0
    return len(untimed)


#: programs that compile faster than this are not worth a cache entry (JAX's own default is 1 s)
CACHE_MIN_COMPILE_SECONDS = 0.05
#: a bound turns on JAX's file lock: unlocked, a second command read a half-written program and segfaulted
CACHE_MAX_BYTES = 4 << 30


@contextlib.contextmanager
def compilation_cache(enabled: bool = True) -> Iterator[None]:
    """JAX's persistent compilation cache on inside the block (a program compiled once is read back by the
    next run; it never changes a result), unless not ``enabled`` or the caller already chose a folder
    (``jax_compilation_cache_dir``, also read from ``JAX_COMPILATION_CACHE_DIR``). Entries of the folder that
    would fail every write are removed first (``drop_untimed_cache_entries``). JAX's settings are restored
    when the block ends."""
    from jax.experimental.compilation_cache import compilation_cache as cc
    folder = compilation_cache_dir()
    settings = {"jax_compilation_cache_dir": str(folder),
                "jax_persistent_cache_min_compile_time_secs": CACHE_MIN_COMPILE_SECONDS,
                "jax_compilation_cache_max_size": CACHE_MAX_BYTES}
    before = {name: getattr(jax.config, name) for name in settings}
    if not enabled or before["jax_compilation_cache_dir"]:
        yield
        return
    drop_untimed_cache_entries(folder)
    for name, value in settings.items():
        jax.config.update(name, value)
    try:
        yield
    finally:
        for name, value in before.items():
            jax.config.update(name, value)
        cc.reset_cache()                          # the next compilation reads the restored settings
