"""``ropetheory train``: train small models with each schedule and test whether their geometry predicts
length generalization (the paper's practical claim, at a scale one GPU affords).

Stages, each saved as it finishes and resumed on a rerun (``ropetheory.training`` holds the pieces):

1. data: the corpus and its compact vocabulary (``<data>/data.npz`` + ``data.json``, the recipe);
2. training: every schedule x seed at once (``<out>/train.ckpt``, the loss log ``train_log.csv``);
3. evaluation: perplexity and retrieval per variant and seed at ``1, 2, 4, 8, 16 x L``
   (``evals.jsonl``, one row per variant and seed, keyed by the run, the evaluation parameters and the code);
4. geometry: the real-model analysis of every trained model's keys and queries (``geometry.jsonl``);
5. the test: per variant the mean and standard deviation over seeds (``table.csv``), per model the
   measures and outcomes (``per_model.csv``), Spearman rank correlations with p-values between each
   geometric measure and each outcome across the trained models (``correlations.csv``), the figures.

``--preset smoke`` is the CPU test's size (a 2-layer model, a few dozen steps, two schedules);
``--preset study`` (default) is the GPU study's. Every number is redrawn from the saved files with
``--plot-only``.
"""
from __future__ import annotations

import json
import pathlib
import sys
import time
from typing import Any

import numpy as np

from .common import device_scope, parse_study_args, study_parser
from ..core.errors import BadValue

PRESETS = {
    "study": {"d_model": 256, "layers": 4, "heads": 4, "vocab": 8192, "train_len": 256, "batch": 32,
              "steps": 1800, "lr": 1e-3, "warmup": 200, "seeds": "0,1,2", "max_bytes": 24_000_000,
              "schedules": "rope,half_rope,high_freq_rope,rope_id,nope", "multiples": "1,2,4,8,16",
              "ppl_rows": 16, "task_rows": 20, "steps_per_call": 50},
    "smoke": {"d_model": 64, "layers": 2, "heads": 2, "vocab": 512, "train_len": 128, "batch": 8,
              "steps": 30, "lr": 3e-3, "warmup": 5, "seeds": "0", "max_bytes": 400_000,
              "schedules": "rope,rope_id", "multiples": "1,2", "ppl_rows": 4, "task_rows": 2, "steps_per_call": 10},
}


def _config(p: dict):
    from ..training.loop import TrainConfig
    from ..training.model import ModelConfig
    return TrainConfig(model=ModelConfig(vocab=p["vocab"], d_model=p["d_model"], layers=p["layers"], heads=p["heads"]),
                       train_len=p["train_len"], batch=p["batch"], steps=p["steps"], lr=p["lr"], warmup=p["warmup"],
                       seeds=tuple(int(s) for s in str(p["seeds"]).split(",")),
                       schedules=tuple(str(p["schedules"]).split(",")),
                       steps_per_call=min(p["steps_per_call"], p["steps"]))


def _stack_index(models, i: int):
    import jax
    return jax.tree_util.tree_map(lambda x: x[i], models)


def _train(cfg, data: dict, out: pathlib.Path, *, resume: bool, quiet: bool, checkpoint_every: float) -> dict:
    """Stage 2: every schedule x seed trained at once (resumed from ``train.ckpt``), the loss log written to
    ``train_log.csv``; returns ``ropetheory.training.loop.train``'s run."""
    from ..store import write_csv
    from ..training import loop
    t0 = time.time()

    def prog(step, losses):
        if not quiet:
            print(f"  step {step}/{cfg.steps}: loss {np.mean(losses):.3f} (min {np.min(losses):.3f}, "
                  f"max {np.max(losses):.3f}), {time.time() - t0:.0f} s", flush=True)
    run = loop.train(cfg, data, out, resume=resume, checkpoint_every=checkpoint_every, on_log=prog)
    names = [f"{s}_seed{k}" for s, k in run["names"]]
    write_csv(
        out / "train_log.csv", [{"step": r["step"], **dict(zip(names, r["loss"], strict=False))} for r in run["log"]]
    )
    return run


def _evaluate(p: dict, cfg, data: dict, run: dict, multiples: tuple[int, ...], evals, quiet: bool) -> None:
    """Stage 3: perplexity and retrieval of each variant and seed at ``multiples`` x L, one row each added to
    the journal ``evals`` (keyed by the run, the variant, the seed and the evaluation parameters)."""
    from ..training import evaluate
    ev_params = json.dumps({"multiples": multiples, "ppl_rows": p["ppl_rows"], "task_rows": p["task_rows"]})
    index = {nk: i for i, nk in enumerate(run["names"])}
    for variant, sched, change in evaluate.variants(cfg):
        for seed in cfg.seeds:
            key = f"{run['key']}|{variant}|{seed}|{ev_params}"
            if key in evals:
                continue
            t1 = time.time()
            m = _stack_index(run["models"], index[(sched, seed)])
            r = evaluate.evaluate(m, cfg, data, sched, change, seed=seed, multiples=multiples,
                                  ppl_rows=p["ppl_rows"], task_rows_per_cell=p["task_rows"])
            evals.add(key, {"variant": variant, "schedule": sched, "change": change, "seed": seed, **r})
            if not quiet:
                print(f"  evaluated {variant} seed {seed}: ppl {np.round(r['ppl'], 1).tolist()} "
                      f"({time.time() - t1:.1f} s)", flush=True)


