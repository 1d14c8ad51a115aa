"""``python -m checks grade SUBMISSION.ipynb``: run a student's notebook and score its graded cells.

A *graded cell* is a code cell with nbgrader metadata ``{grade: true, points: N, grade_id}``
(``python -m checks assign`` and ``nbgrader generate_assignment`` both keep it).  Grading runs
every code cell of the submission, top to bottom, in a fresh Python kernel (a separate process,
driven by nbclient), and a graded cell earns its points when it ran without an error.

What can go wrong in a submission, and what the grader does:

- **A cell raises** (an assertion, a ``NotImplementedError`` stub, a syntax error): the cell's
  error is recorded and the next cell runs, so only the graded cells that need the broken code
  lose their points.
- **A cell runs too long** (``--timeout``, 60 s per cell by default): the kernel is interrupted
  (``KeyboardInterrupt``), the cell is marked ``timeout`` and grading goes on in the same kernel.
  When the interrupt does not stop it within a few seconds (code that catches or ignores it),
  the kernel is replaced by a fresh one.
- **The kernel dies** (``os._exit``, a segfault, running out of memory): the cell is marked
  ``crashed`` and a fresh kernel is started.
- **After a fresh kernel**, the cells that had already run are run again, silently and without
  the one that stopped the kernel, to rebuild the state later cells need; then grading goes on.
  Their first results are the ones reported.
- **The whole notebook runs too long** (``--total-timeout``, 600 s by default): the cells not
  reached are marked ``not-run``.  Together with the per-cell limit, the grader never hangs.
- **Huge output**: outputs are not kept (only the error of each cell), and messages are cut to
  a few hundred characters.
- **An edited graded cell**: with ``--reference NOTEBOOK`` (the released assignment, the
  teacher's notebook or the nbgrader source), every graded or locked cell is matched by
  ``grade_id`` and its source and points restored from the reference; a graded cell missing from
  the submission is marked ``missing``.  Without a reference, the graded cells come from the
  submission itself, and one whose source no longer matches its nbgrader ``checksum`` (written by
  ``assign`` and by nbgrader) is marked ``tampered`` and scores 0.

Statuses: ``passed``, ``failed`` (an ``AssertionError``), ``error`` (any other exception),
``timeout``, ``crashed``, ``not-run``, ``missing``, ``tampered``.  Only ``passed`` scores.

The kernel is the Python running the grader (``--kernel NAME`` picks an installed kernel spec
instead), started in the submission's folder.  Like nbgrader, the grader trusts that kernel: a
submission that rewrites ``assert`` helpers or the harness at run time can fool it; read the
code of a surprising score.

Exit status: 0 when grading completed (whatever the scores), 2 when a submission or the
reference cannot be used (not a notebook, unreadable, no graded cells) or no kernel starts.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import copy
import json
import logging
import re
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat

from .assign import checksum, is_graded, is_locked, nbgrader_meta
from .report import table

PROG = "python -m checks grade"
MESSAGE_CHARS = 300            # longest message kept for a cell
INTERRUPT_GRACE = 5.0          # seconds an interrupted cell gets to stop before a new kernel
STARTUP_TIMEOUT = 60           # seconds for a kernel to start

STATUSES = ("passed", "failed", "error", "timeout", "crashed", "not-run", "missing", "tampered")


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
    seconds: float = 0.0

    @property
    def score(self) -> float:
        return sum(cell.score for cell in self.cells)

    @property
    def max_score(self) -> float:
        return sum(cell.max_score for cell in self.cells)

    def to_dict(self) -> dict:
        return {"path": self.path, "score": self.score, "max_score": self.max_score,
                "cells": [asdict(cell) for cell in self.cells], "notes": self.notes,
                "seconds": round(self.seconds, 2)}

    def __str__(self) -> str:
        header = ["graded cell", "points", "status", "message"]
        body = [[c.grade_id, f"{fmt(c.score)} / {fmt(c.max_score)}", c.status, c.message]
                for c in self.cells]
        body.append(["total", f"{fmt(self.score)} / {fmt(self.max_score)}", "", ""])
        lines = [f"{self.path}: {fmt(self.score)} / {fmt(self.max_score)} points "
                 f"({self.seconds:.1f} s)"]
        lines += ["  " + line for line in table(header, body)]
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
    if not (isinstance(data, dict) and isinstance(data.get("cells"), list)
            and data.get("nbformat") == 4):
        raise UnusableInput(f"{path}: not a Jupyter notebook in format 4 (expected a JSON object "
                            f"with 'cells' and 'nbformat': 4)")
    try:
        nb = nbformat.reader.reads(text)        # no validation: it would log to stderr
        for cell in nb.cells:
            cell.setdefault("metadata", {})
            if cell.cell_type == "code":
                cell.setdefault("outputs", [])
                cell.setdefault("execution_count", None)
            cell.source = cell.get("source", "")
            if not isinstance(cell.source, str):
                raise TypeError("a cell's source is not text")
    except Exception as err:
        raise UnusableInput(f"{path}: not a usable notebook ({shorten(err, 120)})") from None
    return nb


def graded_cells(nb) -> dict[str, tuple[int, dict]]:
    """``{grade_id: (cell index, nbgrader metadata)}`` of the graded cells, in order."""
    found = {}
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and is_graded(cell):
            meta = nbgrader_meta(cell)
            grade_id = str(meta.get("grade_id") or f"cell-{index}")
            if grade_id not in found:
                found[grade_id] = (index, meta)
    return found


def points_of(meta: dict) -> float:
    try:
        return float(meta.get("points", 0))
    except (TypeError, ValueError):
        return 0.0


def prepare(nb, path, reference=None):
    """Which cells to run, which to grade, and how.

    Returns ``(nb, plan, decided, order, notes)``: the notebook to run (a copy, graded and locked
    cells restored from ``reference`` when given); ``plan = {grade_id: (cell index, points)}``
    for the graded cells to run; results already ``decided`` (``missing``, ``tampered``); the
    ``order`` of the graded cells in the report; ``notes`` for the teacher.
    """
    nb = copy.deepcopy(nb)
    plan, results, notes = {}, {}, []
    if reference is not None:
        by_id = {}
        for index, cell in enumerate(nb.cells):
            meta = nbgrader_meta(cell)
            if cell.cell_type == "code" and meta and meta.get("grade_id"):
                by_id.setdefault(str(meta["grade_id"]), index)
        restored = 0
        for ref_cell in reference.cells:
            meta = nbgrader_meta(ref_cell)
            if ref_cell.cell_type != "code" or not is_locked(ref_cell):
                continue
            grade_id = str(meta.get("grade_id"))
            index = by_id.get(grade_id)
            if index is None:
                if is_graded(ref_cell):
                    results[grade_id] = CellResult(grade_id, 0.0, points_of(meta), "missing",
                                                   "not in the submission (deleted?)")
                continue
            cell = nb.cells[index]
            if cell.source != ref_cell.source:
                restored += 1
            cell.source = ref_cell.source
            cell.metadata["nbgrader"] = copy.deepcopy(meta)
            if is_graded(ref_cell):
                plan[grade_id] = (index, points_of(meta))
        if restored:
            notes.append(f"{restored} graded or locked cell(s) had been edited; their source "
                         f"was restored from the reference")
        order = [nbgrader_meta(c).get("grade_id") for c in reference.cells
                 if c.cell_type == "code" and is_graded(c)]
    else:
        for grade_id, (index, meta) in graded_cells(nb).items():
            stored = meta.get("checksum")
            if stored and stored != checksum(nb.cells[index]):
                results[grade_id] = CellResult(
                    grade_id, 0.0, points_of(meta), "tampered",
                    "the cell was edited after release (checksum mismatch); "
                    "grade with --reference to restore it")
            plan[grade_id] = (index, points_of(meta))
        order = list(plan)
    if not plan and not results:
        whose = "the reference has" if reference is not None else "has"
        raise UnusableInput(f"{path}: {whose} no graded cells (code cells with nbgrader "
                            f"metadata grade: true)")
    return nb, plan, results, order, notes


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
    if code < 0:
        try:
            return f"the kernel was killed by {signal.Signals(-code).name}"
        except ValueError:
            pass
    return f"the kernel exited with status {code}"


def this_python_kernel_specs():
    """A kernel spec manager whose every kernel is the grader's own interpreter."""
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager

    class ThisPython(KernelSpecManager):
        def get_kernel_spec(self, kernel_name):
            return KernelSpec(argv=[sys.executable, "-m", "ipykernel_launcher", "-f",
                                    "{connection_file}"],
                              display_name=f"Python ({sys.executable})", language="python")

    return ThisPython()


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


