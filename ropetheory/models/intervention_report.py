"""The causal test of issue #36.3 read off the interventions of one model (``.interventions``): a table, a
figure and a verdict on whether the sink's breakdown past ``L`` causes the model's failure there.

For a loss range ``r`` past ``L`` the unchanged model's *excess* is ``e_r = nll_r - nll_in``, the mean
next-token loss in ``r`` minus the one within ``L`` (nats). An intervention *rescues* when it removes at
least ``RESCUE_FRACTION`` of the excess in every range past ``L``: ``(nll_r - nll'_r) / e_r >=
RESCUE_FRACTION``. It *costs within L* when it raises the loss within ``L`` by ``COST_NATS`` or more.

The thesis (the sink's breakdown is the failure) holds when restoring the sink's log-odds
(``hold-sink-odds``, b) rescues, breaking the sink within ``L`` (``sink-to-mean`` or ``sink-at-4L``, d)
costs, and the control (``clamp-control``, e) does neither. When putting every pair in distribution
(``clamp-all`` or ``clamp-slow``, c) rescues and (b) does not, the sink is a casualty, not the cause.
Anything else is undecided, with the reason. A model whose excess is below ``COST_NATS`` everywhere past
``L`` has no failure to explain on that text.

The excess compares different tokens (those past ``L`` with those within it), so harder or easier text
later on moves it. Where the ``window`` intervention (key 0 and the last ``L - 1`` keys, every logit in
distribution) ran on the same tokens, the report adds per range ``r`` past ``L`` the *length excess*
``x_r = nll_r - nll^window_r``, what the long context costs over an in-distribution one on the same tokens,
and for each intervention the fraction of it removed, ``(nll_r - nll'_r) / x_r`` (``None`` where
``x_r < COST_NATS``); the unchanged model *fails relative to the reference* when ``x_r >= COST_NATS`` in
some range. Beside the verdict the report gives the *reference verdict*: the same rule with the length
excess in place of the excess (an intervention rescues when it removes at least ``RESCUE_FRACTION`` of
``x_r`` in every range where ``x_r >= COST_NATS``; no failure when ``x_r < COST_NATS`` everywhere), which
text that is harder or easier past ``L`` does not move. The verdict itself stays the rule above.
"""
from __future__ import annotations

import json
import pathlib
from typing import Any

import numpy as np

from ..core.errors import BadValue

__all__ = ["RESCUE_FRACTION", "COST_NATS", "load_results", "verdict", "length_excess", "summary_rows",
           "write_summary"]

#: a rescue removes at least half of the excess loss past L: more than any partial fix leaves, so "rescues"
#: means most of the failure is gone, not that the loss moved
RESCUE_FRACTION = 0.5
#: 0.05 nats = 5% perplexity: a change within L a user notices, and above the few 1e-3 nats by which runs of
#: the same tokens differ with the attention computed in float64 (the control's measured change)
COST_NATS = 0.05
#: the interventions of each role in the verdict (module docstring)
RESTORE, BREAK, CONTROL, ALL_PAIRS = "hold-sink-odds", ("sink-to-mean", "sink-at-4L"), "clamp-control", \
    ("clamp-all", "clamp-slow")
#: the in-distribution reference of the length excess (module docstring)
REFERENCE = "window"
#: a fixed colour per intervention, the same in every model's figure
COLORS = {"unchanged": "black", "clamp-sink": "tab:blue", "hold-sink-odds": "tab:green", "clamp-all": "tab:purple",
          "clamp-slow": "tab:pink", "sink-to-mean": "tab:red", "sink-at-4L": "tab:orange",
          "clamp-control": "tab:gray", "window": "tab:brown"}


def load_results(base: str | pathlib.Path, ids_sha256: str | None = None) -> dict[str, dict[str, Any]]:
    """``{intervention: result}`` from ``<base>/intervention-*/intervention.json`` measured on the token ids
    ``ids_sha256`` (default: those of the newest file) with the newest file's ``L``; results on other
    tokens or with another ``L`` are left out."""
    files = sorted(pathlib.Path(base).glob("intervention-*/intervention.json"), key=lambda p: p.stat().st_mtime)
    ordered = [json.loads(f.read_text()) for f in files]                  # oldest first
    if not ordered:
        raise BadValue(f"no intervention results under {str(base)!r}")
    sha = ids_sha256 or ordered[-1]["meta"]["text"]["ids_sha256"]
    same = [r for r in ordered if r["meta"]["text"]["ids_sha256"] == sha]
    if not same:
        raise BadValue(f"no intervention results under {str(base)!r} on token ids {sha[:16]}...")
    L = same[-1]["train_len"]
    return {r["intervention"]: r for r in sorted(same, key=lambda r: r["intervention"]) if r["train_len"] == L}


