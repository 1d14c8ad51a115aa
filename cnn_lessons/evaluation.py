"""Evaluation: how good is a trained classifier, and where does it go wrong?

Everything here works on integer class labels, ``y_true (N,)`` and ``y_pred (N,)`` with values in
``[0, K)``:

- :func:`accuracy` -- the fraction of predictions that are right.
- :func:`confusion_matrix` -- ``cm[i, j]`` counts the samples of true class ``i`` predicted as
  class ``j``; the diagonal holds the right answers, everything off it is a mistake.
- :func:`precision_recall` -- per class, read off the confusion matrix:
  ``precision[k] = cm[k, k] / cm[:, k].sum()`` (of everything predicted ``k``, how much was ``k``)
  and ``recall[k] = cm[k, k] / cm[k, :].sum()`` (of every true ``k``, how much was found).
- :func:`misclassified` -- the indices of the wrong predictions, to look at them.
- :func:`evaluate` -- runs a model over a data set in evaluation mode and gathers all of the
  above (plus the mean cross-entropy loss) in an :class:`Evaluation`; :func:`format_report`
  prints it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .losses import SoftmaxCrossEntropy
from .model import eval_mode  # noqa: F401  (part of this module's interface)


# -- checking labels -------------------------------------------------------------------------

def _labels(name: str, y, num_classes: int | None = None) -> np.ndarray:
    """``y`` as a 1-D integer array, refusing anything else (and values outside ``[0, K)``)."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"evaluation: {name} must be a 1-D array of class labels (N,), "
                         f"got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"evaluation: {name} must hold integer class labels, got dtype {y.dtype}")
    if num_classes is not None and y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"evaluation: {name} must lie in [0, {num_classes}), "
                         f"got values from {y.min()} to {y.max()}")
    return y


