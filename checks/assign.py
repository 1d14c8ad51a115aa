"""``python -m checks assign CHAPTER.md --out DIR``: a chapter as a classroom assignment.

A chapter marks the code a student writes with two marker lines in a code cell, the nbgrader
convention (the book hides the two lines; see ``book/_ext/solution_markers.py``)::

    def forward(self, x):
        ### BEGIN SOLUTION
        return x @ self.params["W"] + self.params["b"]
        ### END SOLUTION

That cell carries nbgrader metadata ``{solution: true, grade: false, ...}``, and the cells that
test it are *graded* cells ``{grade: true, locked: true, points: N, ...}``.  From one chapter
:func:`make_assignment` writes two notebooks, into two folders, so that the folder handed out
never holds an answer:

- ``DIR/<chapter>.ipynb``, the **student's**: every solution region replaced by a stub at the same
  indentation, ``# YOUR CODE HERE`` and ``raise NotImplementedError("Write the forward pass of
  DenseLayer here; ...")``, the code around it kept; the answers of the exercises
  (sphinx-exercise ``{solution}`` blocks and ``{solution-start}`` ... ``{solution-end}``
  sections, their code cells included) removed; a first cell saying how to check your work.
- ``TEACHER_DIR/<chapter>-solution.ipynb``, the **teacher's** (``--teacher-out``, by default the
  folder ``DIR-teacher`` beside ``DIR``): the marker lines removed, everything else kept.

Each notebook records in its metadata (``checks``) whether it is the student's or the teacher's,
its chapter and its graded cells with their points: ``python -m checks grade`` skips teacher
notebooks, names a notebook of the wrong chapter and flags graded cells that disappeared.
A chapter is never overwritten: an output path that is one of the chapters given is refused.

In both, outputs are cleared, graded cells are locked (``editable: false``, ``deletable:
false``) and carry an nbgrader-compatible ``checksum`` of their source, so that
``python -m checks grade`` can tell when one was edited.

With ``--nbgrader`` only one notebook is written, ``DIR/<chapter>.ipynb``, for the ``source/``
folder of an nbgrader course: the solutions stay *between the marker lines* and
``nbgrader generate_assignment`` replaces them itself.  (Given the student's notebook instead,
nbgrader would replace every solution cell *whole*, since it finds no region in it, and the
students would lose the class around the method they are to write.)

Files are written atomically.  A chapter that breaks the convention (an unclosed region, a line
that merely contains the marker words, a region in a cell that is not a solution cell) gets a
:class:`AssignmentError` naming the file, the cell and the line.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import re
import sys
from pathlib import Path

import nbformat

from cnn_lessons.files import atomic_write

from . import grade_probe

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
MARKER_WORDS = ("BEGIN SOLUTION", "END SOLUTION")   # what nbgrader looks for, anywhere in a line

PROG = "python -m checks assign"


class AssignmentError(ValueError):
    """A chapter that cannot be turned into an assignment; the message names file, cell, line."""


# --------------------------------------------------------------------------------------------
# Solution regions in one cell's source

def find_regions(source: str, where: str = "cell") -> list[tuple[int, int]]:
    """``[(begin, end), ...]``: line indices (0-based) of each pair of marker lines in ``source``.

    A marker line is exactly ``### BEGIN SOLUTION`` or ``### END SOLUTION`` once stripped of
    surrounding whitespace.  ``where`` names the cell in error messages.
    """
    regions, begin = [], None
    for number, line in enumerate(source.splitlines()):
        text = line.strip()
        if text == BEGIN:
            if begin is not None:
                raise AssignmentError(f"{where}, line {number + 1}: {BEGIN!r} inside the region "
                                      f"opened on line {begin + 1} (regions do not nest)")
            begin = number
        elif text == END:
            if begin is None:
                raise AssignmentError(f"{where}, line {number + 1}: {END!r} without a "
                                      f"{BEGIN!r} before it")
            regions.append((begin, number))
            begin = None
        elif any(words in line for words in MARKER_WORDS):
            raise AssignmentError(
                f"{where}, line {number + 1}: {text!r} contains the words of a solution marker "
                f"but is not exactly {BEGIN!r} or {END!r}: nbgrader would take it for a marker "
                f"and the book would show it; reword it")
    if begin is not None:
        raise AssignmentError(f"{where}, line {begin + 1}: {BEGIN!r} is never closed by {END!r}")
    return regions


_DEF = re.compile(r"(?:async\s+)?(def|class)\s+(\w+)")


def enclosing_names(lines: list[str], index: int) -> list[tuple[str, str]]:
    """The ``def``/``class`` blocks around line ``index``, outermost first: ``[("class",
    "DenseLayer"), ("def", "forward")]``.  Read from indentation only (a hint for a message)."""
    level = len(lines[index]) - len(lines[index].lstrip())
    names = []
    for line in reversed(lines[:index]):
        text = line.strip()
        if not text or text.startswith(("#", ")", "]", "}")):
            continue                       # blank, comment, end of a wrapped signature
        indent = len(line) - len(line.lstrip())
        if indent < level:
            level = indent
            match = _DEF.match(text)
            if match:
                names.append((match.group(1), match.group(2)))
            if level == 0:
                break
    return names[::-1]


def stub_message(lines: list[str], index: int) -> str:
    """What the stub at line ``index`` asks for: ``"Write the forward pass of DenseLayer here;
    then run the check cells below."``"""
    names = enclosing_names(lines, index)
    functions = [name for kind, name in names if kind == "def"]
    classes = [name for kind, name in names if kind == "class"]
    if not functions:
        what = "your code"
    elif classes and functions[-1] in ("forward", "backward"):
        what = f"the {functions[-1]} pass of {classes[-1]}"
    elif classes:
        what = f"{classes[-1]}.{functions[-1]}"
    else:
        what = f"the body of {functions[-1]}"
    return f"Write {what} here; then run the check cells below."


