"""The report's page: the per-schedule figure and the self-contained HTML (figures embedded),
drawn from the report's saved numbers only."""
from __future__ import annotations

import base64
import html
import io
import pathlib

import numpy as np

from .. import figstyle
from ..store import atomic_open, write_csv, write_json


def plot_schedule(sec: dict, L: int) -> bytes:
    import matplotlib
    from matplotlib.figure import Figure
    with matplotlib.rc_context({"font.size": 8}):      # scoped: no global style change
        fig = Figure(figsize=(11, 3.2))
        a, b, c = fig.subplots(1, 3)
        H = sec["horizon"]
        fr = sec["frequencies"]["rows"]
        a.semilogy([r["plane"] for r in fr if r["wavelength"]], [r["wavelength"] for r in fr if r["wavelength"]], ".",
                   label="wavelength 2π/θ_j")
        a.axhline(H, color="k", ls="--", label=f"horizon H = {H}")
        a.set_xlabel("plane j")
        a.set_ylabel("wavelength (tokens)")
        a.set_title("frequencies")
        a.legend(fontsize=7)
        f = sec["fsv"]
        g = np.array(f["grid"], dtype=float)
        b.fill_between(g, f["q05"], f["q95"], alpha=0.3, label="5–95% of clouds")
        b.plot(g, f["median"], label="median cloud")
        same = abs(f["floor"] - f["allrot_floor"]) <= 1e-3 * f["allrot_floor"]
        b.axhline(f["allrot_floor"], color="r", ls="--", lw=2.2, alpha=0.6,
                  label=f"all-rotating floor {f['allrot_floor']:.3f}" + (" (= the floor)" if same else ""))
        b.axhline(f["floor"], color="g", ls=":", lw=1.2, label=f"floor {f['floor']:.3f}")
        b.axvline(L, color="k", ls="--", label=f"training length L = {L}")
        if H != L:
            b.axvline(H, color="gray", ls="--", label=f"window {H}")
        b.set_xscale("log")
        b.set_xlabel("length n (tokens)")
        b.set_ylabel("FSV ratio ρ_n")
        b.set_title("rank-1 clouds under RoPE")
        b.legend(fontsize=6, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.3))   # below: the L line shows
        dr = sec["drift"]
        xs = [r["s"] for r in dr]
        if all(r["drift_ratio_own"] is not None for r in dr):
            c.plot(xs, [r["drift_ratio_own"] for r in dr], "o-", label="own scaling")
            c.plot(xs, [r["drift_ratio_unscaled"] for r in dr], "s--", label="unscaled")
            c.axhline(1, color="k", lw=0.8, label="training drift")
            c.set_yscale("log")
            c.set_ylabel("max low-frequency drift at sL / at L")
        else:
            c.text(0.5, 0.5, "no plane slower than one cycle in L", ha="center", transform=c.transAxes)
        c.set_xlabel("extension factor s (evaluated at sL)")
        c.set_title("drift past L")
        c.legend(fontsize=7)
        fig.suptitle(f"{sec['name']} ({sec['rope_type']}, d = {sec['head_dim']})")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=figstyle.PNG_DPI, bbox_inches="tight")   # keeps the legend below
    return buf.getvalue()


#: the report's table headers as a reader reads them (the keys stay in report.json and the CSVs)
HEADERS = {
    "s": "extension s", "eval_len": "length sL", "low_freq_planes": "low-frequency planes",
    "drift_ratio_own": "drift at sL / at L (own scaling)", "within_training": "within training",
    "drift_ratio_unscaled": "drift at sL / at L (unscaled)", "rho_L": "ρ at L", "rho_sL": "ρ at sL",
    "M": "distances M", "p_position_inversion": "P(position inversion)", "se_position": "± std. error",
    "p_token_inversion": "P(token inversion)", "se_token": "± std. error", "m_max": "m up to",
    "min_B": "min B(m)", "argmin_m": "at m", "holds": "B(m) ≥ 0 for every m", "negative_m": "m with B(m) < 0",
    "smallest_feasible_base": "smallest feasible base (certified)", "n": "length n",
    "rho_measured": "ρ measured (median head)", "rho_rank1_prediction": "ρ rank-1 prediction",
    "max_abs_error": "largest |measured − predicted|", "heads_with_sink": "heads with a sink",
    "sink_share": "sink share (median head)",
}


