"""Bad input raises ValueError/TypeError naming the argument, never a silent wrong answer or a hang."""
from __future__ import annotations

import math

import numpy as np
import pytest

import ropetheory as rt
from ropetheory import spectra
from ropetheory.theory import theorems
from ropetheory.cli import main
from ropetheory.core.checks import MAX_HEAD_DIM, from_theta
from ropetheory.schedules import high_frequency, rope, rope_id

from test_spectra import constant_rows

THETA = rt.schedule("rope", head_dim=8).theta
V = np.arange(1.0, 9.0)
#: clouds per schedule where a test runs ``report`` for its error path: the fewest the command takes
REPORT_CLOUDS = 2


@pytest.mark.parametrize("layout", ["Half", "gptj", "", 0])     # None: the schedule's own (test_schedule_value)
@pytest.mark.parametrize("fn", [lambda lay: theorems.predicted_limit(THETA, V, layout=lay),
                                lambda lay: theorems.certified_eps(THETA, V, [10], layout=lay),
                                lambda lay: theorems.plane_energies(V, layout=lay),
                                lambda lay: theorems.limit_gram(THETA, V, layout=lay),
                                lambda lay: rt.apply_rope(THETA, np.ones((2, 8)), layout=lay)])
def test_a_misspelled_layout_is_refused_not_read_as_half(fn, layout):
    with pytest.raises(ValueError, match="layout"):
        fn(layout)


def test_positions_plus_offset_beyond_int64_and_non_integer_offsets_are_refused():
    X = np.ones((1, 8))
    with pytest.raises(ValueError, match="int64"):
        rt.apply_rope(THETA, X, positions=[2 ** 63 - 1], offset=1)
    with pytest.raises(ValueError, match="offset must be a whole number"):
        rt.apply_rope(THETA, X, positions=[3], offset=1.5)
    with pytest.raises(TypeError, match="offset"):
        rt.apply_rope(THETA, X, positions=[3], offset=True)


def test_frequencies_beyond_the_exact_reduction_are_refused_with_the_bound():
    with pytest.raises(ValueError, match="MAX_THETA"):
        rt.apply_rope(np.array([1e300]), np.ones((1, 2)))
    from_theta([2.0 ** 99])                              # still exact: accepted


@pytest.mark.parametrize("bad", [np.array([1 + 1j, 0.5]), np.array([True, False])])
def test_complex_or_boolean_theta_is_refused(bad):
    with pytest.raises(TypeError, match="theta"):
        from_theta(bad)


def test_complex_inputs_are_refused_not_truncated():
    with pytest.raises(TypeError, match="real"):
        rt.apply_rope(THETA, np.ones((2, 8)) + 1j)
    with pytest.raises(TypeError, match="real"):
        theorems.predicted_limit(THETA, V + 1j)


def test_weights_of_the_wrong_kind_are_refused_not_ignored():
    with pytest.raises(TypeError, match="weights"):
        theorems.predicted_limit(THETA, V, weights="ramp")
    with pytest.raises(TypeError, match="AffineWeights"):
        theorems.certified_eps(THETA, V, [10], weights=spectra.TrigWeights())


def test_certified_eps_refuses_lengths_where_the_weights_sum_to_zero():
    with pytest.raises(ValueError, match="sum to 0"):
        theorems.certified_eps(THETA, V, [1], weights=spectra.AffineWeights(0.0, 1.0))
    assert theorems.certified_eps(THETA, V, [2], weights=spectra.AffineWeights(0.0, 1.0))[0] > 0


@pytest.mark.parametrize(
    "spec, match",
    [
        ({"name": "rope", "head_dim": 8, "d": 16}, "conflicting"),
        ({"name": "rope", "type": "partial", "head_dim": 8}, "conflicting"),
    ],
)
def test_conflicting_spec_keys_are_refused(spec, match):
    with pytest.raises(ValueError, match=match):
        rt.schedule_from_spec(spec)


@pytest.mark.parametrize("call, match", [
    (lambda: rope_id(128, train_len=16), "train_len"),           # would increase
    (lambda: rope_id(128, min_wavelength=1), "min_wavelength"),  # a plane at exactly 2 pi
    (lambda: rope(128, base=True), "base"), (lambda: rope(128, base="1e4"), "base"),
    (lambda: rope(128, base=1.0), "base"), (lambda: rope(128, base=0.5), "base"),
    (lambda: high_frequency(128, train_len=4), "train_len"),
    (lambda: rope(2 ** 31), "head_dim"), (lambda: rope(float("nan")), "head_dim")])
