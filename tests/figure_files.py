"""``no_figure_files``: run a command's plotting without laying out or rendering its figure files, where a
test compares numbers only and another test renders the same figures."""
from __future__ import annotations

import contextlib
import os


@contextlib.contextmanager
def no_figure_files():
    """``Figure.savefig`` to a path writes nothing inside the block (to a file object it writes as
    usual) and ``Figure.tight_layout`` does nothing (it places the axes of the files that are not
    written): the figures are drawn, their PNG and PDF files are neither laid out nor rendered."""
    from matplotlib.figure import Figure
    real, real_layout = Figure.savefig, Figure.tight_layout

    def savefig(self, fname, *args, **kwargs):
        if not isinstance(fname, (str, os.PathLike)):
            return real(self, fname, *args, **kwargs)

    def tight_layout(self, *args, **kwargs):
        return None
    Figure.savefig, Figure.tight_layout = savefig, tight_layout
    try:
        yield
    finally:
        Figure.savefig, Figure.tight_layout = real, real_layout
