"""Benchmark: the exact rotary (``rotary_precision(model, "exact")``) against transformers' own rotary, on
SmolLM2-135M (head_dim 64, base 1e5), both measured in the same run.

(a) The rotary embedding alone: one forward returning ``(cos, sin)`` for positions ``0 .. n - 1``,
    n = 8192, 32768, 131072, model dtype float32 and bfloat16. Transformers' own; the exact rotary's first
    call (its table dropped before, so the call reduces every angle: ``ExactTable.extend``); its steady
    state (the table kept: the call only indexes it). Seconds per call (median of ``--repeat``, with the
    smallest and largest), the peak extra resident memory of the call, the memory the call leaves
    resident, and the size of the exact table the model keeps (``cos.nbytes + sin.nbytes``).
(b) The model at 8192 tokens, run by ``ropetheory.models.forward.cached_forward`` in chunks of
    ``--chunk`` with a KV cache, with transformers' rotary and with the exact one (table kept), the two
    alternated ``--repeat`` times: the ratio of the medians. ``--layers`` keeps the first decoder layers
    (all 30 on a machine with time for them; the default 1 is "the rotary plus one attention layer at the
    model's shapes", as a full forward takes minutes on 2 shared cores). The rotary runs once per forward
    whatever the depth, so a shallow model shows the largest share it can take.

``--device cuda`` runs both on the GPU: a call's time ends with ``torch.cuda.synchronize()``, and its memory
is torch's CUDA allocator's (peak allocated above what was allocated before, reset before each call);
on the CPU, memory is the resident set read from ``/proc/self/status``: its peak ``VmHWM`` is reset to the current
``VmRSS`` (``/proc/self/clear_refs``, value 5) and glibc's free heap is returned (``malloc_trim``) before
each call, so the peak minus the resident size before is the call's own. Not ``tracemalloc``: it sees
Python's and numpy's allocations but neither torch's CPU allocator nor JAX's (which reduces the angles);
not torch's allocator statistics: torch keeps peak counters for CUDA only; not ``getrusage``'s
``ru_maxrss``: it is the peak since the process started and cannot be reset. Linux only.

The machine is recorded (CPU model, cores, torch threads, load average at start and end). Writes
``docs/benchmarks/bench_exact_rotary_<machine>.json``.

    python benchmarks/bench_exact_rotary.py [--repeat 5] [--layers 1] [--chunk 2048] [--label after] [--device cuda]
"""
from __future__ import annotations

import argparse
import ctypes
import functools
import json
import os
import pathlib
import platform
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench_topeig_gpu import kind_tag, machine_tag  # noqa: E402
from ropetheory.models.forward import cached_forward  # noqa: E402
from ropetheory.models.registry import load_model  # noqa: E402
from ropetheory.models.rope_precision import exact_tables, forget_exact_tables, rotary_precision  # noqa: E402

POSITIONS = (8192, 32768, 131072)
DTYPES = ("float32", "bfloat16")
MIB = 2.0 ** 20
_LIBC = ctypes.CDLL("libc.so.6") if sys.platform.startswith("linux") else None


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def measured(fn, device: str = "cpu"):
    """``(seconds, peak extra MiB, retained MiB)`` of ``fn()``: memory above what was in use before, at its
    peak during the call and after the call's result is dropped (CPU: the resident set; CUDA: torch's
    allocator, the time taken after the device finished)."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        peak = torch.cuda.max_memory_allocated()
        del out
        return seconds, (peak - before) / MIB, (torch.cuda.memory_allocated() - before) / MIB
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")                                     # VmHWM := VmRSS
    before = _status_kib("VmRSS")
    t0 = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    peak = _status_kib("VmHWM")
    del out
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
    after = _status_kib("VmRSS")
    return seconds, (peak - before) * 1024 / MIB, (after - before) * 1024 / MIB


def summary(samples: list[tuple[float, float, float]]) -> dict:
    s = [x[0] for x in samples]
    return {"seconds_median": statistics.median(s), "seconds_min": min(s), "seconds_max": max(s),
            "seconds": s, "peak_extra_mib": statistics.median(x[1] for x in samples),
            "retained_mib": statistics.median(x[2] for x in samples)}


def machine(device: str = "cpu") -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"node": platform.node(), "cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__,
            "transformers": __import__("transformers").__version__,
            "gpu": torch.cuda.get_device_name() if device == "cuda" else None}


def rotary_part(dtype: str, repeat: int, device: str = "cpu") -> list[dict]:
    """(a) for one model dtype: each n, transformers' own, exact first call, exact steady state."""
    model, _, _ = load_model("smollm2-135m", dtype=dtype, device=device)
    rot = model.model.rotary_emb
    x = torch.zeros(1, dtype=getattr(torch, dtype), device=device)
    rows = []
    for n in POSITIONS:
        call = functools.partial(rot, x, torch.arange(n, device=device)[None])
        timed = functools.partial(measured, device=device)
        samples: dict[str, list] = {"transformers": [], "exact (first call)": [], "exact (steady)": []}
        with torch.no_grad():
            for _ in range(repeat):
                samples["transformers"].append(timed(call))
                forget_exact_tables(model)
                with rotary_precision(model, "exact"):
                    samples["exact (first call)"].append(timed(call))
                    samples["exact (steady)"].append(timed(call))
        table_mib = sum(t.cos.nbytes + t.sin.nbytes for t in exact_tables(model)) / MIB
        forget_exact_tables(model)
        base = statistics.median(s[0] for s in samples["transformers"])
        for name, smp in samples.items():
            row = {"part": "rotary", "dtype": dtype, "positions": n, "rotary": name, **summary(smp)}
            row["ratio_to_transformers"] = row["seconds_median"] / base
            row["table_mib"] = 0.0 if name == "transformers" else table_mib
            rows.append(row)
            print(f"{dtype:8s} n={n:6d} {name:18s} {row['seconds_median'] * 1e3:9.1f} ms "
                  f"[{row['seconds_min'] * 1e3:.1f}, {row['seconds_max'] * 1e3:.1f}]  "
                  f"{row['ratio_to_transformers']:6.2f}x  peak +{row['peak_extra_mib']:.0f} MiB  "
                  f"kept {row['retained_mib']:.0f} MiB", flush=True)
    return rows


