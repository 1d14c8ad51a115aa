"""Dense, activations, Softmax, Flatten, Dropout and BatchNorm: values against formulas written
here, gradients against central differences, dtypes, and the errors on bad input."""

import math
import statistics

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from types import SimpleNamespace

from cnn_lessons import (FastBatchNorm, FastFlatten, BatchNorm, Dense, Dropout, Flatten, LeakyReLU, ReLU, Sigmoid, Softmax,
                         Tanh)

F64 = np.float64
SMOOTH_TOL = 1e-7

KINDS = {"taught": SimpleNamespace(BatchNorm=BatchNorm, Flatten=Flatten),
         "fast": SimpleNamespace(BatchNorm=FastBatchNorm, Flatten=FastFlatten)}


@pytest.fixture(params=list(KINDS))
def kind(request):
    """BatchNorm and Flatten as the chapters build them, then their fast twins."""
    return KINDS[request.param]


def away_from_zero(rng, shape, margin=0.05):
    """Normal samples with ``|x| >= margin``, so a step of 1e-6 never crosses a kink at 0."""
    x = rng.standard_normal(shape)
    return np.where(np.abs(x) < margin, np.sign(x + 1e-12) * margin * 2, x)


# -- Dense ------------------------------------------------------------------------------------

@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 4), d_in=st.integers(1, 5), d_out=st.integers(1, 5),
       seed=st.integers(0, 2**31))
def test_dense_forward_matches_the_sum_formula(n, d_in, d_out, seed):
    rng = np.random.default_rng(seed)
    layer = Dense(d_in, d_out, rng=rng, dtype=F64)
    layer.params["b"][...] = rng.standard_normal(d_out)
    x = rng.standard_normal((n, d_in))
    W, b = layer.params["W"], layer.params["b"]
    expected = np.array([[sum(x[i, k] * W[k, j] for k in range(d_in)) + b[j]
                          for j in range(d_out)] for i in range(n)])
    np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-12, atol=1e-12)


def test_dense_gradients_match_finite_differences(grad_errors):
    rng = np.random.default_rng(1)
    layer = Dense(4, 3, rng=rng, dtype=F64)
    layer.params["b"][...] = rng.standard_normal(3)
    errors = grad_errors(layer, rng.standard_normal((5, 4)))
    assert set(errors) == {"x", "W", "b"}
    assert max(errors.values()) < SMOOTH_TOL, errors


def test_dense_params_are_the_arrays_forward_reads():
    layer = Dense(2, 2, rng=0, dtype=F64)
    layer.params["W"][...] = np.eye(2)
    layer.params["b"][...] = [1.0, -1.0]
    np.testing.assert_array_equal(layer.forward(np.array([[3.0, 4.0]])), [[4.0, 3.0]])


def test_dense_init_scales():
    he = Dense(400, 300, rng=0).params["W"]
    assert abs(he.std() - math.sqrt(2 / 400)) < 0.02 * math.sqrt(2 / 400)
    glorot = Dense(400, 300, init="glorot", rng=0).params["W"]
    limit = math.sqrt(6 / 700)
    assert np.abs(glorot).max() <= limit
    assert abs(glorot.std() - limit / math.sqrt(3)) < 0.02 * limit
    np.testing.assert_array_equal(Dense(3, 2, rng=7).params["W"], Dense(3, 2, rng=7).params["W"])
    with pytest.raises(ValueError, match="initialiser"):
        Dense(3, 2, init="zeros")


# -- activations ------------------------------------------------------------------------------

def relu_ref(v):
    return max(v, 0.0)


def leaky_ref(v, a=0.01):
    return v if v > 0 else a * v


def sigmoid_ref(v):
    return 1 / (1 + math.exp(-v)) if v >= 0 else math.exp(v) / (1 + math.exp(v))


ACTIVATIONS = [
    (ReLU, relu_ref),
    (LeakyReLU, leaky_ref),
    (Sigmoid, sigmoid_ref),
    (Tanh, math.tanh),
]


