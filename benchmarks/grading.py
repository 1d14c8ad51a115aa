"""How long grading takes: every chapter's solution alone, then a class-sized batch.

    python benchmarks/grading.py [--per-chapter 4] [--jobs N] [--class-size 200]

1. Each layer chapter (1-10) is assigned, and its teacher's solution graded against the released
   notebook the way ``python -m checks grade`` does it (a grading process of its own, sealed
   off, probes on): the seconds per chapter.
2. A batch of ``--per-chapter`` submissions per chapter (the solution, the blank notebook, and
   the solution with one exercise stubbed again, in turn) is graded with ``--jobs`` workers:
   the wall time, the notebooks per minute, and the time that rate gives for 200 students x
   10 chapters.

Wall times depend on what else the machine runs, so the script also prints the load average
and the processor time the whole machine used meanwhile (from ``/proc/stat``: the grading
processes and the kernels, sandboxed or not, and whatever else ran): processor seconds per
notebook divided by the cores is what a notebook costs on an otherwise idle machine.

``--class-size N`` grades a whole class instead of a sample: N submissions of every chapter,
in one folder per chapter, each folder with ``python -m checks grade`` as a teacher would
(``--jobs``, ``--reference``, a gradebook), and prints each chapter's wall time and the total.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

from checks import grade, grade_sandbox
from checks.assign import make_assignment

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ["01-gradcheck", "02-dense", "03-activations", "04-losses", "05-optimizers",
            "06-conv", "07-pooling", "08-flatten", "09-regularization", "10-cnn-mnist"]


def machine_cpu() -> float:
    """Processor seconds the whole machine has been busy since it started (every core)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime
    ticks = [int(f) for f in fields]
    idle = ticks[3] + ticks[4]                       # idle, iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


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
    parser.add_argument("--class-size", type=int, default=0,
                        help="grade this many submissions of every chapter with the CLI")
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
            start, cpu = time.monotonic(), machine_cpu()
            result = grade.grade_in_worker(teacher, student, options)
            seconds = time.monotonic() - start
            print(f"   {name:18} {seconds:5.1f} s; {machine_cpu() - cpu:5.1f} s  "
                  f"{grade.fmt(result.score)} / {grade.fmt(result.max_score)}")
        if args.class_size:
            whole_class(work, made, args)
        else:
            sample(work, made, args, options)
        print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")


def sample(work: Path, made: dict, args, options) -> None:
    """A batch of ``--per-chapter`` submissions per chapter, graded in this process."""
    batch = []
    for name, (student, teacher) in made.items():
        folder = work / "class" / name
        folder.mkdir(parents=True)
        batch += [(p, student) for p in submissions(student, teacher, folder,
                                                     args.per_chapter)]
    print(f"\n2. a batch of {len(batch)} submissions ({args.per_chapter} per chapter), "
          f"{args.jobs} at once")
    start, cpu = time.monotonic(), machine_cpu()
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda job: grade.grade_in_worker(job[0], job[1], options),
                                batch))
    wall, cpu = time.monotonic() - start, machine_cpu() - cpu
    problems = [r for r in results if not isinstance(r, grade.Grade) or r.problem]
    per_minute = len(batch) / wall * 60
    print(f"   {wall:.0f} s for {len(batch)} notebooks: {per_minute:.1f} per minute, "
          f"{len(problems)} not graded")
    print(f"   200 students x 10 chapters = 2000 notebooks at that rate: "
          f"{2000 / per_minute:.0f} min")
    cores = os.cpu_count() or 1
    print(f"   processor time (whole machine): {cpu:.0f} s, {cpu / len(batch):.2f} s per "
          f"notebook; on an idle machine with {cores} cores, 2000 notebooks: "
          f"{2000 * cpu / len(batch) / cores / 60:.0f} min")


def whole_class(work: Path, made: dict, args) -> None:
    """``--class-size`` submissions of every chapter, each chapter's folder graded by the
    command line, as a teacher would."""
    print(f"\n2. a class of {args.class_size}: {args.class_size} submissions of each of "
          f"{len(made)} chapters, one `python -m checks grade` per chapter, --jobs {args.jobs}")
    total_wall, total_cpu, count, ungraded = 0.0, 0.0, 0, 0
    for name, (student, teacher) in made.items():
        folder = work / "class" / name
        folder.mkdir(parents=True)
        paths = submissions(student, teacher, folder, args.class_size)
        start, cpu = time.monotonic(), machine_cpu()
        done = subprocess.run([sys.executable, "-m", "checks", "grade", str(folder),
                               "--reference", str(student), "--jobs", str(args.jobs),
                               "--gradebook", str(work / f"{name}.csv"), "--json"],
                              capture_output=True, text=True)
        wall, cpu = time.monotonic() - start, machine_cpu() - cpu
        rows = list(csv.DictReader((work / f"{name}.csv").open()))
        missing = len(paths) - len(rows) + sum(1 for r in rows if r.get("problem"))
        solved = [r for r in rows if int(r["submission"].rsplit("student", 1)[1][:-6]) % 3 == 0]
        full = sum(1 for r in solved if r["score"] == r["max_score"])
        boxed = sum(1 for r in rows if r["sandboxed"] == "yes")
        total_wall, total_cpu = total_wall + wall, total_cpu + cpu
        count, ungraded = count + len(paths), ungraded + missing + (done.returncode != 0)
        print(f"   {name:18} {len(paths)} notebooks in {wall:6.1f} s ({wall / len(paths):.2f} "
              f"s each); processor {cpu:6.0f} s; exit {done.returncode}, "
              f"{len(rows)} gradebook rows ({boxed} sandboxed), {full}/{len(solved)} solutions "
              f"at full marks", flush=True)
    print(f"   all {count} notebooks: {total_wall / 60:.1f} min wall clock, processor "
          f"{total_cpu / 60:.1f} min ({total_cpu / count:.2f} s per notebook); "
          f"{ungraded} not graded")


if __name__ == "__main__":
    main()
