"""Running a model over a long text in chunks with a KV cache, its keys and queries hooked.

The model runs under the one attention hook (``.hook.attention_hook``): each layer call's chunk of
q and k, pre- and post-RoPE, goes to one ``.stream.LayerStream`` per layer, with that layer's schedule (per-layer rope
types, sliding windows). The attention mask is ``chunk x n``, never ``n x n``. A capture checkpoints
its statistics (``ropetheory.store.save_checkpoint``: arrays and a JSON manifest, no pickle) and resumes
after a kill with nothing lost.
"""
from __future__ import annotations

import pathlib
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import spectra
from ..schedules.hf_facts import hf_view
from ..schedules.model_config import read_model_config
from ..store import CheckpointClock, unit_saved, load_checkpoint, save_checkpoint
from .hook import attention_hook
from .rotation import check_rotation, chunk_is_checked, unit_roundoff_of
from .stream import LayerStream
from ..core.errors import BadValue
from ..core.renamed import renamed

__all__ = ["capture_streams", "chunk_nll", "chunked_passes", "pass_edges", "cached_forward", "layer_schedules",
           "training_length", "attention_scale", "analysis_grid", "CHECKPOINT_EVERY_S", "key_folder"]


def layer_schedules(cfg: dict, n: int) -> list[dict[str, Any]]:
    """Per layer: ``theta`` (d/2, NoPE planes 0), rotary_dim, attention factor, layer type, window."""
    facts = read_model_config(cfg)
    out, cache = [], {}
    for lt in facts.layer_types:
        if lt not in cache:
            f = hf_view(facts.frequencies(facts.rope_key(lt), seq_len=n))
            cache[lt] = {"layer_type": lt, "theta": np.asarray(f["theta"], dtype=np.float64),
                         "rotary_dim": int(f["rotary_dim"]), "attention_factor": float(f["attention_factor"]),
                         "rope_type": f["rope_type"], "rope_theta": f["rope_theta"],
                         "window": facts.window_for(lt)}
        out.append(cache[lt])
    return out


def training_length(cfg: dict, default: int | None = None) -> int:
    """L as ``ropetheory.schedules.hf.read_model_config`` reads it, else ``default``."""
    L = read_model_config(cfg).train_len or default
    if not L:
        raise BadValue("the config gives no training length (original_max_position_embeddings or "
                         "max_position_embeddings): pass --train-len")
    return int(L)


def attention_scale(cfg: dict, head_dim: int) -> float:
    """The model's logit scale: Gemma's ``query_pre_attn_scalar^-1/2``, else ``head_dim^-1/2``."""
    s = cfg.get("query_pre_attn_scalar")
    return float(s) ** -0.5 if s else head_dim ** -0.5


