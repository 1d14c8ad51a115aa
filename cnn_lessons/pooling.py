"""Pooling: max and average over ``kh x kw`` windows moved with a stride, per channel (chapter 7).

Shapes: ``x (N, C, H, W) -> out (N, C, Ho, Wo)`` with ``Ho = (H - kh) // sh + 1`` (no padding).
The stride defaults to the window size (non-overlapping windows); a smaller stride makes windows
overlap, and then one input can receive gradient from several windows: backward *adds*.

Max pool backward sends each window's gradient to the single input that won the max.  When a
window holds several equal maxima (common on MNIST, whose background is exactly 0) the first one,
in row-major order, wins -- as in PyTorch.  Sending it to every tied input would multiply the
gradient.  Average pool backward spreads ``dout / (kh kw)`` evenly over the window.

The vectorized functions loop only over the ``kh * kw`` offsets inside a window; for one offset
the entries of every window form a strided slice (:func:`offset_slices`), and each step handles
the whole batch at once.  A faster twin for training is :class:`cnn_lessons.fast.FastMaxPool2D`.
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
    (_, kw), (sh, sw) = kernel_size, stride
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


# -- vectorized: a loop over the offsets of a window ------------------------------------------

def offset_slices(u, v, out_hw, stride):
    """Slices picking entry ``(u, v)`` of every window: ``x[:, :, sl_h, sl_w]`` is the
    ``(N, C, Ho, Wo)`` array of those entries."""
    (ho, wo), (sh, sw) = out_hw, stride
    sl_h = slice(u, u + sh * (ho - 1) + 1, sh)         # rows u, u + sh, ...
    sl_w = slice(v, v + sw * (wo - 1) + 1, sw)         # columns v, v + sw, ...
    return sl_h, sl_w


def maxpool_forward(x, kernel_size, stride):
    """``x (N, C, H, W) -> (out (N, C, Ho, Wo), argmax (N, C, Ho, Wo))``; argmax is the flat
    index ``u * kw + v`` of the FIRST maximum (row-major) of each window."""
    (kh, kw), (sh, sw) = kernel_size, stride
    n, c, h, w = x.shape
    ho, wo = output_size(h, kh, sh, 0), output_size(w, kw, sw, 0)
    out = np.full((n, c, ho, wo), -np.inf, dtype=x.dtype)
    argmax = np.zeros((n, c, ho, wo), dtype=np.intp)
    for u in range(kh):
        for v in range(kw):
            sl_h, sl_w = offset_slices(u, v, (ho, wo), stride)
            candidate = x[:, :, sl_h, sl_w]            # (N, C, Ho, Wo)
            # strictly: the first maximum stays; a NaN wins (a window holding one has no
            # maximum), the first one as np.argmax in the loops
            better = (candidate > out) | (np.isnan(candidate) & ~np.isnan(out))
            out = np.where(better, candidate, out)
            argmax = np.where(better, u * kw + v, argmax)
    return out, argmax


def maxpool_backward(dout, argmax, x_shape, kernel_size, stride):
    """``dout (N, C, Ho, Wo)``, ``argmax (N, C, Ho, Wo)`` -> ``dx (N, C, H, W)``: each window's
    gradient goes to its winner only; overlapping windows add up."""
    kh, kw = kernel_size
    dx = np.zeros(x_shape, dtype=dout.dtype)
    for u in range(kh):
        for v in range(kw):
            sl_h, sl_w = offset_slices(u, v, dout.shape[2:], stride)
            dx[:, :, sl_h, sl_w] += np.where(argmax == u * kw + v, dout, 0)
    return dx


def avgpool_forward(x, kernel_size, stride):
    """``x (N, C, H, W) -> out (N, C, Ho, Wo)``: the mean of each window."""
    (kh, kw), (sh, sw) = kernel_size, stride
    n, c, h, w = x.shape
    ho, wo = output_size(h, kh, sh, 0), output_size(w, kw, sw, 0)
    out = np.zeros((n, c, ho, wo), dtype=x.dtype)
    for u in range(kh):
        for v in range(kw):
            sl_h, sl_w = offset_slices(u, v, (ho, wo), stride)
            out += x[:, :, sl_h, sl_w]
    return out / x.dtype.type(kh * kw)


def avgpool_backward(dout, x_shape, kernel_size, stride):
    """``dout (N, C, Ho, Wo) -> dx (N, C, H, W)``: each window's ``dout / (kh kw)`` goes to
    every pixel of the window."""
    kh, kw = kernel_size
    dx = np.zeros(x_shape, dtype=dout.dtype)
    share = dout / dout.dtype.type(kh * kw)
    for u in range(kh):
        for v in range(kw):
            sl_h, sl_w = offset_slices(u, v, dout.shape[2:], stride)
            dx[:, :, sl_h, sl_w] += share
    return dx


# -- the layers ---------------------------------------------------------------------------------

class _Pool2D(Layer):
    """What both pooling layers share: ``kernel_size``, ``stride`` (default: the window) and
    the check of an input ``(N, C, H, W)`` against the window."""

    def __init__(self, kernel_size, stride=None):
        super().__init__()
        name = type(self).__name__
        self.kernel_size = pair(kernel_size, "kernel_size", name)
        self.stride = pair(kernel_size if stride is None else stride, "stride", name)

    def config(self):
        cfg = {"kernel_size": compact(self.kernel_size)}
        if self.stride != self.kernel_size:
            cfg["stride"] = compact(self.stride)
        return cfg

    def _output_hw(self, x):
        """Check ``x (N, C, H, W)`` and return ``(x, Ho, Wo)``."""
        x = self._check_input(x, 4, "(N, C, H, W)")
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        h, w = x.shape[2:]
        if h < kh or w < kw:
            raise ValueError(f"{self!r}: window {kh}x{kw} is larger than the input {h}x{w} "
                             f"(input shape {x.shape})")
        return x, output_size(h, kh, sh, 0), output_size(w, kw, sw, 0)


class MaxPool2D(_Pool2D):
    """``MaxPool2D(kernel_size, stride=None)``: ``x (N, C, H, W) -> (N, C, Ho, Wo)``, the
    maximum of each window, per channel."""

    def forward(self, x):
        """``x (N, C, H, W) -> (N, C, Ho, Wo)``; remembers each window's winner."""
        x, _, _ = self._output_hw(x)
        out, argmax = maxpool_forward(x, self.kernel_size, self.stride)
        self._cache = (x.shape, argmax)
        return out

    def backward(self, dout):
        """``dout (N, C, Ho, Wo) -> dx (N, C, H, W)``: each window's gradient to its winner."""
        x_shape, argmax = self._saved()
        dout = self._check_dout(dout, argmax.shape)
        return maxpool_backward(dout, argmax, x_shape, self.kernel_size, self.stride)


