"""Evaluating a retrofitted model past its training length ``L`` (``ropetheory.models.retrofit``).

Per held-out window of ``8L`` tokens: perplexity on ``[1024, L)``, ``[L, 2L)``, ``[2L, 4L)``, ``[4L, 8L)``
(``.study.nll_ranges``), and per layer and kv head the sink's share and log-odds terms
(``ropetheory.theory.sink`` through ``.interventions.SinkProbe``: float64 logits as used, on the last
``SINK_QUERIES`` queries before each of ``L, 2L, 4L, 8L``). Passkey retrieval at five depths for lengths
``L/2 .. 8L``. RoPE-ID's length temperature multiplies the logits of the query at position ``p`` by
``(1 + 0.1 ln(max(1, p/L)))^2`` (``ropetheory.schedules.length_temperature``).
"""
from __future__ import annotations

import collections

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..core.errors import BadValue

__all__ = ["window_pass", "passkey", "passkey_prompt", "evaluate", "PASSKEY_DEPTHS", "PASSKEY_LENGTHS",
           "SINK_LENGTHS"]

#: where the passkey sits in the filler, as a fraction of the prompt
PASSKEY_DEPTHS = (0.1, 0.3, 0.5, 0.7, 0.9)
#: the passkey's lengths, in multiples of L
PASSKEY_LENGTHS = (0.5, 1, 2, 4, 8)
#: the multiples of L where the sink is probed
SINK_LENGTHS = (1, 2, 4, 8)


def _row_scale(q_pos, L: int):
    """RoPE-ID's length temperature per query position ``p``: ``(1 + 0.1 ln(max(1, p/L)))^2``."""
    import torch
    from ..schedules.paper import length_temperature
    t = length_temperature(q_pos.double().cpu().numpy(), L)
    return torch.as_tensor(t, device=q_pos.device)


def _scaled_attention(call, scale):
    """The layer's attention with each query row's logits multiplied by ``scale (c,)`` (SDPA, values' dtype)."""
    import torch.nn.functional as F
    G = call.groups
    q = (call.query.double() * scale[None, :, None]).to(call.value.dtype)
    k, v = call.key.repeat_interleave(G, 0), call.value.repeat_interleave(G, 0)
    vis = call.visible()
    out = F.scaled_dot_product_attention(q[None], k[None], v[None], attn_mask=vis[None, None], scale=call.scaling)
    return out[0].transpose(0, 1)[None].contiguous()


def _boundaries(n: int, L: int, chunk: int, probe_at: Sequence[int], rows: int) -> list[int]:
    """Chunk edges: every ``chunk`` tokens, plus ``[m - rows, m)`` for each probed length ``m``."""
    edges = set(range(0, n, chunk)) | {n}
    for m in probe_at:
        if rows <= m <= n:
            edges |= {m - rows, m}
    return sorted(edges)


def window_pass(model, ids: np.ndarray, *, L: int, temperature: bool, tokens_per_pass: int = 4096,
                probe_at: Sequence[int] = ()) -> dict[str, Any]:
    """One pass over a window: per-token loss, and the sink's share and log-odds terms per layer and kv
    head at the lengths ``probe_at`` (float64 logits as used, temperature included)."""
    import torch
    from .forward import chunk_nll, chunked_passes
    from .hook import attention_hook, eager
    from .interventions import SinkProbe
    from .stream import SINK_QUERIES
    dev = next(model.parameters()).device
    n = int(ids.size)
    x = torch.as_tensor(ids.astype(np.int64), device=dev)[None]
    nll = np.zeros(n - 1)
    probe = SinkProbe(np.asarray(probe_at, dtype=np.int64))
    probed = {(m - SINK_QUERIES, m) for m in probe_at}

    def temp_edit(call, h, S):
        S.mul_(_row_scale(call.q_pos, L)[None, :, None])

    def handler(call):
        span = (int(call.q_pos[0]), int(call.q_pos[-1]) + 1)
        if span in probed:
            return eager(call, edit=temp_edit if temperature else None, observe=probe)
        if temperature:
            return _scaled_attention(call, _row_scale(call.q_pos, L))
        return None

    edges = _boundaries(n, L, tokens_per_pass, probe_at, SINK_QUERIES)
    with attention_hook(model, handler), torch.no_grad(), \
            torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
        for s, _, out in chunked_passes(model, x, edges):
            chunk_nll(out.logits, x, s, nll)
    return {"nll": nll, "heads": probe.rows("eval")}


