"""One vocabulary for every claim the package judges: ``holds``, ``does not hold``, ``partly``, ``not tested``.

``Verdict`` is a ``str`` (its value), so it reads back from JSON and CSV as the same word and compares
equal to it; ``Verdict.of(ok)`` turns a test's outcome into the word (None: not tested). Imports nothing.
"""
from __future__ import annotations

import enum

__all__ = ["Verdict"]


class Verdict(str, enum.Enum):
    """A claim's verdict."""

    HOLDS = "holds"
    DOES_NOT_HOLD = "does not hold"
    PARTLY = "partly"
    NOT_TESTED = "not tested"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @classmethod
    def of(cls, ok: bool | None) -> Verdict:
        """``holds`` for True, ``does not hold`` for False, ``not tested`` for None."""
        return cls.NOT_TESTED if ok is None else cls.HOLDS if ok else cls.DOES_NOT_HOLD
