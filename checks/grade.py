"""``python -m checks grade SUBMISSION... --reference RELEASED.ipynb``: score submitted notebooks.

A *graded cell* is a code cell with nbgrader metadata ``{grade: true, points: N, grade_id}``
(``python -m checks assign`` and ``nbgrader generate_assignment`` both keep it).  A graded cell
earns its points when it runs without an error in a fresh kernel that runs the submission from
the top.  Student code is hostile, so each submission is graded **sealed off**:

- **A private copy.** The submission is copied into a temporary folder of its own; the kernel
  starts there, with a minimal environment, and never sees the class folder.  Its process group
  and every process below it are killed afterwards.
- **Limits** (``--memory``, ``--cpu-time``, ``--processes``, ``--file-size``): a huge
  allocation is a ``MemoryError``, a busy loop is stopped, a fork bomb or a disk-filling loop
  ends the kernel (the cell is ``crashed``, with the reason).
- **bubblewrap.** When ``bwrap`` works (Debian package ``bubblewrap``), the kernel runs inside
  it: read-only system, no network, its own PID namespace, a private ``/tmp``, nothing of the
  machine but Python, the packages and the submission's copy (:mod:`checks.grade_sandbox`).
  Required for a real class; ``--no-sandbox`` (or ``CHECKS_GRADE_SANDBOX=off``) runs without it,
  and every report says which it was.
- **A process per submission.** Each submission is graded by a grading process of its own
  (``--jobs`` of them at once), forked from a server that has imported the grader once; a
  kernel that kills its grader takes only its own grade with it.  The grading process hands
  back its result signed with a key only the main process knows.
- **Integrity probes** (:mod:`checks.grade_probe`) before and after each graded cell: the
  harness, numpy's comparisons, the builtins, IPython's transformers and the kernel's message
  handling are the installed originals, and known-bad checks still fail.  A graded layer built
  on ``cnn_lessons`` (the answer key) is flagged: one that subclasses it, names it, or reads a
  name the notebook imports from it that the teacher's solution does not read (``assign``
  records those in the notebook's metadata, ``answer_key_uses``).  A flagged cell scores 0
  and the submission is listed for review.
- **The graded cells come from the reference** (``--reference``: the released notebook or the
  teacher's): matched by ``grade_id``, their source and points restored.  Without a reference
  the grade is *provisional*: the submission's own graded cells were run, and any cell whose
  checksum does not match is ``tampered`` (a checksum anyone can recompute proves little).

Only the cells the graded cells need run (``--run-all`` runs every cell, as nbgrader does): a
cell is run when it is a solution, graded or locked cell, cannot be analysed, or defines or
changes a name that a later cell that runs reads.  The book's long training cells are skipped.

Statuses: ``passed``, ``failed`` (an ``AssertionError``), ``error`` (any other exception),
``timeout``, ``crashed``, ``not-run``, ``missing``, ``tampered``, ``flagged``.  Only ``passed``
scores.  Reports: the text or ``--json`` on standard output, ``--feedback DIR`` (one Markdown
file per submission) and ``--gradebook FILE.csv`` (one row per submission; grading one student
again updates that row).

Exit status: 0 when every submission was graded (whatever the scores), 2 when one could not be
(not a notebook, bad metadata, wrong chapter, an empty folder, a grader that died), named on
standard error while the others are still graded.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import copy
import csv
import functools
import hashlib
import hmac
import io
import json
import logging
import math
import multiprocessing
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat

from . import grade_probe, grade_sandbox
from .assign import checksum, is_graded, is_locked, nbgrader_meta
from .report import table

PROG = "python -m checks grade"
MESSAGE_CHARS = 300            # longest message kept for a cell
INTERRUPT_GRACE = 5.0          # seconds an interrupted cell gets to stop before a new kernel
STARTUP_TIMEOUT = 60           # seconds for a kernel to start
PROBE_TIMEOUT = 30             # seconds for an integrity probe
MAX_POINTS = 1000              # more points than this in one cell is a mistake in the metadata

STATUSES = ("passed", "failed", "error", "timeout", "crashed", "not-run", "missing", "tampered",
            "flagged")


class UnusableInput(Exception):
    """A submission or reference that cannot be graded; the message is one line."""


@dataclass
class CellResult:
    """The grade of one graded cell."""

    grade_id: str
    score: float
    max_score: float
    status: str
    message: str = ""


@dataclass
class Grade:
    """The grade of one submission."""

    path: str
    cells: list[CellResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)   # things the teacher should know
    flags: list[str] = field(default_factory=list)   # reasons to review: cheating suspected
    seconds: float = 0.0
    sandboxed: bool = False
    reference: bool = False
    problem: str = ""                                # why it could not be graded at all

    @property
    def score(self) -> float:
        return sum(cell.score for cell in self.cells)

    @property
    def max_score(self) -> float:
        return sum(cell.max_score for cell in self.cells)

    @property
    def review(self) -> bool:
        return bool(self.flags)

    def to_dict(self) -> dict:
        return {"path": self.path, "score": self.score, "max_score": self.max_score,
                "cells": [asdict(cell) for cell in self.cells], "notes": self.notes,
                "flags": self.flags, "review": self.review, "sandboxed": self.sandboxed,
                "reference": self.reference, "problem": self.problem,
                "seconds": round(self.seconds, 2)}

    @classmethod
    def from_dict(cls, data: dict) -> "Grade":
        grade = cls(str(data["path"]), [CellResult(**c) for c in data.get("cells", [])],
                    list(data.get("notes", [])), list(data.get("flags", [])),
                    float(data.get("seconds", 0)), bool(data.get("sandboxed")),
                    bool(data.get("reference")), str(data.get("problem", "")))
        return grade

    def __str__(self) -> str:
        if self.problem:
            return f"{self.path}: not graded: {self.problem}"
        header = ["graded cell", "points", "status", "message"]
        body = [[c.grade_id, f"{fmt(c.score)} / {fmt(c.max_score)}", c.status, c.message]
                for c in self.cells]
        body.append(["total", f"{fmt(self.score)} / {fmt(self.max_score)}", "", ""])
        how = "sandboxed" if self.sandboxed else "NOT sandboxed"
        lines = [f"{self.path}: {fmt(self.score)} / {fmt(self.max_score)} points "
                 f"({self.seconds:.1f} s, {how})"]
        lines += ["  " + line for line in table(header, body)]
        lines += [f"  REVIEW: {flag}" for flag in self.flags]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def fmt(points: float) -> str:
    """``2`` for 2.0, ``1.5`` for 1.5."""
    return str(int(points)) if float(points).is_integer() else f"{points:g}"


def shorten(text: str, limit: int = MESSAGE_CHARS) -> str:
    """One line of at most ``limit`` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------
# Reading notebooks