def _table(rows: list[dict], cols: list[str]) -> str:
    head = "".join(f"<th>{html.escape(HEADERS.get(c, c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def parameters_text(sec: dict) -> str:
    """The parameters that shaped a schedule's frequencies, on one line (``rope_theta`` named as the base,
    an assumed default marked)."""
    names = {"rope_theta": "base rope_theta", "original_max_position_embeddings": "original L"}
    assumed = sec.get("assumed", {})
    return ", ".join(f"{names.get(k, k)} {_plain(v)}" + (" (ASSUMED)" if k in assumed else "")
                     for k, v in sec["parameters"].items())


def _plain(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def assumed_lines(sec: dict) -> list[str]:
    """One line per default a schedule took because its config or spec left a key out."""
    return [f"{k} = {_plain(a['value'])} assumed: {a['note']}" for k, a in sec.get("assumed", {}).items()]


def _parameters_html(sec: dict) -> str:
    assumed = sec.get("assumed", {})
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_plain(v))}"
                   f"{' (assumed)' if k in assumed else ''}</td></tr>" for k, v in sec["parameters"].items())
    warn = "".join(f'<p class="assumed"><strong>Default assumed</strong>: {html.escape(line)}</p>'
                   for line in assumed_lines(sec))
    return (f'<section id="parameters"><h3>Parameters that shaped the frequencies</h3>{warn}'
            f"<table>{rows}</table></section>")


def _heading_html(sec: dict) -> str:
    """A schedule's heading: its name, rope type, head width and the layers that use it."""
    return (f"<h2>{html.escape(sec['name'])}: {html.escape(sec['rope_type'])}, d = {sec['head_dim']}, "
            f"layers {html.escape(str(sec['layers']))}</h2>")


def _verdict_html(sec: dict) -> str:
    """The verdict's lines as a list."""
    return ('<section id="verdict"><h3>Verdict</h3><ul>'
            + "".join(f"<li>{html.escape(v)}</li>" for v in sec["verdict"]) + "</ul></section>")


def _figure_html(sec: dict, png: bytes) -> str:
    """The schedule's figure, embedded as a base64 PNG."""
    return (f'<img alt="figures for {html.escape(sec["name"])}" src="data:image/png;base64,'
            f'{base64.b64encode(png).decode()}">')


def _frequencies_html(sec: dict) -> str:
    """The horizon H, the attention factor and how many planes complete 0, 1, 2+ cycles within H."""
    fq = sec["frequencies"]
    return ('<section id="frequencies"><h3>Frequencies against the horizon</h3>'
            f"<p>horizon H = {sec['horizon']} ({sec['horizon_is']}); attention factor {sec['attention_factor']:.4g}; "
            f"{fq['planes']} planes: {fq['nope_planes']} NoPE, {fq['cycles_lt1']} complete less than one cycle "
            f"within H, {fq['cycles_1']} one, {fq['cycles_2plus']} two or more; longest wavelength "
            f"{_fmt(fq['longest_wavelength'])} tokens.</p></section>")


#: the FSV table's columns: header -> key of the report's ``fsv`` section
FSV_COLUMNS = {"floor (median)": "floor", "all-rotating floor": "allrot_floor", "rho at H": "rho_H",
               "above floor at H": "rel_dist_H", "reach (median, tokens)": "reach_median",
               "grid step (x)": "reach_resolution", "C1": "C1", "C2": "C2", "C1 share": "C1_share",
               "C2 share": "C2_share"}


def _fsv_html(sec: dict) -> str:
    """The floor, the FSV ratio at H, the reach and criteria C1 (floor margin) and C2 (distance at H)."""
    f = sec["fsv"]
    return ('<section id="fsv"><h3>FSV ratio, floor, C1 and C2 (Lemma 1, Theorem 1, Section 4)</h3>'
            + _table([{c: f[k] for c, k in FSV_COLUMNS.items()}], list(FSV_COLUMNS))
            + f"<p>C1: floor above the all-rotating floor by {100 * f['C1_MARGIN']:.0f}%; C2: within "
            f"{100 * f['C2_RTOL']:.0f}% of the floor at H.</p></section>")


def _drift_html(sec: dict) -> str:
    """Per extension factor s, the low-frequency drift at sL over the drift at L, and rho at L and sL."""
    cols = ["s", "eval_len", "low_freq_planes", "drift_ratio_own", "within_training", "drift_ratio_unscaled",
            "rho_L", "rho_sL"]
    return '<section id="drift"><h3>Drift past L (Section 5)</h3>' + _table(sec["drift"], cols) + "</section>"


