"""The sink-token mechanism on a synthetic head (the paper's Figs. 1, 5, 6), per schedule and length.

Same as ``ropetheory sinks``; see ``ropetheory/sinks.py`` for the head and the metrics.
    python experiments/sink_tokens.py [--max-log2 16] [--plot-only]
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from ropetheory.sinks import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
