"""2-D convolution (cross-correlation, as in every deep-learning library).

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
:func:`conv2d_backward_naive` spell the sums out as loops (for reading); :class:`Conv2D` computes
them with matrix products ("im2col"): every window of ``xp`` becomes a row of a matrix of
shape ``(N*Ho*Wo, kh*kw*C)``, and the convolution is that matrix times ``W`` reshaped to
``(F, kh*kw*C)``.  The layer builds that matrix a few images at a time (a chunk's columns fit
in the processor's cache, :data:`CHUNK_BYTES`), and builds it again in backward for ``dW``
rather than keeping all of it.  The input gradient is added back kernel offset by kernel offset
(``kh*kw`` products), or, with a stride of 1 along the width, kernel row by kernel row (``kh``
products); never with a Python loop over the output positions.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .init import initialise
from .layer import Layer, compact, pair


CHUNK_BYTES = 1 << 20
"""Bytes of copied windows per chunk of images (im2col's columns, or the row windows of
:meth:`Conv2D._input_grad_by_rows`): about what one core's cache holds, so that a chunk's copy
is still there when the matrix products read it."""


def _images_per_chunk(n: int, values_per_image: int, dtype) -> int:
    """How many of ``n`` images go in one chunk of at most :data:`CHUNK_BYTES` (at least one)."""
    return min(n, max(1, CHUNK_BYTES // (values_per_image * np.dtype(dtype).itemsize)))


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


# -- the layer ----------------------------------------------------------------------------------

class Conv2D(Layer):
    """``Conv2D(in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True)``.

    ``kernel_size``, ``stride`` and ``padding`` take an int or an ``(h, w)`` pair.
    ``params``: ``W (out_channels, in_channels, kh, kw)``, ``b (out_channels,)``.
    ``bias=False`` leaves ``b`` out (no bias is added): for a convolution followed by batch
    norm, which subtracts every channel's mean and with it any constant a bias would add.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 bias: bool = True, *, init: str = "he", rng=None, dtype=np.float32):
        super().__init__()
        name = f"Conv2D({in_channels}, {out_channels})"
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = pair(kernel_size, "kernel_size", name)
        self.stride = pair(stride, "stride", name)
        self.padding = pair(padding, "padding", name)
        if min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.padding) < 0:
            raise ValueError(f"{name}: kernel_size and stride must be >= 1 and padding >= 0, got "
                             f"{self.kernel_size}, {self.stride}, {self.padding}")
        kh, kw = self.kernel_size
        fan_in = in_channels * kh * kw
        self.params["W"] = initialise(init, (out_channels, in_channels, kh, kw), fan_in,
                                      out_channels * kh * kw, rng, dtype)
        if not isinstance(bias, (bool, np.bool_)):
            raise ValueError(f"{name}: bias must be True or False, got {bias!r}")
        if bias:
            self.params["b"] = np.zeros(out_channels, dtype=dtype)
        self._buffers: dict[str, np.ndarray] = {}
        self._cols_hold = None

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
        """Check ``x`` and return ``(Ho, Wo)``; refuse a kernel larger than the padded input."""
        x = self._check_input(x, 4, f"(N, {self.in_channels}, H, W)", {1: self.in_channels})
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        h, w = x.shape[2:]
        if h + 2 * ph < kh or w + 2 * pw < kw:
            raise ValueError(f"{self!r}: kernel {kh}x{kw} is larger than the padded input "
                             f"{h + 2 * ph}x{w + 2 * pw} (input shape {x.shape})")
        return x, output_size(h, kh, sh, ph), output_size(w, kw, sw, pw)

    def _buffer(self, name, shape, dtype):
        """A scratch array kept from batch to batch: allocating fresh memory for every batch
        costs time.  Created zero-filled, so the padding border of ``xp`` stays zero."""
        buf = self._buffers.get(name)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = self._buffers[name] = np.zeros(shape, dtype=dtype)
        return buf

    def forward(self, x):
        """``x (N, C, H, W) -> out (N, F, Ho, Wo)``."""
        x, ho, wo = self._output_hw(x)
        W = self.params["W"]
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        n, c, h, w = x.shape
        dtype = np.result_type(x, W)
        # Work channels-last in memory, (N, H, W, C): a window's C values then sit side by side.
        # The arrays the layer returns are still (N, C, H, W) -- views with channels-last
        # strides -- so the layer protocol is unchanged.
        xp = self._buffer("xp", (n, h + 2 * ph, w + 2 * pw, c), dtype)
        xp[:, ph:ph + h, pw:pw + w, :] = x.transpose(0, 2, 3, 1)
        self._cols_hold = None          # start of the chunk in the "cols" buffer; xp is new
        # im2col a few images at a time: a chunk's columns fit in the core's cache, and are
        # read by the product straight after the copy.  Rows (n, i, j), columns (u, v, c).
        w2d = W.transpose(0, 2, 3, 1).reshape(self.out_channels, kh * kw * c)   # (F, kh*kw*C)
        out = np.empty((n * ho * wo, self.out_channels), dtype=dtype)         # (N*Ho*Wo, F)
        rows = ho * wo                                                          # per image
        for start, cols2d in self._im2col_chunks(xp, ho, wo, dtype):
            np.matmul(cols2d, w2d.T, out=out[start * rows:start * rows + len(cols2d)])
        if "b" in self.params:
            out += self.params["b"]
        # Only the padded input is kept: backward builds the columns again, chunk by chunk
        # (cheaper than keeping all of them, which would not fit in the cache).
        self._cache = (x.shape, xp, ho, wo)
        return out.reshape(n, ho, wo, self.out_channels).transpose(0, 3, 1, 2)

    def _im2col_chunks(self, xp, ho, wo, dtype, reverse=False):
        """Yield ``(first image, cols2d)`` for chunks of a few images of the padded input
        ``xp (N, Hp, Wp, C)``; ``cols2d (k*Ho*Wo, kh*kw*C)`` holds their windows, one per row.
        The chunks come last first with ``reverse=True``: in backward, the last chunk's
        columns are then still in the scratch array from the forward pass, and are not
        copied again (``self._cols_hold`` says which chunk the scratch array holds)."""
        n, c = xp.shape[0], xp.shape[3]
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        chunk = _images_per_chunk(n, ho * wo * kh * kw * c, dtype)
        cols_all = self._buffer("cols", (chunk, ho, wo, kh, kw, c), dtype)
        # windows[n, i, j, c, u, v] = xp[n, i*sh + u, j*sw + v, c]  (a view: nothing copied yet)
        windows = sliding_window_view(xp, (kh, kw), axis=(1, 2))[:, ::sh, ::sw][:, :ho, :wo]
        starts = list(range(0, n, chunk))
        for start in (reversed(starts) if reverse else starts):
            k = min(chunk, n - start)
            cols = cols_all[:k]
            if self._cols_hold != start:
                self._cols_hold = start
                if c >= 8:              # ONE copy of the window view
                    np.copyto(cols, windows[start:start + k].transpose(0, 1, 2, 4, 5, 3))
                else:                   # few channels (a first layer): the copy above would
                    for u in range(kh):     # move only c numbers at a time; kh*kw copies of
                        for v in range(kw):     # whole shifted images are twice as fast
                            cols[:, :, :, u, v, :] = xp[start:start + k,
                                                        u:u + sh * (ho - 1) + 1:sh,
                                                        v:v + sw * (wo - 1) + 1:sw, :]
            yield start, cols.reshape(k * ho * wo, kh * kw * c)

    def backward(self, dout, input_grad: bool = True):
        """``dout (N, F, Ho, Wo) -> dx (N, C, H, W)``; fills ``grads['W']`` and ``grads['b']``
        (when the layer has a bias).

        ``input_grad=False`` skips ``dx`` and returns None: nothing needs the gradient of the
        images that enter the first layer (:meth:`Sequential.backward` asks for this).
        """
        x_shape, xp, ho, wo = self._saved()
        n, c, h, w = x_shape
        f = self.out_channels
        dout = self._check_dout(dout, (n, f, ho, wo))
        (kh, kw), sw = self.kernel_size, self.stride[1]
        W = self.params["W"]
        dtype = np.result_type(dout, W)
        # rows (n, i, j), one column per filter: free when dout is channels-last in memory
        dout2d = dout.transpose(0, 2, 3, 1).reshape(n * ho * wo, f)
        # dW as (kh*kw*C, F) = cols^T dout, rows (u, v, c), summed over the chunks: the same
        # sums as dout^T cols, and faster when kh*kw*C is small (a first layer)
        dw = np.zeros((kh * kw * c, f), dtype=dtype)
        rows = ho * wo
        for start, cols2d in self._im2col_chunks(xp, ho, wo, xp.dtype, reverse=True):
            dw += cols2d.T @ dout2d[start * rows:start * rows + len(cols2d)]
        self.grads["W"] = np.ascontiguousarray(dw.reshape(kh, kw, c, f).transpose(3, 2, 0, 1))
        if "b" in self.params:
            self.grads["b"] = np.einsum("ij->j", dout2d)   # column sums; sum(axis=0) is slower
        if not input_grad:
            return None
        if sw == 1:
            dx = self._input_grad_by_rows(dout2d, (n, h, w, c), ho, wo, dtype)
        else:
            dx = _input_grad_by_offsets(dout2d, W, (n, h, w, c), ho, wo, self.stride,
                                        self.padding, dtype)
        return dx.transpose(0, 3, 1, 2)

    def _input_grad_by_rows(self, dout2d, x_shape, ho, wo, dtype):
        """The input gradient ``(N, H, W, C)`` with one product per kernel ROW ``u`` (for a
        stride of 1 along the width): the ``kw`` offsets ``(u, 0), (u, 1), ...`` of a row
        become one product once each output position sees the ``kw`` columns of ``dout`` that
        reach it side by side -- a window view of ``dout`` along the width, copied once, like
        im2col.  ``kh`` products of ``(N*Ho*W, kw*F) @ (kw*F, C)`` and ``kh`` additions replace
        ``kh*kw`` of each, and the additions shift whole rows.  The images go a few at a time
        (:data:`CHUNK_BYTES` of copy), so that the copy stays in the core's cache while the
        ``kh`` products read it."""
        n, h, w, c = x_shape
        (kh, kw), (sh, _), (ph, pw) = self.kernel_size, self.stride, self.padding
        f = self.out_channels
        # input column x gets dout column j = x + pw - v from kernel column v.  In ``dpw``,
        # dout padded with zeros along the width, column j sits at j + left, so it is column
        # x + s of dpw with s = kw - 1 - v: the window of kw columns starting at x.
        # (A padding wider than kw - 1 makes ``left`` negative: dout's outer columns then
        # reach only the padding, and are cropped.)
        left = kw - 1 - pw
        a0, a1 = max(left, 0), min(left + wo, w + kw - 1)
        # w_rows[u, (s, f), c] = W[f, c, u, kw - 1 - s]
        w_rows = np.ascontiguousarray(
            self.params["W"][:, :, :, ::-1].transpose(2, 3, 0, 1).reshape(kh, kw * f, c))
        dout4 = dout2d.reshape(n, ho, wo, f)
        # output rows i0..i1 land inside the image for kernel row u, from input row r on
        landing = []
        for u in range(kh):                   # output row i lands on input row i*sh + u - ph
            i0, i1 = _inside(u, ph, sh, ho, h)
            if i0 <= i1:
                landing.append((u, i0, i1, i0 * sh + u - ph))
        dx = np.zeros((n, h, w, c), dtype=dtype)
        chunk = _images_per_chunk(n, ho * w * kw * f, dtype)
        dpw_all = self._buffer("dpw", (chunk, ho, w + kw - 1, f), dtype)   # zero border stays
        rows_all = self._buffer("rows", (chunk, ho, w, kw, f), dtype)
        for start in range(0, n, chunk):
            k = min(chunk, n - start)                     # the last chunk may be smaller
            dpw, rows = dpw_all[:k], rows_all[:k]
            dpw[:, :, a0:a1, :] = dout4[start:start + k, :, a0 - left:a1 - left, :]
            np.copyto(rows, sliding_window_view(dpw, kw, axis=2).transpose(0, 1, 2, 4, 3))
            rows2d = rows.reshape(k * ho * w, kw * f)             # rows (n, i, x), cols (s, f)
            for u, i0, i1, r in landing:
                contrib = (rows2d @ w_rows[u]).reshape(k, ho, w, c)
                dx[start:start + k, r:r + sh * (i1 - i0) + 1:sh] += contrib[:, i0:i1 + 1]
        return dx


