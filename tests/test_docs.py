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
    site = tmp_path / "site"
    assert (site / "api.html").read_text().count("rank1_curve") > 0
    pages = [p.read_text() for p in site.rglob("*.html")]
    for role in (":func:", ":mod:", ":data:", ":class:", ":meth:", ":attr:"):
        assert not any(role in p for p in pages), f"raw reST role {role} in the built site"
    assert (site / "javascripts" / "tex-svg.js").stat().st_size > 10 ** 6          # MathJax, served offline
    theory = (site / "theory.html").read_text()
    assert 'class="arithmatex"' in theory and "tex-svg.js" in theory                 # maths rendered by MathJax
    assert (site / "search" / "search_index.js").is_file()                           # search from disk (offline)
    api = (site / "api.html").read_text()
    ids = re.findall(r'id="(ropetheory[\w.]*)"', api)
    assert ids[0] == "ropetheory" and "ropetheory.testing" in ids and "ropetheory.from_config" in ids
    assert ids.index("ropetheory.testing") < ids.index("ropetheory.core.checks.check_bool")   # public names first
    assert "<code>ropetheory.<wbr>theory.<wbr>theorems.<wbr>predicted_<wbr>limit</code>" in theory  # no mid-word


def test_every_page_has_examples_to_run():
    assert len(EXAMPLES) >= 5


@pytest.mark.parametrize("page, i, code", EXAMPLES, ids=[f"{p.relative_to(ROOT)}#{i}" for p, i, _ in EXAMPLES])
def test_docs_example_runs(page, i, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"{page.name}#{i}", "exec"), {"__name__": "__docs__"})


def test_the_counter_example_count_in_the_readme_and_the_guide_is_the_one_verify_runs():
    from ropetheory.studies.verify import counterexample_cases
    words = {4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}
    n = words[len(counterexample_cases())]
    root = pathlib.Path(__file__).resolve().parents[1]
    for page in (root / "README.md", root / "docs" / "guide" / "theorem.md"):
        text = page.read_text()
        assert f"{n} counter-examples" in text, page
        assert not any(f"{w} counter-examples" in text for w in words.values() if w != n), page
