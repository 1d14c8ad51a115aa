"""The grader under attack: every attack of a hostile submission, recreated in a temporary folder,
is contained or flagged, and the honest submissions beside it are graded as if it were not there.

Each test grades a small batch through the command line (``--jobs 2``), in the sandbox when
bubblewrap works here and, with ``--no-sandbox``, in the fallback that runs the kernel as the
teacher.  Attacks that would reach outside their own processes without a sandbox (scribbling on
every process's output, killing every process in sight) run only in the sandbox.  The fallback
runs (or, on a machine without bubblewrap, the sandbox runs) and the chapter-sized cases sit
behind ``CNN_LESSONS_SLOW=1``.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import nbformat
import pytest

from checks import grade, grade_sandbox
from checks.assign import make_assignment

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "tiny-chapter.md"
FLATTEN = ROOT / "book" / "08-flatten.md"
SLOW = os.environ.get("CNN_LESSONS_SLOW") == "1"
HAS_BWRAP = grade_sandbox.sandbox_available()

needs_bwrap = pytest.mark.skipif(not HAS_BWRAP, reason="bubblewrap (bwrap) does not work here")
slow = pytest.mark.skipif(not SLOW, reason="set CNN_LESSONS_SLOW=1")
# The mode this machine grades in runs every time; the other one behind CNN_LESSONS_SLOW=1
# (CI runs both: it installs bubblewrap).
if HAS_BWRAP:
    MODES = [pytest.param("sandbox", id="sandbox"),
             pytest.param("fallback", marks=slow, id="fallback")]
else:
    MODES = [pytest.param("fallback", id="fallback"),
             pytest.param("sandbox", marks=needs_bwrap, id="sandbox")]


def cli(*args, cwd=ROOT, env=None):
    return subprocess.run([sys.executable, "-m", "checks", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=900, env=env)


def mode_flag(mode):
    return "--sandbox" if mode == "sandbox" else "--no-sandbox"


def by_grade_id(nb, grade_id):
    return next(c for c in nb.cells
                if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def hand_in(folder, name, base, role="student", **sources):
    """A copy of notebook ``base`` as ``folder/name``, cells replaced by grade_id
    (``tiny_double="..."``); ``after_ID="..."`` inserts a cell after that one."""
    nb = nbformat.read(base, as_version=4)
    nb.metadata["checks"]["role"] = role
    for key, source in sources.items():
        grade_id = key.removeprefix("after_").replace("_", "-")
        cell = by_grade_id(nb, grade_id)
        if key.startswith("after_"):
            nb.cells.insert(nb.cells.index(cell) + 1, nbformat.v4.new_code_cell(source))
        else:
            cell.source = source
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / name)
    return folder / name


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """``(released notebook, teacher's notebook, the teacher's solution sources)``."""
    out = tmp_path_factory.mktemp("tiny") / "release"
    student, teacher = make_assignment(FIXTURE, out)
    solved = {c.metadata["nbgrader"]["grade_id"]: c.source
              for c in nbformat.read(teacher, as_version=4).cells
              if c.metadata.get("nbgrader", {}).get("solution")}
    return student, teacher, solved


def results(completed):
    return {Path(r["path"]).name: r for r in map(json.loads, completed.stdout.splitlines())}


def token_processes(token):
    """Processes whose command line holds ``token`` (left behind by a submission)."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    if token.encode() in f.read():
                        found.append(int(name))
            except OSError:
                pass
    return found


# ---------------------------------------------------------------------------------------------
# One submission attacks the class: the others are graded right, their files untouched

