"""Real checkpoints: finding packaged models, loading them offline, streaming their keys and queries
through the analysis, and the paper's real-model figures (Figs. 2-6, A.3).

Modules: :mod:`.registry` (packaged models, GGUF assembly and checksums, offline loading),
:mod:`.corpus` (the long English text), :mod:`.capture` (key/query dumps through forward hooks,
Hugging Face layout conversion), :mod:`.stream` (per-layer statistics from chunks of q/k, O(n d)
memory, no n x n matrix), :mod:`.forward` (the model run in chunks with its q/k hooked, checkpointed),
:mod:`.study` (numbers, per-head analysis), :mod:`.claims` (the paper's claims judged per head),
:mod:`.figures` (Figs. 2-6 from saved numbers),
:mod:`.analyze` (``ropetheory analyze``), :mod:`.extension` (inference-time extension rows).
May import numpy, torch and transformers (lazily), and the public names of every lower layer
(core, schedules, rope, spectra, theory, store);
nothing imports it except the CLI and the report.
"""
