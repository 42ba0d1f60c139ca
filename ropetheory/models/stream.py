"""Per-layer statistics of keys and queries, accumulated chunk by chunk (docs/theory.md, Real-model measurements).

A ``LayerStream`` receives, for consecutive position ranges ``[s, s + c)``, the pre- and
post-RoPE queries ``(Hq, c, d)`` and keys ``(Hkv, c, d)`` of one layer (channels in the model's
own order), and keeps, per key head (its ``group_size = Hq / Hkv`` query heads grouped onto it):

* the ``d x d`` Grams ``K^T K`` before and after RoPE, snapshotted at the grid lengths ``n``:
  ``rho_n = sqrt(lambda_max(G_post) / lambda_max(G_pre))``, stable ranks ``tr / lambda_max``;
* sums of unit vectors: mean pairwise cosine ``(||sum k^_i||^2 - n) / (n (n-1))`` (keys; the same
  for the group's queries) and key-query ``(sum q^) . (sum k^) / (group_size n * n)``, before and after
  RoPE; the cosine of the key and query centroids (before RoPE);
* the sink's attention share at length ``n``: the softmax weight on key 0 of the last
  ``sink_queries`` queries of a length-``n`` input (causal; a sliding-window layer lets query ``i``
  see keys ``j > i - W``), with RoPE and with the same vectors un-rotated; ``None`` where key 0
  lies outside every window of those queries; beside it, the terms of its log-odds
  ``log(a_0 / (1 - a_0)) = (s_0 - mu) - log(n - 1) - kappa`` (``ropetheory.theory.sink``), each averaged
  over those queries, from the same online pass over the keys (``SINK_TERMS``);
* the mean logit of each key position ``j`` over later queries, ``k_j . (sum_{i>j} q_i) / (G (N-1-j))``,
  from running query sums (post-RoPE: the logits the model uses).

Memory is ``O(d^2 + chunk d)`` whatever ``n`` is: the keys, which the sink share and the rank-1 weights
need again after they stream past, go to a file (``KeyStore``: float32, as captured, so nothing is
lost) and are read back ``KEY_BLOCK`` rows at a time; the sink's softmax over ``n`` keys is an
online log-sum-exp over those blocks; queries are kept only on a stride (at most ~4096 per head) and in
a short rolling buffer. Nothing ``n x n`` or ``n x d`` is held in memory. Accumulation is float64.
"""
from __future__ import annotations

import pathlib
import tempfile

import numpy as np

from ..spectra.stream import neumaier_add, neumaier_total
from ..theory.sink import mean_terms, share_from_log_odds, sink_log_odds_from_parts
from ..core.errors import BadValue
from .rotation import RotationCheck

__all__ = ["LayerStream", "KeyStore", "mean_pair_cosine", "SINK_QUERIES", "KEY_BLOCK", "SINK_TERMS"]

#: queries averaged for the sink share at length n (the last ones of the input)
SINK_QUERIES = 32
#: the sink's log-odds decomposition kept per head and length (``ropetheory.theory.sink``), each the mean
#: over the same queries as the share (means keep ``log_odds = gap - dilution - spread`` exact)
SINK_TERMS = ("log_odds", "sink_logit", "others_mean", "dilution", "spread")
#: key rows read back from a ``KeyStore`` at a time
KEY_BLOCK = 8192


