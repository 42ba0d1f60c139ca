"""Names renamed between releases: a keyword argument (``renamed``) or a dataclass field (``renamed_fields``).
The old name still works for a release, with a ``DeprecationWarning`` naming the new one; giving both is
refused. Imports only ``.errors``."""
from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

from .errors import BadType

__all__ = ["renamed", "renamed_fields"]

F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C", bound=type)


def _new_keywords(owner: str, since: str, old_to_new: dict[str, str], kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with each old keyword given as its new name and a ``DeprecationWarning`` for each, pointing
    at the line that wrote the old name (two frames up); both names at once: ``BadType``."""
    for old, new in old_to_new.items():
        if old not in kwargs:
            continue
        if new in kwargs:
            raise BadType(f"{owner}: {old}= is the old name of {new}=; give {new}= only")
        warnings.warn(f"{owner}: {old}= is now {new}= (renamed in {since})", DeprecationWarning, stacklevel=3)
        kwargs[new] = kwargs.pop(old)
    return kwargs


def renamed(since: str, **old_to_new: str) -> Callable[[F], F]:
    """Decorate a function whose keyword ``old`` is now ``new`` (``renamed("0.3.0", chunk="positions_per_step")``).

    A call with ``old=`` runs as if it said ``new=`` and warns; a call with both raises ``BadType``.
    """
    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return fn(*args, **_new_keywords(fn.__name__, since, old_to_new, kwargs))
        return wrapper  # type: ignore[return-value]
    return decorate


def _deprecated_alias(owner: str, old: str, new: str, since: str) -> property:
    """A read-only property ``old`` that warns and reads the field ``new``."""
    def read(self: Any) -> Any:
        warnings.warn(f"{owner}.{old} is now {owner}.{new} (renamed in {since})", DeprecationWarning, stacklevel=2)
        return getattr(self, new)
    return property(read, doc=f"Deprecated since {since}: ``{new}``.")


def renamed_fields(since: str, **old_to_new: str) -> Callable[[C], C]:
    """Decorate a dataclass (above ``@dataclass``) whose field ``old`` is now ``new``
    (``renamed_fields("0.3.1", a="intercept")``): ``obj.old`` is a read-only alias of ``obj.new`` and
    ``Cls(old=...)`` builds ``Cls(new=...)``, each with a ``DeprecationWarning``; both keywords: ``BadType``."""
    def decorate(cls: C) -> C:
        init = cls.__init__  # type: ignore[misc]

        @functools.wraps(init)
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            init(self, *args, **_new_keywords(cls.__name__, since, old_to_new, kwargs))
        cls.__init__ = __init__  # type: ignore[misc]
        for old, new in old_to_new.items():
            setattr(cls, old, _deprecated_alias(cls.__name__, old, new, since))
        return cls
    return decorate
