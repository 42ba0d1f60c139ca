"""Spectral engine: closed form == streaming == brute force; 50-digit agreement to n = 10^12; bad input."""
import math

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

import ropetheory as rt
from ropetheory import spectra as sp
from ropetheory.rope import apply_rope

from reference import rank1_metrics_mp
from strategies import examples, clouds, layouts, schedules, unit_vectors

# closed form vs explicit sums at small n: both are O(n d) float64 sums of O(1) terms
SMALL_N_ATOL = 1e-12
# the spec's bound: rho_n and srank vs an independent 50-digit evaluation
MP_RTOL = 1e-10
# weights from a callable vs from an array: the same rows, W summed in another order (compensated in
# the stream, pairwise in numpy): agreement to a few ulp; 1e-12 leaves margin
STREAM_RTOL = 1e-12
#: lengths per drawn curve in the property tests: a fixed count, so one compiled stream serves each head width
CURVE_LENGTHS = 4
#: the largest length a property test draws for its brute-force SVD
MAX_DRAWN_LENGTH = 300
#: rows of the drawn clouds of the Lemma 2 test (their prefixes are the curves' lengths)
CLOUD_ROWS = 40


def brute_force_metrics(theta, v, lengths, layout="interleaved", rows=MAX_DRAWN_LENGTH):
    """Build Rope(X) (``rows`` x d, constant rows ``v``) and take numpy's SVD of its first n rows for each n in
    ``lengths``: the naive way, for small n only. Rope rotates each row by its own position, so the first n
    rows of Rope(X) are Rope(X[:n]); one ``rows``-row rotation serves every length (one compiled program per
    head width and layout)."""
    X = np.tile(v, (rows, 1))
    Y_all = np.asarray(apply_rope(theta, X, layout=layout))
    out = []
    for n in lengths:
        Y = Y_all[:n]
        s = np.linalg.svd(Y, compute_uv=False)
        s0 = np.linalg.svd(X[:n], compute_uv=False)[0]
        out.append({"rho": s[0] / s0, "srank": (s ** 2).sum() / s[0] ** 2,
                    "frob_ratio": np.linalg.norm(Y) / np.linalg.norm(X[:n])})
    return out


@examples(25)
@given(st.data())
def test_closed_form_equals_streaming_equals_brute_force_svd(data):
    name, d, theta = data.draw(schedules())
    v = data.draw(unit_vectors(d))
    layout = data.draw(layouts)
    # always CURVE_LENGTHS of them, repeats allowed (a repeat streams no position): the streamed program is
    # compiled per head width and step, not per count of lengths
    lengths = sorted(data.draw(st.lists(st.integers(1, MAX_DRAWN_LENGTH), min_size=CURVE_LENGTHS,
                                        max_size=CURVE_LENGTHS)))
    closed = sp.rank1_curve(theta, v, lengths, layout=layout)
    stream = sp.rank1_stream_curve(theta, v, lengths, layout=layout,
                                   positions_per_step=data.draw(st.sampled_from([1, 7, 64])))
    for idx, (n, bf) in enumerate(zip(lengths, brute_force_metrics(theta, v, lengths, layout=layout), strict=True)):
        for key in ("rho", "srank", "frob_ratio"):
            assert abs(closed[key][idx] - bf[key]) < SMALL_N_ATOL * max(1.0, bf[key]), (key, n)
            assert abs(stream[key][idx] - bf[key]) < SMALL_N_ATOL * max(1.0, bf[key]), (key, n)


