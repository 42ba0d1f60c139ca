"""``ropetheory analyze``: the paper's Figs. 2-6 diagnosis for a real model or a captured key dump.

``--model NAME_OR_PATH`` runs ``ropetheory.models.study`` (offline loading, chunked capture,
streaming statistics). A key dump (``.npz`` from ``ropetheory.models.capture``) goes through the
same streaming statistics (``ropetheory.models.stream.LayerStream``, chunk by chunk, no
``n x n`` matrix) and the same analysis: per layer and key head the PC1 variance, the FSV ratio
and stable ranks against length beside the rank-1 prediction, cosines, the sink key and the
sink's share at each length, the predicted floor, its reach length and C1/C2 with
``L = original_max_position_embeddings`` (else ``max_position_embeddings``). Numbers go to
``<out>/analysis.json`` / ``heads.csv`` first; the figures are drawn from them.

``--model NAME --intervention NAME`` runs the model unchanged and with one change of its attention
past ``L`` (``ropetheory.models.interventions``: clamp-sink, hold-sink-odds, clamp-all, clamp-slow,
sink-to-mean, sink-at-4L, clamp-control, window) on the same tokens, and writes perplexity on ``[1k, L)``,
``[L, 2L)``, ``[2L, 4L)`` and the sink's share and log-odds terms of both.
"""
from __future__ import annotations

import json
import pathlib
import sys


from .capture import load_dump
from .dump import analyze_dump
from .rotation import hf_to_interleaved
from .interventions import INTERVENTIONS
from ..core.errors import BadValue

__all__ = ["analyze_dump", "hf_to_interleaved", "main"]

def write_analysis(res: dict, out: pathlib.Path) -> list[pathlib.Path]:
    """``analysis.json``, ``heads.csv``, ``claims.csv``, ``sink_decomposition.csv``, ``collapse_predictors.csv``,
    ``failure_modes.csv`` and the figures, in ``out``."""
    from .figures import plot_all
    from .failure_modes import failure_rows
    from .predictor_figures import plot_collapse_predictors
    from .predictors import predictor_rows
    from .sinks import decomposition_rows
    from ..store import write_csv, write_json
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "analysis.json", res)
    write_csv(
        out / "heads.csv", [{k: v for k, v in h.items() if not isinstance(v, (list, dict))} for h in res["heads"]]
    )
    write_csv(out / "claims.csv", res["claims"])
    write_csv(out / "sink_decomposition.csv", decomposition_rows(res["heads"], res["grid"]))
    write_csv(out / "collapse_predictors.csv", predictor_rows(res["collapse_predictors"]))
    write_csv(out / "failure_modes.csv", failure_rows(res["failure_modes"]))
    return plot_all(out) + plot_collapse_predictors(out)


def _parser():
    """``ropetheory analyze``'s arguments (the shared ``--out --fresh --quiet --device`` among them)."""
    from ..flags import study_parser
    ap = study_parser("ropetheory analyze", __doc__, out="results/analysis", flags=("fresh", "quiet", "device"))
    ap.add_argument("dump", nargs="?", help="a key dump (.npz) written by capture")
    ap.add_argument("--model", help="a packaged model (see `ropetheory models`), a .gguf file or a checkpoint "
                                    "folder; loaded offline and analysed by streaming (ropetheory.models.study)")
    ap.add_argument("--text", help="a text file to run through the model (default: the licence texts in "
                                   "/usr/share/common-licenses)")
    ap.add_argument("--text-distribution", default=None, metavar="NAME",
                    help="read the text of an installed Python distribution instead (e.g. gguf: its source and "
                         "docs in path order, never repeated whole; ropetheory.models.corpus.distribution_text)")
    ap.add_argument("--max-tokens", type=int, default=2048, help="tokens of text to analyse")
    ap.add_argument("--repeat-text", action="store_true", help="repeat the text if it is shorter than --max-tokens")
    ap.add_argument("--bos", action="store_true", help="prepend the tokenizer's BOS token")
    ap.add_argument("--train-len", type=int, default=None, help="training length L")
    ap.add_argument("--tokens-per-pass", "--chunk", dest="tokens_per_pass", type=int, default=2048,
                    help="tokens per forward pass, a KV cache between them (--chunk: its 0.2 name)")
    ap.add_argument("--rope-scaling", default=None,
                    help='inference-time context extension, JSON merged over the config\'s rope parameters, '
                         'e.g. \'{"rope_type": "linear", "factor": 2}\' (PI), dynamic, yarn')
    ap.add_argument("--checkpoint-every", type=float, default=None,
                    help="seconds between capture checkpoints")
    ap.add_argument("--intervention", default=None, metavar="NAME[,NAME...]|all",
                    help=f"with --model: run the model unchanged once and with each of these changes of its "
                         f"attention past L ({', '.join(INTERVENTIONS)}; ropetheory.models.interventions) on "
                         f"the same tokens; perplexity and the sink's log-odds terms to "
                         f"<out>/<model>/intervention-<name>/, the verdict to <out>/<model>/verdict.md")
    return ap


def main(argv=None) -> int:
    from ..flags import device_scope, parse_study_args
    args = parse_study_args(_parser(), argv)
    with device_scope(args.device):
        out = pathlib.Path(args.out)
        if args.intervention and not args.model:
            raise BadValue("--intervention needs --model")
        if args.model and args.intervention:
            return _intervene(args, out)
        if args.model:
            return _analyze_model(args, out)
        if args.dump:
            return _analyze_dump_file(args, out)
        raise BadValue("give a key dump file, or --model NAME_OR_PATH")


