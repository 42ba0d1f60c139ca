"""``ropetheory`` command line: report, verify, schedule, curve and the studies."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import sys
from collections.abc import Callable, Iterator

import numpy as np
from .core.errors import BadValue

from .core.devices import compilation_cache, compilation_cache_dir
from .store import recorded_stores


#: the one line a Ctrl-C prints: finished rows and parts are written as they complete
INTERRUPTED = ("ropetheory {cmd}: interrupted; finished rows and parts are kept in the output folder, "
               "run the same command again to resume")


def _schedule_table(theta: np.ndarray, attention_factor: float | None = None) -> str:
    """A readable table of planes: frequency, wavelength (tokens), NoPE marked."""
    lines = [f"{'plane':>5s} {'theta':>14s} {'wavelength':>14s}"]
    for j, t in enumerate(theta):
        lines.append(
            f"{j:5d} {t:14.6g} {2 * np.pi / t if t > 0 else float('inf'):14.6g}" + ("  NoPE" if t <= 0 else "")
        )
    if attention_factor is not None:
        lines.append(f"attention factor {attention_factor:.6g}")
    return "\n".join(lines)


def spec_with_defaults(text: str, *, head_dim: int | None = None, params: list[str] | None = None) -> dict:
    """A command-line schedule: ``ropetheory.schedules.parse_spec`` of ``text``, the ``--param``
    items and ``--head-dim`` merged in (a disagreement refused with both values), and
    ``DEFAULT_HEAD_DIM`` for a paper schedule that names no head width."""
    from .schedules import merge_spec, parse_spec, with_default_head_dim
    spec = parse_spec(text)
    extra = parse_spec("x:" + ",".join(params)) if params else {"name": "x"}
    extra.pop("name")
    return with_default_head_dim(merge_spec(spec, **extra, head_dim=head_dim))


def _cmd_schedule(args) -> int:
    from .schedules import schedule_from_spec
    if args.list:
        print(_schedule_list())
        return 0
    att = None
    if args.config:
        from .schedules.hf import frequencies_from_config
        sched = frequencies_from_config(args.config, seq_len=args.seq_len, layer_type=args.layer_type)
        for key, a in sched.assumed.items():
            print(f"ropetheory schedule: note: {key} = {a['value']} assumed: {a['note']}", file=sys.stderr)
        theta, att = sched.theta, sched.attention_factor
        out = sched.to_dict()
    else:
        if args.spec and args.name:
            raise BadValue(f"give the schedule once: SPEC {args.name!r} or --spec {args.spec!r}")
        spec = spec_with_defaults(args.spec or args.name or "rope", head_dim=args.head_dim, params=args.param)
        sched = schedule_from_spec(spec)
        theta = sched.theta
        out = {**sched.to_dict(), "spec": spec}
    out["wavelength"] = [2 * np.pi / t if t > 0 else None for t in np.asarray(theta, dtype=float)]
    if args.json or args.compact:
        from .store import check_finite_output, jsonable
        out = jsonable(out)
        check_finite_output(out, "schedule")
        print(json.dumps(out, indent=None if args.compact else 1, allow_nan=False))
    else:
        print(_schedule_table(np.asarray(theta, dtype=float), att))
    return 0


def _schedule_list() -> str:
    """Every schedule the package knows, with its parameters and their defaults."""
    import inspect
    from .schedules import ALIASES, DEFAULT_HEAD_DIM, SCHEDULES
    from .schedules.hf import ROPE_TYPES
    lines = ["paper schedules (SPEC: name:key=value,...; head_dim defaults to "
             f"{DEFAULT_HEAD_DIM} on the command line):"]
    for name, fn in SCHEDULES.items():
        ps = [f"{p.name}={p.default!r}" if p.default is not inspect.Parameter.empty else p.name
              for p in inspect.signature(fn).parameters.values()]
        aliases = sorted(a for a, k in ALIASES.items() if k == name)
        lines.append(f"  {name}({', '.join(ps)})" + (f"  aliases: {', '.join(aliases)}" if aliases else ""))
    lines.append("  theta(theta=[...])  an explicit frequency vector")
    lines.append("Hugging Face rope types (a config.json, a checkpoint folder, or a JSON rope dict with head_dim): "
                 + ", ".join(ROPE_TYPES))
    return "\n".join(lines)


#: how the ``curve`` command finds its top eigenvalues (``spectra.topeig.METHODS``)
CURVE_METHOD = "numpy"


def _cmd_curve(args) -> int:
    from . import __version__
    from .core.checks import check_seed
    from .flags import one_blas_thread
    from .schedules import schedule_from_spec
    from .spectra.gram import log_grid, rank1_curve
    from .spectra.topeig import default_method, unavailable_reason
    # numpy needs JAX's CPU backend for its callback; where JAX_PLATFORMS leaves it out, the default method
    method = CURVE_METHOD if unavailable_reason(CURVE_METHOD) is None else None
    spec = spec_with_defaults(args.spec)
    theta = schedule_from_spec(spec)
    v = np.random.default_rng(check_seed("seed", args.seed)).standard_normal(theta.head_dim)
    g = log_grid(args.n_max, args.num)
    meta = {"spec": spec, "seed": args.seed, "cloud": "v ~ N(0, I_d) from numpy default_rng(seed), X = 1 v^T",
            "n_max": args.n_max, "num": args.num, "top_eigenvalue_method": method or default_method(theta.head_dim)}
    certified = args.certified is not False              # absent: False; the flag alone: None; else RTOL
    if certified:
        from .core.checks import check_number
        from .theory.curve import CURVE_CERTIFIED_RTOL, certified_curve
        meta["certified_rtol"] = (CURVE_CERTIFIED_RTOL if args.certified is None else
                                  check_number("--certified", args.certified, lo=0.0, hi=1.0, lo_open=True,
                                               hi_open=True))
    with one_blas_thread(lapack=method != "numpy"):   # same bits, without OpenBLAS's threads spinning
        # one curve per process: numpy's eigvalsh on the host, with no LAPACK program to build (spectra.topeig's
        # numpy_top: 0.3 s less than building the default method's, which a single curve never earns back)
        c = (certified_curve(theta, v, g, rtol=meta["certified_rtol"], method=method) if certified
             else rank1_curve(theta, v, g, method=method))
        if args.format == "json" or args.sidecar:  # the limit is written only there: the CSV skips its programs
            from .theory.theorems import predicted_limit
            meta["limit"] = {"rho": (lim := predicted_limit(theta, v)).rho, "srank": lim.srank}
    meta["ropetheory_version"] = __version__
    rows = [{"n": int(n), "rho": float(r), "srank": float(s)}
            | ({"certified": bool(c["certified"][i]), "eps": float(c["eps"][i])} if certified else {})
            for i, (n, r, s) in enumerate(zip(c["n"], c["rho"], c["srank"], strict=True))]
    if args.format == "json":
        print(json.dumps({**meta, "rows": rows}, allow_nan=False))
    else:
        print("n,rho,srank" + (",certified" if certified else ""))
        for row in rows:
            cert = f",{int(row['certified'])}" if certified else ""
            print(f"{row['n']},{row['rho']:.12g},{row['srank']:.12g}{cert}")
    if args.sidecar:
        from .store import write_json
        write_json(args.sidecar, meta)
    return 0


SCHEDULE_HELP = """Print a schedule's frequencies theta_j (radians per position) and wavelengths 2 pi / theta_j, as
a table or JSON; NoPE planes (theta_j = 0) are marked and have no wavelength.

