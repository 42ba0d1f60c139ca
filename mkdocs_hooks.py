"""mkdocs hook: serve MathJax from the built site, so rendered maths works offline and from disk.

MathJax 3 (its single-file SVG build, no fonts to fetch) ships in the ``django-static-mathjax`` wheel
(the docs extra); the hook copies that one file into the site at build time instead of committing it.
"""
from __future__ import annotations

import importlib.util
import pathlib
import re
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


#: inline code in a table cell: identifiers and paths get break points after . / _ and ::
TABLE_CODE = re.compile(r"(<td[^>]*>)(.*?)(</td>)", re.S)
INLINE_CODE = re.compile(r"<code>([^<]*)</code>")


def _break_points(code: re.Match) -> str:
    text = re.sub(r"(::|[./_])(?=\w)", r"\1<wbr>", code.group(1))
    return f"<code>{text}</code>"


def on_page_content(html, **kwargs):
    """Let a long identifier in a table cell wrap where a reader would split it (``ropetheory.<wbr>theory``),
    so the table fits the column without breaking a name mid-word (docs/stylesheets/extra.css)."""
    return TABLE_CODE.sub(lambda m: m.group(1) + INLINE_CODE.sub(_break_points, m.group(2)) + m.group(3), html)
