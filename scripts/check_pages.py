"""Check the built book in a headless browser: math typeset, figures present, nothing from the network.

Builds nothing. Given the HTML folder of a built book (default ``_build/html``), it opens every
chapter page (``book/**/*.html`` by default) in headless Chromium, lets the page's scripts run
(MathJax typesets the equations), dumps the resulting DOM and records the network requests the
page made. For each page it reports:

- ``equations``: typeset equations, i.e. ``<mjx-container>`` elements in the DOM;
- ``raw``: math left untypeset -- ``$$``, ``\\(``, ``\\[`` or ``\\begin{`` still in the page's
  text (code blocks and outputs excluded) -- and TeX errors: ``<mjx-merror>`` elements and
  undefined macros (which MathJax shows as red text such as ``\\foo``);
- ``figures``: ``<img>`` elements with a PNG source that exists on disk (theme icons under
  ``_static/`` not counted);
- ``missing``: local files the page loads (scripts, stylesheets, images) that do not exist;
- ``network``: ``http(s)://`` addresses the page would fetch: ``src`` of scripts, images,
  frames and media, ``href`` of stylesheets/icons/preloads, ``url(...)`` in styles, and every
  request Chromium's network log shows the page actually made (fetch, fonts, lazy scripts).
  Plain links (``<a href>``) are not fetched and not counted.

A page fails when it has untypeset math, a TeX error, a missing file or any network fetch.
Exit status: 0 when every page passes, 1 when one fails, 2 when nothing could be checked.

Usage::

    python scripts/check_pages.py                    # _build/html, every chapter page
    python scripts/check_pages.py /tmp/out/_build/html --pages 'book/02-*.html'
    python scripts/check_pages.py --screenshot /tmp/shots

Needs Chromium (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit
from urllib.request import url2pathname

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

# Flags for a quiet, offline-friendly headless browser (running as root needs --no-sandbox).
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
)

# Text that means an equation was not typeset.
RAW_MATH = re.compile(r"\$\$|\\\(|\\\[|\\begin\{")

# Elements whose text is code or machinery, not prose: raw-math search skips them.
SKIP_TEXT_TAGS = {"script", "style", "pre", "code", "textarea", "noscript", "template"}

# (tag, attribute) pairs the browser fetches by itself.
FETCHED_ATTRS = {
    ("script", "src"), ("img", "src"), ("img", "srcset"), ("iframe", "src"), ("frame", "src"),
    ("embed", "src"), ("object", "data"), ("audio", "src"), ("video", "src"),
    ("video", "poster"), ("source", "src"), ("source", "srcset"), ("track", "src"),
    ("input", "src"), ("image", "href"), ("image", "xlink:href"), ("use", "href"),
    ("use", "xlink:href"),
}
# <link rel=...> values that make the browser fetch (or connect to) the href.
FETCHING_RELS = {
    "stylesheet", "preload", "modulepreload", "prefetch", "prerender", "icon",
    "apple-touch-icon", "manifest", "preconnect", "dns-prefetch",
}
CSS_URL = re.compile(r"""url\(\s*['"]?([^'")\s]+)|@import\s+['"]([^'"]+)""")


def is_network(url: str) -> bool:
    """True for an address fetched over the network (http, https, protocol-relative)."""
    url = url.strip().lower()
    return url.startswith(("http://", "https://", "//"))


class PageScan(HTMLParser):
    """One pass over a page's DOM, collecting what :func:`check_page` needs.

    ``fetched``: the URLs the page loads by itself (list of str); ``images``: ``<img src>``
    values; ``equations``: a count; ``math_errors``: TeX error messages; ``raw_math``: snippets
    of untypeset math.
    """

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.fetched: list[str] = []
        self.images: list[str] = []
        self.equations = 0
        self.math_errors: list[str] = []
        self._red_mtext = False  # inside <mtext mathcolor="red">: an undefined macro?
        self.raw_math: list[str] = []
        self._skip_depth = 0  # > 0 inside code, scripts, styles and typeset math
        self._stack: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        attrs = {name: (value or "") for name, value in attrs}
        if tag == "mjx-container":
            self.equations += 1
        elif tag == "mjx-merror":
            self.math_errors.append(attrs.get("data-mjx-error", "TeX error"))
        elif tag == "mtext" and attrs.get("mathcolor") == "red":
            self._red_mtext = True
        for name, value in attrs.items():
            if (tag, name) in FETCHED_ATTRS and value:
                if name == "srcset":
                    self.fetched += [part.split()[0] for part in value.split(",") if part.strip()]
                else:
                    self.fetched.append(value)
            if name == "style":
                self._css_urls(value)
        if tag == "img" and attrs.get("src"):
            self.images.append(attrs["src"])
        if tag == "link" and attrs.get("href"):
            if FETCHING_RELS & set(attrs.get("rel", "").lower().split()):
                self.fetched.append(attrs["href"])
        if tag in {"img", "link", "meta", "br", "hr", "input", "source", "track", "embed",
                   "wbr", "area", "base", "col", "param"}:
            return  # void elements have no end tag
        self._stack.append(tag)
        if tag in SKIP_TEXT_TAGS or tag == "mjx-container":
            self._skip_depth += 1
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        if tag not in self._stack:
            return
        while self._stack:  # close everything up to the matching start tag
            open_tag = self._stack.pop()
            if open_tag in SKIP_TEXT_TAGS or open_tag == "mjx-container":
                self._skip_depth -= 1
            if open_tag == tag:
                break
        self._in_style = False

    def handle_data(self, data):
        if self._red_mtext:  # MathJax shows an undefined macro as its name in red
            self._red_mtext = False
            if data.startswith("\\"):
                self.math_errors.append(f"undefined control sequence {data}")
        if self._in_style:
            self._css_urls(data)
        if self._skip_depth:
            return
        for match in RAW_MATH.finditer(data):
            start = max(match.start() - 30, 0)
            self.raw_math.append(" ".join(data[start:match.end() + 30].split()))

    def _css_urls(self, css):
        for match in CSS_URL.finditer(css):
            self.fetched.append(match.group(1) or match.group(2))


@dataclass
class PageReport:
    """What was found on one page; ``ok`` is False when the page fails the check."""

    page: str
    equations: int = 0
    math_errors: list = field(default_factory=list)
    raw_math: list = field(default_factory=list)
    figures: int = 0
    missing: list = field(default_factory=list)
    network: list = field(default_factory=list)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not (self.error or self.raw_math or self.math_errors or self.missing
                    or self.network)

    def details(self) -> list[str]:
        lines = [f"    browser: {self.error}"] if self.error else []
        lines += [f"    raw math: ...{snippet}..." for snippet in self.raw_math[:5]]
        if len(self.raw_math) > 5:
            lines.append(f"    raw math: ({len(self.raw_math) - 5} more)")
        lines += [f"    TeX error: {message}" for message in self.math_errors]
        lines += [f"    missing file: {path}" for path in self.missing]
        lines += [f"    network: {url}" for url in self.network]
        return lines


def local_path(url: str, page_url: str) -> Path | None:
    """The file a relative or file:// ``url`` on the page at ``page_url`` points to, else None."""
    absolute = urlsplit(urljoin(page_url, url.strip()))
    if absolute.scheme != "file":
        return None
    return Path(url2pathname(unquote(absolute.path)))


def page_requests(netlog_path: Path) -> list[str]:
    """The http(s) URLs the page itself requested, from a Chromium ``--log-net-log`` file.

    Chromium's own background traffic (update checks and the like) has the initiator
    "not an origin" and is left out.
    """
    try:
        text = netlog_path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    try:
        log = json.loads(text)
    except json.JSONDecodeError:  # the log of a browser that did not exit cleanly
        log = json.loads(text.rstrip().rstrip(",") + "]}")
    start_job = log["constants"]["logEventTypes"].get("URL_REQUEST_START_JOB")
    urls = []
    for event in log.get("events", []):
        params = event.get("params", {})
        if (event.get("type") == start_job and is_network(params.get("url", ""))
                and params.get("initiator") != "not an origin"):
            urls.append(params["url"])
    return urls


def run_chromium(chromium: str, url: str, extra: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run headless Chromium on ``url`` with a fresh profile; raises on timeout."""
    with tempfile.TemporaryDirectory(prefix="check-pages-profile-") as profile:
        return subprocess.run(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, url],
            capture_output=True, text=True, timeout=timeout,
        )


def check_page(chromium: str, html_dir: Path, page: Path, *, budget_ms: int,
               timeout: float, screenshot_dir: Path | None = None) -> PageReport:
    """Open ``page`` (a file under ``html_dir``) in Chromium and check what it shows."""
    report = PageReport(page=page.relative_to(html_dir).as_posix())
    page_url = page.resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="check-pages-") as tmp:
        netlog = Path(tmp) / "netlog.json"
        try:
            result = run_chromium(
                chromium, page_url,
                [f"--virtual-time-budget={budget_ms}", f"--log-net-log={netlog}", "--dump-dom"],
                timeout,
            )
        except subprocess.TimeoutExpired:
            report.error = f"no answer within {timeout:.0f} s"
            return report
        dom = result.stdout
        if result.returncode != 0 or "<html" not in dom.lower():
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            report.error = f"Chromium exited with status {result.returncode}: {last}"
            return report
        requested = page_requests(netlog)

    scan = PageScan()
    scan.feed(dom)
    scan.close()
    report.equations = scan.equations
    report.math_errors = scan.math_errors
    report.raw_math = scan.raw_math
    static_dir = (html_dir / "_static").resolve()
    for src in scan.images:
        if src.startswith("data:image/png"):
            report.figures += 1
            continue
        path = local_path(src, page_url)
        if path is not None and path.suffix.lower() == ".png" and path.is_file():
            if static_dir not in path.resolve().parents:
                report.figures += 1
    seen = set()
    for url in scan.fetched + requested:
        if is_network(url):
            if url not in seen:
                report.network.append(url)
                seen.add(url)
        elif not url.startswith(("data:", "blob:", "about:", "#")):
            path = local_path(url, page_url)
            if path is not None and not path.exists() and str(path) not in report.missing:
                report.missing.append(str(path))

    if screenshot_dir is not None:
        shot = screenshot_dir / (report.page.replace("/", "__").removesuffix(".html") + ".png")
        try:
            run_chromium(chromium, page_url, [f"--virtual-time-budget={budget_ms}",
                                              "--window-size=1280,1600", f"--screenshot={shot}"],
                         timeout)
        except subprocess.TimeoutExpired:
            report.error = report.error or f"screenshot: no answer within {timeout:.0f} s"
    return report


def find_pages(html_dir: Path, patterns: list[str]) -> list[Path]:
    """The HTML files under ``html_dir`` matching any of the glob ``patterns``, sorted."""
    pages = {path for pattern in patterns for path in html_dir.glob(pattern) if path.is_file()}
    return sorted(pages)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Open every chapter page of the built book in headless Chromium and check "
                    "that its math is typeset, its figures exist and nothing comes from the "
                    "network.")
    parser.add_argument("html_dir", nargs="?", default="_build/html", type=Path,
                        help="the built HTML folder (default: _build/html)")
    parser.add_argument("--pages", nargs="+", default=["book/**/*.html"], metavar="GLOB",
                        help="pages to check, as globs relative to html_dir "
                             "(default: book/**/*.html)")
    parser.add_argument("--screenshot", type=Path, metavar="DIR",
                        help="also save a 1280x1600 screenshot of each page into DIR")
    parser.add_argument("--chromium", help="the browser executable (default: found on PATH)")
    parser.add_argument("--budget", type=int, default=10_000, metavar="MS",
                        help="virtual time given to the page's scripts (default: 10000 ms)")
    parser.add_argument("--timeout", type=float, default=120.0, metavar="S",
                        help="wall-clock limit per browser run (default: 120 s)")
    args = parser.parse_args(argv)

    html_dir = args.html_dir.resolve()
    if not html_dir.is_dir():
        print(f"check_pages: {args.html_dir} is not a folder; build the book first "
              "(make book).", file=sys.stderr)
        return 2
    chromium = args.chromium or next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)
    if chromium is None:
        print("check_pages: no Chromium found on PATH (Debian: apt-get install chromium), "
              "or pass --chromium.", file=sys.stderr)
        return 2
    pages = find_pages(html_dir, args.pages)
    if not pages:
        print(f"check_pages: no page in {args.html_dir} matches {' '.join(args.pages)}.",
              file=sys.stderr)
        return 2
    if args.screenshot is not None:
        args.screenshot.mkdir(parents=True, exist_ok=True)

    width = max(len("page"), *(len(p.relative_to(html_dir).as_posix()) for p in pages))
    print(f"{'page':<{width}}  equations  raw  figures  missing  network  result")
    failed = 0
    for page in pages:
        report = check_page(chromium, html_dir, page, budget_ms=args.budget,
                            timeout=args.timeout, screenshot_dir=args.screenshot)
        raw = len(report.raw_math) + len(report.math_errors)
        print(f"{report.page:<{width}}  {report.equations:>9}  {raw:>3}  {report.figures:>7}  "
              f"{len(report.missing):>7}  {len(report.network):>7}  "
              f"{'ok' if report.ok else 'FAIL'}")
        for line in report.details():
            print(line)
        failed += not report.ok
    print(f"{len(pages)} page(s) checked, {failed} failed.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
