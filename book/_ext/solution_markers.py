"""Hide the nbgrader solution markers from the rendered book.

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

Registered in ``_config.yml``::

    sphinx:
      local_extensions:
        solution_markers: book/_ext

Note: removing lines shifts the line numbers Sphinx reports for the rest of the page
(by one per removed marker).
"""

from __future__ import annotations

import re

from sphinx.application import Sphinx

MARKERS = frozenset({"### BEGIN SOLUTION", "### END SOLUTION"})

# The opening fence of a MyST code cell: up to three spaces, then three or more
# backticks or tildes, then the {code-cell} directive name.
_CODE_CELL_OPEN = re.compile(r"^ {0,3}(?P<fence>`{3,}|~{3,})\s*\{code-cell\}")


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


def _on_source_read(app: Sphinx, docname: str, source: list[str]) -> None:
    """Sphinx ``source-read`` handler: rewrite Markdown pages in place."""
    if str(app.env.doc2path(docname)).endswith(".md"):
        source[0] = strip_solution_markers(source[0])


def setup(app: Sphinx) -> dict:
    app.connect("source-read", _on_source_read)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
