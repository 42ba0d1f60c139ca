"""Figure 7 of the paper, simulated: FSV decay of rank-1 clouds per schedule, criteria table, ablations.

Same as ``ropetheory fig7``; see ``ropetheory/studies/figure7.py`` for what is computed and saved.
    python experiments/fig7_fsv_decay.py [--clouds 256] [--n-max 1e6] [--plot-only]
"""
import sys

from ropetheory.studies.figure7 import main

if __name__ == "__main__":
    sys.exit(main())