@examples(15)
@given(st.data())
def test_affine_weights_closed_form_equals_streaming(data):
    name, d, theta = data.draw(schedules())
    v = data.draw(unit_vectors(d))
    a = data.draw(st.sampled_from([0.0, 0.5, 1.0]))
    b = data.draw(st.sampled_from([0.01, 1.0, 3.0]))
    lengths = [1, 2, 17, 250] if a > 0 else [2, 3, 17, 250]    # a = 0: W_1 = 0, rho_1 undefined
    closed = sp.rank1_curve(theta, v, lengths, weights=sp.AffineWeights(a, b))
    w = a + b * np.arange(250.0)
    stream = sp.rank1_stream_curve(theta, v, lengths, weights=w, positions_per_step=16)
    for key in ("rho", "srank"):
        np.testing.assert_allclose(closed[key], stream[key], rtol=SMALL_N_ATOL)


@examples(20)
@given(st.data())
def test_lemma2_frobenius_norm_is_invariant_for_general_clouds(data):
    name, d, theta = data.draw(schedules())
    n = data.draw(st.integers(1, CLOUD_ROWS))
    X = data.draw(clouds(d, CLOUD_ROWS))     # the prefix of n rows and all rows: programs compiled per
    Y_all = np.asarray(apply_rope(theta, X, offset=data.draw(st.integers(0, 10 ** 13))))   # head width only
    curve = sp.rope_matrix_curve(theta, X, [n, CLOUD_ROWS])
    for i, rows in enumerate((n, CLOUD_ROWS)):
        Y = Y_all[:rows]                      # Rope rotates each row by its own position
        assert abs(np.linalg.norm(Y) / np.linalg.norm(X[:rows]) - 1) < 1e-14
        assert abs(curve["frob_ratio"][i] - 1) < 1e-13
        ref = sp.matrix_metrics(Y)
        assert abs(curve["srank"][i] - ref["srank"]) < 1e-10 * ref["srank"]


MP_CASES = [
    ("rope", dict(base=10000.0)), ("partial", dict(fraction=1.0)), ("rope_id", dict(train_len=4096, fraction=1.0)),
]
MP_LENGTHS = [1, 7, 4096, 10 ** 6, 10 ** 12]


def _mp_schedules():
    for d in (2, 80, 128):
        P = d // 2
        for name, params in [("rope", dict(base=10000.0)), ("rope", dict(base=5e5)),
                             ("partial", dict(fraction=0.5 if P > 1 else 1.0)),
                             ("high_frequency", dict(train_len=4096)),
                             ("rope_id", dict(train_len=4096, fraction=0.5 if P > 1 else 1.0))]:
            if name == "high_frequency" and d == 2:
                continue          # undefined with one plane (ValueError, tested in test_schedules)
            yield pytest.param(d, name, params, id=f"{name}-{params}-d{d}")


@pytest.mark.parametrize("d,name,params", list(_mp_schedules()))
def test_rank1_metrics_match_50_digit_reference_up_to_1e12(d, name, params):
    theta = rt.schedule(name, head_dim=d, **params).theta
    v = np.random.default_rng(d).standard_normal(d)
    v /= np.linalg.norm(v)
    got = sp.rank1_curve(theta, v, MP_LENGTHS)
    for idx, n in enumerate(MP_LENGTHS):
        ref = rank1_metrics_mp(theta, v, n)
        assert abs(got["rho"][idx] / ref["rho"] - 1) < MP_RTOL, (n, got["rho"][idx], ref["rho"])
        assert abs(got["srank"][idx] / ref["srank"] - 1) < MP_RTOL, (n, got["srank"][idx], ref["srank"])


def test_log_grid_has_200_distinct_lengths_from_1_to_1e12():
    g = sp.log_grid(1e12, 200)
    assert len(g) == 200 and g[0] == 1 and g[-1] == 10 ** 12 and np.all(np.diff(g) > 0)


def test_curve_memory_does_not_depend_on_n():
    """The closed form never materialises anything of size n: 10^18 positions work."""
    theta = rt.schedule("rope", head_dim=8).theta
    out = sp.rank1_curve(theta, np.ones(8), [10 ** 18])
    assert np.isfinite(out["rho"][0]) and abs(out["frob_ratio"][0] - 1) < 1e-12


