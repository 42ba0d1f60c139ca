"""Training every schedule x seed at once: stacked parameters, one vmapped optax step, resumable.

Models with the same seed start from the same weights and see the same batches (a paired design: what
differs between them is the schedule alone). ``steps_per_call`` optimiser steps run inside one jitted
``lax.scan``; after a call, when ``ropetheory.store.CheckpointClock`` says so, parameters, optimiser
states, the step and the loss log are saved (atomically, keyed by the configuration, the token ids' sha256
and the training code's hash), so a killed run resumes from its last checkpoint and a run with other
parameters or code starts afresh. Batches are a pure function of ``(seed, step)``: a resumed run sees the
same data as an uninterrupted one.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import pathlib
import time
from typing import Any

import numpy as np

from .model import ModelConfig
from .tasks import TASKS, mixed_batch, row_tokens
from ..core.checks import check_integer
from ..core.errors import BadValue

__all__ = ["TrainConfig", "SCHEDULES", "schedule_theta", "train", "model_names"]

#: the schedules trained (names of the study; docs/theory.md's definitions)
SCHEDULES = ("rope", "half_rope", "high_freq_rope", "rope_id", "nope")
#: RoPE's base for the rope and half-RoPE models (the paper's 10^4)
ROPE_BASE = 1e4


#: the registry parameters of each trained schedule, by canonical name (``head_dim`` and ``train_len`` added)
PARAMS: dict[str, dict[str, Any]] = {"rope": {"base": ROPE_BASE}, "partial": {"base": ROPE_BASE, "fraction": 0.5},
                                       "high_frequency": {}, "rope_id": {}, "nope": {}}
#: the canonical schedules whose registry function takes the training length
_TAKES_TRAIN_LEN = ("high_frequency", "rope_id")


def schedule_theta(name: str, head_dim: int, train_len: int) -> np.ndarray:
    """``theta`` (float64) of a trained schedule (a study label of ``SCHEDULES``), from the registry."""
    from ..schedules import names, schedule
    if name not in SCHEDULES:
        raise BadValue(f"schedule must be one of {SCHEDULES}, got {name!r}")
    key = names.canonical(name)
    extra: dict[str, Any] = {"train_len": train_len} if key in _TAKES_TRAIN_LEN else {}
    return schedule(key, head_dim=head_dim, **PARAMS[key], **extra).theta


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig = ModelConfig()
    train_len: int = 256
    batch: int = 32
    steps: int = 3000
    lr: float = 1e-3
    warmup: int = 200
    weight_decay: float = 0.1
    task_fraction: float = 0.5
    seeds: tuple = (0, 1, 2)
    schedules: tuple = SCHEDULES
    steps_per_call: int = 50
    models_per_group: int = 5

    def __post_init__(self):
        for k in ("train_len", "batch", "steps", "warmup", "steps_per_call", "models_per_group"):
            object.__setattr__(self, k, check_integer(k, getattr(self, k), lo=0 if k == "warmup" else 1))
        if self.train_len < 64:
            raise BadValue(f"train_len must be >= 64 (a retrieval row needs ~40 tokens), got {self.train_len}")
        if not (0 < self.lr < 1) or not (0 <= self.task_fraction <= 1) or not (0 <= self.weight_decay < 1):
            raise BadValue(f"lr in (0, 1), task_fraction in [0, 1], weight_decay in [0, 1) required, got "
                             f"{self.lr!r}, {self.task_fraction!r}, {self.weight_decay!r}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise BadValue(f"seeds must be distinct integers, got {self.seeds!r}")
        bad = [s for s in self.schedules if s not in SCHEDULES]
        if bad or not self.schedules:
            raise BadValue(f"schedules must be among {SCHEDULES}, got {self.schedules!r}")
        for s in self.schedules:                     # each schedule must exist at this head width and L
            schedule_theta(s, self.model.head_dim, self.train_len)

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["seeds"], d["schedules"] = list(self.seeds), list(self.schedules)
        return d


def model_names(cfg: TrainConfig) -> list[tuple[str, int]]:
    """``(schedule, seed)`` of each stacked model, in stacking order."""
    return [(s, k) for s in cfg.schedules for k in cfg.seeds]


def _code_hash() -> str:
    from .. import store
    return store.derived_code_hash(__name__)


def run_key(cfg: TrainConfig, data_sha: str) -> str:
    """The key of a training run: its configuration, the fingerprint of the token ids it trains on
    (``recipe["tokens_sha256"]``) and the code."""
    return hashlib.sha256(json.dumps([cfg.as_dict(), data_sha, _code_hash()], sort_keys=True).encode()).hexdigest()[:16]


def _optimizer(cfg: TrainConfig):
    import optax
    sched = optax.warmup_cosine_decay_schedule(0.0, cfg.lr, max(cfg.warmup, 1), max(cfg.steps, cfg.warmup + 1),
                                               cfg.lr * 0.1)
    return optax.chain(optax.clip_by_global_norm(1.0),
                       optax.adamw(sched, b1=0.9, b2=0.95, weight_decay=cfg.weight_decay))


def _tables(cfg: TrainConfig, n: int):
    from ..rope import rope_tables
    cs = [rope_tables(schedule_theta(s, cfg.model.head_dim, cfg.train_len), n, dtype=np.float32)
          for s, _ in model_names(cfg)]
    return np.stack([c for c, _ in cs]), np.stack([s for _, s in cs])


def _init(cfg: TrainConfig):
    import equinox as eqx
    import jax
    from .model import init_lm
    seeds = np.array([k for _, k in model_names(cfg)])
    keys = jax.vmap(jax.random.PRNGKey)(seeds)
    models = eqx.filter_vmap(lambda k: init_lm(cfg.model, k))(keys)
    return models, eqx.filter_vmap(_optimizer(cfg).init)(eqx.filter(models, eqx.is_array))


@functools.lru_cache(maxsize=8)
def _chunk_program(cfg: TrainConfig):
    """The jitted ``steps_per_call`` optimiser steps of every model (one compilation per configuration)."""
    import equinox as eqx
    import jax
    from .model import loss
    opt = _optimizer(cfg)

    @eqx.filter_jit
    def run_chunk(models, opt_states, rows, cos, sin, seed_of):
        def body(carry, r):
            ms, os = carry
            dyn, st = eqx.partition(ms, eqx.is_array)

            def upd(args):
                dm, o, rr, c, s = args
                m = eqx.combine(dm, st)
                val, g = eqx.filter_value_and_grad(loss)(m, rr, c, s)
                u, o = opt.update(g, o, dm)
                return eqx.filter(eqx.apply_updates(m, u), eqx.is_array), o, val
            # models_per_group at a time (vmapped), the groups in sequence: bounds activation memory
            dyn, os, val = jax.lax.map(upd, (dyn, os, r[seed_of], cos, sin), batch_size=cfg.models_per_group)
            return (eqx.combine(dyn, st), os), val
        (models, opt_states), losses = jax.lax.scan(body, (models, opt_states), rows)
        return models, opt_states, losses
    return run_chunk


def _batches(cfg: TrainConfig, tokens: np.ndarray, templates, digit_ids, step0: int, k: int) -> np.ndarray:
    """``(k, seeds, B, L)`` int32 rows for steps ``step0 .. step0 + k - 1``."""
    out = np.empty((k, len(cfg.seeds), cfg.batch, cfg.train_len), dtype=np.int32)
    for i in range(k):
        for j, seed in enumerate(cfg.seeds):
            rng = np.random.default_rng([seed, step0 + i])
            out[i, j] = mixed_batch(rng, tokens, cfg.train_len, cfg.batch, task_fraction=cfg.task_fraction,
                                    templates=templates, digit_ids=digit_ids)
    return out


def _restore(template: Any, saved: dict[str, np.ndarray], meta: dict[str, Any]):
    """``(arrays, step, log, seconds)`` from a training checkpoint: its leaves put into the tree of
    ``template`` (the arrays of freshly built models and optimiser states: the checkpoint stores leaves
    only, the tree comes from the constructors); a ValueError if a leaf is missing or of another shape."""
    import jax
    import jax.numpy as jnp
    fresh, treedef = jax.tree_util.tree_flatten(template)
    leaves = [saved.get(f"leaf{i}") for i in range(len(fresh))]
    for i, (a, b) in enumerate(zip(leaves, fresh, strict=True)):
        if a is None or a.shape != b.shape or a.dtype != b.dtype:
            raise BadValue(f"leaf {i} is {None if a is None else (a.shape, a.dtype)}, expected {(b.shape, b.dtype)}")
    if len(saved) != len(fresh):
        raise BadValue(f"{len(saved)} leaves, expected {len(fresh)}")
    arrays = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(x) for x in leaves])
    return arrays, int(meta["step"]), list(meta["log"]), float(meta["seconds"])


def train(cfg: TrainConfig, data: dict, folder: str | pathlib.Path, *, resume: bool = True,
          checkpoint_every: float = 60.0, on_log=None) -> dict[str, Any]:
    """Train every ``(schedule, seed)`` of ``cfg`` on ``data`` (``.corpus.load_corpus``).

    Returns ``{"models": stacked LM, "names", "log": [{"step", "loss": [per model]}], "seconds", "key"}``;
    the checkpoint ``folder/train.ckpt`` (``ropetheory.store.save_checkpoint``: the models' and optimiser
    states' leaves as arrays, the tree rebuilt from the constructors on load) holds the same (a rerun of a
    finished run loads it and runs no step). ``on_log(step, losses)`` is called with each log row (a logging
    hook, not the package's ``progress(k)`` bar convention: it gets the losses, not a count).
    """
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    from ..store import CheckpointClock, unit_saved, load_checkpoint, save_checkpoint
    folder = pathlib.Path(folder)
    key = run_key(cfg, data["recipe"]["tokens_sha256"])
    models, opt_states = _init(cfg)
    arrays, static = eqx.partition((models, opt_states), eqx.is_array)
    step, log, seconds = 0, [], 0.0
    saved = load_checkpoint(folder / "train.ckpt", key, functools.partial(_restore, arrays)) if resume else None
    if saved:
        arrays, step, log, seconds = saved
    models, opt_states = eqx.combine(arrays, static)
    cos, sin = (jnp.asarray(t) for t in _tables(cfg, cfg.train_len))
    seed_of = jnp.asarray([cfg.seeds.index(k) for _, k in model_names(cfg)])
    tm, digits = data["recipe"]["templates"], data["recipe"]["digit_ids"]
    need = max(row_tokens(kind, tm) for kind in TASKS)
    if cfg.task_fraction > 0 and cfg.train_len < need:
        raise BadValue(f"train_len {cfg.train_len} is shorter than a retrieval row ({need} tokens)")

    run_chunk = _chunk_program(cfg)
    clock = CheckpointClock(checkpoint_every)
    k = min(cfg.steps_per_call, cfg.steps - step)
    rows = _batches(cfg, data["train"], tm, digits, step, k) if k > 0 else None
    while step < cfg.steps:
        t0 = time.perf_counter()
        models, opt_states, losses = run_chunk(models, opt_states, jnp.asarray(rows), cos, sin, seed_of)
        k_next = min(cfg.steps_per_call, cfg.steps - step - k)      # built while the device computes
        rows = _batches(cfg, data["train"], tm, digits, step + k, k_next) if k_next > 0 else None
        losses = np.asarray(losses)
        if not np.all(np.isfinite(losses)):
            raise BadValue(f"training diverged at steps {step}..{step + k}: non-finite loss "
                             f"(lower --lr, now {cfg.lr})")
        step += k
        k = k_next
        seconds += time.perf_counter() - t0
        log.append({"step": step, "loss": losses.mean(axis=0).tolist()})
        if clock.due() or step == cfg.steps:
            t1 = time.perf_counter()
            leaves = jax.tree_util.tree_leaves(eqx.filter((models, opt_states), eqx.is_array))
            save_checkpoint(folder / "train.ckpt", key, {f"leaf{i}": np.asarray(x) for i, x in enumerate(leaves)},
                            step=step, log=log, seconds=seconds)
            clock.written(t1)
        unit_saved()
        if on_log:
            on_log(step, losses.mean(axis=0))
    return {"models": models, "names": model_names(cfg), "log": log, "seconds": seconds, "key": key}