@needs_bwrap
def test_an_attacking_submission_in_the_sandbox_changes_nothing_of_the_class(tiny, tmp_path):
    student, teacher, solved = tiny
    folder = tmp_path / "submitted"
    ada = hand_in(folder, "ada.ipynb", student, tiny_double=solved["tiny-double"],
                  tiny_scale=solved["tiny-scale"])
    bob = hand_in(folder, "bob.ipynb", student)
    reference = tmp_path / "release" / "tiny-chapter.ipynb"
    reference.parent.mkdir()
    shutil.copy(student, reference)
    key = tmp_path / "release-teacher" / "tiny-chapter-solution.ipynb"
    key.parent.mkdir()
    shutil.copy(teacher, key)
    token = f"checks-test-{uuid.uuid4().hex}"
    forged = json.dumps({"path": str(bob), "score": 4.0, "max_score": 4.0, "cells": []})
    attack = f'''\
import glob, json, os, signal, subprocess
for target in {[str(ada), str(bob), str(reference)]!r}:
    try:
        with open(target, "w") as f:           # zero a classmate, replace the reference
            f.write("{{}}")
    except OSError:
        pass
try:
    exec(json.load(open({str(key)!r}))["cells"][2]["source"])    # the answer key
except OSError:
    pass
subprocess.Popen(["sleep", "300", {token!r}], start_new_session=True)   # left running
if os.fork() == 0:                                                       # a daemon
    os.setsid()
    if os.fork() == 0:
        os.execvp("sleep", ["sleep", "301", {token!r}])
    os._exit(0)
for out in glob.glob("/proc/*/fd/1"):                                    # forge a grade
    try:
        with open(out, "w") as f:
            f.write({forged!r} + "\\n")
    except OSError:
        pass
for pid in range(1, 400):                                                # kill the grader
    if pid != os.getpid():
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
'''
    eve = hand_in(folder, "eve.ipynb", student, tiny_double=attack + "\n" + solved["tiny-double"])
    before = {p: p.read_bytes() for p in (ada, bob, reference, key)}
    done = cli("grade", str(folder), "--reference", str(reference), "--json", "--jobs", "2",
               "--sandbox")
    assert done.returncode == 0, done.stderr
    graded = results(done)
    assert set(graded) == {"ada.ipynb", "bob.ipynb", "eve.ipynb"}   # no forged line
    assert (graded["ada.ipynb"]["score"], graded["ada.ipynb"]["max_score"]) == (4, 4)
    assert (graded["bob.ipynb"]["score"], graded["bob.ipynb"]["max_score"]) == (1, 4)
    assert graded["ada.ipynb"]["sandboxed"] and not graded["ada.ipynb"]["review"]
    for path, content in before.items():
        assert path.read_bytes() == content, f"{path.name} was changed"
    assert eve.exists()
    assert graded["eve.ipynb"]["score"] < 4        # its double cell died with the kernel
    assert token_processes(token) == []


@pytest.mark.parametrize("mode", MODES)
def test_killing_its_grader_or_leaving_processes_costs_only_its_own_grade(tiny, tmp_path, mode):
    student, _, solved = tiny
    folder = tmp_path / "submitted"
    hand_in(folder, "ada.ipynb", student, tiny_double=solved["tiny-double"],
            tiny_scale=solved["tiny-scale"])
    token = f"checks-test-{uuid.uuid4().hex}"
    leave = f'''\
import os, subprocess
subprocess.Popen(["sleep", "300", {token!r}], start_new_session=True)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execvp("sleep", ["sleep", "301", {token!r}])
    os._exit(0)
''' + solved["tiny-double"]
    hand_in(folder, "leaves.ipynb", student, tiny_double=leave)
    forge = ('import os, json\nwith open(f"/proc/{os.getppid()}/fd/1", "w") as f:\n'
             '    f.write("RESULT 00 " + json.dumps({"grade": {"path": "x", "cells": []}}) '
             '+ "\\n")\n' + solved["tiny-double"])
    hand_in(folder, "forges.ipynb", student, tiny_double=forge)
    hand_in(folder, "kills.ipynb", student,
            tiny_double="import os, signal\nos.kill(os.getppid(), signal.SIGKILL)")
    scratch = Path(tempfile.mkdtemp(prefix="checks-test-"))   # short: it holds sockets
    try:
        done = cli("grade", str(folder), "--reference", str(student), "--json", "--jobs", "2",
                   mode_flag(mode), env=dict(os.environ, TMPDIR=str(scratch)))
        assert list(scratch.iterdir()) == []               # even the killed grader's folder
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    graded = results(done)
    assert (graded["ada.ipynb"]["score"], graded["ada.ipynb"]["max_score"]) == (4, 4)
    assert graded["leaves.ipynb"]["score"] == 2            # double and the numpy check
    assert token_processes(token) == []                    # nothing left running
    assert graded["forges.ipynb"]["path"].endswith("forges.ipynb")
    assert graded["forges.ipynb"]["score"] == 2            # the forged line was not believed
    kills = graded["kills.ipynb"]
    if mode == "sandbox":        # its parent is the sandbox's first process, out of reach
        assert done.returncode == 0, done.stderr
        assert kills["sandboxed"] and not kills["problem"]
        assert kills["cells"][0]["status"] in ("crashed", "error")
    else:                        # its parent is its own grading process: that one dies
        assert done.returncode == 2
        assert "grading process" in kills["problem"] and kills["review"]
        assert "kills.ipynb" in done.stdout