@pytest.mark.parametrize("call, match", [
    (lambda th: sp.rank1_curve(th, np.zeros(8), [10]), "v must be non-zero"),
    (lambda th: sp.rank1_curve(th, np.ones(7), [10]), "v must have a positive even length .* got 7"),
    (lambda th: sp.rank1_curve(th, np.ones(6), [10]), "v has length 6 but the schedule has 4 planes"),
    (lambda th: sp.rank1_curve(th, [1, np.inf, 0, 0, 0, 0, 0, 0], [10]), r"v\[1\] = inf"),
    (lambda th: sp.rank1_curve(th, np.ones(8), [0]), r"lengths\[0\] must be >= 1, got 0"),
    (lambda th: sp.rank1_curve(th, np.ones(8), [2.5]), r"lengths\[0\] must be a whole number, got 2.5"),
    (lambda th: sp.rank1_gram(th, np.ones(8), -3), "n must be >= 1, got -3"),
    (lambda th: sp.rank1_curve(th, np.ones(8), [10], weights=[1, 2]), "closed forms take weights"),
    (lambda th: sp.rank1_stream_curve(th, np.ones(8), [3], weights=[1.0, -1.0, 1.0]), r"w\[1\] = -1.0"),
    (lambda th: sp.rank1_stream_curve(th, np.ones(8), [3], weights=[1.0, np.nan, 1.0]), r"w\[1\] = nan"),
    (lambda th: sp.rank1_stream_curve(th, np.ones(8), [5], weights=[1.0, 1.0]), "at least 5 entries"),
    (lambda th: sp.AffineWeights(-1.0, 0.0), "AffineWeights.intercept must be a finite number >= 0, got -1.0"),
    (lambda th: sp.matrix_metrics(np.zeros((3, 4))), "zero matrix"),
])
def test_engine_bad_input_names_the_value(call, match):
    theta = rt.schedule("rope", head_dim=8).theta
    with pytest.raises((ValueError, TypeError), match=match):
        call(theta)


def _adversarial_rows(pos, X):
    return X[jnp.clip(pos, 0, X.shape[0] - 1)]


def test_streaming_gram_is_compensated_exact_rational_sum_on_adversarial_rows():
    """Rows (1e8, 1e8), (1, 1), (1e8, -1e8), ...: a plain float64 running sum of x y loses every 1
    (1e16 + 1 == 1e16); the compensated kernel keeps the exact rational sum, here k."""
    from fractions import Fraction
    k = 50
    X = np.array([[1e8, 1e8], [1.0, 1.0], [1e8, -1e8]] * k)
    out = sp.stream_gram_curve([0.0], _adversarial_rows, (jnp.asarray(X),), [X.shape[0]], positions_per_step=1,
                               keep_gram=True)
    G = out["gram"][0]
    exact_xy = sum(Fraction(a) * Fraction(b) for a, b in X)
    exact_xx = sum(Fraction(a) * Fraction(a) for a, _ in X)
    assert exact_xy == k
    assert G[0, 1] == float(exact_xy) and G[1, 0] == float(exact_xy)
    assert G[0, 0] == float(exact_xx)
    plain = 0.0
    for a, b in X:
        plain += a * b
    assert plain != float(exact_xy)                      # the case is adversarial for a plain sum


def test_stream_callable_weights_are_evaluated_chunk_by_chunk_and_match_the_array():
    """A weight function is evaluated inside the stream (no length-n host array), equals the array
    path, and may be non-finite past the last length (masked, not multiplied by 0)."""
    theta = rt.schedule("rope", head_dim=8).theta
    v = np.random.default_rng(3).standard_normal(8)
    n = 5000
    def w_fn(pos):                                                  # inf at pos = n: past the end
        return 1.0 / (n - pos).astype(jnp.float64)

    lengths = [100, 4999, 5000]
    a = sp.rank1_stream_curve(theta, v, lengths, weights=w_fn, positions_per_step=64)
    b = sp.rank1_stream_curve(theta, v, lengths, weights=1.0 / (n - np.arange(n, dtype=np.float64)),
                              positions_per_step=64)
    np.testing.assert_allclose(a["rho"], b["rho"], rtol=STREAM_RTOL)
    np.testing.assert_allclose(a.weight_sum, b.weight_sum, rtol=STREAM_RTOL)
    assert np.all(np.isfinite(a["rho"]))
    with pytest.raises(ValueError, match="finite and >= 0"):
        sp.rank1_stream_curve(theta, v, [10], weights=lambda pos: -jnp.ones(pos.shape))


