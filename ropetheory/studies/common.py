"""What every study's command line shares: the flags (one meaning each; defined in
:mod:`ropetheory.flags`, re-exported here) and figure saving."""
from __future__ import annotations

import pathlib
from typing import Any
from collections.abc import Iterable

from ..flags import SHARED_FLAGS, parse_study_args, study_parser  # noqa: F401  (every study's parser)

__all__ = ["study_parser", "parse_study_args", "save_figure", "save_figures", "SHARED_FLAGS"]


def save_figures(fig: Any, paths: Iterable[pathlib.Path], *, dpi: int = 80) -> list[pathlib.Path]:
    """Lay out, write (PNG at ``dpi``, vector formats as they are) and close a matplotlib figure."""
    import matplotlib.pyplot as plt
    fig.tight_layout()
    out = [pathlib.Path(p) for p in paths]
    for p in out:
        fig.savefig(p, **({"dpi": dpi} if p.suffix == ".png" else {}))
    plt.close(fig)
    return out


def save_figure(fig: Any, path: pathlib.Path, *, dpi: int = 80) -> pathlib.Path:
    """Lay out, write and close a matplotlib figure; returns ``path``."""
    return save_figures(fig, [path], dpi=dpi)[0]