def _input_grad_by_offsets(dout2d, W, x_shape, ho, wo, stride, padding, dtype):
    """The input gradient ``(N, H, W, C)``, one kernel offset ``(u, v)`` at a time: a
    ``(N*Ho*Wo, F) @ (F, C)`` product added into the strided positions that offset touched;
    overlaps accumulate.  Only the part that lands inside the image is added: the padding's
    gradient would be thrown away."""
    n, h, w, c = x_shape
    _, _, kh, kw = W.shape
    (sh, sw), (ph, pw) = stride, padding
    dx = np.zeros((n, h, w, c), dtype=dtype)
    w_uv = np.ascontiguousarray(W.transpose(2, 3, 0, 1))   # (kh, kw, F, C); BLAS wants
    for u in range(kh):                                     # contiguous matrices
        i0, i1 = _inside(u, ph, sh, ho, h)
        for v in range(kw):
            j0, j1 = _inside(v, pw, sw, wo, w)
            if i0 > i1 or j0 > j1:                          # all of it in the padding
                continue
            contrib = (dout2d @ w_uv[u, v]).reshape(n, ho, wo, c)
            r, q = i0 * sh + u - ph, j0 * sw + v - pw       # first input row and column
            dx[:, r:r + sh * (i1 - i0) + 1:sh, q:q + sw * (j1 - j0) + 1:sw, :] += \
                contrib[:, i0:i1 + 1, j0:j1 + 1, :]
    return dx


def _inside(offset: int, padding: int, stride: int, n_out: int, n_in: int) -> tuple[int, int]:
    """``(first, last)`` output positions ``i`` whose input ``i * stride + offset - padding``
    lies inside ``range(n_in)`` (first > last: none does)."""
    first = max(0, -((offset - padding) // stride))       # ceil((padding - offset) / stride)
    last = min(n_out - 1, (n_in - 1 + padding - offset) // stride)
    return first, last


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