class Runner:
    """Runs the code cells of one notebook in a kernel, surviving loops and crashes."""

    def __init__(self, nb, cwd, *, timeout, total_timeout, kernel_name=None):
        self.cells = [c for c in nb.cells]
        self.probe = nbformat.v4.new_code_cell("pass")
        work = nbformat.v4.new_notebook(cells=self.cells + [self.probe],
                                        metadata=copy.deepcopy(nb.metadata))
        self.client = _client_class()(work, timeout=timeout, allow_errors=True, log=_QUIET,
                                      startup_timeout=STARTUP_TIMEOUT, iopub_timeout=2,
                                      raise_on_iopub_timeout=False)
        self.client.on_cell_executed = self._record
        self.cwd, self.timeout, self.kernel_name = str(cwd), timeout, kernel_name
        self.deadline = time.monotonic() + total_timeout
        self.total_timeout = total_timeout
        self.reply = None
        self.km = None

    def _record(self, cell, cell_index, execute_reply):
        self.reply = execute_reply

    async def start(self):
        from jupyter_client import AsyncKernelManager

        if self.kernel_name:
            self.km = AsyncKernelManager(kernel_name=self.kernel_name)
        else:
            self.km = AsyncKernelManager(kernel_name="python3",
                                         kernel_spec_manager=this_python_kernel_specs())
        await self.km.start_kernel(cwd=self.cwd, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL,
                                   extra_arguments=["--HistoryManager.hist_file=:memory:"])
        self.client.km = self.km
        await self.client.async_start_new_kernel_client()

    async def stop(self):
        km, kc = self.km, self.client.kc
        self.km = self.client.km = self.client.kc = None
        try:
            if kc is not None:
                kc.stop_channels()
        finally:
            if km is not None:
                try:
                    await km.shutdown_kernel(now=True)
                except Exception:
                    pass

    async def execute(self, index, timeout=None) -> Outcome:
        """Run cell ``index`` (``-1``: the probe) and say how it went."""
        from nbclient.exceptions import CellTimeoutError, DeadKernelError

        cell = self.probe if index < 0 else self.cells[index]
        position = len(self.cells) if index < 0 else index
        left = self.deadline - time.monotonic()
        limit = timeout if timeout is not None else self.timeout
        self.client.timeout = max(1, int(min(limit, left) + 0.999))
        self.reply = None
        try:
            await self.client.async_execute_cell(cell, position)
        except CellTimeoutError:
            self.client.cancel_pollers()
            if left < limit:
                return Outcome("timeout", f"the notebook's time limit ({fmt(self.total_timeout)}"
                                          f" s in all) ran out in this cell")
            return Outcome("timeout", f"stopped after {fmt(limit)} s (the time limit per cell)")
        except DeadKernelError:
            self.client.cancel_pollers()
            code = await self.km.provisioner.poll() if self.km and self.km.provisioner else None
            return Outcome("crashed", f"{_death_text(code)} while running this cell")
        if self.reply is None:
            return Outcome("ok")
        content = self.reply.get("content", {})
        if content.get("status") == "error":
            return Outcome("error", error_message(content))
        return Outcome("ok")

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

    async def run(self, indices) -> dict[int, Outcome]:
        """Run the code cells ``indices`` in order; ``{index: Outcome}``."""
        outcomes, ran = {}, []
        await self.start()
        try:
            for position, index in enumerate(indices):
                if time.monotonic() >= self.deadline:
                    for rest in indices[position:]:
                        outcomes[rest] = Outcome("not-run", "the notebook's time limit "
                                                 f"({fmt(self.total_timeout)} s) ran out before")
                    break
                outcome = outcomes[index] = await self.execute(index)
                if outcome.status in ("ok", "error"):
                    ran.append(index)
                elif outcome.status == "timeout" and await self.responsive():
                    continue
                elif not await self.fresh_kernel(ran):
                    for rest in indices[position + 1:]:
                        outcomes[rest] = Outcome("not-run", "no time left to restart the kernel")
                    break
        finally:
            await self.stop()
        return outcomes


