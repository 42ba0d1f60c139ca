"""Resumable result files: rows are appended as they are computed, a rerun skips what is saved.

A run keeps a JSON-lines journal ``<stem>.jsonl`` (one object per finished case,
flushed and fsynced), so an interrupted run keeps everything it finished; the
CSV and JSON views are rewritten from the journal at the end (or any time).
"""
from __future__ import annotations

import csv
import json
import math
import os
import pathlib
from typing import Any, Iterable

__all__ = ["Journal", "write_csv", "write_json", "jsonable"]


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
    """Append-only store of finished cases keyed by a string id."""

    def __init__(self, path: str | os.PathLike, meta: dict | None = None, resume: bool = True):
        self.path = pathlib.Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rows: dict[str, dict] = {}
        if resume and self.path.exists():
            with open(self.path, "rb+") as fh:             # end a line cut by an interruption
                fh.seek(0, os.SEEK_END)
                if fh.tell() and (fh.seek(-1, os.SEEK_END), fh.read(1))[1] != b"\n":
                    fh.write(b"\n")
            with open(self.path) as fh:
                for line in fh:
                    line = line.strip()
                    if not line:
                        continue
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:
                        continue                  # a line cut by an interruption: recompute it
                    self.rows[rec["key"]] = rec["row"]
        elif self.path.exists():
            self.path.unlink()
        self.meta = meta or {}

    def __contains__(self, key: str) -> bool:
        return key in self.rows

    def add(self, key: str, row: dict) -> None:
        row = jsonable(row)
        self.rows[key] = row
        with open(self.path, "a") as fh:
            fh.write(json.dumps({"key": key, "row": row}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def ordered(self, keys: Iterable[str]) -> list[dict]:
        return [self.rows[k] for k in keys if k in self.rows]


def write_csv(path: str | os.PathLike, rows: list[dict]) -> None:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in r.items()})
    os.replace(tmp, path)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(jsonable(obj), fh, indent=1)
    os.replace(tmp, path)
