"""The fast twins of the taught layers: the same protocol, the same numbers, less time.

Chapter 11 measures where a training step of the book's CNN spends its time and explains
each change below.  Every class here is a subclass of the layer or optimizer a chapter builds,
computes what that class computes (the tests rerun the taught layers' tests on these), and
saves under the taught class's name, so a model file loads into either.

- :class:`FastConv2D`: im2col a few images at a time (a chunk's columns stay in the cache),
  only the padded input kept for backward, and with a stride of 1 along the width the input
  gradient one kernel *row* at a time instead of one offset at a time.
- :class:`FastMaxPool2D`: 2x2 windows with stride 2 in training as a tournament whose three
  boolean arrays are all backward needs; other windows by offsets on a channels-last view.
- :class:`FastBatchNorm`: keeps the centred input and folds ``gamma * inv_std`` into one
  scale (one pass fewer forward and backward); its batch sums go through :meth:`_batch_sum`,
  which the processes of :mod:`cnn_lessons.parallel` add up.
- :class:`FastFlatten`: gives its gradient the memory layout of its input (channels last).
- :class:`FastSGD`, :class:`FastAdam`: the update block by block (a block's arrays stay in the
  cache across the update's passes), float32 kept float32, subnormal moments flushed, and a
  ``part`` of every parameter for one of several processes.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .conv import Conv2D, output_size
from .flatten import Flatten
from .optimizers import SGD, Adam
from .pooling import MaxPool2D
from .regularization import BatchNorm, from_rows, to_rows


CHUNK_BYTES = 1 << 20
"""Bytes of copied windows per chunk of images (im2col's columns, or the row windows of
:meth:`FastConv2D._input_grad_by_rows`): about what one core's cache holds, so that a chunk's copy
is still there when the matrix products read it."""


def _images_per_chunk(n: int, values_per_image: int, dtype) -> int:
    """How many of ``n`` images go in one chunk of at most :data:`CHUNK_BYTES` (at least one)."""
    return min(n, max(1, CHUNK_BYTES // (values_per_image * np.dtype(dtype).itemsize)))


def _inside(offset: int, padding: int, stride: int, n_out: int, n_in: int) -> tuple[int, int]:
    """``(first, last)`` output positions ``i`` whose input ``i * stride + offset - padding``
    lies inside ``range(n_in)`` (first > last: none does)."""
    first = max(0, -((offset - padding) // stride))       # ceil((padding - offset) / stride)
    last = min(n_out - 1, (n_in - 1 + padding - offset) // stride)
    return first, last


# -- convolution ------------------------------------------------------------------------------

class FastConv2D(Conv2D):
    """:class:`~cnn_lessons.conv.Conv2D` for training: ``x (N, C, H, W) -> (N, F, Ho, Wo)``.

    Works channels-last in memory, ``(N, H, W, C)``, and returns ``(N, C, H, W)`` views of it.
    ``backward(dout, input_grad=False)`` skips the input gradient (a first layer's images need
    none).  Scratch arrays are kept from batch to batch.
    """

    saved_as = "Conv2D"         # model files name the taught layer

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._buffers: dict[str, np.ndarray] = {}
        self._cols_hold = None

    def _buffer(self, name, shape, dtype):
        """A scratch array kept from batch to batch: allocating fresh memory for every batch
        costs time.  Created zero-filled, so the padding border of ``xp`` stays zero."""
        buf = self._buffers.get(name)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = self._buffers[name] = np.zeros(shape, dtype=dtype)
        return buf

    def forward(self, x):
        """``x (N, C, H, W) -> out (N, F, Ho, Wo)``, channels-last in memory."""
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
            dx = input_grad_by_offsets(dout2d, W, (n, h, w, c), ho, wo, self.stride,
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


def input_grad_by_offsets(dout2d, W, x_shape, ho, wo, stride, padding, dtype):
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




# -- max pooling --------------------------------------------------------------------------------

class FastMaxPool2D(MaxPool2D):
    """:class:`~cnn_lessons.pooling.MaxPool2D` for training: ``x (N, C, H, W) -> (N, C, Ho, Wo)``.

    Works on a channels-last view ``(N, H, W, C)`` (the memory layout of :class:`FastConv2D`'s
    output: a pixel's C values side by side) and returns ``(N, C, Ho, Wo)`` views of it.  It
    stores no argmax: backward finds each window's first maximum again, offset by offset; the
    classic 2x2, stride-2 case trains as a tournament.
    """

    saved_as = "MaxPool2D"         # model files name the taught layer


    def forward(self, x):
        """``x (N, C, H, W) -> (N, C, Ho, Wo)``."""
        x, ho, wo = self._output_hw(x)
        xt = x.transpose(0, 2, 3, 1)
        if self.training and self._halves(xt):
            return self._forward_2x2(xt)
        out = self._combine(xt, ho, wo, np.maximum)                # (N, Ho, Wo, C)
        self._cache = (xt, out)
        return out.transpose(0, 3, 1, 2)

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


# -- batch norm ---------------------------------------------------------------------------------

class FastBatchNorm(BatchNorm):
    """:class:`~cnn_lessons.regularization.BatchNorm` for training: the same shapes and numbers
    up to rounding, fewer passes over the ``(M, C)`` rows.

    It keeps the centred input ``xc`` rather than ``xhat`` and folds ``gamma * inv_std`` into
    one per-channel scale, forward and backward.  Every sum over the batch's rows goes through
    :meth:`_batch_sum`, so that :class:`cnn_lessons.parallel.SyncBatchNorm` can add up the
    parts of a batch split over processes.
    """

    saved_as = "BatchNorm"         # model files name the taught layer

    def forward(self, x):
        """``x (N, D)`` or ``(N, C, H, W)`` -> the same shape."""
        x = self._check(x)
        x2 = to_rows(x)                                         # (M, C)
        gamma, beta = self.params["gamma"], self.params["beta"]
        if self.training:
            # the column sums and the number of rows (the last entry, exact in float64), of the
            # whole batch
            sums = self._batch_sum(np.append(np.einsum("ij->j", x2), np.float64(len(x2))))
            m = int(sums[-1])
            if m < 2:
                raise ValueError(f"{self!r}: training needs more than one value per feature to "
                                 f"estimate a variance, got input shape {x.shape}")
            mu = sums[:-1].astype(x2.dtype) / x2.dtype.type(m)                     # (C,)
            xc = x2 - mu                                                          # (M, C)
            var = self._batch_sum(np.einsum("ij,ij->j", xc, xc)) / x2.dtype.type(m)   # (C,), biased
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
        return from_rows(out, x.shape)

    def _batch_sum(self, value):
        """``value``, a sum over this layer's rows, as a sum over the whole batch's rows: the
        same here; :class:`~cnn_lessons.parallel.SyncBatchNorm` adds up the processes' parts."""
        return value

    def backward(self, dout):
        """``dout -> dx`` (same shape); fills ``grads['gamma']`` and ``grads['beta']``."""
        xc, inv_std, m, shape = self._saved()   # m: rows of the batch, None in evaluation
        dout = self._check_dout(dout, shape)
        d2 = to_rows(dout)                                      # (M, C)
        gamma = self.params["gamma"]
        scale = gamma * inv_std                                    # (C,): dxhat * inv_std
        self.grads["gamma"] = np.einsum("ij,ij->j", d2, xc) * inv_std   # sum(dout * xhat)
        self.grads["beta"] = np.einsum("ij->j", d2)                 # column sums
        if m is None:                       # evaluation: the statistics are constants
            return from_rows(d2 * scale, shape)
        m = d2.dtype.type(m)
        dgamma, dbeta = self._batch_sum(np.stack([self.grads["gamma"], self.grads["beta"]]))
        # dx = (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)) * inv_std, where dxhat = dout
        # * gamma, mean(dxhat) = gamma * dbeta / m, mean(dxhat * xhat) = gamma * dgamma / m and
        # xhat = xc * inv_std; as dout * scale + (xc * a + c) with per-channel a and c
        a = -scale * inv_std * dgamma / m
        c = -scale * dbeta / m
        shift = xc * a
        shift += c
        dx = d2 * scale
        dx += shift
        return from_rows(dx, shape)


# -- flatten --------------------------------------------------------------------------------------

class FastFlatten(Flatten):
    """:class:`~cnn_lessons.flatten.Flatten` whose gradient ``(N, C, H, W)`` is laid out in
    memory like its input (channels-last after :class:`FastConv2D`), so that the layers below
    read it without strided loops: the same values as ``dout.reshape(x.shape)``."""

    saved_as = "Flatten"         # model files name the taught layer

    def forward(self, x):
        """``x (N, d1, d2, ...) -> (N, d1*d2*...)``; remembers the input."""
        out = super().forward(x)
        self._input = x
        return out

    def backward(self, dout):
        """``dout (N, d1*d2*...) -> dx (N, d1, d2, ...)``, strided like the input."""
        reshaped = super().backward(dout)
        dx = np.empty_like(self._input, dtype=reshaped.dtype)
        dx[...] = reshaped
        return dx


# -- optimizers -----------------------------------------------------------------------------------

BLOCK = 1 << 16
"""Values per block when a large parameter is updated (see :meth:`_Blocked.step`)."""


def stretch(n: int, k: int, parts: int) -> slice:
    """The ``k``-th of ``parts`` nearly equal stretches of ``range(n)``."""
    return slice(n * k // parts, n * (k + 1) // parts)


class _Blocked:
    """The update of a large parameter block by block, and of one stretch of it."""

    def step(self, part=None):
        """Apply one update to every parameter, in place.

        ``part=(k, K)``: update only the ``k``-th of ``K`` stretches of every parameter
        (flattened; parameters must be contiguous). The update is elementwise, so the
        stretches can be done by different processes (:class:`cnn_lessons.parallel.DataParallel`).
        """
        self.t += 1
        for i, (layer, name) in enumerate(self.slots):
            p = layer.params[name]
            g = self._gradient(layer, name, p)
            state = self.state_of(i, p)
            if part is None and (p.size <= BLOCK or not p.flags.c_contiguous):
                self._update(p, g, state)
                continue
            # A large parameter (or a stretch of one) is updated block by block: the update
            # makes about ten passes over its arrays, and a block's arrays stay in the
            # processor's cache from one pass to the next, where a whole 400,000-value matrix
            # would not.  The update is elementwise, so the numbers are the same.
            rows = slice(0, p.size) if part is None else stretch(p.size, *part)
            flat_p, flat_g = p.reshape(-1), g.reshape(-1)
            flat_state = {key: a.reshape(-1) for key, a in state.items()}
            for start in range(rows.start, rows.stop, BLOCK):
                block = slice(start, min(start + BLOCK, rows.stop))
                self._update(flat_p[block], flat_g[block],
                             {key: a[block] for key, a in flat_state.items()})


class FastSGD(_Blocked, SGD):
    """:class:`~cnn_lessons.optimizers.SGD`, updated block by block (and by stretches)."""

    def _update(self, p, g, state):
        lr = p.dtype.type(self.lr)  # a float64 scalar in a float32 update is much slower
        if self.momentum:
            mu = p.dtype.type(self.momentum)
            v = state["v"]
            v *= mu
            v += g
            g = g + mu * v if self.nesterov else v
        p -= lr * g


class FastAdam(_Blocked, Adam):
    """:class:`~cnn_lessons.optimizers.Adam`, block by block, with few temporary arrays and
    the first moment flushed to zero before it turns subnormal."""

    def _update(self, p, g, state):
        m, v, tmp = state["m"], state["v"], np.empty_like(p)
        f = p.dtype.type
        b1, b2 = self.betas
        m *= f(b1)
        m += f(1 - b1) * g
        v *= f(b2)
        np.multiply(g, g, out=tmp)
        tmp *= f(1 - b2)
        v += tmp
        # Units that never fire make m decay towards subnormal floats, which are many times
        # slower to compute with; zero them instead (they are below float32's normal range).
        # m shrinks by b1 per step, so looking every 16 steps is often enough.
        if self.t % 16 == 1:
            np.abs(m, out=tmp)
            m[tmp < f(1e-30)] = 0
        # p -= lr_t * m / (sqrt(v) * c + eps)  with  lr_t = lr / (1 - b1**t),
        # c = 1 / sqrt(1 - b2**t); written as  (lr_t / c) * m / (sqrt(v) + eps / c)
        step = self.lr / (1 - b1 ** self.t)
        c = 1.0 / np.sqrt(1 - b2 ** self.t)
        np.sqrt(v, out=tmp)
        tmp += f(self.eps / c)
        np.divide(m, tmp, out=tmp)
        tmp *= f(step / c)
        p -= tmp


def twin(optimizer):
    """The fast twin of a taught :class:`~cnn_lessons.optimizers.SGD` or ``Adam``: a
    :class:`FastSGD` or :class:`FastAdam` that shares the optimizer's attributes (its ``lr``,
    step count ``t`` and state arrays are the same objects), so either may step.  Any other
    optimizer is returned as it is."""
    cls = {SGD: FastSGD, Adam: FastAdam}.get(type(optimizer))
    if cls is None:
        return optimizer
    fast = object.__new__(cls)
    fast.__dict__ = optimizer.__dict__
    return fast


LAYERS = (FastConv2D, FastMaxPool2D, FastBatchNorm, FastFlatten)
"""The fast layers, each the twin of the taught layer it is saved as."""
