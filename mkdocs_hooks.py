"""mkdocs hook: serve MathJax from the built site, so rendered maths works offline and from disk.

MathJax 3 (its single-file SVG build, no fonts to fetch) ships in the ``django-static-mathjax`` wheel
(the docs extra); the hook copies that one file into the site at build time instead of committing it.
"""
from __future__ import annotations

import importlib.util
import pathlib
import shutil

#: the MathJax build the pages load (docs/javascripts/mathjax.js configures it)
BUNDLE = ("static", "mathjax", "es5", "tex-svg.js")


def on_post_build(config, **kwargs):
    spec = importlib.util.find_spec("mathjax")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the docs need MathJax: pip install 'ropetheory[docs]' (django-static-mathjax)")
    src = pathlib.Path(next(iter(spec.submodule_search_locations))).joinpath(*BUNDLE)
    dst = pathlib.Path(config["site_dir"]) / "javascripts" / "tex-svg.js"
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
