"""The flags every command shares, with one meaning each: ``--out`` (the folder results are written to,
as they are computed), ``--fresh`` (ignore saved results and recompute), ``--quiet`` (no progress bars),
``--plot-only`` (redraw the figures from the saved numbers, compute nothing) and ``--device`` (where it
computes: ``auto`` keeps JAX's default backend, ``cpu`` or ``gpu`` pick the first device of that platform
for the command only, through ``device_scope``).

Imports nothing of the package: the studies and the real-model commands both build their parsers here.
"""
from __future__ import annotations

import argparse
import contextlib
from typing import Any
from collections.abc import Iterable, Iterator
from .core.errors import BadValue

__all__ = ["study_parser", "parse_study_args", "device_scope", "one_blas_thread", "SHARED_FLAGS", "HelpFormatter",
           "plain_help", "int_list", "parse_known_or_refuse"]

#: the flags a study may share; each means the same in every command
SHARED_FLAGS = ("fresh", "quiet", "plot-only", "device")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The command's whole description as written (paragraphs kept) and each option's default shown
    where it has one worth saying (not for on/off flags, not where the help already names it)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = plain_help(action.help)
        if "default" in text or any(action.default is v for v in (None, False, True, argparse.SUPPRESS)) \
                or not action.option_strings:
            return text
        if isinstance(action.default, (list, tuple)):       # as it is typed: 128,80, not (128, 80)
            shown = ",".join(map(str, action.default)).replace("%", "%%")
            return f"{text} (default: {shown})"
        return f"{text} (default: %(default)s)"


def plain_help(doc: str | None) -> str:
    """A module docstring (or an option's help) as help text: reST literals (backticks), roles and bold
    dropped."""
    import re
    text = (doc or "").strip()
    text = re.sub(r":(?:func|mod|data|class|meth|attr):`~?([^`]+)`", r"\1", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"\1", text)          # markdown/reST bold
    return text.replace("``", "").replace("`", "")


def int_list(flag: str):
    """An argparse type: a comma-separated list of positive integers, refused naming ``flag``."""
    def parse(text: str) -> tuple[int, ...]:
        items = text.split(",")
        if not text.strip() or any(not x.strip().isdigit() or int(x) < 1 for x in items):
            raise argparse.ArgumentTypeError(f"{flag} must be comma-separated positive integers (8,16), got {text!r}")
        return tuple(int(x) for x in items)
    return parse


def study_parser(prog: str, doc: str | None, *, out: str = "results",
                 flags: Iterable[str] = SHARED_FLAGS) -> argparse.ArgumentParser:
    """An argument parser with ``--out`` and the shared ``flags`` (see the module docstring)."""
    flags = tuple(flags)
    unknown = set(flags) - set(SHARED_FLAGS)
    if unknown:
        raise BadValue(f"flags must be among {SHARED_FLAGS}, got {sorted(unknown)}")
    ap = argparse.ArgumentParser(prog=prog, description=plain_help(doc), formatter_class=HelpFormatter)
    ap.add_argument(
        "--out", default=out, help="output folder; results are written as they are computed"
    )
    if "fresh" in flags:
        ap.add_argument("--fresh", action="store_true", help="ignore saved results and recompute everything")
    if "quiet" in flags:
        ap.add_argument("--quiet", action="store_true", help="no progress bars")
    if "plot-only" in flags:
        ap.add_argument("--plot-only", action="store_true", help="redraw the figures from the saved numbers only")
    if "device" in flags:
        ap.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto",
                        help="where JAX computes (auto: JAX's default backend)")
    return ap


#: how close (difflib ratio) an unknown flag must be to a known one to be suggested
SUGGEST_CUTOFF = 0.6


def parse_known_or_refuse(ap: argparse.ArgumentParser, argv: Any = None,
                          command: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """``ap.parse_args(argv)``, but an unknown argument is refused by ``command`` (the parser of the command
    it follows, so the usage shown is that command's), with the closest known flag suggested."""
    import difflib
    args, extras = ap.parse_known_args(argv)
    if extras:
        command = command or ap
        known = [o for a in command._actions for o in a.option_strings]
        hints = []
        for x in extras:
            close = difflib.get_close_matches(x.split("=")[0], known, n=1, cutoff=SUGGEST_CUTOFF)
            hints.append(f"{x} (did you mean {close[0]}?)" if close and x.startswith("-") else x)
        command.error(f"unrecognized arguments: {' '.join(hints)}")
    return args


def parse_study_args(ap: argparse.ArgumentParser, argv: Any = None) -> argparse.Namespace:
    """Parse ``argv``; the command then runs inside ``device_scope(args.device)``."""
    return parse_known_or_refuse(ap, argv)


@contextlib.contextmanager
def device_scope(device: str = "auto") -> Iterator[None]:
    """``--device`` for the block (the command): JAX's default device is the first device of that platform
    inside it and what it was before after it (``jax.default_device``); ``auto`` changes nothing. The
    kernels' backend-dependent choices follow it (``ropetheory.core.devices.compute_platform``)."""
    if device == "auto":
        yield
        return
    import jax
    try:
        chosen = jax.devices(device)[0]
    except RuntimeError as e:
        raise BadValue(f"--device {device}: no such JAX device here ({e})") from None
    with jax.default_device(chosen):
        yield


def one_blas_thread(enabled: bool = True, *, lapack: bool = True) -> contextlib.AbstractContextManager[None]:
    """``ropetheory.core.devices.one_blas_thread`` (OpenBLAS on one thread for the block), imported when a
    command computes, not when its flags are parsed (that module imports JAX)."""
    from .core.devices import one_blas_thread as limit
    return limit(enabled, lapack=lapack)
