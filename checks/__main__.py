"""``python -m checks [module:callable ...] [--json]``: check layers from the shell.

With no argument, every built-in layer of cnn_lessons (:mod:`checks.builtin`).  Otherwise each
argument names a function of your own that returns ``(layer, x)``; the current directory is
importable, so ``python -m checks mylayers:make_relu`` finds ``./mylayers.py``.

Exit status: 0 when every check passes, 1 when one fails, 2 for a bad argument.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time

from . import check_layer
from .protocol import PROTOCOL_CHECKS
from .report import error_text, fmt_error, fmt_int, table

PROG = "python -m checks"
DESCRIPTION = ("Check layers: backward against finite differences, the layer protocol's promises, "
               "and an overfit test. With no argument, every built-in layer of cnn_lessons; "
               "otherwise each argument names a function of your own that returns (layer, x), "
               "e.g. mylayers:make_relu for make_relu() in ./mylayers.py.")


class BadArgument(Exception):
    """An argument that does not name a function returning ``(layer, x)``."""


class Parser(argparse.ArgumentParser):
    def error(self, message):               # one line, not argparse's usage block
        print(f"{PROG}: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def load(spec: str):
    """``"module:callable"`` -> ``(label, layer, x)``; BadArgument with a sentence otherwise."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise BadArgument(f"{spec!r}: expected module:callable, e.g. mylayers:make_relu")
    try:
        obj = importlib.import_module(module_name)
    except Exception as err:
        raise BadArgument(f"{spec!r}: cannot import module {module_name!r} ({error_text(err)})")
    try:
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise BadArgument(f"{spec!r}: module {module_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise BadArgument(f"{spec!r}: {attr!r} is not callable")
    try:
        result = obj()
    except Exception as err:
        raise BadArgument(f"{spec!r}: calling it raised {error_text(err)}")
    if not (isinstance(result, (tuple, list)) and len(result) == 2
            and hasattr(result[0], "forward") and hasattr(result[0], "backward")):
        raise BadArgument(f"{spec!r}: must return (layer, x), with a layer that has forward "
                          f"and backward; got {type(result).__name__}")
    layer, x = result
    return f"{spec} ({type(layer).__name__})", layer, x


def table_rows(label, report):
    """The report's rows for the table: passing protocol checks folded into one line."""
    passed = [r for r in report.rows if r.check in PROTOCOL_CHECKS and r.ok]
    rows = []
    if passed:
        rows.append([label, f"protocol ({len(passed)} checks)", "", "", "", "PASS"])
    for r in report.rows:
        if r.check in PROTOCOL_CHECKS and r.ok:
            continue
        rows.append([label, r.check, fmt_error(r.max_rel_error), fmt_int(r.kinks),
                     "skipped" if r.detail.startswith("skipped") else fmt_int(r.steps),
                     "PASS" if r.ok else "FAIL"])
    return rows


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("assign", "grade"):     # classroom commands: checks/assign.py, grade.py
        return importlib.import_module(f"checks.{argv[0]}").main(argv[1:])
    parser = Parser(prog=PROG, description=DESCRIPTION,
                    epilog="Exit status: 0 all checks pass, 1 a check fails, 2 bad argument. "
                           "Classroom commands (see their --help): python -m checks assign "
                           "CHAPTER.md --out DIR; python -m checks grade SUBMISSION.ipynb.")
    parser.add_argument("targets", nargs="*", metavar="module:callable",
                        help="a function returning (layer, x); default: every built-in layer")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)

    sys.path.insert(0, os.getcwd())
    try:
        if args.targets:
            cases = [load(spec) for spec in args.targets]
        else:
            from .builtin import CASES
            cases = [(label, *make()) for label, make in CASES.items()]
    except BadArgument as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2

    start = time.perf_counter()
    results = [(label, check_layer(layer, x)) for label, layer, x in cases]
    seconds = time.perf_counter() - start
    ok = all(report.ok for _, report in results)

    if args.json:
        layers = [{"name": label, **report.to_dict()} for label, report in results]
        print(json.dumps({"ok": ok, "seconds": round(seconds, 2), "layers": layers}, indent=1))
        return 0 if ok else 1

    header = ["layer", "check", "max rel. error", "kinks skipped", "steps to overfit", "result"]
    body = [row for label, report in results for row in table_rows(label, report)]
    print("\n".join(table(header, body)))
    failures = [(label, r) for label, report in results for r in report.rows if not r.ok]
    if failures:
        print("\nFailures:")
        for label, r in failures:
            print(f"  {label}: {r.check}: {r.detail}")
    failed = sum(not report.ok for _, report in results)
    verdict = "all passed" if ok else f"{failed} FAILED"
    noun = "layer" if len(results) == 1 else "layers"
    print(f"\n{len(results)} {noun} checked in {seconds:.1f} s: {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
