"""Make the book's kernels draw matplotlib figures inline, whatever ``MPLBACKEND`` says.

The chapters are executed by Jupyter kernels started from the Sphinx process, and a kernel
inherits its environment. When ``MPLBACKEND`` names a non-interactive backend -- CI scripts
often export ``MPLBACKEND=Agg`` for the tests -- ``plt.show()`` in a chapter draws nothing:
the figure is silently missing from the page and the build still succeeds. This extension
sets ``MPLBACKEND`` to matplotlib's inline backend for the kernels of the build, so every
figure becomes a PNG output of its cell (PNG is the inline backend's default format).

Registered in ``_config.yml``::

    sphinx:
      local_extensions:
        inline_figures: book/_ext
"""

from __future__ import annotations

import os

from sphinx.application import Sphinx
from sphinx.util import logging

INLINE_BACKEND = "module://matplotlib_inline.backend_inline"

logger = logging.getLogger(__name__)


def use_inline_backend(environ=os.environ) -> None:
    """Set ``environ["MPLBACKEND"]`` to the inline backend (a mapping, default ``os.environ``)."""
    previous = environ.get("MPLBACKEND")
    if previous and previous != INLINE_BACKEND:
        logger.info(f"[inline_figures] MPLBACKEND={previous} replaced by the inline backend "
                    "for the book's kernels")
    environ["MPLBACKEND"] = INLINE_BACKEND


def setup(app: Sphinx) -> dict:
    use_inline_backend()
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