SPEC is the one schedule syntax every command reads: name or name:key=value,... (rope_id:train_len=4096),
a JSON spec, a JSON file, or a model config / checkpoint folder (any Hugging Face rope_type; --config
with --seq-len and --layer-type for length-dependent and per-layer-type rope parameters)."""

CURVE_HELP = """The FSV ratio rho_n = ||Rope(X_:n)||_2 / ||X_:n||_2 and stable rank of a random rank-1 cloud
X = 1 v^T (v ~ N(0, I_d) from --seed) on a log grid of lengths up to --n-max, from the closed form
(no n x d matrix): a plain CSV n,rho,srank on stdout, or JSON with the spec, seed, Theorem 1's limit
and the package version (--format json, or --sidecar FILE beside the CSV)."""

#: study commands (own parsers, each has -h): module and one-line description
STUDIES = {
    "verify": ("studies.verify",
               "check Lemma 1, Lemma 2, Theorem 1, the bounds and counter-examples (results/verify.*)"),
    "report": ("studies.report", "what a config's, model's or schedule's RoPE does past L, and why (HTML + JSON)"),
    "fig7": ("studies.figure7", "Figure 7: FSV decay of random clouds, criteria C1/C2, Table-5 ablations"),
    "sinks": ("studies.sinks", "sink-token simulation: the sink's attention share against length"),
    "extension": ("studies.extension",
                  "context-extension methods (PI, dynamic, YaRN, Llama 3, LongRoPE) vs the criteria"),
    "sweep": ("studies.sweep", "schedules x head dims x clouds x lengths x weights, sharded over devices"),
    "beyond": ("studies.beyond", "beyond rank 1, and the second paper's position/token inversions"),
    "basebound": ("studies.base_bound", "Men et al.'s smallest RoPE base, by a certified search"),
    "train": ("studies.train",
              "train small models with each schedule; does the geometry predict length generalization?"),
    "audit": ("studies.audit", "test a RoPE implementation (transformers, torchtune, ...) against the exact operator"),
    "analyze": ("models.analyze", "a real model (packaged, .gguf, checkpoint) or a key dump: the paper's Figs. 2-6"),
    "retrofit": ("models.retrofit_cli", "give a pretrained model RoPE-ID or another schedule, fine-tune, test past L"),
}


#: a package a command needs -> the extra that installs it
EXTRAS = {"torch": "models", "transformers": "models", "gguf": "models", "accelerate": "models",
          "sklearn": "models", "equinox": "train", "optax": "train", "rotary_embedding_torch": "audit",
          "x_transformers": "audit", "einops": "audit", "torchtune": "audit", "mkdocs": "docs"}


def _missing_extra(cmd: str, e: ImportError) -> int:
    """One line for a command whose optional dependency is not installed; exit code 2."""
    name = (getattr(e, "name", None) or "").split(".")[0]
    extra = EXTRAS.get(name)
    how = (f"pip install 'ropetheory[{extra}]'" if extra and name != "torchtune"
           else "pip install --no-deps torchtune==0.6.1" if name == "torchtune" else str(e))
    print(f"ropetheory {cmd}: error: this command needs {name or 'an optional package'}, which is not installed: "
          f"{how}", file=sys.stderr)
    return 2


#: where a bug is reported
BUG_REPORT = "please report it with the command line and this traceback"


def is_user_error(e: BaseException) -> bool:
    """Bad input: a typed boundary error (``ropetheory.core.checks.BadInput``) or a file the command could not
    open or write (an ``OSError`` naming its file). Anything else is a bug in the package."""
    from .core.checks import BadInput
    return isinstance(e, BadInput) or (isinstance(e, OSError) and not isinstance(e, BrokenPipeError)
                                       and e.filename is not None)


def _bug(cmd: str, e: BaseException) -> int:
    """The traceback and one line saying it is a bug; exit code 1."""
    import traceback
    from . import __version__
    traceback.print_exception(type(e), e, e.__traceback__, file=sys.stderr)
    print(f"ropetheory {cmd}: internal error ({type(e).__name__}): this is a bug in ropetheory {__version__}; "
          f"{BUG_REPORT}", file=sys.stderr)
    return 1
def as_typed(msg: str, argv: list[str]) -> str:
    """``msg`` with a parameter name the library uses (``n_max``) written as the flag the user typed
    (``--n-max``), where the message opens with it or names it before ``must``/``=``."""
    import re
    for flag in {a.split("=")[0] for a in argv if a.startswith("--")}:
        for name in (flag[2:].replace("-", "_"), *[k for k, v in FLAG_NAMES.items() if v == flag]):
            msg = re.sub(rf"(?<![\w'\"-]){re.escape(name)}(?= must| =| is|:)", flag, msg)
    return msg


#: library parameter names whose flag is not the name with dashes
FLAG_NAMES = {"n_clouds": "--clouds"}


def _user_error(cmd: str, e: BaseException, argv: list[str]) -> int:
    """One line on stderr for a user error (exit code 2), the traceback for a bug (exit code 1). A closed
    output pipe is neither (``main``)."""
    if isinstance(e, BrokenPipeError):
        raise e
    if not is_user_error(e):
        return _bug(cmd, e)
    if isinstance(e, OSError) and e.filename is not None:
        msg = f"{e.strerror or type(e).__name__}: {str(e.filename)!r}"
        if "--plot-only" in argv and isinstance(e, FileNotFoundError):
            msg += " (nothing saved there yet: run without --plot-only first)"
    else:
        msg = as_typed(str(e), argv)
    print(f"ropetheory {cmd}: error: {msg}", file=sys.stderr)
    return 2


def _report_stores(cmd: str, stores: list) -> None:
    """One line per store the command opened: what it kept from disk and what it computed."""
    for st in stores:
        print(f"ropetheory {cmd}: {st.describe()}", file=sys.stderr)


#: JAX preallocates 75% of a GPU's memory at its first allocation; a command allocates on demand instead (the
#: program's own default, set only where the user set none): ``fig7 --clouds 4096`` computed in 6.6-6.8 s
#: against 7.6-8.1 s with the preallocation, wall 11.1-11.9 s against 12.1-13.4 s (one H100, session 22)
PREALLOCATE_ENV = "XLA_PYTHON_CLIENT_PREALLOCATE"


def main(argv=None) -> int:
    """Run one command; a closed output pipe (``ropetheory schedule | head``) ends it quietly. Run as the
    program (``argv`` None), it allocates GPU memory on demand unless ``XLA_PYTHON_CLIENT_PREALLOCATE`` is
    set (``PREALLOCATE_ENV``); a call from Python leaves the process's settings alone."""
    if argv is None:
        os.environ.setdefault(PREALLOCATE_ENV, "false")
    try:
        rc = _main(argv)
        sys.stdout.flush()
        return rc
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)         # the reader is gone: no further writes, no traceback
        os.dup2(devnull, sys.stdout.fileno())
        return 0


