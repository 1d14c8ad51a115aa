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
        mask, shape = self._saved()
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
        self.sync = None    # set by parallel.DataParallel: replicas share the batch statistics

    def config(self):
        cfg = {"num_features": self.num_features}
        if self.eps != 1e-5:
            cfg["eps"] = self.eps
        if self.momentum != 0.1:
            cfg["momentum"] = self.momentum
        return cfg

    @staticmethod
    def _rows(a):
        """``(N, C, H, W) -> (N*H*W, C)``: per-channel statistics are per-column statistics of
        this matrix. Free (a view) when ``a`` is channels-last in memory, as conv outputs are."""
        return a if a.ndim == 2 else a.transpose(0, 2, 3, 1).reshape(-1, a.shape[1])

    @staticmethod
    def _unrows(a2, shape):
        """Inverse of :meth:`_rows` for an input of ``shape``."""
        if len(shape) == 2:
            return a2
        n, c, h, w = shape
        return a2.reshape(n, h, w, c).transpose(0, 3, 1, 2)

    def forward(self, x):
        """``x (N, D)`` or ``(N, C, H, W)`` -> the same shape."""
        x = self._check_input(x, (2, 4), f"(N, {self.num_features}) or (N, {self.num_features}, H, W)",
                              {1: self.num_features})
        x2 = self._rows(x)                                         # (M, C)
        gamma, beta = self.params["gamma"], self.params["beta"]
        if self.training:
            # the column sums and the number of rows (the last entry, exact in float64), of the
            # whole batch
            sums = self._total(np.append(np.einsum("ij->j", x2), np.float64(len(x2))))
            m = int(sums[-1])
            if m < 2:
                raise ValueError(f"{self!r}: training needs more than one value per feature to "
                                 f"estimate a variance, got input shape {x.shape}")
            mu = sums[:-1].astype(x2.dtype) / x2.dtype.type(m)                     # (C,)
            xc = x2 - mu                                                          # (M, C)
            var = self._total(np.einsum("ij,ij->j", xc, xc)) / x2.dtype.type(m)   # (C,), biased
            inv_std = 1 / np.sqrt(var + x2.dtype.type(self.eps))
            mom = self.momentum
            rm, rv = self.buffers["running_mean"], self.buffers["running_var"]
            rm *= 1 - mom
            rm += mom * mu.astype(rm.dtype)
            rv *= 1 - mom
            rv += mom * (var * (m / (m - 1))).astype(rv.dtype)     # unbiased, as PyTorch
        else:
            inv_std = (1 / np.sqrt(self.buffers["running_var"] + self.eps)).astype(x.dtype)
            xc = x2 - self.buffers["running_mean"].astype(x.dtype)
            m = None
        # out = gamma * xhat + beta with xhat = xc * inv_std, computed as xc * (gamma * inv_std)
        # + beta: one pass fewer over the (M, C) array; backward works from xc too
        self._cache = (xc, inv_std, m, x.shape)
        out = xc * (gamma * inv_std)
        out += beta
        return self._unrows(out, x.shape)

    def _total(self, value):
        """A sum over the rows of the whole batch.  Alone, ``value`` is that sum already; as a
        replica of :class:`~cnn_lessons.parallel.DataParallel` it is this part's share, and
        the replicas' shares are added up."""
        return value if self.sync is None else self.sync.total(value)

    def backward(self, dout):
        """``dout -> dx`` (same shape); fills ``grads['gamma']`` and ``grads['beta']``."""
        xc, inv_std, m, shape = self._saved()   # m: rows of the batch, None in evaluation
        dout = self._check_dout(dout, shape)
        d2 = self._rows(dout)                                      # (M, C)
        gamma = self.params["gamma"]
        scale = gamma * inv_std                                    # (C,): dxhat * inv_std
        self.grads["gamma"] = np.einsum("ij,ij->j", d2, xc) * inv_std   # sum(dout * xhat)
        self.grads["beta"] = np.einsum("ij->j", d2)                 # column sums
        if m is None:                       # evaluation: the statistics are constants
            return self._unrows(d2 * scale, shape)
        m = d2.dtype.type(m)
        dgamma, dbeta = self._total(np.stack([self.grads["gamma"], self.grads["beta"]]))
        # dx = (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)) * inv_std, where dxhat = dout
        # * gamma, mean(dxhat) = gamma * dbeta / m, mean(dxhat * xhat) = gamma * dgamma / m and
        # xhat = xc * inv_std; as dout * scale + (xc * a + c) with per-channel a and c
        a = -scale * inv_std * dgamma / m
        c = -scale * dbeta / m
        shift = xc * a
        shift += c
        dx = d2 * scale
        dx += shift
        return self._unrows(dx, shape)
