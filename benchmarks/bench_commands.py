"""Commands as users wait for them: each command's wall time against the bare start-up of the engine
(``python -c "import jax, jax.numpy as jnp; jnp.zeros(1).block_until_ready()"``) in the same run.

Warm caches (the persistent compilation cache, and for ``report (rerun)`` its saved result): every command
runs once before the timed rounds. Each round times the bare start-up and every command once, in turn, so a
change in the machine's load reaches all of them alike; the medians over ``--repeat`` rounds are kept, with
the CPU time (user + system) each run took. ``--baseline DIR`` times a second checkout's ``ropetheory`` in
the same rounds (e.g. ``git worktree add /tmp/before <rev>``): before/after ratios under one load.
Writes ``docs/benchmarks/bench_commands_<--name>.json``.

    python benchmarks/bench_commands.py --repeat 5 --baseline /tmp/before
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
BARE = [sys.executable, "-c", "import jax, jax.numpy as jnp; jnp.zeros(1).block_until_ready()"]
#: the report the issue times (#39 item 5)
REPORT_SOURCE = "llama-3.1-8b"
#: the issue's targets, as ratios to the bare start-up
TARGETS = {"--help": 1.2, "schedule": 1.2, "curve": 1.5, "report (first)": 4.0, "report (rerun)": 1.5}


def commands(source: str) -> dict[str, list[str]]:
    rt = [sys.executable, "-m", "ropetheory"]
    report = rt + ["report", source, "--out", "rep", "--quiet"]
    return {"--help": rt + ["--help"], "schedule": rt + ["schedule"], "curve": rt + ["curve"],
            "report (first)": report + ["--fresh"], "report (rerun)": report}


def timed(cmd: list[str], cwd: str, tree: pathlib.Path | None) -> tuple[float, float]:
    """Wall and CPU seconds (user + system) of one run of ``cmd`` in ``cwd``, importing ``ropetheory`` from
    the checkout ``tree`` (None: the bare start-up, which imports no package of ours)."""
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(tree)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--source", default=REPORT_SOURCE, help="the report's source")
    ap.add_argument("--baseline", default=None, help="another checkout, timed in the same rounds")
    ap.add_argument("--name", default="cpu", help="the machine, in the file name")
    ap.add_argument("--note", default="", help="what the machine was doing meanwhile")
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks"))
    args = ap.parse_args(argv)
    cmds = commands(args.source)
    trees = {"this": ROOT} | ({"baseline": pathlib.Path(args.baseline).resolve()} if args.baseline else {})
    work = {name: tempfile.mkdtemp(prefix=f"bench-commands-{name}-") for name in trees}
    for name, tree in trees.items():                       # warm the compilation cache, save the report
        for cmd in cmds.values():
            timed(cmd, work[name], tree)
    runs: dict[str, dict[str, list[tuple[float, float]]]] = {name: {c: [] for c in cmds} for name in trees}
    bare: list[tuple[float, float]] = []
    load = [os.getloadavg()[0]]
    for _ in range(args.repeat):
        bare.append(timed(BARE, work["this"], None))
        for name, tree in trees.items():
            for c, cmd in cmds.items():
                runs[name][c].append(timed(cmd, work[name], tree))
    load.append(os.getloadavg()[0])
    import jax
    b = statistics.median(w for w, _ in bare)
    res: dict = {"machine": f"{platform.node()} ({os.cpu_count()} CPUs, {platform.machine()})",
                 "python": platform.python_version(), "jax": jax.__version__, "repeat": args.repeat,
                 "note": args.note, "load_average_1min": {"start": load[0], "end": load[1]}, "source": args.source,
                 "bare_start_up_s": b, "bare_start_up_cpu_s": statistics.median(c for _, c in bare), "target": TARGETS}
    for name in trees:
        sec = {c: statistics.median(w for w, _ in r) for c, r in runs[name].items()}
        res[name] = {"seconds": sec, "ratio_to_bare": {c: s / b for c, s in sec.items()},
                     "cpu_seconds": {c: statistics.median(u for _, u in r) for c, r in runs[name].items()},
                     "all_seconds": {c: [w for w, _ in r] for c, r in runs[name].items()}}
    if args.baseline:
        res["baseline"]["tree"] = str(trees["baseline"])
        res["speedup_over_baseline"] = {c: res["baseline"]["seconds"][c] / res["this"]["seconds"][c] for c in cmds}
    print(f"{'bare start-up':16s} {b:6.2f} s")
    for c in cmds:
        line = f"{c:16s} {res['this']['seconds'][c]:6.2f} s  {res['this']['ratio_to_bare'][c]:5.2f}x bare"
        if args.baseline:
            line += f"  (baseline {res['baseline']['seconds'][c]:6.2f} s, {res['baseline']['ratio_to_bare'][c]:5.2f}x)"
        print(line + f"  target {TARGETS[c]}x")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"bench_commands_{args.name}.json").write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