#: set to 1 (or pass --no-cache) to run a command without the persistent compilation cache
NO_CACHE_ENV = "ROPETHEORY_NO_CACHE"
@contextlib.contextmanager
def one_line_warnings(cmd: str) -> Iterator[None]:
    """Inside the block, a warning the package raises (a contradictory config, a default taken) prints as one
    line ``ropetheory CMD: warning: ...``, not Python's two lines of file, line number and source; warnings
    from other libraries keep their own form, and code that records warnings still records them (only the
    printed form changes). The previous format is restored after."""
    import warnings
    root = str(pathlib.Path(__file__).parent)
    before = warnings.formatwarning

    def one_line(message, category, filename, lineno, line=None):
        if str(filename).startswith(root):
            return f"ropetheory {cmd}: warning: {message}\n"
        return before(message, category, filename, lineno, line)
    warnings.formatwarning = one_line
    try:
        yield
    finally:
        warnings.formatwarning = before


def _main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    enabled = "--no-cache" not in argv and os.environ.get(NO_CACHE_ENV, "") in ("", "0")
    with compilation_cache(enabled), recorded_stores() as stores, one_line_warnings(argv[0] if argv else ""):
        return _command([a for a in argv if a != "--no-cache"], stores)


def _run_reported(cmd: str, run: Callable[[], int], stores: list, argv: list[str]) -> int:
    """``run()``'s exit code, then one line per store it opened; a missing extra, bad input, a bug and Ctrl-C
    each end it with their own line and exit code (2, 2, 1, 130)."""
    try:
        rc = run()
        _report_stores(cmd, stores)
        return rc
    except ImportError as e:
        return _missing_extra(cmd, e)
    except Exception as e:                     # bad input: one line, exit 2; a bug: traceback, exit 1
        return _user_error(cmd, e, argv)
    except KeyboardInterrupt:
        _report_stores(cmd, stores)
        print(INTERRUPTED.format(cmd=cmd), file=sys.stderr)
        return 130


