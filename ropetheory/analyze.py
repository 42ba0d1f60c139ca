"""``ropetheory analyze``: the paper's Figs. 2-6 diagnosis for a captured key dump, beside the theory.

Per layer and key head (from :mod:`ropetheory.capture`):
- ``pc1_var``: variance explained by the first principal direction of the pre-RoPE keys,
  ``sigma_1^2 / sum sigma^2`` (uncentred, the rank-1 view of the paper's Fig. 4 left);
- ``rho_n = ||K_post[:n]||_2 / ||K_pre[:n]||_2`` on a grid of prefix lengths (Fig. 4 middle) and the
  stable ranks before / after (Fig. 4 right);
- mean cosines key-key, query-query and key-query (Fig. 2), pre-RoPE;
- the sink key's norm over the median key norm and the sink's attention share vs length (Figs. 5, 6),
  from the captured post-RoPE queries and keys (causal softmax, query heads grouped onto key heads);
- the theory's prediction from the measured first singular vector ``v`` and the model's schedule:
  ``rho_n`` of the rank-1 cloud ``1 v^T`` at the same lengths, its floor ``sqrt(lambda)``, the length
  at which ``rho`` is within 1% of the floor, and C1 / C2 with ``L = original_max_position_embeddings``
  (else ``max_position_embeddings``).
Numbers go to ``<out>/analysis.csv`` / ``analysis.json`` first; ``analysis.png`` is drawn from them.
"""
from __future__ import annotations

import json
import math
import pathlib
import sys
from typing import Any

import numpy as np

from . import spectra, theorems
from .capture import load_dump, save_dump

C1_MARGIN, C2_RTOL = theorems.C1_MARGIN, theorems.C2_RTOL   # Section 4 criteria (ropetheory.theorems)


def hf_to_interleaved(v: np.ndarray, rotary_dim: int) -> np.ndarray:
    """Channels in transformers' order (rotate_half on the first ``rotary_dim``) -> ropetheory interleaved."""
    r = rotary_dim
    out = np.empty_like(v)
    out[0:r:2], out[1:r:2] = v[: r // 2], v[r // 2: r]
    out[r:] = v[r:]
    return out


def _cos_mean(A: np.ndarray, B: np.ndarray | None = None) -> float:
    An = A / np.maximum(np.linalg.norm(A, axis=-1, keepdims=True), 1e-30)
    if B is None:
        C = An @ An.T
        n = len(A)
        return float((C.sum() - np.trace(C)) / max(n * (n - 1), 1))
    Bn = B / np.maximum(np.linalg.norm(B, axis=-1, keepdims=True), 1e-30)
    return float((An @ Bn.T).mean())


def sink_share(q: np.ndarray, k: np.ndarray, lengths) -> list[float]:
    """Mean attention to position 0 of the queries at positions ``< n`` (causal softmax), per n."""
    d = q.shape[-1]
    logits = (q @ k.T) / math.sqrt(d)
    n = len(q)
    logits = np.where(np.tril(np.ones((n, n), dtype=bool)), logits, -np.inf)
    logits -= logits.max(axis=1, keepdims=True)
    w = np.exp(logits)
    share = w[:, 0] / w.sum(axis=1)
    return [float(share[:m].mean()) for m in lengths]


def analyze_dump(dump: dict, n_grid: int = 12) -> dict[str, Any]:
    meta = dump["meta"]
    Kp, Ko, Qp, Qo = dump["keys_pre"], dump["keys_post"], dump["queries_pre"], dump["queries_post"]
    layers, kv_heads, n, d = Kp.shape
    group = Qp.shape[1] // kv_heads
    theta = np.asarray(meta["theta"], dtype=np.float64)
    r = int(meta["rotary_dim"])
    cfg = meta.get("config", {}) or {}
    rp = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    L = int(cfg.get("original_max_position_embeddings") or rp.get("original_max_position_embeddings")
            or meta.get("max_position_embeddings") or n)
    grid = spectra.log_grid(n, n_grid) if n > 1 else np.array([1])
    far = spectra.log_grid(1e9, 90)
    rows = []
    for li in range(layers):
        for h in range(kv_heads):
            K0, K1 = Kp[li, h].astype(np.float64), Ko[li, h].astype(np.float64)
            s = np.linalg.svd(K0, compute_uv=False)
            _, _, Vt = np.linalg.svd(K0, full_matrices=False)
            v = hf_to_interleaved(Vt[0], r)
            meas = [spectra.matrix_metrics(K1[:m])["fsv"] / spectra.matrix_metrics(K0[:m])["fsv"] for m in grid]
            pred = spectra.rank1_curve(theta, v, grid)["rho"]
            lim = theorems.predicted_limit(theta, v)
            curve = spectra.rank1_curve(theta, v, far)["rho"]
            within = np.abs(curve - lim.rho) / lim.rho < C2_RTOL
            reach = int(far[np.argmax(within)]) if within.any() else None
            allrot = math.sqrt(float(lim.e.max()) / 2)
            qh = slice(h * group, (h + 1) * group)
            Qh0 = Qp[li, qh].reshape(-1, d).astype(np.float64)
            share = np.mean([sink_share(Qo[li, g].astype(np.float64), K1, grid) for g in range(h * group, (h + 1) * group)],
                            axis=0)
            norms = np.linalg.norm(K0, axis=1)
            rows.append({
                "layer": li, "kv_head": h, "pc1_var": float(s[0] ** 2 / np.sum(s ** 2)),
                "srank_pre": float(np.sum(s ** 2) / s[0] ** 2),
                "srank_post": spectra.matrix_metrics(K1)["srank"],
                "rho_measured": [float(x) for x in meas], "rho_predicted": [float(x) for x in pred],
                "rho_measured_at_n": float(meas[-1]), "rho_predicted_at_n": float(pred[-1]),
                "predicted_floor": lim.rho, "allrot_floor": allrot, "floor_reached_at": reach,
                "C1": bool(lim.rho > allrot * (1 + C1_MARGIN)), "C2": bool(reach is not None and reach <= L),
                "cos_kk": _cos_mean(K0), "cos_qq": _cos_mean(Qh0), "cos_kq": _cos_mean(K0, Qh0),
                "sink_key_norm_ratio": float(norms[0] / np.median(norms)),
                "sink_share": [float(x) for x in share],
            })
    return {"meta": {k: meta[k] for k in meta if k != "config"}, "train_len": L, "grid": grid.tolist(), "heads": rows}


def write_analysis(res: dict, out: pathlib.Path) -> None:
    from .store import write_csv, write_json
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "analysis.json", res)
    flat = [{k: v for k, v in r.items() if not isinstance(v, list)} for r in res["heads"]]
    write_csv(out / "analysis.csv", flat)


