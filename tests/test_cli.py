"""The command line as users run it: one schedule syntax everywhere, clean machine-readable output,
quiet broken pipes, ``--version`` and ``python -m ropetheory``."""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import numpy as np
import pytest

import ropetheory as rt
from ropetheory import cli
from ropetheory.core import devices


def _run(argv, capsys):
    rc = cli.main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


SPECS = ["rope_id:train_len=4096,head_dim=64", '{"name": "rope_id", "train_len": 4096, "head_dim": 64}']


@pytest.mark.parametrize("spec", SPECS)
def test_one_schedule_syntax_gives_the_same_frequencies_in_every_command(spec, capsys, tmp_path):
    ref = rt.schedule("rope_id", head_dim=64, train_len=4096).theta
    np.testing.assert_array_equal(rt.schedule_from_spec(spec).theta, ref)
    rc, out, _ = _run(["schedule", spec, "--json"], capsys)
    assert rc == 0 and json.loads(out)["theta"] == ref.tolist()
    rc, out, _ = _run(["curve", "--spec", spec, "--num", "3", "--n-max", "100"], capsys)
    assert rc == 0
    from ropetheory.studies.report_sources import load_source
    np.testing.assert_array_equal(load_source(spec)["schedules"][0]["theta"], ref)
    f = tmp_path / "spec.json"
    f.write_text(json.dumps({"name": "rope_id", "train_len": 4096, "head_dim": 64}))
    np.testing.assert_array_equal(rt.schedule_from_spec(str(f)).theta, ref)


def test_a_flag_that_disagrees_with_the_spec_is_refused_with_both_values(capsys):
    rc, _, err = _run(["schedule", "rope:head_dim=8", "--head-dim", "16"], capsys)
    assert rc == 2 and "head_dim=8" in err and "16" in err
    rc, _, err = _run(["schedule", "--param", "base=abc"], capsys)
    assert rc == 2 and "base must be a finite number" in err and "'abc'" in err


def test_schedule_list_names_every_schedule_with_its_defaults(capsys):
    rc, out, _ = _run(["schedule", "--list"], capsys)
    assert rc == 0
    for name in rt.SCHEDULES:
        assert name in out
    assert "min_wavelength=32.0" in out and "yarn" in out


def test_curve_writes_a_plain_csv_and_its_spec_seed_and_version_beside_it(capsys, tmp_path):
    side = tmp_path / "curve.json"
    rc, out, _ = _run(["curve", "--num", "5", "--n-max", "1000", "--seed", "3", "--sidecar", str(side)], capsys)
    assert rc == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == ["n", "rho", "srank"] and len(rows) == 5
    meta = json.loads(side.read_text())
    assert meta["seed"] == 3 and meta["spec"]["name"] == "rope" and meta["ropetheory_version"] == rt.__version__
    assert "ropetheory" not in meta                   # one version field, the one every saved JSON has
    rc, out, _ = _run(["curve", "--num", "5", "--n-max", "1000", "--format", "json"], capsys)
    js = json.loads(out)
    assert [r["n"] for r in js["rows"]] == [int(r["n"]) for r in rows] and js["spec"]["head_dim"] == 128


def test_curve_certified_answers_the_tail_from_the_limit_says_which_rows_and_keeps_the_others(capsys):
    from ropetheory.theory.curve import CURVE_CERTIFIED_RTOL
    plain = list(csv.DictReader(io.StringIO(_run(["curve", "--num", "12"], capsys)[1])))
    rc, out, _ = _run(["curve", "--num", "12", "--certified"], capsys)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rc == 0 and list(rows[0]) == ["n", "rho", "srank", "certified"] and len(rows) == 12
    cert = [r["certified"] == "1" for r in rows]
    assert any(cert) and not all(cert) and cert == sorted(cert)          # a tail of the grid, not all of it
    lim = rt.predicted_limit(rt.schedule("rope", head_dim=128), np.random.default_rng(0).standard_normal(128))
    for p, r, c in zip(plain, rows, cert, strict=True):
        assert (float(r["rho"]) == float(f"{lim.rho:.12g}")) if c else (r["rho"], r["srank"]) == (p["rho"], p["srank"])
        assert abs(float(r["rho"]) ** 2 - float(p["rho"]) ** 2) <= CURVE_CERTIFIED_RTOL * lim.lam + 1e-12
    js = json.loads(_run(["curve", "--num", "12", "--certified", "--format", "json"], capsys)[1])
    assert js["certified_rtol"] == CURVE_CERTIFIED_RTOL and [r["certified"] for r in js["rows"]] == cert
    assert all(r["eps"] + 1e-13 <= CURVE_CERTIFIED_RTOL * lim.lam for r in js["rows"] if r["certified"])
    tight = json.loads(_run(["curve", "--num", "12", "--certified", "1e-9", "--format", "json"], capsys)[1])
    assert tight["certified_rtol"] == 1e-9 and sum(r["certified"] for r in tight["rows"]) < sum(cert)
    help_text = cli._parser()[2]["curve"].format_help()
    import re
    stated = re.search(r"relative; default (\S+),", " ".join(help_text.split()))
    assert stated and float(stated.group(1)) == CURVE_CERTIFIED_RTOL          # the help states the constant
    for bad in ("abc", "0", "1", "nan", "-1e-3"):
        try:
            rc = cli.main(["curve", "--certified", bad])
        except SystemExit as e:                       # argparse's own usage error ("-1e-3" reads as a flag)
            rc = e.code
        err = capsys.readouterr().err
        assert rc == 2 and "--certified" in err and "Traceback" not in err, (bad, err)


