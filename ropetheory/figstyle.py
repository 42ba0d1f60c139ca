"""One style for every figure the package draws: one colour per schedule (the same in every figure),
readable font sizes, and each figure written as a 160-dpi PNG and a vector PDF beside it.

Colours and display names come from ``ropetheory.schedules.names`` (pure Python, the one table of
schedule names); matplotlib is imported only when a figure is saved.
"""
from __future__ import annotations

import pathlib
from collections.abc import Iterable
from typing import Any

from .schedules import names

__all__ = ["SCHEDULE_COLORS", "color", "RC", "PNG_DPI", "save_figures", "save_figure"]

#: PNG resolution of every figure (a reviewer's minimum is 150)
PNG_DPI = 160
#: one colour per canonical schedule (``ropetheory.schedules.names``), and per variant label
SCHEDULE_COLORS = {**names.COLORS, **names.VARIANT_COLORS}
_FALLBACK = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink",
             "tab:gray", "tab:olive", "tab:cyan")
#: font sizes and line widths every figure uses
RC: dict[str, Any] = {
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 8,
    "figure.titlesize": 11,
    "lines.linewidth": 1.5,
    "savefig.bbox": "tight",
}


def color(name: str) -> str:
    """The colour of schedule ``name`` in every figure: its variant label's colour (``rope_id+temp``),
    else its canonical schedule's (any alias); unknown names get a fixed colour chosen from their
    letters, so they too are the same in every figure."""
    key = names.normalise(name)
    if key in names.VARIANT_COLORS:
        return names.VARIANT_COLORS[key]
    key = names.ALIASES.get(key, key)
    if key in names.COLORS:
        return names.COLORS[key]
    return _FALLBACK[sum(map(ord, key)) % len(_FALLBACK)]


def save_figures(fig: Any, paths: Iterable[pathlib.Path], *, dpi: int = PNG_DPI) -> list[pathlib.Path]:
    """Lay out, write and close a figure: each PNG at ``dpi`` with a PDF beside it (added when the paths
    name none), in the package's font sizes."""
    import matplotlib.pyplot as plt
    out = [pathlib.Path(p) for p in paths]
    if not any(p.suffix in (".pdf", ".svg") for p in out):
        out += [p.with_suffix(".pdf") for p in out if p.suffix == ".png"]
    with plt.rc_context(RC):  # type: ignore[arg-type]  # matplotlib types the keys as a Literal
        for ax in fig.axes:                                   # sizes set before the figure was drawn win here
            for item in [ax.title, ax.xaxis.label, ax.yaxis.label]:
                item.set_fontsize(max(item.get_fontsize(), RC["axes.labelsize"] - 1))
        fig.tight_layout()
        for p in out:
            p.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(p, **({"dpi": max(dpi, 150)} if p.suffix == ".png" else {}))
    plt.close(fig)
    return out


def save_figure(fig: Any, path: pathlib.Path, *, dpi: int = PNG_DPI) -> pathlib.Path:
    """``save_figures`` for one PNG (its PDF is written beside it); returns ``path``."""
    return save_figures(fig, [path], dpi=dpi)[0]