#: the passkey prompt (Mohtashami and Jaggi 2023): a task line, filler repeated, the key at a depth, a question
PASSKEY_TASK = ("There is an important piece of information hidden inside a lot of irrelevant text. Find it and "
                "memorize it. I will quiz you about the important information there.\n")
PASSKEY_FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
PASSKEY_LINE = "The pass key is {key}. Remember it. {key} is the pass key. "
PASSKEY_QUESTION = "What is the pass key? The pass key is"


def passkey_prompt(tokenizer, length: int, depth: float, key: int) -> tuple[list[int], list[int]]:
    """``(prompt ids, answer ids)``: ``length`` tokens in all with the key's line at ``depth`` of the filler."""
    enc = lambda s: list(tokenizer(s, add_special_tokens=False)["input_ids"])   # noqa: E731
    head, line, tail = enc(PASSKEY_TASK), enc(PASSKEY_LINE.format(key=key)), enc(PASSKEY_QUESTION)
    answer = enc(f" {key}")
    filler_unit = enc(PASSKEY_FILLER)
    room = length - len(head) - len(line) - len(tail) - len(answer)
    if room < len(filler_unit):
        raise BadValue(f"length {length} leaves no room for filler")
    filler = (filler_unit * (room // len(filler_unit) + 1))[:room]
    at = int(round(depth * room))
    return head + filler[:at] + line + filler[at:] + tail, answer


def passkey(model, tokenizer, *, L: int, temperature: bool, trials: int, seed: int = 0,
            lengths: Sequence[float] = PASSKEY_LENGTHS, depths: Sequence[float] = PASSKEY_DEPTHS,
            tokens_per_pass: int = 8192) -> list[dict[str, Any]]:
    """Per (length, depth, trial): whether every answer token is the argmax given the prompt and the
    answer's earlier tokens (teacher forcing), and the answer's mean log-probability."""
    import torch
    from .forward import chunked_passes, pass_edges
    from .hook import attention_hook
    rng = np.random.default_rng(seed)
    dev = next(model.parameters()).device
    rows = []

    def handler(call):
        return _scaled_attention(call, _row_scale(call.q_pos, L)) if temperature else None

    for mult in lengths:
        n = int(mult * L)
        for depth in depths:
            for t in range(trials):
                key = int(rng.integers(10000, 100000))
                prompt, answer = passkey_prompt(tokenizer, n, depth, key)
                ids = torch.as_tensor([prompt + answer], device=dev)
                with attention_hook(model, handler), torch.no_grad(), \
                        torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                    passes = chunked_passes(model, ids, pass_edges(ids.shape[1], tokens_per_pass))
                    out = collections.deque(passes, maxlen=1)[0][2]       # the last pass: it holds the answer
                logits = out.logits[0, -(len(answer) + 1):-1].float()
                tgt = ids[0, -len(answer):]
                logp = torch.log_softmax(logits, -1).gather(1, tgt[:, None])[:, 0]
                rows.append({"length": n, "depth": depth, "trial": t, "key": key,
                             "correct": bool((logits.argmax(-1) == tgt).all()),
                             "answer_logprob": float(logp.mean())})
    return rows


def evaluate(model, tokenizer, heldout: np.ndarray, bounds: Sequence[int], *, L: int, temperature: bool,
             windows: int | None = None, passkey_trials: int = 2, tokens_per_pass: int = 4096,
             passkey_lengths: Sequence[float] = PASSKEY_LENGTHS,
             progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Perplexity ranges and sink terms on every held-out window of ``8L`` tokens (non-overlapping, inside
    one held-out document each) and the passkey table (module docstring)."""
    from .retrofit_corpus import heldout_windows
    from .study import nll_ranges
    span = 8 * L
    starts = heldout_windows(bounds, span)
    if windows is not None:
        starts = starts[:windows]
    if not starts:
        raise BadValue(f"no held-out document holds a window of 8L = {span} tokens")
    out: dict[str, Any] = {"windows": [], "heads": [], "L": L, "window_tokens": span}
    for w, a in enumerate(starts):
        res = window_pass(model, heldout[a:a + span], L=L, temperature=temperature, tokens_per_pass=tokens_per_pass,
                          probe_at=[k * L for k in SINK_LENGTHS])
        out["windows"].append({"window": w, "start": int(a), "ranges": nll_ranges(res["nll"], L)})
        out["heads"].extend({"window": w, **r} for r in res["heads"])
        if progress is not None:
            progress(1)                                         # one window done
    out["passkey"] = passkey(model, tokenizer, L=L, temperature=temperature, trials=passkey_trials,
                             lengths=passkey_lengths, tokens_per_pass=tokens_per_pass) \
        if passkey_trials else []
    return out