def stub_solutions(source: str, where: str = "cell") -> str:
    """``source`` with each solution region (its marker lines included) replaced by::

        <indent># YOUR CODE HERE
        <indent>raise NotImplementedError("Write ... here; then run the check cells below.")

    where ``<indent>`` is the indentation of the region's ``### BEGIN SOLUTION`` line.  The code
    before and after each region is kept as it is.
    """
    regions = find_regions(source, where)
    if not regions:
        return source
    lines = source.splitlines(keepends=True)
    out, start = [], 0
    for begin, end in regions:
        out += lines[start:begin]
        indent = lines[begin][: len(lines[begin]) - len(lines[begin].lstrip())]
        message = stub_message(lines, begin)
        out += [f"{indent}# YOUR CODE HERE\n", f'{indent}raise NotImplementedError("{message}")\n']
        start = end + 1
    out += lines[start:]
    text = "".join(out)
    if not source.endswith("\n") and text.endswith("\n"):
        text = text[:-1]
    _check_still_parses(source, text, where)
    return text


def remove_markers(source: str, where: str = "cell") -> str:
    """``source`` without its marker lines: the solution as ordinary code (the teacher's)."""
    regions = find_regions(source, where)
    markers = {line for region in regions for line in region}
    lines = source.splitlines(keepends=True)
    text = "".join(line for number, line in enumerate(lines) if number not in markers)
    return text.rstrip("\n") if not source.endswith("\n") else text


def _check_still_parses(original: str, stubbed: str, where: str) -> None:
    """A stub must not break the cell: if the original is valid Python, so is the stubbed one.
    (A region inside brackets, e.g. between the arguments of a call, cannot be stubbed.)"""
    try:
        compile(original, where, "exec")
    except SyntaxError:
        return                             # IPython magics and the like: nothing to compare
    try:
        compile(stubbed, where, "exec")
    except SyntaxError as err:
        raise AssignmentError(f"{where}: replacing its solution region by a stub gives invalid "
                              f"Python ({err.msg}, line {err.lineno}); put the markers around "
                              f"whole statements") from None


# --------------------------------------------------------------------------------------------
# Exercise answers in Markdown (sphinx-exercise)

