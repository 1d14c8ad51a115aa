"""Flatten: the bridge from feature maps to a Dense layer.

``x (N, C, H, W) -> (N, C*H*W)``, row-major, so feature ``c*H*W + i*W + j`` is ``x[n, c, i, j]``.
Nothing is learned and nothing is computed: backward only reshapes the gradient back to
``(N, C, H, W)``.  The one real bug this layer invites is flattening the batch axis away
(``x.reshape(-1)``) or reshaping in a different order in backward than in forward.
"""

from __future__ import annotations

import numpy as np

from .layer import Layer


class Flatten(Layer):
    """``(N, d1, d2, ...) -> (N, d1*d2*...)``."""

    def forward(self, x):
        x = self._check_input(x, range(2, 33), "(N, ...)")
        self._cache = x
        return x.reshape(x.shape[0], -1)

    def backward(self, dout):
        x = self._saved()
        dout = self._check_dout(dout, (x.shape[0], int(np.prod(x.shape[1:]))))
        # The same values as dout.reshape(x.shape), laid out in memory like x (channels-last
        # after this package's conv layers), so the layers below read it without strided loops.
        dx = np.empty_like(x, dtype=np.result_type(dout, x))
        dx[...] = dout.reshape(x.shape)
        return dx
