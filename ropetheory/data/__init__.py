"""Data the installed commands read, shipped in the wheel and read through ``importlib.resources``
(never from the repository's folders): the certified base-bound table (``base_bound.csv``, the
committed output of ``ropetheory basebound``, also drawn in ``docs/figures/``), the committed real-model
analyses (``analyses/<model>/analysis.json``) and the fixture configs of seven RoPE families
(``configs/<name>.json``, written from their published values; the same files as ``examples/configs/``).
A test checks that each file here is byte-identical to its copy in ``docs/`` or ``examples/``.

Imports nothing of the package.
"""
from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING

if TYPE_CHECKING:                      # annotations only: importlib.abc.Traversable is gone in Python 3.14
    from importlib.resources.abc import Traversable

__all__ = ["base_table", "analysis", "fixture_config", "fixture_configs"]


def _root() -> Traversable:
    return resources.files(__name__)


def base_table() -> Traversable:
    """The certified smallest-base table (d = 128), as ``ropetheory basebound`` wrote it."""
    return _root() / "base_bound.csv"


def analysis(label: str) -> Traversable | None:
    """The committed ``analysis.json`` of a packaged model, or None if there is none."""
    p = _root() / "analyses" / label / "analysis.json"
    return p if p.is_file() else None


def fixture_configs() -> dict[str, Traversable]:
    """Name -> config file of every packaged fixture config."""
    folder = _root() / "configs"
    return {p.name[:-5]: p for p in sorted(folder.iterdir(), key=lambda p: p.name) if p.name.endswith(".json")}


def fixture_config(name: str) -> Traversable | None:
    """The packaged fixture config called ``name`` (``llama-2-7b``), or None."""
    return fixture_configs().get(name)