def test_degenerate_schedules_are_refused(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
    assert MAX_HEAD_DIM >= 256


@pytest.mark.parametrize("n", [float("nan"), -1.0, [1.0, float("inf")], 1 + 2j, True])
def test_length_temperature_refuses_non_lengths(n):
    with pytest.raises((ValueError, TypeError), match="n must"):
        rt.length_temperature(n, 4096)


def test_zero_positions_or_clouds_per_step_are_refused_instead_of_looping_forever():
    with pytest.raises(ValueError, match="positions_per_step"):
        spectra.rank1_stream_curve(THETA, V, [10], positions_per_step=0)
    with pytest.raises(ValueError, match="clouds_per_call"):
        spectra.rank1_curves_batch(THETA, V[None], [10], clouds_per_call=0)
    with pytest.raises(ValueError, match="positions_per_step"):
        spectra.chunked_prefix_scan(np.array([4]), 0, None, None, None)


def test_the_old_chunk_keyword_warns_naming_its_unit_and_both_at_once_are_refused():
    with pytest.warns(DeprecationWarning, match="chunk= is now positions_per_step="):
        old = spectra.rank1_stream_curve(THETA, V, [10], chunk=4)
    np.testing.assert_array_equal(old.rho, spectra.rank1_stream_curve(THETA, V, [10], positions_per_step=4).rho)
    with pytest.warns(DeprecationWarning, match="chunk= is now clouds_per_call="):
        spectra.rank1_curves_batch(THETA, V[None], [10], chunk=1)
    with pytest.raises(TypeError, match="give positions_per_step= only"):
        spectra.rank1_stream_curve(THETA, V, [10], chunk=4, positions_per_step=4)


def test_cli_user_errors_are_one_line_with_exit_2_and_ctrl_c_is_130(capsys, monkeypatch):
    assert main(["schedule", "rope", "--param", "base=0.5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "base" in err and "Traceback" not in err
    from ropetheory.studies import report

    def interrupted(argv=None):
        raise KeyboardInterrupt
    monkeypatch.setattr(report, "main", interrupted)
    assert main(["report", "rope"]) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "resume" in err


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: rt.apply_rope(1.0, np.ones((2, 2))), "theta"),
        (lambda: spectra.log_grid(1e6, 0), "num"),
        (lambda: spectra.log_grid(float("inf"), 10), "n_max"),
        (lambda: spectra.rank1_curves_batch(THETA, np.ones((0, 8)), [10]), "V"),
        (lambda: spectra.TrigWeights(1.0, ((-1.0, 0.0),)), "identically zero"),
        (lambda: __import__("ropetheory.schedules.hf").schedules.hf.frequencies_from_config("/"), "directory"),
        (
            lambda: __import__("ropetheory.schedules.hf").schedules.hf.frequencies_from_config(
                {"head_dim": 2, "max_position_embeddings": 8, "rope_scaling": {"rope_type": "dynamic", "factor": 2.0}},
                seq_len=64,
            ),
            "rotary dim",
        ),
        (
            lambda: __import__("ropetheory.schedules.hf").schedules.hf.frequencies_from_config(
                {
                    "head_dim": 8,
                    "max_position_embeddings": 8,
                    "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "beta_fast": "32"},
                }
            ),
            "beta_fast",
        ),
    ],
)
def test_inputs_that_used_to_end_in_a_traceback_get_a_named_error(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_an_empty_input_gives_an_empty_output():
    assert rt.apply_rope(THETA, np.ones((0, 8))).shape == (0, 8)


@pytest.mark.parametrize("scale", [1e308, 1e-300])
def test_vectors_at_the_edge_of_float64_give_the_same_curve_as_moderate_ones(scale):
    """The FSV ratio does not depend on the scale of v; huge or tiny v used to overflow to rho = 0 / NaN."""
    v = np.linspace(0.5, 1.0, 8)
    ref = spectra.rank1_curve(THETA, v, [10, 1000])
    got = spectra.rank1_curve(THETA, v * scale, [10, 1000])
    np.testing.assert_allclose(got["rho"], ref["rho"], rtol=1e-12)
    assert math.isclose(theorems.predicted_limit(THETA, v * scale).rho, theorems.predicted_limit(THETA, v).rho,
                        rel_tol=1e-12)


def test_top_level_help_lists_every_command_and_an_unknown_one_lists_them_all(capsys):
    from ropetheory.cli import STUDIES
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for name in ["verify", "schedule", "curve", "models", *STUDIES]:
        assert f"    {name}" in out
    with pytest.raises(SystemExit) as e:
        main(["bogus"])
    assert e.value.code == 2 and "basebound" in capsys.readouterr().err


def test_missing_or_unwritable_paths_are_one_line_errors(tmp_path, capsys):
    assert main(["fig7", "--plot-only", "--out", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "run without --plot-only first" in err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    # the report computes its page before writing it: the fewest clouds it takes keep that short
    assert main(["report", "rope", "--clouds", str(REPORT_CLOUDS), "--out", str(blocker / "sub")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_sweep_refuses_overflowing_power_weights_and_recomputes_a_damaged_part(tmp_path):
    from ropetheory.studies import sweep
    with pytest.raises(ValueError, match="overflow"):
        sweep.stream_gram_batch(THETA, V[None], [1000], alpha=1000.0)
    args = [
        "sweep",
        "--head-dims",
        "8",
        "--clouds",
        "2",
        "--n-max",
        "100",
        "--num",
        "4",
        "--out",
        str(tmp_path),
        "--quiet",
    ]
    assert main(args) == 0
    ref = (tmp_path / "sweep.csv").read_bytes()
    part = next((tmp_path / "sweep_parts").glob("*.npz"))
    np.savez(part, rho=np.full((2, 4), np.nan), grid=np.load(part)["grid"])          # a part of NaNs
    with pytest.warns(UserWarning, match="damaged"):
        assert main(args) == 0
    assert (tmp_path / "sweep.csv").read_bytes() == ref
    part.write_bytes(b"")                                                             # a truncated part
    with pytest.warns(UserWarning, match="damaged"):
        assert main(args) == 0
    assert (tmp_path / "sweep.csv").read_bytes() == ref


G8 = np.eye(8)


@pytest.mark.parametrize("fn, bad, exc, name", [
    (lambda b: rt.rank1_curve(THETA, V, b), [[1, 2], [3, 4]], ValueError, "lengths"),
    (lambda b: rt.rank1_curve(THETA, V, b), [], ValueError, "lengths"),
    (lambda b: rt.rank1_curve(THETA, V, [10], method=b), "power", ValueError, "method"),
    (lambda b: rt.rank1_curves_batch(THETA, V[None], [10], method=b), "svd", ValueError, "method"),
    (lambda b: rt.top_eigenvalue(b), np.ones(3), ValueError, "G"),
    (lambda b: rt.top_eigenvalue(b), np.ones((2, 3)), ValueError, "G"),
    (lambda b: rt.top_eigenvalue(b), np.full((3, 3), np.nan), ValueError, "G"),
    (lambda b: rt.top_eigenvalue(b), np.eye(3) * 1j, TypeError, "G"),
    (lambda b: rt.top_eigenvalue(b), [["1", "0"], ["0", "1"]], TypeError, "G"),
    (lambda b: rt.top_eigenvalue(G8, b), "power", ValueError, "method"),
    (lambda b: rt.criteria(b, 0.5, 0.4), float("nan"), ValueError, "rho_L"),
    (lambda b: rt.criteria(b, 0.5, 0.4), "0.5", TypeError, "rho_L"),
    (lambda b: rt.criteria(0.5, b, 0.4), -1.0, ValueError, "floor"),
    (lambda b: rt.criteria([0.5, 0.6], [0.5, 0.6], b), [0.4], ValueError, "allrot"),
    (lambda b: rt.criteria(b, 0.5, 0.4), [], ValueError, "rho_L"),
    (lambda b: rt.convergence_rate([1, 2, 3, 4], b), [1.0, np.nan, 1.0, 1.0], ValueError, "err"),
    (lambda b: rt.convergence_rate([1, 2, 3, 4], b), [1.0, 2.0], ValueError, "err"),
    (lambda b: rt.convergence_rate(b, [1.0, 2.0]), [0, 1], ValueError, r"n\[0\]"),
    (lambda b: spectra.stream_gram_curve(THETA, constant_rows, (V,), [8], phases=b),
     "fast", ValueError, "phases"),
])
def test_every_public_entry_refuses_bad_values_naming_the_argument(fn, bad, exc, name):
    """The audit of 2026-11-24 (every function of ``rt.__all__`` fed NaN, inf, negatives, zero, bools,
    numeric strings, None, complex, empty and wrongly shaped arrays): these were accepted or ended in an
    IndexError from numpy; each is now a ValueError/TypeError that names the argument."""
    with pytest.raises(exc, match=name):
        fn(bad)


def test_numeric_strings_are_not_read_as_numbers():
    from ropetheory.core.checks import real_array
    for bad in ("10", ["1", "2"], np.array(["1.5"]), [1.0, "2"]):
        with pytest.raises(TypeError, match="weights"):
            real_array("weights", bad)
    assert real_array("w", [1, 2 ** 70]).tolist() == [1.0, float(2 ** 70)]


@pytest.mark.parametrize("scalar", [np.int64, np.int32, np.float32, np.float64])
def test_numpy_scalars_of_valid_numbers_give_the_python_numbers_result(scalar):
    """The boundary policy accepts numpy scalars: offsets, the base search's bounds and counts, the audit's
    seed and position count, read as the Python numbers they equal."""
    from ropetheory.testing import audit_positions, logit_floor
    X = np.ones((2, 8))
    np.testing.assert_array_equal(rt.apply_rope(THETA, X, offset=scalar(3)), rt.apply_rope(THETA, X, offset=3))
    a = rt.search_feasible_bases(64, scalar(8), b_min=scalar(2), b_max=scalar(1024), initial=scalar(16),
                                 budget=scalar(2000))
    b = rt.search_feasible_bases(64, 8, b_min=2.0, b_max=1024.0, initial=16, budget=2000)
    assert (a.feasible, a.undecided, a.evaluations) == (b.feasible, b.undecided, b.evaluations)
    np.testing.assert_array_equal(audit_positions(scalar(64), scalar(5)), audit_positions(64, 5))
    assert logit_floor(1.0, 1.0, scalar(8), "float32") == logit_floor(1.0, 1.0, 8, "float32")
