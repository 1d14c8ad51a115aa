"""The two networks the book trains on MNIST, built from the package's layers.

``mlp()`` -- the fully connected baseline: every pixel connects to every hidden unit.

``cnn()`` -- the book's convolutional network (input ``(N, 1, 28, 28)``)::

    Conv2D(1, 32, 3, padding=1, bias=False)       (N, 32, 28, 28)
    MaxPool2D(2) -> BatchNorm(32) -> ReLU         (N, 32, 14, 14)
    Conv2D(32, 64, 3, padding=1, bias=False)      (N, 64, 14, 14)
    MaxPool2D(2) -> BatchNorm(64) -> ReLU         (N, 64, 7, 7)
    Flatten                                       (N, 3136)
    Dense(3136, 128) -> ReLU                      (N, 128)
    Dense(128, 10)                                (N, 10) logits

Pooling comes straight after each convolution: max pooling commutes with ReLU, and batch norm
and ReLU then run on a quarter of the values, which makes a training step noticeably faster
for the same accuracy.  The convolutions have no bias: the batch norm after each (pooling passes
a constant shift straight through) subtracts every channel's mean, and a bias with it.  Trained
with Adam and a cosine learning-rate schedule for 3 epochs it reaches about 99.3% on the 10,000
MNIST test digits.
"""

from __future__ import annotations

import numpy as np

from .activations import ReLU
from .conv import Conv2D
from .dense import Dense
from .fast import FastBatchNorm, FastConv2D, FastFlatten, FastMaxPool2D
from .flatten import Flatten
from .layer import as_rng
from .model import Sequential
from .pooling import MaxPool2D
from .regularization import BatchNorm


def mlp(hidden: int = 256, seed=0, dtype=np.float32) -> Sequential:
    """``(N, 1, 28, 28) -> (N, 10)``: Flatten, Dense(784, hidden), ReLU, Dense(hidden, 10)."""
    rng = as_rng(seed)
    return Sequential([
        Flatten(),
        Dense(784, hidden, rng=rng, dtype=dtype), ReLU(),
        Dense(hidden, 10, init="glorot", rng=rng, dtype=dtype),
    ])


def cnn(seed=0, dtype=np.float32, fast: bool = True) -> Sequential:
    """The book's CNN; see the module docstring for the shapes.  ``fast=True`` builds the
    convolutions, poolings, batch norms and Flatten from :mod:`cnn_lessons.fast` (the same
    numbers, trained faster); ``fast=False`` from the chapters' layers."""
    rng = as_rng(seed)
    conv_, pool, norm, flat = ((FastConv2D, FastMaxPool2D, FastBatchNorm, FastFlatten) if fast
                               else (Conv2D, MaxPool2D, BatchNorm, Flatten))
    return Sequential([
        conv_(1, 32, 3, padding=1, bias=False, rng=rng, dtype=dtype),
        pool(2), norm(32, dtype=dtype), ReLU(),
        conv_(32, 64, 3, padding=1, bias=False, rng=rng, dtype=dtype),
        pool(2), norm(64, dtype=dtype), ReLU(),
        flat(),
        Dense(64 * 7 * 7, 128, rng=rng, dtype=dtype), ReLU(),
        Dense(128, 10, init="glorot", rng=rng, dtype=dtype),
    ])


MODELS = {"mlp": mlp, "cnn": cnn}

# How the book trains each model with Adam: also the command line's defaults.
RECIPES = {
    "mlp": {"epochs": 2, "batch_size": 64, "lr": 1e-3, "lr_schedule": "cosine"},
    "cnn": {"epochs": 3, "batch_size": 64, "lr": 3e-3, "lr_schedule": "cosine"},
}
