"""The long English text the real-model analysis reads, and its tokenisation.

Default text: the licence texts Debian ships in ``/usr/share/common-licenses`` (GPL-1/2/3,
LGPL-2/2.1/3, GFDL-1.2/1.3, Apache-2.0, Artistic, BSD, CC0-1.0, MPL-1.1/2.0; about 264 kB of
English legal prose, the same on every Debian or Ubuntu machine), joined in name order with a
blank line between texts, symbolic links skipped. The sha256 of the text and of the exact token ids
(``ropetheory.store.token_ids_sha256``: another machine's licence files or another tokenizer give
another) are recorded with every result (``meta["text"]``). A
user can give any text file instead, or name an installed Python distribution
(``distribution_text``): its text files as the retrofit corpus reads them, in path order, one blank
line between files. Such a text is code and its documentation, is never repeated whole (a package's
files are distinct; short passages recur, see below), and is the same on any machine with the same
version installed, whatever the tokenizer: the one text every model and intervention past ``L`` can be measured on.
If the text is shorter than the tokens asked for, the run
stops with an error naming both counts, unless ``repeat=True``, which appends the text to itself
(the position where it first repeats is recorded: repeated text invites copying, which changes
attention). Every description also states the longest run of tokens that occurs twice
(``longest_repeat``): code repeats short passages even where no file does.
"""
from __future__ import annotations

import hashlib
import os
import pathlib
from typing import Any

import numpy as np
from ..core.checks import check_integer
from ..core.errors import BadValue
from ..store import token_ids_sha256

__all__ = ["LICENSE_DIR", "default_text", "distribution_text", "longest_repeat", "text_tokens"]

LICENSE_DIR = pathlib.Path("/usr/share/common-licenses")


def default_text() -> tuple[str, str]:
    """``(text, description)`` of the licence corpus; ValueError if this machine has none."""
    if not LICENSE_DIR.is_dir():
        raise BadValue(f"{str(LICENSE_DIR)!r} does not exist on this machine: pass --text FILE")
    files = sorted(p for p in LICENSE_DIR.iterdir() if p.is_file() and not p.is_symlink())
    if not files:
        raise BadValue(f"{str(LICENSE_DIR)!r} holds no licence texts: pass --text FILE")
    text = "\n\n".join(p.read_text(encoding="utf-8", errors="replace").strip() for p in files)
    return text, f"{LICENSE_DIR}: {', '.join(p.name for p in files)}"


def distribution_text(name: str) -> tuple[str, str]:
    """``(text, description)`` of the installed distribution ``name`` (module docstring)."""
    import importlib.metadata as md
    from .retrofit_corpus import distribution_documents
    if not isinstance(name, str) or not name:
        raise BadValue(f"text distribution must be a distribution name, got {name!r}")
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        raise BadValue(f"text distribution {name!r} is not installed (pip install {name})") from None
    docs = distribution_documents(dist)
    if not docs:
        raise BadValue(f"text distribution {name!r} has no text files to read")
    return "\n\n".join(d.text for d in docs), f"distribution {name} {dist.version}: {len(docs)} files"


#: the base of the rolling hash ``longest_repeat`` compares windows by (odd, so a unit mod 2^64)
_HASH_BASE = np.uint64(0x9E3779B97F4A7C15)


def longest_repeat(ids) -> int:
    """The length of the longest run of tokens that occurs twice in ``ids`` (overlaps allowed; 0 if no
    token repeats): what a model could copy. Binary search over the length; at each length the windows'
    rolling hashes (mod 2^64) find candidate pairs, which are then compared token by token."""
    from ..core.checks import check_positions
    a = check_positions(ids, name="ids").view(np.uint64)        # any int64 id, hashed by its bits
    n = a.size
    prefix = np.zeros(n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for i in range(n):                                    # h(prefix i+1) = h(prefix i) * B + a_i (mod 2^64)
            prefix[i + 1] = prefix[i] * _HASH_BASE + a[i]

    def repeats(k: int) -> bool:
        with np.errstate(over="ignore"):
            h = prefix[k:] - prefix[:-k] * (_HASH_BASE ** np.uint64(k))
        order = np.argsort(h, kind="stable")
        same = np.flatnonzero(h[order][1:] == h[order][:-1])
        return any(np.array_equal(a[order[j]:order[j] + k], a[order[j + 1]:order[j + 1] + k]) for j in same)

    lo, hi = 0, max(n - 1, 0)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if repeats(mid) else (lo, mid - 1)
    return lo


def text_tokens(tokenizer, n_tokens: int, *, text_file: str | os.PathLike | None = None, bos: bool = False,
                repeat: bool = False, distribution: str | None = None) -> tuple[list[int], dict[str, Any]]:
    """The first ``n_tokens`` token ids of the text (``bos``: prepend the tokenizer's BOS id) and a description:
    ``text_file``, the installed ``distribution``'s text, or the licence texts (neither given)."""
    n_tokens = check_integer("n_tokens", n_tokens, lo=2)
    if text_file is not None and distribution is not None:
        raise BadValue("give a text file or a text distribution, not both")
    if distribution is not None:
        text, source = distribution_text(distribution)
    elif text_file is None:
        text, source = default_text()
    else:
        p = pathlib.Path(text_file)
        if not p.is_file():
            raise BadValue(f"text file {str(p)!r} does not exist")
        text, source = p.read_text(encoding="utf-8", errors="replace"), str(p)
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    first = None
    if bos:
        if tokenizer.bos_token_id is None:
            raise BadValue("bos=True but the tokenizer has no BOS token")
        first = tokenizer.bos_token_id
    need = n_tokens - (1 if bos else 0)
    repeats_at = None
    if len(ids) < need:
        if not ids:
            raise BadValue(f"the text ({source.split(':')[0]}) has no tokens: nothing to repeat or analyse")
        if not repeat:
            raise BadValue(f"the text has {len(ids)} tokens, fewer than the {need} asked for "
                             f"({source.split(':')[0]}); pass a longer --text or --repeat-text")
        repeats_at = len(ids) + (1 if bos else 0)
        ids = (ids * (need // len(ids) + 1))
    out: list[int] = ([int(first)] if bos and first is not None else []) + [int(i) for i in ids[:need]]
    desc = {"source": source, "sha256": hashlib.sha256(text.encode()).hexdigest(), "ids_sha256": token_ids_sha256(out),
            "text_tokens": len(ids),
            "n_tokens": n_tokens, "bos": bos, "first_token": tokenizer.convert_ids_to_tokens(out[0]),
            "repeats_from_position": repeats_at, "longest_repeat_tokens": longest_repeat(out)}
    return out, desc