_FENCE = re.compile(r"^\s*(?P<fence>`{3,}|~{3,}|:{3,})(?P<info>[^`]*)$")
_DIRECTIVE = re.compile(r"^\s*\{(?P<name>[\w:.-]+)\}")
# Directives whose body is literal text, not Markdown: never look for a {solution} inside.
_LITERAL = {"code", "code-block", "sourcecode", "code-cell", "math", "raw", "literalinclude"}


def _closes(line: str, fence: str) -> bool:
    text = line.strip()
    return len(text) >= len(fence) and set(text) == {fence[0]}


def _opening(line: str):
    """``(fence, directive name or None)`` when ``line`` opens a fenced block, else None."""
    match = _FENCE.match(line)
    if not match:
        return None
    fence, info = match.group("fence"), match.group("info")
    directive = _DIRECTIVE.match(info)
    if fence[0] == ":" and not directive:
        return None                        # a colon fence is always a directive in MyST
    return fence, directive.group("name") if directive else None


class _AnswerStripper:
    """Removes exercise answers from a sequence of cells; ``gated`` is True between a
    ``{solution-start}`` and its ``{solution-end}``, which may lie several cells apart."""

    def __init__(self):
        self.gated = False
        self.removed = 0

    def markdown(self, text: str) -> str:
        out, stack, skip = [], [], None     # stack: (fence, literal?) of the open blocks
        for line in text.splitlines(keepends=True):
            if skip is not None:            # inside a directive block being removed
                if _closes(line, skip):
                    skip = None
                continue
            opening = None if (stack and stack[-1][1]) else _opening(line)
            if self.gated:
                if opening and opening[1] == "solution-end":
                    skip, self.gated = opening[0], False
                continue
            if stack and _closes(line, stack[-1][0]):
                stack.pop()
                out.append(line)
                continue
            if opening and not (stack and stack[-1][1]):
                fence, name = opening
                if name in ("solution", "solution-start"):
                    skip = fence
                    self.removed += 1
                    self.gated = name == "solution-start"
                    continue
                stack.append((fence, name is None or name in _LITERAL))
            out.append(line)
        return re.sub(r"\n{3,}", "\n\n", "".join(out)).strip("\n")

    def keep_code_cell(self, cell) -> bool:
        """Code inside an answer goes with it, except nbgrader cells (the student needs them)."""
        return not self.gated or nbgrader_meta(cell) is not None


def strip_answers(cells: list) -> tuple[list, int]:
    """``(cells without the exercise answers, number of answers removed)``."""
    stripper, kept = _AnswerStripper(), []
    for cell in cells:
        if cell.cell_type == "code":
            if stripper.keep_code_cell(cell):
                kept.append(cell)
            continue
        cell.source = stripper.markdown(cell.source)
        if cell.source.strip():
            kept.append(cell)
    return kept, stripper.removed


# --------------------------------------------------------------------------------------------
# nbgrader metadata

def nbgrader_meta(cell) -> dict | None:
    """The cell's ``metadata.nbgrader`` dict, or None."""
    meta = cell.get("metadata", {}).get("nbgrader")
    return meta if isinstance(meta, dict) else None


def is_graded(cell) -> bool:
    """An autograded test cell: ``grade: true`` and not a solution (nbgrader calls a cell with
    both a manually graded answer; no tool here scores those)."""
    meta = nbgrader_meta(cell)
    return bool(meta and meta.get("grade") and not meta.get("solution"))


def is_locked(cell) -> bool:
    """nbgrader's rule: solution cells never, graded cells always, others when marked."""
    meta = nbgrader_meta(cell)
    if not meta or meta.get("solution"):
        return False
    return bool(meta.get("grade") or meta.get("locked"))


def checksum(cell) -> str:
    """The checksum nbgrader stores in a locked or graded cell (same recipe as nbgrader's
    ``utils.compute_checksum``): MD5 of source, type, flags, grade_id and points."""
    meta = nbgrader_meta(cell) or {}
    md5 = hashlib.md5()
    for part in (cell.source, cell.cell_type, str(bool(meta.get("grade"))),
                 str(bool(meta.get("solution"))), str(is_locked(cell)), meta.get("grade_id", "")):
        md5.update(str(part).encode("utf-8"))
    if meta.get("grade"):
        md5.update(str(float(meta.get("points", 0))).encode("utf-8"))
    return md5.hexdigest()