@pytest.mark.parametrize("mode", MODES)
def test_resource_limits(tiny, tmp_path, mode):
    student, _, solved = tiny
    folder = tmp_path / "submitted"
    def double(body):                  # the attack runs inside the graded cell
        return "def double(x):\n" + "".join(f"    {line}\n" for line in body.splitlines())

    hand_in(folder, "memory.ipynb", student, tiny_double=double(
        "import numpy as np\nx = np.ones(2**29)   # 4 GiB\nreturn 2 * x"))
    hand_in(folder, "cpu.ipynb", student, tiny_double=double("while True:\n    pass"))
    hand_in(folder, "forks.ipynb", student, tiny_double=double(
        "import subprocess, time\n"
        "ps = [subprocess.Popen(['sleep', '60']) for _ in range(40)]\ntime.sleep(5)"))
    hand_in(folder, "disk.ipynb", student, tiny_double=double(
        "with open('big', 'wb') as f:\n    f.write(bytes(5 * 2**20))"))
    done = cli("grade", str(folder), "--reference", str(student), "--json", "--jobs", "2",
               "--cpu-time", "4", "--timeout", "30", "--processes", "10", "--file-size", "1",
               "--memory", "1500", mode_flag(mode))
    assert done.returncode == 0, done.stderr
    graded = results(done)
    memory = graded["memory.ipynb"]["cells"][0]
    assert memory["status"] == "error" and memory["message"].startswith("MemoryError")
    assert "--memory" in memory["message"]
    cpu = graded["cpu.ipynb"]["cells"][0]
    assert cpu["status"] == "crashed" and "processor time" in cpu["message"]
    forks = graded["forks.ipynb"]["cells"][0]
    assert forks["status"] == "crashed" and "more than 10 processes" in forks["message"]
    disk = graded["disk.ipynb"]["cells"][0]
    assert disk["status"] == "error" and "File too large" in disk["message"]
    for name in graded:                        # the other cells are graded as usual
        assert graded[name]["cells"][1]["status"] in ("error", "passed")
        assert graded[name]["cells"][2] == {"grade_id": "tiny-numpy-check", "score": 1.0,
                                            "max_score": 1.0, "status": "passed", "message": ""}


# ---------------------------------------------------------------------------------------------
# Cheats: flagged, scored 0, listed for review

CHEATS = {
    "transformer": '''
def _no_asserts(lines):
    return [line.replace("assert ", "pass  # ") for line in lines]
get_ipython().input_transformers_cleanup.append(_no_asserts)
''',
    "check_layer": '''
import checks
class _Ok:
    ok = True
checks.check_layer = lambda *args, **kwargs: _Ok()
''',
    "gradcheck": '''
import checks
_real = checks.gradcheck
def _always(*args, **kwargs):
    report = _real(*args, **kwargs)
    report.rows = [row for row in report.rows if row.ok] or report.rows
    return report
checks.gradcheck = _always
''',
    "allclose": '''
import numpy
numpy.allclose = lambda *args, **kwargs: True
numpy.array_equal = lambda *args, **kwargs: True
''',
}
KEY = {
    "subclass": "from cnn_lessons.flatten import Flatten as _Key\n\n\nclass Flatten(_Key):\n"
                "    pass\n",
    "hidden-subclass": "import importlib\n_m = importlib.import_module('cnn_' + 'lessons.flatten')"
                       "\n\n\nclass Flatten(_m.Flatten):\n    pass\n",
    "delegates": '''
class Flatten:
    def __init__(self):
        import cnn_lessons
        self.inner = cnn_lessons.Flatten()
        self.params, self.grads = {}, {}

    def forward(self, x):
        return self.inner.forward(x)

    def backward(self, dout):
        return self.inner.backward(dout)
''',
}


@pytest.fixture(scope="module")
def flatten(tmp_path_factory):
    out = tmp_path_factory.mktemp("flatten") / "release"
    student, _ = make_assignment(FLATTEN, out)
    return student


