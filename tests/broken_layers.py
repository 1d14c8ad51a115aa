"""A corpus of deliberately broken layers: each one a bug learners really write.

Every class is a small subclass of a correct cnn_lessons layer (or a standalone class) whose
docstring names its bug.  Every ``make_*`` function returns ``(layer, x)``, an input on which the
bug shows, so that ``python -m checks tests.broken_layers:make_softmax_no_sum_term`` works too.
``EXPECTED`` maps each factory to the check that must flag it.
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


class DropoutGlobalRandom(Dropout):
    """Bug: the mask comes from the global ``np.random``, not the layer's seeded generator, so
    the same layer and input give a different output every time."""

    def forward(self, x):
        self._mask = (np.random.random(x.shape) >= self.p) / (1 - self.p)
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
    make_dropout_global_random: "deterministic forward",
    make_batchnorm_no_mean_terms: "dL/dx",
    make_scale_raises_in_backward: "forward/backward run",
}
