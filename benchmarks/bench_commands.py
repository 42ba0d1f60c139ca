"""Commands as users wait for them: each command's wall time against the bare start-up of the engine
(``python -c "import jax, jax.numpy as jnp; jnp.zeros(1).block_until_ready()"``) in the same run.

Second runs with warm caches (the persistent compilation cache and, for ``report``, its saved result),
median of ``--repeat`` runs each; writes ``docs/benchmarks/commands_<machine>.json`` with the ratios.

    python benchmarks/bench_commands.py --repeat 3
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

BARE = [sys.executable, "-c", "import jax, jax.numpy as jnp; jnp.zeros(1).block_until_ready()"]
#: the issue's targets, as ratios to the bare start-up
TARGETS = {"--help": 1.2, "schedule": 1.2, "curve": 1.5, "report (first)": 5.0, "report (rerun)": 1.5}


def timed(cmd: list[str], cwd: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default="docs/benchmarks")
    args = ap.parse_args(argv)
    rt = [sys.executable, "-m", "ropetheory"]
    work = tempfile.mkdtemp(prefix="bench-commands-")
    cmds = {"--help": rt + ["--help"], "schedule": rt + ["schedule"], "curve": rt + ["curve"],
            "report (rerun)": rt + ["report", "gpt-neox-20b", "--out", "rep", "--quiet"]}
    timed(cmds["curve"], work)                                    # warm the compilation cache
    first = timed(rt + ["report", "gpt-neox-20b", "--out", "rep", "--quiet", "--fresh"], work)
    res = {"machine": f"{platform.node()} ({os.cpu_count()} CPUs)", "python": platform.python_version(),
           "repeat": args.repeat, "seconds": {}, "ratio_to_bare": {}, "target": TARGETS}
    bare = statistics.median(timed(BARE, work) for _ in range(args.repeat))
    res["seconds"]["bare jax start-up"] = bare
    res["seconds"]["report (first)"] = first
    for name, cmd in cmds.items():
        res["seconds"][name] = statistics.median(timed(cmd, work) for _ in range(args.repeat))
    for name in TARGETS:
        res["ratio_to_bare"][name] = res["seconds"][name] / bare
        print(f"{name:16s} {res['seconds'][name]:6.2f} s  {res['ratio_to_bare'][name]:5.2f}x bare "
              f"(target {TARGETS[name]}x)")
    print(f"{'bare start-up':16s} {bare:6.2f} s")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "commands_cpu.json").write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