class KeyStore:
    """One layer's keys ``(H, N, d)`` in a float32 ``.npy`` file (``numpy.memmap``), read back in blocks.

    A checkpoint of the capture refers to the file by its path and shape (``LayerStream.state``; the rows
    written before the checkpoint are the ones a resumed run keeps). ``open`` refuses a file that is
    missing or of another shape, so the checkpoint is reported damaged and recomputed.
    """

    def __init__(self, path: str | pathlib.Path, shape: tuple[int, int, int], *, create: bool = True):
        self.path, self.shape = pathlib.Path(path), tuple(int(x) for x in shape)
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._m = np.lib.format.open_memmap(self.path, mode="w+", dtype=np.float32, shape=self.shape)
            return
        self._m = np.lib.format.open_memmap(self.path, mode="r+")
        if self._m.shape != self.shape or self._m.dtype != np.float32:
            raise BadValue(
                f"{self.path}: keys of shape {self._m.shape} {self._m.dtype}, expected {self.shape} float32"
            )

    @classmethod
    def open(cls, path: str | pathlib.Path, shape: tuple[int, int, int]) -> KeyStore:
        """The existing key file at ``path``, which must hold float32 keys of ``shape`` (else a ValueError)."""
        return cls(path, shape, create=False)

    def flush(self) -> None:
        """Write the rows set so far to the file (before a checkpoint refers to them)."""
        self._m.flush()

    def __setitem__(self, idx, value):
        self._m[idx] = value

    def __getitem__(self, idx) -> np.ndarray:
        """Rows as float64 (only the rows indexed are read)."""
        return np.asarray(self._m[idx], dtype=np.float64)

    def blocks(self, h: int | slice, n: int, block: int = KEY_BLOCK):
        """``(a, b, K[h, a:b])`` for consecutive blocks covering rows ``[0, n)``, float64 (``h`` a slice:
        those heads' rows, ``(heads, b - a, d)``)."""
        for a in range(0, n, block):
            b = min(n, a + block)
            yield a, b, self[h, a:b]


def _unit(X: np.ndarray) -> np.ndarray:
    return X / np.maximum(np.linalg.norm(X, axis=-1, keepdims=True), 1e-300)


def mean_pair_cosine(S: np.ndarray, n: int) -> float:
    """Mean of ``cos(x_i, x_j)`` over pairs ``i != j`` from ``S = sum_i x^_i`` of ``n`` unit vectors."""
    return float((S @ S - n) / (n * (n - 1))) if n > 1 else 0.0