def _inversions_html(sec: dict) -> str:
    """P(position inversion) and P(token inversion) at each distance M, with standard errors."""
    inv = [dict(v) for k, v in sec["inversions"].items() if k.startswith("M=")]
    return ('<section id="inversions"><h3>Position and token inversions (second paper)</h3>'
            + _table(inv, ["M", "p_position_inversion", "se_position", "p_token_inversion", "se_token"])
            + f"<p>exact over every distance; mean over {sec['inversions']['pairs']} random (q, k) pairs.</p>"
            + "</section>")


def _men_html(sec: dict) -> str:
    """Men et al.'s ``B(m) >= 0`` up to H, and the smallest feasible base."""
    return ('<section id="men"><h3>Men et al.: B(m) ≥ 0 up to H</h3>'
            + _table([sec["men"]], ["m_max", "min_B", "argmin_m", "holds", "negative_m", "smallest_feasible_base"])
            + "</section>")


def _measured_html(sec: dict) -> str:
    """A real model's measured FSV ratios against the rank-1 prediction (empty for a schedule alone)."""
    if "measured" not in sec:
        return ""
    me = sec["measured"]
    return ('<section id="measured"><h3>The real model, measured (keys before/after RoPE)</h3>'
            f"<p>{me['heads']} key heads, {me['tokens']} tokens"
            f"{' (4-bit quantised weights)' if me['quantised'] else ''}; median rank-1 floor "
            f"{_fmt(me['predicted_floor'])}, rank-1-plus-noise limit {_fmt(me['noisy_limit'])}; heads meeting "
            f"C1 {me['C1_heads']}, C2 {me['C2_heads']}.</p>"
            + _table(me["rows"], ["n", "rho_measured", "rho_rank1_prediction", "max_abs_error", "heads_with_sink",
                                  "sink_share"])
            + "</section>")


#: a schedule's sections after its figure, in page order
SECTIONS = (_frequencies_html, _fsv_html, _drift_html, _inversions_html, _men_html, _measured_html)
#: the page's style sheet
STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
         "td,th{border:1px solid #ccc;padding:2px 6px;font-size:12px}img{max-width:100%}"
         ".assumed{background:#fff3cd;border-left:4px solid #e0a800;padding:4px 8px}")


def _schedule_html(sec: dict, png: bytes) -> str:
    """One schedule's part of the page: heading, parameters, verdict, figure, then each of ``SECTIONS``."""
    return "".join([_heading_html(sec), _parameters_html(sec), _verdict_html(sec), _figure_html(sec, png),
                    *(section(sec) for section in SECTIONS)])


def render_html(rep: dict, pngs: list[bytes]) -> str:
    """The self-contained report page: the source, L and the clouds, then each schedule with its figure."""
    intro = (f"<h1>ropetheory report: {html.escape(rep['label'])}</h1>"
             f"<p>source <code>{html.escape(rep['source'])}</code>; training length L = {rep['train_len']} "
             f"(from {html.escape(rep['train_len_from'])}); {rep['n_clouds']} random unit rank-1 clouds per "
             f"schedule; computed in {rep['seconds']:.1f} s.</p>")
    body = intro + "".join(_schedule_html(sec, png) for sec, png in zip(rep["schedules"], pngs, strict=False))
    return f"<!doctype html><html><head><meta charset='utf-8'><title>ropetheory report</title>" \
           f"<style>{STYLE}</style></head><body>{body}</body></html>"


def write(rep: dict, out: pathlib.Path) -> pathlib.Path:
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "report.json", rep)
    write_csv(
        out / "planes.csv", [{"schedule": s["name"], **r} for s in rep["schedules"] for r in s["frequencies"]["rows"]]
    )
    write_csv(
        out / "curves.csv",
        [
            {"schedule": s["name"], "n": n, "q05": a, "median": m, "q95": b}
            for s in rep["schedules"]
            for n, a, m, b in zip(s["fsv"]["grid"], s["fsv"]["q05"], s["fsv"]["median"], s["fsv"]["q95"], strict=False)
        ],
    )
    write_csv(out / "drift.csv", [{"schedule": s["name"], **r} for s in rep["schedules"] for r in s["drift"]])
    pngs = [plot_schedule(s, rep["train_len"]) for s in rep["schedules"]]
    for s, png in zip(rep["schedules"], pngs, strict=False):
        with atomic_open(out / f"report_{str(s['name']).replace(' ', '_')}.png") as fh:
            fh.write(png)
    page = out / "report.html"
    with atomic_open(page, "w") as fh:
        fh.write(render_html(rep, pngs))
    return page