def _cmd_models(argv: list[str]) -> int:
    """``ropetheory models``: each packaged real model, installed or not, and where or how to install it."""
    from .models.registry import MODELS_HELP, models_listing
    print(MODELS_HELP if "-h" in argv or "--help" in argv else models_listing())
    return 0


def _own_parsers(sub) -> dict[str, argparse.ArgumentParser]:
    """The parsers of the commands ``_command`` parses itself (``schedule``, ``curve``), added to ``sub``."""
    from .flags import HelpFormatter
    s = sub.add_parser(
        "schedule", formatter_class=HelpFormatter, description=SCHEDULE_HELP,
        help="print a schedule's or a config's frequencies (table or JSON)")
    s.add_argument("name", nargs="?", default=None, metavar="SPEC",
                   help="the schedule: name[:key=value,...] (rope_id:train_len=4096), a JSON spec, or a JSON "
                        "file or checkpoint folder (default: rope); --list names them all")
    s.add_argument("--list", action="store_true", help="list every schedule with its parameters and defaults")
    s.add_argument("--head-dim", type=int, default=None, help="head width d")
    s.add_argument("--param", action="append", metavar="KEY=VALUE",
                   help="a schedule parameter (JSON value), repeatable; must agree with the spec")
    s.add_argument("--spec", help="the same as SPEC (give one of the two)")
    s.add_argument("--config", help="a model's config.json or checkpoint folder (Hugging Face rope_type)")
    s.add_argument("--seq-len", type=int, default=None, help="sequence length (dynamic, longrope)")
    s.add_argument("--layer-type", default=None, help="for per-layer-type rope parameters")
    s.add_argument("--json", action="store_true", help="print JSON (null wavelength for NoPE planes)")
    s.add_argument("--compact", action="store_true", help="one-line JSON")
    s.set_defaults(fn=_cmd_schedule)
    c = sub.add_parser(
        "curve", formatter_class=HelpFormatter, description=CURVE_HELP,
        help="FSV-ratio curve of a random rank-1 cloud (CSV on stdout)")
    c.add_argument("--spec", default="rope:head_dim=128", help="the schedule, in the syntax of 'schedule'")
    c.add_argument("--n-max", type=float, default=1e12, help="largest length n")
    c.add_argument("--num", type=int, default=200, help="number of log-spaced lengths")
    c.add_argument("--seed", type=int, default=0, help="seed of the random cloud vector v")
    c.add_argument("--format", choices=("csv", "json"), default="csv",
                   help="csv: a plain n,rho,srank table; json: the rows with the spec, seed, limit and version "
                        "(default: csv)")
    c.add_argument("--certified", nargs="?", type=float, const=None, default=False, metavar="RTOL",
                   help="answer each length where a certified bound pins rho_n^2 within RTOL (relative; default "
                        "1e-3, theory.curve.CURVE_CERTIFIED_RTOL) of Theorem 1's limit from the limit, computing "
                        "only the others; adds a column certified (1: from the limit; JSON: also eps, the bound)")
    c.add_argument("--sidecar", default=None, metavar="FILE",
                   help="also write the spec, seed, limit and package version to this JSON file")
    c.set_defaults(fn=_cmd_curve)
    return {"schedule": s, "curve": c}