@pytest.mark.parametrize("offset", [0, 12345, 2 ** 62])
def test_every_curve_over_positions_takes_the_same_offset(offset):
    """offset = k means positions k .. k+n-1 in every function over positions (closed form, batch,
    stream, general matrix), equal to a brute-force SVD of the rotated rows."""
    theta = rt.schedule("rope", head_dim=8, base=100.0).theta
    v = np.random.default_rng(5).standard_normal(8)
    v /= np.linalg.norm(v)
    n = [5, 40]
    Y = np.asarray(apply_rope(theta, np.tile(v, (40, 1)), offset=offset))
    brute = [np.linalg.svd(Y[:m], compute_uv=False)[0] / np.sqrt(m) for m in n]
    got = [sp.rank1_curve(theta, v, n, offset=offset)["rho"],
           sp.rank1_curves_batch(theta, v[None], n, offset=offset).rho[0],
           sp.rank1_stream_curve(theta, v, n, offset=offset, positions_per_step=8)["rho"],
           sp.rope_matrix_curve(theta, np.tile(v, (40, 1)), n, offset=offset, positions_per_step=8)["rho"]]
    for g in got:
        np.testing.assert_allclose(g, brute, rtol=0, atol=SMALL_N_ATOL)
    with pytest.raises(ValueError, match="offset"):
        sp.rank1_curve(theta, v, [10], offset=2 ** 63 - 5)
    with pytest.raises(ValueError, match="offset must be a whole number"):
        sp.rank1_stream_curve(theta, v, [10], offset=1.5)


@pytest.mark.parametrize("p0", [0, 4095, 10 ** 9, 10 ** 12, 2 ** 62 - 5000])
def test_anchored_phases_stay_within_their_stated_error_at_any_position(p0):
    """cos/sin stepped from an exact anchor by one complex product = cos/sin of the exactly reduced angle,
    to ANCHORED_PHASE_ABS_ERR, however far the anchor is (no accumulation)."""
    from ropetheory.core import angles
    th = rt.schedule("rope", head_dim=128, base=1e4).theta
    chunks = jnp.asarray(angles.turn_chunks(th))
    table = angles.phase_table(chunks, 4096)
    c, s = angles.phases_from_anchor(angles.anchor_angles(jnp.int64(p0), chunks), table)
    exact = angles.rope_angles(jnp.int64(p0) + jnp.arange(4096, dtype=jnp.int64), chunks)
    err = max(float(jnp.max(jnp.abs(c - jnp.cos(exact)))), float(jnp.max(jnp.abs(s - jnp.sin(exact)))))
    assert err <= angles.ANCHORED_PHASE_ABS_ERR


def constant_rows(pos, v):
    """Rows ``v`` at every position, for ``stream_gram_curve`` (a module-level function: a static key)."""
    return jnp.broadcast_to(v[None, :], (pos.shape[0], v.shape[0]))


