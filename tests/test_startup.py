"""What a command does before and around its numbers (#39 item 5): nothing heavy imported where nothing
needs it, the limit of ``curve`` computed only where it is written, OpenBLAS on one thread while a
command runs (and as it was after), lengths padded to fine buckets that never change a value, and the
report's inversions from one batched score table equal to the theory's functions."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from threadpoolctl import threadpool_info

import ropetheory as rt
from ropetheory import cli
from ropetheory.spectra.gram import length_bucket
from ropetheory.studies import report
from ropetheory.theory import positions

#: packages no start-up path needs: plotting, model frameworks, symbolic, ball and multiprecision arithmetic,
#: scipy's LAPACK
HEAVY = ("matplotlib", "torch", "transformers", "sympy", "flint", "mpmath", "scipy")


def _imported_after(code: str) -> list[str]:
    """The ``HEAVY`` packages a fresh interpreter holds after running ``code``."""
    probe = f"{code}\nimport sys, json; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_the_cli_imports_no_plotting_model_or_lapack_package():
    assert _imported_after("import ropetheory.cli") == []


def test_help_and_schedule_import_no_plotting_model_or_lapack_package():
    code = "import contextlib, io\nfrom ropetheory.cli import main\nwith contextlib.redirect_stdout(io.StringIO()):\n"
    assert _imported_after(code + "    main(['schedule'])") == []
    assert _imported_after(code + "    try:\n        main(['--help'])\n    except SystemExit:\n        pass") == []


@pytest.mark.parametrize("flags", [[], ["--certified"], ["--format", "json"]])
def test_a_curve_builds_no_lapack_program_so_imports_no_scipy(flags):
    """The ``curve`` command's top eigenvalues go to numpy on the host (``cli.CURVE_METHOD``): no LAPACK program,
    so neither jaxlib's LAPACK initialisation nor one_blas_thread imports scipy.linalg (0.12-0.2 s)."""
    code = ("import contextlib, io\nfrom ropetheory.cli import main\nwith contextlib.redirect_stdout(io.StringIO()):\n"
            f"    main(['curve', '--num', '7', '--n-max', '1e9', *{flags!r}])")
    assert cli.CURVE_METHOD == "numpy" and "scipy" not in _imported_after(code)


def test_a_curve_in_csv_imports_no_theory_and_every_lazy_theory_name_is_the_theory_modules_own():
    code = ("import contextlib, io\nfrom ropetheory.cli import main\nwith contextlib.redirect_stdout(io.StringIO()):\n"
            "    main(['curve', '--num', '3', '--n-max', '100'])")
    held = "print(sorted(m for m in sys.modules if m.startswith(('ropetheory.theory', 'mpmath'))))"
    probe = code + "\nimport sys\n" + held
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
    import importlib
    for name, module in rt._LAZY.items():
        assert name in rt.__all__ and name in dir(rt)
        assert getattr(rt, name) is getattr(importlib.import_module(module, "ropetheory"), name)
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        rt.no_such_name  # noqa: B018