@pytest.mark.parametrize("cls, ref", ACTIVATIONS, ids=lambda v: getattr(v, "__name__", ""))
def test_activation_forward_matches_scalar_formula(cls, ref):
    x = np.random.default_rng(2).standard_normal((3, 2, 4)) * 3
    out = cls().forward(x)
    expected = np.vectorize(ref, otypes=[F64])(x)
    np.testing.assert_allclose(out, expected, rtol=1e-14, atol=1e-15)


def test_leaky_relu_uses_its_slope():
    x = np.array([[-2.0, 3.0]])
    np.testing.assert_allclose(LeakyReLU(0.2).forward(x), [[-0.4, 3.0]])


@pytest.mark.parametrize("cls", [ReLU, LeakyReLU, Sigmoid, Tanh, Softmax])
def test_activation_gradients_match_finite_differences(cls, grad_errors):
    x = away_from_zero(np.random.default_rng(3), (4, 5))
    errors = grad_errors(cls(), x, seed=4)
    assert errors["x"] < SMOOTH_TOL, errors


def test_relu_gradient_at_zero_is_zero():
    layer = ReLU()
    layer.forward(np.array([[0.0, 1.0, -1.0]]))
    np.testing.assert_array_equal(layer.backward(np.ones((1, 3))), [[0.0, 1.0, 0.0]])


def test_sigmoid_is_stable_for_huge_inputs():
    x = np.array([[-1e4, -800.0, 0.0, 800.0, 1e4]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is fine
        out = Sigmoid().forward(x)
    np.testing.assert_allclose(out, [[0.0, 0.0, 0.5, 1.0, 1.0]], atol=1e-300)


def test_softmax_matches_the_definition():
    x = np.random.default_rng(5).standard_normal((4, 6))
    out = Softmax().forward(x)
    for i in range(4):
        total = sum(math.exp(v) for v in x[i])
        np.testing.assert_allclose(out[i], [math.exp(v) / total for v in x[i]], rtol=1e-14)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-15)


def test_softmax_is_stable_for_huge_logits():
    x = np.array([[1e4, 0.0, -1e4], [1e4, 1e4, 0.0]])
    out = Softmax().forward(x)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, [[1, 0, 0], [0.5, 0.5, 0]], atol=1e-300)


# -- Flatten ----------------------------------------------------------------------------------

def test_flatten_is_row_major_and_backward_undoes_it(kind, grad_errors):
    x = np.random.default_rng(6).standard_normal((2, 3, 4, 5))
    layer = kind.Flatten()
    out = layer.forward(x)
    assert out.shape == (2, 60)
    for n, c, i, j in np.ndindex(x.shape):
        assert out[n, c * 20 + i * 5 + j] == x[n, c, i, j]
    dout = np.random.default_rng(7).standard_normal((2, 60))
    dx = layer.backward(dout)
    for n, c, i, j in np.ndindex(x.shape):
        assert dx[n, c, i, j] == dout[n, c * 20 + i * 5 + j]
    assert grad_errors(kind.Flatten(), x)["x"] < SMOOTH_TOL


# -- Dropout ----------------------------------------------------------------------------------

def test_dropout_keeps_about_1_minus_p_and_preserves_the_mean():
    p = 0.3
    x = np.ones((1000, 1000))
    out = Dropout(p, rng=0).forward(x)
    kept = out != 0
    n = x.size
    # binomial: the kept fraction has standard deviation sqrt(p (1-p) / n) ~ 4.6e-4
    assert abs(kept.mean() - (1 - p)) < 5 * math.sqrt(p * (1 - p) / n)
    np.testing.assert_allclose(out[kept], 1 / (1 - p), rtol=1e-15)  # inverted scaling
    assert abs(out.mean() - 1.0) < 5 * math.sqrt(p / (1 - p) / n)


def test_dropout_is_the_identity_in_eval_mode():
    layer = Dropout(0.5, rng=0)
    layer.training = False
    x = np.random.default_rng(8).standard_normal((3, 4))
    np.testing.assert_array_equal(layer.forward(x), x)
    dout = np.random.default_rng(9).standard_normal((3, 4))
    np.testing.assert_array_equal(layer.backward(dout), dout)


def test_dropout_p_zero_is_the_identity_in_training():
    x = np.random.default_rng(8).standard_normal((3, 4))
    np.testing.assert_array_equal(Dropout(0.0, rng=0).forward(x), x)


