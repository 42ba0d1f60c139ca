"""What every study's command line shares: the flags (one meaning each; defined in
``ropetheory.flags``, re-exported here) and figure saving."""
from __future__ import annotations

from .. import figstyle
from ..flags import SHARED_FLAGS, device_scope, int_list, one_blas_thread, parse_study_args, study_parser  # noqa: F401

__all__ = ["study_parser", "parse_study_args", "device_scope", "one_blas_thread", "save_figure", "save_figures",
           "SHARED_FLAGS", "int_list"]


save_figures, save_figure = figstyle.save_figures, figstyle.save_figure