def analysis_grid(n: int, L: int, num: int = 24) -> np.ndarray:
    g = set(spectra.log_grid(n, num, min(16, n)).tolist()) if n > 1 else {1}
    g |= {m for m in (L // 4, L // 2, L, 2 * L, 4 * L, 8 * L, 16 * L) if 2 <= m <= n}
    return np.array(sorted(g), dtype=np.int64)


def cached_forward(model, ids, start: int, end: int, cache):
    """``model`` on tokens ``[start, end)`` of ``ids`` at their positions, attending to the keys ``cache``
    holds (the earlier chunks) and adding its own. The cache goes in under the keyword the installed
    transformers reads (``cache``, earlier 5.x ``past_key_values``: an unknown keyword is dropped without an
    error, and each chunk would then attend to itself alone), and the cache's length is checked after."""
    import inspect
    import torch
    key = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    pos = torch.arange(start, end, device=ids.device)[None]
    out = model(input_ids=ids[:, start:end], use_cache=True, position_ids=pos, **{key: cache})
    if cache.get_seq_length() != end:
        raise RuntimeError(f"the KV cache holds {cache.get_seq_length()} positions after the chunk ending at {end}: "
                           f"this transformers ({key}=) did not use it")
    return out


def pass_edges(n: int, tokens_per_pass: int) -> list[int]:
    """``[0, p, 2p, ..., n]``: the edges of ``n`` tokens run ``p = tokens_per_pass`` at a time (the last pass
    shorter when ``p`` does not divide ``n``)."""
    return [*range(0, n, tokens_per_pass), n]


def chunked_passes(model, ids, edges: Sequence[int], cache=None):
    """The one chunked cached-forward loop: ``model`` over tokens ``[e_k, e_{k+1})`` of ``ids`` for consecutive
    ``edges`` (increasing, from 0), each pass attending to the keys of the earlier ones through one KV cache
    (``cache``, default a new ``DynamicCache``; ``cached_forward`` checks its length after each pass).
    Yields ``(start, end, out)`` as each pass ends; the caller's context (``torch.no_grad``, an
    ``attention_hook``, autocast) is the one each pass runs in, since a generator runs inside its consumer."""
    from transformers import DynamicCache
    if cache is None:
        cache = DynamicCache(config=model.config)
    for s, e in zip(edges[:-1], edges[1:], strict=True):
        yield s, e, cached_forward(model, ids, s, e, cache)


def chunk_nll(logits, ids, start: int, nll: np.ndarray) -> None:
    """``nll[i] = -log p(token i+1 | tokens <= i)`` for the chunk's positions ``i = start, ...`` that have a
    next token, from its logits ``(1, c, vocab)`` (log-softmax in float32, as the model's own loss)."""
    import torch
    logp = torch.log_softmax(logits[0].float(), dim=-1)
    tgt = ids[0, start + 1:start + 1 + logp.shape[0]]
    nll[start:start + tgt.shape[0]] = -logp[: tgt.shape[0]].gather(1, tgt[:, None])[:, 0].double().cpu().numpy()


def key_folder(checkpoint: pathlib.Path) -> pathlib.Path:
    """Where a checkpointed capture keeps its layers' key files (``ropetheory.models.stream.KeyStore``)."""
    return checkpoint.with_name(checkpoint.name + ".keys")


#: seconds between checkpoints of a capture (and at least 10x the time one write takes)
CHECKPOINT_EVERY_S = 30.0


def _save_capture(path: pathlib.Path, key: str, done: int, streams: list, nll: np.ndarray) -> None:
    """Checkpoint a capture after ``done`` chunks: the NLL so far and every layer's ``LayerStream.state``
    (its arrays under ``layer<i>.``), in one ``ropetheory.store`` checkpoint."""
    arrays, layers = {"nll": nll}, []
    for i, st in enumerate(streams):
        a, meta = st.state() if st is not None else ({}, None)         # None: a layer not reached yet
        arrays.update({f"layer{i}.{k}": v for k, v in a.items()})
        layers.append(meta)
    save_checkpoint(path, key, arrays, done=done, layers=layers)


def _restore_capture(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> tuple[int, list, np.ndarray]:
    """``(done, streams, nll)`` from a capture checkpoint (``_save_capture``)."""
    streams: list[LayerStream | None] = []
    for i, m in enumerate(meta["layers"]):
        prefix = f"layer{i}."
        own = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
        streams.append(None if m is None else LayerStream.from_state(own, m))
    return int(meta["done"]), streams, arrays["nll"]


class _ChunkRecorder:
    """The attention hook's handler in a chunked capture: each layer call's chunk of q and k, pre- and
    post-RoPE, into that layer's ``LayerStream`` (made at its first call), the rotation checked on the
    first and last chunk (``.rotation.chunk_is_checked``); nothing is recorded for a chunk starting before
    ``replay_until`` (a finished chunk run again to rebuild the KV cache). A chunk's first position is the
    layer call's own (``AttentionCall.q_pos``)."""

    def __init__(self, cfg: dict, n: int, grid: np.ndarray, schedules: list, streams: list,
                 key_dir: pathlib.Path | None, replay_until: int = 0):
        self.cfg, self.n, self.grid, self.schedules, self.streams = cfg, n, grid, schedules, streams
        self.key_dir, self.stride = key_dir, max(1, n // 4096)
        self.replay_until = replay_until

    def _stream(self, li: int, q_heads: int, kv_heads: int, head_dim: int) -> LayerStream:
        if self.streams[li] is None:
            self.streams[li] = LayerStream(
                n_total=self.n, grid=self.grid, kv_heads=kv_heads, q_heads=q_heads, head_dim=head_dim,
                scale=attention_scale(self.cfg, head_dim), window=self.schedules[li]["window"],
                query_stride=self.stride, key_dir=None if self.key_dir is None else self.key_dir / f"layer{li}")
        return self.streams[li]

    def __call__(self, call) -> None:
        start = int(call.q_pos[0])
        if start < self.replay_until:
            return
        c = call.query.shape[1]
        q_pre, k_pre, q_post, k_post = (t.detach().float().cpu().numpy() for t in
                                        (call.query_pre(), call.key_pre(chunk_only=True), call.query,
                                         call.key[:, -c:]))
        st = self._stream(call.layer, q_pre.shape[0], k_pre.shape[0], q_pre.shape[-1])
        if chunk_is_checked(start, start + c, self.n):
            sc = self.schedules[call.layer]
            st.rotation = check_rotation(((q_pre, q_post), (k_pre, k_post)), sc["theta"], sc["rotary_dim"],
                                         np.arange(start, start + c), sc["attention_factor"],
                                         unit_roundoff_of(call.query.dtype)).merged(st.rotation)
        st.add(q_pre, k_pre, q_post, k_post)


def _one_blas_thread():
    """numpy's BLAS on one thread while the statistics run: their products are small (``(G * S, d)`` by
    ``(d, KEY_BLOCK)`` at most, ``d x d`` Grams), and on them OpenBLAS's threads cost far more CPU time than
    they save (a 96 x 64 by 64 x 1024 product: 16 ms of CPU time on two threads, 0.35 ms on one, on a loaded
    2-core machine; the whole capture 3.5x less, docs/benchmarks/bench_capture_1024_cpu.json). The threaded
    kernel may sum a product's ``d`` terms in another order, which moves a few sink terms by ulps (2e-15
    relative there); on one thread they no longer depend on the machine's core count. The model's forward
    runs in torch's own thread pool, which this leaves alone (``ropetheory.core.devices.one_blas_thread``)."""
    from ..core.devices import one_blas_thread
    return one_blas_thread()


@renamed("0.3.0", chunk="tokens_per_pass")
def capture_streams(model, input_ids: list[int], *, L: int, tokens_per_pass: int = 2048, progress=None,
                    checkpoint: pathlib.Path | None = None, checkpoint_key: str = "",
                    checkpoint_every: float = CHECKPOINT_EVERY_S,
                    schedules: Sequence[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Run ``model`` over ``input_ids`` in chunks; returns the layer streams, schedules and per-token NLL.

    ``schedules`` (one per layer, as ``layer_schedules`` gives them) replaces what the config says the
    layers rotate by: a model whose rotary frequencies were changed after loading
    (``.retrofit.retrofitted_schedules``) is checked against, and analysed with, the frequencies it uses.

    With ``checkpoint`` (a file), the streaming statistics and the NLL so far are saved after a tokens_per_pass
    at most every ``checkpoint_every`` seconds (``ropetheory.store.CheckpointClock``); a rerun with the
    same ``checkpoint_key`` (inputs + code) replays the finished chunks' forward passes without their
    statistics, which rebuilds the KV cache exactly (same chunks, same kernels), and goes on from there:
    the result is identical to an uninterrupted run. ``result["kept"], ["computed"]``: chunks.
    """
    import torch
    cfg = model.config.to_dict()
    n = len(input_ids)
    scheds = layer_schedules(cfg, n)
    if schedules is not None:
        if len(schedules) != len(scheds):
            raise BadValue(f"schedules has {len(schedules)} entries, the model {len(scheds)} layers")
        scheds = list(schedules)
    ids = torch.tensor([input_ids], device=next(model.parameters()).device)
    grid = analysis_grid(n, L)
    streams: list[LayerStream | None] = [None] * len(scheds)
    nll = np.zeros(n - 1)
    edges = pass_edges(n, tokens_per_pass)
    done = 0
    saved = load_checkpoint(checkpoint, checkpoint_key, _restore_capture)
    if saved is not None:
        done, streams, nll = saved
    recorder = _ChunkRecorder(cfg, n, grid, scheds, streams, None if checkpoint is None else key_folder(checkpoint),
                              replay_until=edges[done])     # the finished passes: rebuild the cache only
    t0 = time.time()
    clock = CheckpointClock(checkpoint_every)
    with _one_blas_thread(), attention_hook(model, recorder), torch.no_grad():
        for c, (s, e, out) in enumerate(chunked_passes(model, ids, edges)):
            if c >= done:
                chunk_nll(out.logits, ids, s, nll)
            del out
            if progress:
                progress(e - s)
            if checkpoint is not None and c >= done and e < n and clock.due():
                started = time.perf_counter()
                _save_capture(checkpoint, checkpoint_key, c + 1, streams, nll)
                clock.written(started)
                unit_saved()
    if any(st is None for st in streams):
        raise BadValue(f"{type(model).__name__}: not every layer's attention was called")
    return {"streams": streams, "schedules": scheds, "grid": grid, "nll": nll, "seconds": time.time() - t0,
            "config": cfg, "kept": done, "computed": len(edges) - 1 - done}