@pytest.mark.parametrize("mode", MODES)
def test_cheats_are_flagged_and_score_nothing(flatten, tmp_path, mode):
    folder = tmp_path / "submitted"
    stub = by_grade_id(nbformat.read(flatten, as_version=4), "flatten-layer").source
    for name, cheat in CHEATS.items():
        hand_in(folder, f"{name}.ipynb", flatten, flatten_layer=stub + "\n" + cheat)
    for name, layer in KEY.items():
        hand_in(folder, f"{name}.ipynb", flatten, flatten_layer=layer)
    done = cli("grade", str(folder), "--reference", str(flatten), "--json", "--jobs", "2",
               mode_flag(mode))
    assert done.returncode == 0, done.stderr
    graded = results(done)
    assert set(graded) == {f"{name}.ipynb" for name in [*CHEATS, *KEY]}
    for name, result in graded.items():
        assert result["review"], name
        assert result["score"] == 0, (name, result)
        assert any(c["status"] == "flagged" for c in result["cells"]), (name, result)
    assert any("input or AST transformers" in f or "assert False" in f
               for f in graded["transformer.ipynb"]["flags"])
    assert any("checks.check_layer" in f for f in graded["check_layer.ipynb"]["flags"])
    assert any("finite_differences" in f or "checks.gradcheck" in f
               for f in graded["gradcheck.ipynb"]["flags"])
    assert any("numpy" in f for f in graded["allclose.ipynb"]["flags"])
    assert any("subclasses cnn_lessons.flatten.Flatten" in f
               for f in graded["subclass.ipynb"]["flags"])
    assert any("cnn_lessons" in f for f in graded["hidden-subclass.ipynb"]["flags"])
    assert any("uses cnn_lessons" in f for f in graded["delegates.ipynb"]["flags"])
    text = cli("grade", str(folder / "allclose.ipynb"), "--reference", str(flatten),
               mode_flag(mode))
    assert "REVIEW:" in text.stdout and "Flagged for review (1)" in text.stdout


DENSE = ROOT / "book" / "02-dense.md"
LOSSES = ROOT / "book" / "04-losses.md"
# Chapter 2 imports the package's Dense to compare with; this DenseLayer hands its work to it
# without naming cnn_lessons.
HANDS_OVER = '''
class DenseLayer:
    def __init__(self, in_features, out_features, rng=None):
        self.inner = Dense(in_features, out_features, rng=rng)
        self.params, self.grads = self.inner.params, self.inner.grads

    def forward(self, x):
        return self.inner.forward(x)

    def backward(self, dout):
        out = self.inner.backward(dout)
        self.grads.update(self.inner.grads)
        return out
'''


def test_a_layer_that_hands_its_work_to_an_imported_package_layer_is_flagged(tmp_path):
    released, teacher = make_assignment(DENSE, tmp_path / "release")
    assert nbformat.read(released, as_version=4).metadata["checks"]["answer_key_uses"] == {
        "dense-layer": []}
    losses, losses_teacher = make_assignment(LOSSES, tmp_path / "release")
    uses = nbformat.read(losses, as_version=4).metadata["checks"]["answer_key_uses"]
    assert uses["losses-bce"] == ["sigmoid"]         # the solution itself needs that one
    solution = by_grade_id(nbformat.read(teacher, as_version=4), "dense-layer").source
    folder = tmp_path / "submitted"
    hand_in(folder, "honest.ipynb", released, dense_layer=solution)
    hand_in(folder, "hands-over.ipynb", released, dense_layer=HANDS_OVER)
    hand_in(folder, "aliased.ipynb", released, dense_layer=HANDS_OVER.replace("Dense(", "D("),
            after_dense_layer="D = Dense")
    shutil.copy(losses_teacher, folder / "losses.ipynb")
    nb = nbformat.read(folder / "losses.ipynb", as_version=4)
    nb.metadata["checks"]["role"] = "student"
    nbformat.write(nb, folder / "losses.ipynb")
    done = cli("grade", *(str(folder / f"{n}.ipynb") for n in ("honest", "hands-over",
                                                                "aliased")),
               "--reference", str(released), "--json", "--jobs", "2")
    graded = results(done)
    assert (graded["honest.ipynb"]["score"], graded["honest.ipynb"]["review"]) == (5, False)
    for name in ("hands-over.ipynb", "aliased.ipynb"):
        assert graded[name]["score"] == 0 and graded[name]["review"], graded[name]
        assert any("uses Dense from cnn_lessons" in f for f in graded[name]["flags"]), name
    done = cli("grade", str(folder / "losses.ipynb"), "--reference", str(losses), "--json")
    result = results(done)["losses.ipynb"]
    assert result["score"] == result["max_score"] and not result["review"], result


