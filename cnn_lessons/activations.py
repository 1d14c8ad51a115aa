"""Elementwise activations, and softmax.

Each works on any shape and keeps its input's dtype.  Backward multiplies the upstream gradient
by the local derivative, written in terms of what forward already computed:

============  ==========================  ===============================
layer         forward ``y``                ``dx = dout * ...``
============  ==========================  ===============================
ReLU          ``max(x, 0)``                ``(x > 0)``
LeakyReLU     ``x if x > 0 else a x``      ``1 if x > 0 else a``
Sigmoid       ``1 / (1 + exp(-x))``        ``y (1 - y)``
Tanh          ``tanh(x)``                  ``1 - y**2``
============  ==========================  ===============================

Softmax couples the entries of a row, so its backward is a Jacobian-vector product:
``dx = y * (dout - sum(dout * y, axis=-1))``.
"""

from __future__ import annotations

import numpy as np

from .layer import Layer
from .validate import number

ANY = "(N, ...)"


class ReLU(Layer):
    """``max(x, 0)``.  At exactly ``x = 0`` the derivative is taken as 0 (a kink)."""

    def forward(self, x):
        x = self._check_input(x, range(1, 33), ANY)
        self._cache = x > 0
        return np.maximum(x, 0, dtype=x.dtype)

    def backward(self, dout):
        mask = self._saved()
        dout = self._check_dout(dout, mask.shape)
        return dout * mask


class LeakyReLU(Layer):
    """``x`` for ``x > 0``, ``negative_slope * x`` otherwise (PyTorch's name and default)."""

    def __init__(self, negative_slope: float = 0.01):
        super().__init__()
        self.negative_slope = number("LeakyReLU", "negative_slope", negative_slope)

    def config(self):
        return {"negative_slope": self.negative_slope}

    def forward(self, x):
        x = self._check_input(x, range(1, 33), ANY)
        positive = x > 0
        self._cache = positive
        return np.where(positive, x, x * x.dtype.type(self.negative_slope))

    def backward(self, dout):
        positive = self._saved()
        dout = self._check_dout(dout, positive.shape)
        return np.where(positive, dout, dout * dout.dtype.type(self.negative_slope))


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function: never evaluates ``exp`` of a large positive."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


class Sigmoid(Layer):
    """``1 / (1 + exp(-x))``, computed without overflow for large ``|x|``."""

    def forward(self, x):
        x = self._check_input(x, range(1, 33), ANY)
        y = sigmoid(x)
        self._cache = y
        return y

    def backward(self, dout):
        y = self._saved()
        dout = self._check_dout(dout, y.shape)
        return dout * y * (1 - y)


class Tanh(Layer):
    """``tanh(x)``."""

    def forward(self, x):
        x = self._check_input(x, range(1, 33), ANY)
        y = np.tanh(x)
        self._cache = y
        return y

    def backward(self, dout):
        y = self._saved()
        dout = self._check_dout(dout, y.shape)
        return dout * (1 - y * y)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Stable softmax: subtracting the row maximum leaves the result unchanged and keeps
    ``exp`` at most 1, so logits of 1e4 give probabilities, not NaN."""
    z = x - x.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


class Softmax(Layer):
    """Softmax over the last axis: ``x (N, K) -> probabilities (N, K)``, rows summing to 1.

    For classification prefer :class:`cnn_lessons.losses.SoftmaxCrossEntropy` on the logits:
    it fuses softmax with the loss and is both faster and more stable.
    """

    def forward(self, x):
        x = self._check_input(x, range(2, 33), "(N, K)")       # 1-D: which axis is the batch?
        if x.shape[-1] == 0:
            raise ValueError(f"{self!r}: a softmax over K = 0 entries, input shape {x.shape}")
        y = softmax(x, axis=-1)
        self._cache = y
        return y

    def backward(self, dout):
        y = self._saved()
        dout = self._check_dout(dout, y.shape)
        return y * (dout - (dout * y).sum(axis=-1, keepdims=True))
