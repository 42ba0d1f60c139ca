"""A message a caller can trigger is ours, one line naming the argument or the file: never a parser's
(``json``), numpy's or torch's words alone, nor Python's "'str' object is not callable" from inside a call.
(Where the JSON parser stopped is kept, inside our message that names the file.)"""
from __future__ import annotations

import numpy as np
import pytest

import ropetheory as rt
import ropetheory.testing as rtt
from ropetheory.cli import main
from ropetheory.core.errors import BadInput

THETA = rt.schedule("rope", head_dim=8, base=100.0)
#: what each library says in its own words, which must not reach a caller alone
LIBRARY_WORDS = ("object is not callable", "SeedSequence", "expected non-negative integer",
                 "negative dimensions", "Number of samples", "inconsistent with step sign")


def _one_line_of_ours(text: str, *names: str) -> None:
    assert text.count("\n") <= 1 and text.strip(), text
    assert all(n in text for n in names), (names, text)
    assert not any(w in text for w in LIBRARY_WORDS), text


@pytest.fixture
def bad_json(tmp_path):
    p = tmp_path / "config.json"
    p.write_text('{"head_dim": 8, "rope_theta": 100,\n')
    return p


def test_a_malformed_config_file_names_the_file_and_where_the_parser_stopped(bad_json):
    for call in (lambda: rt.from_config(bad_json), lambda: rt.from_config(bad_json.parent),
                 lambda: rt.schedule_from_spec(str(bad_json))):
        with pytest.raises(BadInput) as e:
            call()
        _one_line_of_ours(str(e.value), str(bad_json), "not valid JSON", "line 2")


@pytest.mark.parametrize("argv", [["schedule", "--config", "{p}"], ["schedule", "{p}"], ["report", "{p}"]])
def test_a_malformed_config_file_on_the_command_line_is_one_line_naming_it(bad_json, argv, capsys, tmp_path):
    argv = [a.format(p=bad_json) for a in argv] + (["--out", str(tmp_path / "o")] if argv[0] == "report" else [])
    assert main(argv) == 2
    _one_line_of_ours(capsys.readouterr().err, str(bad_json), "not valid JSON")


def test_a_damaged_saved_result_read_by_plot_only_says_to_recompute_it(tmp_path, capsys):
    (tmp_path / "sinks.json").write_text("{")
    assert main(["sinks", "--plot-only", "--out", str(tmp_path)]) == 2
    _one_line_of_ours(capsys.readouterr().err, "sinks.json", "not valid JSON", "without --plot-only")


def test_a_malformed_analysis_file_given_to_report_names_the_flag(tmp_path, capsys):
    a = tmp_path / "analysis.json"
    a.write_text("[1,")
    assert main(["report", "rope", "--analysis", str(a), "--out", str(tmp_path / "o")]) == 2
    _one_line_of_ours(capsys.readouterr().err, "--analysis", str(a))


@pytest.mark.parametrize("fn", ["rope", None, 3])
@pytest.mark.parametrize("audit", [
    lambda fn: rtt.audit_rope(fn, schedule=THETA, max_position=16),
    lambda fn: rtt.assert_rope_matches(fn, schedule=THETA, max_position=16),
    lambda fn: rtt.logit_errors(fn, schedule=THETA, distances=[0, 1]),
    lambda fn: rtt.diagnose(fn, schedule=THETA, max_position=16)])
def test_an_implementation_that_is_not_a_function_is_refused_by_name(audit, fn):
    with pytest.raises(TypeError) as e:
        audit(fn)
    _one_line_of_ours(str(e.value), "fn must be a function")


@pytest.mark.parametrize("seed", [-1, "0", [1, 2], 1.5, True, None])
def test_a_seed_that_is_not_a_non_negative_integer_is_refused_by_name(seed):
    with pytest.raises((TypeError, ValueError)) as e:
        rtt.audit_rope(lambda x, p: x, schedule=THETA, max_position=16, seed=seed)
    _one_line_of_ours(str(e.value), "seed")


def test_the_curve_command_refuses_a_negative_seed_by_its_flag(capsys):
    assert main(["curve", "--spec", "rope:head_dim=8", "--seed", "-1", "--num", "4", "--n-max", "100"]) == 2
    _one_line_of_ours(capsys.readouterr().err, "--seed")


@pytest.mark.parametrize("num", [-10, 0, 2.5, "4"])
def test_audit_positions_refuses_a_bad_count_in_our_words_not_numpys(num):
    with pytest.raises((TypeError, ValueError)) as e:
        rtt.audit_positions(64, num)
    _one_line_of_ours(str(e.value), "num")


def test_the_audit_command_refuses_a_negative_head_width_before_torch_sees_it(capsys, tmp_path):
    pytest.importorskip("torch")
    assert main(["audit", "transformers", "--head-dim", "-2", "--out", str(tmp_path)]) == 2
    _one_line_of_ours(capsys.readouterr().err, "--head-dim")


