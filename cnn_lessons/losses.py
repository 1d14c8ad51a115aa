"""Losses: each turns the network's output and the targets into one number, the mean over the
batch, and hands back the gradient of that number with respect to the output.

Interface: ``loss = L.forward(logits, y)`` returns a Python float; ``dlogits = L.backward()``
returns an array shaped like ``logits``.

- :class:`SoftmaxCrossEntropy` -- ``logits (N, K)``, integer labels ``y (N,)``.
  ``loss = mean_n( logsumexp(z_n) - z_n[y_n] )``; ``dlogits = (softmax(z) - onehot(y)) / N``.
- :class:`BCEWithLogits` -- ``logits`` and targets ``y`` in [0, 1] of the same shape.
  ``loss = mean( max(z, 0) - z y + log(1 + exp(-|z|)) )``; ``dlogits = (sigmoid(z) - y) / size``.
- :class:`MSELoss` -- predictions and targets of the same shape (PyTorch's ``MSELoss``:
  the mean over every element). ``loss = mean((p - y)**2)``; ``dp = 2 (p - y) / size``.
"""

from __future__ import annotations

import numpy as np

from .activations import sigmoid, softmax
from .validate import array


class Loss:
    """Shared checks: backward after forward, finite inputs of the right shapes."""

    def __init__(self):
        self._cache = None

    def _require_forward(self):
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}: backward() was called before forward()")
        return self._cache

    def _finite(self, logits):
        """A non-empty float array without NaN or inf: a mean over nothing, or over NaN, is NaN."""
        return array(type(self).__name__, "predictions", logits, finite=True, nonempty=True)

    def _same_shape(self, logits, y):
        logits, y = self._finite(logits), np.asarray(y)
        if logits.shape != y.shape:
            raise ValueError(
                f"{type(self).__name__}: predictions and targets must have the same shape, "
                f"got {logits.shape} and {y.shape}"
            )
        if y.dtype.kind not in "biuf":
            raise ValueError(f"{type(self).__name__}: expected numeric targets, got dtype {y.dtype}")
        y = array(type(self).__name__, "targets", y.astype(logits.dtype), finite=True)
        return logits, y

    def __call__(self, logits, y) -> float:
        return self.forward(logits, y)


class SoftmaxCrossEntropy(Loss):
    """Softmax followed by cross-entropy, fused: stable for any logits and with a simple
    gradient, ``(p - onehot(y)) / N``."""

    def forward(self, logits, y) -> float:
        """``logits (N, K)`` float, ``y (N,)`` integer class labels in ``[0, K)``."""
        logits, y = np.asarray(logits), np.asarray(y)
        if logits.ndim != 2:
            raise ValueError(f"SoftmaxCrossEntropy: expected logits of shape (N, K), got {logits.shape}")
        logits = self._finite(logits)
        n, k = logits.shape
        if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(
                f"SoftmaxCrossEntropy: expected integer labels of shape ({n},), "
                f"got {y.dtype} array of shape {y.shape}"
            )
        if y.min() < 0 or y.max() >= k:
            raise ValueError(f"SoftmaxCrossEntropy: labels must lie in [0, {k}), "
                             f"got values from {y.min()} to {y.max()}")
        z = logits - logits.max(axis=1, keepdims=True)         # (N, K), max of each row is 0
        log_sum = np.log(np.exp(z).sum(axis=1))                 # (N,)
        log_p_true = z[np.arange(n), y] - log_sum               # (N,)  log softmax at the label
        self._cache = (z, log_sum, y)
        return float(-log_p_true.mean())

    def backward(self) -> np.ndarray:
        """``dlogits (N, K) = (softmax(logits) - onehot(y)) / N``."""
        z, log_sum, y = self._require_forward()
        n = len(y)
        d = np.exp(z - log_sum[:, None])                        # softmax, (N, K)
        d[np.arange(n), y] -= 1
        return d / d.dtype.type(n)


class BCEWithLogits(Loss):
    """Binary cross-entropy on logits (sigmoid fused in), mean over every element."""

    def forward(self, logits, y) -> float:
        z, y = self._same_shape(logits, y)
        if y.size and (y.min() < 0 or y.max() > 1):
            raise ValueError("BCEWithLogits: targets must lie in [0, 1]")
        self._cache = (z, y)
        loss = np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))
        return float(loss.mean())

    def backward(self) -> np.ndarray:
        z, y = self._require_forward()
        return (sigmoid(z) - y) / z.dtype.type(z.size)


class MSELoss(Loss):
    """Mean squared error over every element (as PyTorch's ``MSELoss``)."""

    def forward(self, pred, y) -> float:
        p, y = self._same_shape(pred, y)
        diff = p - y
        self._cache = diff
        return float((diff * diff).mean())

    def backward(self) -> np.ndarray:
        diff = self._require_forward()
        return 2 * diff / diff.dtype.type(diff.size)


__all__ = ["SoftmaxCrossEntropy", "BCEWithLogits", "MSELoss", "softmax", "sigmoid"]
