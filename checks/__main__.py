"""``python -m checks [FILE.py:callable | module:callable ...]``: check layers from the shell.

With no argument, every built-in layer of cnn_lessons (:mod:`checks.builtin`).  Otherwise each
argument names a function of your own that returns ``(layer, x)``: in a file
(``path/to/mylayers.py:make_relu``, whose folder goes on the import path so that it can import
its neighbours) or in an importable module (``mylayers:make_relu``; the current directory is
importable).

Each layer is checked in a child process of its own (on systems that can fork), under the time
limit of ``--timeout`` seconds: the alarm inside the child names what did not return ("timed
out in forward"); a child that is still running a few seconds later (stuck in compiled code, or
swallowing every exception) is killed, and one that ends itself (``os._exit``, a crash) is
reported.  Either way the other layers are still checked, and the exit status says a layer
failed.

Output: one line per layer when it passed (:meth:`Report.summary`), its inconclusive rows under
it, and the failed rows with their details under a failed layer; ``-v`` prints the whole table.

Exit status: 0 when no check fails (inconclusive rows do not fail), 1 when one fails, 2 for a
bad argument.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import json
import multiprocessing
import os
import sys
import textwrap
import time

from . import check_layer, guard
from .finite_differences import FLOOR, TIMEOUT, gradcheck
from .overfit import CLASSES, overfit_one_sample
from .protocol import PROTOCOL_CHECKS
from .report import Report, error_text, fmt_error, fmt_int, table

PROG = "python -m checks"
GRACE = 5      # at most this many seconds after the time limit, a child still running is killed


def _defaults(function):
    return {k: p.default for k, p in inspect.signature(function).parameters.items()
            if p.default is not inspect.Parameter.empty}


def help_text() -> tuple[str, str]:
    """``(description, epilog)`` for ``--help``, every number read from the code."""
    g, o = _defaults(gradcheck), _defaults(overfit_one_sample)

    def item(label, text):
        first = f"  {label} " if label else "  "
        return textwrap.fill(text, 92, initial_indent=first, subsequent_indent=" " * len(first))

    description = (
        "Check layers as the book does. With no target, every built-in layer of cnn_lessons; "
        "otherwise each target names a function of your own that takes no argument and "
        "returns (layer, x): path/to/mylayers.py:make_relu, or mylayers:make_relu for a "
        "module on the import path (the current directory is on it).")
    checked = [
        ("1.", "forward and backward run, and forward's output is finite."),
        ("2.", "the layer protocol: " + ", ".join(PROTOCOL_CHECKS[2:]) + "."),
        ("3.", f"finite differences, for x and every entry of params: L = sum(forward(x) * G) "
               f"with G a seeded random upstream gradient, central differences of step h = "
               f"{g['h']:g}, up to {g['max_coords']} coordinates one by one, then along a "
               f"random and the all-ones direction. Tolerance: relative error |a - n| / "
               f"max(|a|, |n|, floor) <= {g['rtol']:g} everywhere, floor = {FLOOR:.0%} of the "
               "tensor's largest entry (or the rounding noise). Kinks (ReLU at 0, tied maxima) "
               "are skipped and counted. A failure names its pattern: a constant factor (1/N: "
               "averaged over the batch?), a sign, a transpose, zeros, some samples..."),
        ("4.", f"the overfit recipe: stem (x M + c, M starting as the identity) -> your layer "
               f"-> a fixed head (exp(t) times the means of {CLASSES} groups of outputs) -> "
               f"softmax cross-entropy; Adam, learning rate {o['lr']:g}, at most {o['steps']} "
               f"steps, on 1 sample then on up to {CLASSES}; a stage passes when the loss "
               f"drops below {o['threshold']:g}. A stall because x saturates the layer is "
               "INCONCLUSIVE (not a failure), with what to change."),
        ("", "Every layer's checks run under a time limit (--timeout); a layer that raises, "
             "exits or does not return fails."),
    ]
    tips = [
        ("1.", "Entries of order 1 (x / x.std()): large inputs saturate sigmoids and "
               "softmaxes, whose gradients then vanish below rounding."),
        ("2.", "Away from kinks and ties: no exact zeros before a ReLU, no equal values in a "
               "pooling window (unless that is what you test), parameters moved away from 0 "
               "and 1."),
        ("3.", f"Seeded and small, yet able to break: a batch of at least {CLASSES} drawn from "
               "a seeded generator, and a configuration that exposes indexing bugs (stride 2 "
               "with padding, a non-square kernel, overlapping windows)."),
    ]
    epilog = "\n".join(
        ["what is checked, for each layer (on a float64 copy; your layer and x are never "
         "changed):"] + [item(label, text) for label, text in checked]
        + ["", "three tips for good test inputs:"] + [item(label, text) for label, text in tips]
        + ["", textwrap.fill("exit status: 0 no check failed (INCONCLUSIVE does not fail), 1 a "
                             "check failed, 2 a bad argument. Classroom commands (see their "
                             f"--help): {PROG} assign CHAPTER.md --out DIR; {PROG} grade "
                             "SUBMISSION.ipynb.", 92)])
    return description, epilog


class BadArgument(Exception):
    """An argument that does not name a function returning ``(layer, x)``."""


class Parser(argparse.ArgumentParser):
    def error(self, message):               # one line, not argparse's usage block
        print(f"{PROG}: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def _import(spec, module_name):
    """The module ``module_name`` names: a file path (``.py``, or with a folder in it) or an
    importable name."""
    if module_name.endswith(".py") or os.sep in module_name or "/" in module_name:
        path = os.path.abspath(module_name)
        if not os.path.isfile(path):
            raise BadArgument(f"{spec!r}: no such file {module_name!r}")
        name = os.path.splitext(os.path.basename(path))[0]
        folder = os.path.dirname(path)
        if folder not in sys.path:
            sys.path.insert(0, folder)
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise BadArgument(f"{spec!r}: cannot import {module_name!r} (not a Python file?)")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        module_spec.loader.exec_module(module)
        return module
    return importlib.import_module(module_name)


def load(spec: str, timeout=None):
    """``"module:callable"`` or ``"file.py:callable"`` -> ``(label, layer, x)``; BadArgument
    with a sentence otherwise."""
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise BadArgument(f"{spec!r}: expected FILE.py:callable or module:callable, e.g. "
                          "mylayers.py:make_relu")
    try:
        with guard.guarded(timeout):
            try:
                obj = _import(spec, module_name)
            except BadArgument:
                raise
            except BaseException as err:
                guard.layer_error(err)
                raise BadArgument(f"{spec!r}: cannot import module {module_name!r} "
                                  f"({error_text(err)})") from None
            try:
                for part in attr.split("."):
                    obj = getattr(obj, part)
            except AttributeError:
                raise BadArgument(f"{spec!r}: module {module_name!r} has no attribute "
                                  f"{attr!r}") from None
            if not callable(obj):
                raise BadArgument(f"{spec!r}: {attr!r} is not callable")
            try:
                result = obj()
            except BaseException as err:
                guard.layer_error(err)
                raise BadArgument(f"{spec!r}: calling it raised {error_text(err)}") from None
    except guard.LayerTimeout:
        raise BadArgument(f"{spec!r}: importing or calling it did not return within "
                          f"{timeout:g} s") from None
    if not (isinstance(result, (tuple, list)) and len(result) == 2
            and hasattr(result[0], "forward") and hasattr(result[0], "backward")):
        raise BadArgument(f"{spec!r}: must return (layer, x), with a layer that has forward "
                          f"and backward; got {type(result).__name__}")
    layer, x = result
    return f"{spec} ({type(layer).__name__})", layer, x


# -- one layer, in a child process ----------------------------------------------------------------

def _child(conn, layer, x, seed, timeout, quiet_stdout):
    if quiet_stdout:                       # the layer's prints must not break --json
        os.dup2(2, 1)
    sent = []

    def tell(phase):                       # the alarm rang: say where, once
        if not sent:
            sent.append(phase)
            conn.send(("phase", phase))

    guard.on_alarm(tell)
    try:
        report = check_layer(layer, x, seed=seed, timeout=timeout)
        conn.send(("report", json.dumps(report.to_dict())))
    except KeyboardInterrupt:              # the user's Ctrl-C: the parent reports it
        os._exit(130)
    finally:
        conn.close()


def check_isolated(layer, x, *, seed=0, timeout=TIMEOUT, quiet_stdout=False) -> Report:
    """:func:`check_layer` in a forked child process that is killed if it outlives the time
    limit by :data:`GRACE` seconds (or by the limit itself, when that is shorter, but at least
    a second); in this process where fork is not available."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return check_layer(layer, x, seed=seed, timeout=timeout)
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(send, layer, x, seed, timeout, quiet_stdout))
    child.start()
    send.close()
    phase, data = None, None
    limit = None if not timeout else timeout + min(GRACE, max(1.0, timeout))
    start = time.monotonic()
    try:
        while data is None:
            left = None if limit is None else max(0.0, limit - (time.monotonic() - start))
            if not receive.poll(left):
                break                          # still running after the grace period
            try:
                kind, value = receive.recv()
            except EOFError:                   # the child ended without a report
                break
            if kind == "phase":
                phase = value
            else:
                data = value
    finally:
        if data is None and child.is_alive():
            child.kill()
        child.join()
        receive.close()
    if data is not None:
        return Report.from_dict(json.loads(data))
    report = Report(type(layer).__name__)
    if child.exitcode == 130:
        raise KeyboardInterrupt
    if child.exitcode is not None and child.exitcode < 0 and child.exitcode != -9:
        report.add("crash", False, f"the process checking the layer died of signal "
                   f"{-child.exitcode} (a crash in compiled code, or memory exhausted?)")
    elif child.exitcode not in (None, -9):
        report.add("crash", False, f"the layer ended the process checking it (exit status "
                   f"{child.exitcode}: os._exit?) before the checks were done; a layer must "
                   "never end the program")
    else:
        where = f" in {phase}" if phase else ""
        report.add("time limit", False, f"timed out{where}: still running {limit:g} s after "
                   "the start although the time limit rang (stuck in compiled code, or "
                   "catching every exception, BaseException included?); the process was "
                   "killed")
    return report


