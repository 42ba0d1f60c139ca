"""Resumable result files: rows are appended as they are computed, a rerun skips what is saved.

A run keeps a JSON-lines journal ``<stem>.jsonl`` (one object per finished case,
flushed and fsynced), so an interrupted run keeps everything it finished; the
CSV and JSON views are rewritten from the journal at the end (or any time).
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import pathlib
import time
import contextvars
import warnings
from contextlib import contextmanager
from typing import Any
from collections.abc import Callable, Iterable, Iterator
from .core.errors import BadValue

__all__ = [
    "Journal",
    "PartStore",
    "atomic_open",
    "write_csv",
    "write_json",
    "jsonable",
    "check_finite_output",
    "derived_code_hash",
    "recorded_stores",
    "unit_saved",
    "SAVE_HOOK",
    "token_ids_sha256",
]


def package_version() -> str:
    """The installed ropetheory's version (``"unknown"`` when run from a bare source tree)."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("ropetheory")
    except PackageNotFoundError:
        return "unknown"


def _package_imports(path: pathlib.Path, name: str, root: pathlib.Path) -> set[str]:
    """The ``ropetheory`` modules that the source at ``path`` (module ``name``) imports, at any depth of
    the file (imports inside functions count), relative imports resolved."""
    import ast
    tree = ast.parse(path.read_text(encoding="utf-8"))
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "ropetheory"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "ropetheory":
                continue
            subs = {f"{mod}.{a.name}" for a in node.names if _module_file(f"{mod}.{a.name}", root) is not None}
            out |= subs                                  # ``from pkg import submodule``: the submodule
            if len(subs) < len(node.names):
                out.add(mod)                             # ``from module import name``: the module
    return {m for m in out if _module_file(m, root) is not None}


def _module_file(name: str, root: pathlib.Path) -> pathlib.Path | None:
    p = root.joinpath(*name.split(".")[1:])
    for f in (p / "__init__.py", p.with_suffix(".py")):
        if f.is_file():
            return f
    return None


