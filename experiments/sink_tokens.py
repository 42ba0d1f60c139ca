"""The sink-token mechanism on a synthetic head (the paper's Figs. 1, 5, 6), per schedule and length.

Same as ``ropetheory sinks``; see ``ropetheory/studies/sinks.py`` for the head and the metrics.
    python experiments/sink_tokens.py [--max-log2 16] [--plot-only]
"""
import sys

from ropetheory.studies.sinks import main

if __name__ == "__main__":
    sys.exit(main())
