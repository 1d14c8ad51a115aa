"""Pooling: max and average over ``kh x kw`` windows moved with a stride, per channel.

Shapes: ``x (N, C, H, W) -> out (N, C, Ho, Wo)`` with ``Ho = (H - kh) // sh + 1`` (no padding).
The stride defaults to the window size (non-overlapping windows); a smaller stride makes windows
overlap, and then one input can receive gradient from several windows: backward *adds*.

Max pool backward sends each window's gradient to the single input that won the max.  When a
window holds several equal maxima (common on MNIST, whose background is exactly 0) the first one,
in row-major order, wins -- as in PyTorch.  Sending it to every tied input would multiply the
gradient.  Average pool backward spreads ``dout / (kh kw)`` evenly over the window.

The vectorized layers loop only over the ``kh * kw`` offsets inside a window; each step handles
the whole batch at once through strided slices.
"""

from __future__ import annotations

import numpy as np

from .conv import output_size
from .layer import Layer, compact, pair


# -- the loops, for reading -------------------------------------------------------------------

def maxpool_forward_naive(x, kernel_size, stride):
    """``x (N, C, H, W) -> (out (N, C, Ho, Wo), argmax (N, C, Ho, Wo))``; argmax is the flat
    index ``u * kw + v`` of the first maximum inside each window."""
    (kh, kw), (sh, sw) = kernel_size, stride
    n_, c_, h_, w_ = x.shape
    ho, wo = output_size(h_, kh, sh, 0), output_size(w_, kw, sw, 0)
    out = np.zeros((n_, c_, ho, wo), dtype=x.dtype)
    arg = np.zeros((n_, c_, ho, wo), dtype=np.intp)
    for n in range(n_):
        for c in range(c_):
            for i in range(ho):
                for j in range(wo):
                    window = x[n, c, i * sh:i * sh + kh, j * sw:j * sw + kw]
                    arg[n, c, i, j] = np.argmax(window)       # first maximum, row-major
                    out[n, c, i, j] = window.flat[arg[n, c, i, j]]
    return out, arg


def maxpool_backward_naive(dout, x_shape, argmax, kernel_size, stride):
    """Route each ``dout[n, c, i, j]`` to the input that won window ``(i, j)``; returns ``dx``."""
    (kh, kw), (sh, sw) = kernel_size, stride
    dx = np.zeros(x_shape, dtype=dout.dtype)
    n_, c_, ho, wo = dout.shape
    for n in range(n_):
        for c in range(c_):
            for i in range(ho):
                for j in range(wo):
                    u, v = divmod(int(argmax[n, c, i, j]), kw)
                    dx[n, c, i * sh + u, j * sw + v] += dout[n, c, i, j]
    return dx


def avgpool_forward_naive(x, kernel_size, stride):
    """``x (N, C, H, W) -> out (N, C, Ho, Wo)``, the mean of each window."""
    (kh, kw), (sh, sw) = kernel_size, stride
    n_, c_, h_, w_ = x.shape
    ho, wo = output_size(h_, kh, sh, 0), output_size(w_, kw, sw, 0)
    out = np.zeros((n_, c_, ho, wo), dtype=x.dtype)
    for i in range(ho):
        for j in range(wo):
            out[:, :, i, j] = x[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw].mean(axis=(2, 3))
    return out


def avgpool_backward_naive(dout, x_shape, kernel_size, stride):
    """Spread each ``dout[n, c, i, j] / (kh kw)`` over window ``(i, j)``; returns ``dx``."""
    (kh, kw), (sh, sw) = kernel_size, stride
    dx = np.zeros(x_shape, dtype=dout.dtype)
    _, _, ho, wo = dout.shape
    for i in range(ho):
        for j in range(wo):
            dx[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw] += dout[:, :, i, j, None, None] / (kh * kw)
    return dx


# -- the layers ---------------------------------------------------------------------------------

