"""Sweeps: sharded over 4 virtual CPU devices == unsharded; resume after a kill; streaming kernel."""
import json
import os
import subprocess
import sys
import time
import pathlib

import numpy as np
import pytest

import ropetheory as rt
from ropetheory import spectra
from ropetheory.studies import sweep

ROOT = pathlib.Path(__file__).resolve().parents[1]
ENV4 = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": str(ROOT)}

SHARD_SCRIPT = r"""
import json, sys, numpy as np, jax
import ropetheory as rt
from ropetheory import spectra
from ropetheory.studies import sweep
assert len(jax.devices()) == 4, jax.devices()
th = rt.schedule("rope_id", head_dim=32, train_len=512).theta
V = np.random.default_rng(1).standard_normal((13, 32))          # 13: not a multiple of 4 (padding path)
g = spectra.log_grid(1e7, 25)
a = sweep.sharded_rank1_curves(th, V, g, clouds_per_call=8)
b = sweep.sharded_rank1_curves(th, V, g, mesh=sweep.device_mesh(jax.devices()[:1]))
c = spectra.rank1_curves_batch(th, V, g).rho
print(json.dumps({"ab": float(np.abs(a - b).max()), "ac": float(np.abs(a - c).max())}))
"""


def test_sharded_over_four_devices_equals_unsharded():
    r = subprocess.run([sys.executable, "-c", SHARD_SCRIPT], env=ENV4, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["ab"] <= 1e-12 and res["ac"] <= 1e-12


def _sweep_cmd(out):
    return [
        sys.executable,
        "-m",
        "ropetheory.studies.sweep",
        "--out",
        str(out),
        "--clouds",
        "24",
        "--num",
        "30",
        "--n-max",
        "1e7",
        "--head-dims",
        "32,64",
        "--quiet",
        "--schedules",
        '[{"name": "rope"}, {"name": "partial", "fraction": 0.5}, {"name": "rope_id", "train_len": 512}]',
    ]


def test_resume_after_a_kill_gives_the_same_file(tmp_path):
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    r = subprocess.run(_sweep_cmd(ref), env=ENV4, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    p = subprocess.Popen(_sweep_cmd(cut), env=ENV4, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while time.time() - t0 < 300:
        if len(list((cut / "sweep_parts").glob("*.npz"))) >= 2 if (cut / "sweep_parts").exists() else False:
            break
        time.sleep(0.05)
    p.kill()
    p.wait()
    n_done = len(list((cut / "sweep_parts").glob("*.npz")))
    assert 1 <= n_done < 6 or (cut / "sweep.csv").exists()
    r = subprocess.run(_sweep_cmd(cut), env=ENV4, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (cut / "sweep.csv").read_text() == (ref / "sweep.csv").read_text()
    meta = json.loads((cut / "sweep.json").read_text())
    assert meta["computed_now"] == 6 - n_done and len(meta["devices"]) == 4


def test_streaming_batch_kernel_matches_closed_form_and_single_cloud_stream():
    th = rt.schedule("rope", head_dim=16, base=500.0).theta
    V = np.random.default_rng(2).standard_normal((5, 16))
    L = [1, 9, 700, 5000]
    np.testing.assert_allclose(sweep.stream_gram_batch(th, V, L, positions_per_step=128),
                               spectra.rank1_curves_batch(th, V, L).rho, rtol=1e-12)
    w = (np.arange(5000) + 1.0) ** -0.5
    got = sweep.stream_gram_batch(th, V, L, alpha=-0.5, positions_per_step=256)
    for c in range(2):
        ref = spectra.rank1_stream_curve(th, V[c], L, weights=w)["rho"]
        np.testing.assert_allclose(got[c], ref, rtol=1e-12)


@pytest.mark.parametrize("step, error", [("abc", TypeError), (0, ValueError), (2.5, ValueError)])
def test_the_streaming_batch_refuses_a_bad_positions_per_step_naming_it(step, error):
    th = rt.schedule("rope", head_dim=8).theta
    with pytest.raises(error, match="positions_per_step"):
        sweep.stream_gram_batch(th, np.ones((2, 8)), [10, 100], positions_per_step=step)


@pytest.mark.parametrize("args, match", [
    (["--schedules", "[{name: rope}]"], "not valid JSON"),
    (["--schedules", '{"name": "rope"}'], "must be a JSON list"),
    (["--weights", "cubic"], "unknown weights 'cubic'"),
    (["--clouds", "0"], "--clouds must be >= 1, got 0"),
    (["--schedules", '[{"name": "ropee"}]'], "unknown schedule 'ropee'"),
])
def test_sweep_cli_rejects_bad_input(args, match, tmp_path, capsys):
    from ropetheory.cli import main
    assert main(["sweep", "--out", str(tmp_path), "--quiet", "--num", "5", "--clouds", "2", *args]) == 2
    assert match.split("'")[0] in capsys.readouterr().err
