"""How long grading takes: every chapter's solution alone, then a class-sized batch.

    python benchmarks/grading.py [--per-chapter 4] [--jobs N]

1. Each layer chapter (1-10) is assigned, and its teacher's solution graded against the released
   notebook the way ``python -m checks grade`` does it (a grading process of its own, sealed
   off, probes on): the seconds per chapter.
2. A batch of ``--per-chapter`` submissions per chapter (the solution, the blank notebook, and
   the solution with one exercise stubbed again, in turn) is graded with ``--jobs`` workers:
   the wall time, the notebooks per minute, and the time that rate gives for 200 students x
   10 chapters.

Wall times depend on what else the machine runs, so the script also prints the load average
and the processor time that grading used (``getrusage(RUSAGE_CHILDREN)``; without the sandbox
it includes the kernels): processor seconds per notebook divided by the cores is the time a
notebook costs on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import resource
import tempfile
import time
from pathlib import Path

import nbformat

from checks import grade, grade_sandbox
from checks.assign import make_assignment

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ["01-gradcheck", "02-dense", "03-activations", "04-losses", "05-optimizers",
            "06-conv", "07-pooling", "08-flatten", "09-regularization", "10-cnn-mnist"]


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def submissions(student: Path, teacher: Path, folder: Path, count: int) -> list[Path]:
    """``count`` submissions: the solution, the blank notebook, the solution less one answer."""
    blank = nbformat.read(student, as_version=4)
    solved = nbformat.read(teacher, as_version=4)
    answers = {c.metadata["nbgrader"]["grade_id"]: c.source for c in solved.cells
               if c.metadata.get("nbgrader", {}).get("solution")}
    paths = []
    for k in range(count):
        nb = nbformat.read(student, as_version=4)
        kind = k % 3
        for cell in nb.cells:
            grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
            if grade_id in answers and kind != 1:
                cell.source = answers[grade_id]
        if kind == 2:                                  # one exercise left undone
            first = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution"))
            first.source = next(c.source for c in blank.cells
                                if c.metadata.get("nbgrader", {}).get("grade_id")
                                == first.metadata["nbgrader"]["grade_id"])
        path = folder / f"{student.stem}-student{k}.ipynb"
        nbformat.write(nb, path)
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-chapter", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    options = grade.Options(timeout=60, total_timeout=600)
    sandboxed = grade_sandbox.sandbox_wanted() and grade_sandbox.sandbox_available()
    print(f"cores: {os.cpu_count()}, jobs: {args.jobs}, sandboxed: {sandboxed}, "
          f"load average: {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        made = {}
        for name in CHAPTERS:
            student, teacher = make_assignment(ROOT / "book" / f"{name}.md", work / name)
            made[name] = (student, teacher)
        print("\n1. each chapter's solution, graded alone (wall clock; processor time)")
        for name, (student, teacher) in made.items():
            start, cpu = time.monotonic(), children_cpu()
            result = grade.grade_in_worker(teacher, student, options)
            seconds = time.monotonic() - start
            print(f"   {name:18} {seconds:5.1f} s; {children_cpu() - cpu:5.1f} s  "
                  f"{grade.fmt(result.score)} / {grade.fmt(result.max_score)}")
        batch = []
        for name, (student, teacher) in made.items():
            folder = work / "class" / name
            folder.mkdir(parents=True)
            batch += [(p, student) for p in submissions(student, teacher, folder,
                                                         args.per_chapter)]
        print(f"\n2. a batch of {len(batch)} submissions ({args.per_chapter} per chapter), "
              f"{args.jobs} at once")
        start, cpu = time.monotonic(), children_cpu()
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            results = list(pool.map(lambda job: grade.grade_in_worker(job[0], job[1], options),
                                    batch))
        wall = time.monotonic() - start
        problems = [r for r in results if not isinstance(r, grade.Grade) or r.problem]
        per_minute = len(batch) / wall * 60
        print(f"   {wall:.0f} s for {len(batch)} notebooks: {per_minute:.1f} per minute, "
              f"{len(problems)} not graded")
        cpu = children_cpu() - cpu
        print(f"   200 students x 10 chapters = 2000 notebooks at that rate: "
              f"{2000 / per_minute:.0f} min")
        if sandboxed:                  # the sandbox's kernels are not our waited children
            print(f"   processor time of the grading processes: {cpu:.0f} s (the kernels in "
                  f"the sandbox are not counted; CHECKS_GRADE_SANDBOX=off counts them)")
        else:
            print(f"   processor time: {cpu:.0f} s, {cpu / len(batch):.2f} s per notebook; on "
                  f"an idle machine with {os.cpu_count()} cores, 2000 notebooks: "
                  f"{2000 * cpu / len(batch) / (os.cpu_count() or 1) / 60:.0f} min")
        print(f"   load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
