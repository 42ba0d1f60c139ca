"""The installed package is the tested package: a wheel built from the checkout carries every file the
installed commands read, and runs them from a folder with no repository in sight."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import zipfile

import pytest

import ropetheory as rt

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                    str(ROOT)], check=True, capture_output=True, text=True)
    (whl,) = out.glob("ropetheory-*.whl")
    return whl


def test_the_wheel_carries_the_package_data_the_license_and_py_typed(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for need in ("ropetheory/py.typed", "ropetheory/data/base_bound.csv", "ropetheory/data/configs/llama-2-7b.json",
                 "ropetheory/data/analyses/smollm2-135m/analysis.json", "ropetheory/__main__.py",
                 "ropetheory/schedules/model_config.py", "ropetheory/spectra/cuda/topeig_ffi.cu",
                 "ropetheory/spectra/cuda/topeig_kernel.cuh"):
        assert need in names, need
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert wheel.name.startswith(f"ropetheory-{rt.__version__}-")
    subpackages = {p.parent.relative_to(ROOT).as_posix() for p in (ROOT / "ropetheory").rglob("__init__.py")}
    assert {n.rsplit("/", 1)[0] for n in names if n.endswith("/__init__.py")} == subpackages


def test_the_installed_wheel_runs_report_and_schedule_from_another_folder(wheel, tmp_path):
    """Installed without the checkout (the wheel's files first on the path), ``report`` on a packaged
    fixture finds Men et al.'s certified smallest base, and ``schedule`` runs."""
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, text=True)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run([sys.executable, "-c", "import ropetheory; print(ropetheory.__file__)"], cwd=work, env=env,
                           check=True, capture_output=True, text=True).stdout
    assert where.startswith(str(site))
    rep = subprocess.run([sys.executable, "-m", "ropetheory", "report", "llama-2-7b", "--clouds", "2", "--quiet",
                          "--out", str(work / "rep")], cwd=work, env=env, capture_output=True, text=True)
    assert rep.returncode == 0, rep.stderr
    page = json.loads((work / "rep" / "report.json").read_text())
    men = page["schedules"][0]["men"]
    assert men["smallest_feasible_base"] is not None and men["table"] == "base_bound.csv"
    sch = subprocess.run([sys.executable, "-m", "ropetheory", "schedule", "rope_id:train_len=4096,head_dim=16"],
                         cwd=work, env=env, capture_output=True, text=True, check=True)
    assert "NoPE" in sch.stdout


def test_every_module_of_the_package_imports_without_a_deprecation_warning_of_its_own():
    """Every module imported in a fresh interpreter with the DeprecationWarnings attributed to the package's own
    modules turned into errors: an import the running Python has deprecated fails here before it breaks the
    package on a newer one (``importlib.abc.Traversable``, deprecated in 3.12 and gone in 3.14, warned on the
    device machine's Python). Warnings that libraries raise in their own modules are left alone."""
    code = (
        "import importlib, pkgutil, warnings\n"
        "warnings.filterwarnings('error', category=DeprecationWarning, module=r'ropetheory(\\.|$)')\n"
        "import ropetheory\n"
        "names = [m.name for m in pkgutil.walk_packages(ropetheory.__path__, 'ropetheory.')]\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "print(len(names))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert int(out.stdout.split()[-1]) > 50                  # the walk found the package's modules