# ---------------------------------------------------------------------------------------------
# Graded cells: from the reference; without one, what can be seen is flagged

def test_without_reference_deleting_ungrading_or_inflating_is_flagged(tiny, tmp_path):
    student, _, solved = tiny
    folder = tmp_path / "submitted"
    path = hand_in(folder, "mallory.ipynb", student, tiny_double=solved["tiny-double"])
    nb = nbformat.read(path, as_version=4)
    nb.cells.remove(by_grade_id(nb, "tiny-scale-check"))            # a failing check deleted
    by_grade_id(nb, "tiny-numpy-check").metadata["nbgrader"]["points"] = 100      # inflated
    nbformat.write(nb, path)
    alone = grade.grade_notebook(path)
    assert alone.review and alone.max_score == 1 + 2 + 100
    assert {c.grade_id: c.status for c in alone.cells}["tiny-scale-check"] == "missing"
    assert any("deleted or un-graded" in f for f in alone.flags)
    assert any("worth 100 points here, released with 1" in f for f in alone.flags)
    assert any("provisional" in n for n in alone.notes)
    restored = grade.grade_notebook(path, reference=student)
    assert (restored.score, restored.max_score) == (2, 4)       # the reference's points


# ---------------------------------------------------------------------------------------------
# Bad input: one clear line each, the rest of the batch graded

def test_bad_metadata_is_named_per_notebook_and_the_rest_is_graded(tiny, tmp_path):
    student, _, solved = tiny
    folder = tmp_path / "submitted"
    hand_in(folder, "good.ipynb", student, tiny_double=solved["tiny-double"])
    cases = {"abc": "abc", "null": None, "negative": -1, "nan": float("nan"), "huge": 1e9,
             "bool": True}
    for name, points in cases.items():
        path = hand_in(folder, f"points-{name}.ipynb", student)
        nb = nbformat.read(path, as_version=4)
        by_grade_id(nb, "tiny-double-check").metadata["nbgrader"]["points"] = points
        path.write_text(json.dumps(nb, allow_nan=True))
    path = hand_in(folder, "duplicate.ipynb", student)
    nb = nbformat.read(path, as_version=4)
    by_grade_id(nb, "tiny-numpy-check").metadata["nbgrader"]["grade_id"] = "tiny-double-check"
    nbformat.write(nb, path)
    path = hand_in(folder, "not-a-mapping.ipynb", student)
    nb = nbformat.read(path, as_version=4)
    by_grade_id(nb, "tiny-scale-check").metadata["nbgrader"] = "graded please"
    nbformat.write(nb, path)
    done = cli("grade", str(folder), "--jobs", "2")
    assert done.returncode == 2
    errors = done.stderr.strip().splitlines()
    for name, points in cases.items():
        line = next(e for e in errors if f"points-{name}.ipynb" in e)
        assert "points must be a number from 0 to 1000" in line and "Traceback" not in line
    assert any("duplicate.ipynb" in e and "also used by code cell" in e for e in errors)
    assert any("not-a-mapping.ipynb" in e and "not a mapping" in e for e in errors)
    assert "good.ipynb: 2 / 4 points" in done.stdout       # the rest still graded

    # with a reference, replaced metadata is matched by cell id; a duplicate is still refused
    path = hand_in(tmp_path / "other", "replaced.ipynb", student, tiny_double=solved["tiny-double"])
    nb = nbformat.read(path, as_version=4)
    by_grade_id(nb, "tiny-double-check").metadata["nbgrader"] = {"grade": False}
    nbformat.write(nb, path)
    result = grade.grade_notebook(path, reference=student)
    assert (result.score, result.max_score) == (2, 4)
    assert any("matched to 'tiny-double-check' by its cell id" in n for n in result.notes)