def derived_code_hash(module_name: str) -> str:
    """sha256 (16 hex digits) of ``module_name``'s source and of every package module it imports,
    transitively (read from the import statements, inside functions too, so a new dependency cannot be
    left out): a stored result computed by other code is recomputed. ``from pkg import sub`` counts the
    submodule ``sub``; a package's ``__init__`` counts where something is imported from it by name."""
    root = pathlib.Path(__file__).resolve().parent
    seen: set[str] = set()
    todo = [module_name]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        f = _module_file(m, root)
        if f is not None:
            todo += sorted(_package_imports(f, m, root) - seen)
    h = hashlib.sha256()
    for m in sorted(seen):
        f = _module_file(m, root)
        if f is not None:
            h.update(m.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def token_ids_sha256(*ids: Any) -> str:
    """sha256 over each sequence's length and ids as little-endian int64, in order: the same ids give the same
    digest whatever integer type holds them; another text, tokenizer, vocabulary or split gives another."""
    import numpy as np
    h = hashlib.sha256()
    for a in (np.ascontiguousarray(np.asarray(seq).reshape(-1), dtype="<i8") for seq in ids):
        h.update(int(a.size).to_bytes(8, "little") + a.tobytes())
    return h.hexdigest()


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", **kw: Any):
    """Open a hidden temporary sibling of ``path`` (``.<name>.<pid>.tmp``) for writing and rename it to
    ``path`` when the block ends without an error, so a reader (or a kill) sees the old file or the new,
    never a part; on an error the temporary file is removed. Its name never matches a glob for ``path``'s
    suffix (``*.npz``, ``*.csv``), so a folder of finished parts can be counted while a write is under way.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, mode, **kw) as fh:
            yield fh
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _row_sum(key: str, row: Any, code: str | None) -> str:
    return hashlib.sha256(json.dumps([key, row, code], sort_keys=True).encode()).hexdigest()[:16]


def jsonable(x: Any) -> Any:
    """numpy scalars/arrays -> plain Python; non-finite floats -> strings 'nan'/'inf' (valid JSON)."""
    import numpy as np
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        f = float(x)
        return f if math.isfinite(f) else str(f)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


class Journal:
    """Append-only store of finished cases keyed by a string id.

    Each line is ``{"key", "row", "code", "sum"}``: ``code`` fingerprints the code that computed the
    row (``derived_code_hash``), ``sum`` is a checksum of the three. On load a line that is not JSON
    (cut by a kill), of the wrong shape, whose checksum does not match (edited), or written by other
    code is reported by file and line and dropped, so its case is recomputed. ``loaded`` counts the
    rows taken from the file, ``added`` the rows computed in this run.
    """

    def __init__(self, path: str | os.PathLike, meta: dict | None = None, resume: bool = True,
                 code: str | None = None):
        self.path = pathlib.Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rows: dict[str, dict] = {}
        self.code = code
        self.added = 0
        dropped: list[str] = []
        if resume and self.path.exists():
            with open(self.path, "rb+") as fh:             # end a line cut by an interruption
                fh.seek(0, os.SEEK_END)
                if fh.tell() and (fh.seek(-1, os.SEEK_END), fh.read(1))[1] != b"\n":
                    fh.write(b"\n")
            with open(self.path) as fh:
                for no, line in enumerate(fh, 1):
                    line = line.strip()
                    if not line:
                        continue
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:
                        dropped.append(f"line {no}: not JSON (cut by an interruption?)")
                        continue
                    if not (isinstance(rec, dict) and isinstance(rec.get("key"), str)
                            and isinstance(rec.get("row"), dict)):
                        dropped.append(f"line {no}: not a journal record")
                    elif rec.get("sum") != _row_sum(rec["key"], rec["row"], rec.get("code")):
                        dropped.append(f"line {no}: checksum mismatch (edited or from an older format)")
                    elif rec.get("code") != code:
                        dropped.append(f"line {no}: computed by other code ({rec.get('code')} != {code})")
                    else:
                        self.rows[rec["key"]] = rec["row"]
        elif self.path.exists():
            self.path.unlink()
        if dropped:
            warnings.warn(f"journal {str(self.path)!r}: {len(dropped)} row(s) dropped and recomputed: "
                          + "; ".join(dropped[:5]) + (" ..." if len(dropped) > 5 else ""), stacklevel=2)
        self.loaded = len(self.rows)
        self.meta = meta or {}
        _record(self)

    def __contains__(self, key: str) -> bool:
        return key in self.rows

    def add(self, key: str, row: dict) -> None:
        row = json.loads(json.dumps(jsonable(row)))       # exactly what a reload will see
        self.rows[key] = row
        self.added += 1
        rec = {"key": key, "row": row, "code": self.code, "sum": _row_sum(key, row, self.code)}
        with open(self.path, "a") as fh:
            fh.write(json.dumps(rec) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        unit_saved()

    def ordered(self, keys: Iterable[str]) -> list[dict]:
        return [self.rows[k] for k in keys if k in self.rows]

    def describe(self) -> str:
        return f"{self.path}: {self.loaded} saved row(s) kept, {self.added} computed"


class PartStore:
    """Array results saved one file per part, ``<folder>/<tag>.npz``, for runs whose units are arrays.

    Each part holds its arrays, the ``key`` of the parameters that produced it and the ``code`` hash
    (``derived_code_hash``). ``get`` returns a part only if its key and code match and every array
    is finite and of the expected shape; a truncated, empty, unreadable or non-finite file is
    reported by name and recomputed, a part with other parameters or code is recomputed silently.
    Writes are atomic (temporary file, then rename). ``loaded``/``added`` count parts.
    """

    def __init__(self, folder: str | os.PathLike, *, code: str | None = None, resume: bool = True):
        self.folder = pathlib.Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.code, self.resume = code, resume
        self.loaded = self.added = 0
        _record(self)

    def get(self, tag: str, key: str, shapes: dict[str, tuple] | None = None) -> dict[str, Any] | None:
        import numpy as np
        path = self.folder / f"{tag}.npz"
        if not (self.resume and path.exists()):
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            if str(arrays.pop("_key")) != key or str(arrays.pop("_code")) != str(self.code):
                return None                                   # other parameters or other code
            for name, shape in (shapes or {}).items():
                if arrays[name].shape != tuple(shape):
                    raise BadValue(f"{name} has shape {arrays[name].shape}, expected {tuple(shape)}")
            for name, a in arrays.items():
                if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
                    raise BadValue(f"{name} holds non-finite values")
        except Exception as e:                                # truncated, empty, tampered
            warnings.warn(f"part {str(path)!r} is damaged ({e}); recomputing it", stacklevel=2)
            return None
        self.loaded += 1
        return arrays

    def put(self, tag: str, key: str, **arrays: Any) -> None:
        import numpy as np
        for name, a in arrays.items():
            a = np.asarray(a)
            if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
                raise BadValue(f"part {tag}: {name} holds non-finite values; not written")
        with atomic_open(self.folder / f"{tag}.npz") as fh:
            np.savez(fh, _key=np.array(key), _code=np.array(str(self.code)), **arrays)
        self.added += 1
        unit_saved()

    def describe(self) -> str:
        return f"{self.folder}: {self.loaded} saved part(s) kept, {self.added} computed"


#: the stores opened inside each enclosing ``recorded_stores`` block (none outside one)
_RECORDING: contextvars.ContextVar[tuple[list, ...]] = contextvars.ContextVar("ropetheory_stores", default=())


def _record(st: Journal | PartStore) -> None:
    for opened in _RECORDING.get():
        opened.append(st)


@contextmanager
def recorded_stores() -> Iterator[list[Journal | PartStore]]:
    """A list that receives every ``Journal`` and ``PartStore`` opened inside the block, in order (a command
    reports what each kept from disk and what it computed: ``describe()``). Nothing is kept outside a block."""
    opened: list[Journal | PartStore] = []
    token = _RECORDING.set((*_RECORDING.get(), opened))
    try:
        yield opened
    finally:
        _RECORDING.reset(token)


#: called with no argument right after each saved unit (a journal row, a part, a checkpoint of a long
#: run); ``None`` (the default) does nothing. The fault tests install one that interrupts the run there.
SAVE_HOOK: Callable[[], None] | None = None


def unit_saved() -> None:
    """One unit of work is safely on disk: a run stopped from here on resumes after it."""
    if SAVE_HOOK is not None:
        SAVE_HOOK()


#: a checkpoint is written at most every ``every`` seconds and at least this many times the last write's
#: duration apart, so writing the state costs at most 1/CHECKPOINT_OVERHEAD of the run
CHECKPOINT_OVERHEAD = 10.0


class CheckpointClock:
    """When a long run writes its next checkpoint (the one cadence of every checkpointed run).

    ``every = 0`` asks for a checkpoint after every unit (tests, small runs): the overhead rule does not
    apply then, so the units saved do not depend on how fast the machine is.
    """

    def __init__(self, every: float):
        self.every, self.last, self.cost = float(every), time.perf_counter(), 0.0

    def due(self) -> bool:
        return self.every == 0 or time.perf_counter() - self.last >= max(self.every, CHECKPOINT_OVERHEAD * self.cost)

    def written(self, started: float) -> None:
        """A write that began at ``started`` (``time.perf_counter()``) has just finished."""
        self.last = time.perf_counter()
        self.cost = self.last - started


#: the manifest inside a checkpoint: its key and the JSON values saved beside the arrays
_MANIFEST = "_manifest"


def save_checkpoint(path: str | os.PathLike, key: str, arrays: dict[str, Any], **meta: Any) -> None:
    """Save a long run's state under ``key`` (its parameters and code fingerprint, e.g. from
    ``derived_code_hash``): ``arrays`` (name -> numpy array) and a JSON manifest holding ``key`` and
    ``meta`` (JSON values), in one ``.npz`` written atomically (a kill leaves the old file or the new).
    Nothing is pickled: loading never runs code from the file."""
    import numpy as np
    if _MANIFEST in arrays:
        raise BadValue(f"checkpoint array name {_MANIFEST!r} is reserved for the manifest")
    manifest = json.dumps({"key": key, "meta": jsonable(meta)}, allow_nan=False)
    payload: dict[str, Any] = {_MANIFEST: np.array(manifest), **{k: np.asarray(v) for k, v in arrays.items()}}
    with atomic_open(path) as fh:
        np.savez(fh, **payload)


def load_checkpoint(path: str | os.PathLike | None, key: str,
                    restore: Callable[[dict[str, Any], dict[str, Any]], Any] | None = None) -> Any:
    """The state ``save_checkpoint`` wrote under ``key``: ``restore(arrays, meta)`` (default: the pair),
    or None when there is none to resume: no file, a file saved under another key (other parameters or
    code), or a damaged one (truncated, not a checkpoint, inconsistent: anything ``restore`` refuses).
    Every checkpoint that is not used is reported the same way, a warning naming the file; the run
    recomputes."""
    import numpy as np
    if path is None or not pathlib.Path(path).exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        manifest = json.loads(str(arrays.pop(_MANIFEST)))
        if manifest["key"] != key:
            warnings.warn(f"checkpoint {str(path)!r} was saved for other parameters, other code or other data "
                          "(a corpus whose token ids differ); recomputing", stacklevel=2)
            return None
        return (restore or (lambda a, m: (a, m)))(arrays, manifest["meta"])
    except Exception as e:                                    # truncated, not an npz, no manifest, refused
        warnings.warn(f"checkpoint {str(path)!r} is damaged ({type(e).__name__}: {e}); recomputing", stacklevel=2)
        return None


def check_finite_output(obj: Any, where: str) -> None:
    """Refuse to write NaN or inf (raw, or as the strings ``jsonable`` makes of them), naming the field.

    An undefined quantity is written as ``None`` (JSON null, an empty CSV cell) by the code that knows
    why it is undefined; a non-finite number reaching a writer is a bug or a bad input.
    """
    if isinstance(obj, dict):
        for k, v in obj.items():
            check_finite_output(v, f"{where}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            check_finite_output(v, f"{where}[{i}]")
    elif (isinstance(obj, float) and not math.isfinite(obj)) or obj in ("nan", "inf", "-inf"):
        raise BadValue(f"non-finite value {obj!r} at {where}: not written")


def write_csv(path: str | os.PathLike, rows: list[dict]) -> None:
    path = pathlib.Path(path)
    check_finite_output(jsonable(rows), path.name)
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    with atomic_open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in r.items()})


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as JSON atomically, refusing non-finite numbers; a dict gets the package version
    that wrote it (``ropetheory_version``) unless it has one."""
    path = pathlib.Path(path)
    if isinstance(obj, dict) and "ropetheory_version" not in obj:
        obj = {**obj, "ropetheory_version": package_version()}
    check_finite_output(jsonable(obj), path.name)
    with atomic_open(path, "w") as fh:
        json.dump(jsonable(obj), fh, indent=1)