def model_part(layers: int, chunk: int, tokens: int, repeat: int, device: str = "cpu") -> dict:
    """(b): the first ``layers`` decoder layers of SmolLM2 (float32) over ``tokens`` tokens in chunks."""
    from transformers import DynamicCache
    model, _, _ = load_model("smollm2-135m", dtype="float32", device=device)
    timed = functools.partial(measured, device=device)
    total = len(model.model.layers)
    model.model.layers = model.model.layers[:layers]
    model.config.num_hidden_layers = layers
    ids = torch.as_tensor(np.random.default_rng(0).integers(0, model.config.vocab_size, tokens), device=device)[None]

    def forward():
        cache = DynamicCache(config=model.config)
        for s in range(0, tokens, chunk):
            cached_forward(model, ids, s, min(tokens, s + chunk), cache)
        return cache

    samples: dict[str, list] = {"transformers": [], "exact": []}
    with torch.no_grad():
        with rotary_precision(model, "exact"):
            first = timed(forward)                          # builds the table
        for _ in range(repeat):
            samples["transformers"].append(timed(forward))
            with rotary_precision(model, "exact"):
                samples["exact"].append(timed(forward))
    res = {"part": "model", "layers": layers, "of_layers": total, "tokens": tokens, "chunk": chunk,
           "exact_first_seconds": first[0], **{k: summary(v) for k, v in samples.items()}}
    res["ratio_exact_to_transformers"] = res["exact"]["seconds_median"] / res["transformers"]["seconds_median"]
    print(f"model ({layers}/{total} layers, {tokens} tokens in chunks of {chunk}): transformers "
          f"{res['transformers']['seconds_median']:.2f} s [{res['transformers']['seconds_min']:.2f}, "
          f"{res['transformers']['seconds_max']:.2f}], exact {res['exact']['seconds_median']:.2f} s "
          f"[{res['exact']['seconds_min']:.2f}, {res['exact']['seconds_max']:.2f}]: "
          f"{res['ratio_exact_to_transformers']:.3f}x", flush=True)
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--layers", type=int, default=1, help="decoder layers kept for (b) (SmolLM2 has 30)")
    ap.add_argument("--chunk", type=int, default=2048, help="tokens per cached_forward call in (b)")
    ap.add_argument("--tokens", type=int, default=8192, help="tokens of (b)")
    ap.add_argument("--skip-model", action="store_true", help="run (a) only")
    ap.add_argument("--label", default="", help="appended to the file name (e.g. 'before' for another commit)")
    ap.add_argument("--note", default="", help="what else ran on the machine (kept in the JSON)")
    ap.add_argument("--out", default="docs/benchmarks")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where torch runs both rotaries")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: torch sees no CUDA device")
    res: dict = {"machine": machine(args.device), "device": args.device, "note": args.note, "repeat": args.repeat,
                 "memory": ("torch.cuda.max_memory_allocated after reset_peak_memory_stats, minus "
                            "memory_allocated before" if args.device == "cuda" else
                            "resident set: VmHWM after resetting it to VmRSS, minus VmRSS before (malloc_trim first)"),
                 "load_average_start": os.getloadavg()}
    res["rotary"] = [row for dtype in DTYPES for row in rotary_part(dtype, args.repeat, args.device)]
    if not args.skip_model:
        res["model"] = model_part(args.layers, args.chunk, args.tokens, args.repeat, args.device)
    res["load_average_end"] = os.getloadavg()
    print(f"load average {res['load_average_start']} -> {res['load_average_end']}")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = (kind_tag(torch.cuda.get_device_name()) if args.device == "cuda" else machine_tag(jax.devices("cpu")[0])) \
        + (f"_{args.label}" if args.label else "")
    (out / f"bench_exact_rotary_{tag}.json").write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