def read_notebook(path) -> nbformat.NotebookNode:
    """The notebook at ``path`` (nbformat 4); :class:`UnusableInput` with a sentence otherwise."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except IsADirectoryError:
        raise UnusableInput(f"{path}: is a folder, not a notebook") from None
    except OSError as err:
        raise UnusableInput(f"{path}: cannot read it ({err.strerror or err})") from None
    except UnicodeDecodeError:
        raise UnusableInput(f"{path}: not a notebook (not UTF-8 text)") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise UnusableInput(f"{path}: not a notebook (invalid JSON: {err.msg}, line "
                            f"{err.lineno})") from None
    except RecursionError:
        raise UnusableInput(f"{path}: not a notebook (JSON nested too deeply)") from None
    if not (isinstance(data, dict) and isinstance(data.get("cells"), list)
            and data.get("nbformat") == 4):
        raise UnusableInput(f"{path}: not a Jupyter notebook in format 4 (expected a JSON object "
                            f"with 'cells' and 'nbformat': 4)")
    try:
        nb = nbformat.from_dict(data)           # no validation: it would log to stderr
        if not isinstance(nb.get("metadata", {}), dict):
            nb.metadata = nbformat.NotebookNode()
        nb.setdefault("metadata", nbformat.NotebookNode())
        for cell in nb.cells:
            if not isinstance(cell, dict) or cell.get("cell_type") not in ("code", "markdown",
                                                                             "raw"):
                raise TypeError("a cell is not a code, markdown or raw cell")
            if not isinstance(cell.get("metadata", {}), dict):
                cell["metadata"] = nbformat.NotebookNode()
            cell.setdefault("metadata", nbformat.NotebookNode())
            if cell.cell_type == "code":
                cell.setdefault("outputs", [])
                cell.setdefault("execution_count", None)
            source = cell.get("source", "")
            if isinstance(source, list) and all(isinstance(s, str) for s in source):
                source = "".join(source)
            if not isinstance(source, str):
                raise TypeError("a cell's source is not text")
            cell.source = source
    except Exception as err:
        raise UnusableInput(f"{path}: not a usable notebook ({shorten(err, 120)})") from None
    return nb


def role(nb) -> str:
    """``"teacher"``, ``"student"`` or ``""``: what ``assign`` wrote into the notebook."""
    meta = nb.get("metadata", {}).get("checks")
    return str(meta.get("role", "")) if isinstance(meta, dict) else ""


def is_teacher_notebook(path: Path, nb=None) -> bool:
    """The teacher's notebook (the answer key): marked so by ``assign``, or named like it."""
    if path.name.endswith("-solution.ipynb"):
        return True
    if nb is None:
        try:
            nb = read_notebook(path)
        except UnusableInput:
            return False
    return role(nb) == "teacher"


def valid_points(value, where: str) -> float:
    """Points as a float from 0 to :data:`MAX_POINTS`; :class:`UnusableInput` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 <= value <= MAX_POINTS:
        raise UnusableInput(f"{where}: points must be a number from 0 to {MAX_POINTS}, "
                            f"got {shorten(repr(value), 40)}")
    return float(value)


def graded_cells(nb, path) -> dict[str, tuple[int, float]]:
    """``{grade_id: (cell index, points)}`` of the graded cells, in order; a duplicate
    grade_id or bad points are :class:`UnusableInput` naming the cell."""
    found = {}
    for index, cell in enumerate(nb.cells):
        meta = cell.get("metadata", {}).get("nbgrader")
        if cell.cell_type != "code" or meta is None:
            continue
        where = f"{path}: code cell {index}"
        if not isinstance(meta, dict):
            raise UnusableInput(f"{where}: its nbgrader metadata is not a mapping "
                                f"({type(meta).__name__})")
        if not is_graded(cell):
            continue
        grade_id = meta.get("grade_id")
        if not isinstance(grade_id, str) or not re.fullmatch(r"[\w-]+", grade_id):
            raise UnusableInput(f"{where}: a graded cell needs a grade_id of letters, digits, "
                                f"'-' and '_', got {shorten(repr(grade_id), 40)}")
        if grade_id in found:
            raise UnusableInput(f"{where}: grade_id {grade_id!r} is also used by code cell "
                                f"{found[grade_id][0]} (each graded cell needs its own)")
        found[grade_id] = (index, valid_points(meta.get("points"), f"{where} ({grade_id})"))
    return found


def manifest(nb) -> dict[str, float]:
    """``{grade_id: points}`` that ``assign`` recorded in the notebook's metadata, or {}."""
    meta = nb.get("metadata", {}).get("checks")
    graded = meta.get("graded") if isinstance(meta, dict) else None
    if not isinstance(graded, dict):
        return {}
    return {str(k): v for k, v in graded.items()}


@dataclass
class Plan:
    nb: object                                # the notebook to run
    graded: dict                              # grade_id -> (cell index, points)
    decided: dict                             # grade_id -> CellResult (missing, tampered)
    order: list                               # grade_ids in report order
    notes: list
    flags: list
    solution: set                             # indices of student-written cells
    answers: set                              # of those, the solution cells (always run)
    locked: set                               # indices of graded and locked cells
    imported: set                             # (name, module, attr) the reference imports


def _cell_key(cell):
    meta = nbgrader_meta(cell)
    if meta and meta.get("grade_id"):
        return str(meta["grade_id"])
    return None


