"""A fine-tuning corpus that never repeats, built from text the project's pinned packages install.

Documents: every ``.py``, ``.pyi``, ``.md``, ``.rst`` and ``.txt`` file of every installed
distribution (``importlib.metadata``; ropetheory itself excluded, its text changes with each commit)
of ``MIN_DOC_BYTES`` to ``MAX_DOC_BYTES``, read as UTF-8. Exact duplicates (the same text after
normalising line ends and trailing blanks) are kept once.

Split by source, never by position in a document: the held-out set is whole distributions, taken in
the order of ``sha256(name)`` among those with ``HELDOUT_MIN_BYTES`` to ``HELDOUT_MAX_BYTES`` of text,
until it holds ``heldout_tokens``. Each held-out distribution is one long document (its files in
path order, joined by the end-of-text token), which is what an evaluation past ``L`` needs. A text
present in a held-out distribution is held out wherever else it appears, and ``check_disjoint``
refuses any pair of splits sharing a document.

Training stream: the remaining documents in the order of ``sha256(seed, text hash)`` (a fixed
shuffle), each followed by the end-of-text token, cut at ``train_tokens``. Every array is
fingerprinted (sha256 of its little-endian ``uint16`` bytes) and the manifest states the makeup.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata as md
import json
import pathlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from ..core.checks import check_integer
from ..core.errors import BadValue

__all__ = ["Document", "distribution_documents", "installed_documents", "split_documents", "check_disjoint",
           "build_corpus", "load_corpus", "heldout_windows", "SUFFIXES", "EXCLUDED_DISTRIBUTIONS"]

#: the file kinds read as text: source, stubs and documentation
SUFFIXES = (".py", ".pyi", ".md", ".rst", ".txt")
#: ropetheory's own files change with every commit; a corpus must not
EXCLUDED_DISTRIBUTIONS = ("ropetheory",)
#: shorter files are mostly empty ``__init__.py`` stubs: noise, not text
MIN_DOC_BYTES = 200
#: longer files are generated tables (unicode data, vendored single-file bundles)
MAX_DOC_BYTES = 1_000_000
#: a held-out distribution holds enough text for one evaluation window of 8 x 8192 tokens (~3.4 bytes a
#: token) and is not one of the few giants that make up much of the training stream
HELDOUT_MIN_BYTES = 400_000
HELDOUT_MAX_BYTES = 4_000_000
#: the held-out choice asks for this many times the bytes ``heldout_tokens`` needs at the assumed bytes per
#: token, so a text denser in tokens than assumed still fills it
HELDOUT_MARGIN = 1.25
#: token ids are stored as uint16
MAX_TOKEN_ID = 2 ** 16 - 1


@dataclasses.dataclass(frozen=True)
class Document:
    """One text file: its distribution (``source``), path inside it, and normalised text."""
    source: str
    path: str
    text: str

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


def _normalise(text: str) -> str:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join(line.rstrip() for line in lines).strip("\n")


def distribution_documents(dist: md.Distribution) -> list[Document]:
    """The text files of one installed distribution that the corpus reads (module docstring), in path order."""
    name = dist.metadata["Name"]
    docs = []
    for f in dist.files or []:
        if f.suffix not in SUFFIXES or ".dist-info" in str(f):
            continue
        p = pathlib.Path(str(dist.locate_file(f)))
        try:
            size = p.stat().st_size
            if not MIN_DOC_BYTES <= size <= MAX_DOC_BYTES:
                continue
            text = p.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if "\x00" in text:
            continue
        docs.append(Document(name, str(f), _normalise(text)))
    return sorted(docs, key=lambda d: d.path)


def installed_documents(excluded: Sequence[str] = EXCLUDED_DISTRIBUTIONS) -> tuple[list[Document], dict[str, str]]:
    """Every text file of every installed distribution (module docstring), sorted by (source, path), and
    ``{distribution: version}``."""
    docs, versions = [], {}
    for dist in md.distributions():
        name = dist.metadata["Name"]
        if not name or name.lower() in excluded or name in versions:
            continue
        versions[name] = dist.version
        docs += distribution_documents(dist)
    docs.sort(key=lambda d: (d.source, d.path))
    return docs, dict(sorted(versions.items()))


def _held_out_sources(docs: Sequence[Document], heldout_bytes: int,
                      size_range: tuple[int, int] = (HELDOUT_MIN_BYTES, HELDOUT_MAX_BYTES)) -> list[str]:
    size: dict[str, int] = {}
    for d in docs:
        size[d.source] = size.get(d.source, 0) + len(d.text.encode("utf-8"))
    order = sorted(size, key=lambda s: hashlib.sha256(s.encode()).hexdigest())
    out, total = [], 0
    for s in order:
        if size_range[0] <= size[s] <= size_range[1] and total < heldout_bytes:
            out.append(s)
            total += size[s]
    return sorted(out)


def split_documents(docs: Sequence[Document], heldout_sources: Iterable[str]) -> tuple[list[Document], list[Document]]:
    """``(train, heldout)``: each text once; a text found in a held-out source is held out everywhere."""
    held = set(heldout_sources)
    held_digests = {d.digest for d in docs if d.source in held}
    seen: set[str] = set()
    train, heldout = [], []
    for d in docs:
        if d.source in held:
            if d.digest not in seen:
                heldout.append(d)
        elif d.digest not in held_digests and d.digest not in seen:
            train.append(d)
        seen.add(d.digest)
    check_disjoint(train, heldout)
    return train, heldout


def check_disjoint(train: Sequence[Document], heldout: Sequence[Document]) -> None:
    """Refuse splits sharing a document (the same normalised text), or a split holding one twice."""
    for name, split in (("train", train), ("heldout", heldout)):
        digests = [d.digest for d in split]
        if len(set(digests)) != len(digests):
            raise BadValue(f"the {name} split holds a document twice")
    both = {d.digest for d in train} & {d.digest for d in heldout}
    if both:
        first = next(d for d in heldout if d.digest in both)
        raise BadValue(f"{len(both)} document(s) appear in both splits, e.g. {first.source}:{first.path}")


def _digest(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr, dtype="<u2").tobytes()).hexdigest()


def _ids(encode: Callable[[list[str]], list[list[int]]], texts: list[str]) -> list[list[int]]:
    out = encode(texts)
    for ids in out:
        if ids and (min(ids) < 0 or max(ids) > MAX_TOKEN_ID):
            raise BadValue(f"token ids must lie in [0, {MAX_TOKEN_ID}] to be stored as uint16")
    return out


def build_corpus(docs: Sequence[Document], encode: Callable[[list[str]], list[list[int]]], eot: int, *,
                 train_tokens: int, heldout_tokens: int, seed: int = 0, bytes_per_token: float = 3.4,
                 heldout_size_range: tuple[int, int] = (HELDOUT_MIN_BYTES, HELDOUT_MAX_BYTES), batch: int = 256,
                 progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Token arrays ``train`` and ``heldout`` (uint16) and their manifest (module docstring).

    ``encode(texts) -> ids`` tokenises without special tokens; ``eot`` ends each document;
    ``bytes_per_token`` only sizes the held-out choice (its tokens are counted after);
    ``heldout_size_range``: the text bytes a held-out distribution may hold. Raises if the
    documents cannot give ``train_tokens`` training tokens or ``heldout_tokens`` held-out ones.
    """
    check_integer("train_tokens", train_tokens, lo=1)
    check_integer("heldout_tokens", heldout_tokens, lo=1)
    check_integer("eot", eot, lo=0, hi=MAX_TOKEN_ID)
    sources = _held_out_sources(docs, int(heldout_tokens * bytes_per_token * HELDOUT_MARGIN), heldout_size_range)
    train_docs, held_docs = split_documents(docs, sources)
    held_parts, held_docs_meta = [], []
    for s in sources:
        group = [d for d in held_docs if d.source == s]
        held_ids = _ids(encode, [d.text for d in group])
        flat = np.fromiter((t for x in held_ids for t in [*x, eot]), dtype=np.uint16)
        held_docs_meta.append({"source": s, "files": len(group), "tokens": int(flat.size)})
        held_parts.append(flat)
    heldout = np.concatenate(held_parts) if held_parts else np.zeros(0, np.uint16)
    if heldout.size < heldout_tokens:
        raise BadValue(f"the held-out distributions give {heldout.size} tokens, fewer than heldout_tokens = "
                       f"{heldout_tokens}")
    order = sorted(train_docs, key=lambda d: hashlib.sha256(f"{seed}:{d.digest}".encode()).hexdigest())
    train = np.zeros(train_tokens, dtype=np.uint16)
    filled, used = 0, 0
    per_source: dict[str, int] = {}
    for i in range(0, len(order), batch):
        group, before = order[i:i + batch], filled
        for d, ids in zip(group, _ids(encode, [d.text for d in group]), strict=True):
            piece = np.asarray([*ids, eot], dtype=np.uint16)[: train_tokens - filled]
            train[filled:filled + piece.size] = piece
            filled += piece.size
            used += 1
            per_source[d.source] = per_source.get(d.source, 0) + int(piece.size)
            if filled == train_tokens:
                break
        if progress is not None:
            progress(filled - before)
        if filled == train_tokens:
            break
    if filled < train_tokens:
        raise BadValue(f"the training documents give {filled} tokens, fewer than train_tokens = {train_tokens}")
    manifest = {
        "train_tokens": int(train.size), "heldout_tokens": int(heldout.size), "seed": seed, "eot": eot,
        "train_sha256": _digest(train), "heldout_sha256": _digest(heldout),
        "train_documents": used, "train_documents_available": len(order),
        "train_tokens_by_source": dict(sorted(per_source.items(), key=lambda kv: -kv[1])),
        "heldout_sources": held_docs_meta, "heldout_bounds": np.cumsum([0] + [m["tokens"] for m in
                                                                             held_docs_meta]).tolist(),
        "documents": len(docs), "duplicates_dropped": len(docs) - len(train_docs) - len(held_docs),
    }
    return {"train": train, "heldout": heldout, "manifest": manifest}