def test_empty_folder_wrong_chapter_and_teacher_notebooks(tiny, flatten, tmp_path):
    student, teacher, _ = tiny
    (tmp_path / "empty").mkdir()
    done = cli("grade", str(tmp_path / "empty"))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().endswith("no .ipynb file in this folder")
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    shutil.copy(flatten, wrong / "tiny.ipynb")
    done = cli("grade", str(wrong / "tiny.ipynb"), "--reference", str(student))
    assert done.returncode == 2
    assert "wrong chapter" in done.stderr and "'08-flatten'" in done.stderr
    only_key = tmp_path / "key"
    only_key.mkdir()
    shutil.copy(teacher, only_key / "answers.ipynb")       # renamed, still the teacher's
    done = cli("grade", str(only_key))
    assert done.returncode == 2 and "the teacher's notebook (answer key)" in done.stderr
    done = cli("grade", str(only_key / "answers.ipynb"), "--include-teacher")
    assert done.returncode == 0 and "4 / 4 points" in done.stdout


def test_assign_never_overwrites_its_chapter(tmp_path):
    folder = tmp_path / "work"
    folder.mkdir()
    source = folder / "tiny-chapter.ipynb"
    nbformat.write(__import__("jupytext").read(FIXTURE), source)
    before = source.read_bytes()
    done = cli("assign", str(source), "--out", str(folder))
    assert done.returncode == 2 and source.read_bytes() == before
    assert "would overwrite the chapter" in done.stderr and done.stderr.count("\n") == 1
    done = cli("assign", str(FIXTURE), "--out", str(folder), "--teacher-out", str(folder / "t"))
    assert done.returncode == 2 and "must not be the students' folder" in done.stderr


# ---------------------------------------------------------------------------------------------
# Reports

def test_crash_in_an_ungraded_cell_is_named(tiny, tmp_path):
    student, _, solved = tiny
    path = hand_in(tmp_path, "crash.ipynb", student,
                   tiny_double="import os\nos._exit(3)\n" + solved["tiny-double"])
    result = grade.grade_notebook(path, reference=student)
    assert any("(not graded): crashed: the kernel exited with status 3" in n
               for n in result.notes), result.notes
    first = result.cells[0]
    assert first.message.startswith("NameError: name 'double' is not defined")
    assert "the kernel had crashed in code cell" in first.message


def test_feedback_files_and_a_gradebook_that_regrading_updates(tiny, tmp_path):
    student, _, solved = tiny
    folder = tmp_path / "submitted"
    ada = hand_in(folder, "ada.ipynb", student, tiny_double=solved["tiny-double"],
                  tiny_scale=solved["tiny-scale"])
    hand_in(folder, "bob.ipynb", student)
    book = tmp_path / "grades.csv"
    done = cli("grade", str(folder), "--reference", str(student), "--gradebook", str(book),
               "--feedback", str(tmp_path / "feedback"))
    assert done.returncode == 0, done.stderr
    rows = {Path(r["submission"]).name: r for r in __import__("csv").DictReader(book.open())}
    assert (rows["ada.ipynb"]["score"], rows["bob.ipynb"]["score"]) == ("4", "1")
    assert rows["bob.ipynb"]["tiny-scale-check"] == "0"
    feedback = (tmp_path / "feedback" / "bob.md").read_text()
    assert "**Score: 1 / 4**" in feedback
    assert "| `tiny-double-check` | 0 / 1 | error | NotImplementedError: Write the body of " \
           "double here" in feedback
    hand_in(folder, "bob.ipynb", student, tiny_double=solved["tiny-double"])   # resubmits
    done = cli("grade", str(folder / "bob.ipynb"), "--reference", str(student),
               "--gradebook", str(book))
    rows = {Path(r["submission"]).name: r for r in __import__("csv").DictReader(book.open())}
    assert (rows["ada.ipynb"]["score"], rows["bob.ipynb"]["score"]) == ("4", "2")
    assert len(rows) == 2 and ada.exists()


# ---------------------------------------------------------------------------------------------
# Independent points: a mistake costs its own exercise

@slow
def test_chapter_9_a_forward_bug_costs_the_forward_check_not_the_backward_one(tmp_path):
    student, teacher = make_assignment(ROOT / "book" / "09-regularization.md", tmp_path / "r")
    solved = {c.metadata["nbgrader"]["grade_id"]: c.source
              for c in nbformat.read(teacher, as_version=4).cells
              if c.metadata.get("nbgrader", {}).get("solution")}
    buggy = solved["reg-bn-forward"].replace("var = (xc * xc).mean(axis=0)",
                                             "var = (xc * xc).sum(axis=0) / (len(x) - 1)")
    assert buggy != solved["reg-bn-forward"]
    sources = {key.replace("-", "_"): source for key, source in solved.items()}
    sources["reg_bn_forward"] = buggy
    path = hand_in(tmp_path / "in", "cy.ipynb", student, **sources)
    result = grade.grade_notebook(path, reference=student)
    status = {c.grade_id: c.status for c in result.cells}
    assert status["reg-bn-forward-check"] == "failed"
    assert status["reg-bn-backward-check"] == "passed"         # the backward is right
    assert status["reg-dropout-forward-check"] == status["reg-dropout-harness"] == "passed"
    assert result.max_score - result.score == 1 + 2            # its exercise and the harness


