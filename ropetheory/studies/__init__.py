"""Studies: each computes numbers from the public API, saves them, and draws figures from the saved files.

Holds :mod:`ropetheory.studies.base_bound` (``ropetheory basebound``). A study module has
``run(...)`` (compute and save, resumable), ``plot(out_dir)`` (figures from saved numbers only)
and ``main(argv)`` (its command-line parser). It may import any public name of the package; no
other module imports a study. (The older studies still sit at the top level of the package.)
"""