def test_dropout_is_reproducible_with_a_seed():
    x = np.random.default_rng(10).standard_normal((50, 40))
    a, b = Dropout(0.5, rng=123).forward(x), Dropout(0.5, rng=123).forward(x)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, Dropout(0.5, rng=124).forward(x))


def test_dropout_backward_uses_the_forward_mask():
    x = away_from_zero(np.random.default_rng(11), (20, 30))
    layer = Dropout(0.4, rng=1)
    out = layer.forward(x)
    dout = np.random.default_rng(12).standard_normal(x.shape)
    np.testing.assert_allclose(layer.backward(dout), dout * (out / x), rtol=1e-14)


def test_dropout_gradient_with_a_fixed_mask(grad_errors):
    layer = Dropout(0.5)

    def reseed():
        layer.rng = np.random.default_rng(99)

    errors = grad_errors(layer, np.random.default_rng(13).standard_normal((4, 6)),
                         before_forward=reseed)
    assert errors["x"] < SMOOTH_TOL, errors


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_dropout_refuses_p_outside_0_1(p):
    with pytest.raises(ValueError, match="Dropout"):
        Dropout(p)


# -- BatchNorm ----------------------------------------------------------------------------------

def bn_reference(x, gamma, beta, eps):
    """Per-feature normalisation with plain loops over the features."""
    out = np.empty_like(x)
    for c in range(x.shape[1]):
        values = x[:, c]
        mu = values.mean()
        var = ((values - mu) ** 2).mean()
        out[:, c] = gamma[c] * (values - mu) / math.sqrt(var + eps) + beta[c]
    return out


@pytest.mark.parametrize("shape", [(6, 3), (3, 2, 4, 5)])
def test_batchnorm_train_forward_matches_the_formula(kind, shape):
    rng = np.random.default_rng(14)
    layer = kind.BatchNorm(shape[1], dtype=F64)
    layer.params["gamma"][...] = rng.uniform(0.5, 2, shape[1])
    layer.params["beta"][...] = rng.standard_normal(shape[1])
    x = rng.standard_normal(shape) * 3 + 1
    np.testing.assert_allclose(layer.forward(x),
                               bn_reference(x, layer.params["gamma"], layer.params["beta"], 1e-5),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(6, 3), (3, 2, 3, 3)])
def test_batchnorm_train_gradients_match_finite_differences(kind, shape, grad_errors):
    rng = np.random.default_rng(15)
    layer = kind.BatchNorm(shape[1], dtype=F64)
    layer.params["gamma"][...] = rng.uniform(0.5, 2, shape[1])
    layer.params["beta"][...] = rng.standard_normal(shape[1])
    errors = grad_errors(layer, rng.standard_normal(shape) * 2 + 0.5)
    assert set(errors) == {"x", "gamma", "beta"}
    assert max(errors.values()) < SMOOTH_TOL, errors


@pytest.mark.parametrize("shape", [(6, 3), (3, 2, 3, 3)])
def test_batchnorm_eval_uses_running_stats_and_its_gradient(kind, shape, grad_errors):
    rng = np.random.default_rng(16)
    c = shape[1]
    layer = kind.BatchNorm(c, eps=1e-3, dtype=F64)
    layer.params["gamma"][...] = rng.uniform(0.5, 2, c)
    layer.params["beta"][...] = rng.standard_normal(c)
    layer.buffers["running_mean"][...] = rng.standard_normal(c)
    layer.buffers["running_var"][...] = rng.uniform(0.5, 3, c)
    rm, rv = layer.buffers["running_mean"].copy(), layer.buffers["running_var"].copy()
    layer.training = False
    x = rng.standard_normal(shape)
    bshape = (1, c) + (1,) * (len(shape) - 2)
    expected = (layer.params["gamma"].reshape(bshape) * (x - rm.reshape(bshape))
                / np.sqrt(rv.reshape(bshape) + 1e-3) + layer.params["beta"].reshape(bshape))
    np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-13, atol=1e-13)
    errors = grad_errors(layer, x)
    assert max(errors.values()) < SMOOTH_TOL, errors
    # evaluation never moves the running statistics
    np.testing.assert_array_equal(layer.buffers["running_mean"], rm)
    np.testing.assert_array_equal(layer.buffers["running_var"], rv)


