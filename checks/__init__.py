"""checks: prove a layer right.

Three functions, each taking any object that follows the layer protocol (``params``, ``grads``,
``forward``, ``backward``; see :mod:`cnn_lessons.layer`) and an input batch ``x``, and each
returning a :class:`Report` (``.ok``, a readable ``str()``; they never raise on a broken layer):

- :func:`gradcheck` -- backward against finite differences, plus the protocol's promises that
  finite differences miss (:mod:`checks.protocol`);
- :func:`overfit_one_sample` -- can Adam learn through the layer?
- :func:`check_layer` -- both.

From the shell: ``python -m checks`` checks every built-in layer, ``python -m checks
mymodule:make_layer`` checks the ``(layer, x)`` that ``make_layer()`` returns.
"""

from .finite_differences import gradcheck
from .overfit import overfit_one_sample
from .report import Report, Row


def check_layer(layer, x, *, seed: int = 0) -> Report:
    """:func:`gradcheck` and :func:`overfit_one_sample` in one report."""
    report = gradcheck(layer, x, seed=seed)
    report.rows += overfit_one_sample(layer, x, seed=seed).rows
    return report


__all__ = ["gradcheck", "overfit_one_sample", "check_layer", "Report", "Row"]
