"""Real checkpoints: finding packaged models, loading them offline, streaming their keys and queries
through the analysis, and the paper's real-model figures (Figs. 2-6, A.3).

Modules: ``.registry`` (packaged models, GGUF assembly and checksums, offline loading),
``.corpus`` (the long English text), ``.hook`` (the one attention hook, through transformers'
``AttentionInterface``: every capture and intervention goes through it), ``.rotation`` (the one rotation
check and its bound, Hugging Face layout conversion), ``.capture`` (key/query dumps through that hook),
``.dump`` (a key dump through the analysis), ``.stream`` (per-layer statistics from
chunks of q/k, O(n d) memory, no n x n matrix), ``.forward`` (the model run in chunks with its q/k
hooked, checkpointed), ``.study`` (numbers, per-head analysis), ``.sinks`` (the sink's log-odds
decomposition per head, layer and median), ``.claims`` (the paper's claims judged per head),
``.figures`` (Figs. 2-6 from saved numbers),
``.analyze`` (``ropetheory analyze``), ``.extension`` (inference-time extension rows).
May import numpy, torch and transformers (lazily), and the public names of the layers below it in the
README's Layout (core, data, progress, schedules, rope, store, flags, figstyle, spectra, theory).
Imported by ``training``, ``studies`` and the CLI; its command module ``.analyze`` by the CLI alone.
"""
