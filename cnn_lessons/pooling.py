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
        """``(slice_h, slice_w)`` for each offset ``(u, v)`` of a window, in row-major order:
        ``xt[:, sl_h, sl_w, :]`` is the ``(N, Ho, Wo, C)`` array of the ``(u, v)`` entry of every
        window, where ``xt = x.transpose(0, 2, 3, 1)`` is the input seen channels-last."""
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        for u in range(kh):
            for v in range(kw):
                yield slice(u, u + sh * (ho - 1) + 1, sh), slice(v, v + sw * (wo - 1) + 1, sw)

    def _combine(self, xt, ho, wo, ufunc):
        """Fold the ``kh * kw`` window entries together with ``ufunc`` (``np.maximum`` for max
        pooling, ``np.add`` for average pooling): ``(N, H, W, C) -> (N, Ho, Wo, C)``."""
        out = None
        for sl_h, sl_w in self._offsets(ho, wo):
            if out is None:
                out = xt[:, sl_h, sl_w, :].copy()
            else:
                ufunc(out, xt[:, sl_h, sl_w, :], out=out)
        return out

    def _overlapping(self) -> bool:
        return self.stride[0] < self.kernel_size[0] or self.stride[1] < self.kernel_size[1]


# The vectorized layers below work on channels-last views, (N, H, W, C): the conv layers
# produce their outputs with that memory layout, and whole rows of C channels then sit side
# by side. What they return is still (N, C, H, W).

