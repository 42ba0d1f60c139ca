"""``ropetheory retrofit``: build the corpus, fine-tune a variant, evaluate it past ``L``, draw the verdict.

``corpus`` writes the non-repeating corpus (``.retrofit_corpus``); ``train --variant V --steps S`` retrofits
and fine-tunes (``.retrofit``), checkpointing so that a rerun resumes; ``evaluate --variant E`` measures one
evaluation (``.retrofit_eval``); ``geometry --variant V`` captures the fine-tuned keys and queries over one
held-out window of 8L and analyses them as ``ropetheory analyze`` does (FSV ratio, floor, C1, C2, the sink's
decomposition: ``.study.analyze_streams``); ``report`` writes the verdict table, summary and figure
(``.retrofit_report``). Results go to ``--out/<model>/``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import sys
from collections.abc import Sequence
from typing import Any

from ..core.errors import BadValue
from .forward import training_length
from .retrofit import EVALUATIONS, VARIANTS, FinetuneConfig, finetune, retrofit, variant_schedule

__all__ = ["main", "document_separator", "END_OF_TEXT"]


def _load(model_name: str, device: str):
    from .registry import load_model
    m, tok, label = load_model(model_name, device=device)
    return m, tok, label


def _key(*parts: Any) -> str:
    from ..store import derived_code_hash
    return hashlib.sha256(json.dumps([*parts, derived_code_hash("ropetheory.models.retrofit")], sort_keys=True,
                                     default=str).encode()).hexdigest()


def _bar(label: str, total: int | None = None):
    """A progress bar on a terminal (``ropetheory.progress``); its ``update(k)`` is the package's convention."""
    from ..progress import progress
    return progress(total=total, desc=label, unit="step")


def _parser():
    import argparse
    from ..flags import HelpFormatter, plain_help
    p = argparse.ArgumentParser(prog="ropetheory retrofit", formatter_class=HelpFormatter,
                                description=plain_help(__doc__))
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION",
                           help="corpus, train, evaluate or report (each has -h)")
    c = sub.add_parser("corpus", formatter_class=HelpFormatter,
                       help="build the non-repeating corpus from the installed packages' text")
    c.add_argument("--train-tokens", type=int, default=25_000_000, help="tokens in the training stream")
    c.add_argument("--heldout-tokens", type=int, default=600_000,
                   help="at least this many held-out tokens (whole distributions)")
    t = sub.add_parser("train", formatter_class=HelpFormatter, help="retrofit one variant and fine-tune it")
    t.add_argument("--variant", required=True, choices=VARIANTS, help="the frequencies to fine-tune with")
    t.add_argument("--steps", type=int, required=True, help="optimiser steps (the same for every variant)")
    t.add_argument("--batch", type=int, default=4, help="sequences per step")
    t.add_argument("--seq-len", type=int, default=None, help="tokens per sequence (default: the model's L)")
    t.add_argument("--lr", type=float, default=3e-4, help="peak learning rate (cosine to a tenth of it)")
    t.add_argument("--warmup", type=int, default=50, help="steps of linear warm-up")
    t.add_argument("--checkpoint-every", type=float, default=120.0,
                   help="seconds between checkpoints (0: after every step)")
    e = sub.add_parser("evaluate", formatter_class=HelpFormatter,
                       help="evaluate one variant (fine-tuned, or 'original') past L")
    e.add_argument("--variant", required=True, choices=EVALUATIONS,
                   help="a fine-tuned variant, +yarn or +temp for the inference-only changes, or original")
    e.add_argument("--windows", type=int, default=None, help="held-out windows of 8L (default: all)")
    e.add_argument("--passkey-trials", type=int, default=2, help="passkey prompts per length and depth")
    g = sub.add_parser("geometry", formatter_class=HelpFormatter,
                       help="the paper's key/query geometry of one variant (fine-tuned, or 'original') to 8L")
    g.add_argument("--variant", required=True, choices=(*VARIANTS, "original"),
                   help="a fine-tuned variant, or original")
    g.add_argument("--window", type=int, default=0, help="which held-out window of 8L (0: the first)")
    g.add_argument("--tokens-per-pass", type=int, default=4096, help="tokens per forward pass")
    r = sub.add_parser("report", formatter_class=HelpFormatter,
                       help="the verdict table and figure from the evaluation files")
    r.add_argument("--label", default="smollm2-135m", help="the model's folder under --out")
    for s in (t, e, g):
        s.add_argument("--train-len", type=int, default=None, help="L (default: the model's config)")
    for s in (c, t, e, g, r):
        s.add_argument("--model", default="smollm2-135m", help="a packaged model, .gguf or checkpoint folder")
        s.add_argument("--corpus", default="results/retrofit/corpus", help="the corpus folder")
        s.add_argument("--out", default="results/retrofit", help="where results go (one folder per model)")
        s.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, ...")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out = pathlib.Path(args.out)
    if args.action == "corpus":
        return _cmd_corpus(args)
    if args.action == "report":
        return _cmd_report(out / args.label)
    from .retrofit_corpus import load_corpus
    corpus = load_corpus(args.corpus, ("train",) if args.action == "train" else ("heldout",))
    model, tok, label = _load(args.model, args.device)
    L = int(getattr(args, "train_len", None) or training_length(model.config.to_dict()))
    if args.action == "train":
        return _cmd_train(args, model, label, corpus, L, out / label / args.variant)
    if args.action == "geometry":
        return _cmd_geometry(args, model, label, corpus, L, out / label)
    return _cmd_evaluate(args, model, tok, label, corpus, L, out / label)