def test_distances_are_named_as_distances_not_positions():
    with pytest.raises(ValueError) as e:
        rtt.logit_errors(lambda x, p: x, schedule=THETA, distances=[0.5])
    _one_line_of_ours(str(e.value), "distances")


def test_the_library_words_are_those_numpy_and_python_say_here():
    """The library words above are what numpy and Python say here (else the checks above could not fail)."""
    with pytest.raises(ValueError, match=LIBRARY_WORDS[2]):
        np.random.default_rng(-1)
    with pytest.raises(ValueError, match=LIBRARY_WORDS[4]):
        np.geomspace(8, 64, -10)
    not_a_function: object = "rope"
    with pytest.raises(TypeError, match=LIBRARY_WORDS[0]):
        not_a_function()  # type: ignore[operator]


@pytest.mark.parametrize("call", [lambda bad: rtt.exact_cos_sin(THETA.theta, bad),
                                  lambda bad: rt.apply_rope(THETA, np.ones((2, 8)), positions=bad),
                                  lambda bad: rtt.rotation_floor(bad, "float32"),
                                  lambda bad: rtt.logit_floor(bad, 1.0, 8, "float32")])
def test_a_ragged_list_is_refused_by_name_not_by_numpys_inhomogeneous_shape(call):
    with pytest.raises((TypeError, ValueError)) as e:
        call([[1, 2], [3]])
    _one_line_of_ours(str(e.value))
    assert "inhomogeneous" not in str(e.value) and any(n in str(e.value) for n in ("positions", "plane_norms",
                                                                                    "q_norm"))


# ---------------------------------------------------------------------------------------------------
# an output that would overflow float64 is refused, naming the argument, never returned as inf
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["tridiagonal", "lanczos", "subspace", "eigvalsh"])
def test_a_top_eigenvalue_beyond_the_float64_maximum_is_refused_naming_g(method):
    G = np.ones((6, 6)) * 1e308                       # finite entries; lambda_max = 6e308 is not a float64
    with pytest.raises(ValueError) as e:
        rt.top_eigenvalue(G, method)
    _one_line_of_ours(str(e.value), "G", "float64 maximum")
    assert np.isfinite(float(rt.top_eigenvalue(G / 8, method)))      # 0.75e308 is one


@pytest.mark.parametrize(("train_len", "cycles"), [(1e300, 1.0), (4096, 1e-300), (4096, 1e-320)])
def test_a_high_frequency_base_beyond_float64_is_refused_naming_its_arguments(train_len, cycles):
    with pytest.raises(ValueError) as e:
        rt.high_frequency(4, train_len, cycles)
    _one_line_of_ours(str(e.value), "train_len", "cycles")


def test_an_overflowing_logit_floor_is_refused_naming_the_norms():
    with pytest.raises(ValueError) as e:
        rtt.logit_floor(1e300, 1e300, 8, "float32")
    _one_line_of_ours(str(e.value), "q_norm", "k_norm")


def test_affine_weights_near_the_float64_maximum_give_the_bound_of_their_ratio():
    """The certified bound depends on the weights' ratio only: a, b near 1.7e308 (whose sums overflow) give
    the bound of (1, 1), with no overflow on the way."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        big = rt.certified_eps(THETA, np.arange(1.0, 9.0), [10, 1000], weights=rt.AffineWeights(1.7e308, 1.7e308))
    np.testing.assert_array_equal(big, rt.certified_eps(THETA, np.arange(1.0, 9.0), [10, 1000],
                                                        weights=rt.AffineWeights(1.0, 1.0)))


@pytest.mark.parametrize("call", [
    lambda: rt.apply_rope(np.zeros((0, 4)), np.ones((2, 8))),
    lambda: rt.top_eigenvalue(np.eye(3), np.array([])),
    lambda: rt.search_feasible_bases(64, 8, min_width=1e-300),
    lambda: rtt.audit_positions(64, 2 ** 70),
    lambda: rtt.logit_errors(lambda x, p: x, schedule=THETA, distances=[0, 1], key_position=2 ** 70),
    lambda: rtt.logit_errors(lambda x, p: x, schedule=THETA, distances=[2 ** 62], key_position=2 ** 62)])
def test_found_by_the_every_callable_probe_each_is_refused_by_the_package_not_numpy(call):
    """Empty per-head theta (numpy's "need at least one array to stack"), an array as method ("truth value
    ... ambiguous"), a min_width below float64's resolution of ln b (a search that never ends), huge counts
    ("Maximum allowed size exceeded") and int64 overflow of key_position + distance."""
    with pytest.raises(BadInput) as e:
        call()
    _one_line_of_ours(str(e.value))
