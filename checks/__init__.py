"""checks: prove a layer right.

Three functions, each taking any object that follows the layer protocol (``params``, ``grads``,
``forward``, ``backward``; see :mod:`cnn_lessons.layer`) and an input batch ``x``, and each
returning a :class:`Report` (``.ok``, ``.status``, a readable ``str()``; they never raise on a
broken layer):

- :func:`gradcheck` -- backward against finite differences, plus the protocol's promises that
  finite differences miss (:mod:`checks.protocol`); a failure names its pattern
  (:mod:`checks.diagnose`);
- :func:`overfit_one_sample` -- can Adam learn through the layer?
- :func:`check_layer` -- both.

Each runs under a time limit (``timeout``, 60 s by default; :mod:`checks.guard`) and treats
every exception the layer raises, ``SystemExit`` and ``KeyboardInterrupt`` included, as the
layer's failure.  A check that proves nothing because of the input (a saturated sigmoid, every
ReLU off) is *inconclusive*: ``report.ok`` stays True, since a correct layer must never fail,
and ``report.status`` says ``"INCONCLUSIVE"``.

From the shell: ``python -m checks`` checks every built-in layer, ``python -m checks
mylayers.py:make_layer`` (or ``mymodule:make_layer``) checks the ``(layer, x)`` that
``make_layer()`` returns.
"""

from . import guard
from .finite_differences import TIMEOUT, gradcheck
from .overfit import overfit_one_sample
from .report import Report, Row, layer_name


def check_layer(layer, x, *, seed: int = 0, timeout: float | None = TIMEOUT) -> Report:
    """:func:`gradcheck` and :func:`overfit_one_sample` in one report, within one time limit
    of ``timeout`` seconds (None: no limit).

    When the finite differences vouch for every gradient, an overfit stage that still stalls
    is not blamed on the gradient: it becomes inconclusive, with the reason (usually an input
    that saturates the layer) and what to try.
    """
    report = Report(layer_name(layer))
    with guard.user_rng_kept():
        try:
            with guard.guarded(timeout):
                report.rows += gradcheck(layer, x, seed=seed, timeout=None).rows
                if any(r.check == "time limit" for r in report.rows):
                    return report
                overfit = overfit_one_sample(layer, x, seed=seed, timeout=None)
        except guard.LayerTimeout as err:
            report.add("time limit", False, err.detail())
            return report
    fd = [r for r in report.rows if r.check.startswith("dL/d")]
    vouched = bool(fd) and all(r.ok for r in fd)
    for row in overfit.rows:
        if vouched and not row.ok and row.steps is not None and row.loss == row.loss:
            row.ok, row.inconclusive = True, True
            row.detail = (f"inconclusive: loss still {row.loss:.4f} after {row.steps} steps, "
                          "although the finite differences confirm every gradient here, so the "
                          "stall is not the gradient's fault: this x or configuration is hard "
                          "to fit (saturated or nearly constant output?); try x with entries of "
                          "order 1")
    report.rows += overfit.rows
    return report


__all__ = ["gradcheck", "overfit_one_sample", "check_layer", "Report", "Row"]