def test_streaming_with_anchored_phases_equals_exact_phases():
    th = rt.schedule("rope", head_dim=64, base=1e4).theta
    v = np.random.default_rng(5).standard_normal(64)
    L = [1, 100, 5000, 20000]
    from ropetheory.spectra import stream
    vv = jnp.asarray(v / np.linalg.norm(v))
    a = stream.stream_gram_curve(th, constant_rows, (vv,), L, positions_per_step=1024, keep_gram=True)
    e = stream.stream_gram_curve(th, constant_rows, (vv,), L, positions_per_step=1024, keep_gram=True,
                                 phases="exact")
    scale = np.asarray(L, float)[:, None, None]
    assert np.max(np.abs(a["gram"] - e["gram"]) / scale) <= 4 * 2.5e-14
    np.testing.assert_allclose(a["lam"], e["lam"], rtol=1e-12)


#: the phase-sum stream against the rotated-rows stream, relative to the trace: both carry the anchored
#: phases' error (ANCHORED_PHASE_ABS_ERR, ~1e-14 per element) and float64 sums of C products per step
PHASE_SUM_GRAM_RTOL = 1e-13


@pytest.mark.parametrize("offset", [0, 10 ** 12 + 7])
def test_the_rank1_stream_from_weighted_phase_sums_equals_the_rotated_rows_stream(offset):
    """``rank1_stream_curve``'s Gram, assembled from the weighted phase sums of one product per step, is the
    Gram of the rotated rows ``sqrt(w_i) R_i v`` (the general kernel, exact phases), at any offset."""
    from ropetheory.spectra import phase_stream, stream
    from ropetheory.core.angles import turn_chunks
    sched = rt.schedule("rope", head_dim=32, base=1e4)
    rng = np.random.default_rng(11)
    v = rng.standard_normal(32)
    v_il = jnp.asarray(sp.prepare_rank1(sched, v, "interleaved", offset, 3000 + offset)[1])     # unit, rotated
    w = rng.uniform(0.0, 2.0, 3000)
    L = [1, 7, 300, 2999, 3000]
    lam, tr = phase_stream.rank1_phase_stream_kernel(jnp.asarray(turn_chunks(sched)), jnp.asarray(L), v_il,
                                                     (jnp.asarray(w),), stream._array_weights, 256)
    rows = jnp.sqrt(jnp.asarray(w))[:, None] * v_il[None, :]
    ref = stream.stream_gram_curve(sched, stream._matrix_rows, (rows,), L, positions_per_step=256, phases="exact")
    np.testing.assert_allclose(np.asarray(tr), ref["trace"], rtol=PHASE_SUM_GRAM_RTOL)
    np.testing.assert_allclose(np.asarray(lam), ref["lam"], rtol=PHASE_SUM_GRAM_RTOL)
    np.testing.assert_allclose(np.asarray(tr), np.cumsum(w)[np.asarray(L) - 1], rtol=PHASE_SUM_GRAM_RTOL)


def test_one_step_of_weighted_phase_sums_is_the_direct_sum_of_weighted_phases():
    """``D_jk = sum_k w_k e^{i (p0+k)(theta_j - theta_k)}``, ``S_jk`` with ``+``, from one table product and
    the anchors, against the direct float64 sums of exactly reduced phases."""
    from ropetheory.spectra import phase_stream
    from ropetheory.core.angles import phase_table, rope_angles, turn_chunks
    sched = rt.schedule("rope", head_dim=8, base=100.0)
    chunks = jnp.asarray(turn_chunks(sched))
    C, p0 = 64, 123456789
    w = np.random.default_rng(2).uniform(0, 1, C)
    c, s = phase_table(chunks, C)
    got = np.asarray(phase_stream.weighted_phase_sums_step(jnp.concatenate([c, s], 1), jnp.asarray(w),
                                                           rope_angles(jnp.asarray([p0]), chunks)[0]))
    e = np.exp(1j * np.asarray(rope_angles(p0 + jnp.arange(C, dtype=jnp.int64), chunks)))    # (C, P)
    D = np.einsum("c,cj,ck->jk", w, e, e.conj())
    S = np.einsum("c,cj,ck->jk", w, e, e)
    np.testing.assert_allclose(got, np.stack([D.real, D.imag, S.real, S.imag]), rtol=0, atol=1e-13 * w.sum())


