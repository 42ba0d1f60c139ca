"""Training rows and the synthetic retrieval tasks (RULER-style passkey and key-value retrieval).

Every row starts with BOS (compact id 0; the sink the analysis looks for sits there) and has exactly
``n`` tokens. Filler is a random window of corpus text (the training split in training, the held-out
split in evaluation). The two tasks, in the templates below (digits are slots, filled at random):

* **passkey**: the needle ``" The pass key is DDDDD. Remember it."`` at relative depth ``delta`` of
  the filler, and at the end ``" What is the pass key? The pass key is DDDDD"``;
* **key-value**: ``KV_PAIRS`` needles ``" Key KKKK: value VVVVV."`` with distinct keys, the
  queried one at depth ``delta``, the others at random places; at the end
  ``" What is the value of key KKKK? Key KKKK: value VVVVV"``.

The answer is the row's last ``ANSWER_DIGITS`` tokens; a row counts as retrieved when the model's
argmax predicts every answer digit (teacher-forced, which equals greedy decoding's exact match).
Pure functions of a ``numpy.random.Generator``: the same seed gives the same rows on any machine.
"""
from __future__ import annotations

import numpy as np

from .corpus import BOS
from ..core.errors import BadValue

__all__ = ["TEMPLATES", "ANSWER_DIGITS", "KV_PAIRS", "text_rows", "task_rows", "mixed_batch", "TASKS", "row_tokens"]

TEMPLATES = {
    "pk_needle": " The pass key is 00000. Remember it.",
    "pk_query": " What is the pass key? The pass key is 00000",
    "kv_pair": " Key 0000: value 00000.",
    "kv_query": " What is the value of key 0000? Key 0000: value 00000",
}
TASKS = ("passkey", "kv")
ANSWER_DIGITS = 5
#: needles per key-value row
KV_PAIRS = 4


def _fill(template: list[int], digit_ids: list[int], digits: list[int]) -> np.ndarray:
    """The template with its digit slots (tokens among ``digit_ids``) set to ``digits`` in order."""
    t = np.array(template, dtype=np.int64)
    slots = np.flatnonzero(np.isin(t, digit_ids))
    if slots.size != len(digits):
        raise BadValue(f"template has {slots.size} digit slots, {len(digits)} digits given")
    t[slots] = np.asarray(digit_ids)[np.asarray(digits, dtype=np.int64)]
    return t


def _window(rng: np.random.Generator, tokens: np.ndarray, m: int) -> np.ndarray:
    if m > tokens.size:
        raise BadValue(f"a window of {m} tokens does not fit in a split of {tokens.size}")
    s = int(rng.integers(0, tokens.size - m + 1))
    return tokens[s:s + m].astype(np.int64)


def text_rows(rng: np.random.Generator, tokens: np.ndarray, n: int, count: int) -> np.ndarray:
    """``(count, n)`` rows: BOS and ``n - 1`` consecutive tokens from a random place of ``tokens``."""
    return np.stack([np.r_[BOS, _window(rng, tokens, n - 1)] for _ in range(count)])


def row_tokens(kind: str, templates: dict[str, list[int]]) -> int:
    """Tokens a ``kind`` row holds besides its filler: BOS, the needle(s) and the question."""
    if kind == "passkey":
        return 1 + len(templates["pk_needle"]) + len(templates["pk_query"])
    if kind == "kv":
        return 1 + KV_PAIRS * len(templates["kv_pair"]) + len(templates["kv_query"])
    raise BadValue(f"kind must be one of {TASKS}, got {kind!r}")


def _task_row(rng, tokens, n, kind, depth, tm, digit_ids) -> np.ndarray:
    m = n - row_tokens(kind, tm)                  # filler tokens (raises for an unknown kind)
    if m < 0:
        raise BadValue(f"a {kind} row needs more than n = {n} tokens")
    if kind == "passkey":
        code = list(rng.integers(0, 10, ANSWER_DIGITS))
        needles = [_fill(tm["pk_needle"], digit_ids, code)]
        query = _fill(tm["pk_query"], digit_ids, code)
    else:
        keys = rng.choice(9000, KV_PAIRS, replace=False) + 1000
        vals = rng.integers(10000, 100000, KV_PAIRS)
        needles = [
            _fill(tm["kv_pair"], digit_ids, [int(c) for c in f"{k}{v}"]) for k, v in zip(keys, vals, strict=False)
        ]
        query = _fill(tm["kv_query"], digit_ids, [int(c) for c in f"{keys[0]}{keys[0]}{vals[0]}"])
    filler = _window(rng, tokens, m)
    # the first needle (the one asked for) at depth, the others at random places of the filler
    at = [int(round(depth * m))] + [int(a) for a in rng.integers(0, m + 1, len(needles) - 1)]
    pieces, last = [np.array([BOS])], 0
    for a, nd in sorted(zip(at, range(len(needles)), strict=False), key=lambda t: (t[0], t[1])):
        pieces += [filler[last:a], needles[nd]]
        last = a
    pieces += [filler[last:], query]
    row = np.concatenate(pieces)
    assert row.size == n
    return row


def task_rows(rng: np.random.Generator, tokens: np.ndarray, n: int, count: int, *, kind: str,
              depth: float | None, templates: dict[str, list[int]], digit_ids: list[int]) -> np.ndarray:
    """``(count, n)`` rows of task ``kind``; ``depth`` in [0, 1] (None: uniform at random per row)."""
    if depth is not None and not 0.0 <= depth <= 1.0:
        raise BadValue(f"depth must be in [0, 1], got {depth!r}")
    return np.stack([_task_row(rng, tokens, n, kind, rng.uniform() if depth is None else depth, templates, digit_ids)
                     for _ in range(count)])


def mixed_batch(rng: np.random.Generator, tokens: np.ndarray, n: int, count: int, *, task_fraction: float,
                templates: dict[str, list[int]], digit_ids: list[int]) -> np.ndarray:
    """A training batch: each row a task row (passkey or key-value, equally likely, uniform depth) with
    probability ``task_fraction``, else a text row."""
    kinds = rng.uniform(size=count)
    rows = []
    for u in kinds:
        if u < task_fraction:
            kind = TASKS[int(rng.integers(0, len(TASKS)))]
            rows.append(task_rows(rng, tokens, n, 1, kind=kind, depth=None, templates=templates,
                                  digit_ids=digit_ids)[0])
        else:
            rows.append(text_rows(rng, tokens, n, 1)[0])
    return np.stack(rows)
