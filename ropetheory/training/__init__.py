"""Training small language models with each RoPE schedule, and testing the geometry's predictions on them.

``corpus`` (the real text and its compact vocabulary) -> ``tasks`` (passkey and key-value retrieval rows)
-> ``model`` (a small equinox transformer whose RoPE is ``ropetheory.rope.rotate``) -> ``loop``
(every schedule x seed trained at once with optax, resumable) -> ``evaluate`` (perplexity against
position, retrieval against length and depth, and the real-model analysis of the trained keys and
queries through ``ropetheory.models.dump``). The study that runs them is ``ropetheory.studies.train``.
May import the layers below it in the README's Layout (``core`` ... ``theory``, and ``models`` but not its
command module ``models.analyze``).
"""
