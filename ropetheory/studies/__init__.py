"""Studies: each computes numbers from the public API, saves them, and draws figures from the saved files.

Modules: ``.verify`` (Lemma 1, Lemma 2, Theorem 1), ``.figure7`` (Figure 7 and the criteria
table), ``.sinks`` (sink-token simulation), ``.extension`` (context-extension methods),
``.sweep`` (sharded parameter sweeps), ``.beyond`` (beyond rank 1, inversions),
``.base_bound`` (Men et al.'s certified table), ``.report`` (``ropetheory report``, with
``.report_sources`` and ``.report_html``). A study module has a compute function that
saves numbers as it goes (resumable), ``plot(out_dir)`` (figures from saved numbers only) and
``main(argv)`` (its command-line parser). It may import anything of the package except
``ropetheory.cli``; nothing below it imports a study.
"""