def lock(cell) -> None:
    """Make a locked cell read-only in Jupyter and record its checksum."""
    cell.metadata["editable"] = False
    cell.metadata["deletable"] = False
    cell.metadata["nbgrader"]["checksum"] = checksum(cell)


# --------------------------------------------------------------------------------------------
# The notebooks

def read_chapter(path: Path):
    """The chapter (MyST Markdown or ipynb) as a notebook, through jupytext."""
    import jupytext

    try:
        return jupytext.read(path)
    except OSError as err:
        raise AssignmentError(f"{path}: cannot read it ({err.strerror or err})") from None
    except Exception as err:
        raise AssignmentError(f"{path}: not a notebook jupytext can read "
                              f"({type(err).__name__}: {err})") from None


def _where(path: Path, index: int, cell) -> str:
    meta = nbgrader_meta(cell)
    name = f" ({meta['grade_id']})" if meta and meta.get("grade_id") else ""
    return f"{path}: code cell {index}{name}"


def _check(path: Path, nb) -> int:
    """Validate the chapter's nbgrader conventions; return the number of solution regions."""
    count, ids = 0, {}
    for index, cell in enumerate(nb.cells):
        where = _where(path, index, cell)
        meta = nbgrader_meta(cell)
        if cell.cell_type == "code":
            regions = find_regions(cell.source, where)
            count += len(regions)
            if regions and not (meta and meta.get("solution")):
                raise AssignmentError(f"{where}: has a solution region but no nbgrader metadata "
                                      f"with solution: true (nbgrader refuses that)")
        elif any(words in cell.source for words in MARKER_WORDS):
            raise AssignmentError(f"{path}: markdown cell {index} contains the words of a "
                                  f"solution marker; nbgrader would take them for one")
        if meta:
            grade_id = meta.get("grade_id")
            if not grade_id or not re.fullmatch(r"[\w-]+", str(grade_id)):
                raise AssignmentError(f"{where}: nbgrader metadata needs a grade_id of letters, "
                                      f"digits, '-' and '_', got {grade_id!r}")
            if grade_id in ids:
                raise AssignmentError(f"{where}: grade_id {grade_id!r} already used by cell "
                                      f"{ids[grade_id]}")
            ids[grade_id] = index
            points = meta.get("points")
            if meta.get("grade") and (isinstance(points, bool)
                                      or not isinstance(points, (int, float))
                                      or not 0 <= points <= 1000):    # NaN fails too
                raise AssignmentError(f"{where}: a graded cell needs points from 0 to 1000, "
                                      f"got {points!r}")
    return count


def _fmt_points(value) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def student_note(name: str, graded: list[tuple[str, float]]) -> str:
    rows = "\n".join(f"| `{grade_id}` | {_fmt_points(points)} |" for grade_id, points in graded)
    total = _fmt_points(sum(points for _, points in graded))
    return f"""\
**How to work on this assignment.** The code you write goes where a cell says
`raise NotImplementedError(...)`: replace that line and the `# YOUR CODE HERE` comment above it
with your code, and keep the rest of the cell. Run the cells from the top. Write each answer
yourself: the notebook imports the package's own layers to compare with yours, and an answer
that hands its work to them scores 0 and is listed for the teacher to review.

The cells you cannot edit are the **graded check cells**. Each one tests the code above it and
earns its points when it runs without an error; an `AssertionError` or any other error means
zero. Before you hand in, restart the kernel and run all cells: grading runs the notebook from
scratch, in a fresh kernel, with a time limit per cell.

| graded cell | points |
| --- | --- |
{rows}
| **total** | **{total}** |

To see your score from a terminal: `python -m checks grade {name}.ipynb`.
You can also check a layer of your own with the book's harness: in a file `mylayers.py`, write a
function that returns the layer and an input batch,

```python
def make_layer():
    return MyLayer(), np.random.default_rng(0).standard_normal((2, 3, 4, 4))
```

and run `python -m checks mylayers:make_layer` in the same folder: it compares your backward
pass with finite differences and tries to overfit one example through your layer."""


