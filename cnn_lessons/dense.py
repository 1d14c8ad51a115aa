"""Dense (fully connected) layer: ``out = x @ W + b``.

Shapes: ``x (N, in_features)``, ``W (in_features, out_features)``, ``b (out_features,)``,
``out (N, out_features)``.  Backward, from ``dout (N, out_features)``:

- ``dW = x.T @ dout``      (in_features, out_features) -- summed over the batch
- ``db = dout.sum(0)``     (out_features,)             -- summed over the batch
- ``dx = dout @ W.T``      (N, in_features)
"""

from __future__ import annotations

import numpy as np

from .init import initialise
from .layer import Layer, as_rng
from .validate import float_dtype, sizes


class Dense(Layer):
    """``Dense(in_features, out_features)``: an affine map applied to each row of the batch."""

    def __init__(self, in_features: int, out_features: int, *, init: str = "he",
                 rng=None, dtype=np.float32):
        super().__init__()
        in_features, out_features = sizes("Dense", in_features=in_features, out_features=out_features)
        name = f"Dense({in_features}, {out_features})"
        dtype, rng = float_dtype(name, dtype), as_rng(rng, name)
        self.in_features, self.out_features, self.init = in_features, out_features, init
        self.params["W"] = initialise(init, (in_features, out_features), in_features,
                                      out_features, rng, dtype)
        self.params["b"] = np.zeros(out_features, dtype=dtype)

    def config(self):
        return {"in_features": self.in_features, "out_features": self.out_features}

    def forward(self, x):
        """``x (N, in_features) -> (N, out_features)``."""
        x = self._check_input(x, 2, f"(N, {self.in_features})", {1: self.in_features})
        self._cache = x
        return x @ self.params["W"] + self.params["b"]

    def backward(self, dout):
        """``dout (N, out_features) -> dx (N, in_features)``; fills ``grads['W']``, ``grads['b']``."""
        x = self._saved()
        dout = self._check_dout(dout, (len(x), self.out_features))
        self.grads["W"] = x.T @ dout
        self.grads["b"] = dout.sum(axis=0)
        return dout @ self.params["W"].T