class MaxPool2D(_Pool2D):
    """``MaxPool2D(kernel_size, stride=None)``: the maximum of each window, per channel."""

    def forward(self, x):
        """``x (N, C, H, W) -> (N, C, Ho, Wo)``."""
        x, ho, wo = self._output_hw(x)
        xt = x.transpose(0, 2, 3, 1)
        if self.training and self._halves(xt):
            return self._forward_2x2(xt)
        out = self._combine(xt, ho, wo, np.maximum)                # (N, Ho, Wo, C)
        self._cache = (xt, out)
        return out.transpose(0, 3, 1, 2)

    def _halves(self, xt) -> bool:
        """Whether this is the classic case: 2x2 windows, stride 2, even height and width."""
        return (self.kernel_size == (2, 2) and self.stride == (2, 2)
                and xt.shape[1] % 2 == 0 and xt.shape[2] % 2 == 0)

    # The classic 2x2 pooling in training, as a tournament: the two entries of each row of a
    # window play first (``right``: the right one is strictly larger), then the two row winners
    # (``low``: the bottom row's is strictly larger).  Strict comparisons let the earlier entry
    # win a tie, so the overall winner is the first maximum in row-major order, as in the loops.
    # Backward then needs only these three boolean arrays, not the input: it reads and writes
    # far less memory than the general method below.
    def _forward_2x2(self, xt):
        a, b = xt[:, 0::2, 0::2, :], xt[:, 0::2, 1::2, :]        # top-left, top-right
        c, d = xt[:, 1::2, 0::2, :], xt[:, 1::2, 1::2, :]        # bottom-left, bottom-right
        top, bottom = np.maximum(a, b), np.maximum(c, d)          # (N, Ho, Wo, C) each
        # "b > a" read from the row winner: top > a exactly when b > a, and top is contiguous,
        # so this reads less memory than comparing a with b again
        right_top, right_bottom = np.greater(top, a), np.greater(bottom, c)
        low = np.greater(bottom, top)
        out = np.maximum(top, bottom, out=top)
        self._cache = (xt.shape, out, (right_top, right_bottom, low))
        return out.transpose(0, 3, 1, 2)

    def _backward_2x2(self, dt, x_shape, dtype, right_top, right_bottom, low):
        """``dt (N, Ho, Wo, C)`` -> ``dx (N, H, W, C)``: the gradient goes down the tournament.
        Multiplying by a 0/1 mask and subtracting are exact, so this equals the general method
        bit for bit."""
        dx = np.empty(x_shape, dtype)
        d_bottom = dt * low                   # the gradient of windows won by the bottom row
        d_top = dt - d_bottom                 # ... and by the top row
        np.multiply(d_top, right_top, out=dx[:, 0::2, 1::2, :])
        np.subtract(d_top, dx[:, 0::2, 1::2, :], out=dx[:, 0::2, 0::2, :])
        np.multiply(d_bottom, right_bottom, out=dx[:, 1::2, 1::2, :])
        np.subtract(d_bottom, dx[:, 1::2, 1::2, :], out=dx[:, 1::2, 0::2, :])
        return dx

    def backward(self, dout):
        """``dout (N, C, Ho, Wo) -> dx (N, C, H, W)``: each window's gradient goes to its
        winner, the FIRST input (row-major) equal to the window's maximum."""
        saved = self._saved()
        if len(saved) == 3:                                      # the 2x2 tournament
            x_shape, out, masks = saved
            n, ho, wo, c = out.shape
            dt = self._check_dout(dout, (n, c, ho, wo)).transpose(0, 2, 3, 1)
            dx = self._backward_2x2(dt, x_shape, np.result_type(dout, out), *masks)
            return dx.transpose(0, 3, 1, 2)
        xt, out = saved
        n, ho, wo, c = out.shape
        dt = self._check_dout(dout, (n, c, ho, wo)).transpose(0, 2, 3, 1)
        tiles = (not self._overlapping() and xt.shape[1] == ho * self.kernel_size[0]
                 and xt.shape[2] == wo * self.kernel_size[1])   # windows cover every input once
        dtype = np.result_type(dout, xt)
        dx = np.empty(xt.shape, dtype) if tiles else np.zeros(xt.shape, dtype)   # (N, H, W, C)
        offsets = list(self._offsets(ho, wo))
        taken = np.zeros(out.shape, dtype=bool)       # windows whose winner is already found
        winner = np.empty(out.shape, dtype=bool)
        for k, (sl_h, sl_w) in enumerate(offsets):
            if k == len(offsets) - 1:                 # the last entry wins every window whose
                np.logical_not(taken, out=winner)     # maximum came nowhere earlier
            else:
                np.equal(xt[:, sl_h, sl_w, :], out, out=winner)
                if k > 0:
                    np.greater(winner, taken, out=winner)   # equal, but a tie earlier won
                taken |= winner
            if self._overlapping():                   # one input may win several windows
                dx[:, sl_h, sl_w, :] += dt * winner
            else:                                     # disjoint windows: plain assignment
                np.multiply(dt, winner, out=dx[:, sl_h, sl_w, :])
        return dx.transpose(0, 3, 1, 2)


class AvgPool2D(_Pool2D):
    """``AvgPool2D(kernel_size, stride=None)``: the mean of each window, per channel."""

    def forward(self, x):
        """``x (N, C, H, W) -> (N, C, Ho, Wo)``."""
        x, ho, wo = self._output_hw(x)
        xt = x.transpose(0, 2, 3, 1)
        out = self._combine(xt, ho, wo, np.add)                    # (N, Ho, Wo, C)
        out /= x.dtype.type(self.kernel_size[0] * self.kernel_size[1])
        self._cache = (xt.shape, x.dtype, ho, wo)
        return out.transpose(0, 3, 1, 2)

    def backward(self, dout):
        """``dout (N, C, Ho, Wo) -> dx (N, C, H, W)``: ``dout / (kh kw)`` to every window entry."""
        (n, h, w, c), dtype, ho, wo = self._saved()
        dt = self._check_dout(dout, (n, c, ho, wo)).transpose(0, 2, 3, 1)
        share = dt / dt.dtype.type(self.kernel_size[0] * self.kernel_size[1])
        dx = np.zeros((n, h, w, c), dtype=np.result_type(dout, dtype))
        for sl_h, sl_w in self._offsets(ho, wo):
            dx[:, sl_h, sl_w, :] += share
        return dx.transpose(0, 3, 1, 2)


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