def teacher_note(name: str) -> str:
    return f"""\
**Teacher's version** of `{name}`: the solutions are in place and the answers to the exercises
are kept. Hand out `{name}.ipynb`, not this file, and keep this one out of the students'
folder. Graded check cells are the same in both, so this notebook scores full marks with
`python -m checks grade --include-teacher {name}-solution.ipynb --reference {name}-solution.ipynb`."""


def answer_key_uses(nb) -> dict[str, list[str]]:
    """``{grade_id: names}`` for each solution cell of the chapter ``nb`` (solutions in place):
    the names the notebook imports from ``cnn_lessons`` that the solution itself reads.  The
    grader flags a student's solution that reads any other such name (a layer that hands its
    work to the package's own, the answer key)."""
    imported = set()
    for cell in nb.cells:
        if cell.cell_type == "code":
            imported |= grade_probe.answer_key_names(grade_probe.import_bindings(cell.source))
    return {str(meta["grade_id"]): sorted(grade_probe.used_names(cell.source) & imported)
            for cell in nb.cells
            if cell.cell_type == "code" and (meta := nbgrader_meta(cell)) and meta.get("solution")}


def _finish(nb, name: str, note: str, role: str, key_uses: dict):
    """Clear outputs, lock graded cells, set deterministic ids, add the note as first cell,
    record the role, the chapter, the graded cells and the solutions' uses of the package in
    the notebook's metadata."""
    nb.metadata.pop("jupytext", None)
    nb.metadata["checks"] = {"role": role, "chapter": name,
                             "graded": {grade_id: points for grade_id, points in _graded(nb)},
                             "answer_key_uses": key_uses}
    nb.nbformat, nb.nbformat_minor = 4, 5
    used = set()
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        if is_locked(cell):
            lock(cell)
        meta = nbgrader_meta(cell)
        cell_id = meta["grade_id"] if meta else f"cell-{index}"
        while cell_id in used:
            cell_id += "-"
        cell.id = cell_id
        used.add(cell_id)
    first = nbformat.v4.new_markdown_cell(note)
    first.id = "how-to"
    nb.cells.insert(0, first)
    return nb


def _graded(nb) -> list[tuple[str, float]]:
    return [(nbgrader_meta(c)["grade_id"], nbgrader_meta(c)["points"])
            for c in nb.cells if is_graded(c)]


def student_notebook(path: Path, nb, *, keep_solutions: bool = False):
    """The student's notebook from the chapter ``nb`` (a copy; ``nb`` is not changed)."""
    nb = copy.deepcopy(nb)
    key_uses = answer_key_uses(nb)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and not keep_solutions:
            cell.source = stub_solutions(cell.source, _where(path, index, cell))
    nb.cells, _ = strip_answers(nb.cells)
    for index, cell in enumerate(nb.cells):   # the stubs and the prose that is left
        if cell.cell_type == "markdown" or not keep_solutions:
            if any(words in cell.source for words in MARKER_WORDS):
                raise AssignmentError(f"{path}: cell {index} of the student's notebook still "
                                      f"contains the words of a solution marker")
    return _finish(nb, path.stem, student_note(path.stem, _graded(nb)),
                   "nbgrader-source" if keep_solutions else "student", key_uses)


def teacher_notebook(path: Path, nb):
    """The teacher's notebook: marker lines removed, everything else kept (a copy)."""
    nb = copy.deepcopy(nb)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            cell.source = remove_markers(cell.source, _where(path, index, cell))
    return _finish(nb, path.stem, teacher_note(path.stem), "teacher", answer_key_uses(nb))


def write_notebook(nb, path: Path) -> None:
    """Write ``nb`` to ``path`` atomically (a temporary file in the same folder, then rename)."""
    with atomic_write(path, "w", encoding="utf-8") as f:
        nbformat.write(nb, f)