def prepare(nb, path, reference=None) -> Plan:
    """Which cells to run, which to grade and how, what to flag (see the module's doc)."""
    nb = copy.deepcopy(nb)
    decided, notes, flags = {}, [], []
    if reference is not None:
        ref_graded = graded_cells(reference, "reference")
        if role(nb) and role(reference) and nb.metadata["checks"].get("chapter") \
                and reference.metadata["checks"].get("chapter") \
                and nb.metadata["checks"]["chapter"] != reference.metadata["checks"]["chapter"]:
            raise UnusableInput(f"{path}: wrong chapter: this notebook is "
                                f"{nb.metadata['checks']['chapter']!r}, the reference "
                                f"{reference.metadata['checks']['chapter']!r}")
        by_id, by_cell_id, seen = {}, {}, {}
        for index, cell in enumerate(nb.cells):
            key = _cell_key(cell) if cell.cell_type == "code" else None
            if key is not None:
                if key in seen and key in ref_graded:
                    raise UnusableInput(f"{path}: code cell {index}: grade_id {key!r} is also "
                                        f"used by code cell {seen[key]}")
                seen[key] = index
                by_id.setdefault(key, index)
            if cell.get("id"):
                by_cell_id.setdefault(str(cell["id"]), index)
        if ref_graded and not set(ref_graded) & (set(by_id) | set(by_cell_id)):
            raise UnusableInput(f"{path}: wrong chapter: none of the reference's graded cells "
                                f"({', '.join(list(ref_graded)[:3])}, ...) is in it")
        plan, restored, locked, solution = {}, 0, set(), set()
        matched = set()
        for ref_index, ref_cell in enumerate(reference.cells):
            meta = nbgrader_meta(ref_cell)
            if ref_cell.cell_type != "code" or not is_locked(ref_cell):
                continue
            grade_id = str(meta.get("grade_id"))
            index = by_id.get(grade_id)
            if index is None and ref_cell.get("id"):
                index = by_cell_id.get(str(ref_cell["id"]))
                if index is not None and index not in matched:
                    notes.append(f"code cell {index} had lost its nbgrader metadata; it was "
                                 f"matched to {grade_id!r} by its cell id")
            if index is None or index in matched:
                if grade_id in ref_graded:
                    decided[grade_id] = CellResult(grade_id, 0.0, ref_graded[grade_id][1],
                                                   "missing", "not in the submission (deleted?)")
                continue
            matched.add(index)
            cell = nb.cells[index]
            if cell.source != ref_cell.source:
                restored += 1
            cell.source = ref_cell.source
            cell.metadata["nbgrader"] = copy.deepcopy(meta)
            locked.add(index)
            if grade_id in ref_graded:
                plan[grade_id] = (index, ref_graded[grade_id][1])
        # cells the submission marks as graded but the reference does not grade run as
        # ordinary code and earn nothing
        for index, cell in enumerate(nb.cells):
            meta = nbgrader_meta(cell)
            if index not in locked and meta and meta.get("grade"):
                meta["grade"] = False
            if index not in locked and meta and meta.get("solution"):
                solution.add(index)
        ref_ids = {str(nbgrader_meta(c).get("grade_id")) for c in reference.cells
                   if nbgrader_meta(c) and nbgrader_meta(c).get("solution")}
        ref_sources = {c.source for c in reference.cells if c.cell_type == "code"
                       and not (nbgrader_meta(c) and nbgrader_meta(c).get("solution"))}
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code" or index in locked:
                continue
            if _cell_key(cell) in ref_ids or cell.source not in ref_sources:
                solution.add(index)                   # written, changed or added by the student
        if restored:
            notes.append(f"{restored} graded or locked cell(s) had been edited; their source "
                         f"was restored from the reference")
        order = list(ref_graded)
        imported = set()
        for cell in reference.cells:
            if cell.cell_type == "code":
                imported |= grade_probe.import_bindings(cell.source)
        for grade_id in order:
            if grade_id in plan:
                continue
            decided.setdefault(grade_id, CellResult(grade_id, 0.0, ref_graded[grade_id][1],
                                                    "missing", "not in the submission"))
    else:
        plan = graded_cells(nb, path)
        locked = {i for i, c in enumerate(nb.cells) if c.cell_type == "code" and is_locked(c)}
        solution = {i for i, c in enumerate(nb.cells) if c.cell_type == "code"
                    and i not in locked and (nbgrader_meta(c) or {}).get("solution")}
        for grade_id, (index, points) in plan.items():
            stored = nbgrader_meta(nb.cells[index]).get("checksum")
            if stored and stored != checksum(nb.cells[index]):
                decided[grade_id] = CellResult(
                    grade_id, 0.0, points, "tampered",
                    "the cell was edited after release (checksum mismatch); "
                    "grade with --reference to restore it")
                flags.append(f"graded cell {grade_id} was edited after release")
            elif not stored:
                notes.append(f"{grade_id}: no checksum to tell whether it was edited")
        recorded = manifest(nb)
        for grade_id, points in recorded.items():
            if grade_id not in plan:
                decided[grade_id] = CellResult(grade_id, 0.0, valid_points(points, f"{path}: "
                                               f"metadata 'checks'"), "missing",
                                               "released as a graded cell, not graded here "
                                               "(deleted, or its metadata changed)")
                flags.append(f"graded cell {grade_id} was deleted or un-graded")
            elif plan[grade_id][1] != points:
                flags.append(f"{grade_id}: worth {fmt(plan[grade_id][1])} points here, "
                             f"released with {points}")
        order = list(plan) + [g for g in recorded if g not in plan]
        imported = set()
        for index in locked:
            imported |= grade_probe.import_bindings(nb.cells[index].source)
        notes.append("graded without --reference: the graded cells are the submission's own, "
                     "so this grade is provisional")
    if not plan and not decided:
        whose = "the reference has" if reference is not None else "has"
        raise UnusableInput(f"{path}: {whose} no graded cells (code cells with nbgrader "
                            f"metadata grade: true)")
    solution_ids = set()
    if reference is not None:
        solution_ids = {str(nbgrader_meta(c).get("grade_id")) for c in reference.cells
                        if nbgrader_meta(c) and nbgrader_meta(c).get("solution")}
    graded_code = {i for i, _ in plan.values()} | {
        i for i in solution if reference is None or _cell_key(nb.cells[i]) in solution_ids}
    relevant = set()
    for index in graded_code:                    # the names they read from other cells
        analysis = _analyse(nb.cells[index].source, set())
        relevant |= analysis[1] if analysis else grade_probe.used_names(nb.cells[index].source)
    # names the notebook imports from cnn_lessons (the answer key) that no solution needs
    key_names = grade_probe.answer_key_names(imported)
    uses = ((reference if reference is not None else nb).metadata.get("checks") or {}).get(
        "answer_key_uses")
    own = set()                          # what the student defines with def or class
    for index in solution:
        own |= grade_probe.defined_names(nb.cells[index].source, assignments=False)
    for index in sorted(solution):
        source = nb.cells[index].source
        if index not in graded_code and not (grade_probe.defined_names(source) & relevant):
            continue                 # an added cell that the graded code does not use
        if isinstance(uses, dict):
            allowed = uses.get(_cell_key(nb.cells[index]))
            allowed = set(allowed) if isinstance(allowed, list) else set()
            handed = sorted((grade_probe.used_names(source) & key_names) - allowed - own)
            if handed:
                flags.append(f"code cell {index} ({_cell_key(nb.cells[index]) or 'added'}) uses "
                             f"{', '.join(handed)} from cnn_lessons, the installed answer key, "
                             f"which the solution does not need")
        if grade_probe.mentions_answer_key(source):
            ref_mentions = False
            if reference is not None:
                key = _cell_key(nb.cells[index])
                ref_mentions = any(_cell_key(c) == key and key is not None
                                   and grade_probe.mentions_answer_key(c.source)
                                   for c in reference.cells)
            if not ref_mentions:
                flags.append(f"code cell {index} ({_cell_key(nb.cells[index]) or 'added'}) uses "
                             f"cnn_lessons, the installed answer key")
    answers = {i for i in solution
               if (nbgrader_meta(nb.cells[i]) or {}).get("solution")
               and (reference is None or _cell_key(nb.cells[i]) in solution_ids)}
    return Plan(nb, plan, decided, order, notes, flags, solution, answers, locked, imported)


# --------------------------------------------------------------------------------------------
# Which cells a graded cell needs

# Array methods that return a new value and change nothing (a call of any other method may
# change its object, e.g. a generator's state or a list).
_READ_ONLY = {"astype", "copy", "reshape", "transpose", "ravel", "flatten", "tolist", "item",
              "sum", "mean", "std", "var", "max", "min", "argmax", "argmin", "any", "all",
              "round", "clip", "squeeze", "swapaxes", "nonzero", "cumsum", "prod", "dot",
              "view", "get", "keys", "values", "items", "format", "startswith", "endswith",
              "split", "join", "strip", "replace", "lower", "upper", "count", "index"}
_PURE_CALLEES = {"print", "len", "isinstance", "str", "repr", "type", "float", "int", "bool",
                 "list", "tuple", "dict", "set", "range", "zip", "enumerate", "sorted", "abs",
                 "max", "min", "sum", "round", "any", "all", "hasattr", "id", "hash"}
_PURE_MODULES = ("numpy", "checks", "math")     # functions that do not change their arguments
_DYNAMIC = re.compile(r"\b(globals|locals|vars|exec|eval|setattr|delattr|__import__|"
                      r"get_ipython|importlib)\b")


def _cell_python(source: str) -> str | None:
    """The cell as plain Python (IPython's magics turned into calls), or None."""
    from IPython.core.inputtransformer2 import TransformerManager

    try:
        return TransformerManager().transform_cell(source)
    except Exception:
        return None


