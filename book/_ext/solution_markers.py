"""Fold nbgrader solution cells away in the rendered book, and hide their markers.

Chapters mark the part of a code cell that a student writes with two marker lines,
the nbgrader convention::

    ```{code-cell} ipython3
    def relu(x):
        ### BEGIN SOLUTION
        return np.maximum(x, 0)
        ### END SOLUTION
    ```

``nbgrader generate_assignment`` replaces such a region with a placeholder in the
student notebook. In the book the solution should read as ordinary code, so this
extension deletes the two marker lines from every ``{code-cell}`` block of a MyST
Markdown page *before* the page is parsed, which is also before it is executed.

Only the marker lines themselves go: a line is a marker when, stripped of leading
and trailing whitespace, it is exactly ``### BEGIN SOLUTION`` or ``### END SOLUTION``.
Lines outside ``{code-cell}`` blocks are left alone, so a chapter can still show the
markers in an ordinary fenced ``python`` block when it explains the convention.

A learner should try first and look afterwards, so every code cell that carries
nbgrader's solution metadata (``nbgrader: {... solution: true}`` in the cell's YAML
header) gets two extra tags, again before the page is parsed:

- ``hide-input``: myst-nb folds the cell's code behind a "Show code cell source"
  toggle; the cell still runs when the book is built, so later cells can use what it
  defines, and its output stays visible;
- ``solution``: myst-nb turns it into the CSS class ``tag_solution`` on the cell, which
  ``scripts/check_book.py`` uses to find every solution region of the built pages.

Registered in ``_config.yml``::

    sphinx:
      local_extensions:
        solution_markers: book/_ext

Note: removing lines shifts the line numbers Sphinx reports for the rest of the page
(by one per removed marker).
"""

from __future__ import annotations

import re

import yaml
from sphinx.application import Sphinx

MARKERS = frozenset({"### BEGIN SOLUTION", "### END SOLUTION"})

# The opening fence of a MyST code cell: up to three spaces, then three or more
# backticks or tildes, then the {code-cell} directive name.
_CODE_CELL_OPEN = re.compile(r"^ {0,3}(?P<fence>`{3,}|~{3,})\s*\{code-cell\}")

# Tags added to every nbgrader solution cell.
SOLUTION_TAGS = ("hide-input", "solution")


def is_marker(line: str) -> bool:
    """True when ``line`` is exactly a solution marker, ignoring surrounding whitespace."""
    return line.strip() in MARKERS


def _closes(line: str, fence: str) -> bool:
    """True when ``line`` closes a block opened with ``fence`` (same character, at least as long)."""
    stripped = line.strip()
    return (
        len(line) - len(line.lstrip(" ")) <= 3
        and len(stripped) >= len(fence)
        and set(stripped) == {fence[0]}
    )


def strip_solution_markers(text: str) -> str:
    """Return the MyST Markdown ``text`` without marker lines inside ``{code-cell}`` blocks.

    ``text`` is a whole page (str); line endings of the kept lines are preserved.
    """
    kept = []
    fence = None  # the fence of the {code-cell} block we are in, or None outside one
    for line in text.splitlines(keepends=True):
        if fence is None:
            opening = _CODE_CELL_OPEN.match(line)
            if opening:
                fence = opening.group("fence")
            kept.append(line)
        elif _closes(line, fence):
            fence = None
            kept.append(line)
        elif not is_marker(line):
            kept.append(line)
    return "".join(kept)


def _is_solution_header(header: dict) -> bool:
    """True when a cell's YAML header marks it as an nbgrader solution cell."""
    nbgrader = header.get("nbgrader")
    return isinstance(nbgrader, dict) and nbgrader.get("solution") is True


def fold_solution_cells(text: str) -> str:
    """Return the MyST Markdown ``text`` with :data:`SOLUTION_TAGS` added to solution cells.

    A solution cell is a ``{code-cell}`` block whose YAML header (the lines between two
    ``---`` lines right after the opening fence) has ``nbgrader: {..., solution: true}``.
    Its header is rewritten (as YAML again) with the tags added, existing tags kept and none
    repeated. Everything else is left as it is.
    """
    lines = text.splitlines(keepends=True)
    out = []
    i = 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        i += 1
        if not _CODE_CELL_OPEN.match(line) or i >= len(lines) or lines[i].strip() != "---":
            continue
        end = i + 1  # the header's closing "---", looked for before the cell's closing fence
        while end < len(lines) and lines[end].strip() != "---" and not _closes(lines[end], "```"):
            end += 1
        if end >= len(lines) or lines[end].strip() != "---":
            continue
        body = "".join(lines[i + 1:end])
        try:
            header = yaml.safe_load(body) or {}
        except yaml.YAMLError:
            continue  # myst-nb reports a malformed header itself
        if not isinstance(header, dict) or not _is_solution_header(header):
            continue
        tags = list(header.get("tags") or [])
        header["tags"] = tags + [tag for tag in SOLUTION_TAGS if tag not in tags]
        dumped = yaml.safe_dump(header, default_flow_style=None, sort_keys=False, width=10_000)
        newline = "\r\n" if line.endswith("\r\n") else "\n"
        out.append(lines[i])
        out.extend(l + newline for l in dumped.splitlines())
        out.append(lines[end])
        i = end + 1
    return "".join(out)


def _on_source_read(app: Sphinx, docname: str, source: list[str]) -> None:
    """Sphinx ``source-read`` handler: rewrite Markdown pages in place."""
    if str(app.env.doc2path(docname)).endswith(".md"):
        source[0] = fold_solution_cells(strip_solution_markers(source[0]))


def setup(app: Sphinx) -> dict:
    app.connect("source-read", _on_source_read)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