def test_a_block_of_steps_as_one_product_is_the_direct_sum_of_weighted_phases():
    """``weighted_phase_sums_block``: S steps of C positions from one ``(S, C) x (C, 4T)`` product, the steps'
    phases ``e^{i s C theta}`` and the block's anchor, against the direct float64 sums of exact phases."""
    from ropetheory.spectra import phase_stream
    from ropetheory.core.angles import phase_table, rope_angles, turn_chunks
    sched = rt.schedule("rope", head_dim=8, base=100.0)
    chunks = jnp.asarray(turn_chunks(sched))
    S, C, p0 = 5, 16, 10 ** 12 + 3
    w = np.random.default_rng(3).uniform(0, 1, (S, C))
    c, s = phase_table(chunks, C)
    steps = np.exp(1j * np.asarray(rope_angles(jnp.arange(S, dtype=jnp.int64) * C, chunks)))
    got = np.asarray(phase_stream.weighted_phase_sums_block(
        phase_stream.pair_products(jnp.concatenate([c, s], 1)), jnp.asarray(w), jnp.asarray(steps),
        rope_angles(jnp.asarray([p0]), chunks)[0]))
    e = np.exp(1j * np.asarray(rope_angles(p0 + jnp.arange(S * C, dtype=jnp.int64), chunks)))    # (S C, P)
    D = np.einsum("c,cj,ck->jk", w.ravel(), e, e.conj())
    Sm = np.einsum("c,cj,ck->jk", w.ravel(), e, e)
    np.testing.assert_allclose(got, np.stack([D.real, D.imag, Sm.real, Sm.imag]), rtol=0, atol=1e-13 * w.sum())


@pytest.mark.parametrize("offset", [0, 10 ** 12 + 7])
@pytest.mark.parametrize("chunk, block", [(256, 4), (1024, 16)])
def test_the_blocked_phase_stream_equals_one_product_per_step(offset, chunk, block):
    """Blocks of steps (``block > 1``) give the stream of one product per step, at any offset, with lengths
    that end inside a block."""
    from ropetheory.spectra import phase_stream, stream
    from ropetheory.core.angles import turn_chunks
    sched = rt.schedule("rope", head_dim=16, base=1e4)
    rng = np.random.default_rng(5)
    v_il = jnp.asarray(sp.prepare_rank1(sched, rng.standard_normal(16), "interleaved", offset, 5000 + offset)[1])
    w = (jnp.asarray(rng.uniform(0.0, 2.0, 5000)),)
    ch, L = jnp.asarray(turn_chunks(sched)), jnp.asarray([1, 7, 300, 1023, 1024, 4999, 5000])
    ref = phase_stream.rank1_phase_stream_kernel(ch, L, v_il, w, stream._array_weights, 64)
    got = phase_stream.rank1_phase_stream_kernel(ch, L, v_il, w, stream._array_weights, chunk, block=block)
    for g, r in zip(got, ref, strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=PHASE_SUM_GRAM_RTOL)


@examples(50)
@given(chunk=st.integers(1, 1 << 24), d=st.sampled_from([2, 8, 64, 128, 256, 512]),
       lengths=st.lists(st.integers(1, 10 ** 12), min_size=1, max_size=300))
