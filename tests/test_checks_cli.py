"""``python -m checks`` from the shell: the built-in layers pass, a broken layer fails by name,
``--json`` parses, and a bad argument exits 2 with one clear line."""

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from checks.builtin import CASES

ROOT = Path(__file__).resolve().parents[1]


def run(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "checks", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture(scope="module")
def default_run():
    return run()


def test_default_run_passes_every_builtin_layer_in_one_line_each(default_run):
    assert default_run.returncode == 0, default_run.stdout + default_run.stderr
    lines = default_run.stdout.splitlines()
    for label in CASES:
        (line,) = [line for line in lines if line.startswith(label + ": ")]
        assert re.fullmatch(rf"{re.escape(label)}: PASS \(\d+ checks, worst relative error "
                            r"\d\.\de-\d\d\)", line), line
    assert "FAIL" not in default_run.stdout and len(lines) == len(CASES) + 2
    assert lines[-1].startswith(f"{len(CASES)} layers checked in ")
    assert lines[-1].endswith("all passed")


def test_verbose_prints_the_table():
    result = run("-v", "checks.builtin:CASES")  # a bad argument first: -v is parsed, exit 2
    assert result.returncode == 2
    result = run("--verbose")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["layer", "check", "max", "rel.", "error", "kinks", "skipped",
                                "steps", "to", "overfit", "result"]
    for label in CASES:
        rows = [line for line in lines if line.startswith(label + "  ")]
        assert rows and all(line.rstrip().endswith("PASS") for line in rows), label
        assert any(" dL/dx " in line for line in rows) and any("overfit" in line for line in rows)
    assert lines[-1].endswith("all passed")


def test_broken_layer_fails_by_name_and_check():
    result = run("tests.broken_layers:make_softmax_no_sum_term")
    assert result.returncode == 1
    assert result.stdout.splitlines()[0].startswith(
        "tests.broken_layers:make_softmax_no_sum_term (SoftmaxNoSumTerm): FAIL (1 of ")
    assert "  dL/dx: relative error" in result.stdout
    result = run("tests.broken_layers:make_softmax_no_sum_term", "-v")
    assert result.returncode == 1
    failing = [line for line in result.stdout.splitlines() if line.rstrip().endswith("FAIL")]
    assert failing and all("SoftmaxNoSumTerm" in line for line in failing)
    assert any(" dL/dx " in line for line in failing)
    assert "SoftmaxNoSumTerm" in result.stdout and "relative error" in result.stdout


def test_broken_and_correct_layers_from_a_module_in_the_current_directory(tmp_path):
    (tmp_path / "mylayers.py").write_text(textwrap.dedent("""
        import numpy as np
        from cnn_lessons import ReLU

        class LeakyForgot(ReLU):
            def backward(self, dout):
                return dout          # forgot the mask

        def good():
            return ReLU(), np.linspace(-1, 1, 12).reshape(3, 4) + 0.05

        def bad():
            return LeakyForgot(), np.linspace(-1, 1, 12).reshape(3, 4) + 0.05
    """))
    assert run("mylayers:good", cwd=tmp_path).returncode == 0
    result = run("mylayers:good", "mylayers:bad", cwd=tmp_path)
    assert result.returncode == 1
    assert "mylayers:bad (LeakyForgot)" in result.stdout
    result = run("mylayers:good", "mylayers:bad", "-v", cwd=tmp_path)
    fails = [line for line in result.stdout.splitlines() if line.rstrip().endswith("FAIL")]
    assert fails and all(line.startswith("mylayers:bad") for line in fails)
    assert any("dL/dx" in line for line in fails)


def test_json_output():
    result = run("tests.broken_layers:make_relu_in_place", "--json")
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert data["ok"] is False and data["seconds"] >= 0
    (layer,) = data["layers"]
    assert layer["name"] == "tests.broken_layers:make_relu_in_place (ReLUInPlace)"
    failed = [c["check"] for c in layer["checks"] if not c["ok"]]
    assert failed == ["x unchanged by forward"]


def test_default_json_lists_every_builtin_layer():
    result = run("--json")
    assert result.returncode == 0
    data = json.loads(result.stdout)
    assert data["ok"] is True
    assert [layer["name"] for layer in data["layers"]] == list(CASES)
    assert all(layer["ok"] for layer in data["layers"])


@pytest.mark.parametrize("args, says", [
    (["nosuchmodule:f"], "cannot import module 'nosuchmodule'"),
    (["checks.builtin:nothing"], "has no attribute 'nothing'"),
    (["checks.builtin:CASES"], "not callable"),
    (["checks.builtin:normal"], "must return (layer, x)"),
    (["no_colon"], "expected FILE.py:callable or module:callable"),
    (["missing.py:make"], "no such file 'missing.py'"),
    (["--seed", "-1"], "--seed must be a whole number >= 0, got -1"),
    (["--seed", "x"], "argument --seed: invalid int value: 'x'"),
    (["--timeout", "-2"], "--timeout must be a number of seconds >= 0, got -2.0"),
    (["--timeout", "nan"], "--timeout must be a number of seconds >= 0, got nan"),
    (["--bogus"], "unrecognized arguments: --bogus"),
])
def test_bad_argument_exits_2_with_one_line(args, says):
    result = run(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and lines[0].startswith("python -m checks: error:")


def test_help_says_what_is_checked_the_tolerances_the_recipe_and_three_tips():
    result = run("--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())          # the same words, whatever the line breaks
    for words in ["FILE.py:callable | module:callable", "--json", "-v, --verbose", "--seed N",
                  "--timeout SECONDS", "Exit status" if "Exit status" in text else "exit status",
                  "what is checked", "step h = 1e-06", "<= 1e-07 everywhere", "floor = 1% of",
                  "Adam, learning rate 0.05, at most 300 steps", "below 0.05", "INCONCLUSIVE",
                  "three tips for good test inputs", "1. Entries of order 1",
                  "2. Away from kinks and ties", "3. Seeded and small",
                  "backward twice", "output unchanged by backward"]:
        assert words in text, words


def write(tmp_path, source):
    path = tmp_path / "student_layers.py"
    path.write_text(textwrap.dedent(source))
    return path


def test_a_file_path_and_its_neighbours(tmp_path):
    (tmp_path / "helpers.py").write_text("SCALE = 2.0\n")
    folder = tmp_path / "sub"
    folder.mkdir()
    path = write(folder, """
        import numpy as np
        from helpers import SCALE          # a neighbour of this file

        class Double:
            def __init__(self):
                self.params, self.grads = {}, {}
            def forward(self, x):
                return SCALE * x
            def backward(self, dout):
                return SCALE * dout

        def make():
            return Double(), np.random.default_rng(0).standard_normal((4, 5))
    """)
    (folder / "helpers.py").write_text((tmp_path / "helpers.py").read_text())
    result = run(f"{path}:make", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(f"{path}:make (Double): PASS (")
    relative = run("sub/student_layers.py:make", cwd=tmp_path)
    assert relative.returncode == 0
    assert "sub/student_layers.py:make (Double): PASS" in relative.stdout


def test_seed_changes_the_sample_not_the_verdict():
    target = "tests.broken_layers:make_dense_grad_averaged"
    a = json.loads(run(target, "--json", "--seed", "3").stdout)
    b = json.loads(run(target, "--json", "--seed", "3").stdout)
    c = json.loads(run(target, "--json").stdout)
    rows = lambda data: {r["check"]: r for r in data["layers"][0]["checks"]}
    assert rows(a) == rows(b) and rows(a)["dL/dW"]["detail"] != rows(c)["dL/dW"]["detail"]
    assert all("1/N with N = 3" in rows(d)["dL/dW"]["detail"] for d in (a, c))


HANGING = """
    import os
    import sys
    import numpy as np

    class Hangs:
        def __init__(self, where):
            self.where, self.params, self.grads = where, {}, {}
        def forward(self, x):
            if self.where == "forward":
                while True:
                    pass
            if self.where == "exit":
                sys.exit(0)
            if self.where == "os._exit":
                os._exit(0)
            return 2 * x
        def backward(self, dout):
            if self.where == "stubborn":        # swallows every exception, the alarm's too
                while True:
                    try:
                        while True:
                            pass
                    except BaseException:
                        pass
            return 2 * dout

    x = np.random.default_rng(0).standard_normal((3, 4))

    def forward():
        return Hangs("forward"), x

    def stubborn():
        return Hangs("stubborn"), x

    def exits():
        return Hangs("exit"), x

    def ends():
        return Hangs("os._exit"), x

    def good():
        return Hangs(None), x
"""


@pytest.mark.parametrize("target, says", [
    ("forward", "time limit: timed out in forward: no return within 1 s"),
    ("stubborn", "time limit: timed out in backward: still running 2 s after the start although "
                 "the time limit rang"),
    ("exits", "forward/backward run: SystemExit: 0 (the layer called sys.exit"),
    ("ends", "crash: the layer ended the process checking it (exit status 0: os._exit?)"),
])
def test_layers_that_hang_or_exit_fail_and_the_others_are_still_checked(tmp_path, target, says):
    path = write(tmp_path, HANGING)
    result = run(f"{path}:{target}", f"{path}:good", "--timeout", "1", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{path}:{target} (Hangs): FAIL")
    assert says in result.stdout, result.stdout
    assert any(line.startswith(f"{path}:good (Hangs): PASS") for line in lines)
    assert lines[-1].endswith("1 passed, 1 FAILED")


def test_a_layer_printing_does_not_break_json(tmp_path):
    path = write(tmp_path, """
        import numpy as np
        from cnn_lessons import ReLU

        class Chatty(ReLU):
            def forward(self, x):
                print("debug: forward called")
                return super().forward(x)

        def make():
            return Chatty(), np.linspace(-1, 1, 12).reshape(3, 4) + 0.05
    """)
    result = run(f"{path}:make", "--json", cwd=tmp_path)
    assert result.returncode == 0 and json.loads(result.stdout)["ok"] is True
    assert "debug: forward called" in result.stderr