def _cmd_train(args, model, label: str, corpus: dict, L: int, folder: pathlib.Path) -> int:
    from safetensors.torch import save_model
    from ..store import write_json
    fc = FinetuneConfig(steps=args.steps, batch=args.batch, seq_len=args.seq_len or L, lr=args.lr,
                        warmup=args.warmup)
    sched = variant_schedule(args.variant, model.config.to_dict())
    retrofit(model, sched)
    folder.mkdir(parents=True, exist_ok=True)
    key = _key(label, args.variant, sched.to_dict(), dataclasses.asdict(fc), corpus["manifest"]["train_sha256"])
    with _bar(f"train {args.variant}", fc.steps) as bar:
        res = finetune(model, corpus["train"], fc, checkpoint=folder / "checkpoint.npz", key=key,
                       checkpoint_every=args.checkpoint_every, on_step=lambda step, steps, loss: bar.update(1))
    save_model(model, str(folder / "model.safetensors"))
    write_json(folder / "train.json", {"variant": args.variant, "schedule": sched.to_dict(),
                                       "config": dataclasses.asdict(fc), "tokens": res["tokens"],
                                       "corpus": {k: corpus["manifest"][k] for k in
                                                  ("train_sha256", "heldout_sha256", "train_tokens")},
                                       "log": res["log"], "key": key, "device": args.device})
    print(f"{args.variant}: {res['steps']} steps, {res['tokens']} tokens, final loss "
          f"{res['log'][-1]['loss']:.4f}, {res['log'][-1]['seconds']:.0f} s")
    return 0


def _fine_tuned(model, variant: str, folder: pathlib.Path):
    """``model`` with ``variant``'s fine-tuned weights (none for ``original``) and frequencies, in eval
    mode; returns the schedule."""
    base = variant.partition("+")[0]
    if base != "original":
        from safetensors.torch import load_model as load_weights
        weights = folder / base / "model.safetensors"
        if not weights.is_file():
            raise BadValue(f"no fine-tuned {base!r} in {str(folder)!r}: run 'ropetheory retrofit train "
                           f"--variant {base}' first")
        load_weights(model, str(weights))
    sched = variant_schedule(variant, model.config.to_dict())
    retrofit(model, sched)
    model.eval()
    return sched


def _cmd_geometry(args, model, label: str, corpus: dict, L: int, folder: pathlib.Path) -> int:
    from ..store import write_json
    from .forward import capture_streams
    from .retrofit import retrofitted_schedules
    from .retrofit_corpus import heldout_windows
    from .study import analyze_streams
    sched = _fine_tuned(model, args.variant, folder)
    starts = heldout_windows(corpus["manifest"]["heldout_bounds"], 8 * L)
    if not 0 <= args.window < len(starts):
        raise BadValue(f"--window must be in [0, {len(starts)}) (held-out windows of 8L = {8 * L} tokens), "
                       f"got {args.window}")
    a = starts[args.window]
    ids = corpus["heldout"][a:a + 8 * L].astype(int).tolist()
    with _bar(f"capture {args.variant}", len(ids)) as bar:
        cap = capture_streams(model, ids, L=L, tokens_per_pass=args.tokens_per_pass, progress=bar.update,
                              schedules=retrofitted_schedules(model.config.to_dict(), sched, len(ids)))
    with _bar(f"analyse {args.variant}") as bar:
        res = analyze_streams(cap, L=L, progress=bar.update)
    res.update({"variant": args.variant, "schedule": sched.to_dict(), "model": label, "window": args.window,
                "start": int(a), "corpus": {k: corpus["manifest"][k] for k in ("train_sha256", "heldout_sha256")}})
    write_json(folder / f"geometry-{args.variant}.json", res)
    print(f"{args.variant}: captured {len(ids)} tokens in {cap['seconds']:.0f} s, analysed in "
          f"{res['analysis_seconds']:.0f} s")
    return 0


