"""``ropetheory audit TARGET``: a RoPE implementation against the exact operator, per dtype, to 8x the
context and past it.

TARGET is a built-in adapter (``ropetheory.testing.adapters``: transformers, torchtune,
torchtune-llama3, rotary-embedding-torch, x-transformers, liger on CUDA, mlx, keras-hub, litgpt and gemma-jax
where installed, and the controls reference and float32-positions). For each dtype the audit runs the
implementation on random vectors at positions from 0 to ``factor`` times the context (log-spaced, with
every power of two and its neighbours) and compares each entry with the exactly rotated one; the floor
is the error no implementation that stores cos and sin in that dtype can avoid (docs/guide/audit.md). It
writes ``audit.json`` (the verdicts, the worst errors and the logit errors), ``audit.csv`` (per dtype
and position: worst absolute error and ratio to the floor) and ``audit.png`` / ``audit.pdf`` (error
against position per dtype, the floor drawn), and prints one line per dtype.

``ropetheory audit --zoo`` instead diagnoses the zoo of re-created public RoPE bugs
(``ropetheory.testing.zoo``, each in every dtype it applies to, and correct controls): it prints the
table (bug, source, class expected and diagnosed, first position over the floor, caught) and writes
``zoo/zoo.csv`` and ``zoo/zoo.json``; the exit code is 1 if any entry is missed or misnamed.
"""
from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys
import time
from typing import Any

import numpy as np

from ..store import write_csv, write_json
from .common import parse_study_args, save_figures, study_parser
from ..core.errors import BadValue

#: positions are audited up to this many times the context (the issue's "8x")
DEFAULT_FACTOR = 8
#: random vectors per position and dtype
DEFAULT_VECTORS = 4


def run_audit(target: str, *, head_dim: int, base: float, context: int, factor: int, dtypes: list[str],
              vectors: int, device: str, config: Any = None) -> dict[str, Any]:
    """Audit one adapter for every dtype; the numbers behind ``audit.json`` and ``audit.csv``."""
    from .. import testing
    from ..testing import adapters
    top = context * factor
    t0 = time.time()
    ad = adapters.build(target, head_dim=head_dim, base=base, max_position=top, device=device, config=config)
    out: dict[str, Any] = {"target": target, "description": ad.description, "layout": ad.layout,
                           "head_dim": 2 * ad.theta.size, "base": base, "context": context, "max_position": top,
                           "device": device, "vectors": vectors, "dtypes": {}, "rows": []}
    if config is not None:                     # the frequencies and attention factor, not only the rotation
        chk = testing.check_config(ad.theta, ad.attention_factor, config, seq_len=top + 1)
        out["registry"] = {**dataclasses.asdict(chk), "agrees": chk.agrees, "verdict": chk.verdict()}
    for dt in dtypes:
        a = testing.audit_rope(ad.fn, schedule=ad.theta, dtype=dt, layout=ad.layout, framework=ad.framework,
                               n_vectors=vectors, max_position=top)
        # the logit error at distance 1, the last distance within the context, the largest distance and
        # the position where the rotation was worst (powers of two are avoided: float32 positions are
        # exact there, which would hide the error)
        dist = np.unique(np.array([1, context - 1, top - 1, a.worst_position], dtype=np.int64))
        lg = testing.logit_errors(ad.fn, schedule=ad.theta, distances=dist, dtype=dt, layout=ad.layout,
                                  framework=ad.framework)
        out["dtypes"][dt] = {"verdict": a.verdict(), "within_floor": a.within_floor,
                             "first_over_floor": a.first_over_floor, "worst_floor_ratio": a.worst_floor_ratio,
                             "worst_abs_err": a.worst_abs_err, "worst_ulps": a.worst_ulps,
                             "worst_position": a.worst_position, "worst_plane": a.worst_plane,
                             "ratio_at_context": float(a.max_floor_ratio[a.positions <= context].max()),
                             "logit": [{"distance": int(m), "max_abs_err": float(e), "floor": float(f)}
                                       for m, e, f in zip(lg.distances, lg.max_abs_err, lg.floor, strict=True)]}
        out["rows"] += [{"target": target, "dtype": dt, "device": device, "position": int(p), "max_abs_err": float(e),
                         "floor_ratio": float(r)}
                        for p, e, r in zip(a.positions, a.max_abs_err, a.max_floor_ratio, strict=True)]
    out["seconds"] = time.time() - t0
    return out


