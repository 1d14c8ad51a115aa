"""Shared helper for the layer tests: a finite-difference gradient check written from scratch.

It deliberately does not use the ``checks`` package: the tests of the layers must not depend on
the harness that is itself built on those layers.
"""

import numpy as np
import pytest


def numerical_gradient(f, a, h=1e-6):
    """Central differences ``(f(a + h e_i) - f(a - h e_i)) / 2h`` for every entry of ``a``.

    ``a`` is modified in place during the computation and restored afterwards; ``f()`` takes no
    argument and must read ``a`` (e.g. a layer's input or one of its ``params``).
    """
    grad = np.zeros_like(a, dtype=np.float64)
    for i in np.ndindex(a.shape):
        old = a[i]
        a[i] = old + h
        f_plus = f()
        a[i] = old - h
        f_minus = f()
        a[i] = old
        grad[i] = (f_plus - f_minus) / (2 * h)
    return grad


def rel_error(a, b):
    """``|a - b| / (|a| + |b|)`` with Euclidean norms; 0 when both are zero."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    denom = np.linalg.norm(a) + np.linalg.norm(b)
    return 0.0 if denom == 0 else float(np.linalg.norm(a - b) / denom)


def layer_gradient_errors(layer, x, seed=0, before_forward=lambda: None):
    """Relative errors between a layer's backward and central differences of
    ``L = sum(forward(x) * G)`` for a random upstream gradient ``G``.

    Returns ``{"x": err, "<param>": err, ...}``.  ``before_forward`` runs before every forward
    (e.g. to reseed Dropout so that every call draws the same mask).
    """
    x = np.array(x, dtype=np.float64)
    before_forward()
    out = layer.forward(x)
    G = np.random.default_rng(seed).standard_normal(out.shape)
    dx = layer.backward(G)
    analytic = {"x": np.array(dx)}
    analytic.update({k: np.array(g) for k, g in layer.grads.items()})
    assert set(layer.grads) == set(layer.params)

    def loss():
        before_forward()
        return float(np.sum(layer.forward(x) * G))

    errors = {"x": rel_error(analytic["x"], numerical_gradient(loss, x))}
    for name, p in layer.params.items():
        errors[name] = rel_error(analytic[name], numerical_gradient(loss, p))
    return errors


@pytest.fixture
def grad_errors():
    """The function :func:`layer_gradient_errors`, for tests in several files."""
    return layer_gradient_errors


@pytest.fixture
def numgrad():
    """The function :func:`numerical_gradient`."""
    return numerical_gradient