def _pair(y_true, y_pred, num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Check both label arrays and that they have the same, non-zero length."""
    y_true = _labels("y_true", y_true, num_classes)
    y_pred = _labels("y_pred", y_pred, num_classes)
    if len(y_true) != len(y_pred):
        raise ValueError(f"evaluation: y_true and y_pred must have the same length, "
                         f"got {len(y_true)} and {len(y_pred)}")
    if len(y_true) == 0:
        raise ValueError("evaluation: y_true and y_pred are empty; there is nothing to evaluate")
    return y_true, y_pred


# -- metrics from labels ----------------------------------------------------------------------

def accuracy(y_true, y_pred) -> float:
    """The fraction of right predictions, in ``[0, 1]``.

    ``y_true (N,)``, ``y_pred (N,)`` integer labels.
    """
    y_true, y_pred = _pair(y_true, y_pred)
    return float(np.mean(y_true == y_pred))


def confusion_matrix(y_true, y_pred, num_classes: int = 10) -> np.ndarray:
    """``cm (K, K)`` int64: ``cm[i, j]`` = number of samples of true class ``i`` predicted ``j``.

    ``y_true (N,)``, ``y_pred (N,)`` integer labels in ``[0, K)`` with ``K = num_classes``.
    Rows are true classes, columns predicted classes; ``cm.sum() == N``.

    Each pair ``(i, j)`` gets its own number ``i * K + j`` in ``[0, K*K)``; counting those numbers
    with ``np.bincount`` and folding the ``K*K`` counts into a ``K x K`` table is the whole
    computation -- no loop over samples.
    """
    k = int(num_classes)
    if k < 1:
        raise ValueError(f"confusion_matrix: num_classes must be >= 1, got {num_classes}")
    y_true, y_pred = _pair(y_true, y_pred, k)
    pair_index = y_true.astype(np.int64) * k + y_pred.astype(np.int64)     # (N,)
    return np.bincount(pair_index, minlength=k * k).reshape(k, k).astype(np.int64)


def precision_recall(cm) -> tuple[np.ndarray, np.ndarray]:
    """``(precision (K,), recall (K,))`` from a confusion matrix ``cm (K, K)`` (rows = true).

    ``precision[k] = cm[k, k] / cm[:, k].sum()`` and ``recall[k] = cm[k, k] / cm[k, :].sum()``.
    Where the denominator is 0 -- class ``k`` never predicted (precision) or absent from the data
    (recall) -- the value is undefined and reported as 0.
    """
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"precision_recall: expected a square confusion matrix (K, K), "
                         f"got shape {cm.shape}")
    if np.any(cm < 0):
        raise ValueError("precision_recall: a confusion matrix holds counts, got negative entries")
    right = np.diag(cm).astype(np.float64)            # (K,) correct predictions per class
    predicted = cm.sum(axis=0).astype(np.float64)     # (K,) column sums: predicted as k
    actual = cm.sum(axis=1).astype(np.float64)        # (K,) row sums: truly k
    precision = np.divide(right, predicted, out=np.zeros_like(right), where=predicted > 0)
    recall = np.divide(right, actual, out=np.zeros_like(right), where=actual > 0)
    return precision, recall


def misclassified(y_true, y_pred) -> np.ndarray:
    """Indices ``(M,)`` (int64, ascending) of the samples where ``y_pred != y_true``."""
    y_true, y_pred = _pair(y_true, y_pred)
    return np.flatnonzero(y_true != y_pred).astype(np.int64)


# -- running a model ------------------------------------------------------------------------------

@dataclass(eq=False)          # holds arrays: compare fields, not evaluations
class Evaluation:
    """The results of :func:`evaluate` on ``N`` samples of ``K`` classes.

    - ``accuracy``: float in ``[0, 1]``
    - ``loss``: mean loss over the ``N`` samples (float), or ``None`` if not computed
    - ``confusion_matrix``: ``(K, K)`` int64, rows = true class, columns = predicted class
    - ``precision``, ``recall``: ``(K,)`` float64 (0 where undefined)
    - ``labels``: ``(N,)`` the true labels; ``predictions``: ``(N,)`` the predicted ones
    - ``misclassified``: ``(M,)`` indices of the wrong predictions
    """

    accuracy: float
    loss: float | None
    confusion_matrix: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    labels: np.ndarray
    predictions: np.ndarray
    misclassified: np.ndarray

    @property
    def num_samples(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.confusion_matrix)


def evaluate(model, x, y, batch_size: int = 1000, loss=None) -> Evaluation:
    """Run ``model`` on ``x`` in evaluation mode, in batches, and measure it against ``y``.

    ``x (N, ...)`` the inputs (e.g. ``(N, 1, 28, 28)``), ``y (N,)`` integer labels in ``[0, K)``
    where ``K`` is the number of outputs of the model (its logits are ``(N, K)``).

    ``loss``: ``None`` (default) for the mean softmax cross-entropy of the logits; any object
    with ``forward(logits, y) -> float`` returning a batch *mean* (e.g. another loss from
    :mod:`cnn_lessons.losses`); or ``False`` to skip the loss (``Evaluation.loss is None``).
    The batch means are combined weighted by batch size, so the result is the mean over all
    ``N`` samples whatever ``batch_size`` is.

    Dropout and BatchNorm run in evaluation mode; the model's training flags are restored after.
    """
    n = len(x)
    y = _labels("y", y)
    if len(y) != n:
        raise ValueError(f"evaluate: x and y must have the same length, got {n} inputs "
                         f"and {len(y)} labels")
    if n == 0:
        raise ValueError("evaluate: x and y are empty; there is nothing to evaluate")
    if int(batch_size) < 1:
        raise ValueError(f"evaluate: batch_size must be >= 1, got {batch_size}")
    batch_size = int(batch_size)
    loss_fn = SoftmaxCrossEntropy() if loss is None else (None if loss is False else loss)

    predictions, loss_sum = [], 0.0
    with eval_mode(model):
        for start in range(0, n, batch_size):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            logits = model.forward(xb)                                  # (B, K)
            if start == 0:
                if logits.ndim != 2:
                    raise ValueError(f"evaluate: the model must output logits (N, K), "
                                     f"got shape {logits.shape}")
                k = logits.shape[1]
                _labels("y", y, k)     # every label must name one of the model's K outputs
            predictions.append(logits.argmax(axis=1))
            if loss_fn is not None:
                loss_sum += loss_fn.forward(logits, yb) * len(yb)

    y_pred = np.concatenate(predictions).astype(np.int64)               # (N,)
    cm = confusion_matrix(y, y_pred, num_classes=k)
    precision, recall = precision_recall(cm)
    return Evaluation(
        accuracy=accuracy(y, y_pred),
        loss=None if loss_fn is None else loss_sum / n,
        confusion_matrix=cm,
        precision=precision,
        recall=recall,
        labels=y.astype(np.int64),
        predictions=y_pred,
        misclassified=misclassified(y, y_pred),
    )


# -- a readable report ------------------------------------------------------------------------

def _table(rows: list[list[str]], align: str, equal: bool = False) -> list[str]:
    """Rows of strings as aligned lines; ``align`` has one ``"<"`` or ``">"`` per column.
    ``equal=True`` gives every column after the first the same width."""
    widths = [max(len(row[c]) for row in rows) for c in range(len(align))]
    if equal and len(widths) > 1:
        widths[1:] = [max(widths[1:])] * (len(widths) - 1)
    return ["  ".join(f"{cell:{a}{w}}" for cell, a, w in zip(row, align, widths)).rstrip()
            for row in rows]


def format_report(ev: Evaluation, class_names=None, split: str = "test") -> str:
    """A plain-text report of an :class:`Evaluation`::

        test accuracy: 99.25%  (9925 of 10000 right)
        test loss: 0.0241

        class  precision  recall  support
        0         99.39%  99.59%      980
        ...

        confusion matrix (rows: true class, columns: predicted class)
        true\\pred    0     1  ...

    ``class_names``: ``K`` names for the classes (default ``"0"``, ``"1"``, ...); ``split`` names
    the data set in the first lines.
    """
    k = ev.num_classes
    names = [str(i) for i in range(k)] if class_names is None else [str(c) for c in class_names]
    if len(names) != k:
        raise ValueError(f"format_report: expected {k} class names, got {len(names)}")
    cm = ev.confusion_matrix
    right = int(np.trace(cm))
    lines = [f"{split} accuracy: {100 * ev.accuracy:.2f}%  ({right} of {ev.num_samples} right)"]
    if ev.loss is not None:
        lines.append(f"{split} loss: {ev.loss:.4f}")

    lines += ["", "per class:"]
    rows = [["class", "precision", "recall", "support"]]
    for i in range(k):
        rows.append([names[i], f"{100 * ev.precision[i]:.2f}%", f"{100 * ev.recall[i]:.2f}%",
                     str(int(cm[i].sum()))])
    lines += _table(rows, "<>>>")

    lines += ["", "confusion matrix (rows: true class, columns: predicted class):"]
    rows = [["true\\pred", *names]] + [[names[i], *(str(int(c)) for c in cm[i])] for i in range(k)]
    lines += _table(rows, "<" + ">" * k, equal=True)
    return "\n".join(lines)
