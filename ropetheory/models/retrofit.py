"""Retrofit a pretrained model's rotary frequencies, fine-tune it, and measure it past its training length.

The question (issue #37): does RoPE-ID keep a real model's attention sink, and its perplexity, past
``L`` where RoPE loses both? A model trained from scratch here forms no sink; a pretrained one has
them. So the frequencies of every rotary embedding of a pretrained model are replaced by a schedule
from the registry (``retrofit``: nothing else changes, bit for bit) and each variant is fine-tuned on
the same tokens, in the same order, with the same optimiser and steps (``finetune``), at the model's
own ``L``. The variants (``VARIANTS``):

* ``rope``: the model's own frequencies (the control: same fine-tune, so data and optimisation match);
* ``rope_id``: ``rt.schedule("rope_id", d, train_len=L)`` (half the planes from ``2 pi/32`` to
  ``2 pi 2/L``, the rest NoPE), in the half layout of Hugging Face's ``rotate_half``;
* ``half_rope``: the model's own frequencies on the fast half of the planes, NoPE on the slow half.

Evaluations (``EVALUATIONS``) add inference-only changes: RoPE-ID with its length temperature
(queries at position ``p`` scale their logits by ``(1 + 0.1 ln(max(1, p/L)))^2``), and the control with
YaRN (factor 8 from ``L``, the registry's ``yarn``), the thing a user would pick instead; ``original``
is the model before any fine-tune. ``evaluate`` reports, per held-out window of ``8L`` tokens,
perplexity on ``[1024, L)``, ``[L, 2L)``, ``[2L, 4L)``, ``[4L, 8L)``; passkey retrieval at five depths
for lengths ``L/2 .. 8L``; and per layer and kv head the sink's share and log-odds terms
(``ropetheory.theory.sink``, through ``.interventions``' probe) at ``L, 2L, 4L, 8L``.
"""
from __future__ import annotations

import dataclasses
import math
import pathlib
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..core.checks import check_integer, check_number
from ..core.errors import BadValue, BadType
from ..core.schedule import Schedule

__all__ = ["VARIANTS", "EVALUATIONS", "variant_schedule", "retrofit", "rotary_modules", "FinetuneConfig",
           "finetune", "YARN_FACTOR", "INV_FREQ_REL", "retrofitted_schedules"]

#: the fine-tuned variants; each gets the same fine-tune
VARIANTS = ("rope", "rope_id", "half_rope")
#: what is evaluated: a variant, optionally with an inference-only change after "+"
EVALUATIONS = ("original", "rope", "rope+yarn", "rope_id", "rope_id+temp", "half_rope")
#: YaRN's factor for the control at inference: the longest evaluated length over L
YARN_FACTOR = 8.0
#: a model's float32 ``inv_freq`` that lies this close (relative) to the schedule's float64 frequency is the
#: same frequency and is kept: transformers computes ``1 / base^(2j/d)`` in float32, whose error is about
#: ``(ln(base) + 2)`` units of 2^-24 (the exponent's rounding amplified by ``ln(base)``, the power, the
#: reciprocal), under 2^-19 for any base up to 1e13; rewriting it would change logits by rounding alone
INV_FREQ_REL = 2.0 ** -19


