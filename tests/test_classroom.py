"""Classroom tools: ``python -m checks assign`` (a chapter as an assignment) and ``python -m
checks grade`` (run a submission in a fresh kernel, score its graded cells).

The stubbing and the answer stripping are tested as pure functions.  Grading runs real kernels,
on the tiny chapter in ``tests/fixtures`` (about a second a notebook) and on two chapters of the
book; set ``CNN_LESSONS_SLOW=1`` to grade every chapter that has solution regions (a few
minutes; the chapters that train on the full MNIST need ``CNN_LESSONS_DATA`` too).
"""

import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import jupytext
import nbformat
import pytest

from checks import assign, grade
from checks.assign import (AssignmentError, find_regions, make_assignment, remove_markers,
                           strip_answers, stub_solutions)

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "tiny-chapter.md"
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"


# ---------------------------------------------------------------------------------------------
# Stubbing solution regions (pure)

def lines(*rows):
    return "\n".join(rows) + "\n"


def test_stub_keeps_indentation_and_the_code_around_the_region():
    source = lines(
        "class Dense:",
        "    def forward(self, x):",
        '        """x (N, D) -> (N, M)"""',
        "        self.x = x",
        "        " + BEGIN,
        "        out = x @ self.W",
        "        return out",
        "        " + END,
        "",
        "    def size(self):",
        "        return 3")
    stubbed = stub_solutions(source)
    assert stubbed == lines(
        "class Dense:",
        "    def forward(self, x):",
        '        """x (N, D) -> (N, M)"""',
        "        self.x = x",
        "        # YOUR CODE HERE",
        '        raise NotImplementedError("Write the forward pass of Dense here; '
        'then run the check cells below.")',
        "",
        "    def size(self):",
        "        return 3")
    namespace = {}
    exec(stubbed, namespace)
    assert namespace["Dense"]().size() == 3
    with pytest.raises(NotImplementedError, match="forward pass of Dense"):
        namespace["Dense"]().forward(1)


def test_every_region_of_a_cell_gets_its_own_stub():
    source = lines(
        "def f(x):",
        "    " + BEGIN,
        "    return 1",
        "    " + END,
        "",
        "def g(x):",
        "  " + BEGIN,
        "  return 2",
        "  " + END)
    stubbed = stub_solutions(source).splitlines()
    assert stubbed.count("    # YOUR CODE HERE") == 1 and stubbed.count("  # YOUR CODE HERE") == 1
    assert '    raise NotImplementedError("Write the body of f here; then run the check cells ' \
           'below.")' in stubbed
    assert '  raise NotImplementedError("Write the body of g here; then run the check cells ' \
           'below.")' in stubbed
    assert "return 1" not in "\n".join(stubbed) and "return 2" not in "\n".join(stubbed)
    assert stubbed[3:5] == ["", "def g(x):"]


def test_region_at_the_end_of_a_cell_without_a_final_newline():
    source = "x = 1\n" + BEGIN + "\ny = 2 * x\n" + END
    stubbed = stub_solutions(source)
    assert stubbed == ('x = 1\n# YOUR CODE HERE\nraise NotImplementedError("Write your code here; '
                       'then run the check cells below.")')
    assert remove_markers(source) == "x = 1\ny = 2 * x"


def test_code_after_the_region_at_outer_levels_is_kept():
    source = lines(
        "def total(rows):",
        "    s = 0",
        "    for row in rows:",
        "        if row:",
        "            " + BEGIN,
        "            s += sum(row)",
        "            " + END,
        "        s += 0",
        "    return s",
        "",
        "print(total([[1, 2]]))")
    stubbed = stub_solutions(source).splitlines()
    assert stubbed[4] == "            # YOUR CODE HERE"
    assert stubbed[5].startswith("            raise NotImplementedError(")
    assert stubbed[6:] == ["        s += 0", "    return s", "", "print(total([[1, 2]]))"]
    namespace = {}
    exec("\n".join(stubbed[:-1]), namespace)
    assert namespace["total"]([]) == 0                   # the loop body is never reached
    with pytest.raises(NotImplementedError, match="the body of total"):
        namespace["total"]([[1]])


