"""A corpus of deliberately broken layers: each one a bug learners really write.

Every class is a small subclass of a correct cnn_lessons layer (or a standalone class) whose
docstring names its bug.  Every ``make_*`` function returns ``(layer, x)``, an input on which the
bug shows, so that ``python -m checks tests.broken_layers:make_softmax_no_sum_term`` works too.
``EXPECTED`` maps each factory to the check that must flag it, ``DIAGNOSIS`` to words its
detail must contain (the kind of wrong, not only "wrong"), and ``TIMEOUT`` gives the layers
that never return a short time limit.  ``CORRECT`` lists correct layers on inputs that used to
trip the harness (saturation, NumPy's global generator): they must never FAIL.
"""

from __future__ import annotations

import numpy as np

from cnn_lessons import (AvgPool2D, BatchNorm, Conv2DNaive, Dense, Dropout, Flatten, LeakyReLU,
                         MaxPool2D, ReLU, Sigmoid, Softmax, Tanh)
from cnn_lessons.activations import sigmoid
from cnn_lessons.conv import conv2d_backward_naive, conv2d_forward_naive
from checks.builtin import perturbed


def normal(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# Each class implements forward and backward itself (textbook code, with the bug), keeping
# what backward needs in its own attributes, so that it shows the whole mistake and does not
# depend on how the correct layer caches its values.

# -- Dense ----------------------------------------------------------------------------------------

class DenseBase(Dense):
    """Correct ``x @ W + b``; the subclasses below break its backward."""

    def forward(self, x):
        self._x = x
        return x @ self.params["W"] + self.params["b"]

    def backward(self, dout):
        self.grads["W"] = self._x.T @ dout
        self.grads["b"] = dout.sum(axis=0)
        return dout @ self.params["W"].T


class DenseBiasNotSummed(DenseBase):
    """Bug: the bias gradient is not summed over the batch (``db = dout``, shape (N, out))."""

    def backward(self, dout):
        dx = super().backward(dout)
        self.grads["b"] = dout
        return dx


class DenseGradAveraged(DenseBase):
    """Bug: the parameter gradients are averaged over the batch (divided by N) instead of summed."""

    def backward(self, dout):
        dx = super().backward(dout)
        self.grads["W"] = self.grads["W"] / len(dout)
        self.grads["b"] = self.grads["b"] / len(dout)
        return dx


class DenseParamsCopied(DenseBase):
    """Bug: forward uses ``self.W``, a copy; ``params["W"]`` (what the optimizer updates) is
    never read."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.W = self.params["W"].copy()

    def forward(self, x):
        self._x = x
        return x @ self.W + self.params["b"]


class DenseGradsAccumulate(DenseBase):
    """Bug: gradients are added to (``+=``) instead of assigned, so they grow call after call."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.grads = {k: np.zeros_like(p) for k, p in self.params.items()}

    def backward(self, dout):
        self.grads["W"] += self._x.T @ dout
        self.grads["b"] += dout.sum(axis=0)
        return dout @ self.params["W"].T


class DenseWeightDecayInBackward(DenseBase):
    """Bug: an L2 penalty folded into the layer's gradient (``dW += 0.01 W``): dout = 0 still
    gives a nonzero gradient, and the layer no longer computes the gradient of its output."""

    def backward(self, dout):
        dx = super().backward(dout)
        self.grads["W"] = self.grads["W"] + 0.01 * self.params["W"]
        return dx


class DenseMissingTranspose(DenseBase):
    """Bug: ``dx = dout @ W`` instead of ``dout @ W.T``: raises for a non-square W."""

    def backward(self, dout):
        super().backward(dout)
        return dout @ self.params["W"]


def make_dense_bias_not_summed():
    return DenseBiasNotSummed(6, 4, rng=0), normal(3, 6)


def make_dense_grad_averaged():
    return DenseGradAveraged(6, 4, rng=0), normal(3, 6)


def make_dense_params_copied():
    return DenseParamsCopied(6, 4, rng=0), normal(3, 6)


def make_dense_grads_accumulate():
    return DenseGradsAccumulate(6, 4, rng=0), normal(3, 6)


def make_dense_weight_decay_in_backward():
    return DenseWeightDecayInBackward(6, 4, rng=0), normal(3, 6)


def make_dense_missing_transpose():
    return DenseMissingTranspose(6, 4, rng=0), normal(3, 6)


# -- Conv2D ---------------------------------------------------------------------------------------

class ConvBase(Conv2DNaive):
    """Correct convolution with the loops of cnn_lessons.conv; subclasses break its backward."""

    def forward(self, x):
        self._x = x
        return conv2d_forward_naive(x, self.params["W"], self.params["b"], self.stride,
                                    self.padding)

    def backward(self, dout):
        dx, self.grads["W"], self.grads["b"] = conv2d_backward_naive(
            dout, self._x, self.params["W"], self.stride, self.padding)
        return dx


class ConvStrideIgnoredInBackward(ConvBase):
    """Bug: backward walks the windows with stride 1 whatever the forward stride was."""

    def backward(self, dout):
        dx, self.grads["W"], self.grads["b"] = conv2d_backward_naive(
            dout, self._x, self.params["W"], (1, 1), self.padding)
        return dx


class ConvWeightGradUnpadded(ConvBase):
    """Bug: the weight gradient reads windows of the unpadded input ``x`` instead of the padded
    ``xp`` (reads past the edge count as zero), so every window is shifted by the padding."""

    def backward(self, dout):
        dx = super().backward(dout)
        (sh, sw), (ph, pw) = self.stride, self.padding
        _, _, kh, kw = self.params["W"].shape
        x_far = np.pad(self._x, ((0, 0), (0, 0), (0, 2 * ph), (0, 2 * pw)))   # x, not xp
        dW = np.zeros_like(self.params["W"])
        n_, f_, ho, wo = dout.shape
        for n in range(n_):
            for f in range(f_):
                for i in range(ho):
                    for j in range(wo):
                        window = x_far[n, :, i * sh:i * sh + kh, j * sw:j * sw + kw]
                        dW[f] += dout[n, f, i, j] * window
        self.grads["W"] = dW
        return dx


class ConvReturnsPaddedGradient(ConvBase):
    """Bug: backward returns the gradient of the padded input, forgetting to crop the padding."""

    def backward(self, dout):
        ph, pw = self.padding
        xp = np.pad(self._x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        dxp, self.grads["W"], self.grads["b"] = conv2d_backward_naive(
            dout, xp, self.params["W"], self.stride, (0, 0))
        return dxp


def make_conv_stride_ignored_in_backward():
    return ConvStrideIgnoredInBackward(2, 3, 3, stride=2, padding=1, rng=0), normal(2, 2, 5, 5)


def make_conv_weight_grad_unpadded():
    return ConvWeightGradUnpadded(2, 3, 3, stride=1, padding=1, rng=0), normal(2, 2, 4, 4)


def make_conv_returns_padded_gradient():
    return ConvReturnsPaddedGradient(2, 3, 3, padding=1, rng=0), normal(2, 2, 4, 4)


# -- Pooling --------------------------------------------------------------------------------------

def windows(layer, dout_shape):
    """``(i, j, rows, cols)`` of every pooling window (``layer.kernel_size``, ``layer.stride``)."""
    (kh, kw), (sh, sw) = layer.kernel_size, layer.stride
    for i in range(dout_shape[2]):
        for j in range(dout_shape[3]):
            yield i, j, slice(i * sh, i * sh + kh), slice(j * sw, j * sw + kw)


class MaxPoolBase(MaxPool2D):
    """Correct max pooling (first maximum wins), with loops; subclasses break its backward."""

    def forward(self, x):
        self._x = x
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        n, c, h, w = x.shape
        out = np.zeros((n, c, (h - kh) // sh + 1, (w - kw) // sw + 1), dtype=x.dtype)
        for i, j, rows, cols in windows(self, out.shape):
            out[:, :, i, j] = x[:, :, rows, cols].max(axis=(2, 3))
        return out

    def winners(self, rows, cols):
        """``(N, C, kh, kw)`` one-hot mask of each window's first maximum."""
        window = self._x[:, :, rows, cols]
        n, c, kh, kw = window.shape
        first = window.reshape(n, c, -1).argmax(axis=2)
        return (np.arange(kh * kw) == first[:, :, None]).reshape(window.shape)


class MaxPoolGradToFirst(MaxPoolBase):
    """Bug: each window's gradient goes to the window's first element, not to its maximum."""

    def backward(self, dout):
        dx = np.zeros_like(self._x, dtype=dout.dtype)
        for i, j, rows, cols in windows(self, dout.shape):
            dx[:, :, rows.start, cols.start] += dout[:, :, i, j]
        return dx


class MaxPoolGradToEveryTie(MaxPoolBase):
    """Bug: ``mask = (window == window.max())``: a window with two equal maxima sends its
    gradient to both, doubling it."""

    def backward(self, dout):
        dx = np.zeros_like(self._x, dtype=dout.dtype)
        for i, j, rows, cols in windows(self, dout.shape):
            window = self._x[:, :, rows, cols]
            mask = window == window.max(axis=(2, 3), keepdims=True)
            dx[:, :, rows, cols] += mask * dout[:, :, i, j, None, None]
        return dx


class MaxPoolOverlapOverwritten(MaxPoolBase):
    """Bug: ``dx[window] = ...`` instead of ``+=``: where windows overlap, a later window's
    gradient overwrites an earlier one's instead of adding to it."""

    def backward(self, dout):
        dx = np.zeros_like(self._x, dtype=dout.dtype)
        for i, j, rows, cols in windows(self, dout.shape):
            mask = self.winners(rows, cols)
            region = dx[:, :, rows, cols]
            region[mask] = (mask * dout[:, :, i, j, None, None])[mask]
        return dx


class AvgPoolMissingScale(AvgPool2D):
    """Bug: backward spreads ``dout`` over the window without dividing by ``kh * kw``."""

    def forward(self, x):
        self._x = x
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        n, c, h, w = x.shape
        out = np.zeros((n, c, (h - kh) // sh + 1, (w - kw) // sw + 1), dtype=x.dtype)
        for i, j, rows, cols in windows(self, out.shape):
            out[:, :, i, j] = x[:, :, rows, cols].mean(axis=(2, 3))
        return out

    def backward(self, dout):
        dx = np.zeros_like(self._x, dtype=dout.dtype)
        for i, j, rows, cols in windows(self, dout.shape):
            dx[:, :, rows, cols] += dout[:, :, i, j, None, None]
        return dx


def make_maxpool_grad_to_first():
    return MaxPoolGradToFirst(2), normal(2, 2, 4, 4)


def tied_maxima(shape, seed=0):
    """Normal numbers in which half of the 2x2 windows hold their maximum twice."""
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    n, c, h, w = shape
    for i in range(0, h, 2):
        for j in range(0, w, 2):
            if (i + j) % 4 == 0:
                window = x[:, :, i:i + 2, j:j + 2]
                window[:, :, 1, 1] = window.max(axis=(2, 3))     # a second maximum
    return x


def make_maxpool_grad_to_every_tie():
    return MaxPoolGradToEveryTie(2), tied_maxima((2, 2, 4, 4))


def make_maxpool_overlap_overwritten():
    return MaxPoolOverlapOverwritten(3, stride=1), normal(2, 2, 5, 5)


def make_avgpool_missing_scale():
    return AvgPoolMissingScale(2), normal(2, 2, 4, 4)


# -- Activations ----------------------------------------------------------------------------------

class SoftmaxNoSumTerm(Softmax):
    """Bug: ``dx = y * dout``, the diagonal of the Jacobian only; the ``- sum(dout * y)`` term
    that couples the entries of a row is missing."""

    def forward(self, x):
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        self._y = e / e.sum(axis=-1, keepdims=True)
        return self._y

    def backward(self, dout):
        return self._y * dout


class SigmoidBackwardUsesX(Sigmoid):
    """Bug: ``dx = dout * x * (1 - x)`` -- the derivative written with the input, not the output."""

    def forward(self, x):
        self._x = x
        return sigmoid(x)

    def backward(self, dout):
        return dout * self._x * (1 - self._x)


class TanhBackwardOneMinusY(Tanh):
    """Bug: ``dx = dout * (1 - y)`` instead of ``dout * (1 - y**2)``."""

    def forward(self, x):
        self._y = np.tanh(x)
        return self._y

    def backward(self, dout):
        return dout * (1 - self._y)


class LeakyReLUSlopeOne(LeakyReLU):
    """Bug: backward passes the gradient through unchanged, slope 1 on both sides."""

    def forward(self, x):
        return np.where(x > 0, x, self.negative_slope * x)

    def backward(self, dout):
        return dout.copy()


class ReLUInPlace(ReLU):
    """Bug: forward writes into its input (``np.maximum(x, 0, out=x)``), clobbering the
    caller's x."""

    def forward(self, x):
        self._mask = x > 0
        np.maximum(x, 0, out=x)
        return x

    def backward(self, dout):
        return dout * self._mask


class ReLUModifiesDout(ReLU):
    """Bug: backward zeroes the upstream gradient in place (``dout[~mask] = 0``)."""

    def forward(self, x):
        self._mask = x > 0
        return np.maximum(x, 0)

    def backward(self, dout):
        dout[~self._mask] = 0
        return dout


def make_softmax_no_sum_term():
    return SoftmaxNoSumTerm(), normal(3, 5)


def make_sigmoid_backward_uses_x():
    return SigmoidBackwardUsesX(), normal(3, 5)


def make_tanh_backward_one_minus_y():
    return TanhBackwardOneMinusY(), normal(3, 5)


def make_leaky_relu_slope_one():
    return LeakyReLUSlopeOne(0.1), normal(3, 5)


def make_relu_in_place():
    return ReLUInPlace(), normal(3, 5)


def make_relu_modifies_dout():
    return ReLUModifiesDout(), normal(3, 5)


# -- Flatten, Dropout, BatchNorm -------------------------------------------------------------------

class FlattenWrongOrder(Flatten):
    """Bug: backward reshapes as if the features were stored channels-last ``(N, H, W, C)``."""

    def forward(self, x):
        self._shape = x.shape
        return x.reshape(len(x), -1)

    def backward(self, dout):
        n, c, h, w = self._shape
        return dout.reshape(n, h, w, c).transpose(0, 3, 1, 2)


class FlattenLosesBatchAxis(Flatten):
    """Bug: ``x.reshape(-1)`` flattens the batch away, mixing every sample into one vector."""

    def forward(self, x):
        self._shape = x.shape
        return x.reshape(-1)

    def backward(self, dout):
        return dout.reshape(self._shape)


class DropoutMaskRedrawn(Dropout):
    """Bug: backward draws a fresh mask instead of reusing the one forward applied."""

    def forward(self, x):
        return x * (self.rng.random(x.shape) >= self.p) / (1 - self.p)

    def backward(self, dout):
        return dout * (self.rng.random(dout.shape) >= self.p) / (1 - self.p)


class DropoutUnseeded(Dropout):
    """Bug: the mask comes from a generator created without a seed in every forward
    (``np.random.default_rng()``), so the same layer and input give a different output every
    time, and no run can be reproduced."""

    def forward(self, x):
        self._mask = (np.random.default_rng().random(x.shape) >= self.p) / (1 - self.p)
        return x * self._mask

    def backward(self, dout):
        return dout * self._mask


class DropoutGlobalRandom(Dropout):
    """Correct: the mask comes from NumPy's global generator (``np.random.rand``), as many course
    solutions draw it; the harness reseeds that generator for every copy it checks."""

    def forward(self, x):
        if not self.training:
            return x
        self._mask = (np.random.rand(*x.shape) >= self.p) / (1 - self.p)
        return x * self._mask

    def backward(self, dout):
        return dout * self._mask


class BatchNormNoMeanTerms(BatchNorm):
    """Bug: training-mode backward is ``dout * gamma / std``, as if the batch mean and variance
    did not depend on x (the two ``mean`` terms are missing)."""

    def forward(self, x):
        axes, shape = ((0,), (1, -1)) if x.ndim == 2 else ((0, 2, 3), (1, -1, 1, 1))
        mu, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
        self._inv_std = 1 / np.sqrt(var + self.eps)
        self._xhat = (x - mu) * self._inv_std
        self._axes, self._shape = axes, shape
        return self.params["gamma"].reshape(shape) * self._xhat + self.params["beta"].reshape(shape)

    def backward(self, dout):
        self.grads["gamma"] = (dout * self._xhat).sum(axis=self._axes)
        self.grads["beta"] = dout.sum(axis=self._axes)
        return dout * self.params["gamma"].reshape(self._shape) * self._inv_std


def make_flatten_wrong_order():
    return FlattenWrongOrder(), normal(2, 3, 2, 4)


class TanhStaleCache(Tanh):
    """Bug: keeps the output of the FIRST forward only (``if self.y is None: self.y = ...``),
    so backward differentiates at an old input."""

    y = None

    def forward(self, x):
        out = np.tanh(x)
        if self.y is None:
            self.y = out
        return out

    def backward(self, dout):
        return dout * (1 - self.y ** 2)


class BatchNormForgetsGamma(BatchNorm):
    """Bug: the input gradient leaves out gamma -- still right while gamma is all ones, as at
    initialisation, which is why the harness checks layers at perturbed parameters."""

    def backward(self, dout):
        return super().backward(dout) / self.params["gamma"]   # (N, D): gamma per column


def make_tanh_stale_cache():
    return TanhStaleCache(), normal(3, 8)


def make_batchnorm_forgets_gamma():
    return perturbed(BatchNormForgetsGamma(5)), normal(8, 5)


def make_flatten_loses_batch_axis():
    return FlattenLosesBatchAxis(), normal(2, 3, 2, 4)


def make_dropout_mask_redrawn():
    return DropoutMaskRedrawn(0.5, rng=0), normal(4, 6)


def make_dropout_unseeded():
    return DropoutUnseeded(0.5), normal(4, 6)


def make_dropout_global_random():
    return DropoutGlobalRandom(0.5), normal(4, 6)


def make_batchnorm_no_mean_terms():
    return BatchNormNoMeanTerms(3), normal(4, 3, 3, 3)


# -- standalone -----------------------------------------------------------------------------------

class ScaleRaisesInBackward:
    """A standalone layer (no base class), ``y = s * x``, whose backward raises: a typo,
    ``self.scale`` for ``self.params["s"]``."""

    def __init__(self):
        self.params = {"s": np.array([2.0], dtype=np.float32)}
        self.grads = {}

    def forward(self, x):
        self._x = x
        return x * self.params["s"]

    def backward(self, dout):
        self.grads["s"] = np.array([np.sum(dout * self._x)])
        return dout * self.scale


def make_scale_raises_in_backward():
    return ScaleRaisesInBackward(), normal(3, 4)


# -- what kind of wrong: patterns the diagnosis names -------------------------------------------

class DenseBiasAveraged(DenseBase):
    """Bug: ``db = dout.mean(axis=0)``: the bias gradient averaged over the batch, 1/N of it."""

    def backward(self, dout):
        dx = super().backward(dout)
        self.grads["b"] = dout.mean(axis=0)
        return dx


class DenseWeightGradTransposed(DenseBase):
    """Bug: ``dW = (x.T @ dout).T`` -- for a square W the shape is right, the entries are not."""

    def backward(self, dout):
        dx = super().backward(dout)
        self.grads["W"] = (self._x.T @ dout).T
        return dx


class DenseBiasGradZero(DenseBase):
    """Bug: ``grads["b"] = np.zeros_like(b)``: a placeholder never replaced by the gradient."""

    def backward(self, dout):
        dx = super().backward(dout)
        self.grads["b"] = np.zeros_like(self.params["b"])
        return dx


class DenseFirstSampleGradient(DenseBase):
    """Bug: ``dx[n] = dout[0] @ W.T`` for every n (a loop body that indexes with 0, not n)."""

    def backward(self, dout):
        super().backward(dout)
        return np.repeat(dout[:1] @ self.params["W"].T, len(dout), axis=0)


class DenseCastsToFloat32(DenseBase):
    """Bug: forward computes in float32 (``x.astype(np.float32)``), whatever the dtype of x and
    W: seven digits, where float64 was promised."""

    def forward(self, x):
        self._x = x
        return x.astype(np.float32) @ self.params["W"].astype(np.float32) + self.params["b"]


class DenseGradsFloat32(DenseBase):
    """Bug: the gradients are cast to float32 (``.astype(np.float32)``) whatever the dtype of the
    parameters."""

    def backward(self, dout):
        dx = super().backward(dout)
        self.grads = {k: g.astype(np.float32) for k, g in self.grads.items()}
        return dx


class TanhSignFlipped(Tanh):
    """Bug: ``dx = dout * (y**2 - 1)``: the derivative with its sign flipped."""

    def forward(self, x):
        self._y = np.tanh(x)
        return self._y

    def backward(self, dout):
        return dout * (self._y ** 2 - 1)


class MaxPoolFirstChannelMask(MaxPoolBase):
    """Bug: every channel routes its gradient with the winners of channel 0 (``mask[:, :1]``)."""

    def backward(self, dout):
        dx = np.zeros_like(self._x, dtype=dout.dtype)
        for i, j, rows, cols in windows(self, dout.shape):
            mask = self.winners(rows, cols)[:, :1]
            dx[:, :, rows, cols] += mask * dout[:, :, i, j, None, None]
        return dx


class SoftmaxNoMaxShift(Softmax):
    """Bug: ``exp(x) / sum(exp(x))`` without subtracting the row's max: overflows to inf, and
    inf / inf is NaN, for logits above about 710."""

    def forward(self, x):
        with np.errstate(over="ignore", invalid="ignore"):
            e = np.exp(x)
            self._y = e / e.sum(axis=-1, keepdims=True)
        return self._y

    def backward(self, dout):
        return self._y * (dout - np.sum(dout * self._y, axis=-1, keepdims=True))


class SquareBackwardDividesByX:
    """Bug: y = x**2 with ``dx = dout * 2 * y / x`` -- the same as 2x, except at x = 0 (0 / 0)."""

    def __init__(self):
        self.params, self.grads = {}, {}

    def forward(self, x):
        self._x, self._y = x, x ** 2
        return self._y

    def backward(self, dout):
        with np.errstate(invalid="ignore", divide="ignore"):
            return dout * 2 * self._y / self._x


# -- protocol: what a second call, or the layers around, would see -------------------------------

class ReLUBackwardOverwritesCache(ReLU):
    """Bug: backward builds its mask in the cached input itself (``mask = self._x;
    mask[...] = ...``): x, which the layer below still holds, is overwritten."""

    def forward(self, x):
        self._x = x
        return np.maximum(x, 0)

    def backward(self, dout):
        mask = self._x
        mask[...] = self._x > 0
        return dout * mask


class TanhSquaresOutputInPlace(Tanh):
    """Bug: backward squares forward's output in place (``self._y **= 2``): the output, which the
    layer above holds as its input, changes, and a second backward is wrong."""

    def forward(self, x):
        self._y = np.tanh(x)
        return self._y

    def backward(self, dout):
        self._y **= 2
        return dout * (1 - self._y)


# -- layers that never return, or end the program -----------------------------------------------

class ReLUForwardNeverReturns(ReLU):
    """Bug: forward loops forever (a ``while`` whose condition never changes)."""

    def forward(self, x):
        y = x.copy()
        while np.any(y < 0):
            y = y * 1.0          # meant: y[y < 0] = 0
        return y


class ReLUBackwardNeverReturns(ReLU):
    """Bug: backward waits forever (an index that never advances)."""

    def forward(self, x):
        self._mask = x > 0
        return np.maximum(x, 0)

    def backward(self, dout):
        i = 0
        while i < dout.size:
            pass                 # meant: i += 1
        return dout * self._mask


class ReLUExitsInForward(ReLU):
    """Bug: forward calls ``sys.exit(0)`` (debugging code left in): the program would end with the
    "success" status."""

    def forward(self, x):
        raise SystemExit(0)


class ReLUInterruptsInBackward(ReLU):
    """Bug: backward raises ``KeyboardInterrupt`` itself (a stop left in for debugging)."""

    def forward(self, x):
        self._mask = x > 0
        return np.maximum(x, 0)

    def backward(self, dout):
        raise KeyboardInterrupt


def make_dense_bias_averaged():
    return DenseBiasAveraged(6, 4, rng=0), normal(4, 6)


def make_dense_weight_grad_transposed():
    return perturbed(DenseWeightGradTransposed(4, 4, rng=0)), normal(5, 4)


def make_dense_bias_grad_zero():
    return DenseBiasGradZero(6, 4, rng=0), normal(3, 6)


def make_dense_first_sample_gradient():
    return DenseFirstSampleGradient(6, 4, rng=0), normal(3, 6)


def make_dense_casts_to_float32():
    return DenseCastsToFloat32(6, 4, rng=0, dtype=np.float64), normal(3, 6).astype(np.float64)


def make_dense_grads_float32():
    return DenseGradsFloat32(6, 4, rng=0, dtype=np.float64), normal(3, 6).astype(np.float64)


def make_tanh_sign_flipped():
    return TanhSignFlipped(), normal(3, 5)


def make_maxpool_first_channel_mask():
    return MaxPoolFirstChannelMask(2), normal(2, 3, 4, 4)


def make_softmax_no_max_shift():
    x = 3 * normal(3, 5)
    x[1, 2] = 800.0             # one large logit: exp overflows
    return SoftmaxNoMaxShift(), x


def make_square_backward_divides_by_x():
    x = normal(3, 4).astype(np.float64)
    x[0, 1] = 0.0
    return SquareBackwardDividesByX(), x


def make_relu_backward_overwrites_cache():
    return ReLUBackwardOverwritesCache(), normal(3, 5)


def make_tanh_squares_output_in_place():
    return TanhSquaresOutputInPlace(), normal(3, 5)


def make_relu_forward_never_returns():
    return ReLUForwardNeverReturns(), normal(3, 5)


def make_relu_backward_never_returns():
    return ReLUBackwardNeverReturns(), normal(3, 5)


def make_relu_exits_in_forward():
    return ReLUExitsInForward(), normal(3, 5)


def make_relu_interrupts_in_backward():
    return ReLUInterruptsInBackward(), normal(3, 5)


# -- correct layers on inputs that used to trip the harness ---------------------------------------

def make_sigmoid_saturated():
    """A correct sigmoid on |x| between 10 and 20: gradients of 1e-5 to 1e-9."""
    rng = np.random.default_rng(1)
    return Sigmoid(), rng.uniform(10, 20, (4, 6)) * rng.choice([-1, 1], (4, 6))


def make_softmax_peaked():
    """A correct softmax on logits spread over -25..25: one class takes almost everything."""
    return Softmax(), np.random.default_rng(2).uniform(-25, 25, (4, 6))


EXPECTED = {
    make_dense_bias_not_summed: "grads match params",
    make_dense_grad_averaged: "dL/dW",
    make_dense_params_copied: "params are live",
    make_dense_grads_accumulate: "no accumulation",
    make_dense_weight_decay_in_backward: "zero dout gives zero grads",
    make_dense_missing_transpose: "forward/backward run",
    make_conv_stride_ignored_in_backward: "dL/dx",
    make_conv_weight_grad_unpadded: "dL/dW",
    make_conv_returns_padded_gradient: "dx shape",
    make_maxpool_grad_to_first: "dL/dx",
    make_maxpool_grad_to_every_tie: "dL/dx",
    make_maxpool_overlap_overwritten: "dL/dx",
    make_avgpool_missing_scale: "dL/dx",
    make_softmax_no_sum_term: "dL/dx",
    make_sigmoid_backward_uses_x: "dL/dx",
    make_tanh_backward_one_minus_y: "dL/dx",
    make_leaky_relu_slope_one: "dL/dx",
    make_relu_in_place: "x unchanged by forward",
    make_relu_modifies_dout: "dout unchanged by backward",
    make_flatten_wrong_order: "dL/dx",
    make_flatten_loses_batch_axis: "batch axis kept",
    make_tanh_stale_cache: "fresh cache",
    make_batchnorm_forgets_gamma: "dL/dx",
    make_dropout_mask_redrawn: "dL/dx",
    make_dropout_unseeded: "deterministic forward",
    make_batchnorm_no_mean_terms: "dL/dx",
    make_scale_raises_in_backward: "forward/backward run",
    make_dense_bias_averaged: "dL/db",
    make_dense_weight_grad_transposed: "dL/dW",
    make_dense_bias_grad_zero: "dL/db",
    make_dense_first_sample_gradient: "dL/dx",
    make_dense_casts_to_float32: "dL/dx",
    make_dense_grads_float32: "grads match params",
    make_tanh_sign_flipped: "dL/dx",
    make_maxpool_first_channel_mask: "dL/dx",
    make_softmax_no_max_shift: "finite output",
    make_square_backward_divides_by_x: "dL/dx",
    make_relu_backward_overwrites_cache: "x unchanged by backward",
    make_tanh_squares_output_in_place: "output unchanged by backward",
    make_relu_forward_never_returns: "time limit",
    make_relu_backward_never_returns: "time limit",
    make_relu_exits_in_forward: "forward/backward run",
    make_relu_interrupts_in_backward: "forward/backward run",
}

DIAGNOSIS = {
    make_dense_bias_not_summed: "grads['b'] (3, 4) vs params['b'] (4,)",
    make_dense_params_copied: "forward reads a different array (a copy?)",
    make_dense_grads_accumulate: "gradients accumulated (+=)",
    make_dense_weight_decay_in_backward: "a penalty belongs in the loss or optimizer",
    make_dense_missing_transpose: "ValueError: matmul",
    make_conv_stride_ignored_in_backward: "no simple pattern",
    make_conv_weight_grad_unpadded: "no simple pattern",
    make_conv_returns_padded_gradient: "backward returned shape (2, 2, 6, 6)",
    make_maxpool_overlap_overwritten: "10 of 100 coordinates are wrong",
    make_softmax_no_sum_term: "15 of 15 coordinates are wrong",
    make_sigmoid_backward_uses_x: "15 of 15 coordinates are wrong",
    make_tanh_backward_one_minus_y: "15 of 15 coordinates are wrong",
    make_relu_in_place: "forward modified its input x in place",
    make_relu_modifies_dout: "backward modified dout in place",
    make_flatten_loses_batch_axis: "the first axis must stay the batch",
    make_tanh_stale_cache: "backward uses a stale cache",
    make_dropout_mask_redrawn: "the gradient goes to the wrong entries",
    make_batchnorm_no_mean_terms: "100 of 100 coordinates are wrong",
    make_scale_raises_in_backward: "AttributeError",
    make_dense_grad_averaged: "× 0.3333 everywhere = 1/N with N = 3: averaged over the batch",
    make_dense_bias_averaged: "× 0.25 everywhere = 1/N with N = 4: averaged over the batch",
    make_avgpool_missing_scale: "× 4 everywhere = the window size, 2 x 2 = 4",
    make_dense_weight_grad_transposed: "backward equals the numerical gradient transposed",
    make_dense_bias_grad_zero: "backward is 0 everywhere",
    make_dense_first_sample_gradient: "right for samples [0] and wrong for samples [1, 2]",
    make_maxpool_first_channel_mask: "right for channels [0] and wrong for channels [1, 2]",
    make_tanh_sign_flipped: "× -1 everywhere: the sign is flipped",
    make_leaky_relu_slope_one: "× 10 at 8 of 15 coordinates (exactly where x < 0)",
    make_batchnorm_forgets_gamma: "numerical / gamma[k] for each feature k",
    make_maxpool_grad_to_first: "the gradient goes to the wrong entries",
    make_flatten_wrong_order: "the right values in the wrong places",
    make_maxpool_grad_to_every_tie: "ties",
    make_dense_casts_to_float32: "float32",
    make_dense_grads_float32: "grads['W'] is float32, params['W'] is float64",
    make_softmax_no_max_shift: "forward itself returned nan",
    make_square_backward_divides_by_x: "backward gave nan",
    make_relu_backward_overwrites_cache: "backward wrote into the x",
    make_tanh_squares_output_in_place: "backward wrote into the output",
    make_dropout_unseeded: "different outputs",
    make_relu_forward_never_returns: "timed out in forward",
    make_relu_backward_never_returns: "timed out in backward",
    make_relu_exits_in_forward: "SystemExit",
    make_relu_interrupts_in_backward: "KeyboardInterrupt",
}

TIMEOUT = {make_relu_forward_never_returns: 1, make_relu_backward_never_returns: 1}

CORRECT = [make_dropout_global_random, make_sigmoid_saturated, make_softmax_peaked]
