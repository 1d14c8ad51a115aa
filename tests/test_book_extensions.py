"""The book's Sphinx extensions (book/_ext): solution cells folded, errors kept to one line."""

import importlib.util
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
EXT = ROOT / "book" / "_ext"

pytest.importorskip("sphinx", reason="the book extensions need Sphinx (pip install -e '.[book]')")


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


markers = load("solution_markers")
quiet = load("quiet_errors")

SOLUTION_CELL = """\
Write it.

```{code-cell} ipython3
---
nbgrader: {grade: false, grade_id: x-relu, locked: false, schema_version: 3, solution: true}
---
def relu(x):
    ### BEGIN SOLUTION
    return x * (x > 0)
    ### END SOLUTION
```

```{code-cell} ipython3
---
nbgrader: {grade: true, grade_id: x-relu-test, locked: true, points: 1, schema_version: 3, solution: false}
---
assert relu(-1) == 0
```
"""


def headers(text):
    """The YAML headers of the {code-cell} blocks of ``text``, as dicts."""
    out, lines = [], text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("```{code-cell}") and i + 1 < len(lines) and lines[i + 1] == "---":
            end = lines.index("---", i + 2)
            out.append(yaml.safe_load("\n".join(lines[i + 2:end])))
    return out


def test_solution_cells_get_the_fold_tags_and_graded_cells_do_not():
    folded = markers.fold_solution_cells(SOLUTION_CELL)
    solution, graded = headers(folded)
    assert solution["tags"] == ["hide-input", "solution"]
    assert solution["nbgrader"]["grade_id"] == "x-relu"          # the metadata survives
    assert "tags" not in graded
    assert "def relu(x):" in folded and "assert relu(-1) == 0" in folded


def test_existing_tags_are_kept_and_not_repeated():
    text = SOLUTION_CELL.replace("---\nnbgrader: {grade: false",
                                 "---\ntags: [remove-stderr, hide-input]\nnbgrader: {grade: false", 1)
    solution, _ = headers(markers.fold_solution_cells(text))
    assert solution["tags"] == ["remove-stderr", "hide-input", "solution"]
    # Folding twice changes nothing more.
    twice = markers.fold_solution_cells(markers.fold_solution_cells(text))
    assert headers(twice)[0]["tags"] == ["remove-stderr", "hide-input", "solution"]


def test_text_without_solution_cells_is_unchanged():
    text = "# Title\n\n```{code-cell} ipython3\n---\ntags: [hide-input]\n---\nprint(1)\n```\n\n---\n"
    assert markers.fold_solution_cells(text) == text
    assert markers.fold_solution_cells("```{code-cell} ipython3\n---\n") == "```{code-cell} ipython3\n---\n"


def test_markers_removed_and_cells_folded_together():
    out = markers.fold_solution_cells(markers.strip_solution_markers(SOLUTION_CELL))
    assert "BEGIN SOLUTION" not in out and "END SOLUTION" not in out
    assert headers(out)[0]["tags"] == ["hide-input", "solution"]


def test_quiet_errors_profile_makes_kernels_show_one_line(monkeypatch):
    environ = {}
    folder = quiet.minimal_tracebacks(environ)
    assert environ["IPYTHONDIR"] == str(folder)
    config = (folder / "profile_default" / "ipython_kernel_config.py").read_text()
    assert 'c.InteractiveShell.xmode = "Minimal"' in config

    # A kernel started with this environment shows an uncaught error as its one-line message.
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("IPYTHONDIR", environ["IPYTHONDIR"])
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import numpy as np\nnp.ones((2, 3)) @ np.ones((2, 3))")])
    client = nbclient.NotebookClient(nb, allow_errors=True, timeout=120,
                                     kernel_name="python3")
    client.execute()
    (error,) = [out for out in nb.cells[0].outputs if out.output_type == "error"]
    shown = "\n".join(error.traceback)
    assert error.ename == "ValueError"
    assert len(shown.strip().splitlines()) == 1, shown
    assert "matmul" in shown and "File " not in shown and "/" not in shown.split("matmul")[0]
