"""Context-extension methods (PI, NTK, YaRN, Llama-3, LongRoPE) vs the paper's criteria, and RoPE-ID.

Same as ``ropetheory extension``; see ``ropetheory/extension.py``.
    python experiments/context_extension.py [--clouds 32] [--plot-only]
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from ropetheory.extension import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
