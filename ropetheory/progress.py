"""Progress bars: on stderr, and only where stderr is a terminal (a redirected log gets none) and the
command was not given ``--quiet``. Imports nothing of the package."""
from __future__ import annotations

import sys
from typing import Any


def progress(iterable: Any = None, *, quiet: bool = False, **kw: Any) -> Any:
    """``tqdm(iterable, **kw)`` on stderr, disabled when ``quiet`` or when stderr is not a terminal."""
    from tqdm import tqdm
    return tqdm(iterable, file=sys.stderr, disable=bool(quiet) or not sys.stderr.isatty(), **kw)