def save_corpus(folder: str | pathlib.Path, corpus: dict[str, Any], **meta: Any) -> pathlib.Path:
    """Write ``train.u16``, ``heldout.u16`` (little-endian) and ``manifest.json`` into ``folder``."""
    from ..store import atomic_open
    d = pathlib.Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    for name in ("train", "heldout"):
        with atomic_open(d / f"{name}.u16") as fh:
            fh.write(np.ascontiguousarray(corpus[name], dtype="<u2").tobytes())
    with atomic_open(d / "manifest.json", "w") as fh:
        json.dump({**corpus["manifest"], **meta}, fh, indent=1)
    return d


def heldout_windows(bounds: Sequence[int], span: int) -> list[int]:
    """Starts of the non-overlapping windows of ``span`` tokens, each inside one held-out document
    (``bounds``: the manifest's ``heldout_bounds``), in document order."""
    return [a + k * span for a, b in zip(bounds[:-1], bounds[1:], strict=True) for k in range((b - a) // span)]


def load_corpus(folder: str | pathlib.Path, arrays: Sequence[str] = ("train", "heldout")) -> dict[str, Any]:
    """The ``arrays`` and manifest ``save_corpus`` wrote, each array checked against its sha256."""
    d = pathlib.Path(folder)
    if not (d / "manifest.json").is_file():
        raise BadValue(f"corpus folder {str(d)!r} has no manifest.json (build it with 'ropetheory retrofit corpus')")
    manifest = json.loads((d / "manifest.json").read_text())
    out: dict[str, Any] = {"manifest": manifest}
    for name in arrays:
        if name not in ("train", "heldout"):
            raise BadValue(f"arrays must name 'train' and/or 'heldout', got {name!r}")
        arr = np.fromfile(d / f"{name}.u16", dtype="<u2")
        if _digest(arr) != manifest[f"{name}_sha256"]:
            raise BadValue(f"{str(d / (name + '.u16'))!r} does not match its sha256 in the manifest (damaged or "
                           f"from another corpus)")
        out[name] = arr
    return out
