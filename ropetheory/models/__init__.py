"""Real checkpoints: finding packaged models, loading them offline, streaming their keys and queries
through the analysis, and the paper's real-model figures (Figs. 2-6, A.3).

Modules: :mod:`.registry` (packaged models, GGUF assembly and checksums, offline loading),
:mod:`.corpus` (the long English text), :mod:`.stream` (per-layer statistics from chunks of
q/k, O(n d) memory, no n x n matrix), :mod:`.study` (``ropetheory analyze --model``: capture,
numbers, figures, claims table). May import numpy, torch and transformers (lazily), and the
package's public names (spectra, theorems, rope_types, beyond, store); nothing imports it
except the CLI.
"""
