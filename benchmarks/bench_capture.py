"""Benchmark: the chunked capture of a model on CPU (``--model``, default the packaged SmolLM2-135M;
``capture_streams``: every layer's q and k through the hook into its ``LayerStream``, the rotation check
on the first and last pass) against the bare model over the same passes (``chunked_passes``, no hook) in
the same run, in CPU time (``time.process_time``: the machine may be shared) and wall time.

Three runs: the bare forward; the capture as it runs (numpy's BLAS on one thread while the statistics run,
``forward._one_blas_thread``); the same capture with numpy's BLAS on its default threads (how it ran
before). The two captures' statistics are compared: OpenBLAS's threaded kernel may sum a logit's ``d``
products in another order, so a few sink terms can move by ulps; the arrays that differ and the largest
relative difference are written (``BLAS_ORDER_REL`` bounds it). Token ids are random
(seeded): the costs depend on the lengths, not on the text. The rotation check's kernel is compiled
before the timings. Writes ``docs/benchmarks/bench_capture_<tokens>_<machine>.json``.

    python benchmarks/bench_capture.py [--model smollm2-135m] [--tokens 1024] [--tokens-per-pass 2048]
                                       [--torch-threads 1]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import platform
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import torch  # noqa: E402

from ropetheory.models import forward  # noqa: E402
from ropetheory.models.registry import load_model  # noqa: E402
from ropetheory.models.rotation import check_rotation  # noqa: E402


#: a logit is a float64 dot product of d = 64 (at most 256) terms; summed in another order it moves by at most
#: ~d units of 2^-53 of |q| |k|, and the sink terms built on the logits by a few ulps more (relative to the
#: term; the others' mean logit, a mean of logits of both signs, is the least well conditioned)
BLAS_ORDER_REL = 1e-12


def timed(f) -> tuple[dict[str, float], object]:
    c0, w0 = time.process_time(), time.perf_counter()
    out = f()
    return {"cpu_s": time.process_time() - c0, "wall_s": time.perf_counter() - w0}, out


def bare(model, ids, tokens_per_pass: int) -> None:
    with torch.no_grad():
        for _ in forward.chunked_passes(model, ids, forward.pass_edges(ids.shape[1], tokens_per_pass)):
            pass


def statistics_of(cap) -> dict[str, np.ndarray]:
    out = {"nll": cap["nll"]}
    for i, st in enumerate(cap["streams"]):
        arrays, _ = st.state()
        out.update({f"{i}.{k}": v for k, v in arrays.items()})
        rot = st.rotation
        out[f"{i}.rotation"] = np.array([rot.max_abs_diff, rot.worst_ratio, rot.positions_checked])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m", help="a packaged model or a .gguf file")
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--tokens-per-pass", type=int, default=2048)
    ap.add_argument("--torch-threads", type=int, default=1, help="torch's intra-op threads (0: its default)")
    ap.add_argument("--machine", default="cpu", help="the name in the output file")
    ap.add_argument("--out", default="docs/benchmarks")
    args = ap.parse_args(argv)
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    model, _, label = load_model(args.model)
    cfg = model.config
    n, p = args.tokens, min(args.tokens_per_pass, args.tokens)
    ids = np.random.default_rng(0).integers(0, cfg.vocab_size, n).tolist()
    sched = forward.layer_schedules(cfg.to_dict(), n)[0]
    d = cfg.head_dim if getattr(cfg, "head_dim", None) else cfg.hidden_size // cfg.num_attention_heads
    for c in {p, n - (n - 1) // p * p}:                           # compile the check for each pass length
        z = np.ones((cfg.num_attention_heads, c, d), dtype=np.float32)
        check_rotation([(z, z)], sched["theta"], sched["rotary_dim"], np.arange(c))
    res: dict = {"machine": f"{args.machine}: {platform.node()} ({os.cpu_count()} CPUs), {platform.processor()}",
                 "python": platform.python_version(), "torch": torch.__version__, "model": label,
                 "tokens": n, "tokens_per_pass": p, "torch_threads": torch.get_num_threads(), "runs": {}}
    tens = torch.tensor([ids])
    res["runs"]["bare forward"], _ = timed(lambda: bare(model, tens, p))
    res["runs"]["capture"], new = timed(lambda: forward.capture_streams(model, ids, L=8192, tokens_per_pass=p))
    one = forward._one_blas_thread
    forward._one_blas_thread = contextlib.nullcontext                # numpy's BLAS on its default threads
    try:
        res["runs"]["capture, default BLAS threads"], old = timed(
            lambda: forward.capture_streams(model, ids, L=8192, tokens_per_pass=p))
    finally:
        forward._one_blas_thread = one
    a, b = statistics_of(new), statistics_of(old)
    differ = [k for k in a if not np.array_equal(a[k], b[k], equal_nan=True)]
    rel = max((float(np.nanmax(np.abs(a[k] - b[k]) / np.maximum(np.abs(b[k]), 1e-300))) for k in differ), default=0.0)
    res["arrays_compared"], res["arrays_differing"] = len(a), differ
    res["max_rel_diff_default_threads"], res["bound_rel"] = rel, BLAS_ORDER_REL
    base = res["runs"]["bare forward"]
    res["ratio_to_bare"] = {k: {t: v[t] / base[t] for t in v} for k, v in res["runs"].items()}
    res["speedup_cpu"] = res["runs"]["capture, default BLAS threads"]["cpu_s"] / res["runs"]["capture"]["cpu_s"]
    for k, v in res["runs"].items():
        r = res["ratio_to_bare"][k]
        print(f"{k:32s} cpu {v['cpu_s']:7.2f} s ({r['cpu_s']:5.2f}x bare)  wall {v['wall_s']:7.2f} s "
              f"({r['wall_s']:5.2f}x bare)")
    print(f"capture {res['speedup_cpu']:.2f}x less CPU time than with default BLAS threads; {len(differ)} of "
          f"{len(a)} arrays differ, by {rel:.1e} relative at most (bound {BLAS_ORDER_REL:g})")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"bench_capture_{n}_{args.machine}" if label == "smollm2-135m" else \
        f"bench_capture_{label}_{n}_{args.machine}"
    (out / f"{stem}.json").write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