def test_a_closed_pipe_ends_quietly_and_version_and_python_m_work():
    p = subprocess.run(f"{sys.executable} -m ropetheory schedule --head-dim 16384 | head -1", shell=True,
                       capture_output=True, text=True, check=False)
    assert p.returncode == 0 and p.stderr == "" and p.stdout.startswith("plane")
    v = subprocess.run([sys.executable, "-m", "ropetheory", "--version"], capture_output=True, text=True, check=True)
    assert v.stdout.strip() == f"ropetheory {rt.__version__}"


def test_a_missing_optional_package_is_one_line_naming_the_extra_to_install(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)                 # as if torch were not installed
    rc, _, err = _run(["audit", "transformers", "--context", "16", "--head-dim", "8"], capsys)
    assert rc == 2 and err.count("\n") == 1 and "not installed" in err and "ropetheory[models]" in err
    assert cli._missing_extra("train", ImportError("No module named 'equinox'", name="equinox")) == 2
    assert "pip install 'ropetheory[train]'" in capsys.readouterr().err


def test_every_commands_help_is_the_whole_description_with_every_option_documented(capsys, monkeypatch):
    """Each command's --help: the description in full (more than its first line), no reST literals, every
    option with a help text."""
    import argparse
    seen = {}

    def record(self, file=None):
        seen[self.prog] = self
    monkeypatch.setattr(argparse.ArgumentParser, "print_help", record)
    commands = list(cli.STUDIES) + ["schedule", "curve"]
    for name in commands:
        with pytest.raises(SystemExit):
            cli.main([name, "--help"]) if name not in cli.STUDIES else __import__(
                f"ropetheory.{cli.STUDIES[name][0]}", fromlist=["main"]).main(["--help"])
    assert {p.split()[-1] for p in seen} >= set(commands)
    for prog, parser in seen.items():
        assert parser.description and "``" not in parser.description, prog
        if prog.split()[-1] in cli.STUDIES:
            assert "\n" in parser.description.strip(), f"{prog}: only the first line of its description"
        for action in parser._actions:
            assert action.help, f"{prog}: {action.option_strings or action.dest} has no help"


def test_the_compilation_cache_is_on_for_the_command_only_and_never_touches_the_environment(tmp_path, monkeypatch):
    """``core.devices.compilation_cache`` (each command runs in it) sets JAX's cache folder for the block and
    restores JAX's settings after; a folder the caller chose (conftest's, through JAX_COMPILATION_CACHE_DIR) is
    left as it is."""
    import os

    import jax
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    env_before = dict(os.environ)
    chosen = jax.config.jax_compilation_cache_dir
    with cli.compilation_cache():
        assert jax.config.jax_compilation_cache_dir == chosen             # the caller's folder wins
    try:
        jax.config.update("jax_compilation_cache_dir", None)
        size_before = jax.config.jax_compilation_cache_max_size
        with cli.compilation_cache():
            assert jax.config.jax_compilation_cache_dir == str(cli.compilation_cache_dir())
            assert str(tmp_path) in jax.config.jax_compilation_cache_dir
            assert jax.config.jax_compilation_cache_max_size == devices.CACHE_MAX_BYTES > 0   # JAX locks the folder
        assert jax.config.jax_compilation_cache_max_size == size_before
        assert jax.config.jax_compilation_cache_dir is None
        with cli.compilation_cache(enabled=False):
            assert jax.config.jax_compilation_cache_dir is None
    finally:
        jax.config.update("jax_compilation_cache_dir", chosen)
    assert dict(os.environ) == env_before


