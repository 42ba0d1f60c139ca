"""What every study's command line shares: the same flags with the same meaning, and figure saving.

``--out`` (the folder results are written to, as they are computed), ``--fresh`` (ignore saved
results and recompute), ``--quiet`` (no progress bars), ``--plot-only`` (redraw the figures from
the saved numbers, compute nothing) and ``--device`` (where JAX computes: ``auto`` keeps JAX's
default backend, ``cpu`` or ``gpu`` pick the first device of that platform).
"""
from __future__ import annotations

import pathlib
from typing import Any

from ..flags import SHARED_FLAGS, parse_study_args, study_parser  # noqa: F401  (every study's parser)

__all__ = ["study_parser", "parse_study_args", "save_figure", "SHARED_FLAGS"]

def save_figure(fig: Any, path: pathlib.Path, *, dpi: int = 80) -> pathlib.Path:
    """Lay out, write and close a matplotlib figure; returns ``path``."""
    import matplotlib.pyplot as plt
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return pathlib.Path(path)