def _parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction, dict[str, argparse.ArgumentParser]]:
    """The top-level parser listing every command, and ``_own_parsers``."""
    from .flags import HelpFormatter, plain_help
    p = argparse.ArgumentParser(prog="ropetheory", description=plain_help(__doc__), formatter_class=HelpFormatter,
                                epilog="each command has -h; results go to --out (default results/), "
                                       "finished parts are kept and a rerun resumes. Compiled programs are "
                                       f"kept in {compilation_cache_dir()} (--no-cache or {NO_CACHE_ENV}=1: "
                                       "not)")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    commands = _own_parsers(sub)
    for name, (_, desc) in STUDIES.items():           # listed here, parsed by the study's own parser
        sub.add_parser(name, help=desc, add_help=False)
    sub.add_parser("models", help="the packaged real models: installed or not, and how to install them")
    return p, sub, commands


def _refuse_unknown_command(p: argparse.ArgumentParser, choices: list[str], argv: list[str]) -> None:
    """Exit through ``p.error`` when the first word of ``argv`` is none of the ``choices``, naming the closest."""
    first = next((a for a in argv if not a.startswith("-")), None)
    if first is not None and first not in choices:
        import difflib
        close = difflib.get_close_matches(first, choices, n=1)
        p.error(f"unknown command {first!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                + f"; commands: {', '.join(choices)}")


def _command(argv: list[str], stores: list) -> int:
    """Dispatch ``argv``: ``--version``, a study (its own parser), ``models``, or ``schedule`` / ``curve``."""
    if argv[:1] in (["--version"], ["-V"]):
        from . import __version__
        print(f"ropetheory {__version__}")
        return 0
    if argv and argv[0] in STUDIES:
        import importlib
        mod = importlib.import_module(f"ropetheory.{STUDIES[argv[0]][0]}")
        return _run_reported(argv[0], lambda: mod.main(argv[1:]), stores, argv)
    if argv and argv[0] == "models":
        return _cmd_models(argv)
    from .flags import parse_known_or_refuse
    p, sub, commands = _parser()
    _refuse_unknown_command(p, list(sub.choices), argv)
    args = parse_known_or_refuse(p, argv, commands.get(next((a for a in argv if not a.startswith("-")), "")))
    return _run_reported(args.cmd, lambda: args.fn(args), stores, argv)


if __name__ == "__main__":
    sys.exit(main())
