"""JupyterLab for this book: ``make lab`` starts ``jupyter lab --config=jupyter/jupyter_lab_config.py``.

- The file browser opens on the repository (so that ``book/``, ``cnn_lessons/`` and the README
  are at hand) and shows the chapters first.
- The chapters are MyST Markdown notebooks: jupytext (installed with the ``lab`` extra) reads
  them as notebooks, and ``settings/overrides.json`` makes "Jupytext Notebook" the default
  viewer of Markdown files, so a double-click opens a chapter as a notebook, not as text.
  (Right-click > Open With > Editor still shows the source.)
"""

from pathlib import Path

HERE = Path(__file__).resolve().parent

c = get_config()  # noqa: F821  (provided by Jupyter when it reads this file)
c.ServerApp.root_dir = str(HERE.parent)
c.LabApp.default_url = "/lab/tree/book"
c.LabApp.app_settings_dir = str(HERE / "settings")