def _torch_device(device: str) -> str:
    """``--device`` as torch names it: ``cuda`` for ``gpu``, or for ``auto`` where CUDA is available."""
    import torch
    return "cuda" if device == "gpu" or (device == "auto" and torch.cuda.is_available()) else "cpu"


def _rope_scaling(args) -> dict | None:
    """``--rope-scaling`` read as JSON (None when not given); the other numeric flags checked."""
    import json
    if args.checkpoint_every is not None and not args.checkpoint_every >= 0:
        raise BadValue(f"--checkpoint-every must be a number of seconds >= 0, got {args.checkpoint_every!r}")
    if args.max_tokens < 2 or args.tokens_per_pass < 1:
        raise BadValue(f"--max-tokens must be >= 2 and --tokens-per-pass >= 1, got {args.max_tokens}, "
                       f"{args.tokens_per_pass}")
    if not args.rope_scaling:
        return None
    try:
        return json.loads(args.rope_scaling)
    except json.JSONDecodeError as e:
        raise BadValue(f"--rope-scaling is not JSON: {args.rope_scaling!r} ({e})") from None


def _analyze_model(args, out: pathlib.Path) -> int:
    """``--model``: ``.study.run``, then the figures from its saved numbers and the claims on stdout."""
    from . import figures, study
    from .predictor_figures import plot_collapse_predictors
    scaling = _rope_scaling(args)
    res = study.run(args.model, out=out, n_tokens=args.max_tokens, text=args.text, bos=args.bos,
                    text_distribution=args.text_distribution,
                    repeat_text=args.repeat_text, tokens_per_pass=args.tokens_per_pass,
                    device=_torch_device(args.device),
                    quiet=args.quiet, train_len=args.train_len, rope_scaling=scaling, resume=not args.fresh,
                    **({} if args.checkpoint_every is None else {"checkpoint_every": args.checkpoint_every}))
    d = out / res["meta"]["model"]
    paths = figures.plot_all(d) + plot_collapse_predictors(d)
    print(f"{res['meta']['model']}{' (4-bit quantised)' if res['meta']['quantised'] else ''}: "
          f"n = {res['n']} tokens, L = {res['train_len']}, first token {res['meta']['text']['first_token']!r}")
    for c in res["claims"]:
        why = f": {c['qualifier']}" if c["qualifier"] else ""
        print(f"  [{c['verdict']}{why}] {c['claim']}: {c['number']}")
    print(f"wrote {d / 'analysis.json'}, heads.csv, claims.csv and {len(paths)} figures")
    return 0


def _analyze_dump_file(args, out: pathlib.Path) -> int:
    """A key dump: ``.dump.analyze_dump``, its numbers and figures in ``out``, a table per head on stdout."""
    res = analyze_dump(load_dump(args.dump))
    paths = write_analysis(res, out)
    print(f"{'layer':>5s} {'head':>4s} {'pc1_var':>7s} {'rho_meas':>8s} {'rho_pred':>8s} {'floor':>6s} "
          f"{'reach':>9s} {'C1':>3s} {'C2':>3s} {'cos_kq':>7s} {'sink':>6s}")
    for r in res["heads"]:
        sink = r["sink_rope"][-1]
        print(f"{r['layer']:5d} {r['kv_head']:4d} {r['pc1_var']:7.3f} {r['rho_measured'][-1]:8.4f} "
              f"{r['rho_predicted'][-1]:8.4f} {r['predicted_floor']:6.3f} {str(r['floor_reached_at']):>9s} "
              f"{'Y' if r['C1'] else 'N':>3s} {'Y' if r['C2'] else 'N':>3s} {r['cos_kq_pre'][-1]:7.3f} "
              f"{'-' if sink is None else format(sink, '6.3f'):>6s}")
    print(f"wrote {out / 'analysis.json'}, heads.csv, claims.csv and {len(paths)} figures")
    return 0


def _intervene(args, out: pathlib.Path) -> int:
    from . import interventions
    if args.max_tokens < 2 or args.tokens_per_pass < 1:
        raise BadValue(f"--max-tokens must be >= 2 and --tokens-per-pass >= 1, got {args.max_tokens}, "
                       f"{args.tokens_per_pass}")
    names = interventions.check_names(args.intervention if args.intervention == "all"
                                      else args.intervention.split(","), "--intervention")
    res = interventions.run(args.model, out=out, name=names, n_tokens=args.max_tokens, text=args.text,
                            bos=args.bos, repeat_text=args.repeat_text, tokens_per_pass=args.tokens_per_pass,
                            device=_torch_device(args.device), train_len=args.train_len,
                            text_distribution=args.text_distribution, resume=not args.fresh)
    first = next(iter(res.values()))
    label = first["meta"]["model"]
    print(f"{label}: n = {first['n']}, L = {first['train_len']}")
    for name, r in res.items():
        for a, b in zip(r["runs"]["unchanged"]["nll_ranges"], r["runs"]["intervened"]["nll_ranges"], strict=True):
            print(f"  {name:>15s} ppl [{a['start']}, {a['end']}): unchanged {a['ppl']:.3f}, intervened {b['ppl']:.3f}")
    v = json.loads((out / label / "verdict.json").read_text())
    print(f"verdict: {v['verdict']}: {v['why']}")
    print(f"wrote {out / label}/intervention-*/, interventions.csv, verdict.md and interventions.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