def variant_schedule(variant: str, config: dict) -> Schedule:
    """The schedule a variant's rotary embeddings use (module docstring); ``+yarn`` and ``+temperature``
    name inference-only changes."""
    from .. import schedules as S
    from ..schedules.hf import frequencies_from_config, load_rope_config
    from .forward import training_length
    base, _, extra = variant.partition("+")
    if variant not in EVALUATIONS:
        raise BadValue(f"variant must be one of {EVALUATIONS}, got {variant!r}")
    own = frequencies_from_config(config)
    d, rope_theta, L = own.head_dim, load_rope_config(config).rope_theta, training_length(config)
    if base in ("original", "rope") and not extra:
        return own
    if extra == "yarn":
        return S.schedule("yarn", head_dim=d, rope_theta=rope_theta, factor=YARN_FACTOR,
                          original_max_position_embeddings=L)
    if base == "rope_id":
        return S.schedule("rope_id", d, train_len=L, layout="half",
                          temperature="length" if extra == "temp" else None)
    theta = np.array(own.theta)
    theta[theta.size // 2:] = 0.0                                   # half_rope: the slow half is NoPE
    return S.schedule("theta", theta=theta, layout="half")


def rotary_modules(model) -> list[Any]:
    """The model's rotary embeddings: every module holding an ``inv_freq`` buffer."""
    mods = [m for m in model.modules() if hasattr(m, "inv_freq") and hasattr(m, "attention_scaling")]
    if not mods:
        raise BadValue(f"{type(model).__name__} has no rotary embedding (a module with inv_freq and "
                       f"attention_scaling)")
    return mods


def retrofit(model, schedule: Schedule) -> dict[str, Any]:
    """Give every rotary embedding of ``model`` the frequencies ``schedule.theta`` (float32, as
    transformers keeps ``inv_freq``) and its attention factor; nothing else changes. A plane whose
    current ``inv_freq`` is within ``INV_FREQ_REL`` of ``theta_j`` keeps it (the model's own rounding of the
    same frequency), so the model's own schedule leaves it bit for bit unchanged. Returns what was there
    before. A schedule of another width, or not in the half layout, is refused."""
    import torch
    if not isinstance(schedule, Schedule):
        raise BadType(f"schedule must be a ropetheory Schedule, got {type(schedule).__name__}")
    if schedule.layout not in (None, "half") or schedule.rotary_dim not in (None, 2 * schedule.planes):
        raise BadValue(f"transformers rotates in the half layout over whole heads; the schedule has layout "
                       f"{schedule.layout!r}, rotary_dim {schedule.rotary_dim!r}")
    before = []
    for m in rotary_modules(model):
        if m.inv_freq.shape != (schedule.planes,):
            raise BadValue(f"the model's inv_freq has {m.inv_freq.shape[0]} planes, the schedule "
                           f"{schedule.planes}")
        before.append({"inv_freq": m.inv_freq.detach().cpu().numpy().copy(),
                       "attention_scaling": float(m.attention_scaling)})
        old = m.inv_freq.detach().double().cpu().numpy()
        theta = np.array(schedule.theta)
        same = np.abs(old - theta) <= INV_FREQ_REL * theta
        new = torch.as_tensor(np.where(same, old, theta), dtype=torch.float32, device=m.inv_freq.device)
        m.inv_freq.copy_(new)
        if hasattr(m, "original_inv_freq"):
            m.original_inv_freq = new.clone()
        m.attention_scaling = float(schedule.attention_factor)
        m.rope_type = "default"                 # no dynamic update may rebuild inv_freq from the config
    return {"modules": len(before), "before": before}


def retrofitted_schedules(config: dict, schedule: Schedule, n: int) -> list[dict[str, Any]]:
    """Per layer, what a model given ``schedule`` by ``retrofit`` rotates by, in the form
    ``.forward.layer_schedules`` gives (``theta`` in float64, NoPE planes 0; rotary width, attention
    factor); the layer type and window stay the config's. For ``.forward.capture_streams(schedules=...)``."""
    from .forward import layer_schedules
    theta = np.asarray(schedule.theta, dtype=np.float64)
    return [{**sc, "theta": theta, "rotary_dim": 2 * schedule.planes,
             "attention_factor": float(schedule.attention_factor), "rope_type": "retrofit",
             "rope_theta": None} for sc in layer_schedules(config, n)]


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """One fine-tune, the same for every variant: ``steps`` of ``batch`` sequences of ``seq_len`` tokens
    read in order from the training stream, AdamW (``betas``, ``weight_decay``), learning rate warmed up
    linearly for ``warmup`` steps then cosine down to ``min_lr_ratio * lr``, gradients clipped to
    ``clip`` in norm, bf16 autocast on a GPU (float32 on a CPU)."""
    steps: int
    batch: int
    seq_len: int
    lr: float = 3e-4
    warmup: int = 50
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    clip: float = 1.0

    def __post_init__(self) -> None:
        for name in ("steps", "batch", "seq_len"):
            check_integer(name, getattr(self, name), lo=1)
        check_integer("warmup", self.warmup, lo=0)
        check_number("lr", self.lr, lo=0.0, lo_open=True)
        check_number("clip", self.clip, lo=0.0, lo_open=True)
        check_number("weight_decay", self.weight_decay, lo=0.0)
        check_number("min_lr_ratio", self.min_lr_ratio, lo=0.0, hi=1.0)

    @property
    def tokens(self) -> int:
        return self.steps * self.batch * self.seq_len

    def lr_at(self, step: int) -> float:
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        t = (step - self.warmup) / max(1, self.steps - self.warmup)
        return self.lr * (self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def _state_arrays(model, opt) -> dict[str, np.ndarray]:
    arrays = {f"p.{k}": v.detach().float().cpu().numpy() for k, v in model.state_dict().items()}
    for i, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            arrays[f"o.{i}.{k}"] = v.detach().cpu().numpy()
    return arrays


def _restore(model, opt, arrays: dict[str, np.ndarray]) -> None:
    import torch
    sd = model.state_dict()
    missing = sorted(set(sd) - {k[2:] for k in arrays if k.startswith("p.")})
    if missing:
        raise BadValue(f"checkpoint lacks parameters {missing[:3]}")
    model.load_state_dict({k: torch.as_tensor(arrays[f"p.{k}"]).to(v.dtype) for k, v in sd.items()})
    osd = opt.state_dict()
    state: dict[int, dict[str, Any]] = {}
    for k, v in arrays.items():
        if k.startswith("o."):
            _, i, name = k.split(".", 2)
            state.setdefault(int(i), {})[name] = torch.as_tensor(v)
    osd["state"] = state
    opt.load_state_dict(osd)


def _optimizer(model, cfg: FinetuneConfig, fused: bool):
    import torch
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    other = [p for n, p in model.named_parameters() if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": other, "weight_decay": 0.0}], lr=cfg.lr, betas=cfg.betas,
                             fused=fused)


def finetune(model, tokens: np.ndarray, cfg: FinetuneConfig, *, checkpoint: pathlib.Path | None = None,
             key: str = "", checkpoint_every: float = 120.0,
             on_step: Callable[[int, int, float], None] | None = None) -> dict[str, Any]:
    """Fine-tune ``model`` in place on ``tokens`` (``FinetuneConfig``); step ``t`` reads sequences
    ``t*batch .. (t+1)*batch - 1`` of the stream cut into ``seq_len`` tokens, each its own next-token
    loss. With ``checkpoint`` the model, optimiser and log are saved (``ropetheory.store``) at most
    every ``checkpoint_every`` seconds and at the end; a rerun with the same ``key`` resumes from the
    last one and ends with the same weights as an uninterrupted run. ``on_step(step, steps, loss)`` is a
    logging hook called after each step. Returns the log: per step the loss, learning rate and seconds."""
    import torch
    from ..store import CheckpointClock, load_checkpoint, save_checkpoint, unit_saved
    need = cfg.tokens
    if tokens.size < need:
        raise BadValue(f"the fine-tune reads {need} tokens ({cfg.steps} steps x {cfg.batch} x {cfg.seq_len}); "
                       f"the corpus has {tokens.size}: no token may be read twice")
    dev = next(model.parameters()).device
    cuda = dev.type == "cuda"
    model.train()
    opt = _optimizer(model, cfg, fused=cuda)
    log: list[dict[str, float]] = []
    start = 0
    got = load_checkpoint(checkpoint, key)
    if got is not None:
        arrays, meta = got
        _restore(model, opt, arrays)
        start, log = int(meta["step"]), list(meta["log"])
    clock = CheckpointClock(checkpoint_every)
    seqs = tokens[:need].reshape(cfg.steps, cfg.batch, cfg.seq_len)
    t0 = time.perf_counter() - (log[-1]["seconds"] if log else 0.0)
    for step in range(start, cfg.steps):
        for g in opt.param_groups:
            g["lr"] = cfg.lr_at(step)
        ids = torch.as_tensor(seqs[step].astype(np.int64), device=dev)
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=cuda):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        log.append({"step": step + 1, "loss": float(loss.detach()), "lr": cfg.lr_at(step),
                    "seconds": time.perf_counter() - t0})
        if on_step is not None:
            on_step(step + 1, cfg.steps, log[-1]["loss"])
        if checkpoint is not None and (clock.due() or step + 1 == cfg.steps):
            began = time.perf_counter()
            save_checkpoint(checkpoint, key, _state_arrays(model, opt), step=step + 1, log=log)
            clock.written(began)
            unit_saved()
    model.eval()
    return {"log": log, "tokens": need, "steps": cfg.steps, "resumed_from": start}
