"""Keyword arguments renamed between releases: the old name still works for a release, with a
``DeprecationWarning`` naming the new one; giving both is refused. Imports only ``.errors``."""
from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

from .errors import BadType

__all__ = ["renamed"]

F = TypeVar("F", bound=Callable[..., Any])


def renamed(since: str, **old_to_new: str) -> Callable[[F], F]:
    """Decorate a function whose keyword ``old`` is now ``new`` (``renamed("0.3.0", chunk="positions_per_step")``).

    A call with ``old=`` runs as if it said ``new=`` and warns; a call with both raises ``BadType``.
    """
    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for old, new in old_to_new.items():
                if old not in kwargs:
                    continue
                if new in kwargs:
                    raise BadType(f"{fn.__name__}: {old}= is the old name of {new}=; give {new}= only")
                warnings.warn(f"{fn.__name__}: {old}= is now {new}= (renamed in {since})", DeprecationWarning,
                              stacklevel=2)
                kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)
        return wrapper  # type: ignore[return-value]
    return decorate
