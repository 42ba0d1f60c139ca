"""Sweeps over schedules x head dims x clouds x lengths x weights, sharded over all visible devices.

The cloud axis is split across devices with JAX's own sharding (``jax.shard_map`` over a
1-D ``Mesh`` of every visible device, axis ``"clouds"``); each device computes its clouds'
FSV curves, nothing is exchanged but the results. Clouds are padded to a multiple of the
device count, so the numbers are the same on 1 and on N devices (each cloud's arithmetic
is identical; the tests check 1e-12).

Per (schedule, d, weights) the results stream to ``<out>/sweep_parts/*.npz`` as they
finish; a rerun skips finished parts (resume). ``sweep.csv`` (one row per config and
length: quantiles over clouds) and ``sweep.json`` (metadata) are written at the end.

Weights: ``constant`` and ``ramp`` (affine, closed form, any length) use the closed-form
engine; ``power:<alpha>`` (``w_i = (i+1)^alpha``) uses the streaming Gram kernel,
batched over clouds, ``lengths <= 10^8`` or so.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import pathlib
import sys
import time
from typing import Any
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .. import spectra
from ..core.angles import turn_chunks
from ..core.checks import check_number, from_theta, pad_edge
from ..core.devices import compute_platform
from ..schedules import merge_spec, schedule_from_spec
from ..spectra.phase_stream import phase_step, rank1_phase_stream_kernel
from ..store import PartStore, derived_code_hash, write_csv, write_json
from .common import device_scope, int_list, parse_study_args, study_parser
from ..core.errors import BadValue

__all__ = ["SweepSpec", "run_sweep", "device_mesh", "sharded_rank1_curves", "stream_gram_batch"]


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    schedules: Sequence[dict]                      # spec dicts without head_dim, e.g. {"name": "rope", "base": 1e4}
    head_dims: Sequence[int] = (128,)
    n_clouds: int = 256
    n_max: float = 1e6
    num: int = 60
    weights: Sequence[str] = ("constant",)
    seed: int = 0

    def __post_init__(self):
        if not self.schedules:
            raise BadValue("a sweep needs at least one schedule")
        if self.n_clouds < 1:
            raise BadValue(f"n_clouds must be >= 1, got {self.n_clouds}")
        for w in self.weights:
            _weights(w)


#: ``(i+1)^alpha`` and their sum must stay below ``2^MAX_WEIGHT_EXPONENT`` (float64 ends near 2^1024)
MAX_WEIGHT_EXPONENT = 1000


def _weights(name: str):
    if name == "constant":
        return spectra.CONSTANT
    if name == "ramp":
        return spectra.AffineWeights(1.0, 1.0 / 4096)
    if name.startswith("power:"):
        try:
            return ("power", float(name.split(":", 1)[1]))
        except ValueError:
            pass
    raise BadValue(f"unknown weights {name!r}; known: 'constant', 'ramp', 'power:<alpha>'")


def code_hash() -> str:
    """The code a saved part depends on: exact angles, schedules, spectra and this study."""
    return derived_code_hash(__name__)


def device_mesh(devices=None) -> jax.sharding.Mesh:
    """A one-axis mesh (``"clouds"``) of ``devices``, by default every device of the platform in scope."""
    devs = np.array(jax.devices(compute_platform()) if devices is None else devices)
    return jax.sharding.Mesh(devs, ("clouds",))


@functools.lru_cache(maxsize=32)
def _sharded_fn(mesh: jax.sharding.Mesh, batched: bool):
    from jax.sharding import PartitionSpec as Ps
    # several CPU devices: LAPACK one matrix per call (a batched call can deadlock XLA's thread pool, see
    # topeig.top_eigenvalue), and eigvalsh, the method the saved sweep numbers were computed with
    several_cpu = compute_platform(mesh) == "cpu" and mesh.devices.size > 1
    body = functools.partial(spectra.rho2_for_clouds_traced, batched_eig=batched,
                             method="eigvalsh" if several_cpu else None, one_at_a_time=several_cpu)
    f = jax.shard_map(body, mesh=mesh, in_specs=(Ps("clouds"), Ps(), Ps()), out_specs=Ps("clouds"),
                      check_vma=False)
    return jax.jit(f)


def _single_threaded_blas(mesh):
    """On a mesh of several CPU devices, XLA's device threads call LAPACK at once, and OpenBLAS's own
    threads then deadlock (with sytrd and, more rarely, syevd; never with OPENBLAS_NUM_THREADS=1): OpenBLAS
    runs single-threaded while they do (the devices are the parallelism)."""
    from ..core.devices import one_blas_thread
    return one_blas_thread(compute_platform(mesh) == "cpu" and mesh.devices.size >= 2)


def sharded_rank1_curves(theta, V: np.ndarray, lengths, weights=None, mesh=None, clouds_per_call: int | None = None):
    """``rho_n`` for every cloud (row of V) and length, clouds sharded across the mesh's devices,
    ``clouds_per_call`` (rounded down to a multiple of the device count) per dispatched step."""
    mesh = device_mesh() if mesh is None else mesh
    ndev = mesh.devices.size
    L = spectra.check_lengths(lengths)
    th = from_theta(theta)
    Vn = spectra.check_clouds(V, th.size)
    Dm, Sm = spectra.weighted_mean_phases(th, weights or spectra.CONSTANT, L)
    batched = compute_platform(mesh) != "cpu"
    if clouds_per_call is None:          # ~4 GiB of Gram matrices per device per step on an accelerator
        per = max(1, (4 << 30) // (8 * len(L) * V.shape[1] ** 2)) if batched else 8
        clouds_per_call = per * ndev
    chunk = max(ndev, (clouds_per_call // ndev) * ndev)
    f = _sharded_fn(mesh, batched)
    from jax.sharding import NamedSharding, PartitionSpec as Ps
    rep = NamedSharding(mesh, Ps())
    Dm, Sm = jax.device_put(Dm, rep), jax.device_put(Sm, rep)       # replicated once, not per step
    shard = NamedSharding(mesh, Ps("clouds"))
    pending = []
    chunk = min(chunk, -(-Vn.shape[0] // ndev) * ndev)                # no bigger than the padded cloud count
    with _single_threaded_blas(mesh):
        for k in range(0, Vn.shape[0], chunk):                       # dispatch every step, then collect
            block = Vn[k:k + chunk]                                   # every step has one shape: one compile
            pending.append((f(jax.device_put(pad_edge(block, chunk), shard), Dm, Sm), block.shape[0]))
        out = [np.asarray(r)[:rows] for r, rows in pending]
    return np.sqrt(np.clip(np.concatenate(out), 0, None))


# ---------------------------------------------------------------------------
# streaming Gram, batched over clouds (general weights): the one kernel of spectra.stream
# ---------------------------------------------------------------------------
@functools.lru_cache(maxsize=32)
def _power_weights(alpha: float):
    def w(pos):
        return (pos + 1).astype(jnp.float64) ** alpha
    return w


def stream_gram_batch(theta, V: np.ndarray, lengths, alpha: float = 0.0, positions_per_step: int | None = None):
    """FSV ratios ``rho_n`` for clouds ``V`` under weights ``(i+1)^alpha`` by streaming: ``(n_clouds, len)``.

    One pass of weighted phase sums (``ropetheory.spectra.phase_stream``: every cloud shares the weights, so
    one product per step serves the whole batch; each cloud's Gram is assembled at the lengths), and one of
    ``ropetheory.spectra.stream_weight_sums`` for ``W_n``."""
    n_max = int(np.max(np.asarray(lengths)))
    alpha = check_number("alpha", alpha)
    if abs(alpha) * math.log2(n_max + 1) + math.log2(n_max + 1) > MAX_WEIGHT_EXPONENT:
        top = (MAX_WEIGHT_EXPONENT - math.log2(n_max + 1)) / math.log2(n_max + 1)
        raise BadValue(f"weights (i+1)^alpha with alpha={alpha!r} overflow float64 at n = {n_max}; "
                         f"|alpha| must be <= {top:.4g} there")
    th = from_theta(theta)
    L = spectra.check_lengths(lengths)
    Vn = spectra.check_clouds(V, th.size)
    step, block = phase_step(L, positions_per_step, Vn.shape[1])
    lam, _ = rank1_phase_stream_kernel(jnp.asarray(turn_chunks(th)), jnp.asarray(L), jnp.asarray(Vn), (),
                                       _power_weights(float(alpha)), step, block=block)
    W = spectra.stream_weight_sums(_power_weights(float(alpha)), L, positions_per_step=step)
    return np.sqrt(np.asarray(lam) / W[:, None]).T


# ---------------------------------------------------------------------------
# the sweep runner
# ---------------------------------------------------------------------------
def _tag(spec: dict, d: int, w: str, sw: SweepSpec) -> str:
    items = "_".join(f"{k}{v}" for k, v in sorted(spec.items()))
    return f"{items}_d{d}_{w.replace(':', '')}_c{sw.n_clouds}_s{sw.seed}_n{int(sw.n_max)}_g{sw.num}".replace(" ", "")


def run_sweep(sw: SweepSpec, out_dir: str | pathlib.Path, mesh=None, quiet: bool = False,
              resume: bool = True) -> dict[str, Any]:
    """Run (or resume) a sweep; returns the metadata. Clouds are sharded over every visible device."""
    from ..progress import progress
    out = pathlib.Path(out_dir)
    parts = PartStore(out / "sweep_parts", code=code_hash(), resume=resume)
    mesh = device_mesh() if mesh is None else mesh
    grid = spectra.log_grid(sw.n_max, sw.num)
    configs = [(spec, d, w) for spec in sw.schedules for d in sw.head_dims for w in sw.weights]
    rows = []
    t0 = time.time()
    computed = 0
    for spec, d, w in progress(configs, desc="sweep", quiet=quiet):
        tag = _tag(spec, d, w, sw)
        key = json.dumps([spec, d, w, dataclasses.asdict(sw), grid.tolist()], sort_keys=True)
        theta = schedule_from_spec(merge_spec(spec, head_dim=d))      # a spec's own head_dim must agree
        saved = parts.get(tag, key, {"rho": (sw.n_clouds, grid.size)})
        rho = None if saved is None else saved["rho"]
        if rho is None:
            V = np.random.default_rng([sw.seed, d]).standard_normal((sw.n_clouds, d))
            wt = _weights(w)
            if isinstance(wt, tuple):
                rho = stream_gram_batch(theta, V, grid, alpha=wt[1])
            else:
                rho = sharded_rank1_curves(theta, V, grid, weights=wt, mesh=mesh)
            if not np.all(np.isfinite(rho)):
                raise BadValue(f"sweep config {spec} d={d} weights={w} gave non-finite FSV ratios; nothing written")
            parts.put(tag, key, rho=rho, grid=grid)
            computed += 1
        q = np.quantile(rho, [0.05, 0.5, 0.95], axis=0)
        for i, n in enumerate(grid):
            rows.append({"schedule": json.dumps(spec, sort_keys=True), "d": d, "weights": w, "n": int(n),
                         "q05": q[0, i], "median": q[1, i], "q95": q[2, i]})
    meta = {"spec": dataclasses.asdict(sw), "devices": [str(x) for x in mesh.devices.ravel()],
            "backend": compute_platform(mesh), "configs": len(configs), "computed_now": computed,
            "seconds": time.time() - t0}
    write_csv(out / "sweep.csv", rows)
    write_json(out / "sweep.json", meta)
    return meta


def main(argv=None) -> int:
    ap = study_parser("ropetheory sweep", __doc__, out="results/sweep", flags=("quiet", "fresh", "device"))
    ap.add_argument("--schedules", default='[{"name": "rope", "base": 10000}, {"name": "partial", "fraction": 0.5}, '
                                            '{"name": "rope_id", "train_len": 4096}]',
                    help="JSON list of schedule specs (no head_dim)")
    ap.add_argument("--head-dims", type=int_list("--head-dims"), default=(128,), help="comma-separated head widths d")
    ap.add_argument("--clouds", type=int, default=256, help="random Gaussian v per schedule, head width and weights")
    ap.add_argument("--n-max", type=float, default=1e6, help="largest length n")
    ap.add_argument("--num", type=int, default=60, help="log-grid points")
    ap.add_argument("--weights", default="constant", help="comma list: constant, ramp, power:<alpha>")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random clouds")
    args = parse_study_args(ap, argv)
    with device_scope(args.device):
        try:
            scheds = json.loads(args.schedules)
        except json.JSONDecodeError as e:
            raise BadValue(f"--schedules is not valid JSON: {e}") from None
        if not isinstance(scheds, list) or not all(isinstance(s, dict) for s in scheds):
            raise BadValue(f"--schedules must be a JSON list of objects, got {args.schedules!r}")
        sw = SweepSpec(scheds, args.head_dims, args.clouds, args.n_max, args.num,
                       tuple(args.weights.split(",")), args.seed)
        meta = run_sweep(sw, args.out, quiet=args.quiet, resume=not args.fresh)
        print(f"{meta['configs']} configs on {len(meta['devices'])} device(s) ({meta['backend']}), "
              f"{meta['computed_now']} computed now, {meta['seconds']:.1f} s; wrote {args.out}/sweep.csv, sweep.json")
        return 0


if __name__ == "__main__":
    sys.exit(main())