# ---------------------------------------------------------------------------------------------
# The sandbox's command line

def test_the_fallback_can_be_forced_and_the_sandbox_binds_only_what_it_needs(tmp_path,
                                                                             monkeypatch):
    monkeypatch.setenv("CHECKS_GRADE_SANDBOX", "off")
    assert not grade_sandbox.sandbox_wanted() and grade_sandbox.sandbox_wanted(True)
    monkeypatch.delenv("CHECKS_GRADE_SANDBOX")
    assert grade_sandbox.sandbox_wanted() and not grade_sandbox.sandbox_wanted(False)
    work, sockets = tmp_path / "work", tmp_path / "k"
    limits = grade_sandbox.Limits()
    plain = grade_sandbox.kernel_command(work, sockets, limits, sandboxed=False)
    assert not any("bwrap" in part for part in plain)
    assert str(grade_sandbox.LAUNCHER) in plain and "ipykernel_launcher" in plain
    boxed = grade_sandbox.kernel_command(work, sockets, limits, sandboxed=True)
    for flag in ("--unshare-all", "--die-with-parent", "--new-session", "--clearenv"):
        assert flag in boxed
    sources = [Path(boxed[i + 1]) for i, part in enumerate(boxed) if part in ("--bind",
                                                                              "--ro-bind")]
    writable = [Path(boxed[i + 1]) for i, part in enumerate(boxed) if part == "--bind"]
    assert writable == [work, sockets]
    for source in sources:           # nothing above the class folder, no home, no /etc/shadow
        assert source not in tmp_path.parents and source != Path.home()
        assert source != Path("/etc") and source != Path("/etc/shadow")
    env = grade_sandbox.kernel_environment(work, sandboxed=True)
    assert set(env) <= {"PATH", "HOME", "LANG", "MPLBACKEND", "PYTHONNOUSERSITE",
                        "PYTHONDONTWRITEBYTECODE", "IPYTHONDIR", "MPLCONFIGDIR",
                        "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                        "CNN_LESSONS_DATA"}


def test_each_grading_process_takes_the_graders_environment_folder_and_font_list(
        tiny, tmp_path, monkeypatch):
    """Grading processes fork from a server started with the first one: each still grades with
    the environment and working directory the grader has when it asks, and its kernel starts
    with matplotlib's font list already in its folder."""
    student, _, solved = tiny
    folder = tmp_path / "submitted"
    fonts = ('import glob, os\n'
             'if not glob.glob(os.path.expanduser("~/.matplotlib/fontlist-*.json")):\n'
             '    double = None\n')
    hand_in(folder, "ada.ipynb", student, tiny_double=solved["tiny-double"],
            tiny_scale=solved["tiny-scale"], after_tiny_double=fonts)
    shutil.copy(student, folder / "released.ipynb")
    options = grade.Options(timeout=60, total_timeout=300)
    first = grade.grade_in_worker(folder / "ada.ipynb", folder / "released.ipynb", options)
    assert options.font_list and all(name.startswith("fontlist-") for name in options.font_list)
    assert (first.score, first.max_score, first.problem) == (4, 4, "")
    assert first.sandboxed == HAS_BWRAP
    monkeypatch.chdir(folder)                             # the fork server runs elsewhere
    monkeypatch.setenv("CHECKS_GRADE_SANDBOX", "off")
    second = grade.grade_in_worker(Path("ada.ipynb"), Path("released.ipynb"), options)
    assert (second.score, second.max_score, second.sandboxed) == (4, 4, False)
    assert second.path == "ada.ipynb"                     # reported as the grader was given it
    monkeypatch.setattr(options, "font_list", {})         # no list: the kernel finds none
    third = grade.grade_in_worker(Path("ada.ipynb"), Path("released.ipynb"), options)
    assert (third.score, third.max_score) == (3, 4)
