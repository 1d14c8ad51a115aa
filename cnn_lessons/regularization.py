"""Regularization layers: Dropout and BatchNorm.

Both behave differently while training and while evaluating; set ``layer.training`` (or call
``model.train()`` / ``model.eval()``).

**Dropout** (inverted): in training each activation is kept with probability ``1 - p`` and the
kept ones are scaled by ``1 / (1 - p)``, so the expected output equals the input and evaluation
is the identity.  ``out = x * mask``, ``dx = dout * mask`` with
``mask = (u >= p) / (1 - p)``.

**BatchNorm** normalises each feature over the batch -- per channel over ``(N, H, W)`` for images
``(N, C, H, W)``, per column for ``(N, D)`` -- then scales and shifts with learned ``gamma``,
``beta``.  With ``m`` values per feature::

    mu = mean(x);  var = mean((x - mu)**2);  xhat = (x - mu) / sqrt(var + eps)
    out = gamma * xhat + beta
    dxhat = dout * gamma
    dx = (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)) / sqrt(var + eps)

The two ``mean`` terms come from ``mu`` and ``var`` depending on every ``x``; dropping them is
the classic batch-norm bug.  In evaluation the running averages replace the batch statistics:
``running = (1 - momentum) * running + momentum * batch`` (PyTorch's convention; the running
variance uses the unbiased batch variance, as PyTorch does).
"""

from __future__ import annotations

import numpy as np

from .layer import Layer, as_rng


class Dropout(Layer):
    """``Dropout(p=0.5, rng=None)``: zero each activation with probability ``p`` in training."""

    def __init__(self, p: float = 0.5, *, rng=None):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"Dropout: p must lie in [0, 1), got {p}")
        self.p = float(p)
        self.rng = as_rng(rng)

    def config(self):
        return {"p": self.p}

    def forward(self, x):
        """``x (N, ...) -> same shape``; identity when not training or ``p == 0``."""
        x = self._check_input(x, range(1, 33), "(N, ...)")
        if not self.training or self.p == 0:
            self._cache = np.ones((), dtype=x.dtype), x.shape
            return x
        keep = self.rng.random(x.shape, dtype=np.float32 if x.dtype == np.float32 else np.float64) >= self.p
        mask = keep.astype(x.dtype) / x.dtype.type(1 - self.p)
        self._cache = mask, x.shape
        return x * mask

    def backward(self, dout):
        mask, shape = self._cache if self._cache is not None else (None, ())
        dout = self._check_dout(dout, shape)
        return dout * mask


class BatchNorm(Layer):
    """``BatchNorm(num_features, eps=1e-5, momentum=0.1)`` for ``(N, D)`` or ``(N, C, H, W)``.

    ``params``: ``gamma (num_features,)``, ``beta (num_features,)``;
    ``buffers``: ``running_mean``, ``running_var`` (saved with the model, not learned).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1,
                 *, dtype=np.float32):
        super().__init__()
        self.num_features, self.eps, self.momentum = int(num_features), float(eps), float(momentum)
        self.params["gamma"] = np.ones(num_features, dtype=dtype)
        self.params["beta"] = np.zeros(num_features, dtype=dtype)
        self.buffers["running_mean"] = np.zeros(num_features, dtype=dtype)
        self.buffers["running_var"] = np.ones(num_features, dtype=dtype)

    def config(self):
        return {"num_features": self.num_features, "eps": self.eps, "momentum": self.momentum}

    def _axes(self, x):
        """Axes to average over, and the shape that broadcasts a per-feature vector."""
        if x.ndim == 2:
            return (0,), (1, -1)
        return (0, 2, 3), (1, -1, 1, 1)

    def forward(self, x):
        """``x (N, D)`` or ``(N, C, H, W)`` -> the same shape."""
        x = self._check_input(x, (2, 4), f"(N, {self.num_features}) or (N, {self.num_features}, H, W)",
                              {1: self.num_features})
        axes, shape = self._axes(x)
        gamma, beta = self.params["gamma"].reshape(shape), self.params["beta"].reshape(shape)
        if self.training:
            m = x.size // x.shape[1]
            if m < 2:
                raise ValueError(f"{self!r}: training needs more than one value per feature to "
                                 f"estimate a variance, got input shape {x.shape}")
            mu = x.mean(axis=axes, keepdims=True)
            xc = x - mu
            var = (xc * xc).mean(axis=axes, keepdims=True)
            inv_std = 1 / np.sqrt(var + x.dtype.type(self.eps))
            xhat = xc * inv_std
            mom = self.momentum
            rm, rv = self.buffers["running_mean"], self.buffers["running_var"]
            rm *= 1 - mom
            rm += mom * mu.reshape(-1).astype(rm.dtype)
            rv *= 1 - mom
            rv += mom * (var.reshape(-1) * m / (m - 1)).astype(rv.dtype)
            self._cache = (xhat, inv_std, axes, shape)
        else:
            mu = self.buffers["running_mean"].reshape(shape)
            inv_std = 1 / np.sqrt(self.buffers["running_var"].reshape(shape) + self.eps)
            xhat = ((x - mu) * inv_std).astype(x.dtype, copy=False)
            self._cache = (xhat, inv_std.astype(x.dtype), None, shape)
        return xhat * gamma + beta

    def backward(self, dout):
        """``dout -> dx`` (same shape); fills ``grads['gamma']`` and ``grads['beta']``."""
        xhat, inv_std, axes, shape = self._cache if self._cache is not None else (None,) * 4
        dout = self._check_dout(dout, xhat.shape if xhat is not None else ())
        red = (0,) if dout.ndim == 2 else (0, 2, 3)
        self.grads["gamma"] = (dout * xhat).sum(axis=red)
        self.grads["beta"] = dout.sum(axis=red)
        dxhat = dout * self.params["gamma"].reshape(shape)
        if axes is None:                    # evaluation: the statistics are constants
            return dxhat * inv_std
        return (dxhat - dxhat.mean(axis=axes, keepdims=True)
                - xhat * (dxhat * xhat).mean(axis=axes, keepdims=True)) * inv_std