def plot(res: dict[str, Any], out: pathlib.Path) -> list[pathlib.Path]:
    """Left: the largest absolute error against position per dtype; right: the same in units of each
    dtype's floor (1 = the floor, dashed); the context marked in both."""
    import matplotlib.pyplot as plt
    fig, axs = plt.subplots(1, 2, figsize=(10, 3.8))
    for dt in res["dtypes"]:
        rows = [r for r in res["rows"] if r["dtype"] == dt and r["position"] > 0]
        pos = np.array([r["position"] for r in rows])
        axs[0].plot(pos, [max(r["max_abs_err"], 1e-300) for r in rows], marker=".", ms=3, lw=1, label=dt)
        axs[1].plot(pos, [max(r["floor_ratio"], 1e-300) for r in rows], marker=".", ms=3, lw=1, label=dt)
    axs[1].axhline(1.0, color="k", ls="--", lw=0.8, label="the dtype's floor")
    for ax in axs:
        ax.axvline(res["context"], color="0.4", ls=":", lw=0.8, label=f"context {res['context']}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("position (tokens)")
        ax.legend(fontsize=7)
    axs[0].set_ylabel("largest |error| of a rotated entry")
    axs[1].set_ylabel("largest |error| / the dtype's floor")
    fig.suptitle(f"{res['target']} ({res['device']}) against the exact operator, d = {res['head_dim']}", fontsize=9)
    return save_figures(fig, [out / "audit.png", out / "audit.pdf"], dpi=160)


def zoo_table(rows: list[dict[str, Any]]) -> list[str]:
    """The zoo's rows as aligned text lines: bug, source, dtype, class expected and diagnosed, first
    position over the floor, caught."""
    head = ("bug", "source", "dtype", "expected", "diagnosed", "first over", "caught")
    cells = [head] + [(r["bug"], r["source"], r["dtype"], r["expected"],
                       f"{r['diagnosed']}" + (f" ({r['kind']})" if r["kind"] else ""),
                       "never" if r["first_over_floor"] is None else str(r["first_over_floor"]),
                       "yes" if r["caught"] else "NO") for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    return ["  ".join(c[i].ljust(widths[i]) for i in range(len(head))).rstrip() for c in cells]


def run_zoo_command(out: pathlib.Path) -> int:
    """``--zoo``: diagnose every zoo entry and control in each of its dtypes; print and save the table."""
    from ..testing import zoo
    t0 = time.time()
    rows = zoo.run_zoo()
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "zoo.csv", [{k: v for k, v in r.items() if k != "verdict"} for r in rows])
    write_json(out / "zoo.json", {"head_dim": zoo.HEAD_DIM, "rows": rows, "seconds": time.time() - t0})
    for line in zoo_table(rows):
        print(line)
    caught = sum(r["caught"] for r in rows)
    print(f"{caught} of {len(rows)} caught and named in their class; wrote {out / 'zoo.csv'}, zoo.json "
          f"({time.time() - t0:.1f} s)")
    return 0 if caught == len(rows) else 1


def _config(source: str) -> dict[str, Any]:
    """A packaged fixture config by name, else a config.json path or checkpoint folder, as a dict."""
    import json

    from .. import data
    from ..schedules.config_io import read_config
    fixture = data.fixture_config(source)
    cfg = json.loads(fixture.read_text(encoding="utf-8")) if fixture is not None else read_config(source)
    rp = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    nested = [k for k, v in rp.items() if isinstance(v, dict)] if isinstance(rp, dict) else []
    if nested:                                 # per-layer-type rope parameters: the global layers' (full attention)
        lt = "full_attention" if "full_attention" in nested else nested[0]
        print(f"ropetheory audit: {source} gives rope parameters per layer type {nested}; auditing {lt!r}",
              file=sys.stderr)
        cfg = {**cfg, "rope_parameters": rp[lt]}
        cfg.pop("rope_scaling", None)
    return cfg


def _dtypes(s: str) -> list[str]:
    from ..testing import DTYPES
    out = [x.strip() for x in s.split(",") if x.strip()]
    bad = [x for x in out if x not in DTYPES]
    if not out or bad:
        raise argparse.ArgumentTypeError(f"--dtypes must be a comma-separated list of {sorted(DTYPES)}, got {s!r}")
    return out


def parser() -> argparse.ArgumentParser:
    from ..testing.adapters import ADAPTERS
    ap = study_parser("ropetheory audit", __doc__, out="results/audit", flags=("quiet",))
    ap.add_argument("target", nargs="?", choices=sorted(ADAPTERS), metavar="TARGET",
                    help=f"the implementation: {', '.join(ADAPTERS)} (not with --zoo)")
    ap.add_argument("--zoo", action="store_true",
                    help="diagnose the zoo of re-created public RoPE bugs (ropetheory.testing.zoo) instead: "
                         "prints the table and writes zoo/zoo.csv and zoo/zoo.json")
    ap.add_argument("--head-dim", type=int, default=128, help="head width d")
    ap.add_argument("--base", type=float, default=5e5, help="RoPE base")
    ap.add_argument("--context", type=int, default=8192, help="the model's context length")
    ap.add_argument("--factor", type=int, default=DEFAULT_FACTOR,
                    help="audit positions up to this many times the context")
    ap.add_argument("--dtypes", type=_dtypes, default=["float32", "bfloat16", "float16"],
                    help="comma-separated dtypes")
    ap.add_argument("--vectors", type=int, default=DEFAULT_VECTORS,
                    help="random vectors per position and dtype")
    ap.add_argument("--config", default=None,
                    help="a model config (a packaged fixture such as llama-3.1-8b, a config.json or a checkpoint "
                         "folder): the transformers and liger adapters build that model's rotary class (any rope "
                         "type), and --head-dim, --base and --context default to the config's")
    ap.add_argument("--torch-device", default="cpu", help="where a torch implementation runs: cpu or cuda "
                                                          "(default: cpu)")
    return ap


def main(argv: Any = None) -> int:
    from ..core.checks import check_integer
    args = parse_study_args(parser(), argv)
    if args.zoo:
        if args.target is not None:
            raise BadValue(f"--zoo audits the zoo's own implementations: drop TARGET ({args.target!r})")
        return run_zoo_command(pathlib.Path(args.out) / "zoo")
    if args.target is None:
        raise BadValue("TARGET is required (one of the built-in adapters), or --zoo")
    check_integer("--context", args.context, lo=1)
    check_integer("--factor", args.factor, lo=1)
    check_integer("--vectors", args.vectors, lo=1)
    config = _config(args.config) if args.config else None
    head_dim, base, context = args.head_dim, args.base, args.context
    if config is not None:
        from ..schedules.hf import load_rope_config
        from ..schedules.model_config import read_model_config
        rc, facts = load_rope_config(config), read_model_config(config)
        head_dim, base, context = rc.head_dim, rc.rope_theta, facts.train_len or context
        context = int(config.get("max_position_embeddings") or context)
    res = run_audit(args.target, head_dim=head_dim, base=base, context=context, factor=args.factor,
                    dtypes=args.dtypes, vectors=args.vectors, device=args.torch_device, config=config)
    out = pathlib.Path(args.out) / args.target
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "audit.json", {k: v for k, v in res.items() if k != "rows"})
    write_csv(out / "audit.csv", res["rows"])
    plot(res, out)
    print(f"{res['target']}: {res['description']} (layout {res['layout']}, d = {res['head_dim']}, "
          f"positions to {res['max_position']} = {args.factor} x context {res['context']}, {args.torch_device})")
    if "registry" in res:
        print(f"  {res['registry']['verdict']}")
    for r in res["dtypes"].values():
        print(f"  {r['verdict']}")
    print(f"wrote {out / 'audit.json'}, audit.csv, audit.png ({res['seconds']:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