def _cmd_evaluate(args, model, tok, label: str, corpus: dict, L: int, folder: pathlib.Path) -> int:
    from ..store import write_json
    from .retrofit_eval import evaluate
    sched = _fine_tuned(model, args.variant, folder)
    with _bar(f"evaluate {args.variant}") as bar:
        res = evaluate(model, tok, corpus["heldout"], corpus["manifest"]["heldout_bounds"], L=L,
                       temperature=sched.temperature == "length", windows=args.windows,
                       passkey_trials=args.passkey_trials, progress=bar.update)
    res.update({"variant": args.variant, "schedule": sched.to_dict(), "model": label,
                "corpus": {k: corpus["manifest"][k] for k in ("train_sha256", "heldout_sha256")}})
    write_json(folder / f"eval-{args.variant}.json", res)
    r = res["windows"][0]["ranges"]
    print(f"{args.variant}: " + ", ".join(f"[{x['start']},{x['end']}) {x['ppl']:.2f}" for x in r))
    return 0


#: the token that separates documents in pretraining streams (GPT-2's, SmolLM2's, many more); a tokenizer
#: without it separates them with its end-of-sequence token
END_OF_TEXT = "<|endoftext|>"


def document_separator(tokenizer) -> int:
    """The id of ``END_OF_TEXT`` where the tokenizer has that token (as itself, whatever its role: SmolLM2
    makes it the unknown token too), else its EOS id; a tokenizer with neither is refused."""
    tid = tokenizer.convert_tokens_to_ids(END_OF_TEXT)
    if tid is not None and tokenizer.convert_ids_to_tokens(tid) == END_OF_TEXT:
        return int(tid)
    if tokenizer.eos_token_id is None:
        raise BadValue(f"the tokenizer has neither {END_OF_TEXT!r} nor an end-of-sequence token to separate documents")
    return int(tokenizer.eos_token_id)


def _cmd_corpus(args) -> int:
    from .registry import load_tokenizer
    from .retrofit_corpus import build_corpus, installed_documents, save_corpus
    tok = load_tokenizer(args.model)
    eot = document_separator(tok)
    docs, versions = installed_documents()
    # a file that spells a special token ("<|endoftext|>" in transformers' own sources) is text: tokenised as
    # text, so the separator appears only between documents
    with _bar("corpus tokens", args.train_tokens) as bar:
        corpus = build_corpus(docs, lambda texts: tok(texts, add_special_tokens=False,
                                                      split_special_tokens=True)["input_ids"], eot,
                              train_tokens=args.train_tokens, heldout_tokens=args.heldout_tokens,
                              progress=bar.update)
    d = save_corpus(args.corpus, corpus, versions=versions, tokenizer=args.model,
                    python=".".join(map(str, sys.version_info[:3])))
    m = corpus["manifest"]
    print(f"corpus: {m['train_tokens']} training tokens from {m['train_documents']} documents, "
          f"{m['heldout_tokens']} held-out tokens from {len(m['heldout_sources'])} distributions -> {d}")
    return 0


def _cmd_report(folder: pathlib.Path) -> int:
    from ..store import write_csv, write_json
    from .retrofit_report import (collapse_rows, decomposition_rows, decomposition_table, draw, draw_geometry,
                                  finetune_cost, geometry_rows, geometry_table, load_results, markdown_table,
                                  predictor_table, summarise, verdict_rows)
    rows = verdict_rows(folder)
    decomposition = decomposition_rows(folder)
    write_csv(folder / "decomposition.csv", decomposition)
    (folder / "decomposition.md").write_text(decomposition_table(decomposition) + "\n")
    geometry = geometry_rows(folder)
    if geometry:
        write_csv(folder / "geometry.csv", geometry)
        (folder / "geometry.md").write_text(geometry_table(geometry) + "\n")
        draw_geometry(folder, folder / "geometry")
        collapse = collapse_rows(folder)
        write_csv(folder / "predictors.csv", collapse)
        (folder / "predictors.md").write_text(predictor_table(collapse) + "\n")
    write_csv(folder / "table.csv", rows)
    evals, trains = load_results(folder)
    write_json(folder / "summary.json", {
        "evaluations": {k: summarise(v) for k, v in evals.items()},
        "fine_tunes": {k: {"tokens": t["tokens"], "steps": t["config"]["steps"], "lr": t["config"]["lr"],
                           "batch": t["config"]["batch"], "seq_len": t["config"]["seq_len"],
                           "seconds": t["log"][-1]["seconds"], "final_loss": t["log"][-1]["loss"],
                           "corpus": t["corpus"]} for k, t in trains.items()},
        "cost_against_control_per_100_steps": finetune_cost(folder)})
    (folder / "table.md").write_text(markdown_table(folder) + "\n")
    paths = draw(folder, folder / "retrofit")
    for row in rows:
        print(", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    print("wrote", folder / "table.csv", *paths)
    return 0
