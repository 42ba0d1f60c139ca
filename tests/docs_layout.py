"""``make docs-check``: the built site read in headless Chromium, at the widths readers use.

For every main page and every width in ``WIDTHS`` a copy of the page gets a small script that, once the
page (and MathJax) has laid out, measures each table and code block against the content column and
writes what it found into the page; ``chromium --headless --dump-dom`` returns it. The check fails
when a table or a code block is wider than the content column (a reader would scroll it sideways or
lose columns behind a scroll bar), or when the API page does not document ``ropetheory.testing``.

    python tests/docs_layout.py results/site [--screenshots docs/screenshots/after-]

Not a pytest module (it needs Chromium and a built site, about a minute on 2 cores): ``make docs-check``.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

#: the pages a reader opens: home, quickstart, every guide, theory, findings, conventions, API
PAGES = ("index.html", "quickstart.html", "guide/theorem.html", "guide/figure7.html", "guide/report.html",
         "guide/real-model.html", "guide/training.html", "guide/sweep.html", "guide/audit.html",
         "guide/retrofit.html", "theory.html",
         "findings.html", "conventions.html", "api.html")
#: a laptop and a desktop browser window (CSS pixels)
WIDTHS = (1280, 1920)
#: window height for the measurements and the screenshots
HEIGHT = 1000
#: an element may pass the content column by this many CSS pixels (sub-pixel rounding of borders)
OVERFLOW_TOL_PX = 2
#: virtual time Chromium gives the page to load, lay out and run MathJax before the DOM is read (ms)
BUDGET_MS = 8000
#: the measurement runs this long after the load event, once MathJax has typeset (ms of virtual time)
SETTLE_MS = 3000
#: the views saved by --screenshots (name -> page, width): where tables and code blocks were cut off
SHOTS = {"findings-1280": ("findings.html", 1280), "findings-1920": ("findings.html", 1920),
         "training-1280": ("guide/training.html", 1280), "quickstart-1280": ("quickstart.html", 1280),
         "theory-1280": ("theory.html#where-each-claim-is-checked", 1280),
         "audit-1280": ("guide/audit.html#the-error-floor-of-a-dtype", 1280)}

MEASURE = """
<script>
window.addEventListener("load", () => setTimeout(() => {
  const content = document.querySelector(".md-content__inner") || document.body;
  const right = content.getBoundingClientRect().right, tol = %(tol)d;
  const bad = [];
  document.querySelectorAll(".md-typeset table").forEach(t => {     // a table reaching past the column
    const past = t.getBoundingClientRect().right - right;
    if (past > tol) bad.push({kind: "table", px: Math.round(past), text: t.textContent.trim().slice(0, 70)});
  });
  document.querySelectorAll(".md-typeset pre > code").forEach(c => {   // a code line hidden behind a scroll
    const hidden = c.scrollWidth - c.clientWidth;
    if (hidden > tol) bad.push({kind: "code block", px: hidden, text: c.textContent.trim().slice(0, 70)});
  });
  const out = document.createElement("pre");
  out.id = "layout-check";
  out.textContent = JSON.stringify({content: Math.round(content.getBoundingClientRect().width), bad});
  document.body.appendChild(out);
}, %(settle)d));
</script>
"""


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit("docs-check needs Chromium (apt-get install chromium)")


def browse(url: str, width: int, *extra: str) -> str:
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           f"--window-size={width},{HEIGHT}", f"--virtual-time-budget={BUDGET_MS}",
           "--run-all-compositor-stages-before-draw", *extra, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout


def measure(site: pathlib.Path, page: str, width: int) -> dict:
    """The page's content width and every table or code block wider than it."""
    html = (site / page).read_text(encoding="utf-8")
    probe = site / (page[:-5] + ".layout-check.html")
    probe.write_text(html.replace("</body>", MEASURE % {"tol": OVERFLOW_TOL_PX, "settle": SETTLE_MS} + "</body>"),
                     encoding="utf-8")
    try:
        dom = browse(probe.as_uri(), width, "--dump-dom")
    finally:
        probe.unlink()
    m = re.search(r'<pre id="layout-check">(.*?)</pre>', dom, flags=re.S)
    if m is None:
        raise RuntimeError(f"{page} at {width} px: the measurement did not run")
    return json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<")
                      .replace("&gt;", ">"))


#: the view starts at the anchor: what comes before it in the content column is dropped (headless Chromium
#: draws a blank page when a screenshot is scrolled)
SCROLL = """<script>window.addEventListener("load", () => setTimeout(() => {
  const h = document.getElementById("%s");
  while (h.previousElementSibling) h.previousElementSibling.remove();
}, %d));</script>"""


def screenshot(site: pathlib.Path, page: str, width: int, path: pathlib.Path) -> None:
    """``page`` (from its ``#anchor``, if any) at ``width`` x ``HEIGHT`` CSS pixels, as a PNG."""
    file, _, anchor = page.partition("#")
    probe = site / (file[:-5] + ".screenshot.html")
    html = (site / file).read_text(encoding="utf-8")
    probe.write_text(html.replace("</body>", (SCROLL % (anchor, SETTLE_MS) if anchor else "") + "</body>"),
                     encoding="utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        browse(probe.as_uri(), width, f"--screenshot={path.resolve()}")
    finally:
        probe.unlink()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="docs_layout", description=__doc__.split("\n\n")[0])
    ap.add_argument("site", help="the built site (mkdocs build -d SITE)")
    ap.add_argument("--pages", nargs="*", default=PAGES, help="pages to check, relative to SITE")
    ap.add_argument("--screenshots", metavar="PREFIX", default=None,
                    help="also save the views in SHOTS as PREFIX<name>.png (docs/screenshots/after-)")
    args = ap.parse_args(argv)
    site = pathlib.Path(args.site).resolve()
    failures = []
    with tempfile.TemporaryDirectory() as tmp:                   # probes in a copy: the site stays as built
        copy = pathlib.Path(tmp) / "site"
        shutil.copytree(site, copy)
        for name, (page, width) in SHOTS.items() if args.screenshots else ():
            screenshot(copy, page, width, pathlib.Path(f"{args.screenshots}{name}.png"))
        for page in args.pages:
            for width in WIDTHS:
                res = measure(copy, page, width)
                for b in res["bad"]:
                    failures.append(f"{page} at {width} px (content column {res['content']} px): {b['kind']} "
                                    f"{b['px']} px too wide: {b['text'][:50]!r}")
                print(f"{page:24s} {width:5d} px: content {res['content']:5d} px, {len(res['bad'])} too wide")
    api = (site / "api.html").read_text(encoding="utf-8")
    if 'id="ropetheory.testing"' not in api:
        failures.append("api.html does not document ropetheory.testing")
    for f in failures:
        print(f"docs-check: {f}", file=sys.stderr)
    print(f"docs-check: {len(failures)} problem(s) on {len(args.pages)} pages at {', '.join(map(str, WIDTHS))} px")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