def test_stub_names_what_to_write():
    def message(source):
        return stub_solutions(source).split("NotImplementedError(")[1]

    method = lines("class ReLU:", "    def backward(self, d):", "        " + BEGIN,
                   "        pass", "        " + END)
    assert message(method).startswith('"Write the backward pass of ReLU here')
    other = lines("class Adam:", "    def step(self):", "        " + BEGIN, "        pass",
                  "        " + END)
    assert message(other).startswith('"Write Adam.step here')
    wrapped = lines("def conv(", "    x, W,", "):", "    " + BEGIN, "    pass", "    " + END)
    assert message(wrapped).startswith('"Write the body of conv here')


def test_teacher_version_only_loses_the_marker_lines():
    source = lines("def f(x):", "    " + BEGIN, "    return 2 * x", "    " + END, "y = f(1)")
    assert remove_markers(source) == lines("def f(x):", "    return 2 * x", "y = f(1)")
    assert remove_markers("a = 1") == "a = 1"


@pytest.mark.parametrize("source, problem", [
    (lines(BEGIN, "x = 1"), "never closed"),
    (lines(BEGIN, BEGIN, END), "do not nest"),
    (lines("x = 1", END), "without"),
    (lines("#  BEGIN SOLUTION", "x = 1", END), "not exactly"),
    (lines("x = 1  # the END SOLUTION line"), "not exactly"),
])
def test_broken_markers_are_refused_with_the_line(source, problem):
    with pytest.raises(AssignmentError, match=problem) as err:
        find_regions(source, "book/x.md: code cell 3")
    assert "book/x.md: code cell 3, line" in str(err.value)


def test_a_region_that_cannot_become_a_statement_is_refused():
    source = lines("y = max(", "    " + BEGIN, "    1, 2,", "    " + END, ")")
    with pytest.raises(AssignmentError, match="invalid Python"):
        stub_solutions(source, "cell 7")


# ---------------------------------------------------------------------------------------------
# Exercise answers (pure)

def md(text):
    return nbformat.v4.new_markdown_cell(text)


def code(text, **nbgrader):
    cell = nbformat.v4.new_code_cell(text)
    if nbgrader:
        cell.metadata["nbgrader"] = nbgrader
    return cell


def test_answers_are_stripped_and_exercises_kept():
    cells = [
        md("Intro.\n\n```{exercise}\n:label: e1\n\nQuestion one.\n```\n\n"
           "```{solution} e1\n:class: dropdown\n\nANSWER-1\n```\n\nAfter."),
        md(":::{solution} e1\nANSWER-2\n:::\nKept colon text."),
        md("````{exercise-start}\n:label: e2\n````\n\nQuestion two.\n\n````{exercise-end}\n````"
           "\n\n````{solution-start} e2\n:class: dropdown\n````\n\nANSWER-3"),
        code("ANSWER_4 = 1"),
        code("def stub():\n    pass", solution=True, grade=False, grade_id="kept-cell"),
        md("ANSWER-5\n\n````{solution-end}\n````\n\nBack to the text.\n\n"
           "````markdown\n```{solution} shown\nliteral, kept\n```\n````"),
        code("print('after')"),
    ]
    kept, removed = strip_answers(copy.deepcopy(cells))
    text = "\n".join(c.source for c in kept)
    assert removed == 3
    assert "ANSWER" not in text
    for words in ("Intro.", "Question one.", "After.", "Kept colon text.", "Question two.",
                  "{exercise-end}", "Back to the text.", "literal, kept", "print('after')",
                  "def stub()"):
        assert words in text, words
    assert [c.cell_type for c in kept] == ["markdown", "markdown", "markdown", "code",
                                           "markdown", "code"]


