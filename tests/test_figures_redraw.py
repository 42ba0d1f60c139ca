"""The committed figures redrawn from their saved numbers under docs/ (issue #40): every legend clear of
the data it would hide, the axes labelled where a reader reads values, overlapping series told apart."""
from __future__ import annotations

import json
import pathlib
import shutil

import matplotlib
import pytest

matplotlib.use("Agg")

from ropetheory.studies import base_bound, extension, figure7, train_report  # noqa: E402

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"


@pytest.fixture
def captured(monkeypatch):
    """The figures a plot function saves (``save_figure`` / ``save_figures``), drawn so extents are known."""
    figs = []

    def keep(fig, *a, **k):
        fig.canvas.draw()
        figs.append(fig)
        return pathlib.Path("unused.png")

    def keep_all(fig, paths, **k):
        keep(fig)
        return list(paths)

    for mod in (base_bound, extension, train_report):
        monkeypatch.setattr(mod, "save_figure", keep)
    monkeypatch.setattr(figure7, "save_figures", keep_all)
    return figs


def _copy(names, tmp_path, folder="figures"):
    for n in names:
        shutil.copy(DOCS / folder / n, tmp_path / n)
    return tmp_path


def _below(ax) -> bool:
    """The axes' legend lies wholly below the axes (it hides nothing drawn in them)."""
    return ax.get_legend().get_window_extent().y1 <= ax.get_window_extent().y0


def test_base_bound_redraws_from_the_csvs_with_the_legend_below_every_bar(tmp_path, captured):
    base_bound.plot(_copy(["base_bound.csv", "base_bound_windows.csv"], tmp_path))
    (ax,) = captured[0].axes
    assert _below(ax) and len(ax.get_yticks()) == 9


def test_extension_drift_axis_is_labelled_across_its_range_and_its_legend_is_below(tmp_path, captured):
    extension.plot(_copy(["extension.json", "extension_curves.csv"], tmp_path))
    ax2 = captured[0].axes[1]
    labels = [t.get_text() for t in ax2.get_yticklabels() if t.get_text()]
    assert {"1", "1.5"} <= set(labels) and len(labels) >= 6
    assert _below(ax2)


def test_fig7_draws_rope_id_so_that_half_rope_shows_beneath_it(tmp_path, captured):
    figure7.plot(_copy(["fig7.json", "fig7.csv"], tmp_path))
    ax = captured[0].axes[0]
    style = {ln.get_label(): ln.get_linestyle() for ln in ax.get_lines()}
    assert style["half-RoPE (base 1e4)"] == "-" and style["RoPE-ID"] != "-"


def test_training_figures_keep_nope_apart_and_dodge_and_explain_their_error_bars(tmp_path, captured):
    out = _copy(["summary.json", "train_log.csv", "geometry_curves.csv"], tmp_path, folder="training")
    s = json.loads((out / "summary.json").read_text())
    s.update(train_report._write_derived(s, out))
    L, lengths = s["config"]["train_len"], s["evals"][0]["lengths"]
    ppl = train_report._plot_ppl(s, L, lengths)
    ppl.canvas.draw()
    left, right = ppl.axes
    assert "nope" not in [ln.get_label() for ln in left.get_lines()] and right.get_ylim()[1] > 1e4
    assert left.get_ylim()[1] < train_report.PPL_OWN_PANEL and _below(left)
    ret = train_report._plot_retrieval(s, L, lengths)
    ret.canvas.draw()
    (ax,) = ret.axes
    assert "± 1 sd over 3 seeds" in ax.get_ylabel() and _below(ax)
    firsts = {c.get_label(): c.lines[0].get_xdata()[0] for c in ax.containers}
    assert set(firsts) == {r["variant"] for r in s["table"]}
    assert len(set(firsts.values())) == len(firsts)                    # no two variants' bars at the same x