def plot(out: pathlib.Path) -> pathlib.Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    res = json.loads((out / "analysis.json").read_text())
    g = res["grid"]
    fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
    for r in res["heads"]:
        ax[0].plot(g, r["rho_measured"], color="tab:blue", alpha=0.5, lw=0.8)
        ax[0].plot(g, r["rho_predicted"], color="tab:red", alpha=0.5, lw=0.8, ls="--")
        ax[2].plot(g, r["sink_share"], alpha=0.6, lw=0.8)
    ax[0].set_xscale("log")
    ax[0].set_title("FSV ratio: measured (blue) vs rank-1 prediction (red)")
    ax[1].scatter([r["pc1_var"] for r in res["heads"]], [r["rho_measured_at_n"] for r in res["heads"]], s=10)
    ax[1].set_xlabel("variance explained by PC1 (pre-RoPE keys)")
    ax[1].set_title("FSV ratio at the full length")
    ax[2].set_xscale("log")
    ax[2].set_title("sink attention share vs length")
    fig.tight_layout()
    p = out / "analysis.png"
    fig.savefig(p, dpi=80)
    plt.close(fig)
    return p


def main(argv=None) -> int:
    import argparse
    ap = argparse.ArgumentParser(prog="ropetheory analyze", description=__doc__.split("\n")[0])
    ap.add_argument("dump", nargs="?", help="a key dump (.npz) written by capture")
    ap.add_argument("--model", help="a packaged model (see `ropetheory models`), a .gguf file or a checkpoint "
                                    "folder; loaded offline and analysed by streaming (ropetheory.models.study)")
    ap.add_argument("--text", help="a text file to run through the model (default: the licence texts in "
                                   "/usr/share/common-licenses)")
    ap.add_argument("--max-tokens", type=int, default=2048, help="tokens of text to analyse")
    ap.add_argument("--repeat-text", action="store_true", help="repeat the text if it is shorter than --max-tokens")
    ap.add_argument("--bos", action="store_true", help="prepend the tokenizer's BOS token")
    ap.add_argument("--train-len", type=int, default=None, help="training length L (default: from the config)")
    ap.add_argument("--chunk", type=int, default=2048, help="tokens per forward pass (KV cache between them)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--out", default="results/analysis")
    args = ap.parse_args(argv)
    out = pathlib.Path(args.out)
    if args.model:
        from .models import figures, study
        if args.max_tokens < 2 or args.chunk < 1:
            raise ValueError(f"--max-tokens must be >= 2 and --chunk >= 1, got {args.max_tokens}, {args.chunk}")
        res = study.run(args.model, out=out, n_tokens=args.max_tokens, text=args.text, bos=args.bos,
                        repeat_text=args.repeat_text, chunk=args.chunk, device=args.device, quiet=args.quiet,
                        train_len=args.train_len)
        d = out / res["meta"]["model"]
        paths = figures.plot_all(d)
        print(f"{res['meta']['model']}{' (4-bit quantised)' if res['meta']['quantised'] else ''}: "
              f"n = {res['n']} tokens, L = {res['train_len']}, first token {res['meta']['text']['first_token']!r}")
        for c in res["claims"]:
            print(f"  [{c['verdict']}] {c['claim']}: {c['number']}")
        print(f"wrote {d / 'analysis.json'}, heads.csv, claims.csv and {len(paths)} figures")
        return 0
    elif args.dump:
        dump = load_dump(args.dump)
    else:
        raise ValueError("give a key dump file, or --model DIR --text FILE")
    res = analyze_dump(dump)
    write_analysis(res, out)
    print(f"{'layer':>5s} {'head':>4s} {'pc1_var':>7s} {'rho_meas':>8s} {'rho_pred':>8s} {'floor':>6s} "
          f"{'reach':>9s} {'C1':>3s} {'C2':>3s} {'cos_kq':>7s} {'sink':>6s}")
    for r in res["heads"]:
        print(f"{r['layer']:5d} {r['kv_head']:4d} {r['pc1_var']:7.3f} {r['rho_measured_at_n']:8.4f} "
              f"{r['rho_predicted_at_n']:8.4f} {r['predicted_floor']:6.3f} {str(r['floor_reached_at']):>9s} "
              f"{'Y' if r['C1'] else 'N':>3s} {'Y' if r['C2'] else 'N':>3s} {r['cos_kq']:7.3f} {r['sink_share'][-1]:6.3f}")
    print(f"wrote {out / 'analysis.csv'}, {out / 'analysis.json'}, {plot(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
