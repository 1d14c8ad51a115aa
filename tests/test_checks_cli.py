"""``python -m checks`` from the shell: the built-in layers pass, a broken layer fails by name,
``--json`` parses, and a bad argument exits 2 with one clear line."""

import json
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


def test_default_run_passes_every_builtin_layer(default_run):
    assert default_run.returncode == 0, default_run.stdout + default_run.stderr
    lines = default_run.stdout.splitlines()
    assert lines[0].split() == ["layer", "check", "max", "rel.", "error", "kinks", "skipped",
                                "steps", "to", "overfit", "result"]
    for label in CASES:
        rows = [line for line in lines if line.startswith(label + "  ")]
        assert rows and all(line.rstrip().endswith("PASS") for line in rows), label
        assert any(" dL/dx " in line for line in rows) and any("overfit" in line for line in rows)
    assert "FAIL" not in default_run.stdout
    assert lines[-1].startswith(f"{len(CASES)} layers checked in ")
    assert lines[-1].endswith("all passed")


def test_broken_layer_fails_by_name_and_check():
    result = run("tests.broken_layers:make_softmax_no_sum_term")
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
    (["no_colon"], "expected module:callable"),
    (["--bogus"], "unrecognized arguments: --bogus"),
])
def test_bad_argument_exits_2_with_one_line(args, says):
    result = run(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and lines[0].startswith("python -m checks: error:")


def test_help():
    result = run("--help")
    assert result.returncode == 0
    assert "module:callable" in result.stdout and "--json" in result.stdout
    assert "Exit status" in result.stdout
