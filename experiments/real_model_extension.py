"""Inference-time context extension on a real model (PI, dynamic NTK, YaRN at s = 2, 4, 8).

Runs ``ropetheory analyze`` once unscaled over ``max(s) L`` tokens and once per (method, s) over
``s L`` tokens, each into its own folder (a run whose ``analysis.json`` exists is not redone), then
writes ``extension.csv`` with one row per (s, rope) from the saved JSON
(:func:`ropetheory.models.extension.extension_row`).

    python experiments/real_model_extension.py --model smollm2-135m --scales 2,4,8 --device cuda
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

from ropetheory.models import extension as ext, study
from ropetheory.store import write_csv


def _analysis(d: pathlib.Path, n: int) -> dict | None:
    p = d / "analysis.json"
    if p.exists():
        res = json.loads(p.read_text())
        if res.get("n") == n and "nll_ranges" in res:
            return res
    return None


def run_one(model: str, out: pathlib.Path, n: int, scaling: dict | None, args) -> dict | None:
    folder = out / (("none" if scaling is None else f"{scaling['rope_type']}-x{scaling['factor']:g}") + f"-n{n}")
    res = _analysis(folder, n)
    if res is None and args.collect_only:
        print(f"not run: {folder.name} (--collect-only)", file=sys.stderr)
        return None
    if res is None:
        res = study.run(model, out=out / "runs", n_tokens=n, repeat_text=True, tokens_per_pass=args.tokens_per_pass,
                        device=args.device, quiet=args.quiet, rope_scaling=scaling, train_len=args.train_len)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "analysis.json").write_text(json.dumps(res))
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--scales", default="2,4,8")
    ap.add_argument("--methods", default=",".join(ext.METHODS))
    ap.add_argument("--train-len", type=int, default=8192)
    ap.add_argument("--tokens-per-pass", type=int, default=2048,
                    help="tokens per forward pass (KV cache between them)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--collect-only", action="store_true", help="only tabulate the runs already saved")
    ap.add_argument("--out", default="results/extension_real")
    args = ap.parse_args(argv)
    scales = [int(x) for x in args.scales.split(",")]
    methods = [m for m in args.methods.split(",") if m]
    out = pathlib.Path(args.out)
    L = args.train_len
    base = run_one(args.model, out, max(scales) * L, None, args)
    base_theta = next(iter(base["meta"]["schedules"].values()))["theta"]
    rows, runs = [], [base]
    for s in scales:
        rows.append({"rope": "none", **ext.extension_row(base, s)})
        for m in methods:
            res = run_one(args.model, out, s * L, ext.scaling(m, s), args)
            if res is not None:
                runs.append(res)
                rows.append({"rope": ext.METHODS[m], **ext.extension_row(res, s, base_theta)})
    ext.one_text(runs)                      # a saved run over another machine's text is refused, not mixed in
    write_csv(out / f"extension-s{'-'.join(map(str, scales))}.csv", rows)
    for r in rows:
        print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