# -- output ----------------------------------------------------------------------------------------

def table_rows(label, report):
    """The report's rows for the table: passing protocol checks folded into one line."""
    passed = [r for r in report.rows if r.check in PROTOCOL_CHECKS and r.status == "PASS"]
    rows = []
    if passed:
        rows.append([label, f"protocol ({len(passed)} checks)", "", "", "", "PASS"])
    for r in report.rows:
        if r in passed:
            continue
        rows.append([label, r.check, fmt_error(r.max_rel_error), fmt_int(r.kinks),
                     "skipped" if r.detail.startswith("skipped") else fmt_int(r.steps),
                     r.status])
    return rows


def compact(label, report) -> list[str]:
    """One line for a layer that passed (and its inconclusive rows); a failed layer's verdict
    and every failed row with its detail."""
    if report.ok:
        return Report(label, report.rows).summary().splitlines()
    failed = [r for r in report.rows if not r.ok]
    lines = [f"{label}: FAIL ({len(failed)} of {len(report.rows)} checks failed)"]
    lines += [f"  {r.check}: {r.detail}" for r in failed]
    lines += [f"  {r.check}: {r.detail}" for r in report.rows if r.inconclusive]
    return lines


def verdict(results, seconds) -> str:
    statuses = [report.status for _, report in results]
    noun = "layer" if len(results) == 1 else "layers"
    if all(s == "PASS" for s in statuses):
        text = "all passed"
    else:
        counts = [(statuses.count("PASS"), "passed"),
                  (statuses.count("INCONCLUSIVE"), "inconclusive"),
                  (statuses.count("FAIL"), "FAILED")]
        text = ", ".join(f"{n} {word}" for n, word in counts if n)
    return f"{len(results)} {noun} checked in {seconds:.1f} s: {text}"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("assign", "grade"):     # classroom commands: checks/assign.py, grade.py
        importlib.import_module("checks.grade_worker")   # first: it makes nbformat's import cheap
        return importlib.import_module(f"checks.{argv[0]}").main(argv[1:])
    description, epilog = help_text()
    parser = Parser(prog=PROG, description=description, epilog=epilog,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("targets", nargs="*", metavar="FILE.py:callable | module:callable",
                        help="a function returning (layer, x); default: every built-in layer")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="print the full table of every check of every layer (default: one "
                             "line per layer that passed, the details of what did not)")
    parser.add_argument("--seed", type=int, default=0, metavar="N",
                        help="seed of the upstream gradient, the coordinates sampled and the "
                             "overfit samples (default 0)")
    parser.add_argument("--timeout", type=float, default=TIMEOUT, metavar="SECONDS",
                        help=f"time limit for each layer's checks (default {TIMEOUT:g}; 0: "
                             "none)")
    args = parser.parse_args(argv)
    if args.seed < 0:
        parser.error(f"--seed must be a whole number >= 0, got {args.seed}")
    if not args.timeout >= 0:
        parser.error(f"--timeout must be a number of seconds >= 0, got {args.timeout}")
    timeout = args.timeout or None

    sys.path.insert(0, os.getcwd())
    try:
        if args.targets:
            cases = [load(spec, timeout) for spec in args.targets]
        else:
            from .builtin import CASES
            cases = [(label, *make()) for label, make in CASES.items()]
    except BadArgument as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2

    start = time.perf_counter()
    try:
        results = [(label, check_isolated(layer, x, seed=args.seed, timeout=timeout,
                                          quiet_stdout=args.json))
                   for label, layer, x in cases]
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    seconds = time.perf_counter() - start
    ok = all(report.ok for _, report in results)

    if args.json:
        layers = [{"name": label, **report.to_dict()} for label, report in results]
        print(json.dumps({"ok": ok, "seconds": round(seconds, 2), "layers": layers}, indent=1))
        return 0 if ok else 1

    if args.verbose:
        header = ["layer", "check", "max rel. error", "kinks skipped", "steps to overfit",
                  "result"]
        body = [row for label, report in results for row in table_rows(label, report)]
        print("\n".join(table(header, body)))
        notes = [(label, r) for label, report in results for r in report.rows
                 if not r.ok or r.inconclusive]
        if notes:
            print("\nFailures and inconclusive checks:")
            for label, r in notes:
                print(f"  {label}: {r.check}: {r.status}: {r.detail}")
        print()
    else:
        for label, report in results:
            print("\n".join(compact(label, report)))
        print()
    print(verdict(results, seconds))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
