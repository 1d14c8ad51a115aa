"""Losses: values against formulas computed here with ``math``, gradients against central
differences, stability at huge logits, and the errors on bad input."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnn_lessons import BCEWithLogits, MSELoss, SoftmaxCrossEntropy


def loss_gradient_error(loss, z, y, numgrad):
    """Relative error between ``loss.backward()`` and central differences of ``loss.forward``."""
    z = np.array(z, dtype=np.float64)
    loss.forward(z, y)
    analytic = loss.backward()
    numeric = numgrad(lambda: loss.forward(z, y), z)
    return float(np.linalg.norm(analytic - numeric)
                 / (np.linalg.norm(analytic) + np.linalg.norm(numeric)))


# -- SoftmaxCrossEntropy ------------------------------------------------------------------------

def cross_entropy_reference(z, y):
    """mean_n -log( exp(z[n, y_n]) / sum_k exp(z[n, k]) ), with plain math on small logits."""
    total = 0.0
    for row, label in zip(z.tolist(), y.tolist()):
        total += -math.log(math.exp(row[label]) / sum(math.exp(v) for v in row))
    return total / len(y)


def logsumexp_reference(row):
    m = max(row)
    return m + math.log(sum(math.exp(v - m) for v in row))


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 5), k=st.integers(2, 6), seed=st.integers(0, 2**31))
def test_cross_entropy_matches_minus_log_softmax(n, k, seed):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, k)) * 3
    y = rng.integers(0, k, n)
    loss = SoftmaxCrossEntropy().forward(z, y)
    assert isinstance(loss, float)
    assert abs(loss - cross_entropy_reference(z, y)) < 1e-12 * max(1, abs(loss))


def test_cross_entropy_of_uniform_logits_is_log_k():
    z = np.zeros((3, 10))
    assert abs(SoftmaxCrossEntropy().forward(z, np.array([0, 4, 9])) - math.log(10)) < 1e-15


def test_cross_entropy_gradient_matches_finite_differences(numgrad):
    rng = np.random.default_rng(0)
    z, y = rng.standard_normal((4, 5)), rng.integers(0, 5, 4)
    assert loss_gradient_error(SoftmaxCrossEntropy(), z, y, numgrad) < 1e-7


def test_cross_entropy_gradient_is_softmax_minus_onehot_over_n():
    z = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    y = np.array([2, 0])
    loss = SoftmaxCrossEntropy()
    loss.forward(z, y)
    e = [math.exp(1), math.exp(2), math.exp(3)]
    expected = np.array([[e[0] / sum(e), e[1] / sum(e), e[2] / sum(e) - 1],
                         [1 / 3 - 1, 1 / 3, 1 / 3]]) / 2
    np.testing.assert_allclose(loss.backward(), expected, rtol=1e-14, atol=1e-16)


def test_cross_entropy_is_stable_at_huge_logits():
    z = np.array([[1e4, 0.0, -1e4], [-1e4, 1e4, 0.0], [0.0, 0.0, -1e4]])
    y = np.array([0, 0, 2])
    loss = SoftmaxCrossEntropy()
    value = loss.forward(z, y)
    grad = loss.backward()
    assert math.isfinite(value) and np.all(np.isfinite(grad))
    expected = [0.0, 2e4, 1e4 + math.log(2)]
    assert abs(value - sum(expected) / 3) < 1e-9
    for row, label, e in zip(z.tolist(), y.tolist(), expected):
        assert abs(logsumexp_reference(row) - row[label] - e) < 1e-9
    # the textbook formula without the max-shift overflows to inf / inf = NaN on the same input
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        naive = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        naive_loss = -np.log(naive[np.arange(3), y]).mean()
    assert not np.isfinite(naive_loss)
    assert np.isnan(naive).any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_gradient_keeps_the_dtype(dtype):
    loss = SoftmaxCrossEntropy()
    loss.forward(np.ones((2, 3), dtype), np.array([0, 1]))
    assert loss.backward().dtype == dtype


@pytest.mark.parametrize("y, words", [
    (np.array([0, 3]), ["[0, 3)", "3"]),
    (np.array([-1, 0]), ["[0, 3)", "-1"]),
    (np.array([0, 1, 2]), ["(2,)", "(3,)"]),
    (np.array([[0], [1]]), ["(2,)", "(2, 1)"]),
    (np.array([0.0, 1.0]), ["integer", "float64"]),
])
def test_cross_entropy_refuses_bad_labels(y, words):
    with pytest.raises(ValueError) as err:
        SoftmaxCrossEntropy().forward(np.zeros((2, 3)), y)
    assert "SoftmaxCrossEntropy" in str(err.value)
    for word in words:
        assert word in str(err.value)


def test_cross_entropy_refuses_bad_logits():
    with pytest.raises(ValueError, match=r"SoftmaxCrossEntropy.*\(N, K\).*\(6,\)"):
        SoftmaxCrossEntropy().forward(np.zeros(6), np.array([0]))
    with pytest.raises(ValueError, match="SoftmaxCrossEntropy.*floating"):
        SoftmaxCrossEntropy().forward(np.zeros((2, 3), dtype=np.int64), np.array([0, 1]))


# -- BCEWithLogits ------------------------------------------------------------------------------

@settings(max_examples=50, deadline=None)
@given(shape=st.sampled_from([(4,), (3, 2), (2, 2, 2)]), seed=st.integers(0, 2**31))
def test_bce_matches_the_textbook_formula(shape, seed):
    rng = np.random.default_rng(seed)
    z = rng.uniform(-8, 8, shape)
    y = rng.uniform(0, 1, shape) * (rng.random(shape) < 0.7)   # soft and hard targets
    terms = []
    for zi, yi in zip(z.ravel().tolist(), y.ravel().tolist()):
        s = 1 / (1 + math.exp(-zi))
        terms.append(-(yi * math.log(s) + (1 - yi) * math.log(1 - s)))
    expected = sum(terms) / len(terms)
    assert abs(BCEWithLogits().forward(z, y) - expected) < 1e-12 * max(1, expected)


def test_bce_is_finite_at_huge_logits():
    z = np.array([1e4, -1e4, 1e4, -1e4])
    y = np.array([1.0, 0.0, 0.0, 1.0])
    loss = BCEWithLogits()
    value = loss.forward(z, y)
    # right with certainty costs 0; wrong with certainty costs |z| = 1e4
    assert abs(value - (0 + 0 + 1e4 + 1e4) / 4) < 1e-9
    grad = loss.backward()
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad, np.array([0.0, 0.0, 1.0, -1.0]) / 4, atol=1e-300)


def test_bce_gradient_matches_finite_differences(numgrad):
    rng = np.random.default_rng(1)
    z, y = rng.standard_normal((3, 4)) * 2, rng.uniform(0, 1, (3, 4))
    assert loss_gradient_error(BCEWithLogits(), z, y, numgrad) < 1e-7


def test_bce_refuses_bad_targets():
    with pytest.raises(ValueError, match=r"BCEWithLogits.*\(3,\).*\(2,\)"):
        BCEWithLogits().forward(np.zeros(3), np.zeros(2))
    with pytest.raises(ValueError, match=r"BCEWithLogits.*\[0, 1\]"):
        BCEWithLogits().forward(np.zeros(2), np.array([0.5, 1.5]))


# -- MSELoss ------------------------------------------------------------------------------------

@settings(max_examples=30, deadline=None)
@given(shape=st.sampled_from([(5,), (3, 2), (2, 3, 2)]), seed=st.integers(0, 2**31))
def test_mse_is_the_mean_squared_error(shape, seed):
    rng = np.random.default_rng(seed)
    p, y = rng.standard_normal(shape), rng.standard_normal(shape)
    pairs = list(zip(p.ravel().tolist(), y.ravel().tolist()))
    expected = sum((a - b) ** 2 for a, b in pairs) / len(pairs)
    assert abs(MSELoss().forward(p, y) - expected) < 1e-13 * max(1, expected)


def test_mse_gradient_matches_finite_differences(numgrad):
    rng = np.random.default_rng(2)
    p, y = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    assert loss_gradient_error(MSELoss(), p, y, numgrad) < 1e-7


def test_mse_refuses_a_shape_mismatch():
    with pytest.raises(ValueError, match=r"MSELoss.*\(4, 1\).*\(4,\)"):
        MSELoss().forward(np.zeros((4, 1)), np.zeros(4))


# -- all losses ---------------------------------------------------------------------------------

@pytest.mark.parametrize("loss", [SoftmaxCrossEntropy(), BCEWithLogits(), MSELoss()],
                         ids=lambda l: type(l).__name__)
def test_backward_before_forward_is_a_runtime_error(loss):
    with pytest.raises(RuntimeError, match=f"{type(loss).__name__}.*before forward"):
        loss.backward()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("loss", [BCEWithLogits(), MSELoss()], ids=lambda l: type(l).__name__)
def test_elementwise_loss_gradients_keep_the_dtype(loss, dtype):
    loss.forward(np.full((2, 3), 0.3, dtype), np.full((2, 3), 0.5, dtype))
    assert loss.backward().dtype == dtype