class AvgPool2D(_Pool2D):
    """``AvgPool2D(kernel_size, stride=None)``: ``x (N, C, H, W) -> (N, C, Ho, Wo)``, the mean
    of each window, per channel."""

    def forward(self, x):
        """``x (N, C, H, W) -> (N, C, Ho, Wo)``."""
        x, ho, wo = self._output_hw(x)
        self._cache = (x.shape, (x.shape[0], x.shape[1], ho, wo))
        return avgpool_forward(x, self.kernel_size, self.stride)

    def backward(self, dout):
        """``dout (N, C, Ho, Wo) -> dx (N, C, H, W)``: ``dout / (kh kw)`` to every window entry."""
        x_shape, out_shape = self._saved()
        dout = self._check_dout(dout, out_shape)
        return avgpool_backward(dout, x_shape, self.kernel_size, self.stride)


class MaxPool2DNaive(MaxPool2D):
    """Max pooling with the loops above: slow, the reference for :class:`MaxPool2D`."""

    def forward(self, x):
        x, _, _ = self._output_hw(x)
        out, argmax = maxpool_forward_naive(x, self.kernel_size, self.stride)
        self._cache = (x, argmax)
        return out

    def backward(self, dout):
        x, argmax = self._saved()  # (N, C, H, W) input and (N, C, Ho, Wo) winners
        dout = self._check_dout(dout, argmax.shape)
        return maxpool_backward_naive(dout, x.shape, argmax, self.kernel_size, self.stride)