def _ranges(r: dict[str, Any], run: str) -> list[dict[str, Any]]:
    return r["runs"][run]["nll_ranges"]


def _past(r: dict[str, Any], run: str) -> list[dict[str, Any]]:
    """``run``'s loss ranges past ``L``."""
    return [a for a in _ranges(r, run) if a["start"] >= r["train_len"]]


def _effects(r: dict[str, Any]) -> dict[str, Any]:
    """Within-L cost (nats) and, per range past L, the fraction of the unchanged excess removed."""
    L = r["train_len"]
    u, v = _ranges(r, "unchanged"), _ranges(r, "intervened")
    within = [(a, b) for a, b in zip(u, v, strict=True) if a["end"] <= L]
    past = list(zip(_past(r, "unchanged"), _past(r, "intervened"), strict=True))
    if not within or not past:
        raise BadValue(f"{r['intervention']}: need loss ranges within and past L = {L}, got "
                       f"{[(a['start'], a['end']) for a in u]}")
    base = within[0][0]["mean_nll"]
    excess = [a["mean_nll"] - base for a, _ in past]
    frac = [(a["mean_nll"] - b["mean_nll"]) / e if e >= COST_NATS else None for (a, b), e in zip(past, excess,
                                                                                                strict=True)]
    return {"cost_within_L": within[0][1]["mean_nll"] - base, "excess": excess, "rescued_fraction": frac,
            "fails_past_L": any(e >= COST_NATS for e in excess)}


