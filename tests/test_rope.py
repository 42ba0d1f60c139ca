"""The RoPE operator: rotation properties, layouts, exact angles at 10^12..10^15, bad input."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import ropetheory as rt
from ropetheory.rope import apply_rope
from ropetheory.core.angles import reduced_turns, turn_chunks
from ropetheory.core.layouts import to_interleaved

from reference import rope_row_mp
from strategies import examples, big_positions, clouds, layouts, schedules, unit_vectors

# float64 rotation of O(1) entries through cos/sin and one multiply-add: a few ulps, times d
OPERATOR_ATOL = 1e-13
# the spec's bound for every entry against a 50-digit reference, at positions up to 10^15
EXACT_ATOL = 1e-12


@examples(30)
@given(st.data())
def test_each_row_rotation_is_orthogonal(data):
    name, d, theta = data.draw(schedules())
    X = data.draw(clouds(d, 9))
    Y = np.asarray(apply_rope(theta, X, offset=data.draw(st.integers(0, 10 ** 12))))
    np.testing.assert_allclose(np.linalg.norm(Y, axis=1), np.linalg.norm(X, axis=1), rtol=1e-14)
    # orthogonality of R_i itself: rotate the identity basis
    E = np.eye(d)
    for i in (0, 5, 123456789):
        R = np.asarray(apply_rope(theta, E, positions=np.full(d, i))).T
        np.testing.assert_allclose(R.T @ R, np.eye(d), atol=OPERATOR_ATOL)


@examples(30)
@given(st.data(), big_positions, big_positions)
def test_rotations_compose_additively(data, i, j):
    """R_i R_j = R_{i+j}."""
    name, d, theta = data.draw(schedules())
    x = data.draw(unit_vectors(d))[None, :]
    layout = data.draw(layouts)
    once = apply_rope(theta, x, positions=[i + j], layout=layout)
    twice = apply_rope(theta, apply_rope(theta, x, positions=[j], layout=layout), positions=[i], layout=layout)
    np.testing.assert_allclose(np.asarray(twice), np.asarray(once), atol=OPERATOR_ATOL)


@examples(30)
@given(st.data())
def test_layouts_agree_up_to_the_channel_permutation(data):
    name, d, theta = data.draw(schedules())
    X = data.draw(clouds(d, 7))
    Xh = np.concatenate([X[:, 0::2], X[:, 1::2]], axis=1)           # interleaved -> half
    Yi = np.asarray(apply_rope(theta, X, layout="interleaved", offset=10 ** 9))
    Yh = np.asarray(apply_rope(theta, Xh, layout="half", offset=10 ** 9))
    np.testing.assert_allclose(np.concatenate([Yi[:, 0::2], Yi[:, 1::2]], axis=1), Yh, atol=OPERATOR_ATOL)
    np.testing.assert_array_equal(np.asarray(to_interleaved(Xh, "half")), X)


@examples(30)
@given(st.data(), big_positions, st.integers(-1000, 1000), st.integers(0, 10 ** 12))
def test_scores_depend_only_on_relative_position(data, i, m, shift):
    """<R_i q, R_j k> = <R_{i+s} q, R_{j+s} k>."""
    name, d, theta = data.draw(schedules())
    q, k = data.draw(unit_vectors(d)), data.draw(unit_vectors(d))
    layout = data.draw(layouts)

    def score(a, b):
        return float(np.asarray(apply_rope(theta, q[None], positions=[a], layout=layout))[0]
                     @ np.asarray(apply_rope(theta, k[None], positions=[b], layout=layout))[0])
    assert abs(score(i, i + m) - score(i + shift, i + m + shift)) < OPERATOR_ATOL
    assert abs(score(i, i + m) - score(0, m)) < OPERATOR_ATOL


@pytest.mark.parametrize("name,params", [("rope", dict(base=10000.0)), ("rope", dict(base=5e5)),
                                         ("rope_id", dict(train_len=4096)), ("high_frequency", dict(train_len=4096))])
def test_angles_are_exact_at_1e12_and_1e15_against_mpmath(name, params):
    theta = rt.schedule(name, head_dim=16, **params).theta
    rng = np.random.default_rng(1)
    X = rng.standard_normal((6, 16))
    pos = np.array([10 ** 12, 10 ** 12 + 1, 123456789012345, 10 ** 15, -(10 ** 15) + 7, 2 ** 52 + 3])
    Y = np.asarray(apply_rope(theta, X, positions=pos))
    ref = np.stack([rope_row_mp(X[r], theta, int(p)) for r, p in enumerate(pos)])
    assert np.abs(Y - ref).max() < EXACT_ATOL
    # and the plain float64 product i*theta really is wrong there (why the reduction exists)
    naive = np.float64(pos[3]) * theta                  # rounding error up to ulp(1e15 theta)/2
    exact = 2 * np.pi * np.asarray(reduced_turns(np.int64(pos[3]), turn_chunks(theta)))
    gap = np.abs((naive - exact + np.pi) % (2 * np.pi) - np.pi)
    assert gap.max() > 1e-3


def test_the_written_out_inverse_two_pi_is_floor_2_to_the_guard_bits_over_two_pi():
    import mpmath
    from ropetheory.core import angles
    with mpmath.workprec(angles._GUARD_BITS + 64):     # 64 bits beyond the integer's: its floor is decided
        exact = mpmath.ldexp(1, angles._GUARD_BITS) / (2 * mpmath.pi)
        assert int(mpmath.floor(exact)) == angles.INV_TWO_PI_FIXED
        assert 0 < exact - angles.INV_TWO_PI_FIXED < 1


def test_batched_heads_match_one_by_one():
    theta = rt.schedule("rope", head_dim=8).theta
    X = np.random.default_rng(0).standard_normal((2, 3, 5, 8))
    Y = np.asarray(apply_rope(theta, X))
    for a in range(2):
        for b in range(3):
            np.testing.assert_array_equal(Y[a, b], np.asarray(apply_rope(theta, X[a, b])))
    # one schedule per head
    th2 = np.stack([rt.schedule("rope", head_dim=8, base=b).theta for b in (100.0, 1e4, 1e6)])
    Y2 = np.asarray(apply_rope(th2, X[0]))
    for b in range(3):
        np.testing.assert_allclose(Y2[b], np.asarray(apply_rope(th2[b], X[0, b])), atol=0)


@pytest.mark.parametrize("call, match", [
    (lambda th: apply_rope(th, np.ones((3, 7))), "head dim .* must be a positive even integer, got 7"),
    (lambda th: apply_rope(th, np.ones((3, 6))), "theta has 4 planes but X has head dim 6"),
    (lambda th: apply_rope(th, np.array([[1.0, np.nan] * 4])), r"X must be finite; X\[0, 1\] = nan"),
    (lambda th: apply_rope(th, np.ones((2, 8)), positions=[0.5, 1]), "positions must be integers, got 0.5"),
    (lambda th: apply_rope(th, np.ones((2, 8)), positions=[0]), "got 1 positions for 2 tokens"),
    (lambda th: apply_rope(th, np.ones((2, 8)), layout="gptj"), "unknown layout 'gptj'"),
    (lambda th: apply_rope([1.0, -2.0, 0, 0], np.ones((2, 8))), r"theta\[1\] = -2.0"),
    (lambda th: apply_rope(th, np.ones(8)), "X must have at least 2 dimension"),
    (lambda th: apply_rope(th, np.ones((2, 8)), offset=0.5), "offset must be a whole number"),
])
def test_operator_bad_input_names_the_value(call, match):
    theta = rt.schedule("rope", head_dim=8).theta
    with pytest.raises((ValueError, TypeError), match=match):
        call(theta)


def test_power_of_two_buckets_and_constant_fill_pad_as_the_kernels_need():
    """The base search and the sinks study pad to powers of two (with a floor) and pad counts with 0."""
    from ropetheory.core.checks import bucket, pad_to_bucket
    for n in (0, 1, 2, 3, 511, 512, 513, 1025, 5000):
        b = bucket(n, minimum=512, power_of_two=True)
        assert b >= max(n, 512) and b & (b - 1) == 0 and (b == 512 or b < 2 * n)
    counts = np.array([3, 1, 2], np.int64)
    np.testing.assert_array_equal(pad_to_bucket(counts, fill=0, power_of_two=True), [3, 1, 2, 0])
    np.testing.assert_array_equal(pad_to_bucket(counts, power_of_two=True), [3, 1, 2, 2])
    assert pad_to_bucket(np.zeros(0, np.int32), fill=1, minimum=4, power_of_two=True).tolist() == [1, 1, 1, 1]


def test_padding_to_a_bucket_keeps_every_row_and_length_bit_for_bit():
    """apply_rope and the curves compile once per bucket of sizes; padded entries never leak in."""
    from ropetheory.core.checks import bucket
    for n in (1, 2, 3, 5, 1000, 1024, 1025, 5000, 123457):
        b = bucket(n)
        assert n <= b <= (2 * n if n <= 1024 else 1.125 * n + 1)
    theta = rt.schedule("rope", head_dim=8, base=1e4).theta
    X = np.random.default_rng(2).normal(size=(37, 8))
    whole = np.asarray(rt.apply_rope(theta, X, offset=7))
    for k in (1, 5, 36):
        np.testing.assert_array_equal(np.asarray(rt.apply_rope(theta, X[:k], offset=7)), whole[:k])
    v = np.random.default_rng(3).normal(size=8)
    grid = [1, 10, 100, 10 ** 6, 10 ** 9]
    full = rt.rank1_curve(theta, v, grid)
    for sub in ([1], [10, 100], grid[:3]):
        got = rt.rank1_curve(theta, v, sub)
        np.testing.assert_array_equal(got["rho"], full["rho"][[grid.index(x) for x in sub]])


def test_turn_chunks_are_the_bit_fields_of_the_fixed_point_turn():
    """``chunks_from_fixed`` cuts each B-bit turn into its 26-bit fields, most significant first, each
    scaled by its place: the same as shifting and masking the integer, at the edges of the range too."""
    import random

    from ropetheory.core import angles as A
    rng = random.Random(0)
    F = [0, 1, (1 << A.TURN_BITS) - 1, 1 << (A.TURN_BITS - 1), (1 << A.CHUNK_BITS) - 1]
    F += [rng.getrandbits(A.TURN_BITS) for _ in range(500)]
    mask = (1 << A.CHUNK_BITS) - 1
    ref = [[((x >> (A.TURN_BITS - A.CHUNK_BITS * (k + 1))) & mask) * 2.0 ** (-A.CHUNK_BITS * (k + 1))
            for k in range(A.N_CHUNKS)] for x in F]
    assert np.array_equal(A.chunks_from_fixed(F), np.array(ref))
    assert A.chunks_from_fixed([]).shape == (0, A.N_CHUNKS)
