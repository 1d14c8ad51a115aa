"""Weight initialisers, each drawing from a seeded ``numpy.random.Generator``.

The scale of the first weights decides whether a deep network trains at all: with a standard
normal initialisation the activations of a conv net grow layer after layer and the first loss is
in the hundreds (the debugging chapter reproduces it).  He and Glorot pick the variance that keeps
the signal's size roughly constant through a layer.
"""

from __future__ import annotations

import numpy as np

from .layer import as_rng


def he_normal(shape, fan_in: int, rng=None, dtype=np.float32) -> np.ndarray:
    """Normal with standard deviation ``sqrt(2 / fan_in)``; for layers followed by ReLU.

    ``shape``: any shape; ``fan_in``: inputs that feed one output unit
    (``in_features`` for Dense, ``in_channels * kh * kw`` for Conv2D).
    """
    std = np.sqrt(2.0 / fan_in)
    return (as_rng(rng).standard_normal(shape) * std).astype(dtype)


def glorot_uniform(shape, fan_in: int, fan_out: int, rng=None, dtype=np.float32) -> np.ndarray:
    """Uniform on ``[-a, a]`` with ``a = sqrt(6 / (fan_in + fan_out))``; for tanh/sigmoid layers."""
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return as_rng(rng).uniform(-limit, limit, size=shape).astype(dtype)


def initialise(init: str, shape, fan_in: int, fan_out: int, rng, dtype) -> np.ndarray:
    """Dispatch on the name a layer was given: ``"he"`` or ``"glorot"``."""
    if init == "he":
        return he_normal(shape, fan_in, rng, dtype)
    if init == "glorot":
        return glorot_uniform(shape, fan_in, fan_out, rng, dtype)
    raise ValueError(f"unknown initialiser {init!r}; expected 'he' or 'glorot'")
