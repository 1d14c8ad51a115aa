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
variance uses the unbiased batch variance, as PyTorch does).  A faster twin for training is
:class:`cnn_lessons.fast.FastBatchNorm`.
"""

from __future__ import annotations

import numpy as np

from .layer import Layer, as_rng
from .validate import float_dtype, number, sizes


class Dropout(Layer):
    """``Dropout(p=0.5, rng=None)``: zero each activation with probability ``p`` in training."""

    def __init__(self, p: float = 0.5, *, rng=None):
        super().__init__()
        self.p = number("Dropout", "p", p, 0, 1, high_open=True)
        self.rng = as_rng(rng, "Dropout")

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
        mask, shape = self._saved()
        dout = self._check_dout(dout, shape)
        return dout * mask


def to_rows(x):
    """``(N, D)`` -> itself; ``(N, C, H, W) -> (N*H*W, C)``: one column per channel (a view when
    ``x`` is channels-last in memory, as the convolutions' outputs are)."""
    return x if x.ndim == 2 else x.transpose(0, 2, 3, 1).reshape(-1, x.shape[1])


def from_rows(x2, shape):
    """Inverse of :func:`to_rows` for an input of ``shape``: ``(M, C) -> shape``."""
    if len(shape) == 2:
        return x2
    n, c, h, w = shape
    return x2.reshape(n, h, w, c).transpose(0, 3, 1, 2)


def batchnorm_forward(x, gamma, beta, eps=1e-5):
    """Training-mode batch norm of the columns of ``x (M, C)``; ``gamma``, ``beta (C,)`` ->
    ``(out (M, C), cache)`` with ``cache``: ``"xhat" (M, C)``, ``"inv_std" (C,)``, ``"mu" (C,)``,
    ``"var" (C,)`` (divided by M)."""
    mu = x.mean(axis=0)                        # (C,)
    xc = x - mu                                # (M, C)
    var = (xc * xc).mean(axis=0)               # (C,), biased
    inv_std = 1 / np.sqrt(var + eps)           # (C,)
    xhat = xc * inv_std                        # (M, C)
    out = gamma * xhat + beta
    return out, {"xhat": xhat, "inv_std": inv_std, "mu": mu, "var": var}


def batchnorm_backward(dout, gamma, cache):
    """Backward of :func:`batchnorm_forward`: ``dout (M, C) -> (dx (M, C), dgamma (C,),
    dbeta (C,))``."""
    xhat, inv_std = cache["xhat"], cache["inv_std"]
    dbeta = dout.sum(axis=0)                   # (C,)
    dgamma = (dout * xhat).sum(axis=0)         # (C,)
    dxhat = dout * gamma                       # (M, C)
    dx = (dxhat - dxhat.mean(axis=0) - xhat * (dxhat * xhat).mean(axis=0)) * inv_std
    return dx, dgamma, dbeta


class BatchNorm(Layer):
    """``BatchNorm(num_features, eps=1e-5, momentum=0.1)`` for ``(N, D)`` or ``(N, C, H, W)``:
    the output has the input's shape.

    ``params``: ``gamma (num_features,)``, ``beta (num_features,)``;
    ``buffers``: ``running_mean``, ``running_var`` (saved with the model, not learned).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1,
                 *, dtype=np.float32):
        super().__init__()
        where = type(self).__name__
        num_features, dtype = sizes(where, num_features=num_features), float_dtype(where, dtype)
        self.eps = number(f"{where}({num_features})", "eps", eps, 0, low_open=True)
        self.momentum = number(f"{where}({num_features})", "momentum", momentum, 0, 1)
        self.num_features = num_features
        self.params["gamma"] = np.ones(num_features, dtype=dtype)
        self.params["beta"] = np.zeros(num_features, dtype=dtype)
        self.buffers["running_mean"] = np.zeros(num_features, dtype=dtype)
        self.buffers["running_var"] = np.ones(num_features, dtype=dtype)

    def config(self):
        cfg = {"num_features": self.num_features}
        if self.eps != 1e-5:
            cfg["eps"] = self.eps
        if self.momentum != 0.1:
            cfg["momentum"] = self.momentum
        return cfg

    def _check(self, x):
        """``x (N, C)`` or ``(N, C, H, W)`` with ``C = num_features``, else a clear error.
        float16 is refused: squares above 65504 overflow, and the variance becomes inf."""
        x = self._check_input(x, (2, 4), f"(N, {self.num_features}) or "
                              f"(N, {self.num_features}, H, W)", {1: self.num_features})
        if x.dtype.itemsize < 4:
            raise ValueError(f"{self!r}: a {x.dtype} input overflows in the variance; "
                             "convert it with x.astype(np.float32)")
        return x

    def forward(self, x):
        """``x (N, D)`` or ``(N, C, H, W)`` -> the same shape."""
        x = self._check(x)
        x2 = to_rows(x)                                            # (M, C)
        gamma, beta = self.params["gamma"], self.params["beta"]
        if self.training:
            if len(x2) < 2:                      # one value: no variance to estimate
                raise ValueError(f"{self!r}: training needs more than one value per feature to "
                                 f"estimate a variance, got input shape {x.shape}")
            out2, cache = batchnorm_forward(x2, gamma, beta, self.eps)
            m, mom = len(x2), self.momentum
            for name, batch in (("running_mean", cache["mu"]),
                                ("running_var", cache["var"] * (m / (m - 1)))):  # unbiased
                running = self.buffers[name]
                running *= 1 - mom
                running += (mom * batch).astype(running.dtype)
        else:
            inv_std = (1 / np.sqrt(self.buffers["running_var"] + self.eps)).astype(x.dtype)
            xhat = (x2 - self.buffers["running_mean"].astype(x.dtype)) * inv_std
            out2, cache = gamma * xhat + beta, {"xhat": xhat, "inv_std": inv_std}
        self._cache = (cache, x.shape, self.training)
        return from_rows(out2, x.shape)

    def backward(self, dout):
        """``dout`` (the input's shape) -> ``dx``; fills ``grads['gamma']``, ``grads['beta']``."""
        cache, shape, batch_stats = self._saved()
        d2, gamma = to_rows(self._check_dout(dout, shape)), self.params["gamma"]
        if batch_stats:
            dx2, dgamma, dbeta = batchnorm_backward(d2, gamma, cache)
        else:                                    # evaluation: the statistics are constants
            dx2 = d2 * (gamma * cache["inv_std"])
            dgamma, dbeta = (d2 * cache["xhat"]).sum(axis=0), d2.sum(axis=0)
        self.grads["gamma"], self.grads["beta"] = dgamma, dbeta
        return from_rows(dx2, shape)
