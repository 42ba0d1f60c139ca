"""The one rotation check (``ropetheory.models.rotation``): a rotation off by more than the bound is caught on
every capture path (one forward pass, the chunked forward, a key dump's analysis); a correct one passes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from test_hook import tiny_llama
from transformers import LlamaForCausalLM

from ropetheory.models.analyze import analyze_dump
from ropetheory.models.capture import capture
from ropetheory.models.forward import capture_streams
from ropetheory.models.rotation import (FLOAT32_UNIT_ROUNDOFF, check_rotation, report_fields, rotate_like_hf,
                                        rotation_bound)

#: a relative change of the model's inverse frequencies far past float32's (``ANGLE_ULPS u ~ 2e-6``): the
#: angle at position p moves by ``p theta_j 1e-3``, hundreds of times the bound for p >= 20
WRONG_FREQUENCY = 1e-3

THETA = 10000.0 ** (-np.arange(8) / 8)


def wrong_rope(model: LlamaForCausalLM) -> LlamaForCausalLM:
    """The model with every inverse frequency off by ``WRONG_FREQUENCY`` (relative)."""
    with torch.no_grad():
        model.model.rotary_emb.inv_freq.mul_(1 + WRONG_FREQUENCY)
    return model


@pytest.fixture(scope="module")
def ids():
    torch.manual_seed(1)
    return torch.randint(0, 97, (1, 96))


def test_an_entry_past_the_bound_is_caught_and_one_within_it_passes():
    rng = np.random.default_rng(0)
    pre = rng.standard_normal((2, 50, 16))
    pos = np.arange(1000, 1050)
    exact = rotate_like_hf(pre, THETA, 16, pos)
    bound = rotation_bound(pre, THETA, 16, pos)
    for factor, within in ((2.0, False), (0.5, True)):
        post = exact.copy()
        post[1, 7, 3] += factor * bound[1, 7, 3]
        chk = check_rotation([(pre, post)], THETA, 16, pos)
        assert chk.within_bound is within and chk.worst_ratio == pytest.approx(factor, rel=1e-6)
        assert chk.positions_checked == 50 and chk.last_position == 1049


def test_transformers_float32_rotation_at_long_positions_is_within_the_bound():
    """transformers' own float32 arithmetic (inv_freq by pow, float32 angles) at positions near 60k."""
    rng = np.random.default_rng(1)
    pre = rng.standard_normal((3, 256, 16)).astype(np.float32)
    pos = np.arange(60_000, 60_256)
    inv = 1.0 / (10000.0 ** (torch.arange(0, 16, 2, dtype=torch.int64).float() / 16))
    angles = torch.tensor(pos, dtype=torch.float32)[:, None] * inv[None]
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()
    x = torch.tensor(pre)
    post = (x * cos + torch.cat([-x[..., 8:], x[..., :8]], -1) * sin).numpy()
    chk = check_rotation([(pre, post)], THETA, 16, pos, unit_roundoff=FLOAT32_UNIT_ROUNDOFF)
    assert chk.within_bound and chk.max_abs_diff > 0, chk


def test_one_forward_capture_checks_every_position_and_catches_a_wrong_rotation(ids):
    good = capture(tiny_llama(), ids)["meta"]["rotation_check"]
    assert good["within_bound"] and good["positions_checked"] == 96
    bad = capture(wrong_rope(tiny_llama()), ids)["meta"]["rotation_check"]
    assert not bad["within_bound"] and bad["worst_ratio"] > 1
    assert capture(tiny_llama(), ids, check=False)["meta"]["rotation_check"] is None


def test_the_chunked_capture_checks_its_first_and_last_chunk_and_catches_a_wrong_rotation(ids):
    good = capture_streams(tiny_llama(), ids[0].tolist(), L=32, tokens_per_pass=40)
    for st in good["streams"]:
        assert st.rotation.within_bound and st.rotation.positions_checked == 40 + 16
        assert st.rotation.last_position == 95
    bad = capture_streams(wrong_rope(tiny_llama()), ids[0].tolist(), L=32, tokens_per_pass=40)
    assert not any(st.rotation.within_bound for st in bad["streams"])


def test_a_dump_analysis_runs_the_check_on_the_dump_and_reports_what_it_checked(ids):
    dump = capture(tiny_llama(), ids)
    heads = analyze_dump(dump)["heads"]
    assert all(h["rotation_within_bound"] is True and h["rotation_positions_checked"] == 96 for h in heads)
    dump["keys_post"] = rotate_like_hf(dump["keys_pre"], np.asarray(dump["meta"]["theta"]) * (1 + WRONG_FREQUENCY),
                                       16, dump["positions"]).astype(np.float32)
    heads = analyze_dump(dump)["heads"]
    assert not any(h["rotation_within_bound"] for h in heads)


def test_a_head_that_was_not_checked_says_so():
    assert report_fields(None) == {"rotation_within_bound": None, "rotation_max_abs_diff": None,
                                   "rotation_worst_ratio": None, "rotation_positions_checked": 0}


def test_an_extension_row_says_rotation_ok_only_when_every_head_was_checked():
    from ropetheory.models.extension import _rotation_ok
    ok, failed, unchecked = {"rotation_within_bound": True}, {"rotation_within_bound": False}, report_fields(None)
    assert _rotation_ok([ok, ok]) is True and _rotation_ok([ok, failed]) is False
    assert _rotation_ok([ok, unchecked]) is None
