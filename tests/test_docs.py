"""The documentation builds strictly (a broken reference fails) and every Python example in it runs."""
from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]
EXAMPLES = [(p, i, code) for p in PAGES
            for i, code in enumerate(re.findall(r"```python\n(.*?)```", p.read_text(), flags=re.S))]


def test_docs_site_builds_strictly(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                       cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "site" / "api" / "index.html").read_text().count("rank1_curve") > 0


def test_every_page_has_examples_to_run():
    assert len(EXAMPLES) >= 5


@pytest.mark.parametrize("page, i, code", EXAMPLES, ids=[f"{p.relative_to(ROOT)}#{i}" for p, i, _ in EXAMPLES])
def test_docs_example_runs(page, i, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"{page.name}#{i}", "exec"), {"__name__": "__docs__"})
