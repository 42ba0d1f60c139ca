"""Issue 35's leftovers, each a claim: spelled-out names with a cheap alias, Arb's Abel ratio from the
weights' own formulas, a rotation flag that is computed and never defaulted (old analyses included), a dump
held to the bound of its own type, and host corpora that are reported, never silently mixed."""
from __future__ import annotations

import hashlib
import json
import warnings
from fractions import Fraction

import numpy as np
import pytest

import ropetheory as rt
from ropetheory.models import extension as ext
from ropetheory.spectra.weights import AffineWeights
from ropetheory.theory import theorems as tm


def test_limit_reads_its_old_field_name_e0_as_nope_energy_with_a_warning():
    v = np.arange(1.0, 17.0)
    lim = tm.predicted_limit(rt.schedule("partial", head_dim=16), v)
    e = tm.plane_energies(v / np.linalg.norm(v))
    nope = rt.spectra.nope_planes(rt.schedule("partial", head_dim=16))
    assert nope.any() and lim.nope_energy == pytest.approx(float(e[nope].sum()), rel=1e-15)
    assert lim.partial_formula >= lim.nope_energy
    with pytest.warns(DeprecationWarning, match=r"Limit\.e0 is now Limit\.nope_energy"):
        assert lim.e0 == lim.nope_energy


def test_sink_head_reads_and_builds_from_its_old_field_name_d_with_a_warning():
    from ropetheory.studies.sinks import SinkHead
    with pytest.warns(DeprecationWarning, match=r"SinkHead: d= is now head_dim="):
        head = SinkHead(d=64)
    assert head.head_dim == 64 and head.direction().shape == (64,)
    with pytest.warns(DeprecationWarning, match=r"SinkHead\.d is now SinkHead\.head_dim"):
        assert head.d == 64
    with pytest.raises(TypeError, match="give head_dim= only"):
        SinkHead(d=64, head_dim=64)


@pytest.mark.parametrize("intercept, slope, n", [(1.0, 0.0, 1), (0.5, 0.25, 1000), (0.0, 3.0, 10 ** 12),
                                                 (2.0, 1e-9, 7)])
def test_the_abel_ratio_ball_holds_the_exact_ratio_of_affine_weights(intercept, slope, n):
    """``c_n = (w_{n-1} + TV_n) / W_n`` with ``w_i = a + b i``: the ball contains the exact rational value."""
    from flint import arb, fmpq
    a, b = Fraction(intercept), Fraction(slope)
    exact = (a + b * (n - 1) + b * (n - 1)) / (n * a + b * n * (n - 1) / 2)
    ball = tm.abel_ratio_arb(n, AffineWeights(intercept, slope))
    assert ball.overlaps(arb(fmpq(exact.numerator, exact.denominator)))
    assert float(ball.rad()) <= 1e-15 * float(exact)


def test_an_old_analysis_flag_counts_only_where_the_chunked_capture_computed_it():
    legacy = [{ext.LEGACY_ROTATION_FLAG: True}, {ext.LEGACY_ROTATION_FLAG: True}]
    assert ext._rotation_ok(legacy, {"model": "m", "chunk": 4096}) is True
    assert ext._rotation_ok([{ext.LEGACY_ROTATION_FLAG: False}], {"tokens_per_pass": 2048}) is False
    dump_meta = {"model": "dump", "rotation_check": None}          # a key dump's analysis: True was a default
    assert ext._rotation_ok(legacy, dump_meta) is None
    assert ext._rotation_ok([{"rotation_within_bound": True}], dump_meta) is True


def _dump(post_error: float) -> dict:
    """A float64 key dump (1 layer, 1 head, 64 positions, d = 8) whose post-RoPE vectors are the exact
    rotation plus ``post_error`` times each entry's size."""
    from ropetheory.models.rotation import rotate_like_hf
    rng = np.random.default_rng(3)
    theta = np.asarray(rt.schedule("rope", head_dim=8, base=100.0).theta)
    pos = np.arange(64)
    pre = {k: rng.standard_normal((1, 1, 64, 8)) for k in ("keys", "queries")}
    post = {k: rotate_like_hf(x, theta, 8, pos) for k, x in pre.items()}
    post = {k: x * (1 + post_error) for k, x in post.items()}
    meta = {"architecture": "synthetic", "theta": theta.tolist(), "rotary_dim": 8, "head_dim": 8,
            "attention_factor": 1.0, "rope_type": "default", "max_position_embeddings": 16,
            "config": {"max_position_embeddings": 16, "head_dim": 8, "num_attention_heads": 1,
                       "num_key_value_heads": 1}}
    return {"keys_pre": pre["keys"], "keys_post": post["keys"], "queries_pre": pre["queries"],
            "queries_post": post["queries"], "positions": pos, "meta": meta}


def test_a_float64_dump_is_held_to_float64s_rotation_bound_not_float32s():
    """An error of 1e-9 relative is far inside float32's bound (~2^-24 times tens) and far outside float64's."""
    from ropetheory.models.dump import analyze_dump
    exact = analyze_dump(_dump(0.0))["heads"]
    off = analyze_dump(_dump(1e-9))["heads"]
    assert all(h["rotation_within_bound"] is True and h["rotation_positions_checked"] == 64 for h in exact)
    assert all(h["rotation_within_bound"] is False and h["rotation_worst_ratio"] > 1 for h in off)


def test_an_extension_table_refuses_analyses_of_different_texts():
    def res(sha):
        return {"meta": {"model": "m", "text": {"sha256": sha}}}
    assert ext.one_text([res("a" * 64), res("a" * 64)]) == "a" * 64
    with pytest.raises(ValueError, match="read 2"):
        ext.one_text([res("a" * 64), res("b" * 64)])
    with pytest.raises(ValueError, match="text sha256 None"):
        ext.one_text([res("a" * 64), {"meta": {"model": "dump"}}])


class CharTokenizer:
    """A tokenizer of one id per character (mod ``SIZE``): enough for the corpus recipe, no download."""
    SIZE = 300

    def __len__(self):
        return self.SIZE

    def __call__(self, texts, add_special_tokens=False):
        ids = [[ord(c) % self.SIZE for c in t] for t in ([texts] if isinstance(texts, str) else texts)]
        return {"input_ids": ids[0] if isinstance(texts, str) else ids}

    def convert_tokens_to_ids(self, token):
        return ord(token) % self.SIZE


def test_stored_training_data_from_another_machines_corpus_is_used_with_a_warning(tmp_path):
    from ropetheory.training import corpus
    kw = dict(max_bytes=20_000, vocab_size=128, tokenizer=CharTokenizer(), quiet=True)
    built = corpus.build_corpus(tmp_path, **kw)
    assert corpus.host_difference(built["recipe"], 20_000) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")                      # this machine's own data: no warning
        corpus.build_corpus(tmp_path, **kw)
    recipe = json.loads((tmp_path / "data.json").read_text())
    recipe["files"][-1]["sha256"] = hashlib.sha256(b"another machine's text").hexdigest()
    recipe["python"] = "3.0.0"
    (tmp_path / "data.json").write_text(json.dumps(recipe))
    with pytest.warns(UserWarning, match=r"another machine's corpus \(1 of its \d+ texts .* Python 3\.0\.0 there"):
        again = corpus.build_corpus(tmp_path, **kw)
    assert again["recipe"]["tokens_sha256"] == built["recipe"]["tokens_sha256"]     # its own data, as stored
