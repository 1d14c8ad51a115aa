"""Show a deliberate error in the book as its one-line message, never as a traceback.

A chapter shows an error message by running a cell tagged ``raises-exception``. IPython's
default traceback fills 20-30 lines with frames of the package's source files, each
headed by the absolute path of the file on the machine that built the book; the one
useful line, the message, comes last and is often cut off at the right edge.

This extension starts the book's kernels in IPython's ``Minimal`` exception mode: an
uncaught exception is shown as ``ValueError: the message`` and nothing else. It does so
the way ``%xmode Minimal`` would, but for every page at once: it writes an IPython
profile whose kernel configuration sets ``InteractiveShell.xmode = "Minimal"`` into a
temporary folder and points ``IPYTHONDIR`` there. Kernels inherit the build's
environment, so only the kernels of the build see it; a reader's own Jupyter is unchanged
(run ``%xmode Minimal`` there for the same effect).

Registered in ``_config.yml``::

    sphinx:
      local_extensions:
        quiet_errors: book/_ext
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

from sphinx.application import Sphinx

KERNEL_CONFIG = '''\
# Written by book/_ext/quiet_errors.py for the kernels of one book build.
c.InteractiveShell.xmode = "Minimal"
'''


def minimal_tracebacks(environ=os.environ) -> Path:
    """Make kernels started with ``environ`` use Minimal tracebacks; return the profile folder.

    The folder is removed when the process exits.
    """
    ipython_dir = Path(tempfile.mkdtemp(prefix="book-ipython-"))
    atexit.register(shutil.rmtree, ipython_dir, ignore_errors=True)
    profile = ipython_dir / "profile_default"
    profile.mkdir()
    (profile / "ipython_kernel_config.py").write_text(KERNEL_CONFIG, encoding="utf-8")
    environ["IPYTHONDIR"] = str(ipython_dir)
    return ipython_dir


def setup(app: Sphinx) -> dict:
    minimal_tracebacks()
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
