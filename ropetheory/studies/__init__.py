"""Studies: each computes numbers from the public API, saves them, and draws figures from the saved files.

Modules: :mod:`.verify` (Lemma 1, Lemma 2, Theorem 1), :mod:`.figure7` (Figure 7 and the criteria
table), :mod:`.sinks` (sink-token simulation), :mod:`.extension` (context-extension methods),
:mod:`.sweep` (sharded parameter sweeps), :mod:`.beyond` (beyond rank 1, inversions),
:mod:`.base_bound` (Men et al.'s certified table), :mod:`.report` (``ropetheory report``, with
:mod:`.report_sources` and :mod:`.report_html`). A study module has a compute function that
saves numbers as it goes (resumable), ``plot(out_dir)`` (figures from saved numbers only) and
``main(argv)`` (its command-line parser). It may import anything of the package except
:mod:`ropetheory.cli`; nothing below it imports a study.
"""
