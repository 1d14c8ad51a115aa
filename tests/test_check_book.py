"""scripts/check_book.py on small hand-made pages: each bound catches what it is for."""

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

spec = importlib.util.spec_from_file_location("check_book", ROOT / "scripts" / "check_book.py")
check_book = importlib.util.module_from_spec(spec)
sys.modules["check_book"] = check_book          # dataclasses look their module up by name
spec.loader.exec_module(check_book)

pytest.importorskip("playwright", reason="the page check needs Playwright (pip install playwright)")
if not any(map(shutil.which, check_book.CHROMIUM_NAMES)):
    pytest.skip("the page check needs Chromium", allow_module_level=True)

REPORT = """Scale: PASS
  check           max rel. error  kinks skipped  steps  result  detail
  dL/dx           3.1e-11         0                     PASS    12 coordinates"""

CLEAN = f"""<!doctype html><html><head><meta charset="utf-8"></head><body>
<main><article class="bd-article">
<h1>A clean page</h1>
<p>Some prose about gradients, with words enough to read.</p>
<div class="cell tag_hide-input tag_solution">
  <details class="hide above-input"><summary>Show code cell source</summary>
  <div class="cell_input"><pre>def relu(x):
    return x * (x &gt; 0)</pre></div></details>
</div>
<div class="solution dropdown admonition">
  <p class="admonition-title">Solution to Exercise 1</p>
  <section style="visibility: hidden; height: 0">The answer is 42.</section>
</div>
<div class="cell_output"><pre>{REPORT}</pre></div>
</article></main></body></html>"""


def build(tmp_path, pages):
    html = tmp_path / "_build" / "html"
    (html / "book").mkdir(parents=True)
    for name, text in pages.items():
        (html / "book" / name).write_text(text, encoding="utf-8")
    return html


def test_a_clean_page_passes_and_is_measured(tmp_path, capsys):
    html = build(tmp_path, {"01-clean.html": CLEAN})
    assert check_book.main([str(html)]) == 0
    out = capsys.readouterr().out
    assert "solution regions: 2, visible without a click: 0" in out
    assert "opens on a click" in out
    assert "full harness reports: 1 (bound 15)" in out


@pytest.mark.parametrize("change, problem", [
    ("<details class=\"hide above-input\">", "solution visible without a click"),
    ("visibility: hidden; height: 0", "solution visible without a click"),
    ("Some prose", "build-machine path"),
    ("with words", "untypeset TeX"),
])
def test_each_bound_catches_its_problem(tmp_path, capsys, change, problem):
    page = {
        "<details class=\"hide above-input\">": CLEAN.replace(
            "<details class=\"hide above-input\">", "<details open class=\"hide above-input\">"),
        "visibility: hidden; height: 0": CLEAN.replace("visibility: hidden; height: 0", ""),
        "Some prose": CLEAN.replace(
            "Some prose", "File /tmp/tmpab12/cnn_lessons/dense.py:35, some prose"),
        "with words": CLEAN.replace("with words", r"with $E = J_\text{bug} - J$ words"),
    }[change]
    html = build(tmp_path, {"01-broken.html": page})
    assert check_book.main([str(html)]) == 1
    assert problem in capsys.readouterr().out


def test_too_many_full_reports_and_too_long_a_chapter_fail(tmp_path, capsys):
    many = CLEAN.replace(f'<div class="cell_output"><pre>{REPORT}</pre></div>',
                         f'<div class="cell_output"><pre>{REPORT}</pre></div>' * 16)
    assert check_book.main([str(build(tmp_path / "a", {"02-x.html": many}))]) == 1
    assert "full harness reports: 16 (bound 15)" in capsys.readouterr().out

    long = CLEAN.replace("<p>Some prose", "<p>" + "word " * (150 * 21) + "Some prose")
    pages = {"01-long.html": long, "02-long.html": long}
    assert check_book.main([str(build(tmp_path / "b", pages))]) == 1
    out = capsys.readouterr().out
    assert "minutes of prose, more than 20" in out           # chapter 1 only: 21 > 20
    assert "more than 30" not in out

    longer = CLEAN.replace("<p>Some prose", "<p>" + "word " * (150 * 31) + "Some prose")
    pages = {"05-longer.html": longer, "appendix-longer.html": longer}
    assert check_book.main([str(build(tmp_path / "c", pages))]) == 1
    problems = capsys.readouterr().out.split("05-longer.html", 1)[1]
    assert problems.count("minutes of prose, more than 30") == 1   # the chapter, not the appendix


def test_a_wide_block_that_does_not_scroll_is_cut_on_a_phone(tmp_path, capsys):
    wide = CLEAN.replace("<h1>", '<div style="overflow: hidden; width: 300px">'
                                 '<div style="width: 900px">a wide table</div></div><h1>')
    assert check_book.main([str(build(tmp_path, {"03-wide.html": wide}))]) == 1
    assert "cut at 390 px" in capsys.readouterr().out