def _analyse(source: str, imports: set[str], pure: set[str] = frozenset()):
    """``(defines, uses)`` of a cell, over-approximated; None when it cannot be analysed."""
    import ast

    text = _cell_python(source)
    if text is None or _DYNAMIC.search(text):
        return None
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return None
    defines, uses = set(), set()

    def base(node):
        while isinstance(node, (ast.Attribute, ast.Subscript, ast.Starred)):
            node = node.value
        return node.id if isinstance(node, ast.Name) else None

    class Reads(ast.NodeVisitor):
        """The names the cell reads before it binds them itself (in evaluation order)."""

        def __init__(self):
            self.bound = set()

        def visit_Name(self, node):
            if isinstance(node.ctx, ast.Load):
                if node.id not in self.bound:
                    uses.add(node.id)
            else:
                self.bound.add(node.id)

        def visit_Assign(self, node):
            self.visit(node.value)
            for target in node.targets:
                self.visit(target)

        def visit_AugAssign(self, node):
            self.visit(node.value)
            name = base(node.target)
            if name and name not in self.bound:
                uses.add(name)
            self.visit(node.target)

        def visit_AnnAssign(self, node):
            if node.value is not None:
                self.visit(node.value)
            self.visit(node.target)

        def visit_For(self, node):
            self.visit(node.iter)
            self.visit(node.target)
            for child in node.body + node.orelse:
                self.visit(child)

        def _function(self, node):
            name = getattr(node, "name", None)          # a lambda has none
            outer = set(self.bound) | ({name} if name else set())
            self.bound = outer | {a.arg for a in ast.walk(node.args) if isinstance(a, ast.arg)}
            for child in ast.iter_child_nodes(node):
                self.visit(child)
            self.bound = outer

        visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

        def visit_ClassDef(self, node):
            for child in node.bases + node.keywords + node.decorator_list:
                self.visit(child)
            self.bound.add(node.name)
            for child in node.body:
                self.visit(child)

        def _comprehension(self, node):
            outer = set(self.bound)
            for generator in node.generators:
                self.visit(generator.iter)
                self.visit(generator.target)
                for condition in generator.ifs:
                    self.visit(condition)
            for part in ("elt", "key", "value"):
                if hasattr(node, part):
                    self.visit(getattr(node, part))
            self.bound = outer

        visit_ListComp = visit_SetComp = visit_GeneratorExp = visit_DictComp = _comprehension

        def visit_Import(self, node):
            for alias in node.names:
                self.bound.add(alias.asname or alias.name.split(".")[0])

        visit_ImportFrom = visit_Import

    Reads().visit(tree)

    def module_level(root):
        """The nodes that run when the cell runs, not those inside a def, lambda or class
        body (their names are local) or a comprehension."""
        todo = [root]
        while todo:
            node = todo.pop()
            yield node
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda,
                                 ast.ClassDef, ast.ListComp, ast.SetComp, ast.DictComp,
                                 ast.GeneratorExp)):
                if not isinstance(node, (ast.Lambda, ast.ListComp, ast.SetComp,
                                         ast.DictComp, ast.GeneratorExp)):
                    todo += node.decorator_list
                continue
            todo += list(ast.iter_child_nodes(node))

    for node in ast.walk(tree):
        if isinstance(node, ast.Global):
            defines.update(node.names)
    for node in module_level(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            defines.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defines.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                defines.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            defines.update(node.names)
        elif isinstance(node, (ast.Attribute, ast.Subscript)) and \
                isinstance(node.ctx, (ast.Store, ast.Del)):
            name = base(node)
            if name:
                defines.add(name)
                uses.add(name)
        elif isinstance(node, ast.Call):
            # a call may change what it is given, and a method may change its object
            if isinstance(node.func, ast.Attribute) and node.func.attr not in _READ_ONLY:
                name = base(node.func.value)
                if name and name not in imports:
                    defines.add(name)
            callee = base(node.func)
            if callee in _PURE_CALLEES or callee in pure:
                continue                 # numpy, the harness and these builtins leave it be
            for arg in list(node.args) + [k.value for k in node.keywords]:
                name = base(arg)
                if name and name not in imports:
                    defines.add(name)
    return defines, uses


def needed_cells(nb, always: set[int]) -> list[int]:
    """Indices of the code cells to run, in order: those in ``always``, those that cannot be
    analysed, and those that define or change a name that a later cell to run reads."""
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.source.strip()]
    imports, pure = set(), set()
    for i in code:
        for name, module, _ in grade_probe.import_bindings(nb.cells[i].source):
            imports.add(name)
            if module.split(".")[0] in _PURE_MODULES:
                pure.add(name)
    run, needed = [], set()
    for i in reversed(code):
        analysis = _analyse(nb.cells[i].source, imports, pure)
        if i in always or analysis is None or analysis[0] & needed:
            run.append(i)
            if analysis is None:
                continue
            needed |= analysis[1]
    return sorted(run)


# --------------------------------------------------------------------------------------------
# Running the cells

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_ARROW = re.compile(r"^-*>\s*(\d+)\s?(.*)$")
_CELL_LINE = re.compile(r"Cell In\[\d+\], line (\d+)")


def error_message(content: dict) -> str:
    """``"AssertionError: ... (line 4: assert report.ok)"`` from an ``execute_reply``."""
    ename = str(content.get("ename") or "Error")
    evalue = str(content.get("evalue") or "")
    evalue = re.sub(r"\s*\(\d+\.py, line \d+\)$", "", evalue)     # SyntaxError's temp file
    lines = _ANSI.sub("", "\n".join(map(str, content.get("traceback") or []))).splitlines()
    where = ""
    for line in lines:                   # the first frame is the cell's own
        arrow = _ARROW.match(line.strip())
        if arrow:
            where = f"line {arrow.group(1)}: {arrow.group(2).strip()}"
            break
    if not where:
        match = next((m for m in map(_CELL_LINE.search, lines) if m), None)
        where = f"line {match.group(1)}" if match else ""
    text = f"{ename}: {shorten(evalue, 200)}" if evalue else ename
    return shorten(f"{text} ({where})" if where else text)


def _death_text(code) -> str:
    if code is None:
        return "the kernel died"
    if 128 < code < 128 + 65:            # the sandbox reports a signal as 128 + its number
        code = 128 - code
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        if name == "SIGXCPU":
            return "the kernel used up its processor time (--cpu-time) and was killed"
        return f"the kernel was killed by {name}"
    return f"the kernel exited with status {code}"


def kernel_specs(argv: list[str]):
    """A kernel spec manager whose every kernel runs ``argv``."""
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager

    class Sealed(KernelSpecManager):
        def get_kernel_spec(self, kernel_name):
            return KernelSpec(argv=argv, display_name="grading kernel", language="python")

    return Sealed()


@dataclass
class Outcome:
    status: str            # ok, error, timeout, crashed, not-run
    message: str = ""


_QUIET = logging.getLogger("checks.grade.kernel")   # nbclient's log: timeouts are reported
_QUIET.addHandler(logging.NullHandler())            # in the grade, not on stderr
_QUIET.propagate = False


def _client_class():
    """nbclient's NotebookClient, keeping no output and cleaning up after a timeout."""
    from nbclient import NotebookClient

    class Client(NotebookClient):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.pollers = set()

        def output(self, outs, msg, display_id, cell_index):
            return None                      # a cell's error comes with its execute_reply

        async def _async_poll_output_msg(self, parent_msg_id, cell, cell_index):
            # After a timeout nbclient leaves this task running, and it would then eat the
            # messages of the next cells; keep a handle so that it can be cancelled.
            task = asyncio.current_task()
            self.pollers.add(task)
            try:
                return await super()._async_poll_output_msg(parent_msg_id, cell, cell_index)
            finally:
                self.pollers.discard(task)

        def cancel_pollers(self):
            for task in list(self.pollers):
                task.cancel()
            self.pollers.clear()

    return Client


@dataclass
class Options:
    """How to grade: limits, sandbox, probes."""

    timeout: float = 60
    total_timeout: float = 600
    kernel_name: str | None = None
    sandbox: bool | None = None          # None: bubblewrap when available and not disabled
    require_sandbox: bool = False
    limits: grade_sandbox.Limits = field(default_factory=grade_sandbox.Limits)
    run_all: bool = False
    probes: bool = True
    fingerprints: dict | None = None     # the grader's, computed once for all workers
    font_list: dict | None = None        # matplotlib's, likewise (grade_sandbox)