def _sink_terms(Q: np.ndarray, K: KeyStore, n: int, qpos: np.ndarray, scale: float,
                window: int | None) -> tuple[np.ndarray, ...]:
    """Per key head ``h`` and query row of ``Q (H, G*S, d)`` (row ``r`` at ``qpos[r % S]``), over the keys
    ``[0, n)`` of head ``h`` it sees (causal, within ``window``): the sink's logit ``s_0`` (``-inf`` if key 0
    is hidden) and, over the other visible keys, their log-sum-exp, sum and count, each ``(H, G*S)``. An
    online log-sum-exp over ``KeyStore`` blocks of every head at once, ``O(H * G * S * block)`` memory,
    float64; each head's numbers are those of its own rows alone (the heads are a batch axis)."""
    S = qpos.size
    m = np.full(Q.shape[:-1], -np.inf)
    tot, total, count = np.zeros(Q.shape[:-1]), np.zeros(Q.shape[:-1]), np.zeros(Q.shape[:-1])
    l0 = np.full(Q.shape[:-1], -np.inf)
    pos = np.tile(qpos, Q.shape[-2] // S)
    for a, b, Kb in K.blocks(slice(None), n):
        lg = (Q @ Kb.transpose(0, 2, 1)) * scale                   # (H, G*S, b - a)
        jj = np.arange(a, b)[None, :]
        vis = jj <= pos[:, None]                                    # (G*S, b - a): the same for every head
        if window is not None:
            vis &= jj > pos[:, None] - window
        if a == 0:
            l0 = np.where(vis[:, 0], lg[..., 0], -np.inf)
            vis[:, 0] = False                                   # the others: every key but the sink
        lg = np.where(vis, lg, -np.inf)
        total += np.where(vis, lg, 0.0).sum(axis=-1)
        count += vis.sum(axis=1)
        new = np.maximum(m, lg.max(axis=-1))
        ref = np.where(np.isfinite(new), new, 0.0)
        tot = tot * np.where(np.isfinite(m), np.exp(m - ref), 0.0) + np.exp(lg - ref[..., None]).sum(axis=-1)
        m = new
    lse = np.where(tot > 0, np.where(np.isfinite(m), m, 0.0) + np.log(np.where(tot > 0, tot, 1.0)), -np.inf)
    return l0, lse, total, count


def _sink_share(l0: np.ndarray, lse: np.ndarray) -> np.ndarray:
    """``a_0 = 1 / (1 + e^{LSE_{j>=1} - s_0})``: 1 with no other key, 0 with the sink hidden."""
    return np.where(np.isfinite(l0), share_from_log_odds(np.where(np.isfinite(l0), l0, 0.0) - lse), 0.0)


#: a ``LayerStream``'s array attributes, single (``name``) or one per kind (``name.pre``, ``name.post``), and
#: its scalar attributes: what ``state`` saves and ``from_state`` restores
_ARRAYS = ("grid", "key_sums", "query_sums", "query_sample_positions", "query_post_sums", "key_logit_prefix")
_BY_KIND = ("key_unit_sums", "query_unit_sums", "query_samples", "recent_queries")
_SCALARS = ("n_total", "kv_heads", "group_size", "head_dim", "scale", "window", "sink_queries", "query_stride",
            "n_done")
#: the layout of ``state``'s arrays and meta: a checkpoint of another version is refused (and recomputed)
STATE_VERSION = 2
_KINDS = ("pre", "post")


class LayerStream:
    """Streaming statistics of one attention layer; see the module docstring.

    Sizes: ``n_total`` positions, ``kv_heads`` key heads, ``group_size = q_heads / kv_heads`` query heads per
    key head, ``head_dim``; ``n_done`` positions added so far. Per key head (and per kind ``pre`` / ``post``
    where a dict): ``keys`` (``KeyStore``), ``key_unit_sums`` / ``query_unit_sums`` (``sum k^``, ``sum q^``
    over the group), ``key_sums`` / ``query_sums`` (pre-RoPE ``sum k``, ``sum q``, for the centroids),
    ``query_post_sums`` (running ``sum q`` after RoPE), ``key_logit_prefix[j] = k_j . sum_{i <= j} q_i``;
    ``query_samples`` at ``query_sample_positions`` (every ``query_stride``-th position), the last
    ``sink_queries`` queries in ``recent_queries``, ``snapshots`` (per statistic, ``(kv_heads, len(grid))``)
    and ``rotation`` (the capture's ``.rotation.RotationCheck``, None: not checked).
    """

    def __init__(self, *, n_total: int, grid: np.ndarray, kv_heads: int, q_heads: int, head_dim: int,
                 scale: float, window: int | None = None, sink_queries: int = SINK_QUERIES,
                 query_stride: int = 1, key_dir: str | pathlib.Path | None = None):
        """``key_dir``: the folder of the key files (a capture that checkpoints passes one beside its
        checkpoint); default a temporary folder removed with the stream."""
        if q_heads % kv_heads:
            raise BadValue(f"q_heads {q_heads} is not a multiple of kv_heads {kv_heads}")
        self.n_total, self.kv_heads, self.head_dim = int(n_total), kv_heads, head_dim
        self.group_size = q_heads // kv_heads
        self.grid = np.asarray(grid, dtype=np.int64)
        g = self.grid
        if g.size == 0 or g.min() < 1 or g.max() > self.n_total or np.any(np.diff(g) <= 0):
            raise BadValue(f"grid must be increasing lengths in [1, {self.n_total}], got {g.tolist()}")
        self.scale, self.window = float(scale), window
        self.sink_queries, self.query_stride = int(sink_queries), int(query_stride)
        H, d, ng = kv_heads, head_dim, self.grid.size
        self.n_done = 0
        #: compensated accumulators (sum, compensation) of the Grams, as every streaming Gram of the package
        self._gram = {t: (np.zeros((H, d, d)), np.zeros((H, d, d))) for t in ("pre", "post")}
        self.key_unit_sums = {t: np.zeros((H, d)) for t in ("pre", "post")}
        self.query_unit_sums = {t: np.zeros((H, d)) for t in ("pre", "post")}
        self.key_sums, self.query_sums = np.zeros((H, d)), np.zeros((H, d))
        if key_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="ropetheory-keys-")
            key_dir = self._tmp.name
        self.keys = {t: KeyStore(pathlib.Path(key_dir) / f"keys_{t}.npy", (H, self.n_total, d)) for t in _KINDS}
        self.query_sample_positions = np.arange(0, self.n_total, self.query_stride)
        n_samples = self.query_sample_positions.size
        self.query_samples = {t: np.zeros((q_heads, n_samples, d), dtype=np.float32) for t in _KINDS}
        self.recent_queries = {t: np.zeros((q_heads, 0, d)) for t in ("pre", "post")}
        self.query_post_sums = np.zeros((H, d))                 # running sum of post queries, per key head
        self.key_logit_prefix = np.zeros((H, self.n_total))                          # k_j . (sum_{i<=j} q_i)
        self.snapshots: dict[str, np.ndarray] = {k: np.full((H, ng), np.nan) for k in (
            "lam_pre", "tr_pre", "lam_post", "tr_post", "cos_kk_pre", "cos_qq_pre", "cos_kq_pre",
            "cos_kk_post", "cos_qq_post", "cos_kq_post", "centroid_cos", "sink_rope", "sink_norope",
            *(f"{key}_{f}" for key in ("sink_rope", "sink_norope") for f in SINK_TERMS))}
        #: the capture's ``.rotation.RotationCheck`` of the positions it checked (None: not checked)
        self.rotation: RotationCheck | None = None

    # ------------------------------------------------------------------
    def add(self, q_pre: np.ndarray, k_pre: np.ndarray, q_post: np.ndarray, k_post: np.ndarray) -> None:
        """Positions ``[self.n_done, self.n_done + c)``: queries ``(Hq, c, d)``, keys ``(Hkv, c, d)``."""
        c = k_pre.shape[1]
        s, e = self.n_done, self.n_done + c
        if e > self.n_total:
            raise BadValue(f"chunk ends at {e}, past n_total {self.n_total}")
        H, G, d = self.kv_heads, self.group_size, self.head_dim
        if q_pre.shape != (H * G, c, d) or k_pre.shape != (H, c, d) \
                or q_post.shape != q_pre.shape or k_post.shape != k_pre.shape:
            raise BadValue(f"chunk shapes q {q_pre.shape}, k {k_pre.shape} do not match "
                           f"({H * G}, {c}, {d}) / ({H}, {c}, {d})")
        arrs = {"q_pre": q_pre, "k_pre": k_pre, "q_post": q_post, "k_post": k_post}
        for name, x in arrs.items():
            if not np.all(np.isfinite(x)):
                raise BadValue(f"{name} of positions [{s}, {e}) holds non-finite values")
        self.keys["pre"][:, s:e] = k_pre
        self.keys["post"][:, s:e] = k_post
        sel = (self.query_sample_positions >= s) & (self.query_sample_positions < e)
        for t, q in (("pre", q_pre), ("post", q_post)):
            self.query_samples[t][:, sel] = q[:, self.query_sample_positions[sel] - s]
        qg = {t: q.astype(np.float64).reshape(H, G, c, d) for t, q in (("pre", q_pre), ("post", q_post))}
        kk = {t: k.astype(np.float64) for t, k in (("pre", k_pre), ("post", k_post))}
        # logits of each key over earlier-or-equal queries (for the mean over later queries)
        cq = np.cumsum(qg["post"].sum(axis=1), axis=1) + self.query_post_sums[:, None, :]        # (H, c, d)
        self.key_logit_prefix[:, s:e] = np.einsum("hcd,hcd->hc", kk["post"], cq)
        self.query_post_sums = cq[:, -1]
        # segments cut at grid lengths inside (s, e]
        cuts = [n for n in self.grid if s < n <= e]
        lo = s
        for hi in cuts + ([e] if not cuts or cuts[-1] < e else []):
            a, b = lo - s, hi - s
            self._accumulate({t: kk[t][:, a:b] for t in kk}, {t: qg[t][:, :, a:b] for t in qg}, b - a)
            if hi in cuts:
                self._snapshot(int(np.searchsorted(self.grid, hi)), hi, q_pre, q_post, s)
            lo = hi
        for t, q in (("pre", q_pre), ("post", q_post)):
            recent = np.concatenate([self.recent_queries[t], q.astype(np.float64)], axis=1)
            self.recent_queries[t] = recent[:, -self.sink_queries:]
        self.n_done = e

    @property
    def gram_pre(self) -> np.ndarray:
        """``sum_i k_i k_i^T`` before RoPE, per key head ``(H, d, d)`` (compensated sum)."""
        return neumaier_total(self._gram["pre"])

    @property
    def gram_post(self) -> np.ndarray:
        """``sum_i k_i k_i^T`` after RoPE, per key head ``(H, d, d)`` (compensated sum)."""
        return neumaier_total(self._gram["post"])

    def _accumulate(self, kk, qg, m):
        if m == 0:
            return
        for t in ("pre", "post"):
            self._gram[t] = neumaier_add(self._gram[t], kk[t].transpose(0, 2, 1) @ kk[t])
        for t in ("pre", "post"):
            self.key_unit_sums[t] += _unit(kk[t]).sum(axis=1)
            self.query_unit_sums[t] += _unit(qg[t]).sum(axis=(1, 2))
        self.key_sums += kk["pre"].sum(axis=1)
        self.query_sums += qg["pre"].sum(axis=(1, 2))

    def _snapshot(self, g: int, n: int, q_pre, q_post, s: int) -> None:
        sn = self.snapshots
        for t, Gm in (("pre", self.gram_pre), ("post", self.gram_post)):
            ev = np.linalg.eigvalsh(0.5 * (Gm + Gm.transpose(0, 2, 1)))
            sn[f"lam_{t}"][:, g], sn[f"tr_{t}"][:, g] = ev[:, -1], np.trace(Gm, axis1=1, axis2=2)
            Uk, Uq = self.key_unit_sums[t], self.query_unit_sums[t]
            for h in range(self.kv_heads):
                sn[f"cos_kk_{t}"][h, g] = mean_pair_cosine(Uk[h], n)
                sn[f"cos_qq_{t}"][h, g] = mean_pair_cosine(Uq[h], self.group_size * n)
                sn[f"cos_kq_{t}"][h, g] = float(Uq[h] @ Uk[h]) / (self.group_size * n * n)
        for h in range(self.kv_heads):
            den = np.linalg.norm(self.key_sums[h]) * np.linalg.norm(self.query_sums[h])
            sn["centroid_cos"][h, g] = float(self.key_sums[h] @ self.query_sums[h] / den) if den > 0 else 0.0
        # sink share: the last S queries of a length-n input (positions n-S' .. n-1)
        Sq = min(self.sink_queries, n)
        for t, q, key in (("post", q_post, "sink_rope"), ("pre", q_pre, "sink_norope")):
            # the last Sq queries up to n: the chunk's own (only those converted) after the earlier recent ones
            Q = np.concatenate([self.recent_queries[t], q[:, max(0, n - s - Sq): n - s].astype(np.float64)], axis=1)
            Q = Q[:, -Sq:]                                              # (Hq, Sq, d)
            qpos = np.arange(n - Sq, n)
            if self.window is not None and qpos.min() >= self.window:
                sn[key][:, g] = np.nan                            # key 0 outside every window: no sink
                continue
            Qh = Q.reshape(self.kv_heads, self.group_size * Sq, self.head_dim)    # each key head's group
            l0, lse, total, count = _sink_terms(Qh, self.keys[t], n, qpos, self.scale, self.window)
            ok = np.tile(np.ones(Sq, bool) if self.window is None else qpos < self.window, self.group_size)
            for h in range(self.kv_heads):
                sn[key][h, g] = float(_sink_share(l0[h], lse[h])[ok].mean())     # queries that can see key 0
                two = ok & (count[h] >= 1)                                      # and at least one other key
                if two.any():
                    terms = mean_terms(sink_log_odds_from_parts(l0[h, two], total[h, two] / count[h, two],
                                                                lse[h, two], count[h, two]))
                    for f in SINK_TERMS:
                        sn[f"{key}_{f}"][h, g] = float(getattr(terms, f))

    # ------------------------------------------------------------------
    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        """The stream as ``(arrays, meta)`` for ``ropetheory.store.save_checkpoint``: every accumulator as
        an array, the sizes and flags as JSON values, the key files by path and shape (flushed first)."""
        arrays = {name: getattr(self, name) for name in _ARRAYS}
        arrays.update({f"{name}.{t}": getattr(self, name)[t] for name in _BY_KIND for t in _KINDS})
        arrays.update({f"gram.{t}.{i}": self._gram[t][i] for t in _KINDS for i in (0, 1)})
        arrays.update({f"snap.{k}": v for k, v in self.snapshots.items()})
        for ks in self.keys.values():
            ks.flush()
        meta = {name: getattr(self, name) for name in _SCALARS}
        meta["state_version"] = STATE_VERSION
        meta["keys"] = {t: [str(self.keys[t].path), list(self.keys[t].shape)] for t in _KINDS}
        meta["snap"] = list(self.snapshots)
        meta["rotation"] = None if self.rotation is None else self.rotation.to_dict()
        return arrays, meta

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict) -> LayerStream:
        """The stream ``state`` saved (its key files reopened; a missing one raises). A state of another
        ``STATE_VERSION`` is refused, never read with its names taken for others."""
        if meta.get("state_version") != STATE_VERSION:
            raise BadValue(f"a LayerStream state of version {meta.get('state_version')!r}; this code reads "
                           f"version {STATE_VERSION}")
        st = cls.__new__(cls)
        for name in _SCALARS:
            setattr(st, name, meta[name])
        for name in _ARRAYS:
            setattr(st, name, arrays[name])
        for name in _BY_KIND:
            setattr(st, name, {t: arrays[f"{name}.{t}"] for t in _KINDS})
        st._gram = {t: (arrays[f"gram.{t}.0"], arrays[f"gram.{t}.1"]) for t in _KINDS}
        st.snapshots = {k: arrays[f"snap.{k}"] for k in meta["snap"]}
        st.rotation = RotationCheck.from_dict(meta["rotation"])
        st.keys = {t: KeyStore.open(path, tuple(shape)) for t, (path, shape) in meta["keys"].items()}
        return st

    def key_logit_means(self) -> np.ndarray:
        """``(H, N-1)``: mean post-RoPE logit ``q_i . k_j`` over later queries ``i > j`` of the group."""
        if self.n_done != self.n_total:
            raise BadValue(f"stream incomplete: {self.n_done} of {self.n_total} positions")
        b = np.zeros((self.kv_heads, self.n_total))
        for h in range(self.kv_heads):
            for a, e, Kb in self.keys["post"].blocks(h, self.n_total):
                b[h, a:e] = Kb @ self.query_post_sums[h]
        later = self.group_size * (self.n_total - 1 - np.arange(self.n_total))
        return (b - self.key_logit_prefix)[:, :-1] / later[:-1]

    def projections(self, h: int, v: np.ndarray, t: str = "pre") -> np.ndarray:
        """``(N,)``: ``k_i . v`` for key head ``h`` (``t``: before or after RoPE), read in blocks."""
        out = np.zeros(self.n_total)
        for a, e, Kb in self.keys[t].blocks(h, self.n_total):
            out[a:e] = Kb @ v
        return out

    def sink_norm_ratio(self) -> np.ndarray:
        """``||k_0|| / median_i ||k_i||`` per key head (pre-RoPE)."""
        nr = np.zeros((self.kv_heads, self.n_total))
        for h in range(self.kv_heads):
            for a, e, Kb in self.keys["pre"].blocks(h, self.n_total):
                nr[h, a:e] = np.linalg.norm(Kb, axis=-1)
        return nr[:, 0] / np.median(nr, axis=1)

    def top_direction(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per key head: first right singular vector ``v`` of the pre-RoPE keys, ``lambda_max``, ``tr`` (full n)."""
        ev, V = np.linalg.eigh(0.5 * (self.gram_pre + self.gram_pre.transpose(0, 2, 1)))
        return V[:, :, -1], ev[:, -1], np.trace(self.gram_pre, axis1=1, axis2=2)
