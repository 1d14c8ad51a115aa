"""Flatten: the bridge from feature maps to a Dense layer.

``x (N, C, H, W) -> (N, C*H*W)``, row-major, so feature ``c*H*W + i*W + j`` is ``x[n, c, i, j]``.
Nothing is learned and nothing is computed: backward only reshapes the gradient back to
``(N, C, H, W)``.  (:class:`cnn_lessons.fast.FastFlatten` also gives the gradient the memory
layout of the input.)  The one real bug this layer invites is flattening the batch axis away
(``x.reshape(-1)``) or reshaping in a different order in backward than in forward.
"""

from __future__ import annotations

import math

import numpy as np

from .layer import Layer


class Flatten(Layer):
    """``(N, d1, d2, ...) -> (N, d1*d2*...)``."""

    def forward(self, x):
        """``x (N, d1, d2, ...) -> (N, d1*d2*...)``; remembers the input's shape."""
        x = self._check_input(x, range(2, 33), "(N, ...)")
        self._cache = x.shape
        return x.reshape(x.shape[0], math.prod(x.shape[1:]))   # -1 is ambiguous when N = 0

    def backward(self, dout):
        """``dout (N, d1*d2*...) -> dx (N, d1, d2, ...)``, the input's shape."""
        x_shape = self._saved()
        dout = self._check_dout(dout, (x_shape[0], int(np.prod(x_shape[1:]))))
        return dout.reshape(x_shape)
