"""Context-extension methods (PI, NTK, YaRN, Llama-3, LongRoPE) vs the paper's criteria, and RoPE-ID.

Same as ``ropetheory extension``; see ``ropetheory/studies/extension.py``.
    python experiments/context_extension.py [--clouds 32] [--plot-only]
"""
import sys

from ropetheory.studies.extension import main

if __name__ == "__main__":
    sys.exit(main())