def length_excess(results: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The length excess of the unchanged model over the ``window`` reference per range past L (module
    docstring), and per intervention the fraction of it removed; ``None`` without a ``window`` result."""
    ref = results.get(REFERENCE)
    if ref is None:
        return None
    past = _past(ref, "unchanged")
    spans = [[a["start"], a["end"]] for a in past]
    nats = [a["mean_nll"] - b["mean_nll"] for a, b in zip(past, _past(ref, "intervened"), strict=True)]
    removed = {}
    for k, r in results.items():
        u, v = _past(r, "unchanged"), _past(r, "intervened")
        if [[a["start"], a["end"]] for a in u] != spans:
            raise BadValue(f"{k}: loss ranges past L {[[a['start'], a['end']] for a in u]} are not those of the "
                           f"{REFERENCE} reference, {spans}")
        removed[k] = [(a["mean_nll"] - b["mean_nll"]) / x if x >= COST_NATS else None
                      for a, b, x in zip(u, v, nats, strict=True)]
    return {"reference": REFERENCE, "ranges": spans, "nats": nats,
            "fails_vs_reference": any(x >= COST_NATS for x in nats), "removed": removed}


def _rescues(fractions: list[float | None]) -> bool:
    """At least ``RESCUE_FRACTION`` removed in every range with an excess to remove (fraction not None)."""
    fr = [f for f in fractions if f is not None]
    return bool(fr) and min(fr) >= RESCUE_FRACTION


def _costs(e: dict[str, Any]) -> bool:
    return e["cost_within_L"] >= COST_NATS


def verdict(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The module docstring's verdict, with each test's outcome and the interventions it lacks."""
    eff = {k: _effects(r) for k, r in results.items()}
    missing = [k for k in (RESTORE, *BREAK, CONTROL, *ALL_PAIRS) if k not in eff]
    tests = {k: {"rescues": _rescues(e["rescued_fraction"]), "costs_within_L": _costs(e), **e} for k, e in eff.items()}
    out: dict[str, Any] = {"tests": tests, "missing": missing, "rescue_fraction": RESCUE_FRACTION,
                           "cost_nats": COST_NATS}
    if (x := length_excess(results)) is not None:                 # beside the verdict, not part of its rule
        for k, f in x.pop("removed").items():
            tests[k]["length_excess_removed"] = f
        out["length_excess"] = x
    fails = not eff or any(e["fails_past_L"] for e in eff.values())        # nothing measured: incomplete
    out.update(_decide(tests, missing, {k: t["rescues"] for k, t in tests.items()}, fails, "its loss within L"))
    if x is not None:
        rescues = {k: _rescues(t["length_excess_removed"]) for k, t in tests.items()}
        x.update(_decide(tests, missing, rescues, x["fails_vs_reference"],
                         f"the {REFERENCE} reference's loss on the same tokens"))
    return out


def _decide(tests: dict[str, dict[str, Any]], missing: list[str], rescues: dict[str, bool], fails: bool,
            baseline: str) -> dict[str, str]:
    """The module docstring's rule: ``{"verdict", "why"}`` from which interventions rescue (``rescues``),
    the costs within L in ``tests``, and whether the unchanged model fails past L over ``baseline``."""
    if not fails:
        return {"verdict": "no failure", "why": f"the unchanged model's loss past L exceeds {baseline} by less "
                                                f"than {COST_NATS} nats: nothing to rescue on this text"}
    if missing:
        return {"verdict": "incomplete", "why": f"not measured: {', '.join(missing)}"}
    b = rescues[RESTORE]
    d = [k for k in BREAK if tests[k]["costs_within_L"]]
    e_clean = not (rescues[CONTROL] or tests[CONTROL]["costs_within_L"])
    c = [k for k in ALL_PAIRS if rescues[k]]
    if b and d and e_clean:
        return {"verdict": "cause", "why": f"restoring the sink's log-odds rescues past L, breaking the sink costs "
                                           f"within L ({', '.join(d)}), the control does neither"}
    if c and not b:
        return {"verdict": "casualty", "why": f"every pair in distribution ({', '.join(c)}) rescues past L, "
                                              f"restoring the sink's log-odds does not: the sink breaks with the "
                                              f"failure, it does not cause it"}
    return {"verdict": "undecided", "why": f"restore rescues: {b}; breaking costs within L: {d or 'none'}; "
                                           f"control clean: {e_clean}; all pairs rescue: {c or 'none'}"}


def _share(r: dict[str, Any], run: str, n: int) -> float | None:
    grid, med = r["grid"], r["runs"][run]["median"]["share"]
    return med[grid.index(n)] if n in grid else None


def summary_rows(results: dict[str, dict[str, Any]], v: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One row per intervention: perplexity per range (unchanged, intervened), the verdict's numbers, and
    the median sink share at ``L, 2L, 4L`` of both runs. ``v``: ``verdict(results)``, computed here if not
    given (``write_summary`` passes the one it writes)."""
    v = verdict(results) if v is None else v
    rows = []
    x = v.get("length_excess")
    for k, r in results.items():
        e, L = v["tests"][k], r["train_len"]
        row: dict[str, Any] = {"intervention": k, "n": r["n"], "train_len": L,
                               "cost_within_L_nats": e["cost_within_L"]}
        for a, b in zip(_ranges(r, "unchanged"), _ranges(r, "intervened"), strict=True):
            tag = f"{a['start']}_{a['end']}"
            row[f"ppl_{tag}_unchanged"], row[f"ppl_{tag}_intervened"] = a["ppl"], b["ppl"]
        for a, f in zip(_past(r, "unchanged"), e["rescued_fraction"], strict=True):
            row[f"rescued_{a['start']}_{a['end']}"] = f
        if x is not None:
            for (s, t), nats, f in zip(x["ranges"], x["nats"], e["length_excess_removed"], strict=True):
                row[f"length_excess_{s}_{t}_nats"], row[f"length_excess_removed_{s}_{t}"] = nats, f
        for m in (1, 2, 4):
            for run in ("unchanged", "intervened"):
                row[f"share_{m}L_{run}"] = _share(r, run, m * L)
        rows.append(row)
    return rows


def _plot(results: dict[str, dict[str, Any]], path: pathlib.Path, title: str) -> list[pathlib.Path]:
    import matplotlib.pyplot as plt
    from .. import figstyle
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    first = next(iter(results.values()))
    L = first["train_len"]
    runs = [("unchanged", _ranges(first, "unchanged"))] + [(k, _ranges(r, "intervened")) for k, r in results.items()]
    for name, rr in runs:
        x = [np.sqrt(max(a["start"], 1) * a["end"]) for a in rr]
        ax.plot(x, [a["ppl"] for a in rr], "o-" if name != "unchanged" else "s-", color=COLORS.get(name, "tab:olive"),
                lw=2.2 if name == "unchanged" else 1.3, label=name)
    ax.axvline(L, color="0.4", ls="--", lw=1)
    ax.text(L, ax.get_ylim()[1], " L", va="top", fontsize=9)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("position range (tokens; point at the range's geometric middle)")
    ax.set_ylabel("perplexity (per token)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return figstyle.save_figures(fig, [path.with_suffix(".png"), path.with_suffix(".svg")])


def write_summary(base: str | pathlib.Path, ids_sha256: str | None = None) -> dict[str, Any]:
    """``<base>/interventions.csv``, ``verdict.json``, ``verdict.md`` and ``interventions.png/svg`` from the
    results on one set of tokens (``load_results``). Returns the verdict."""
    from ..store import write_csv, write_json
    base = pathlib.Path(base)
    results = load_results(base, ids_sha256)
    first = next(iter(results.values()))
    v = verdict(results)
    v["meta"] = {**first["meta"], "n": first["n"], "train_len": first["train_len"],
                 "interventions": list(results)}
    write_csv(base / "interventions.csv", summary_rows(results, v))
    write_json(base / "verdict.json", v)
    text = first["meta"]["text"]
    lines = [f"# {first['meta']['model']}: does the sink's breakdown cause the failure past L?", "",
             f"n = {first['n']} tokens, L = {first['train_len']}, text: {text['source']} (sha256 "
             f"{text['sha256'][:16]}, token ids {text['ids_sha256'][:16]})", "",
             f"**Verdict: {v['verdict']}**: {v['why']}.", ""]
    x = v.get("length_excess")
    if x is not None:
        lines += [f"Length excess over the windowed reference (unchanged minus {x['reference']} on the same tokens, "
                  f"nats): " + ", ".join(f"[{s}, {t}) {n:+.3f}" for (s, t), n in zip(x["ranges"], x["nats"],
                                                                                   strict=True))
                  + (f": the unchanged model fails relative to the reference (>= {COST_NATS} nats in some range)."
                     if x["fails_vs_reference"] else f": the unchanged model does not fail relative to the "
                                                      f"reference (< {COST_NATS} nats in every range)."), "",
                  f"**Reference verdict (the same rule on the length excess): {x['verdict']}**: {x['why']}.", ""]
    extra = ("", "") if x is None else (" length excess removed past L |", "---|")
    lines += ["| intervention | within-L cost (nats) | excess removed past L |" + extra[0] + " rescues | "
              "costs within L | median sink share at L, 2L, 4L |", "|---|---|---|" + extra[1] + "---|---|---|"]

    def shares(r: dict[str, Any], run: str) -> str:
        return ", ".join("-" if (x := _share(r, run, m * r["train_len"])) is None else f"{x:.2g}" for m in (1, 2, 4))
    def fractions(fs: list[float | None]) -> str:
        return ", ".join("-" if f is None else f"{f:.2f}" for f in fs)
    lines.append(f"| (unchanged) | | |{'' if x is None else ' |'} | | {shares(first, 'unchanged')} |")
    for k, t in v["tests"].items():
        le = "" if x is None else f" {fractions(t['length_excess_removed'])} |"
        lines.append(f"| {k} | {t['cost_within_L']:+.3f} | {fractions(t['rescued_fraction'])} |{le} {t['rescues']} | "
                     f"{t['costs_within_L']} | {shares(results[k], 'intervened')} |")
    lines += ["", f"Rescue: at least {RESCUE_FRACTION} of the excess loss past L removed in every range; cost: "
                  f"within-L loss up by at least {COST_NATS} nats (ropetheory.models.intervention_report)."]
    if x is not None:
        lines.append(f"Length excess removed: the fraction of the unchanged model's loss above the {x['reference']} "
                     f"reference's, on the same tokens, that the intervention removes (- where that excess is "
                     f"below {COST_NATS} nats); it is reported beside the verdict, not part of its rule.")
    (base / "verdict.md").write_text("\n".join(lines) + "\n")
    _plot(results, base / "interventions", f"{first['meta']['model']}: perplexity per range, unchanged and "
                                           f"each intervention (L = {first['train_len']})")
    return v