def test_a_program_file_without_its_access_time_is_removed_so_the_bounded_cache_writes_again(tmp_path, monkeypatch):
    """JAX's size-bounded cache reads every entry's access time before a write: a program written by an
    unbounded run (no ``-atime`` file) fails every later write until ``drop_untimed_cache_entries`` removes it;
    complete entries and their times are kept, and ``compilation_cache`` repairs the user's folder."""
    from jax._src.lru_cache import LRUCache  # the class JAX's persistent cache uses when a size bound is set
    from ropetheory.core.devices import drop_untimed_cache_entries

    folder = tmp_path / "cache"
    bounded = LRUCache(str(folder), max_size=1 << 20)
    bounded.put("kept", b"program")
    LRUCache(str(folder), max_size=-1).put("untimed", b"program")           # an unbounded run: no -atime
    (folder / "orphan-atime").write_bytes(b"\0" * 8)                      # a time whose program was evicted
    with pytest.raises(FileNotFoundError, match="untimed-atime"):
        bounded.put("new", b"program")
    assert drop_untimed_cache_entries(folder) == 1
    assert sorted(p.name for p in folder.iterdir() if p.name != ".lockfile") == [
        "kept-atime", "kept-cache", "orphan-atime"]
    bounded.put("new", b"program")
    assert bounded.get("new") == b"program" and bounded.get("kept") == b"program"
    assert drop_untimed_cache_entries(tmp_path / "absent") == 0 and not (tmp_path / "absent").exists()

    import jax
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home"))
    user = cli.compilation_cache_dir()
    LRUCache(str(user), max_size=-1).put("untimed", b"program")
    chosen = jax.config.jax_compilation_cache_dir
    try:
        jax.config.update("jax_compilation_cache_dir", None)
        with cli.compilation_cache():
            assert not (user / "untimed-cache").exists()
    finally:
        jax.config.update("jax_compilation_cache_dir", chosen)


def test_device_cpu_makes_the_cpu_choices_for_the_command_only(tmp_path, monkeypatch):
    """``--device cpu`` is a scope: inside it every backend-dependent choice (eigenvalue method, batching,
    chunk sizes) is the CPU's even where the process default is an accelerator; after the command, JAX's
    default device is what it was."""
    import jax
    from ropetheory.core.devices import compute_platform
    from ropetheory.flags import device_scope
    from ropetheory.spectra import gram, phase_stream, topeig
    from ropetheory.theory import base_bound as bb, base_search as bs
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")         # as if the process default were a GPU
    before = jax.config.jax_default_device
    assert compute_platform() == "gpu" and topeig.default_method() == "subspace"
    accelerator_chunk = phase_stream.default_phase_step([10 ** 9])
    batched: list[bool] = []
    rho2 = gram.rho2_for_clouds
    monkeypatch.setattr(gram, "rho2_for_clouds", lambda *a, **k: batched.append(k["batched_eig"]) or rho2(*a, **k))
    theta, V = rt.schedule("rope", head_dim=8), np.random.default_rng(0).normal(size=(3, 8))
    with device_scope("cpu"):
        assert compute_platform() == "cpu" and topeig.default_method() == "tridiagonal"
        assert phase_stream.default_phase_step([10 ** 9]) < accelerator_chunk
        curve = gram.rank1_curves_batch(theta, V, [1, 100, 10 ** 6]).rho
    assert batched == [False] and curve.shape == (3, 3)
    assert jax.config.jax_default_device is before and compute_platform() == "gpu"
    chunks: list[int] = []
    evaluate = bs._evaluate_block
    monkeypatch.setattr(bs, "_evaluate_block", lambda blk, L, d, chunk: chunks.append(chunk) or
                        evaluate(blk, L, d, chunk))
    rc = cli.main(["basebound", "--lengths", "128", "--head-dim", "32", "--b-min", "10", "--b-max", "1e4",
                   "--out", str(tmp_path), "--quiet", "--device", "cpu"])
    assert rc == 0 and chunks and set(chunks) == {bb.PAIR_CHUNK_CPU}
    assert jax.config.jax_default_device is before and compute_platform() == "gpu"
