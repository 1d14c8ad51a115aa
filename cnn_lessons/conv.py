"""2-D convolution (cross-correlation, as in every deep-learning library), as chapter 6 builds it.

Shapes: ``x (N, C, H, W)``, weights ``W (F, C, kh, kw)``, bias ``b (F,)``, stride ``s``,
zero padding ``p``; the output is ``(N, F, Ho, Wo)`` with

    Ho = (H + 2 p_h - kh) // s_h + 1,      Wo = (W + 2 p_w - kw) // s_w + 1

    out[n, f, i, j] = b[f] + sum_{c, u, v} W[f, c, u, v] * xp[n, c, i s + u, j s + v]

where ``xp`` is ``x`` padded with zeros.  Backward, from ``dout (N, F, Ho, Wo)``:

    db[f]          = sum_{n, i, j} dout[n, f, i, j]
    dW[f, c, u, v] = sum_{n, i, j} dout[n, f, i, j] * xp[n, c, i s + u, j s + v]
    dxp[n, c, i s + u, j s + v] += sum_f dout[n, f, i, j] * W[f, c, u, v]

The last line *accumulates*: with stride smaller than the kernel, windows overlap and one input
pixel receives gradient from several outputs.

Two implementations give the same numbers: :func:`conv2d_forward_naive` and
:func:`conv2d_backward_naive` spell the sums out as loops; :class:`Conv2D` computes them with
matrix products ("im2col"): every window of ``xp`` becomes a row of a matrix ``cols`` of shape
``(N*Ho*Wo, kh*kw*C)`` (:func:`im2col`), and the convolution is that matrix times ``W`` reshaped
to ``(F, kh*kw*C)``.  The input gradient is added back one kernel offset ``(u, v)`` at a time.
A faster twin of the layer, for training, is :class:`cnn_lessons.fast.FastConv2D`.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .init import initialise
from .layer import Layer, as_rng, compact, pair
from .validate import float_dtype, sizes


def output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Number of window positions along one axis: ``(size + 2 padding - kernel) // stride + 1``."""
    return (size + 2 * padding - kernel) // stride + 1


# -- the loops, for reading -------------------------------------------------------------------

def conv2d_forward_naive(x, W, b, stride=(1, 1), padding=(0, 0)):
    """Loop version of the forward pass.  ``x (N, C, H, W)``, ``W (F, C, kh, kw)``,
    ``b (F,)`` -> ``out (N, F, Ho, Wo)``."""
    (sh, sw), (ph, pw) = stride, padding
    n_, c_, h_, w_ = x.shape
    f_, _, kh, kw = W.shape
    ho, wo = output_size(h_, kh, sh, ph), output_size(w_, kw, sw, pw)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    out = np.zeros((n_, f_, ho, wo), dtype=np.result_type(x, W))
    for n in range(n_):
        for f in range(f_):
            for i in range(ho):
                for j in range(wo):
                    window = xp[n, :, i * sh:i * sh + kh, j * sw:j * sw + kw]   # (C, kh, kw)
                    out[n, f, i, j] = np.sum(window * W[f]) + b[f]
    return out


def conv2d_backward_naive(dout, x, W, stride=(1, 1), padding=(0, 0)):
    """Loop version of the backward pass: returns ``(dx, dW, db)`` shaped like ``x, W, b``."""
    (sh, sw), (ph, pw) = stride, padding
    n_, c_, h_, w_ = x.shape
    f_, _, kh, kw = W.shape
    _, _, ho, wo = dout.shape
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    dxp, dW = np.zeros_like(xp), np.zeros_like(W)
    db = dout.sum(axis=(0, 2, 3))
    for n in range(n_):
        for f in range(f_):
            for i in range(ho):
                for j in range(wo):
                    rows, cols = slice(i * sh, i * sh + kh), slice(j * sw, j * sw + kw)
                    dW[f] += dout[n, f, i, j] * xp[n, :, rows, cols]
                    dxp[n, :, rows, cols] += dout[n, f, i, j] * W[f]
    dx = dxp[:, :, ph:ph + h_, pw:pw + w_]
    return dx, dW, db


# -- vectorized: im2col and one matrix product ----------------------------------------------