# --------------------------------------------------------------------------------------------
# Grading

def _run_sync(coroutine):
    """``asyncio.run``, also from inside a running event loop (a Jupyter kernel)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def grade_notebook(path, *, reference=None, timeout: float = 60, total_timeout: float = 600,
                   kernel_name: str | None = None) -> Grade:
    """Run the notebook at ``path`` in a fresh kernel and grade its graded cells.

    ``reference``: a notebook (path or NotebookNode) to restore graded and locked cells from.
    Raises :class:`UnusableInput` when the notebook or the reference cannot be used.
    """
    start = time.monotonic()
    path = Path(path)
    if isinstance(reference, (str, Path)):
        reference = read_notebook(reference)
    nb, plan, decided, order, notes = prepare(read_notebook(path), path, reference)
    indices = [i for i, c in enumerate(nb.cells)
               if c.cell_type == "code" and c.source.strip()]
    runner = Runner(nb, path.resolve().parent, timeout=timeout, total_timeout=total_timeout,
                    kernel_name=kernel_name)
    try:
        outcomes = _run_sync(runner.run(indices))
    except Exception as err:             # the kernel would not start
        raise UnusableInput(f"{path}: could not run a Python kernel "
                            f"({type(err).__name__}: {shorten(err, 160)})") from None
    grade = Grade(str(path), notes=notes)
    for grade_id in order:
        if grade_id in decided and decided[grade_id].status == "missing":
            grade.cells.append(decided[grade_id])
            continue
        index, points = plan[grade_id]
        outcome = outcomes.get(index, Outcome("not-run", "the cell is empty"))
        if grade_id in decided:                              # tampered
            grade.cells.append(decided[grade_id])
        elif outcome.status == "ok":
            grade.cells.append(CellResult(grade_id, points, points, "passed"))
        else:
            status = outcome.status
            if status == "error" and outcome.message.startswith("AssertionError"):
                status = "failed"
            grade.cells.append(CellResult(grade_id, 0.0, points, status, outcome.message))
    grade.seconds = time.monotonic() - start
    return grade


def submissions(paths) -> list[Path]:
    """The notebooks named by ``paths``: files as given, folders searched for ``*.ipynb``."""
    found = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            inside = sorted(p for p in path.rglob("*.ipynb")
                            if ".ipynb_checkpoints" not in p.parts)
            found += inside or [path]       # an empty folder is reported as unusable
        else:
            found.append(path)
    return found


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def main(argv=None) -> int:
    parser = _Parser(
        prog=PROG,
        description="Grade submitted notebooks: run each one in a fresh Python kernel and "
                    "score its graded cells (nbgrader metadata grade: true); a graded cell "
                    "earns its points when it runs without an error.",
        epilog="Statuses: passed, failed (AssertionError), error, timeout, crashed, not-run, "
               "missing, tampered. Exit status: 0 grading completed (whatever the scores), "
               "2 a submission or the reference cannot be used.")
    parser.add_argument("paths", nargs="+", metavar="SUBMISSION",
                        help="a submitted .ipynb, or a folder searched for them")
    parser.add_argument("--reference", metavar="NOTEBOOK",
                        help="the released notebook (or the teacher's): graded and locked cells "
                             "are restored from it by grade_id")
    parser.add_argument("--timeout", type=_positive, default=60, metavar="SECONDS",
                        help="time limit per cell (default 60)")
    parser.add_argument("--total-timeout", type=_positive, default=600, metavar="SECONDS",
                        help="time limit for a whole notebook (default 600)")
    parser.add_argument("--kernel", metavar="NAME",
                        help="an installed kernel spec (default: this Python)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object per submission (one per line)")
    args = parser.parse_args(argv)

    try:
        reference = read_notebook(args.reference) if args.reference else None
    except UnusableInput as err:
        print(f"{PROG}: error: reference {err}", file=sys.stderr)
        return 2
    status, grades = 0, []
    for path in submissions(args.paths):
        try:
            grade = grade_notebook(path, reference=reference, timeout=args.timeout,
                                   total_timeout=args.total_timeout, kernel_name=args.kernel)
        except UnusableInput as err:
            print(f"{PROG}: error: {err}", file=sys.stderr)
            status = 2
            continue
        grades.append(grade)
        if args.json:
            print(json.dumps(grade.to_dict()), flush=True)
        else:
            print(grade, end="\n\n", flush=True)
    if len(grades) > 1 and not args.json:
        body = [[g.path, f"{fmt(g.score)} / {fmt(g.max_score)}"] for g in grades]
        print("\n".join(table(["submission", "score"], body)))
    if grades and reference is None and not args.json:
        print(f"{'' if len(grades) == 1 else chr(10)}Graded without --reference: the graded "
              f"cells were taken from the submissions themselves (checksums verified where "
              f"present).")
    return status


if __name__ == "__main__":
    sys.exit(main())
