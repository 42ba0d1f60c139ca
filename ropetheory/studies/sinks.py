"""Sink-token mechanism (sections 3.2, Fig. 1, 5, 6), simulated on a synthetic attention head.

The head (every parameter in ``SinkHead``):
- a unit cluster direction ``c`` whose plane energies are ``e_j ∝ exp(kappa (j - P + 1))``:
  concentrated in the slowest planes of standard RoPE, where trained keys put their mass;
- keys ``k_i = A (-c + sigma xi_i)``, queries ``q_p = A (c + sigma zeta_p)``, with
  ``xi, zeta ~ N(0, I/d)``: tight, opposed clusters (mean key-query cosine ~ -1/(1+sigma^2));
- a sink key ``k_0 = A s u`` at position 0 (``u`` a random unit vector, ``s`` small);
- logits ``<R_p q_p, R_i k_i> / sqrt(d)`` (times the RoPE-ID length temperature where asked),
  ``A^2/sqrt(d) = beta``, so without RoPE an ordinary key's logit is about ``-beta``.

Per length ``n`` the last ``Q`` positions ``n-Q .. n-1`` query every key ``0..p`` (causal).
Reported: the mean attention share of the sink, the mean over queries of the maximum
ordinary-key logit, the fraction of positive ordinary logits and the mean logit. Keys are
generated and scored in chunks inside one jitted loop with an online log-sum-exp, so
``n = 65536`` (or 10^6 on a GPU) never needs the n x n matrix. Keys and queries depend
only on their position (``fold_in``), so every length and schedule sees the same clouds.
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import json
import math
import pathlib
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..core.layouts import rotate_interleaved
from ..core.angles import rope_angles, turn_chunks
from ..core.checks import bucket
from ..schedules import Schedule, length_temperature, schedule_from_spec
from .. import spectra
from ..store import Journal, derived_code_hash, write_csv, write_json
from .. import figstyle
from .common import device_scope, parse_study_args, save_figures, study_parser
from ..core.errors import BadValue
from ..core.renamed import renamed_fields
from ..core.checks import read_json_file

TRAIN_LEN = 4096


@renamed_fields("0.3.0", d="head_dim")
@dataclasses.dataclass(frozen=True)
class SinkHead:
    head_dim: int = 128          # d: the head's width, P = d / 2 planes
    logit_scale: float = 16.0    # beta = A^2 / sqrt(d): an ordinary no-RoPE logit is ~ -beta
    noise: float = 0.25          # sigma: a token's deviation from its cluster centre, relative norm
    sink_norm: float = 0.05      # s = ||k_0|| / A
    slow_bias: float = 0.35      # kappa: e_j ∝ exp(kappa (j - P + 1)), mass in the slowest planes
    n_queries: int = 32          # Q: queries at the last Q positions of each length
    seed: int = 0

    @property
    def amplitude(self) -> float:
        return math.sqrt(self.logit_scale * math.sqrt(self.head_dim))

    def direction(self) -> np.ndarray:
        P = self.head_dim // 2
        rng = np.random.default_rng(self.seed)
        e = np.exp(self.slow_bias * (np.arange(P) - P + 1))
        e /= e.sum()
        phase = rng.uniform(0, 2 * np.pi, P)
        c = np.empty(self.head_dim)
        c[0::2], c[1::2] = np.sqrt(e) * np.cos(phase), np.sqrt(e) * np.sin(phase)
        return c

    def sink_key(self) -> np.ndarray:
        u = np.random.default_rng(self.seed + 1).standard_normal(self.head_dim)
        return self.amplitude * self.sink_norm * u / np.linalg.norm(u)


#: the simulated series: label -> (display name, registry spec without head_dim)
SCHEDULES: dict[str, tuple[str, dict[str, Any]]] = {
    "nope": ("no RoPE", dict(name="nope")),
    "rope": ("RoPE (base 1e4)", dict(name="rope", base=1e4)),
    "half_rope": ("half-RoPE", dict(name="partial", base=1e4, fraction=0.5)),
    "high_freq": ("high-frequency", dict(name="high_frequency", train_len=TRAIN_LEN)),
    "rope_id": ("RoPE-ID", dict(name="rope_id", train_len=TRAIN_LEN)),
    "rope_id_temp": ("RoPE-ID + temperature", dict(name="rope_id", train_len=TRAIN_LEN, temperature="length")),
}


def code_hash() -> str:
    """Fingerprint of the code behind a sinks row: a row written by other code is recomputed."""
    return derived_code_hash(__name__)


def _schedule(key: str, d: int) -> Schedule:
    return schedule_from_spec({**SCHEDULES[key][1], "head_dim": d})


def _tokens(base_key, positions, centre, amp, sigma, sign):
    """Rows ``amp (sign c + sigma xi_p)`` with ``xi_p`` drawn from ``fold_in(base_key, p)``."""
    d = centre.shape[0]
    xi = jax.vmap(lambda p: jax.random.normal(jax.random.fold_in(base_key, p), (d,)))(positions)
    return amp * (sign * centre[None, :] + sigma * xi / jnp.sqrt(d))


@functools.partial(jax.jit, static_argnames=("chunk",))
def _scan_keys(q_rot, q_pos, temp, n, chunks, centre, amp, sigma, kkey, sink_logit, chunk):
    """Online softmax over keys 1..n-1 for queries ``q_rot (Q, d)``; returns per-query stats.

    Keys are generated and rotated chunk by chunk inside the package's one streaming loop
    (``ropetheory.spectra.chunked_prefix_scan``, one end: ``n``); the partition function is the
    usual rescaled running sum, the logit sum is Neumaier-compensated (``ropetheory.spectra.neumaier_add``).
    No Gram here: the sink share is an attention mass, not a spectral quantity.
    """
    d = q_rot.shape[1]
    Q = q_rot.shape[0]
    z = jnp.zeros(Q)
    init = (sink_logit, jnp.ones(Q), jnp.full(Q, -jnp.inf), z, z, (z, z))

    def step(state, pos, mask):
        M, S, mx, npos, nval, lsum = state
        k = _tokens(kkey, pos, centre, amp, sigma, -1.0)
        k_rot = rotate_interleaved(k, rope_angles(pos, chunks))
        logit = (q_rot @ k_rot.T) / jnp.sqrt(d) * temp[:, None]                 # (Q, chunk)
        valid = mask[None, :] & (pos[None, :] <= q_pos[:, None]) & (pos[None, :] >= 1)
        lv = jnp.where(valid, logit, -jnp.inf)
        cm = jnp.max(lv, axis=1)
        M2 = jnp.maximum(M, cm)
        S = S * jnp.exp(M - M2) + jnp.sum(jnp.where(valid, jnp.exp(lv - M2[:, None]), 0.0), axis=1)
        return (
            M2,
            S,
            jnp.maximum(mx, cm),
            npos + jnp.sum(valid & (logit > 0), axis=1),
            nval + jnp.sum(valid, axis=1),
            spectra.neumaier_add(lsum, jnp.sum(jnp.where(valid, logit, 0.0), axis=1)),
        )

    out = spectra.chunked_prefix_scan(jnp.reshape(n, (1,)), chunk, init, step, lambda st: st)
    M, S, mx, npos, nval, lsum = jax.tree_util.tree_map(lambda x: x[0], out)
    share = jnp.exp(sink_logit - M) / S
    return share, mx, npos, nval, spectra.neumaier_total(lsum)


def simulate_length(head: SinkHead, key: str, n: int, positions_per_step: int = 4096) -> dict[str, float]:
    """Sink share and logit statistics at one length for one schedule; keys are scored
    ``positions_per_step`` at a time."""
    sched = _schedule(key, head.head_dim)
    ch = jnp.asarray(turn_chunks(sched.theta))
    c = jnp.asarray(head.direction())
    amp, sigma = head.amplitude, head.noise
    root = jax.random.PRNGKey(head.seed)
    kkey, qkey = jax.random.fold_in(root, 1), jax.random.fold_in(root, 2)
    Q = min(head.n_queries, n - 1)
    q_pos = jnp.arange(n - Q, n, dtype=jnp.int64)
    q = _tokens(qkey, q_pos, c, amp, sigma, 1.0)
    q_rot = rotate_interleaved(q, rope_angles(q_pos, ch))
    temp = jnp.asarray(length_temperature(np.asarray(q_pos) + 1, TRAIN_LEN) if sched.temperature == "length"
                       else np.ones(Q))
    k0 = jnp.asarray(head.sink_key())                    # position 0: R_0 = I
    sink_logit = (q_rot @ k0) / math.sqrt(head.head_dim) * temp
    step = min(positions_per_step, bucket(n, minimum=2, power_of_two=True))
    share, mx, npos, nval, lsum = _scan_keys(q_rot, q_pos, temp, jnp.int64(n), ch, c, amp, sigma, kkey,
                                             sink_logit, chunk=step)
    return {"sink_share": float(jnp.mean(share)), "max_logit": float(jnp.mean(mx)),
            "frac_positive": float(jnp.sum(npos) / jnp.sum(nval)), "mean_logit": float(jnp.sum(lsum) / jnp.sum(nval)),
            "sink_logit": float(jnp.mean(sink_logit))}


def run(out_dir: pathlib.Path, lengths, head: SinkHead = SinkHead(), quiet: bool = False,
        resume: bool = True) -> list[dict]:
    from ..progress import progress
    out_dir.mkdir(parents=True, exist_ok=True)
    tag = json.dumps(dataclasses.asdict(head), sort_keys=True)
    journal = Journal(out_dir / "sinks.jsonl", resume=resume, code=code_hash())
    keys = []
    todo = [(k, int(n)) for k in SCHEDULES for n in lengths]
    for sk, n in progress(todo, desc="sinks", quiet=quiet):
        jk = f"{tag}|{sk}|{n}"
        keys.append(jk)
        if jk in journal:
            continue
        row = {"schedule": sk, "label": SCHEDULES[sk][0], "n": n}
        row.update(simulate_length(head, sk, n))
        journal.add(jk, row)
    rows = journal.ordered(keys)
    write_csv(out_dir / "sinks.csv", rows)
    c = head.direction()
    k = -c
    meta = {"head": dataclasses.asdict(head), "train_len": TRAIN_LEN, "lengths": [int(n) for n in lengths],
            "amplitude": head.amplitude, "mean_key_query_cosine": float(k @ c / (1 + head.noise ** 2)),
            "schedules": {k_: v[0] for k_, v in SCHEDULES.items()}, "summary": summarize(rows)}
    write_json(out_dir / "sinks.json", meta)
    return rows


def summarize(rows: list[dict]) -> dict[str, Any]:
    """Sink share at L and at the longest length, and the verdicts the paper's Fig. 6 predicts."""
    out = {}
    for sk in SCHEDULES:
        sel = sorted((r for r in rows if r["schedule"] == sk), key=lambda r: r["n"])
        if not sel:
            continue
        at_L = min(sel, key=lambda r: abs(r["n"] - TRAIN_LEN))
        last = sel[-1]
        shares = [r["sink_share"] for r in sel]
        out[sk] = {"share_at_L": at_L["sink_share"], "share_at_max": last["sink_share"], "n_max": last["n"],
                   "share_min": min(shares), "share_max": max(shares),
                   "retained_fraction": last["sink_share"] / at_L["sink_share"] if at_L["sink_share"] > 0 else None,
                   "max_logit_at_L": at_L["max_logit"], "max_logit_at_max": last["max_logit"],
                   "frac_positive_at_max": last["frac_positive"]}
    return out


