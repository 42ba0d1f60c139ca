"""Does the RoPE error change a real model's predictions? (issue #38, items 3-4)

Runs a packaged model over held-out windows of 8L tokens (the retrofit corpus, ``ropetheory retrofit
corpus``) under each ``ropetheory.models.rope_precision`` mode: ``exact`` (float64 angles, rounded once),
``transformers`` (float32 angles), ``bf16-cache`` (exact values kept in bfloat16). It writes per window,
mode and position range the cos/sin error, the KL divergence of the next-token distribution from exact's,
top-1 agreement and perplexity (``cost.csv``), and passkey accuracy per mode and length (``passkey.csv``,
lengths ``PASSKEY_LENGTHS`` times L up to the window's span: no passkey longer than the text measured).
``meta.json`` is written once the cost is, and again once the passkey table is (``passkey_modes``).

Any model ``load_model`` takes (``smollm2-135m``, ``gemma3-270m``, ``qwen2.5-coder-1.5b``, a folder or a
``.gguf``). The corpus is tokenized for one model (its manifest's ``tokenizer``; ``uint16`` ids, too few
for Gemma 3's or Qwen2.5's vocabularies): for another model each held-out file's text is recovered with the
corpus's tokenizer (checked to encode back to the same ids) and encoded with the model's, files joined by
its document separator as ``ropetheory retrofit corpus`` joins them (``heldout_for``). A window is ``8L``
tokens (``--window-multiple``) inside one held-out distribution; where none is that long, a smaller
multiple (Gemma 3: 4L) or ``--train-len`` (a smaller ``L``, for smoke runs).

    python experiments/rope_precision_cost.py --model smollm2-135m --windows 2 --device cuda
    python experiments/rope_precision_cost.py --model gemma3-270m --train-len 128 --windows 1 --passkey-trials 0

``--windows 0`` runs the passkey alone (no corpus is read; its lengths still stop at ``--window-multiple``).
"""
from __future__ import annotations

import argparse
import pathlib
import time
from typing import Any

import numpy as np

from ropetheory.core.errors import BadValue
from ropetheory.models.registry import load_model, load_tokenizer
from ropetheory.models.forward import training_length
from ropetheory.models.retrofit_cli import document_separator
from ropetheory.models.retrofit_corpus import heldout_windows, load_corpus
from ropetheory.models.retrofit_eval import PASSKEY_LENGTHS, passkey
from ropetheory.models.rope_precision import MODES, precision_cost, rotary_precision
from ropetheory.store import write_csv, write_json


def heldout_for(corpus: dict[str, Any], tok, label: str) -> tuple[np.ndarray, list[int]]:
    """The held-out ids as ``tok`` (model ``label``'s tokenizer) tokenizes them, and the bounds of each
    held-out distribution: the corpus's own where its manifest names ``label``, else each file's text
    (decoded with the corpus's tokenizer; refused unless it encodes back to the same ids) encoded with
    ``tok``, each file followed by ``tok``'s document separator."""
    m = corpus["manifest"]
    held, bounds = corpus["heldout"], list(m["heldout_bounds"])
    if m.get("tokenizer") == label:
        return held, bounds
    src = load_tokenizer(m["tokenizer"])
    encode = lambda texts, t: t(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]  # noqa: E731
    eot, sep = int(m["eot"]), document_separator(tok)
    parts, out_bounds = [], [0]
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        ids = held[a:b].astype(np.int64)
        cuts = np.flatnonzero(ids == eot)
        files = [f.tolist() for f in np.split(ids, cuts + 1)[:-1]]        # each file ends in eot
        texts = [src.decode(f[:-1], clean_up_tokenization_spaces=False) for f in files]
        if [f[:-1] for f in files] != encode(texts, src):
            raise BadValue(f"the held-out text decoded with {m['tokenizer']!r} does not encode back to the "
                           f"corpus's ids: it cannot be recovered for {label!r}")
        parts.append(np.fromiter((t for x in encode(texts, tok) for t in [*x, sep]), dtype=np.int64))
        out_bounds.append(out_bounds[-1] + parts[-1].size)
    return np.concatenate(parts), out_bounds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--corpus", default="results/retrofit/corpus")
    p.add_argument("--windows", type=int, default=2)
    p.add_argument("--passkey-trials", type=int, default=2, help="0: no passkey table")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="results/rope_precision")
    p.add_argument("--train-len", type=int, default=None, help="L (default: the model's; smaller for a smoke run)")
    p.add_argument("--window-multiple", type=int, default=8, help="a window is this many times L (default 8)")
    a = p.parse_args()
    model, tok, label = load_model(a.model, device=a.device)
    L = a.train_len or training_length(model.config.to_dict())
    if a.window_multiple < 1:
        raise BadValue(f"--window-multiple must be >= 1, got {a.window_multiple}")
    span = a.window_multiple * L
    manifest: dict[str, Any] = {}                        # --windows 0, the passkey alone: no text is read
    held, starts = np.zeros(0, np.int64), []
    if a.windows:
        corpus = load_corpus(a.corpus, ("heldout",))
        manifest = corpus["manifest"]
        held, bounds = heldout_for(corpus, tok, label)
        starts = heldout_windows(bounds, span)
    if a.windows and not starts:
        raise BadValue(f"no held-out distribution holds a window of {a.window_multiple}L = {span} tokens of "
                       f"{label!r} (the longest holds {max(np.diff(bounds))}): pass a smaller --train-len or "
                       f"--window-multiple")
    out = pathlib.Path(a.out) / label
    rows, t0 = [], time.time()
    for w, s in enumerate(starts[: a.windows]):
        for r in precision_cost(model, held[s:s + span], L=L):
            rows.append({"window": w, **r})
        write_csv(out / "cost.csv", rows)
        print(f"window {w}: {time.time() - t0:.0f} s", flush=True)
    lengths = tuple(m for m in PASSKEY_LENGTHS if m <= a.window_multiple)
    meta = {"model": label, "L": L, "windows": min(a.windows, len(starts)), "span": span,
            "corpus_heldout_sha256": manifest.get("heldout_sha256"),
            "corpus_tokenizer": manifest.get("tokenizer"), "heldout_tokens": int(held.size),
            "device": a.device, "seconds": time.time() - t0, "passkey_lengths_L": list(lengths),
            "passkey_modes": []}
    write_json(out / "meta.json", meta)                   # the cost is complete even if the passkey is cut off
    keys = []
    for mode in MODES if a.passkey_trials else ():
        with rotary_precision(model, mode):
            for r in passkey(model, tok, L=L, temperature=False, trials=a.passkey_trials, lengths=lengths):
                keys.append({"mode": mode, **r})
        write_csv(out / "passkey.csv", keys)
        meta["passkey_modes"].append(mode)
        write_json(out / "meta.json", {**meta, "seconds": time.time() - t0})
        print(f"passkey {mode}: {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