class Runner:
    """Runs the code cells of one notebook in a sealed kernel, surviving loops and crashes."""

    def __init__(self, nb, work: Path, options: Options, sandboxed: bool):
        self.cells = [c for c in nb.cells]
        self.probe_cell = nbformat.v4.new_code_cell("pass")
        notebook = nbformat.v4.new_notebook(cells=self.cells + [self.probe_cell],
                                            metadata=copy.deepcopy(nb.metadata))
        self.client = _client_class()(notebook, timeout=options.timeout, allow_errors=True,
                                      log=_QUIET, startup_timeout=STARTUP_TIMEOUT,
                                      iopub_timeout=2, raise_on_iopub_timeout=False)
        self.client.on_cell_executed = self._record
        self.work, self.options, self.sandboxed = work, options, sandboxed
        self.timeout = options.timeout
        self.deadline = time.monotonic() + options.total_timeout
        self.total_timeout = options.total_timeout
        self.reply = None
        self.km = None
        self.kernel_pid = None
        self.killed_because = ""
        self.watchdog = None
        self.kernels = 0
        self.all_pids: set[int] = set()

    def _record(self, cell, cell_index, execute_reply):
        self.reply = execute_reply

    def _argv(self, connection_dir: Path) -> list[str]:
        if self.options.kernel_name:
            from jupyter_client.kernelspec import KernelSpecManager

            spec = KernelSpecManager().get_kernel_spec(self.options.kernel_name)
            launch = [sys.executable, "-I", "-S", str(grade_sandbox.LAUNCHER),
                      self.options.limits.as_launch_json(), "--"]
            return launch + list(spec.argv)
        return grade_sandbox.kernel_command(self.work, connection_dir, self.options.limits,
                                            self.sandboxed)

    async def start(self):
        from jupyter_client import AsyncKernelManager

        self.kernels += 1
        connection_dir = Path(tempfile.mkdtemp(prefix="k", dir=self.work.parent))
        argv = self._argv(connection_dir)
        self.km = AsyncKernelManager(kernel_name="python3", transport="ipc",
                                     ip=str(connection_dir / "s"),
                                     connection_file=str(connection_dir / "kernel.json"),
                                     kernel_spec_manager=kernel_specs(argv))
        env = grade_sandbox.kernel_environment(self.work, self.sandboxed)
        await self.km.start_kernel(cwd=str(self.work), env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        process = getattr(self.km.provisioner, "process", None)
        self.kernel_pid = process.pid if process is not None else None
        if self.kernel_pid:
            self.all_pids.add(self.kernel_pid)
        self.client.km = self.km
        await self.client.async_start_new_kernel_client()
        self.watchdog = asyncio.ensure_future(self._watch())

    async def _watch(self):
        """Kill the kernel when it runs more processes than allowed (a fork bomb as root,
        where the process rlimit does not apply)."""
        limit = self.options.limits.processes
        while limit and self.kernel_pid:
            await asyncio.sleep(0.25)
            if len(grade_sandbox.descendants(self.kernel_pid)) > limit + 4:
                self.killed_because = (f"the kernel started more than {limit} processes "
                                       f"(--processes)")
                self._kill_tree()
                return

    def _kill_tree(self):
        pid = self.kernel_pid
        if not pid:
            return
        grade_sandbox.kill_everything_below(pid)
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass

    async def stop(self):
        km, kc = self.km, self.client.kc
        self.km = self.client.km = self.client.kc = None
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None
        try:
            if kc is not None:
                kc.stop_channels()
            if km is not None and not self.killed_because:
                # asked first, so that the sandbox ends in order (and its processor time is
                # counted); whatever is left a moment later is killed
                km.shutdown_wait_time = 2
                await asyncio.wait_for(km.shutdown_kernel(now=False), 5)
        except Exception:
            pass
        finally:
            self._kill_tree()
            if km is not None:
                try:
                    await km.shutdown_kernel(now=True)
                except Exception:
                    pass
            self.kernel_pid = None

    async def execute(self, index, timeout=None) -> Outcome:
        """Run cell ``index`` (``-1``: a trivial probe) and say how it went."""
        from nbclient.exceptions import CellTimeoutError, DeadKernelError

        cell = self.probe_cell if index < 0 else self.cells[index]
        position = len(self.cells) if index < 0 else index
        left = self.deadline - time.monotonic()
        limit = timeout if timeout is not None else self.timeout
        self.client.timeout = max(1, int(min(limit, left) + 0.999))
        self.reply = None
        self.killed_because = ""
        try:
            await self.client.async_execute_cell(cell, position)
        except CellTimeoutError:
            self.client.cancel_pollers()
            if left < limit:
                return Outcome("timeout", f"the notebook's time limit ({fmt(self.total_timeout)}"
                                          f" s in all) ran out in this cell")
            return Outcome("timeout", f"stopped after {fmt(limit)} s (the time limit per cell)")
        except (DeadKernelError, RuntimeError) as err:
            self.client.cancel_pollers()
            if isinstance(err, RuntimeError) and "Kernel died" not in str(err) \
                    and "dead" not in str(err).lower():
                raise
            code = None
            if self.km and self.km.provisioner:
                try:
                    code = await self.km.provisioner.poll()
                except Exception:
                    code = None
            reason = self.killed_because or _death_text(code)
            return Outcome("crashed", f"{reason} while running this cell")
        if self.reply is None:
            return Outcome("ok")
        content = self.reply.get("content", {})
        if content.get("status") == "error":
            message = error_message(content)
            if content.get("ename") == "MemoryError":
                message = shorten(f"{message} (the memory limit is "
                                  f"{self.options.limits.memory_mb} MB, --memory)")
            return Outcome("error", message)
        if content.get("status") != "ok":
            return Outcome("error", f"the kernel answered {shorten(content.get('status'), 40)}")
        return Outcome("ok")

    async def probe(self, names, student_names, imported, behaviour: bool):
        """Run the integrity probe silently; ``(report dict or None, problem text)``."""
        kc = self.client.kc
        if kc is None:
            return None, "no kernel to probe"
        code = grade_probe.probe_code(names, student_names, imported, behaviour)
        try:
            msg_id = kc.execute(code, silent=True, store_history=False, allow_stdin=False,
                                user_expressions={grade_probe.RESULT_NAME:
                                                  grade_probe.RESULT_NAME})
            end = time.monotonic() + PROBE_TIMEOUT
            while True:
                left = end - time.monotonic()
                if left <= 0:
                    return None, "the kernel did not answer the integrity probe in time"
                msg = await kc.get_shell_msg(timeout=left)
                if msg.get("parent_header", {}).get("msg_id") == msg_id:
                    break
        except Exception as err:
            return None, f"the integrity probe failed ({type(err).__name__})"
        content = msg.get("content", {})
        if content.get("status") != "ok":
            return None, f"the integrity probe raised {content.get('ename', '')}: " \
                         f"{shorten(content.get('evalue', ''), 120)}"
        result = content.get("user_expressions", {}).get(grade_probe.RESULT_NAME, {})
        try:
            return grade_probe.parse_report(result["data"]["text/plain"]), ""
        except Exception:
            return None, "the integrity probe's answer could not be read"

    async def responsive(self) -> bool:
        """After an interrupt: does the kernel run a trivial cell within the grace period?"""
        try:
            await self.km.interrupt_kernel()
        except Exception:
            return False
        return (await self.execute(-1, timeout=INTERRUPT_GRACE)).status == "ok"

    async def fresh_kernel(self, ran: list[int]) -> bool:
        """A new kernel with the cells in ``ran`` re-run; drops from ``ran`` any that stops the
        kernel again.  False when the time is up first."""
        while time.monotonic() < self.deadline:
            await self.stop()
            await self.start()
            for index in list(ran):
                if time.monotonic() >= self.deadline:
                    return False
                outcome = await self.execute(index)
                if outcome.status in ("timeout", "crashed"):
                    ran.remove(index)
                    break
            else:
                return True
        return False

    async def run(self, indices, graded: set[int], checker=None) -> dict[int, Outcome]:
        """Run the code cells ``indices`` in order; ``{index: Outcome}``.  ``checker(when,
        index)`` (a coroutine) probes the kernel around each graded cell."""
        outcomes, ran = {}, []
        await self.start()
        self.deadline = time.monotonic() + self.total_timeout   # from a running kernel on
        try:
            if checker is not None:
                await checker("start", None)
            for position, index in enumerate(indices):
                if time.monotonic() >= self.deadline:
                    for rest in indices[position:]:
                        outcomes[rest] = Outcome("not-run", "the notebook's time limit "
                                                 f"({fmt(self.total_timeout)} s) ran out before")
                    break
                if checker is not None and index in graded and not (
                        position > 0 and indices[position - 1] in graded and ran
                        and ran[-1] == indices[position - 1]):
                    await checker("before", index)      # unless just probed after a graded cell
                outcome = outcomes[index] = await self.execute(index)
                if checker is not None and index in graded and outcome.status in ("ok",
                                                                                  "error"):
                    await checker("after", index)
                if outcome.status in ("ok", "error"):
                    ran.append(index)
                elif outcome.status == "timeout" and await self.responsive():
                    continue
                elif not await self.fresh_kernel(ran):
                    for rest in indices[position + 1:]:
                        outcomes[rest] = Outcome("not-run", "no time left to restart the kernel")
                    break
                elif checker is not None:
                    await checker("start", None)
        finally:
            await self.stop()
        return outcomes


# --------------------------------------------------------------------------------------------
# Grading one notebook

def _run_sync(coroutine):
    """``asyncio.run``, also from inside a running event loop (a Jupyter kernel)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _use_sandbox(options: Options) -> bool:
    if options.kernel_name:
        return False
    wanted = grade_sandbox.sandbox_wanted(options.sandbox)
    available = wanted and grade_sandbox.sandbox_available()
    if options.require_sandbox and not available:
        raise UnusableInput("bubblewrap (bwrap) is required (--sandbox) but does not work here; "
                            "install the Debian package bubblewrap")
    return available


def grade_notebook(path, *, reference=None, timeout: float = 60, total_timeout: float = 600,
                   kernel_name: str | None = None, options: Options | None = None,
                   scratch: str | None = None) -> Grade:
    """Run the notebook at ``path`` sealed off, in a fresh kernel, and grade its graded cells.

    ``reference``: a notebook (path or NotebookNode) to restore graded and locked cells from.
    Raises :class:`UnusableInput` when the notebook or the reference cannot be used.
    """
    start = time.monotonic()
    path = Path(path)
    if options is None:
        options = Options(timeout=timeout, total_timeout=total_timeout, kernel_name=kernel_name)
    if isinstance(reference, (str, Path)):
        reference = read_notebook(reference)
    original = path.read_bytes() if path.is_file() else None
    plan = prepare(read_notebook(path), path, reference)
    sandboxed = _use_sandbox(options)
    graded_index = {index: grade_id for grade_id, (index, _) in plan.graded.items()}
    always = set(plan.locked) | set(plan.answers) | set(graded_index)
    code = [i for i, c in enumerate(plan.nb.cells) if c.cell_type == "code" and c.source.strip()]
    indices = code if options.run_all else needed_cells(plan.nb, always)
    skipped = len(code) - len(indices)

    expected = options.fingerprints or grade_probe.expected_fingerprints()
    names = list(expected)
    student_names = set()
    for index in plan.solution:
        student_names |= grade_probe.defined_names(plan.nb.cells[index].source)
    graded_uses = set()
    for index in graded_index:
        graded_uses |= grade_probe.used_names(plan.nb.cells[index].source)
    imported = {entry for entry in plan.imported
                if entry[0] in graded_uses and entry[0] not in student_names}
    if options.kernel_name:              # another interpreter: its files are not the grader's
        names = []
    # before a graded cell, the harness, numpy and the builtins; after it, also IPython's and
    # the kernel's classes (a change to those lasts, and the probe after the cell sees it)
    cheap_names = [n for n in names
                   if not n.startswith(("IPython.", "ipykernel.", "jupyter_client."))]
    state = {"baseline": None, "bad": {}, "clean": True}

    async def checker(when, index):
        wanted = {"start": [], "before": cheap_names}.get(when, names)
        report, trouble = await runner.probe(wanted, student_names, imported,
                                             behaviour=when == "after")
        problems = [trouble] if trouble else []
        if report is not None:
            if when == "start":
                state["baseline"] = report.get("baseline")
            problems += grade_probe.compare(report, state["baseline"], expected)
        if index is not None and problems:
            state["bad"].setdefault(index, [])
            for problem in problems:
                if problem not in state["bad"][index]:
                    state["bad"][index].append(problem)

    with (contextlib.nullcontext(scratch) if scratch is not None
          else tempfile.TemporaryDirectory(prefix="checks-grade-")) as scratch:
        work = Path(scratch) / "work"
        work.mkdir()
        os.chmod(scratch, 0o700)
        if original is not None:
            (work / path.name).write_bytes(original)
        for name, text in (options.font_list or {}).items():
            (work / ".matplotlib").mkdir(exist_ok=True)
            (work / ".matplotlib" / Path(name).name).write_text(text, encoding="utf-8")
        runner = Runner(plan.nb, work, options, sandboxed)
        try:
            outcomes = _run_sync(runner.run(indices, set(graded_index),
                                            checker if options.probes else None))
        except UnusableInput:
            raise
        except Exception as err:             # the kernel would not start
            raise UnusableInput(f"{path}: could not run a Python kernel "
                                f"({type(err).__name__}: {shorten(err, 160)})") from None

    grade = Grade(str(path), notes=list(plan.notes), flags=list(plan.flags),
                  sandboxed=sandboxed, reference=reference is not None)
    if skipped:
        grade.notes.append(f"{skipped} code cell(s) that no graded cell needs were not run")
    if not sandboxed:
        grade.notes.append("not sandboxed (no bubblewrap): the submission ran as the teacher, "
                           "next to the teacher's files; use bubblewrap for a class")
    crashes = []
    for index in indices:
        outcome = outcomes.get(index)
        if index not in graded_index and outcome and outcome.status in ("crashed", "timeout"):
            crashes.append((index, outcome))
            grade.notes.append(f"code cell {index} (not graded): {outcome.status}: "
                               f"{outcome.message}; later cells ran in a fresh kernel without it")
    flagged_from = min(state["bad"]) if state["bad"] else None
    for grade_id in plan.order:
        if grade_id in plan.decided and grade_id not in plan.graded:
            grade.cells.append(plan.decided[grade_id])
            continue
        index, points = plan.graded[grade_id]
        outcome = outcomes.get(index, Outcome("not-run", "the cell is empty"))
        if grade_id in plan.decided:                              # tampered
            grade.cells.append(plan.decided[grade_id])
        elif flagged_from is not None and index >= flagged_from:
            problems = state["bad"].get(index) or state["bad"][flagged_from]
            grade.cells.append(CellResult(grade_id, 0.0, points, "flagged",
                                          shorten("integrity check failed: "
                                                  + "; ".join(problems))))
        elif outcome.status == "ok":
            grade.cells.append(CellResult(grade_id, points, points, "passed"))
        else:
            status, message = outcome.status, outcome.message
            if status == "error" and message.startswith("AssertionError"):
                status = "failed"
            earlier = [i for i, _ in crashes if i < index]
            if earlier and status in ("error", "failed"):
                message = shorten(f"{message} [the kernel had {crashes[0][1].status} in code "
                                  f"cell {earlier[-1]}, not graded, before this one]")
            grade.cells.append(CellResult(grade_id, 0.0, points, status, message))
    for index in sorted(state["bad"]):
        for problem in state["bad"][index]:
            text = f"code cell {index} ({graded_index.get(index, '')}): {problem}"
            if text not in grade.flags:
                grade.flags.append(text)
    if plan.flags:
        # a layer built on the answer key: its graded cells earn nothing
        for cell in grade.cells:
            if cell.status == "passed" and any("cnn_lessons" in f for f in plan.flags):
                cell.status, cell.score = "flagged", 0.0
                cell.message = "the student's code uses cnn_lessons, the answer key"
    if original is not None and path.is_file() and path.read_bytes() != original:
        grade.flags.append("the submission's file changed while it was graded")
    grade.seconds = time.monotonic() - start
    return grade


# --------------------------------------------------------------------------------------------
# Grading many notebooks: one grading process each, --jobs at once

def _sign(key: bytes, payload: str) -> str:
    return hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()


def _options_dict(options: Options) -> dict:
    data = asdict(options)
    return data


def _options_from(data: dict) -> Options:
    data = dict(data)
    data["limits"] = grade_sandbox.Limits(**data["limits"])
    return Options(**data)


@functools.cache
def _grading_context():
    """Where grading processes come from: a fork server that has imported the grader once, so
    that each submission's process starts in milliseconds, not the second the imports take
    (``spawn`` where there is no fork server)."""
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    context.set_forkserver_preload(["checks.grade_worker"])
    return context


def worker_main(task: str, connection) -> None:
    """The grading process of one submission: grade the notebook ``task`` (JSON) describes and
    send the result, signed, on ``connection``."""
    os.setsid()                 # a process group of its own, ended with all it started
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):        # nothing reaches the teacher's terminal or the --json output
        os.dup2(devnull, fd)
    task = json.loads(task)
    # the grader's environment now, not the fork server's (multiprocessing already starts
    # the process in the grader's working directory)
    os.environ.clear()
    os.environ.update(task["environ"])
    tempfile.tempdir = None
    key = bytes.fromhex(task["key"])
    grade_sandbox.become_subreaper()
    try:
        reference = read_notebook(task["reference"]) if task.get("reference") else None
        grade = grade_notebook(task["path"], reference=reference,
                               options=_options_from(task["options"]), scratch=task["scratch"])
        payload = json.dumps({"grade": grade.to_dict()})
    except UnusableInput as err:
        payload = json.dumps({"unusable": str(err)})
    except Exception as err:
        payload = json.dumps({"unusable": f"{task['path']}: the grader failed "
                                          f"({type(err).__name__}: {shorten(err, 160)})"})
    finally:
        grade_sandbox.kill_everything_below(os.getpid())
    connection.send_bytes(f"RESULT {_sign(key, payload)} {payload}".encode())
    connection.close()


def prepare_options(options: Options) -> None:
    """Compute once what every grading process of a class shares."""
    if options.probes and options.fingerprints is None:
        options.fingerprints = grade_probe.expected_fingerprints()
    if options.font_list is None:
        options.font_list = grade_sandbox.matplotlib_font_list()


def grade_in_worker(path: Path, reference: Path | None, options: Options) -> Grade:
    """Grade ``path`` in a grading process of its own; a :class:`Grade` with ``problem`` set
    when that process dies or hands back nothing it signed."""
    key = secrets.token_bytes(32)
    prepare_options(options)
    # the grading process's folder, removed here even when a submission has killed it
    scratch = tempfile.mkdtemp(prefix="checks-grade-")
    task = json.dumps({"key": key.hex(), "path": str(path),      # as given: reports show it
                       "reference": str(reference) if reference else None,
                       "options": _options_dict(options), "environ": dict(os.environ),
                       "scratch": scratch})
    limit = options.total_timeout + 4 * STARTUP_TIMEOUT + 60
    start = time.monotonic()
    context = _grading_context()
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=worker_main, args=(task, sender), daemon=True)
    process.start()
    sender.close()
    out = b""
    try:
        if receiver.poll(limit):
            out = receiver.recv_bytes(2**24)
    except (EOFError, OSError):
        pass
    finally:
        receiver.close()
        for pid in grade_sandbox.descendants(process.pid) | {process.pid}:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except OSError:
            pass
        process.join()
        shutil.rmtree(scratch, ignore_errors=True)
    parts = out.decode("utf-8", "replace").split(" ", 2)
    if len(parts) == 3 and parts[0] == "RESULT" and \
            hmac.compare_digest(parts[1], _sign(key, parts[2])):
        data = json.loads(parts[2])
        if "unusable" in data:
            raise UnusableInput(data["unusable"])
        return Grade.from_dict(data["grade"])
    code = process.exitcode
    why = _death_text(code).replace("the kernel", "the grading process")
    grade = Grade(str(path), problem=f"{why} before it finished; grade this notebook again "
                                     f"with bubblewrap installed",
                  seconds=time.monotonic() - start)
    grade.flags.append("the grading process of this submission was killed or sent nothing "
                       "valid (a submission attacking its grader?)")
    return grade


def grade_many(paths, reference: Path | None, options: Options, jobs: int,
               on_result=None) -> list:
    """Grade every notebook in ``paths`` (``jobs`` at once); ``[Grade or UnusableInput]`` in
    the order of ``paths``; ``on_result(i, result)`` as each finishes.

    The grading processes come from a fork server (:mod:`multiprocessing`), so a script that
    calls this must do it under ``if __name__ == "__main__":``.
    """
    results = [None] * len(paths)
    prepare_options(options)

    def one(i):
        try:
            result = grade_in_worker(paths[i], reference, options)
        except UnusableInput as err:
            result = err
        results[i] = result
        if on_result is not None:
            on_result(i, result)

    with concurrent.futures.ThreadPoolExecutor(max(1, jobs)) as pool:
        list(pool.map(one, range(len(paths))))
    return results


# --------------------------------------------------------------------------------------------
# Reports

def feedback_markdown(grade: Grade) -> str:
    """The student's feedback file: every graded cell, its points and message."""
    name = Path(grade.path).name
    lines = [f"# Feedback: {name}", ""]
    if grade.problem:
        return "\n".join(lines + [f"Not graded: {grade.problem}", ""])
    lines += [f"**Score: {fmt(grade.score)} / {fmt(grade.max_score)}**", "",
              "| graded cell | points | status | message |", "| --- | --- | --- | --- |"]
    for c in grade.cells:
        message = c.message.replace("|", "\\|")
        lines.append(f"| `{c.grade_id}` | {fmt(c.score)} / {fmt(c.max_score)} | {c.status} | "
                     f"{message} |")
    lines.append("")
    if grade.flags:
        lines += ["Held for review by the teacher:", ""] + [f"- {f}" for f in grade.flags] + [""]
    if grade.notes:
        lines += ["Notes:", ""] + [f"- {n}" for n in grade.notes] + [""]
    how = "in a sandbox" if grade.sandboxed else "without a sandbox"
    lines.append(f"Graded {how} in {grade.seconds:.1f} s.")
    return "\n".join(lines) + "\n"


def feedback_path(folder: Path, submission: str) -> Path:
    name = re.sub(r"[^\w.-]+", "_", Path(submission).stem) or "submission"
    return folder / f"{name}.md"


GRADEBOOK_FIXED = ["submission", "score", "max_score", "review", "sandboxed", "reference",
                   "problem", "flags"]


def update_gradebook(path: Path, results) -> None:
    """Write the rows of ``results`` into the CSV gradebook at ``path``, replacing the rows of
    the same submissions and keeping every other row (atomically)."""
    from cnn_lessons.files import atomic_write

    rows, columns = {}, list(GRADEBOOK_FIXED)
    if path.exists():
        try:
            with open(path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                for name in reader.fieldnames or []:
                    if name not in columns:
                        columns.append(name)
                for row in reader:
                    rows[row.get("submission", "")] = row
        except (OSError, csv.Error, UnicodeDecodeError) as err:
            raise UnusableInput(f"{path}: cannot read the gradebook ({err})") from None
    for result in results:
        if isinstance(result, UnusableInput):
            where = str(result).split(": ", 1)
            if len(where) == 2 and where[0].endswith(".ipynb"):
                rows[where[0]] = {"submission": where[0], "problem": where[1], "score": "",
                                  "max_score": "", "review": "yes"}
            continue
        row = {"submission": result.path, "score": fmt(result.score),
               "max_score": fmt(result.max_score), "review": "yes" if result.review else "",
               "sandboxed": "yes" if result.sandboxed else "no",
               "reference": "yes" if result.reference else "no",
               "problem": result.problem, "flags": " | ".join(result.flags)}
        for cell in result.cells:
            if cell.grade_id not in columns:
                columns.append(cell.grade_id)
            row[cell.grade_id] = fmt(cell.score)
        rows[result.path] = row
    with atomic_write(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for name in sorted(rows):
            writer.writerow(rows[name])


# --------------------------------------------------------------------------------------------
# Command line

def submissions(paths, skip=(), include_teacher=False) -> tuple[list[Path], list[str],
                                                                   list[str]]:
    """``(notebooks, notes, errors)`` named by ``paths``: files as given, folders searched for
    ``*.ipynb``; teacher notebooks and the files in ``skip`` left out with a note."""
    found, notes, errors = [], [], []
    skip = {Path(s).resolve() for s in skip}
    for name in paths:
        path = Path(name)
        if path.is_dir():
            inside = sorted(p for p in path.rglob("*.ipynb")
                            if ".ipynb_checkpoints" not in p.parts)
            if not inside:
                errors.append(f"{path}: no .ipynb file in this folder")
            found += inside
        else:
            found.append(path)
    kept = []
    for path in found:
        if path.resolve() in skip:
            notes.append(f"{path}: skipped (it is the reference)")
        elif not include_teacher and path.is_file() and is_teacher_notebook(path):
            notes.append(f"{path}: skipped: the teacher's notebook (answer key), not a "
                         f"submission (--include-teacher to grade it)")
        else:
            kept.append(path)
    return kept, notes, errors


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 (no limit) or more, got {text!r}")
    return value


def main(argv=None) -> int:
    defaults = grade_sandbox.Limits()
    parser = _Parser(
        prog=PROG,
        description="Grade submitted notebooks: run each one sealed off (a private copy, "
                    "resource limits, bubblewrap when installed) in a fresh Python kernel and "
                    "score its graded cells (nbgrader metadata grade: true); a graded cell "
                    "earns its points when it runs without an error and the kernel passes the "
                    "integrity probes around it.",
        epilog="Statuses: passed, failed (AssertionError), error, timeout, crashed, not-run, "
               "missing, tampered, flagged. Exit status: 0 every submission graded (whatever "
               "the scores), 2 one could not be (named on standard error).")
    parser.add_argument("paths", nargs="+", metavar="SUBMISSION",
                        help="a submitted .ipynb, or a folder searched for them (teacher "
                             "notebooks and the reference are skipped)")
    parser.add_argument("--reference", metavar="NOTEBOOK",
                        help="the released notebook (or the teacher's): graded and locked cells "
                             "are restored from it by grade_id. Always give it for a class: "
                             "without it the grade is provisional")
    parser.add_argument("--timeout", type=_positive, default=60, metavar="SECONDS",
                        help="time limit per cell (default 60)")
    parser.add_argument("--total-timeout", type=_positive, default=600, metavar="SECONDS",
                        help="time limit for a whole notebook (default 600)")
    parser.add_argument("--jobs", type=_count, default=os.cpu_count() or 1, metavar="N",
                        help="notebooks graded at once (default: every core, here "
                             f"{os.cpu_count() or 1})")
    parser.add_argument("--memory", type=_count, default=defaults.memory_mb, metavar="MB",
                        help=f"memory per kernel (default {defaults.memory_mb}; 0: no limit)")
    parser.add_argument("--cpu-time", type=_count, default=defaults.cpu_seconds,
                        metavar="SECONDS", help="processor time per kernel (default "
                                                f"{defaults.cpu_seconds}; 0: no limit)")
    parser.add_argument("--processes", type=_count, default=defaults.processes, metavar="N",
                        help=f"processes per kernel (default {defaults.processes}; 0: no limit)")
    parser.add_argument("--file-size", type=_count, default=defaults.file_mb, metavar="MB",
                        help="largest file a kernel may write (default "
                             f"{defaults.file_mb}; 0: no limit)")
    box = parser.add_mutually_exclusive_group()
    box.add_argument("--sandbox", dest="sandbox", action="store_true", default=None,
                     help="require bubblewrap: refuse to grade without it")
    box.add_argument("--no-sandbox", dest="sandbox", action="store_false",
                     help="do not use bubblewrap even when installed (also "
                          "CHECKS_GRADE_SANDBOX=off)")
    parser.add_argument("--run-all", action="store_true",
                        help="run every code cell, also those no graded cell needs")
    parser.add_argument("--include-teacher", action="store_true",
                        help="grade teacher notebooks (*-solution.ipynb) too")
    parser.add_argument("--kernel", metavar="NAME",
                        help="an installed kernel spec (default: this Python; never sandboxed)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object per submission (one per line)")
    parser.add_argument("--feedback", metavar="DIR",
                        help="write one Markdown feedback file per submission into DIR")
    parser.add_argument("--gradebook", metavar="FILE.csv",
                        help="write the scores into this CSV (rows of other submissions kept)")
    args = parser.parse_args(argv)

    options = Options(timeout=args.timeout, total_timeout=args.total_timeout,
                      kernel_name=args.kernel, sandbox=args.sandbox,
                      require_sandbox=args.sandbox is True, run_all=args.run_all,
                      limits=grade_sandbox.Limits(args.memory, args.cpu_time, args.processes,
                                                  args.file_size))
    reference = None
    if args.reference:
        try:
            ref_nb = read_notebook(args.reference)
            graded_cells(ref_nb, "reference")
        except UnusableInput as err:
            print(f"{PROG}: error: reference {err}", file=sys.stderr)
            return 2
        reference = Path(args.reference)
    try:
        _use_sandbox(options)
    except UnusableInput as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    for name, value in (("--feedback", args.feedback), ("--gradebook", args.gradebook)):
        target = Path(value) if value else None
        if target is not None and (target.exists() and (target.is_dir() != (name == "--feedback"))):
            print(f"{PROG}: error: {name} {value}: expected a "
                  f"{'folder' if name == '--feedback' else 'CSV file'}", file=sys.stderr)
            return 2
    found, notes, errors = submissions(args.paths, skip=[reference] if reference else [],
                                       include_teacher=args.include_teacher)
    status = 0
    for note in notes:
        print(f"{PROG}: {note}", file=sys.stderr)
    for error in errors:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        status = 2
    if not found:
        if not errors:
            print(f"{PROG}: error: nothing to grade (only teacher notebooks or the reference)",
                  file=sys.stderr)
        return 2

    def show(i, result):
        try:
            write(i, result)
        except BrokenPipeError:          # the reader went away (| head): keep grading quietly
            sys.stdout = open(os.devnull, "w")

    def write(i, result):
        if isinstance(result, UnusableInput):
            print(f"{PROG}: error: {result}", file=sys.stderr, flush=True)
        elif args.json:
            print(json.dumps(result.to_dict()), flush=True)
        else:
            print(result, end="\n\n", flush=True)
        if args.feedback and isinstance(result, Grade):
            from cnn_lessons.files import atomic_write

            with atomic_write(feedback_path(Path(args.feedback), result.path), "w",
                              encoding="utf-8") as f:
                f.write(feedback_markdown(result))

    import threading
    lock = threading.Lock()
    waiting, shown = {}, [0]

    def locked_show(i, result):
        # reports come out in the order of the submissions, each as soon as it can
        with lock:
            waiting[i] = result
            while shown[0] in waiting:
                show(shown[0], waiting.pop(shown[0]))
                shown[0] += 1

    results = grade_many(found, reference, options, args.jobs, on_result=locked_show)
    grades = [r for r in results if isinstance(r, Grade)]
    if any(isinstance(r, UnusableInput) for r in results) or any(g.problem for g in grades):
        status = 2
    if args.gradebook:
        try:
            update_gradebook(Path(args.gradebook), results)
        except (UnusableInput, OSError) as err:
            print(f"{PROG}: error: {err}", file=sys.stderr)
            status = 2
    try:
        _summary(args, grades, reference)
    except BrokenPipeError:
        sys.stdout = open(os.devnull, "w")
    return status


def _summary(args, grades, reference) -> None:
    if not args.json:
        if len(grades) > 1:
            body = [[g.path, "not graded" if g.problem else
                     f"{fmt(g.score)} / {fmt(g.max_score)}", "REVIEW" if g.review else ""]
                    for g in grades]
            print("\n".join(table(["submission", "score", ""], body)))
        review = [g.path for g in grades if g.review]
        if review:
            print(f"\nFlagged for review ({len(review)}): {', '.join(review)}")
        if grades and reference is None:
            print("\nGraded without --reference: the graded cells were taken from the "
                  "submissions themselves, so these grades are provisional. Give the released "
                  "notebook with --reference.")
        if grades and not all(g.sandboxed for g in grades):
            print("\nNot sandboxed: bubblewrap (bwrap) is not installed or was turned off; "
                  "install it (Debian package bubblewrap) before grading a class.")


if __name__ == "__main__":
    sys.exit(main())
