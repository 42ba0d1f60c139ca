"""Does the RoPE error change a real model's predictions? (issue #38, items 3-4)

Runs a packaged model over held-out windows of 8L tokens (the retrofit corpus, ``ropetheory retrofit
corpus``) under each ``ropetheory.models.rope_precision`` mode: ``exact`` (float64 angles, rounded once),
``transformers`` (float32 angles), ``bf16-cache`` (exact values kept in bfloat16). It writes per window,
mode and position range the cos/sin error, the KL divergence of the next-token distribution from exact's,
top-1 agreement and perplexity (``cost.csv``), and passkey accuracy per mode and length (``passkey.csv``).

    python experiments/rope_precision_cost.py --model smollm2-135m --windows 2 --device cuda
"""
from __future__ import annotations

import argparse
import pathlib
import time

from ropetheory.models.registry import load_model
from ropetheory.models.forward import training_length
from ropetheory.models.retrofit_corpus import heldout_windows, load_corpus
from ropetheory.models.retrofit_eval import passkey
from ropetheory.models.rope_precision import MODES, precision_cost, rotary_precision
from ropetheory.store import write_csv, write_json


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--corpus", default="results/retrofit/corpus")
    p.add_argument("--windows", type=int, default=2)
    p.add_argument("--passkey-trials", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="results/rope_precision")
    p.add_argument("--train-len", type=int, default=None, help="L (default: the model's; smaller for a smoke run)")
    a = p.parse_args()
    model, tok, label = load_model(a.model, device=a.device)
    L = a.train_len or training_length(model.config.to_dict())
    corpus = load_corpus(a.corpus, ("heldout",))
    held, bounds = corpus["heldout"], corpus["manifest"]["heldout_bounds"]
    span = 8 * L
    starts = heldout_windows(bounds, span)
    out = pathlib.Path(a.out) / label
    rows, t0 = [], time.time()
    for w, s in enumerate(starts[: a.windows]):
        for r in precision_cost(model, held[s:s + span], L=L):
            rows.append({"window": w, **r})
        write_csv(out / "cost.csv", rows)
        print(f"window {w}: {time.time() - t0:.0f} s", flush=True)
    keys = []
    for mode in MODES:
        with rotary_precision(model, mode):
            for r in passkey(model, tok, L=L, temperature=False, trials=a.passkey_trials):
                keys.append({"mode": mode, **r})
        write_csv(out / "passkey.csv", keys)
        print(f"passkey {mode}: {time.time() - t0:.0f} s", flush=True)
    write_json(out / "meta.json", {"model": label, "L": L, "windows": min(a.windows, len(starts)),
                                   "corpus_heldout_sha256": corpus["manifest"]["heldout_sha256"],
                                   "device": a.device, "seconds": time.time() - t0})


if __name__ == "__main__":
    main()
