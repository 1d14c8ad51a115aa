"""The two networks the book trains on MNIST, built from the package's layers.

``mlp()`` -- the fully connected baseline: every pixel connects to every hidden unit.

``cnn()`` -- the book's convolutional network (input ``(N, 1, 28, 28)``)::

    Conv2D(1, 16, 3, padding=1)  -> BatchNorm -> ReLU   (N, 16, 28, 28)
    MaxPool2D(2)                                        (N, 16, 14, 14)
    Conv2D(16, 32, 3, padding=1) -> BatchNorm -> ReLU   (N, 32, 14, 14)
    MaxPool2D(2)                                        (N, 32, 7, 7)
    Flatten                                             (N, 1568)
    Dense(1568, 128) -> ReLU -> Dropout(0.25)           (N, 128)
    Dense(128, 10)                                      (N, 10) logits
"""

from __future__ import annotations

import numpy as np

from .activations import ReLU
from .conv import Conv2D
from .dense import Dense
from .flatten import Flatten
from .layer import as_rng
from .model import Sequential
from .pooling import MaxPool2D
from .regularization import BatchNorm, Dropout


def mlp(hidden: int = 256, seed=0, dtype=np.float32) -> Sequential:
    """``(N, 1, 28, 28) -> (N, 10)``: Flatten, Dense(784, hidden), ReLU, Dense(hidden, 10)."""
    rng = as_rng(seed)
    return Sequential([
        Flatten(),
        Dense(784, hidden, rng=rng, dtype=dtype), ReLU(),
        Dense(hidden, 10, init="glorot", rng=rng, dtype=dtype),
    ])


def cnn(seed=0, dtype=np.float32) -> Sequential:
    """The book's CNN; see the module docstring for the shapes."""
    rng = as_rng(seed)
    return Sequential([
        Conv2D(1, 16, 3, padding=1, rng=rng, dtype=dtype), BatchNorm(16, dtype=dtype), ReLU(),
        MaxPool2D(2),
        Conv2D(16, 32, 3, padding=1, rng=rng, dtype=dtype), BatchNorm(32, dtype=dtype), ReLU(),
        MaxPool2D(2),
        Flatten(),
        Dense(32 * 7 * 7, 128, rng=rng, dtype=dtype), ReLU(), Dropout(0.25, rng=rng),
        Dense(128, 10, init="glorot", rng=rng, dtype=dtype),
    ])


MODELS = {"mlp": mlp, "cnn": cnn}