def test_the_phase_stream_step_and_block_are_valid_for_any_request(chunk, d, lengths):
    """``phase_block`` divides the step it is given and keeps the pair table and the block's product within
    ``PHASE_BLOCK_BYTES``; ``default_phase_step`` is a power of two within its bounds."""
    from ropetheory.spectra import phase_stream as ps
    b = ps.phase_block(chunk, d)
    assert b >= 1 and chunk % b == 0
    if b > 1:                    # a block of at least MIN_BLOCK steps whose table and product fit the budget
        row_bytes = 8 * d * (d // 2 + 1)
        assert b >= ps.MIN_BLOCK["cpu"] and b * row_bytes <= ps.PHASE_BLOCK_BYTES["cpu"]
        assert (chunk // b) * row_bytes <= ps.PHASE_BLOCK_BYTES["cpu"]
    step = ps.default_phase_step(lengths)
    assert step & (step - 1) == 0 and ps.MIN_DEFAULT_STEP <= step <= ps.MAX_DEFAULT_STEP["cpu"]


def _sequential_sum(xs) -> float:
    """The plain running sum, one float64 addition per term (what an uncompensated loop computes)."""
    s = 0.0
    for x in xs:
        s += float(x)
    return s


def test_compensated_prefix_sums_are_exact_where_a_plain_running_sum_loses_every_term():
    # 2^53 then ones: each plain addition 2^53 + 1 rounds back to 2^53 (ties to even); the exact sums are
    # whole numbers below 2^54 with an even last part, so float64 holds them and Neumaier finds them
    x = np.concatenate([[2.0 ** 53], np.ones(1000)])
    exact = np.array([math.fsum(x[:k + 1]) for k in range(x.size)])
    assert _sequential_sum(x) == 2.0 ** 53 != exact[-1]                    # the plain sum loses all 1000
    got = sp.neumaier_cumsum(x)
    np.testing.assert_array_equal(got[::2], exact[::2])                    # even counts: exactly representable
    assert np.all(np.abs(got - exact) <= 1.0)                              # odd ones: within their rounding


def test_array_weights_sum_to_the_exact_total_after_a_huge_first_weight():
    theta = rt.schedule("rope", head_dim=4, base=1e4)
    v = np.array([1.0, 0.5, -0.25, 2.0])
    w = np.concatenate([[2.0 ** 53], np.ones(2000)])
    lengths = [1, 3, 501, 2001]                    # 2^53 plus an even count of ones: representable
    c = sp.rank1_stream_curve(theta, v, lengths, weights=w, positions_per_step=64)
    np.testing.assert_array_equal(c.weight_sum, [math.fsum(w[:n]) for n in lengths])
    assert np.cumsum(w)[-1] != math.fsum(w)                               # what the plain cumsum gave


def test_rope_matrix_curve_denominator_is_compensated_like_its_numerator():
    # NoPE rotates nothing, so Rope(X_:n) = X_:n and every Frobenius ratio is 1 exactly when the streamed
    # numerator and the direct denominator both hold the exact sum 2^54 + (n - 1) of the squared rows
    X = np.zeros((1001, 2))
    X[0, 0] = 2.0 ** 27
    X[1:, 0] = 1.0
    assert _sequential_sum(X[:, 0] ** 2) != math.fsum(X[:, 0] ** 2)       # a plain sum loses the ones
    c = sp.rope_matrix_curve(np.zeros(1), X, [1001], positions_per_step=1)
    np.testing.assert_array_equal(c.frob_ratio, [1.0])


def test_affine_weights_read_their_old_field_names_a_and_b_as_intercept_and_slope_with_a_warning():
    w = sp.AffineWeights(intercept=2.0, slope=0.25)
    with pytest.warns(DeprecationWarning, match=r"AffineWeights\.a is now AffineWeights\.intercept"):
        assert w.a == 2.0
    with pytest.warns(DeprecationWarning, match=r"AffineWeights\.b is now AffineWeights\.slope"):
        assert w.b == 0.25
    with pytest.warns(DeprecationWarning, match="AffineWeights: a= is now intercept="):
        assert sp.AffineWeights(a=2.0, slope=0.25) == w
    with pytest.raises(TypeError, match="give intercept= only"):
        sp.AffineWeights(a=2.0, intercept=2.0)
    assert w.total(10) == 10 * 2.0 + 0.25 * 10 * 9 / 2                  # W_n = n a + b n (n-1)/2


@pytest.mark.parametrize("slope", [0.0, 0.5])
def test_the_sum_phases_computed_on_one_triangle_are_the_bits_of_the_whole_matrix(slope):
    """``S_jk`` is symmetric bit for bit (``t_sum`` is), so the phases compute it on the upper triangle and
    mirror it: the same bits as ``mean_phase`` over every pair, for constant and affine weights."""
    import jax
    from ropetheory.core.angles import pair_frequencies
    from ropetheory.spectra.weights import mean_phase
    th = rt.schedule("yarn", head_dim=32, rope_theta=5e5, factor=4, original_max_position_embeddings=8192)
    L = np.array([1, 2, 7, 1000, 65537, 10 ** 12])
    w = sp.AffineWeights(1.0, slope)
    _, S = sp.weighted_mean_phases(th, w, L)
    pf = pair_frequencies(th)
    whole = jax.jit(jax.vmap(lambda n: mean_phase(pf.t_sum, pf.half_sum, n, 1.0, slope, slope == 0)))(L)
    assert np.array_equal(np.asarray(S), np.asarray(whole))


def test_the_batch_on_an_accelerator_computes_each_chunk_while_the_next_is_sent_with_the_same_numbers(monkeypatch):
    """On an accelerator a chunk of clouds is read back only after the next is dispatched; the curves, their
    order and the progress reported (every cloud once, in chunk order) are those of one chunk at a time."""
    from ropetheory.spectra import gram
    theta = rt.schedule("rope", head_dim=16, base=100.0).theta
    V = np.random.default_rng(9).standard_normal((7, 16))
    n = [3, 50, 4096]
    one_by_one = sp.rank1_curves_batch(theta, V, n, clouds_per_call=7).rho
    monkeypatch.setattr(gram, "compute_platform", lambda: "gpu")
    seen: list[int] = []
    piped = sp.rank1_curves_batch(theta, V, n, clouds_per_call=3, progress=seen.append).rho
    assert seen == [3, 3, 1]
    assert np.array_equal(piped, one_by_one)


def test_the_batch_answers_every_value_its_program_did_not_vouch_for_with_eigvalsh_of_that_gram(monkeypatch):
    """Values the top-eigenvalue program flags (``ok`` False) are replaced on the host by the top of numpy's
    eigvalsh of that cloud's Gram at that length, on the CPU and on an accelerator alike; the others stay."""
    from ropetheory.spectra import gram
    theta = rt.schedule("rope", head_dim=16, base=100.0).theta
    V = np.random.default_rng(4).standard_normal((5, 16))
    n = [1, 3, 50, 4096]
    ref = np.stack([[np.linalg.eigvalsh(sp.rank1_gram(theta, v, m))[-1] for m in n] for v in V])
    exact = sp.rank1_curves_batch(theta, V, n, clouds_per_call=2).rho2
    flagged = np.zeros((5, 4), bool)
    flagged[[0, 2, 2, 4], [1, 0, 3, 3]] = True
    run = gram.rho2_for_clouds

    seen = [0]

    def unvouched(V_il, Dm, Sm, batched_eig, method, **flags):  # NaN where flagged, as a failed check may give
        assert flags == {"flagged": True}
        rho2, ok = run(V_il, Dm, Sm, batched_eig=batched_eig, method=method, flagged=True)
        k, seen[0] = seen[0], seen[0] + V_il.shape[0]
        bad = np.zeros(ok.shape, bool)
        bad[:, :len(n)] = flagged[k:k + V_il.shape[0]]
        return jnp.where(bad, jnp.nan, rho2), ok & ~bad
    monkeypatch.setattr(gram, "rho2_for_clouds", unvouched)
    for platform in ("cpu", "gpu"):
        seen[0] = 0
        monkeypatch.setattr(gram, "compute_platform", lambda p=platform: p)
        got = sp.rank1_curves_batch(theta, V, n, clouds_per_call=2).rho2
        assert np.array_equal(got[~flagged], exact[~flagged])
        np.testing.assert_allclose(got[flagged], ref[flagged], rtol=1e-13)