class _Pool2D(Layer):
    def __init__(self, kernel_size, stride=None):
        super().__init__()
        name = type(self).__name__
        self.kernel_size = pair(kernel_size, "kernel_size", name)
        self.stride = pair(kernel_size if stride is None else stride, "stride", name)
        if min(self.kernel_size) < 1 or min(self.stride) < 1:
            raise ValueError(f"{name}: kernel_size and stride must be >= 1, "
                             f"got {self.kernel_size} and {self.stride}")

    def config(self):
        cfg = {"kernel_size": compact(self.kernel_size)}
        if self.stride != self.kernel_size:
            cfg["stride"] = compact(self.stride)
        return cfg

    def _output_hw(self, x):
        x = self._check_input(x, 4, "(N, C, H, W)")
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        h, w = x.shape[2:]
        if h < kh or w < kw:
            raise ValueError(f"{self!r}: window {kh}x{kw} is larger than the input {h}x{w} "
                             f"(input shape {x.shape})")
        return x, output_size(h, kh, sh, 0), output_size(w, kw, sw, 0)

    def _offsets(self, ho, wo):
        """``(u, v, slice_h, slice_w)`` for each offset in a window: ``x[:, :, sl_h, sl_w]`` is
        the ``(N, C, Ho, Wo)`` array of the ``(u, v)`` entry of every window."""
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        for u in range(kh):
            for v in range(kw):
                yield u, v, slice(u, u + sh * (ho - 1) + 1, sh), slice(v, v + sw * (wo - 1) + 1, sw)


class MaxPool2D(_Pool2D):
    """``MaxPool2D(kernel_size, stride=None)``: the maximum of each window, per channel."""

    def forward(self, x):
        """``x (N, C, H, W) -> (N, C, Ho, Wo)``."""
        x, ho, wo = self._output_hw(x)
        out = argmax = None
        for u, v, sl_h, sl_w in self._offsets(ho, wo):
            candidate = x[:, :, sl_h, sl_w]
            if out is None:
                out = candidate.copy(order="K")     # keep the input's memory layout
                # the smallest integer type that can index the window (uint8 up to 16x16)
                window = self.kernel_size[0] * self.kernel_size[1]
                argmax = np.zeros(out.shape, dtype=np.min_scalar_type(window - 1))
            else:
                better = candidate > out            # strictly greater: the first maximum stays
                np.copyto(out, candidate, where=better)
                argmax[better] = u * self.kernel_size[1] + v
        self._cache = (x, argmax)
        return out

    def backward(self, dout):
        """``dout (N, C, Ho, Wo) -> dx (N, C, H, W)``: each window's gradient goes to its winner."""
        if self._cache is None:
            self._check_dout(dout, ())
        x, argmax = self._cache
        dout = self._check_dout(dout, argmax.shape)
        dx = np.zeros_like(x, dtype=np.result_type(dout, x))   # same shape and memory layout as x
        ho, wo = argmax.shape[2:]
        for u, v, sl_h, sl_w in self._offsets(ho, wo):
            dx[:, :, sl_h, sl_w] += np.where(argmax == u * self.kernel_size[1] + v, dout, 0)
        return dx


class AvgPool2D(_Pool2D):
    """``AvgPool2D(kernel_size, stride=None)``: the mean of each window, per channel."""

    def forward(self, x):
        """``x (N, C, H, W) -> (N, C, Ho, Wo)``."""
        x, ho, wo = self._output_hw(x)
        out = None
        for _, _, sl_h, sl_w in self._offsets(ho, wo):
            if out is None:
                out = x[:, :, sl_h, sl_w].copy(order="K")
            else:
                out += x[:, :, sl_h, sl_w]
        out /= x.dtype.type(self.kernel_size[0] * self.kernel_size[1])
        self._cache = (x, ho, wo)
        return out

    def backward(self, dout):
        """``dout (N, C, Ho, Wo) -> dx (N, C, H, W)``: ``dout / (kh kw)`` to every window entry."""
        if self._cache is None:
            self._check_dout(dout, ())
        x, ho, wo = self._cache
        dout = self._check_dout(dout, x.shape[:2] + (ho, wo))
        share = dout / dout.dtype.type(self.kernel_size[0] * self.kernel_size[1])
        dx = np.zeros_like(x, dtype=np.result_type(dout, x))
        for _, _, sl_h, sl_w in self._offsets(ho, wo):
            dx[:, :, sl_h, sl_w] += share
        return dx


class MaxPool2DNaive(MaxPool2D):
    """Max pooling with the loops above: slow, the reference for :class:`MaxPool2D`."""

    def forward(self, x):
        x, _, _ = self._output_hw(x)
        out, argmax = maxpool_forward_naive(x, self.kernel_size, self.stride)
        self._cache = (x, argmax)
        return out

    def backward(self, dout):
        if self._cache is None:
            self._check_dout(dout, ())
        x, argmax = self._cache
        dout = self._check_dout(dout, argmax.shape)
        return maxpool_backward_naive(dout, x.shape, argmax, self.kernel_size, self.stride)
