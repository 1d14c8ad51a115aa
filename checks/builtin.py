"""The built-in cases ``python -m checks`` runs with no argument: every layer of cnn_lessons.

This is the only module of ``checks`` that names concrete layer classes; the harness itself knows
nothing but the layer protocol.  Each case is a function returning ``(layer, x)``: layers in their
default float32 (the harness upcasts its own copy), small seeded inputs, and the configurations
that break naive implementations -- stride 2 with padding, a non-square kernel, overlapping pool
windows, batch norm on vectors and on images, in training and in evaluation.
"""

from __future__ import annotations

import numpy as np

from cnn_lessons import (AvgPool2D, BatchNorm, Conv2D, Conv2DNaive, Dense, Dropout, Flatten,
                         LeakyReLU, MaxPool2D, MaxPool2DNaive, ReLU, Sigmoid, Softmax, Tanh)


def normal(*shape, seed=0):
    """A float32 array of standard normal numbers."""
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def eval_mode(layer):
    layer.training = False
    return layer


def perturbed(layer, seed=1):
    """Move every param away from its initial value (BatchNorm starts at gamma = 1, beta = 0,
    where a backward that forgets gamma is still right) -- in place, as an optimizer would."""
    rng = np.random.default_rng(seed)
    for p in layer.params.values():
        p += (0.5 * rng.standard_normal(p.shape)).astype(p.dtype)
    for b in getattr(layer, "buffers", {}).values():   # running stats of an evaluated BatchNorm
        b += (0.3 * np.abs(rng.standard_normal(b.shape))).astype(b.dtype)
    return layer


CASES = {
    "Dense(6, 4)": lambda: (perturbed(Dense(6, 4, rng=0)), normal(3, 6)),
    "Conv2D(3, 4, 3)": lambda: (Conv2D(3, 4, 3, rng=0), normal(2, 3, 6, 6)),
    "Conv2D(2, 3, 3, stride=2, padding=1)":
        lambda: (Conv2D(2, 3, 3, stride=2, padding=1, rng=0), normal(2, 2, 7, 7)),
    "Conv2D(2, 3, (2, 3), padding=(1, 0))":
        lambda: (Conv2D(2, 3, (2, 3), padding=(1, 0), rng=0), normal(2, 2, 5, 6)),
    "Conv2D(2, 3, 3, padding=1, bias=False)":
        lambda: (Conv2D(2, 3, 3, padding=1, bias=False, rng=0), normal(2, 2, 5, 5)),
    "Conv2DNaive(2, 3, 3, stride=2, padding=1)":
        lambda: (Conv2DNaive(2, 3, 3, stride=2, padding=1, rng=0), normal(2, 2, 5, 5)),
    "MaxPool2D(2)": lambda: (MaxPool2D(2), normal(2, 3, 6, 6)),
    "MaxPool2D(3, stride=2)": lambda: (MaxPool2D(3, stride=2), normal(2, 2, 7, 7)),
    "MaxPool2DNaive(3, stride=2)": lambda: (MaxPool2DNaive(3, stride=2), normal(2, 2, 7, 7)),
    "AvgPool2D(2)": lambda: (AvgPool2D(2), normal(2, 3, 6, 6)),
    "AvgPool2D(3, stride=2)": lambda: (AvgPool2D(3, stride=2), normal(2, 2, 7, 7)),
    "ReLU()": lambda: (ReLU(), normal(3, 8)),
    "LeakyReLU(0.1)": lambda: (LeakyReLU(0.1), normal(3, 8)),
    "Sigmoid()": lambda: (Sigmoid(), normal(3, 8)),
    "Tanh()": lambda: (Tanh(), normal(3, 8)),
    "Softmax()": lambda: (Softmax(), normal(3, 8)),
    "Flatten()": lambda: (Flatten(), normal(2, 3, 4, 4)),
    "Dropout(0.5)": lambda: (Dropout(0.5, rng=0), normal(4, 8)),
    "BatchNorm(5) on (N, D)": lambda: (perturbed(BatchNorm(5)), normal(8, 5)),
    "BatchNorm(3) on (N, C, H, W)": lambda: (perturbed(BatchNorm(3)), normal(4, 3, 4, 4)),
    "BatchNorm(3) on (N, C, H, W), eval":
        lambda: (eval_mode(perturbed(BatchNorm(3))), normal(4, 3, 4, 4)),
}

# The fast twins of cnn_lessons.fast, on the configurations above that they handle differently.
from cnn_lessons import fast  # noqa: E402

CASES.update({
    "FastConv2D(3, 4, 3)": lambda: (fast.FastConv2D(3, 4, 3, rng=0), normal(2, 3, 6, 6)),
    "FastConv2D(2, 3, 3, stride=2, padding=1)":
        lambda: (fast.FastConv2D(2, 3, 3, stride=2, padding=1, rng=0), normal(2, 2, 7, 7)),
    "FastConv2D(2, 3, (2, 3), padding=(1, 0))":
        lambda: (fast.FastConv2D(2, 3, (2, 3), padding=(1, 0), rng=0), normal(2, 2, 5, 6)),
    "FastConv2D(2, 3, 3, padding=1, bias=False)":
        lambda: (fast.FastConv2D(2, 3, 3, padding=1, bias=False, rng=0), normal(2, 2, 5, 5)),
    "FastMaxPool2D(2)": lambda: (fast.FastMaxPool2D(2), normal(2, 3, 6, 6)),
    "FastMaxPool2D(2), eval": lambda: (eval_mode(fast.FastMaxPool2D(2)), normal(2, 3, 6, 6)),
    "FastMaxPool2D(3, stride=2)": lambda: (fast.FastMaxPool2D(3, stride=2), normal(2, 2, 7, 7)),
    "FastFlatten()": lambda: (fast.FastFlatten(), normal(2, 3, 4, 4)),
    "FastBatchNorm(5) on (N, D)": lambda: (perturbed(fast.FastBatchNorm(5)), normal(8, 5)),
    "FastBatchNorm(3) on (N, C, H, W)":
        lambda: (perturbed(fast.FastBatchNorm(3)), normal(4, 3, 4, 4)),
    "FastBatchNorm(3) on (N, C, H, W), eval":
        lambda: (eval_mode(perturbed(fast.FastBatchNorm(3))), normal(4, 3, 4, 4)),
})