def default_teacher_dir(out_dir) -> Path:
    """``DIR-teacher`` beside ``DIR``: where the teacher's notebooks go by default."""
    out = Path(out_dir)
    if out.name in ("", ".", ".."):
        out = out.resolve()
    if out.parent == out:
        raise AssignmentError(f"{out_dir}: give the teacher's folder with --teacher-out")
    return out.parent / f"{out.name}-teacher"


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def make_assignment(chapter, out_dir, *, nbgrader: bool = False, teacher_dir=None,
                    protect=()) -> list[Path]:
    """Write the student's notebook of ``chapter`` into ``out_dir`` and the teacher's into
    ``teacher_dir`` (default :func:`default_teacher_dir`).

    Returns the paths written: ``[DIR/<chapter>.ipynb, TEACHER_DIR/<chapter>-solution.ipynb]``,
    or with ``nbgrader=True`` ``[DIR/<chapter>.ipynb]``, the nbgrader source notebook (solutions
    kept between their marker lines, exercise answers removed).  A path to write that is the
    chapter itself or one of ``protect`` is refused, and so is a teacher's folder inside
    ``out_dir`` (the students would get the answers).
    """
    chapter, out_dir = Path(chapter), Path(out_dir)
    student = out_dir / f"{chapter.stem}.ipynb"
    teacher_dir = Path(teacher_dir) if teacher_dir is not None else (
        None if nbgrader else default_teacher_dir(out_dir))
    teacher = teacher_dir / f"{chapter.stem}-solution.ipynb" if teacher_dir else None
    if teacher_dir is not None and _inside(teacher_dir, out_dir):
        raise AssignmentError(f"{teacher_dir}: the teacher's folder must not be the students' "
                              f"folder {out_dir} or inside it (the answers would be handed out)")
    for target in (student, teacher):
        if target is None:
            continue
        for source in (chapter, *map(Path, protect)):
            if target.resolve() == source.resolve() or (
                    target.exists() and source.exists() and target.samefile(source)):
                raise AssignmentError(f"{target}: would overwrite the chapter {source}; "
                                      f"choose another --out")
    nb = read_chapter(chapter)
    if _check(chapter, nb) == 0:
        raise AssignmentError(f"{chapter}: no solution region ({BEGIN!r} ... {END!r} in a "
                              f"code cell): nothing for a student to write")
    if not _graded(nb):
        raise AssignmentError(f"{chapter}: no graded cell (nbgrader metadata with grade: true): "
                              f"nothing to grade the student's code with")
    if nbgrader:
        write_notebook(student_notebook(chapter, nb, keep_solutions=True), student)
        return [student]
    write_notebook(student_notebook(chapter, nb), student)
    write_notebook(teacher_notebook(chapter, nb), teacher)
    return [student, teacher]


# --------------------------------------------------------------------------------------------
# Command line

class _Parser(argparse.ArgumentParser):
    def error(self, message):
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def main(argv=None) -> int:
    parser = _Parser(
        prog=PROG,
        description="Make a classroom assignment from a chapter: DIR/<chapter>.ipynb for the "
                    "students (solutions replaced by stubs that raise NotImplementedError, "
                    "exercise answers removed, graded cells locked) and, in a separate folder, "
                    "<chapter>-solution.ipynb for the teacher.",
        epilog="Exit status: 0 written, 2 a chapter that cannot be assigned.")
    parser.add_argument("chapters", nargs="+", metavar="CHAPTER",
                        help="a chapter, e.g. book/02-dense.md (MyST Markdown or .ipynb)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="folder for the students' notebooks (the one to hand out)")
    parser.add_argument("--teacher-out", metavar="DIR",
                        help="folder for the teacher's notebooks (default: DIR-teacher beside "
                             "--out; never inside it)")
    parser.add_argument("--nbgrader", action="store_true",
                        help="write only the nbgrader source notebook (solutions kept between "
                             "the marker lines) for course/source/<assignment>/")
    args = parser.parse_args(argv)
    status = 0
    for chapter in args.chapters:
        try:
            written = make_assignment(chapter, args.out, nbgrader=args.nbgrader,
                                      teacher_dir=args.teacher_out, protect=args.chapters)
        except AssignmentError as err:
            print(f"{PROG}: error: {err}", file=sys.stderr)
            status = 2
            continue
        for path in written:
            print(path)
    return status


if __name__ == "__main__":
    sys.exit(main())