def _geometry(cfg, data: dict, run: dict, n_geo: int, geos, out: pathlib.Path) -> None:
    """Stage 4: the real-model analysis of each trained model's keys and queries to length ``n_geo``, saved to
    ``analysis/<schedule>_seed<k>.json`` and summarised in the journal ``geos``."""
    from ..store import write_json
    from ..training import evaluate
    index = {nk: i for i, nk in enumerate(run["names"])}
    for sched in cfg.schedules:
        for seed in cfg.seeds:
            key = f"{run['key']}|geometry|{sched}|{seed}|{n_geo}"
            if key in geos:
                continue
            res = evaluate.geometry(_stack_index(run["models"], index[(sched, seed)]), cfg, data, sched,
                                    n=n_geo, seed=seed)
            write_json(
                out / "analysis" / f"{sched}_seed{seed}.json", {k: res[k] for k in ("grid", "n", "train_len", "heads")}
            )
            geos.add(key, {"schedule": sched, "seed": seed, **evaluate.summarise_geometry(res, cfg.train_len)})


def compute(p: dict, out: pathlib.Path, *, data_dir: pathlib.Path, resume: bool = True, quiet: bool = False,
            checkpoint_every: float = 60.0) -> dict[str, Any]:
    """Run stages 1-4 (each resumed from what is saved) and return the rows."""
    from ..store import Journal, derived_code_hash
    from ..training import corpus, tasks
    from ..training.model import param_count
    cfg = _config(p)
    multiples = tuple(int(m) for m in str(p["multiples"]).split(","))
    out.mkdir(parents=True, exist_ok=True)
    data = corpus.build_corpus(data_dir, max_bytes=p["max_bytes"], vocab_size=p["vocab"], templates=tasks.TEMPLATES,
                               quiet=quiet)
    run = _train(cfg, data, out, resume=resume, quiet=quiet, checkpoint_every=checkpoint_every)
    code = derived_code_hash(__name__)
    evals = Journal(out / "evals.jsonl", code=code, resume=resume)
    geos = Journal(out / "geometry.jsonl", code=code, resume=resume)
    _evaluate(p, cfg, data, run, multiples, evals, quiet)
    _geometry(cfg, data, run, max(multiples) * cfg.train_len, geos, out)
    return {
        "evals": list(evals.rows.values()),
        "geometry": list(geos.rows.values()),
        "config": cfg.as_dict(),
        "params": p,
        "train_seconds": run["seconds"],
        "data": {k: v for k, v in data["recipe"].items() if k != "files"},
        "params_per_model": param_count(run["models"]) // len(run["names"]),
        "tokens_per_model": cfg.steps * cfg.batch * cfg.train_len,
    }


def main(argv=None) -> int:
    ap = study_parser("ropetheory train", __doc__, out="results/train")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="study", help="sizes")
    ap.add_argument("--data", default=None, help="corpus folder")
    ap.add_argument("--docs", default=None, help="also copy the summary CSVs and figures into this folder")
    ap.add_argument("--checkpoint-every", type=float, default=60.0, help="seconds between training checkpoints")
    for k, v in PRESETS["study"].items():
        ap.add_argument(f"--{k.replace('_', '-')}", type=type(v), default=None, help=f"(study preset: {v})")
    args = parse_study_args(ap, argv)
    with device_scope(args.device):
        out = pathlib.Path(args.out)
        p = dict(PRESETS[args.preset])
        p.update({k: getattr(args, k) for k in p if getattr(args, k) is not None})
        from . import train_report
        if not args.plot_only:
            if not args.checkpoint_every >= 0:
                raise BadValue(f"--checkpoint-every must be a number of seconds >= 0, got {args.checkpoint_every!r}")
            res = compute(p, out, data_dir=pathlib.Path(args.data) if args.data else out / "data",
                          resume=not args.fresh, quiet=args.quiet, checkpoint_every=args.checkpoint_every)
            train_report.save(res, out)
        paths = train_report.report(out, docs=pathlib.Path(args.docs) if args.docs else None)
        for q in paths:
            print(f"wrote {q}")
        return 0


if __name__ == "__main__":
    sys.exit(main())