@pytest.mark.parametrize("shape", [(5, 3), (2, 3, 2, 3)])
def test_batchnorm_running_stats_follow_pytorch_convention(kind, shape):
    """running = 0.9 running + 0.1 batch, with the unbiased variance, step after step."""
    rng = np.random.default_rng(17)
    c = shape[1]
    layer = kind.BatchNorm(c, dtype=F64)
    rm, rv = [0.0] * c, [1.0] * c
    for _ in range(4):
        x = rng.standard_normal(shape) * 2 + 3
        layer.forward(x)
        for k in range(c):
            values = [float(v) for v in np.moveaxis(x, 1, 0)[k].ravel()]
            rm[k] = 0.9 * rm[k] + 0.1 * statistics.fmean(values)
            rv[k] = 0.9 * rv[k] + 0.1 * statistics.variance(values)   # divides by m - 1
        np.testing.assert_allclose(layer.buffers["running_mean"], rm, rtol=1e-12)
        np.testing.assert_allclose(layer.buffers["running_var"], rv, rtol=1e-12)


def test_batchnorm_matches_torch(kind):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(18)
    layer = kind.BatchNorm(3, momentum=0.2, dtype=F64)
    ref = torch.nn.BatchNorm2d(3, momentum=0.2).double()
    for _ in range(3):
        x = rng.standard_normal((4, 3, 2, 2)) * 1.5 + 0.5
        out = layer.forward(x)
        np.testing.assert_allclose(out, ref(torch.from_numpy(x)).detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(layer.buffers["running_mean"], ref.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(layer.buffers["running_var"], ref.running_var.numpy(), rtol=1e-12)
    layer.training = False
    ref.eval()
    x = rng.standard_normal((2, 3, 2, 2))
    np.testing.assert_allclose(layer.forward(x), ref(torch.from_numpy(x)).detach().numpy(),
                               atol=1e-12)


def test_batchnorm_refuses_a_single_value_per_feature_in_training(kind):
    with pytest.raises(ValueError, match="BatchNorm"):
        kind.BatchNorm(3).forward(np.ones((1, 3), np.float32))


# -- dtypes -------------------------------------------------------------------------------------

def make_layers(dtype, kind):
    return [
        (Dense(4, 3, rng=0, dtype=dtype), (2, 4)),
        (ReLU(), (2, 4)),
        (LeakyReLU(), (2, 4)),
        (Sigmoid(), (2, 4)),
        (Tanh(), (2, 4)),
        (Softmax(), (2, 4)),
        (kind.Flatten(), (2, 3, 2, 2)),
        (Dropout(0.5, rng=0), (2, 4)),
        (kind.BatchNorm(4, dtype=dtype), (3, 4)),
        (kind.BatchNorm(3, dtype=dtype), (2, 3, 2, 2)),
    ]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("training", [True, False])
def test_layers_keep_the_dtype(kind, dtype, training):
    for layer, shape in make_layers(dtype, kind):
        layer.training = training
        x = np.random.default_rng(19).standard_normal(shape).astype(dtype)
        out = layer.forward(x)
        assert out.dtype == dtype, (layer, out.dtype)
        dx = layer.backward(np.ones_like(out))
        assert dx.dtype == dtype, (layer, dx.dtype)
        for name, p in layer.params.items():
            assert p.dtype == dtype
            assert layer.grads[name].dtype == dtype, (layer, name)
        for buf in layer.buffers.values():
            assert buf.dtype == dtype


# -- bad input ----------------------------------------------------------------------------------

def assert_names(err, *parts):
    msg = str(err.value)
    for part in parts:
        assert part in msg, f"{part!r} not in {msg!r}"


def test_dense_refuses_wrong_in_features():
    with pytest.raises(ValueError) as err:
        Dense(4, 3).forward(np.ones((2, 5), np.float32))
    assert_names(err, "Dense", "(N, 4)", "(2, 5)")


def test_dense_refuses_wrong_ndim():
    with pytest.raises(ValueError) as err:
        Dense(4, 3).forward(np.ones((2, 1, 4), np.float32))
    assert_names(err, "Dense", "(N, 4)", "(2, 1, 4)")


def test_batchnorm_refuses_wrong_features_and_ndim(kind):
    with pytest.raises(ValueError) as err:
        kind.BatchNorm(3).forward(np.ones((4, 2), np.float32))
    assert_names(err, "BatchNorm", "(N, 3)", "(4, 2)")
    with pytest.raises(ValueError) as err:
        kind.BatchNorm(3).forward(np.ones((4, 3, 2), np.float32))
    assert_names(err, "BatchNorm", "(N, 3, H, W)", "(4, 3, 2)")


@pytest.mark.parametrize("layer", [Dense(4, 3), ReLU(), Sigmoid(), Softmax(), Flatten(),
                                   Dropout(), BatchNorm(4), FastFlatten(), FastBatchNorm(4)],
                         ids=repr)
def test_layers_refuse_integer_input(layer):
    with pytest.raises(ValueError) as err:
        layer.forward(np.ones((2, 4), dtype=np.int64))
    assert_names(err, type(layer).__name__, "floating", "int64")


@pytest.mark.parametrize("layer", [Dense(4, 3), ReLU(), LeakyReLU(), Sigmoid(), Tanh(),
                                   Softmax(), Flatten(), Dropout(), BatchNorm(4), FastFlatten(),
                                   FastBatchNorm(4)], ids=repr)
def test_backward_before_forward_is_a_runtime_error(layer):
    with pytest.raises(RuntimeError) as err:
        layer.backward(np.ones((2, 4), np.float32))
    assert_names(err, type(layer).__name__, "before forward")


@pytest.mark.parametrize("layer, out_shape", [
    (Dense(4, 3), (2, 3)), (ReLU(), (2, 4)), (Sigmoid(), (2, 4)), (Softmax(), (2, 4)),
    (Flatten(), (2, 4)), (Dropout(), (2, 4)), (BatchNorm(4), (2, 4)), (FastFlatten(), (2, 4)),
    (FastBatchNorm(4), (2, 4))], ids=repr)
def test_backward_refuses_dout_of_the_wrong_shape(layer, out_shape):
    layer.forward(np.ones((2, 4), np.float32))
    with pytest.raises(ValueError) as err:
        layer.backward(np.ones((3, 5), np.float32))
    assert_names(err, type(layer).__name__, str(out_shape), "(3, 5)")


@settings(max_examples=50, deadline=None)
@given(shape=st.sampled_from([(2, 3), (7, 5), (2, 3, 2, 3), (3, 4, 5, 2)]),
       seed=st.integers(0, 2**31), steps=st.integers(1, 3), channels_last=st.booleans())
def test_fast_batchnorm_and_flatten_equal_the_taught_ones(shape, seed, steps, channels_last):
    """Training steps then an evaluation step: outputs, gradients and running statistics of
    the fast twins equal the chapters' layers (the same sums in another order)."""
    rng = np.random.default_rng(seed)
    taught, twin = BatchNorm(shape[1], dtype=F64), FastBatchNorm(shape[1], dtype=F64)
    for p in ("gamma", "beta"):
        taught.params[p][...] = twin.params[p][...] = rng.standard_normal(shape[1])
    for step in range(steps + 1):
        taught.training = twin.training = step < steps
        x = rng.normal(1.0, 2.0, shape)
        if channels_last and len(shape) == 4:          # as a convolution's output is stored
            x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
        dout = rng.standard_normal(shape)
        np.testing.assert_allclose(twin.forward(x), taught.forward(x), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(twin.backward(dout), taught.backward(dout), rtol=1e-9, atol=1e-12)
        for name in ("gamma", "beta"):
            np.testing.assert_allclose(twin.grads[name], taught.grads[name], rtol=1e-9, atol=1e-12)
        for name in ("running_mean", "running_var"):
            np.testing.assert_allclose(twin.buffers[name], taught.buffers[name], rtol=1e-12)
    flat, fast_flat = Flatten(), FastFlatten()
    out = flat.forward(x)
    np.testing.assert_array_equal(fast_flat.forward(x), out)
    d = rng.standard_normal(out.shape)
    dx = fast_flat.backward(d)
    np.testing.assert_array_equal(dx, flat.backward(d))
    assert dx.strides == np.empty_like(x).strides          # laid out like the input