def im2col(x, kh, kw, stride=(1, 1), padding=(0, 0)):
    """Every window of the zero-padded ``x`` as one row.

    ``x (N, C, H, W) -> (cols (N*Ho*Wo, kh*kw*C), Ho, Wo)``; rows ordered ``(n, i, j)``,
    columns ordered ``(u, v, c)`` (channels last: a window's C values sit side by side).
    """
    (sh, sw), (ph, pw) = stride, padding
    n, c, h, w = x.shape
    ho, wo = output_size(h, kh, sh, ph), output_size(w, kw, sw, pw)
    xp = np.zeros((n, h + 2 * ph, w + 2 * pw, c), dtype=x.dtype)     # (N, Hp, Wp, C)
    xp[:, ph:ph + h, pw:pw + w, :] = x.transpose(0, 2, 3, 1)
    windows = sliding_window_view(xp, (kh, kw), axis=(1, 2))
    windows = windows[:, ::sh, ::sw]                                  # (N, Ho, Wo, C, kh, kw)
    cols = np.empty((n, ho, wo, kh, kw, c), dtype=x.dtype)
    np.copyto(cols, windows.transpose(0, 1, 2, 4, 5, 3))              # the one copy
    return cols.reshape(n * ho * wo, kh * kw * c), ho, wo


def conv_forward_im2col(x, W, b, stride=(1, 1), padding=(0, 0)):
    """``x (N, C, H, W)``, ``W (F, C, kh, kw)``, ``b (F,)`` or None -> ``(out (N, F, Ho, Wo),
    cols (N*Ho*Wo, kh*kw*C))``; backward needs ``cols`` for ``dW``."""
    n = x.shape[0]
    f, c, kh, kw = W.shape
    cols, ho, wo = im2col(x, kh, kw, stride, padding)
    w2d = W.transpose(0, 2, 3, 1).reshape(f, kh * kw * c)             # columns (u, v, c)
    out2d = cols @ w2d.T                                              # (N*Ho*Wo, F)
    if b is not None:
        out2d += b
    out = out2d.reshape(n, ho, wo, f).transpose(0, 3, 1, 2)           # a view: no copy
    return out, cols


def conv_backward_im2col(dout, cols, W, x_shape, stride=(1, 1), padding=(0, 0)):
    """Backward from the forward's ``cols``: ``dout (N, F, Ho, Wo)``, ``cols (N*Ho*Wo,
    kh*kw*C)``, ``W (F, C, kh, kw)``, ``x_shape = (N, C, H, W)`` -> ``(dx, dW, db)`` shaped like
    ``x``, ``W`` and ``(F,)``."""
    (sh, sw), (ph, pw) = stride, padding
    n, c, h, w = x_shape
    f, _, kh, kw = W.shape
    _, _, ho, wo = dout.shape
    dout2d = dout.transpose(0, 2, 3, 1).reshape(n * ho * wo, f)      # rows (n, i, j)
    db = dout2d.sum(axis=0)                                           # (F,)
    dw2d = dout2d.T @ cols                                            # (F, kh*kw*C)
    dW = dw2d.reshape(f, kh, kw, c).transpose(0, 3, 1, 2)             # (F, C, kh, kw)
    dxp = np.zeros((n, h + 2 * ph, w + 2 * pw, c), dtype=np.result_type(dout, W))
    for u in range(kh):
        for v in range(kw):
            rows = slice(u, u + sh * (ho - 1) + 1, sh)               # s*i + u for every i
            cols_ = slice(v, v + sw * (wo - 1) + 1, sw)              # s*j + v for every j
            contribution = dout2d @ W[:, :, u, v]                     # (N*Ho*Wo, F) @ (F, C)
            dxp[:, rows, cols_, :] += contribution.reshape(n, ho, wo, c)
    dx = dxp[:, ph:ph + h, pw:pw + w, :]                              # drop the padding
    return dx.transpose(0, 3, 1, 2), dW, db                           # (N, C, H, W)


# -- the layer ----------------------------------------------------------------------------------