def test_curve_computes_the_limit_only_where_it_writes_it(capsys, monkeypatch, tmp_path):
    from ropetheory.theory import theorems
    calls = []
    real = theorems.predicted_limit
    monkeypatch.setattr(theorems, "predicted_limit", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert cli.main(["curve", "--num", "5", "--n-max", "1000"]) == 0
    assert capsys.readouterr().out.startswith("n,rho,srank") and calls == []
    assert cli.main(["curve", "--num", "5", "--n-max", "1000", "--format", "json"]) == 0
    js = json.loads(capsys.readouterr().out)
    assert calls == [1] and list(js)[-3:] == ["limit", "ropetheory_version", "rows"]
    v = np.random.default_rng(0).standard_normal(128)
    assert js["limit"]["rho"] == real(rt.schedule("rope", head_dim=128), v).rho
    side = tmp_path / "meta.json"
    assert cli.main(["curve", "--num", "5", "--n-max", "1000", "--sidecar", str(side)]) == 0
    assert calls == [1, 1] and json.loads(side.read_text())["limit"] == js["limit"]


def _openblas_threads() -> list[int]:
    return [i["num_threads"] for i in threadpool_info() if i["internal_api"] == "openblas"]


@pytest.mark.parametrize("argv", [["curve", "--num", "5"], ["report", "rope:head_dim=16", "--clouds", "2"]])
def test_curve_and_report_compute_with_one_openblas_thread_and_leave_the_count_as_it_was(argv, capsys, monkeypatch,
                                                                                        tmp_path):
    import scipy.linalg  # noqa: F401  (its OpenBLAS loaded before, as after any command)
    from ropetheory.spectra import gram
    before = _openblas_threads()
    seen = []
    for name in ("rank1_curve", "rank1_curves_batch"):
        real = getattr(gram, name)
        monkeypatch.setattr(gram, name, lambda *a, _f=real, **k: seen.append(_openblas_threads()) or _f(*a, **k))
    monkeypatch.setattr(report.spectra, "rank1_curves_batch", gram.rank1_curves_batch)
    assert cli.main(argv + (["--out", str(tmp_path), "--quiet"] if argv[0] == "report" else [])) == 0
    assert seen and all(len(s) >= 2 and set(s) == {1} for s in seen)     # numpy's and scipy's OpenBLAS
    assert _openblas_threads() == before


@pytest.mark.parametrize("k", range(1, 14))
def test_length_buckets_pad_at_most_an_eighth_with_at_most_eight_sizes_per_octave(k):
    ns = np.arange(2 ** (k - 1) + 1, 2 ** k + 1)
    b = np.array([length_bucket(n) for n in ns])
    assert np.all(b >= ns) and np.all(8 * (b - ns) < ns) and np.all(np.diff(b) >= 0)
    assert len(set(b)) <= 8


def test_a_length_gives_the_same_bits_whatever_bucket_it_is_padded_in():
    th = rt.schedule("rope", head_dim=32, base=500.0)
    V = np.random.default_rng(5).standard_normal((3, 32))
    g = rt.log_grid(1e9, 65)                                  # padded to 72; its first 60 to 64
    assert length_bucket(g.size) != length_bucket(60)
    whole, part = rt.rank1_curve(th, V[0], g), rt.rank1_curve(th, V[0], g[:60])
    for key in ("rho", "srank", "frob_ratio"):
        np.testing.assert_array_equal(whole[key][:60], part[key])
    np.testing.assert_array_equal(rt.rank1_curves_batch(th, V, g).rho[:, :60], rt.rank1_curves_batch(th, V, g[:60]).rho)


#: a report-sized schedule and horizon (head_dim 64, H = 1024; every packaged config was checked the same way)
REPORT_THETA, REPORT_H = rt.schedule("rope", head_dim=64, base=10000.0).theta, 1024


def test_batched_scores_are_the_scores_of_each_row():
    Q = np.random.default_rng(2).standard_normal((2 * report.PAIRS, 3, 64))
    m = np.arange(4 * REPORT_H)
    S = positions.scores_batch(REPORT_THETA, Q[:, 0], Q[:, 1], m)
    for b in range(len(Q)):
        np.testing.assert_array_equal(S[b], positions.scores(REPORT_THETA, Q[b, 0], Q[b, 1], m))


def test_the_reports_inversions_are_the_theory_functions_values():
    th, H = REPORT_THETA, REPORT_H
    sec = report.inversion_section(th, H)
    Q = np.random.default_rng(1).standard_normal((report.PAIRS, 3, 64))
    for M in (H, 4 * H):
        p = [positions.position_inversion(th, q, k1, M)["exact"] for q, k1, _ in Q]
        t = [positions.token_inversion(th, q, k1, k2, M)["exact"] for q, k1, k2 in Q]
        assert sec[f"M={M}"]["p_position_inversion"] == float(np.mean(p))
        assert sec[f"M={M}"]["p_token_inversion"] == float(np.mean(t))
        assert sec[f"M={M}"]["se_position"] == float(np.std(p) / np.sqrt(report.PAIRS))


def test_the_drift_read_from_the_fsv_curves_is_the_drift_computed_on_its_own(monkeypatch):
    sc = report.load_source("llama-3.1-8b")["schedules"][0]
    L, V = 8192, report._unit_clouds(128, 4)
    grid, rho = report.fsv_curves(sc["theta"], L, V, [s * L for s in report.FACTORS])
    calls = []
    real = report.spectra.rank1_curves_batch
    monkeypatch.setattr(report.spectra, "rank1_curves_batch", lambda *a, **k: calls.append(1) or real(*a, **k))
    read = report.drift_section(sc, L, V, (grid, rho))
    assert calls == []                                        # llama3's schedule does not depend on the length
    assert read == report.drift_section(sc, L, V) and len(calls) == len(report.FACTORS)


def test_the_program_allocates_gpu_memory_on_demand_unless_the_user_said_otherwise():
    """Run as the program, a command sets ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` (JAX's preallocation of 75% of
    a GPU cost ``fig7`` ~1 s on an H100); a value the user set stays, and a call from Python sets nothing."""
    probe = ("import contextlib, io, os, sys\nfrom ropetheory import cli\nsys.argv = ['ropetheory', 'schedule']\n"
             "with contextlib.redirect_stdout(io.StringIO()):\n    {call}\nprint(os.environ.get(cli.PREALLOCATE_ENV))")
    env = {k: v for k, v in __import__("os").environ.items() if k != cli.PREALLOCATE_ENV}
    for call, preset, want in (("cli.main()", None, "false"), ("cli.main()", "true", "true"),
                               ("cli.main(['schedule'])", None, "None")):
        run_env = env | ({cli.PREALLOCATE_ENV: preset} if preset else {})
        out = subprocess.run([sys.executable, "-c", probe.format(call=call)], capture_output=True, text=True,
                             check=True, env=run_env)
        assert out.stdout.strip().splitlines()[-1] == want, (call, preset)


def test_without_a_cpu_backend_the_numpy_method_is_refused_by_name_and_curve_takes_the_default(monkeypatch, capsys):
    """The numpy method's callback needs JAX's CPU backend: where JAX_PLATFORMS leaves it out, naming the
    method is a ValueError that says so, and ``curve`` computes with the default method and records which."""
    import jax
    from ropetheory.spectra import topeig
    real = jax.devices

    def devices(backend=None):
        if backend == "cpu":
            raise RuntimeError("Unknown backend cpu")
        return real(backend)
    monkeypatch.setattr(jax, "devices", devices)
    with pytest.raises(ValueError, match="method 'numpy' cannot run here: .*CPU backend"):
        topeig.check_method("numpy")
    assert cli.main(["curve", "--num", "4", "--n-max", "100", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["top_eigenvalue_method"] == topeig.default_method(128)