def plot(out_dir: pathlib.Path) -> list[pathlib.Path]:
    """sinks.png / sinks.pdf from sinks.csv alone."""
    import matplotlib.pyplot as plt
    with open(out_dir / "sinks.csv") as fh:
        rows = list(csv.DictReader(fh))
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4))
    # series that coincide (several schedules keep the sink's share at 1) are drawn with their own marker
    # and dash pattern, largest marker first, so each stays visible; the legend says which coincide
    styles = [("o", 7, "-"), ("s", 6, "--"), ("^", 5, "-."), ("D", 4, ":"), ("v", 4, "-"), ("x", 5, "--")]
    cols = ("sink_share", "max_logit", "frac_positive")
    curves = {}
    for sk, (label, _) in SCHEDULES.items():
        sel = sorted((r for r in rows if r["schedule"] == sk), key=lambda r: int(r["n"]))
        if sel:
            curves[sk] = (label, [int(r["n"]) for r in sel], {c: [float(r[c]) for r in sel] for c in cols})
    same = {sk: [o for o in curves if o != sk and curves[o][2]["sink_share"] == v[2]["sink_share"]]
            for sk, v in curves.items()}
    for i, (sk, (label, n, ys)) in enumerate(curves.items()):
        marker, ms, ls = styles[i % len(styles)]
        note = f" (= {', '.join(curves[o][0] for o in same[sk])})" if same[sk] else ""
        for ax, col in zip(axes, cols, strict=True):
            ax.plot(n, ys[col], marker=marker, ms=ms, ls=ls, mfc="none", color=figstyle.color(sk),
                    label=label + (note if col == "sink_share" else ""))
    titles = ("the sink's attention share", "largest ordinary-key logit per query",
              "positive key-query logits")
    ylabels = ("mean attention share of key 0", "logit (mean over queries)", "fraction of all key-query logits")
    for ax, t, yl in zip(axes, titles, ylabels, strict=True):
        ax.axvline(TRAIN_LEN, color="k", lw=0.8, label=f"training length L = {TRAIN_LEN}")
        ax.set_xscale("log", base=2)
        ax.set_title(t)
        ax.set_ylabel(yl)
        ax.set_xlabel("length n (tokens)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[1].axhline(0, color="gray", lw=0.6)
    fig.suptitle("Sink tokens on a synthetic head: opposed key/query clusters, small-norm sink at position 0")
    return save_figures(fig, [out_dir / "sinks.png", out_dir / "sinks.pdf"])


def print_summary(out_dir: pathlib.Path) -> None:
    meta = read_json_file("--out", out_dir / "sinks.json", saved=True)
    print(f"\nSink mechanism (L = {meta['train_len']}, head {meta['head']}, mean key-query cosine "
          f"{meta['mean_key_query_cosine']:.3f})")
    print(f"{'schedule':24s} {'share@L':>8s} {'share@max':>9s} {'retained':>8s} {'maxlogit@L':>10s} "
          f"{'maxlogit@max':>12s} {'pos@max':>8s}")
    for sk, s in meta["summary"].items():
        print(
            f"{meta['schedules'][sk]:24s} {s['share_at_L']:8.4f} {s['share_at_max']:9.4f} "
            f"{'-' if s['retained_fraction'] is None else format(s['retained_fraction'], '.2%'):>8s} "
            f"{s['max_logit_at_L']:10.3f} {s['max_logit_at_max']:12.3f} "
            f"{s['frac_positive_at_max']:8.2e}"
        )


def main(argv=None) -> int:
    ap = study_parser("ropetheory sinks", __doc__)
    ap.add_argument("--max-log2", type=int, default=16, help="longest length 2^K (16 -> 65536)")
    ap.add_argument("--min-log2", type=int, default=8, help="shortest length simulated, as log2(n)")
    args = parse_study_args(ap, argv)
    with device_scope(args.device):
        out = pathlib.Path(args.out)
        if not args.plot_only:
            if not (1 <= args.min_log2 <= args.max_log2 <= 40):
                raise BadValue(f"need 1 <= --min-log2 <= --max-log2 <= 40, got {args.min_log2}, {args.max_log2}")
            t0 = time.time()
            run(out, [2 ** k for k in range(args.min_log2, args.max_log2 + 1)], quiet=args.quiet, resume=not args.fresh)
            print(f"computed in {time.time() - t0:.1f} s")
        print_summary(out)
        for p in plot(out):
            print(f"wrote {p}")
        return 0


if __name__ == "__main__":
    sys.exit(main())
