"""Interventions on a real model's attention past its training length ``L`` (issue #36.3), each changing
chosen logits in one place: an ``edit`` of ``.hook.eager``'s float64 logits, through ``.hook.attention_hook``.

A logit at relative distance ``delta`` is ``scaling * (f^2 (R_delta q) . k + q_p . k_p)`` from the pre-RoPE
``q, k`` the hook recovers, with ``R`` the layer's exact rotation (``ropetheory.schedules``, plane ``j``
of the half layout turning by ``theta_j`` per position), ``f`` its attention factor and ``_p`` the
channels RoPE passes through. ``Delta = i - j`` is query minus key position.

* ``clamp-sink`` (a): every query's logit to key 0 with ``Delta > L - 1`` uses distance ``L - 1``.
* ``hold-sink-odds`` (b): for queries at ``i >= L`` a bias on key 0's logit holds its log-odds at its value
  at ``L``: per query head, the mean over queries ``[L - SINK_QUERIES, L)`` of the same pass (unchanged).
* ``clamp-all`` (c): every logit with ``Delta > L - 1`` uses distance ``L - 1`` (ReRoPE-style);
  ``clamp-slow``: only the planes that do not complete a turn within ``L`` (``theta_j (L - 1) < 2 pi``)
  are clamped, the others keep ``Delta``.
* ``sink-to-mean`` (d): key 0's logit set to the mean of the other visible keys' logits, at every length;
  ``sink-at-4L``: key 0's logit at distance ``4L`` for every query ``i >= 1``.
* ``clamp-control`` (e): ``clamp-sink`` applied to one random key ``p`` in ``[1, L)`` instead of key 0
  (``CONTROL_SEED``).
* ``window`` (the in-distribution reference, StreamingLLM's sink + window): key 0 as in ``clamp-sink``
  (distance ``min(i, L - 1)``) and the keys ``j >= 1`` with ``i - j <= L - 2``; the keys ``1 <= j <= i - (L - 1)``
  are hidden (logit ``-inf``). A query ``i >= L - 1`` sees exactly ``L`` keys at distances ``0 .. L - 2`` and
  key 0 at ``L - 1``: the context of the last trained position ``L - 1``, so every logit and the number of
  keys are in distribution; within ``L`` nothing changes. Its loss past ``L`` is those tokens' loss with an
  in-distribution context (``.intervention_report``'s length excess).

``measure`` runs the model twice over the same tokens in chunks with a KV cache, unchanged (``.hook.eager``
without edits) and intervened, and reports per-token loss, perplexity on ``[min(1024, L/2), L)``,
``[L, 2L)``, ``[2L, 4L)`` (``.study.nll_ranges``), and the sink's share and log-odds decomposition
(``ropetheory.theory.sink``) of the logits as used, per layer and kv head at each grid length.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..theory.sink import sink_log_odds_from_parts
from .stream import SINK_QUERIES, SINK_TERMS
from ..core.checks import check_integer
from ..core.errors import BadValue
from ..core.renamed import renamed, renamed_fields

__all__ = ["INTERVENTIONS", "Intervention", "SinkProbe", "measure", "measure_many", "check_names", "CONTROL_SEED"]

INTERVENTIONS = ("clamp-sink", "hold-sink-odds", "clamp-all", "clamp-slow", "sink-to-mean", "sink-at-4L",
                 "clamp-control", "window")
#: the seed choosing the control key of ``clamp-control`` (fixed so a rerun touches the same key)
CONTROL_SEED = 0


def _rotate(x, angles):
    """Half-layout rotation of the first ``2 * angles.shape[-1]`` channels of ``x (..., m, d)`` by
    ``angles (m, r/2)``, float64; the other channels pass through."""
    import torch
    h = angles.shape[-1]
    c, s = torch.cos(angles), torch.sin(angles)
    a, b = x[..., :h], x[..., h:2 * h]
    return torch.cat((a * c - b * s, b * c + a * s, x[..., 2 * h:]), dim=-1)


@renamed_fields("0.3.0", L="train_len")
class Intervention:
    """One named intervention for a model's layer schedules (``.forward.layer_schedules``) and its training
    length ``train_len`` (L)."""

    def __init__(self, name: str, train_len: int, schedules: list[dict]):
        if name not in INTERVENTIONS:
            raise BadValue(f"intervention must be one of {INTERVENTIONS}, got {name!r}")
        if not isinstance(train_len, int) or train_len < 2:
            raise BadValue(f"train_len (L) must be an integer >= 2, got {train_len!r}")
        self.name, self.train_len, self.schedules = name, train_len, schedules
        self.control_key = int(np.random.default_rng(CONTROL_SEED).integers(1, train_len))
        self.targets: dict[tuple[int, int], list[float]] = {}      # (layer, query head) -> log-odds at L
        self._call: Any = None

    def _pre(self, call):
        if self._call is not call:
            self._call, self._q, self._k = call, call.query_pre(), call.key_pre()
        return self._q, self._k

    def _logits(self, call, h: int, cols, delta: int, clamp=None):
        """Logits ``(G, c, len(cols))`` of kv head ``h``'s queries to keys ``cols``: the planes in ``clamp``
        (all when None) at distance ``delta``, the others at the true one; module docstring."""
        import torch
        sc = self.schedules[call.layer]
        q, k = self._pre(call)
        G, r = call.groups, sc["rotary_dim"]
        # a copy: a schedule's theta is read-only and torch wants a writable array
        theta = torch.as_tensor(np.array(sc["theta"], dtype=np.float64)[: r // 2], device=q.device)
        cl = torch.ones_like(theta, dtype=torch.bool) if clamp is None else torch.as_tensor(clamp, device=q.device)
        qa = torch.where(cl, delta * theta, call.q_pos.double()[:, None] * theta)
        ka = torch.where(cl, 0.0, call.k_pos[cols].double()[:, None] * theta)
        qr, kr = _rotate(q[h * G:(h + 1) * G], qa), _rotate(k[h, cols], ka)
        f2 = sc["attention_factor"] ** 2
        return call.scaling * (f2 * (qr[..., :r] @ kr[:, :r].T) + qr[..., r:] @ kr[:, r:].T)

    def edit(self, call, h: int, S) -> None:
        """Change the targeted logits of kv head ``h``'s group, ``S (G, c, Lk)``, in place."""
        import torch
        vis = call.visible()
        delta = call.q_pos[:, None] - call.k_pos[None, :]                  # (c, Lk), as the mask itself
        far = (delta > self.train_len - 1) & vis
        sink = (call.k_pos == 0)
        if self.name in ("clamp-sink", "clamp-control", "window"):
            col = call.k_pos == self.control_key if self.name == "clamp-control" else sink
            cols = torch.nonzero(col).flatten()
            if cols.numel():
                new = self._logits(call, h, cols, self.train_len - 1)
                S[:, :, cols] = torch.where(far[:, cols], new, S[:, :, cols])
            if self.name == "window":                    # keys 1.. at distance L - 1 or more: hidden
                S.masked_fill_((delta >= self.train_len - 1) & ~sink[None, :], -torch.inf)
        elif self.name in ("clamp-all", "clamp-slow"):
            if far.any():
                cols = torch.nonzero(far.any(dim=0)).flatten()
                sc = self.schedules[call.layer]
                slow = None if self.name == "clamp-all" else \
                    np.asarray(sc["theta"])[: sc["rotary_dim"] // 2] * (self.train_len - 1) < 2 * math.pi
                new = self._logits(call, h, cols, self.train_len - 1, slow)
                S[:, :, cols] = torch.where(far[:, cols], new, S[:, :, cols])
        elif sink.any():
            self._edit_sink(call, h, S, vis, int(torch.nonzero(sink)[0, 0]))

    def _edit_sink(self, call, h: int, S, vis, c0: int) -> None:
        """The interventions on key 0's logit alone (column ``c0``), rows that see it and another key."""
        import torch
        others = vis.clone()
        others[:, c0] = False
        rows = vis[:, c0] & others.any(dim=1)
        if self.name == "sink-at-4L":
            new = self._logits(call, h, torch.tensor([c0], device=S.device), 4 * self.train_len)[..., 0]
            S[:, :, c0] = torch.where(rows, new, S[:, :, c0])
            return
        masked = S.masked_fill(~others, -torch.inf)
        if self.name == "sink-to-mean":
            mean = S.masked_fill(~others, 0.0).sum(-1) / others.sum(-1).clamp(min=1)
            S[:, :, c0] = torch.where(rows, mean, S[:, :, c0])
            return
        log_odds = S[:, :, c0] - torch.logsumexp(masked, dim=-1)               # hold-sink-odds
        G = call.groups
        for g in range(G):
            key = (call.layer, h * G + g)
            ref = rows & (call.q_pos >= self.train_len - SINK_QUERIES) & (call.q_pos < self.train_len)
            self.targets.setdefault(key, []).extend(log_odds[g, ref].tolist())
            late = rows & (call.q_pos >= self.train_len)
            if late.any():
                if not self.targets[key]:
                    raise BadValue(f"no query before L = {self.train_len} to hold the sink's log-odds at")
                tau = float(np.mean(self.targets[key]))
                S[g, :, c0] = torch.where(late, S[g, :, c0] + (tau - log_odds[g]), S[g, :, c0])


class SinkProbe:
    """The sink's share and log-odds terms of the logits as used (edited and masked), summed per
    ``(layer, kv head, grid index)`` over the rows of the last ``SINK_QUERIES`` queries of each grid length."""

    def __init__(self, grid: np.ndarray):
        self.grid = [int(m) for m in grid]
        self.sums: dict[tuple[int, int, int], dict[str, float]] = {}

    def __call__(self, call, h: int, S) -> None:
        import torch
        at0 = torch.nonzero(call.k_pos == 0).flatten()
        if not at0.numel():
            return
        c0 = int(at0[0])
        lo, hi = int(call.q_pos[0]), int(call.q_pos[-1]) + 1
        hit = [(gi, n) for gi, n in enumerate(self.grid) if n - SINK_QUERIES < hi and n > lo]
        if not hit:
            return
        # every row any grid length reads, its terms computed once; each length then sums its own rows
        want = torch.zeros_like(call.q_pos, dtype=torch.bool)
        for _, n in hit:
            want |= (call.q_pos >= n - SINK_QUERIES) & (call.q_pos < n)
        idx = torch.nonzero(want).flatten()
        if not idx.numel():
            return
        sub = S[:, idx]
        others = torch.isfinite(sub)
        others[..., c0] = False
        count = others.sum(-1)
        s0 = sub[..., c0]
        ok = torch.isfinite(s0) & (count >= 1)
        mu = sub.masked_fill(~others, 0.0).sum(-1) / count.clamp(min=1)
        lse = torch.logsumexp(sub.masked_fill(~others, -torch.inf), dim=-1)
        pos = call.q_pos[idx]
        for gi, n in hit:
            sel = ok & ((pos >= n - SINK_QUERIES) & (pos < n))[None, :]
            if not sel.any():
                continue
            t = sink_log_odds_from_parts(*(x[sel].cpu().numpy() for x in (s0, mu, lse, count.double())))
            acc = self.sums.setdefault((call.layer, h, gi), {f: 0.0 for f in (*SINK_TERMS, "share", "rows")})
            for f in (*SINK_TERMS, "share"):
                acc[f] += float(np.sum(getattr(t, f)))
            acc["rows"] += int(sel.sum())

    def rows(self, run: str) -> list[dict[str, Any]]:
        return [{"run": run, "layer": li, "kv_head": h, "n": self.grid[gi],
                 **{f: acc[f] / acc["rows"] for f in (*SINK_TERMS, "share")}}
                for (li, h, gi), acc in sorted(self.sums.items())]


def _chunked_nll(model, input_ids: list[int], tokens_per_pass: int, handler) -> np.ndarray:
    """Per-token loss of ``model`` over ``input_ids`` run ``tokens_per_pass`` tokens at a time with a KV cache, every
    attention layer computed by ``handler`` (``.hook.attention_hook`` with the eager mask)."""
    import torch
    from .forward import chunk_nll, chunked_passes, pass_edges
    from .hook import attention_hook
    dev = next(model.parameters()).device
    ids = torch.tensor([input_ids], device=dev)
    n = len(input_ids)
    nll = np.zeros(n - 1)
    with attention_hook(model, handler, eager_mask=True), torch.no_grad():
        for s, _, out in chunked_passes(model, ids, pass_edges(n, tokens_per_pass)):
            chunk_nll(out.logits, ids, s, nll)
    return nll


def _medians(rows: list[dict], grid: list[int]) -> dict[str, list[float | None]]:
    out: dict[str, list[float | None]] = {}
    for f in (*SINK_TERMS, "share"):
        out[f] = [float(np.median(v)) if (v := [r[f] for r in rows if r["n"] == m]) else None for m in grid]
    return out


def _one_run(model, input_ids: list[int], L: int, tokens_per_pass: int, grid: list[int],
             iv: Intervention | None, run: str) -> dict[str, Any]:
    """One pass over the tokens, unchanged (``iv`` None) or intervened: loss ranges, the sink's terms per head."""
    from .hook import eager
    from .study import nll_ranges
    probe = SinkProbe(np.asarray(grid))
    edit = None if iv is None else iv.edit
    nll = _chunked_nll(model, input_ids, tokens_per_pass,
                       lambda call: eager(call, edit=edit, observe=probe))
    rows = probe.rows(run)
    return {"nll_ranges": nll_ranges(nll, L), "median": _medians(rows, grid), "heads": rows}


def _combine(name: str, L: int, n: int, tokens_per_pass: int, grid: list[int], unchanged: dict, intervened: dict,
             control_key: int | None) -> dict[str, Any]:
    """One intervention's result: both runs on the same tokens and the perplexity ratios past each range."""
    out: dict[str, Any] = {"intervention": name, "train_len": L, "n": n, "tokens_per_pass": tokens_per_pass,
                           "queries": SINK_QUERIES, "grid": grid, "runs": {}, "heads": []}
    if name == "clamp-control":
        out["control_key"] = control_key
    for run, r in (("unchanged", unchanged), ("intervened", intervened)):
        out["heads"].extend(r["heads"])                          # each row names its run (``SinkProbe.rows``)
        out["runs"][run] = {"nll_ranges": r["nll_ranges"], "median": r["median"]}
    out["ppl_ratio"] = [{"start": a["start"], "end": a["end"], "ratio": b["ppl"] / a["ppl"]}
                        for a, b in zip(unchanged["nll_ranges"], intervened["nll_ranges"], strict=True)]
    return out


@renamed("0.3.0", chunk="tokens_per_pass")
def measure(model, input_ids: list[int], *, name: str, L: int, tokens_per_pass: int = 1024) -> dict[str, Any]:
    """The unchanged model and the intervention ``name`` on the same tokens (module docstring)."""
    return measure_many(model, input_ids, names=[name], L=L, tokens_per_pass=tokens_per_pass)[name]


def check_names(names, what: str = "intervention") -> list[str]:
    """The interventions named (a name, ``"all"`` or a sequence of names), each once, or a ValueError naming
    the argument ``what`` as the caller's user wrote it."""
    if isinstance(names, str):
        names = list(INTERVENTIONS) if names == "all" else [names]
    elif not isinstance(names, (list, tuple)):
        raise BadValue(f"{what} must be a name, 'all' or a list of names, got {type(names).__name__}")
    names = list(names)
    bad = [x for x in names if x not in INTERVENTIONS]
    if bad or not names:
        raise BadValue(f"{what} must name some of {', '.join(INTERVENTIONS)} or all, got "
                       f"{', '.join(map(repr, bad)) or repr(names)}")
    return list(dict.fromkeys(names))


def measure_many(model, input_ids: list[int], *, names, L: int, tokens_per_pass: int = 1024,
                 store: Any = None, on_result: Any = None) -> dict[str, dict[str, Any]]:
    """Each intervention in ``names`` against ONE unchanged run of the same tokens (module docstring).

    ``store``: a ``ropetheory.store.Journal`` whose rows (keyed by run name) are reused and to which every
    run is added as it finishes, so a killed measurement resumes; ``on_result(name, result)`` is called
    for each intervention as soon as both of its runs exist."""
    from .forward import analysis_grid, layer_schedules
    names = check_names(names)
    n = len(input_ids)
    tokens_per_pass = check_integer("tokens_per_pass", tokens_per_pass, lo=1)
    if n < 2:
        raise BadValue(f"input_ids must hold >= 2 tokens, got {n}")
    schedules = layer_schedules(model.config.to_dict(), n)
    grid = [int(m) for m in analysis_grid(n, L)]

    def run(key: str, iv: Intervention | None) -> dict[str, Any]:
        if store is not None and key in store:
            return store.rows[key]
        r = _one_run(model, input_ids, L, tokens_per_pass, grid, iv, "intervened" if iv else "unchanged")
        if store is not None:
            store.add(key, r)
            r = store.rows[key]
        return r

    unchanged = run("unchanged", None)
    out = {}
    for name in names:
        iv = Intervention(name, L, schedules)
        out[name] = _combine(name, L, n, tokens_per_pass, grid, unchanged, run(name, iv), iv.control_key)
        if on_result is not None:
            on_result(name, out[name])
    return out


@renamed("0.3.0", chunk="tokens_per_pass")
def run(model: str, *, out, name, n_tokens: int, text: str | None = None, bos: bool = False,
        repeat_text: bool = False, tokens_per_pass: int = 1024, device: str = "cpu",
        train_len: int | None = None, text_distribution: str | None = None,
        resume: bool = True) -> dict[str, Any]:
    """``ropetheory analyze --model M --intervention NAME[,NAME...|all]``: load offline, ``measure_many``, and
    write per intervention ``<out>/<label>/intervention-<NAME>/intervention.json``, ``heads.csv`` (the sink's
    terms per run, layer, kv head and length) and ``ppl.csv`` (perplexity ranges of both runs), then the
    summary and verdict of every intervention measured so far on the same tokens
    (``.intervention_report.write_summary``). Runs are journalled in ``<out>/<label>/interventions-<key>.jsonl``,
    ``key`` a hash of the model, the token ids, L, the pass size, the device and the version, each row with the
    code's hash: a rerun
    with the same inputs reuses them, any other recomputes. Returns ``{name: result}`` with ``meta``."""
    import hashlib
    import json
    import pathlib
    from ..store import Journal, derived_code_hash, package_version, write_csv, write_json
    from .corpus import text_tokens
    from .forward import training_length
    from .intervention_report import write_summary
    from .registry import PACKAGED, load_model
    names = check_names(name)
    if train_len is not None:
        check_integer("train_len", train_len, lo=2)
    m, tok, label = load_model(model, device=device)
    L = int(train_len if train_len is not None else
            training_length(m.config.to_dict(), PACKAGED.get(label, {}).get("train_len")))
    ids, text_desc = text_tokens(tok, n_tokens, text_file=text, bos=bos, repeat=repeat_text,
                                 distribution=text_distribution)
    ids = [int(i) for i in ids]
    meta = {"model": label, "architecture": type(m).__name__, "text": text_desc, "device": device}
    base = pathlib.Path(out) / label
    key = hashlib.sha256(json.dumps({"model": label, "ids": text_desc["ids_sha256"], "L": L,
                                     "tokens_per_pass": tokens_per_pass, "device": device,
                                     "version": package_version()}, sort_keys=True).encode()).hexdigest()[:16]
    journal = Journal(base / f"interventions-{key}.jsonl", resume=resume, code=derived_code_hash(__name__))

    def write(nm: str, res: dict[str, Any]) -> None:
        res["meta"] = meta
        d = base / f"intervention-{nm}"
        write_json(d / "intervention.json", res)
        write_csv(d / "heads.csv", res["heads"])
        write_csv(d / "ppl.csv", [{"run": r, **x} for r in res["runs"] for x in res["runs"][r]["nll_ranges"]])

    res = measure_many(m, ids, names=names, L=L, tokens_per_pass=tokens_per_pass, store=journal, on_result=write)
    write_summary(base, ids_sha256=text_desc["ids_sha256"])
    return res
