"""Measure the built book as a learner meets it, in headless Chromium, and enforce its bounds.

Builds nothing. Given the HTML folder of a built book (default ``_build/html``), it opens every
page under ``book/`` in Chromium (driven by Playwright, using the system's Chromium), waits for
MathJax to typeset, and measures what a reader sees:

- ``visible``: solution regions whose content is readable without a click. A solution region is
  the code of an nbgrader solution cell (``.tag_solution``, added by
  ``book/_ext/solution_markers.py``) or the body of a sphinx-exercise solution
  (``div.solution``, its title excluded). Readable means its rendered text (``innerText``,
  which leaves out folded and hidden content) is not empty. On the first page with a folded
  region, the script also clicks that region's toggle and checks that the text then appears,
  so that a region counted as hidden really opens. Bound: 0.
- ``paths``: absolute paths of the machine that built the book anywhere in the page's text,
  hidden parts included (``/tmp/...``, ``/home/...``, ``site-packages``, the repository's own
  folder...). Bound: 0 pages.
- ``tex``: TeX left untypeset in the prose (outside code and outputs): ``$$``, ``\\(``,
  ``\\[``, ``\\begin{``, a TeX command such as ``\\frac`` or ``$E = J_\\text`` in plain text;
  plus MathJax error boxes. Bound: 0.
- ``reports``: full harness reports in cell outputs, i.e. output blocks holding the table that
  ``str(report)`` prints (a header line ``check  max rel. error ...``); ``report.summary()`` is
  the one-line form. Bound: 15 in the whole book.
- ``minutes``: minutes of prose at 150 words a minute: the words of the page's article
  without code cells, outputs, equations and solution regions. Bound: 20 for chapter 1,
  30 for every other page; the appendices are reference pages, read a part at a time, and
  their minutes are reported only.
- ``cut``: content cut off on a phone: with a 390-pixel-wide viewport, elements of the article
  that reach past the right edge of a box that clips without scrolling, or past the screen
  (which makes the whole page scroll sideways); content inside a box that scrolls sideways
  is fine. Bound: 0.
- ``figures``: figures (``<img>`` outside the theme's ``_static/``, inline images included) and
  animations (matplotlib's JavaScript players). Reported only, never a failure.

Exit status: 0 when every bound holds, 1 when one does not, 2 when nothing could be measured.

Usage::

    python scripts/check_book.py                      # _build/html, every page under book/
    python scripts/check_book.py /tmp/out/_build/html --pages 'book/01-*.html'

Needs Playwright (``pip install playwright``; no browser download: the system's Chromium is
used, Debian ``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WORDS_PER_MINUTE = 150
MAX_MINUTES = 30
MAX_MINUTES_FIRST = 20          # chapter 1: the reader reaches a working check quickly
MAX_FULL_REPORTS = 15           # in the whole book
PHONE_WIDTH = 390

# Absolute paths that only exist on the machine that built the book.
MACHINE_PATHS = [
    r"/tmp/", r"/var/folders/", r"/private/var/", r"/home/[\w.-]+/", r"/root/", r"/Users/[\w.-]+/",
    r"/work/", r"/opt/", r"/usr/lib/python", r"/usr/local/lib/python", r"site-packages",
    r"[A-Za-z]:\\\\Users\\\\",
]

# TeX that was not typeset, in prose text (code, outputs and typeset math excluded).
RAW_TEX = (r"\$\$|\\\(|\\\)|\\\[|\\\]|\\begin\{|\\end\{"
           r"|\\(?:frac|text|mathbf|mathrm|sum|partial|left|right|sqrt|odot|top|cdot|tfrac|"
           r"varepsilon|alpha|beta|sigma|delta|lambda|theta|hat|bar|operatorname)\b"
           r"|\$[^$\n]{0,80}[_^\\]")

# One page's measurements, computed in the browser. Returns a plain object.
MEASURE_JS = r"""
([rawTex, machinePaths]) => {
  const article = document.querySelector('article.bd-article')
                  || document.querySelector('main') || document.body;
  const rawRe = new RegExp(rawTex);
  const pathRes = machinePaths.map(p => new RegExp(p));

  // Solution regions: their readable text.
  const regions = [];
  for (const cell of document.querySelectorAll('.tag_solution')) {
    const input = cell.querySelector('.cell_input') || cell;
    regions.push({kind: 'cell', text: input.innerText.trim()});
  }
  for (const sol of document.querySelectorAll('div.solution')) {
    const parts = [...sol.children].filter(c => !c.classList.contains('admonition-title')
                                                && !c.classList.contains('toggle-button'));
    regions.push({kind: 'exercise', text: parts.map(c => c.innerText).join(' ').trim()});
  }

  // Prose: the article's text without code, outputs, math, solutions and the theme's chrome.
  const skip = 'pre, code.literal-block, div.cell, .cell_output, .output, mjx-container, ' +
               'script, style, div.solution, .tag_solution, .headerlink, ' +
               '.toggle-button, nav, .prev-next-area, .bd-footer-article, .admonition-title';
  const clone = article.cloneNode(true);
  clone.querySelectorAll(skip).forEach(e => e.remove());
  const words = (clone.textContent.match(/[A-Za-z0-9][A-Za-z0-9'’\-]*/g) || []).length;

  // Untypeset TeX in prose text nodes.
  const raw = [];
  const walker = document.createTreeWalker(article, NodeFilter.SHOW_TEXT);
  const codeLike = 'pre, code, script, style, mjx-container, .cell_output, .output, .highlight, ' +
                   'textarea, mjx-assistive-mml';
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const parent = n.parentElement;
    if (!parent || parent.closest(codeLike)) continue;
    const m = n.textContent.match(rawRe);
    if (m) {
      const at = m.index;
      raw.push(n.textContent.slice(Math.max(0, at - 30), at + 40).replace(/\s+/g, ' '));
    }
  }
  const mathErrors = document.querySelectorAll('mjx-merror').length;

  // Build-machine paths anywhere in the page's text, hidden parts included.
  const text = document.body.textContent;
  const paths = [];
  for (const re of pathRes) {
    const m = text.match(re);
    if (m) paths.push(text.slice(Math.max(0, m.index - 30), m.index + 50).replace(/\s+/g, ' '));
  }

  // Full harness reports: output blocks with the report table's header line.
  let reports = 0;
  for (const pre of article.querySelectorAll('.cell_output pre, .output pre')) {
    reports += (pre.textContent.match(/^\s*check\s+max rel\. error/mg) || []).length;
  }

  // Figures and animations.
  let figures = 0;
  for (const img of article.querySelectorAll('img')) {
    if (img.closest('div.animation')) continue;
    const src = img.getAttribute('src') || '';
    if (src.startsWith('data:image') || !src.includes('_static/')) figures += 1;
  }
  const animations = article.querySelectorAll('div.animation').length;
  return {regions, words, raw, mathErrors, paths, reports, figures, animations};
}
"""

# Blocks cut off at the current viewport width: content reaching past a box that does not
# scroll, or past the screen.
CUT_JS = r"""
() => {
  const article = document.querySelector('article.bd-article')
                  || document.querySelector('main') || document.body;
  const screen = document.documentElement.clientWidth;
  const label = el => el.tagName.toLowerCase() +
      (el.className && typeof el.className === 'string' ? '.' + el.className.split(' ')[0] : '') +
      ': ' + (el.textContent || '').trim().slice(0, 50).replace(/\s+/g, ' ');
  const culprits = new Map();
  for (const el of article.querySelectorAll('*')) {
    if (el.closest('mjx-assistive-mml')) continue;           // MathJax's hidden copy for readers
    const box = el.getBoundingClientRect();
    if (box.width === 0 || box.height === 0) continue;       // folded away or empty
    let a = el.parentElement;
    while (a && a !== document.body && getComputedStyle(a).overflowX === 'visible') a = a.parentElement;
    const overflow = a && a !== document.body ? getComputedStyle(a).overflowX : 'visible';
    if (overflow === 'auto' || overflow === 'scroll') continue;       // scrolls in its box
    if (overflow === 'hidden' || overflow === 'clip') {
      if (box.right > a.getBoundingClientRect().right + 1) culprits.set(a, label(a));
    } else if (box.right > screen + 1) {
      const parent = el.parentElement;
      if (!parent || parent.getBoundingClientRect().right <= screen + 1) culprits.set(el, label(el));
    }
  }
  return [...culprits.values()];
}
"""

WAIT_FOR_MATH_JS = """
async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
  }
  return true;
}
"""


@dataclass
class PageMetrics:
    """What was measured on one page."""

    page: str
    regions: int = 0
    visible: list = field(default_factory=list)
    words: int = 0
    raw_tex: list = field(default_factory=list)
    paths: list = field(default_factory=list)
    reports: int = 0
    cut: list = field(default_factory=list)
    figures: int = 0
    animations: int = 0
    error: str = ""

    @property
    def minutes(self) -> float:
        return self.words / WORDS_PER_MINUTE

    @property
    def max_minutes(self) -> int | None:
        name = Path(self.page).name
        if name.startswith("appendix-"):
            return None                 # reference pages, read in parts: reported, not bounded
        return MAX_MINUTES_FIRST if name.startswith("01-") else MAX_MINUTES

    def problems(self) -> list[str]:
        """The bounds this page breaks (the whole book's report count is checked apart)."""
        out = [f"    browser: {self.error}"] if self.error else []
        out += [f"    solution visible without a click: {text[:70]!r}" for text in self.visible]
        out += [f"    build-machine path: ...{text}..." for text in self.paths]
        out += [f"    untypeset TeX: ...{text}..." for text in self.raw_tex[:5]]
        if len(self.raw_tex) > 5:
            out.append(f"    untypeset TeX: ({len(self.raw_tex) - 5} more)")
        if self.max_minutes is not None and self.minutes > self.max_minutes:
            out.append(f"    {self.minutes:.1f} minutes of prose, more than {self.max_minutes}")
        out += [f"    cut at {PHONE_WIDTH} px: {text}" for text in self.cut[:5]]
        if len(self.cut) > 5:
            out.append(f"    cut at {PHONE_WIDTH} px: ({len(self.cut) - 5} more)")
        return out


def measure_page(browser, html_dir: Path, page: Path, *, timeout_ms: int, try_click: bool,
                 machine_paths: list[str]) -> tuple[PageMetrics, bool | None]:
    """Measure one page; the second value tells whether a folded solution opened on a click
    (None when no click was tried). ``machine_paths``: regular expressions of build paths."""
    metrics = PageMetrics(page=page.relative_to(html_dir).as_posix())
    opened = None
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        tab = context.new_page()
        tab.set_default_timeout(timeout_ms)
        tab.goto(page.resolve().as_uri(), wait_until="load")
        tab.evaluate(WAIT_FOR_MATH_JS)
        found = tab.evaluate(MEASURE_JS, [RAW_TEX, machine_paths])
        metrics.regions = len(found["regions"])
        metrics.visible = [r["text"] for r in found["regions"] if r["text"]]
        metrics.words = found["words"]
        metrics.raw_tex = found["raw"] + ["MathJax error"] * found["mathErrors"]
        metrics.paths = found["paths"]
        metrics.reports = found["reports"]
        metrics.figures = found["figures"]
        metrics.animations = found["animations"]
        if try_click and metrics.regions > len(metrics.visible):
            opened = click_opens_solution(tab)

        tab.set_viewport_size({"width": PHONE_WIDTH, "height": 844})
        tab.wait_for_timeout(300)
        metrics.cut = tab.evaluate(CUT_JS)
    except Exception as err:  # a page that cannot be measured fails, with the reason
        metrics.error = f"{type(err).__name__}: {str(err).splitlines()[0]}"
    finally:
        context.close()
    return metrics, opened


def click_opens_solution(tab) -> bool:
    """Click the toggle of the first folded solution region; True when its text then shows."""
    return tab.evaluate(r"""
    async () => {
      const cell = document.querySelector('.tag_solution details summary');
      const sol = document.querySelector('div.solution .admonition-title, div.solution button.toggle-button');
      const target = cell || sol;
      if (!target) return false;
      target.click();
      await new Promise(r => setTimeout(r, 300));
      if (cell) return cell.closest('.tag_solution').querySelector('.cell_input').innerText.trim() !== '';
      const box = target.closest('div.solution');
      return [...box.children].filter(c => !c.classList.contains('admonition-title'))
                              .some(c => c.innerText.trim() !== '');
    }
    """)


def find_pages(html_dir: Path, patterns: list[str]) -> list[Path]:
    pages = {path for pattern in patterns for path in html_dir.glob(pattern) if path.is_file()}
    return sorted(pages)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Measure the built book in headless Chromium: solutions folded, no build "
                    "paths, math typeset, few full harness reports, reading time, phone layout, "
                    "figures.")
    parser.add_argument("html_dir", nargs="?", default="_build/html", type=Path,
                        help="the built HTML folder (default: _build/html)")
    parser.add_argument("--pages", nargs="+", default=["book/**/*.html"], metavar="GLOB",
                        help="pages to measure, as globs relative to html_dir "
                             "(default: book/**/*.html)")
    parser.add_argument("--chromium", help="the browser executable (default: found on PATH)")
    parser.add_argument("--timeout", type=float, default=60.0, metavar="S",
                        help="limit per page action (default: 60 s)")
    args = parser.parse_args(argv)

    html_dir = args.html_dir.resolve()
    if not html_dir.is_dir():
        print(f"check_book: {args.html_dir} is not a folder; build the book first (make book).",
              file=sys.stderr)
        return 2
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("check_book: Playwright is not installed (pip install playwright).", file=sys.stderr)
        return 2
    chromium = args.chromium or next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)
    if chromium is None:
        print("check_book: no Chromium found on PATH (Debian: apt-get install chromium), or "
              "pass --chromium.", file=sys.stderr)
        return 2
    pages = find_pages(html_dir, args.pages)
    if not pages:
        print(f"check_book: no page in {args.html_dir} matches {' '.join(args.pages)}.",
              file=sys.stderr)
        return 2
    # The repository's folder (the one holding _build) is a build-machine path too.
    repo = html_dir.parent.parent if html_dir.parent.name == "_build" else html_dir
    machine_paths = MACHINE_PATHS + [re.escape(str(repo).rstrip("/") + "/")]

    results = []
    click_checked = None
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            for page in pages:
                metrics, opened = measure_page(browser, html_dir, page,
                                               timeout_ms=int(args.timeout * 1000),
                                               try_click=click_checked is None,
                                               machine_paths=machine_paths)
                if opened is not None:
                    click_checked = (metrics.page, opened)
                results.append(metrics)
        finally:
            browser.close()

    width = max(len("page"), *(len(m.page) for m in results))
    print(f"{'page':<{width}}  solutions  visible  paths  tex  reports  minutes  cut  "
          f"figures  animations  result")
    failed = 0
    for m in results:
        problems = m.problems()
        failed += bool(problems)
        print(f"{m.page:<{width}}  {m.regions:>9}  {len(m.visible):>7}  {len(m.paths):>5}  "
              f"{len(m.raw_tex):>3}  {m.reports:>7}  {m.minutes:>7.1f}  {len(m.cut):>3}  "
              f"{m.figures:>7}  {m.animations:>10}  {'FAIL' if problems else 'ok'}")
        for line in problems:
            print(line)

    total_reports = sum(m.reports for m in results)
    book_ok = total_reports <= MAX_FULL_REPORTS
    if click_checked is not None and not click_checked[1]:
        book_ok = False
    print()
    print(f"solution regions: {sum(m.regions for m in results)}, visible without a click: "
          f"{sum(len(m.visible) for m in results)} (bound 0)")
    if click_checked is not None:
        print(f"  a folded solution on {click_checked[0]} "
              f"{'opens on a click' if click_checked[1] else 'did NOT open on a click'}")
    print(f"pages with a build-machine path: {sum(bool(m.paths) for m in results)} (bound 0)")
    print(f"untypeset TeX in prose: {sum(len(m.raw_tex) for m in results)} (bound 0)")
    print(f"full harness reports: {total_reports} (bound {MAX_FULL_REPORTS})")
    print(f"blocks cut at {PHONE_WIDTH} px: {sum(len(m.cut) for m in results)} (bound 0)")
    print(f"minutes of prose at {WORDS_PER_MINUTE} words/min: "
          + ", ".join(f"{Path(m.page).stem.split('-')[0]} {m.minutes:.0f}" for m in results)
          + f" (bounds: chapter 1 {MAX_MINUTES_FIRST}, every other page {MAX_MINUTES}, appendices reported only)")
    print(f"figures and animations (reported only): "
          + ", ".join(f"{Path(m.page).stem.split('-')[0]} {m.figures}+{m.animations}"
                      for m in results))
    verdict = failed == 0 and book_ok
    print(f"{len(results)} page(s) measured, {failed} out of bounds"
          f"{'' if book_ok else '; the whole book is out of bounds'}: "
          f"{'PASS' if verdict else 'FAIL'}")
    return 0 if verdict else 1


if __name__ == "__main__":
    sys.exit(main())