class Conv2D(Layer):
    """``Conv2D(in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True)``:
    ``x (N, C, H, W) -> (N, F, Ho, Wo)``.

    ``kernel_size``, ``stride`` and ``padding`` take an int or an ``(h, w)`` pair.
    ``params``: ``W (out_channels, in_channels, kh, kw)``, ``b (out_channels,)``.
    ``bias=False`` leaves ``b`` out: for a convolution followed by batch norm, which subtracts
    every channel's mean and with it any constant a bias would add.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 bias: bool = True, *, init: str = "he", rng=None, dtype=np.float32):
        super().__init__()
        name = f"{type(self).__name__}({in_channels}, {out_channels})"
        in_channels, out_channels = sizes(name, in_channels=in_channels, out_channels=out_channels)
        self.in_channels, self.out_channels = in_channels, out_channels
        dtype, rng = float_dtype(name, dtype), as_rng(rng, name)
        self.kernel_size = pair(kernel_size, "kernel_size", name)
        self.stride = pair(stride, "stride", name)
        self.padding = pair(padding, "padding", name, minimum=0)
        if not isinstance(bias, (bool, np.bool_)):
            raise ValueError(f"{name}: bias must be True or False, got {bias!r}")
        kh, kw = self.kernel_size
        self.params["W"] = initialise(init, (out_channels, in_channels, kh, kw),
                                      in_channels * kh * kw, out_channels * kh * kw, rng, dtype)
        if bias:
            self.params["b"] = np.zeros(out_channels, dtype=dtype)

    def config(self):
        cfg = {"in_channels": self.in_channels, "out_channels": self.out_channels,
               "kernel_size": compact(self.kernel_size)}
        if self.stride != (1, 1):
            cfg["stride"] = compact(self.stride)
        if self.padding != (0, 0):
            cfg["padding"] = compact(self.padding)
        if "b" not in self.params:
            cfg["bias"] = False
        return cfg

    def _output_hw(self, x):
        """Check ``x (N, C, H, W)`` and return ``(x, Ho, Wo)``; refuse a kernel larger than the
        padded input."""
        x = self._check_input(x, 4, f"(N, {self.in_channels}, H, W)", {1: self.in_channels})
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        n, _, h, w = x.shape
        if min(n, h, w) == 0:                    # nothing to convolve: not an image of zeros
            raise ValueError(f"{self!r}: expected at least one image of at least 1x1 pixels, "
                             f"got input shape {x.shape}")
        if h + 2 * ph < kh or w + 2 * pw < kw:
            raise ValueError(f"{self!r}: kernel {kh}x{kw} is larger than the padded input "
                             f"{h + 2 * ph}x{w + 2 * pw} (input shape {x.shape})")
        return x, output_size(h, kh, sh, ph), output_size(w, kw, sw, pw)

    def forward(self, x):
        """``x (N, C, H, W) -> out (N, F, Ho, Wo)``."""
        x, _, _ = self._output_hw(x)
        out, cols = conv_forward_im2col(x, self.params["W"], self.params.get("b"),
                                        self.stride, self.padding)
        self._cache = (x.shape, cols)
        return out

    def backward(self, dout):
        """``dout (N, F, Ho, Wo) -> dx (N, C, H, W)``; fills ``grads['W']`` and ``grads['b']``."""
        x_shape, cols = self._saved()
        n, _, h, w = x_shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        out_shape = (n, self.out_channels, output_size(h, kh, sh, ph), output_size(w, kw, sw, pw))
        dout = self._check_dout(dout, out_shape)
        dx, self.grads["W"], db = conv_backward_im2col(dout, cols, self.params["W"], x_shape,
                                                       self.stride, self.padding)
        if "b" in self.params:
            self.grads["b"] = db
        return dx


class Conv2DNaive(Conv2D):
    """The same layer computed with the loops above: slow, and the reference for the fast one."""

    def forward(self, x):
        x, ho, wo = self._output_hw(x)
        self._cache = (x, ho, wo)
        b = self.params.get("b", np.zeros(self.out_channels, x.dtype))
        return conv2d_forward_naive(x, self.params["W"], b, self.stride, self.padding)

    def backward(self, dout):
        x, ho, wo = self._saved()
        dout = self._check_dout(dout, (x.shape[0], self.out_channels, ho, wo))
        dx, self.grads["W"], db = conv2d_backward_naive(
            dout, x, self.params["W"], self.stride, self.padding)
        if "b" in self.params:
            self.grads["b"] = db
        return dx
