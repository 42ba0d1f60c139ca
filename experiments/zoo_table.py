"""The zoo table of README.md and docs/guide/audit.md, as markdown, from the CSV ``ropetheory audit --zoo``
writes (one row per bug: its sources, the class expected and diagnosed, and per dtype the first position
over the floor).

    ropetheory audit --zoo --out results/audit && cp results/audit/zoo/zoo.csv docs/audit/zoo.csv
    python experiments/zoo_table.py docs/audit/zoo.csv            # the guide's table
    python experiments/zoo_table.py docs/audit/zoo.csv --short    # README's: first source, no controls
"""
from __future__ import annotations

import csv
import sys

SHORT = {"float64": "f64", "float32": "f32", "bfloat16": "bf16", "float16": "f16"}


def table(path: str, short: bool = False) -> list[str]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    bugs: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        bugs.setdefault(r["bug"], []).append(r)
    if short:
        out = ["| bug | source | diagnosed as | first position over the floor |", "|---|---|---|---|"]
        for name, rs in bugs.items():
            if rs[0]["expected"] != "correct":
                first = ", ".join(f"{SHORT[r['dtype']]} {r['first_over_floor']}" for r in rs)
                kind = f" ({rs[0]['kind']})" if rs[0]["kind"] else ""
                out.append(f"| {name} | {rs[0]['source'].split('; ')[0]} | {rs[0]['diagnosed']}{kind} | {first} |")
        return out
    out = ["| bug | source | expected | diagnosed | first position over the floor | caught |",
           "|---|---|---|---|---|---|"]
    for name, rs in bugs.items():
        kinds = sorted({f"{r['diagnosed']}" + (f" ({r['kind']})" if r["kind"] else "") for r in rs})
        first = ", ".join(f"{SHORT[r['dtype']]} {r['first_over_floor'] or 'never'}" for r in rs)
        caught = "yes" if all(r["caught"] == "True" for r in rs) else "NO"
        out.append(f"| {name} | {r_source(rs[0])} | {rs[0]['expected']} | {'; '.join(kinds)} | {first} | {caught} |")
    return out


def r_source(r: dict[str, str]) -> str:
    return r["source"].replace("; ", ", ")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--short"]
    print("\n".join(table(args[0] if args else "docs/audit/zoo.csv", short="--short" in sys.argv)))
