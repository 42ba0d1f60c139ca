"""Figure 7 of the paper, simulated: FSV decay of rank-1 clouds per schedule, criteria table, ablations.

Same as ``ropetheory fig7``; see ``ropetheory/figure7.py`` for what is computed and saved.
    python experiments/fig7_fsv_decay.py [--clouds 256] [--n-max 1e6] [--plot-only]
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from ropetheory.figure7 import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