# ---------------------------------------------------------------------------------------------
# Assignments from a chapter

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny chapter assigned: ``(student path, teacher path)``."""
    out = tmp_path_factory.mktemp("tiny")
    student, teacher = make_assignment(FIXTURE, out)
    return student, teacher


def graded_ids(nb):
    return [c.metadata["nbgrader"]["grade_id"] for c in nb.cells
            if c.metadata.get("nbgrader", {}).get("grade")]


def test_assignment_notebooks(tiny):
    student_path, teacher_path = tiny
    # two folders, nothing else in them (no temporary file left)
    assert [p.name for p in student_path.parent.iterdir()] == ["tiny-chapter.ipynb"]
    assert [p.name for p in teacher_path.parent.iterdir()] == ["tiny-chapter-solution.ipynb"]
    assert teacher_path.parent == student_path.parent.with_name(student_path.parent.name
                                                                + "-teacher")
    student, teacher = (nbformat.read(p, as_version=4) for p in tiny)
    for nb in (student, teacher):
        nbformat.validate(nb)
        assert graded_ids(nb) == ["tiny-double-check", "tiny-scale-check", "tiny-numpy-check"]
        for cell in nb.cells:
            meta = cell.metadata.get("nbgrader")
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None
            if meta and meta["grade"]:
                assert meta["locked"] and meta["schema_version"] == 3
                assert cell.metadata["editable"] is False
                assert cell.metadata["deletable"] is False
                assert meta["checksum"] == assign.checksum(cell)
            elif meta:
                assert meta["solution"] and "editable" not in cell.metadata
    student_text = "\n".join(c.source for c in student.cells)
    teacher_text = "\n".join(c.source for c in teacher.cells)
    assert "SECRET-ANSWER" not in student_text and "return 2 * x" not in student_text
    assert student_text.count("raise NotImplementedError(\"Write") == 3
    assert "python -m checks mylayers:make_layer" in student.cells[0].source
    assert "`tiny-scale-check` | 2" in student.cells[0].source
    assert "SECRET-ANSWER-ONE" in teacher_text and "SECRET-ANSWER-THREE" in teacher_text
    assert "return 2 * x" in teacher_text and "SOLUTION" not in teacher_text
    assert "{solution} some-label" in student_text                 # a literal block stays
    graded = {"tiny-double-check": 1, "tiny-scale-check": 2, "tiny-numpy-check": 1}
    assert student.metadata["checks"] == {"role": "student", "chapter": "tiny-chapter",
                                          "graded": graded, "answer_key_uses": {
                                              "tiny-double": [], "tiny-scale": []}}
    assert teacher.metadata["checks"]["role"] == "teacher"


def test_checksum_is_the_one_nbgrader_computes():
    cell = code("assert f(1) == 2", grade=True, solution=False, locked=True, points=2,
                grade_id="x-check", schema_version=3)
    md5 = hashlib.md5()
    for part in ("assert f(1) == 2", "code", "True", "False", "True", "x-check", "2.0"):
        md5.update(part.encode())
    assert assign.checksum(cell) == md5.hexdigest()
    edited = copy.deepcopy(cell)
    edited.source += "\n"
    assert assign.checksum(edited) != assign.checksum(cell)
    utils = pytest.importorskip("nbgrader.utils")
    assert assign.checksum(cell) == utils.compute_checksum(cell)


def test_nbgrader_source_keeps_the_solutions_between_markers(tmp_path):
    (written,) = make_assignment(FIXTURE, tmp_path, nbgrader=True)
    nb = nbformat.read(written, as_version=4)
    text = "\n".join(c.source for c in nb.cells)
    assert text.count(BEGIN) == 3 and text.count(END) == 3 and "return 2 * x" in text
    assert "SECRET-ANSWER" not in text
    assert [p.name for p in tmp_path.iterdir()] == ["tiny-chapter.ipynb"]


def test_assign_refuses_a_chapter_without_solution_regions(tmp_path, capsys):
    chapter = tmp_path / "99-notes.md"
    chapter.write_text(FIXTURE.read_text().replace(BEGIN + "\n", "").replace(END + "\n", ""))
    assert assign.main([str(chapter), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no solution region" in err and "99-notes.md" in err
    assert not (tmp_path / "out").exists()


def test_assign_refuses_a_region_outside_a_solution_cell(tmp_path):
    chapter = tmp_path / "bad.md"
    chapter.write_text(FIXTURE.read_text().replace("grade_id: tiny-double, locked: false, "
                                                   "schema_version: 3, solution: true",
                                                   "grade_id: tiny-double, locked: false, "
                                                   "schema_version: 3, solution: false"))
    with pytest.raises(AssignmentError, match=r"bad.md: code cell \d+ \(tiny-double\).*"
                                              r"solution: true"):
        make_assignment(chapter, tmp_path)


# ---------------------------------------------------------------------------------------------
# Grading the tiny chapter: what a submission can do wrong

def submission(tmp_path, base, name="submission.ipynb", **changes):
    """A copy of notebook ``base`` with cells replaced by grade_id (``tiny_double="..."``) or a
    cell inserted after one (``after_tiny_double_check="..."``); returns its path."""
    nb = nbformat.read(base, as_version=4)
    for key, source in changes.items():
        after = key.startswith("after_")
        grade_id = key.removeprefix("after_").replace("_", "-")
        index = next(i for i, c in enumerate(nb.cells)
                     if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)
        if after:
            nb.cells.insert(index + 1, nbformat.v4.new_code_cell(source))
        else:
            nb.cells[index].source = source
    path = tmp_path / name
    nbformat.write(nb, path)
    return path


def statuses(result):
    return {c.grade_id: (c.status, c.score) for c in result.cells}


def test_blank_and_solution_of_the_tiny_chapter(tiny):
    student, teacher = tiny
    blank = grade.grade_notebook(student)
    assert statuses(blank) == {"tiny-double-check": ("error", 0),
                               "tiny-scale-check": ("error", 0),
                               "tiny-numpy-check": ("passed", 1)}  # needs no student code
    assert "NotImplementedError: Write the body of double here" in blank.cells[0].message
    assert "(line 1: assert double(3) == 6)" in blank.cells[0].message
    full = grade.grade_notebook(teacher)
    assert (full.score, full.max_score) == (4, 4)


def test_an_endless_loop_is_stopped_by_the_time_limit(tiny, tmp_path):
    loop = "def double(x):\n    while True:\n        pass"
    path = submission(tmp_path, tiny[1], tiny_double=loop)
    start = time.monotonic()
    result = grade.grade_notebook(path, timeout=2)
    assert time.monotonic() - start < 15
    assert statuses(result) == {"tiny-double-check": ("timeout", 0),
                                "tiny-scale-check": ("passed", 2),
                                "tiny-numpy-check": ("passed", 1)}
    assert "2 s" in result.cells[0].message


def test_a_loop_that_ignores_the_interrupt_gets_a_fresh_kernel(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(grade, "INTERRUPT_GRACE", 1.0)
    stubborn = ("import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                "while True:\n    pass")
    path = submission(tmp_path, tiny[1], after_tiny_double_check=stubborn)
    start = time.monotonic()
    result = grade.grade_notebook(path, options=grade.Options(timeout=2, run_all=True))
    assert time.monotonic() - start < 20
    assert (result.score, result.max_score) == (4, 4)     # earlier cells re-run, later ones run


def test_a_kernel_crash_costs_only_the_cell_that_crashed(tiny, tmp_path):
    crash = "def double(x):\n    import os\n    os._exit(1)"
    segfault = "import ctypes\nctypes.string_at(0)"
    path = submission(tmp_path, tiny[1], tiny_double=crash, after_tiny_scale_check=segfault)
    result = grade.grade_notebook(path, options=grade.Options(run_all=True))
    assert statuses(result) == {"tiny-double-check": ("crashed", 0),
                                "tiny-scale-check": ("passed", 2),
                                "tiny-numpy-check": ("passed", 1)}
    assert "exited with status 1" in result.cells[0].message


def test_a_syntax_error_costs_only_the_cells_that_need_that_code(tiny, tmp_path):
    path = submission(tmp_path, tiny[1], tiny_double="def double(x)\n    return 2 * x")
    result = grade.grade_notebook(path)
    assert statuses(result) == {"tiny-double-check": ("error", 0),
                                "tiny-scale-check": ("passed", 2),
                                "tiny-numpy-check": ("passed", 1)}
    assert result.cells[0].message.startswith("NameError: name 'double' is not defined")


def test_a_submission_that_deletes_variables(tiny, tmp_path):
    path = submission(tmp_path, tiny[1], after_tiny_double_check="del double, np")
    result = grade.grade_notebook(path)
    assert statuses(result) == {"tiny-double-check": ("passed", 1),
                                "tiny-scale-check": ("error", 0),
                                "tiny-numpy-check": ("error", 0)}
    assert "NameError: name 'np' is not defined" in result.cells[2].message


def test_huge_output_and_huge_errors_are_cut(tiny, tmp_path):
    noisy = ('def double(x):\n    print("x" * 20_000_000)\n'
             '    raise ValueError("y" * 5_000_000)')
    path = submission(tmp_path, tiny[1], tiny_double=noisy)
    result = grade.grade_notebook(path)
    message = result.cells[0].message
    assert result.cells[0].status == "error" and message.startswith("ValueError: yyy")
    assert len(message) <= grade.MESSAGE_CHARS and "\n" not in message
    assert result.score == 3


def test_edited_graded_cells_tampered_restored_or_missing(tiny, tmp_path):
    student, teacher = tiny
    solutions = nbformat.read(teacher, as_version=4)
    solved = {c.metadata["nbgrader"]["grade_id"]: c.source for c in solutions.cells
              if c.metadata.get("nbgrader", {}).get("solution")}
    path = submission(tmp_path, student, tiny_double=solved["tiny-double"],
                      tiny_scale_check="pass", tiny_numpy_check="pass")
    alone = grade.grade_notebook(path)
    assert statuses(alone) == {"tiny-double-check": ("passed", 1),
                               "tiny-scale-check": ("tampered", 0),
                               "tiny-numpy-check": ("tampered", 0)}
    restored = grade.grade_notebook(path, reference=student)
    assert statuses(restored) == {"tiny-double-check": ("passed", 1),
                                  "tiny-scale-check": ("error", 0),
                                  "tiny-numpy-check": ("passed", 1)}
    assert "restored from the reference" in restored.notes[0]

    nb = nbformat.read(path, as_version=4)
    nb.cells = [c for c in nb.cells
                if c.metadata.get("nbgrader", {}).get("grade_id") != "tiny-scale-check"]
    nbformat.write(nb, path)
    deleted = grade.grade_notebook(path, reference=student)
    assert statuses(deleted)["tiny-scale-check"] == ("missing", 0)
    assert deleted.max_score == 4


def test_the_notebook_time_limit_marks_the_rest_not_run(tiny, tmp_path):
    path = submission(tmp_path, tiny[1], after_tiny_double_check="import time\ntime.sleep(120)")
    start = time.monotonic()
    result = grade.grade_notebook(path, options=grade.Options(timeout=100, total_timeout=8,
                                                              run_all=True))
    assert time.monotonic() - start < 60
    assert statuses(result) == {"tiny-double-check": ("passed", 1),
                                "tiny-scale-check": ("not-run", 0),
                                "tiny-numpy-check": ("not-run", 0)}


# ---------------------------------------------------------------------------------------------
# The command line

def run(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "checks", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_cli_assign_then_grade_json(tmp_path):
    made = run("assign", str(FIXTURE), "--out", str(tmp_path / "release"))
    assert made.returncode == 0, made.stderr
    assert made.stdout.split() == [str(tmp_path / "release" / "tiny-chapter.ipynb"),
                                   str(tmp_path / "release-teacher" / "tiny-chapter-solution.ipynb")]
    (tmp_path / "in").mkdir()
    shutil.copy(tmp_path / "release" / "tiny-chapter.ipynb", tmp_path / "in" / "bob.ipynb")
    graded = run("grade", str(tmp_path / "in" / "bob.ipynb"), "--json", "--reference",
                 str(tmp_path / "release" / "tiny-chapter.ipynb"))
    assert graded.returncode == 0, graded.stderr
    (line,) = graded.stdout.splitlines()
    result = json.loads(line)
    assert {"score", "max_score", "cells"} <= set(result)
    assert (result["score"], result["max_score"]) == (1, 4)
    assert result["review"] is False and result["reference"] is True
    assert [set(c) for c in result["cells"]] == [
        {"grade_id", "score", "max_score", "status", "message"}] * 3
    assert [c["status"] for c in result["cells"]] == ["error", "error", "passed"]


def test_cli_grade_a_folder_prints_a_table_per_notebook(tiny, tmp_path):
    folder = tmp_path / "submitted"
    folder.mkdir()
    shutil.copy(tiny[0], folder / "bob.ipynb")
    ada = nbformat.read(tiny[1], as_version=4)
    ada.metadata["checks"]["role"] = "student"
    nbformat.write(ada, folder / "ada.ipynb")
    shutil.copy(tiny[1], folder / "tiny-chapter-solution.ipynb")     # the answer key, skipped
    graded = run("grade", str(folder))
    assert graded.returncode == 0, graded.stderr
    out = graded.stdout
    assert "bob.ipynb: 1 / 4 points" in out
    assert "ada.ipynb: 4 / 4 points" in out
    assert "tiny-chapter-solution.ipynb: skipped: the teacher's notebook" in graded.stderr
    assert "tiny-chapter-solution.ipynb:" not in out
    assert any(line.split()[:4] == ["tiny-scale-check", "0", "/", "2"] for line in out.splitlines())
    assert "Graded without --reference" in out and "provisional" in out


def test_help_mentions_assign_and_grade():
    result = run("--help")
    assert result.returncode == 0
    assert "assign" in result.stdout and "grade" in result.stdout


@pytest.mark.parametrize("content, problem", [
    (None, "cannot read it"),
    ("this is not json", "not a notebook (invalid JSON"),
    ('{"cells": "no"}', "not a Jupyter notebook in format 4"),
    (json.dumps(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")])),
     "no graded cells"),
])
def test_unusable_input_exits_2_with_one_line(tmp_path, capsys, content, problem):
    path = tmp_path / "sub.ipynb"
    if content is not None:
        path.write_text(content)
    assert grade.main([str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and problem in captured.err and "sub.ipynb" in captured.err


def test_unusable_reference_exits_2(tiny, tmp_path, capsys):
    bad = tmp_path / "release.ipynb"
    bad.write_text("{")
    assert grade.main([str(tiny[0]), "--reference", str(bad)]) == 2
    assert "reference" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# The book's chapters as assignments: blank scores 0, the solution full marks

def has_solution_region(chapter: Path) -> bool:
    nb = jupytext.read(chapter)
    return any(c.cell_type == "code" and find_regions(c.source, str(chapter))
               for c in nb.cells if BEGIN in c.source)


def needs_full_mnist(chapter: Path) -> bool:
    return "load_mnist()" in chapter.read_text()


CHAPTERS = sorted(p for p in (ROOT / "book").glob("*.md")
                  if BEGIN in p.read_text() and has_solution_region(p))
QUICK = {"02-dense", "08-flatten"}
SLOW = os.environ.get("CNN_LESSONS_SLOW") == "1"


def chapter_params():
    for chapter in CHAPTERS:
        marks = []
        if chapter.stem not in QUICK and not SLOW:
            marks.append(pytest.mark.skip(reason="set CNN_LESSONS_SLOW=1 to grade every chapter"))
        elif needs_full_mnist(chapter) and not os.environ.get("CNN_LESSONS_DATA"):
            marks.append(pytest.mark.skip(reason="trains on the full MNIST: set "
                                                 "CNN_LESSONS_DATA"))
        yield pytest.param(chapter, id=chapter.stem, marks=marks)


def test_the_quick_chapters_are_assignments():
    assert QUICK <= {p.stem for p in CHAPTERS}


@pytest.mark.parametrize("chapter", list(chapter_params()))
def test_chapter_blank_scores_zero_and_solution_full_marks(chapter, tmp_path):
    student, teacher = make_assignment(chapter, tmp_path)
    nb = jupytext.read(chapter)
    points = sum(c.metadata["nbgrader"]["points"] for c in nb.cells
                 if c.metadata.get("nbgrader", {}).get("grade"))
    blank = grade.grade_notebook(student, reference=student, timeout=600, total_timeout=3600)
    assert blank.max_score == points
    assert blank.score == 0, str(blank)
    assert all(c.status in ("failed", "error") for c in blank.cells), str(blank)
    full = grade.grade_notebook(teacher, reference=student, timeout=600, total_timeout=3600)
    assert full.score == full.max_score == points, str(full)


def test_the_teaching_chapter_is_not_an_assignment():
    teaching = ROOT / "book" / "13-teaching.md"
    if not teaching.exists():
        pytest.skip("no teaching chapter")
    with pytest.raises(AssignmentError, match="13-teaching.md"):
        make_assignment(teaching, ROOT / "never-written")
    assert not (ROOT / "never-written").exists()
