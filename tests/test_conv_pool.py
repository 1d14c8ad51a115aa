"""Conv2D and pooling: the vectorized layers against the loop versions, the convolution against
a direct sum written here, max-pool ties, gradients against central differences, dtypes and
the errors on bad input.

Every test that takes ``kind`` runs twice: on the layers the chapters build (``taught``) and on
their twins in :mod:`cnn_lessons.fast` (``fast``), which must pass the same tests."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from types import SimpleNamespace

from cnn_lessons import AvgPool2D, Conv2D, Conv2DNaive, MaxPool2D, MaxPool2DNaive, fast
from cnn_lessons.conv import conv2d_backward_naive, conv2d_forward_naive, output_size
from cnn_lessons.fast import FastConv2D, FastMaxPool2D, input_grad_by_offsets
from cnn_lessons.pooling import (avgpool_backward_naive, avgpool_forward_naive,
                                 maxpool_backward_naive, maxpool_forward_naive)

F64 = np.float64
TIGHT = dict(rtol=1e-11, atol=1e-12)

KINDS = {"taught": SimpleNamespace(Conv2D=Conv2D, MaxPool2D=MaxPool2D),
         "fast": SimpleNamespace(Conv2D=FastConv2D, MaxPool2D=FastMaxPool2D)}


@pytest.fixture(params=list(KINDS), scope="module")
def kind(request):
    """The layers under test: the taught ones, then the fast ones."""
    return KINDS[request.param]


# -- strategies ---------------------------------------------------------------------------------

@st.composite
def conv_cases(draw):
    """A convolution whose kernel fits the padded input, with every size independent."""
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    h = draw(st.integers(max(1, kh - 2 * ph), max(1, kh - 2 * ph) + 5))
    w = draw(st.integers(max(1, kw - 2 * pw), max(1, kw - 2 * pw) + 5))
    return dict(n=draw(st.integers(1, 2)), c=draw(st.integers(1, 3)), f=draw(st.integers(1, 3)),
                h=h, w=w, kernel=(kh, kw), stride=(sh, sw), padding=(ph, pw),
                seed=draw(st.integers(0, 2**31)))


@st.composite
def pool_cases(draw):
    """Pooling windows with strides smaller than, equal to or larger than the window."""
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    sh, sw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    h, w = draw(st.integers(kh, kh + 5)), draw(st.integers(kw, kw + 5))
    return dict(n=draw(st.integers(1, 2)), c=draw(st.integers(1, 3)), h=h, w=w,
                kernel=(kh, kw), stride=(sh, sw), seed=draw(st.integers(0, 2**31)),
                ties=draw(st.booleans()))


def make_conv(case, cls):
    rng = np.random.default_rng(case["seed"])
    layer = cls(case["c"], case["f"], case["kernel"], case["stride"], case["padding"],
                rng=rng, dtype=F64)
    layer.params["b"][...] = rng.standard_normal(case["f"])       # a non-zero bias
    x = rng.standard_normal((case["n"], case["c"], case["h"], case["w"]))
    return layer, x, rng


def pool_input(case):
    rng = np.random.default_rng(case["seed"])
    shape = (case["n"], case["c"], case["h"], case["w"])
    if case["ties"]:   # many exact zeros and repeated values, as on MNIST
        return rng.integers(0, 3, shape).astype(F64) * (rng.random(shape) < 0.5)
    return rng.standard_normal(shape)


# -- Conv2D vs the loops and vs a direct sum ----------------------------------------------------

def conv_direct_sum(x, W, b, stride, padding):
    """out[n, f, i, j] = b[f] + sum_{c,u,v} W[f, c, u, v] xp[n, c, i sh + u, j sw + v],
    with the windows gathered by fancy indexing and summed by einsum."""
    (sh, sw), (ph, pw) = stride, padding
    kh, kw = W.shape[2:]
    xp = np.zeros((x.shape[0], x.shape[1], x.shape[2] + 2 * ph, x.shape[3] + 2 * pw))
    xp[:, :, ph:ph + x.shape[2], pw:pw + x.shape[3]] = x
    ho = (xp.shape[2] - kh) // sh + 1
    wo = (xp.shape[3] - kw) // sw + 1
    rows = np.arange(ho)[:, None] * sh + np.arange(kh)[None, :]       # (Ho, kh)
    cols = np.arange(wo)[:, None] * sw + np.arange(kw)[None, :]       # (Wo, kw)
    patches = xp[:, :, rows[:, :, None, None], cols[None, None, :, :]]  # (N, C, Ho, kh, Wo, kw)
    return np.einsum("ncaubv,fcuv->nfab", patches, W) + b[None, :, None, None]


@settings(max_examples=100, deadline=None)
@given(case=conv_cases())
def test_conv_forward_and_backward_match_the_loops(kind, case):
    layer, x, rng = make_conv(case, kind.Conv2D)
    W, b = layer.params["W"], layer.params["b"]
    out = layer.forward(x)
    ho = output_size(case["h"], case["kernel"][0], case["stride"][0], case["padding"][0])
    wo = output_size(case["w"], case["kernel"][1], case["stride"][1], case["padding"][1])
    assert out.shape == (case["n"], case["f"], ho, wo)
    np.testing.assert_allclose(out, conv2d_forward_naive(x, W, b, case["stride"], case["padding"]),
                               **TIGHT)
    np.testing.assert_allclose(out, conv_direct_sum(x, W, b, case["stride"], case["padding"]),
                               **TIGHT)
    dout = rng.standard_normal(out.shape)
    dx = layer.backward(dout)
    dx_ref, dW_ref, db_ref = conv2d_backward_naive(dout, x, W, case["stride"], case["padding"])
    assert dx.shape == x.shape
    np.testing.assert_allclose(dx, dx_ref, **TIGHT)
    np.testing.assert_allclose(layer.grads["W"], dW_ref, **TIGHT)
    np.testing.assert_allclose(layer.grads["b"], db_ref, **TIGHT)


@settings(max_examples=30, deadline=None)
@given(case=conv_cases())
def test_conv_layer_and_naive_layer_agree(kind, case):
    fast, x, rng = make_conv(case, kind.Conv2D)
    slow, _, _ = make_conv(case, Conv2DNaive)
    np.testing.assert_array_equal(fast.params["W"], slow.params["W"])
    np.testing.assert_allclose(fast.forward(x), slow.forward(x), **TIGHT)
    dout = rng.standard_normal(fast.forward(x).shape)
    np.testing.assert_allclose(fast.backward(dout), slow.backward(dout), **TIGHT)
    for name in ("W", "b"):
        np.testing.assert_allclose(fast.grads[name], slow.grads[name], **TIGHT)


@pytest.mark.parametrize("kernel", [(1, 1), (3, 3), (2, 4), (4, 1)])
@pytest.mark.parametrize("padding", [(0, 0), (1, 2), (2, 3)])
@pytest.mark.parametrize("sh", [1, 2])
def test_conv_input_gradient_both_ways_match_the_loops(kernel, padding, sh):
    """With stride 1 along the width the layer adds the input gradient one kernel row at a time
    (``_input_grad_by_rows``); otherwise one offset at a time.  Both against the loops, with
    paddings narrower than, as wide as and wider than the kernel."""
    rng = np.random.default_rng(7)
    layer = FastConv2D(2, 3, kernel, stride=(sh, 1), padding=padding, rng=rng, dtype=F64)
    x = rng.standard_normal((2, 2, 6, 5))
    out = layer.forward(x)
    dout = rng.standard_normal(out.shape)
    dx_ref = conv2d_backward_naive(dout, x, layer.params["W"], (sh, 1), padding)[0]
    np.testing.assert_allclose(layer.backward(dout), dx_ref, **TIGHT)
    dout2d = dout.transpose(0, 2, 3, 1).reshape(-1, 3)
    by_offsets = input_grad_by_offsets(dout2d, layer.params["W"], (2, 6, 5, 2), *out.shape[2:],
                                       (sh, 1), padding, F64)
    np.testing.assert_allclose(by_offsets.transpose(0, 3, 1, 2), dx_ref, **TIGHT)


@pytest.mark.parametrize("channels", [2, 8])        # few channels: im2col by shifted copies
@pytest.mark.parametrize("chunk_bytes", [1, 2000, 1 << 20])
def test_conv_in_chunks_of_images(monkeypatch, channels, chunk_bytes):
    """im2col and the row-by-row input gradient go a few images at a time: one image per chunk,
    chunks of two for five images (the last one smaller), and one chunk for all give the
    loops' numbers, for a second backward of the same forward too (backward reuses the
    columns of the forward's last chunk only while they are still there)."""
    monkeypatch.setattr(fast, "CHUNK_BYTES", chunk_bytes)
    rng = np.random.default_rng(8)
    layer = FastConv2D(channels, 3, (3, 2), padding=1, rng=rng, dtype=F64)
    layer.params["b"][...] = rng.standard_normal(3)
    x = rng.standard_normal((5, channels, 4, 5))
    W, b = layer.params["W"], layer.params["b"]
    out = layer.forward(x)                             # (5, 3, 4, 6)
    np.testing.assert_allclose(out, conv2d_forward_naive(x, W, b, (1, 1), (1, 1)), **TIGHT)
    for _ in range(2):
        dout = rng.standard_normal(out.shape)
        dx_ref, dW_ref, db_ref = conv2d_backward_naive(dout, x, W, (1, 1), (1, 1))
        np.testing.assert_allclose(layer.backward(dout), dx_ref, **TIGHT)
        np.testing.assert_allclose(layer.grads["W"], dW_ref, **TIGHT)
        np.testing.assert_allclose(layer.grads["b"], db_ref, **TIGHT)


def test_conv_hand_example(kind):
    """A 1-channel 3x3 input, a 2x2 kernel of ones, padding 1, stride 2: corner sums."""
    x = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    layer = kind.Conv2D(1, 1, 2, stride=2, padding=1, dtype=F64)
    layer.params["W"][...] = 1.0
    layer.params["b"][...] = 0.5
    # padded input rows: [0 0 0 0 0], [0 1 2 3 0], [0 4 5 6 0], [0 7 8 9 0], [0 0 0 0 0]
    expected = np.array([[1, 2 + 3], [4 + 7, 5 + 6 + 8 + 9]]) + 0.5
    np.testing.assert_array_equal(layer.forward(x)[0, 0], expected)


def test_conv_gradients_match_finite_differences(kind, grad_errors):
    rng = np.random.default_rng(0)
    layer = kind.Conv2D(2, 3, (3, 2), stride=(2, 1), padding=(1, 0), rng=rng, dtype=F64)
    layer.params["b"][...] = rng.standard_normal(3)
    errors = grad_errors(layer, rng.standard_normal((2, 2, 5, 4)))
    assert set(errors) == {"x", "W", "b"}
    assert max(errors.values()) < 1e-7, errors


def test_conv_forward_twice_then_backward_uses_the_last_input(kind):
    """The layer reuses scratch buffers between calls: backward must see the latest forward."""
    rng = np.random.default_rng(1)
    layer = kind.Conv2D(2, 2, 3, padding=1, rng=rng, dtype=F64)
    x1, x2 = rng.standard_normal((2, 2, 4, 4)), rng.standard_normal((2, 2, 4, 4))
    out1 = layer.forward(x1).copy()
    out1_view = layer.forward(x1)
    layer.forward(x2)
    np.testing.assert_array_equal(out1_view, out1)        # an earlier output is not overwritten
    dout = rng.standard_normal(out1.shape)
    layer.backward(dout)
    _, dW_ref, _ = conv2d_backward_naive(dout, x2, layer.params["W"], (1, 1), (1, 1))
    np.testing.assert_allclose(layer.grads["W"], dW_ref, **TIGHT)


# -- pooling vs the loops -----------------------------------------------------------------------

@settings(max_examples=80, deadline=None)
@given(case=pool_cases())
def test_maxpool_matches_the_loops(kind, case):
    x = pool_input(case)
    k, s = case["kernel"], case["stride"]
    layer = kind.MaxPool2D(k, s)
    out = layer.forward(x)
    out_ref, argmax = maxpool_forward_naive(x, k, s)
    np.testing.assert_array_equal(out, out_ref)
    dout = np.random.default_rng(case["seed"] + 1).standard_normal(out.shape)
    dx = layer.backward(dout)
    np.testing.assert_allclose(dx, maxpool_backward_naive(dout, x.shape, argmax, k, s), **TIGHT)
    # every window hands its whole gradient to exactly one input: nothing doubled, nothing lost
    np.testing.assert_allclose(dx.sum(), dout.sum(), rtol=1e-10, atol=1e-10)
    naive = MaxPool2DNaive(k, s)
    np.testing.assert_array_equal(naive.forward(x), out)
    np.testing.assert_allclose(naive.backward(dout), dx, **TIGHT)


def first_max_routing(x, dout, kernel, stride):
    """Reference routing written with explicit scans: the first maximum in row-major order."""
    (kh, kw), (sh, sw) = kernel, stride
    dx = np.zeros_like(x)
    for n, c, i, j in np.ndindex(dout.shape):
        best = None
        for u in range(kh):
            for v in range(kw):
                value = x[n, c, i * sh + u, j * sw + v]
                if best is None or value > best[0]:
                    best = (value, u, v)
        dx[n, c, i * sh + best[1], j * sw + best[2]] += dout[n, c, i, j]
    return dx


@settings(max_examples=60, deadline=None)
@given(case=pool_cases())
def test_maxpool_ties_go_to_the_first_maximum(kind, case):
    case["ties"] = True
    x = pool_input(case)
    layer = kind.MaxPool2D(case["kernel"], case["stride"])
    out = layer.forward(x)
    dout = np.random.default_rng(case["seed"] + 2).standard_normal(out.shape)
    np.testing.assert_allclose(layer.backward(dout),
                               first_max_routing(x, dout, case["kernel"], case["stride"]), **TIGHT)


@pytest.mark.parametrize("dtype", [np.float32, F64])
@pytest.mark.parametrize("channels_last", [False, True])
def test_maxpool_2x2_tournament_equals_the_loops_bit_for_bit(dtype, channels_last):
    """The classic 2x2 case trains with its own method (a tournament, see fast.py): on
    MNIST-like input full of exact ties its output and gradient equal the loops exactly,
    and evaluation mode (the general method) gives the same output."""
    rng = np.random.default_rng(7)
    x = (rng.integers(0, 3, (3, 4, 8, 6)) * (rng.random((3, 4, 8, 6)) < 0.5)).astype(dtype)
    x[0, 0] = 0                                           # whole windows of equal values
    if channels_last:                                     # as a convolution's output is stored
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    layer = FastMaxPool2D(2)
    out = layer.forward(x)
    assert len(layer._cache) == 3                         # the tournament ran
    out_ref, argmax = maxpool_forward_naive(x, (2, 2), (2, 2))
    np.testing.assert_array_equal(out, out_ref)
    dout = rng.standard_normal(out.shape).astype(dtype)
    dx = layer.backward(dout)
    assert dx.dtype == dtype
    np.testing.assert_array_equal(dx, maxpool_backward_naive(dout, x.shape, argmax, (2, 2), (2, 2)))
    np.testing.assert_array_equal(dx, first_max_routing(x, dout, (2, 2), (2, 2)))
    layer.training = False
    np.testing.assert_array_equal(layer.forward(x), out_ref)
    assert len(layer._cache) == 2                         # the general method
    np.testing.assert_array_equal(layer.backward(dout), dx)


def test_maxpool_all_zero_input_hand_example(kind):
    x = np.zeros((1, 1, 4, 4))
    layer = kind.MaxPool2D(2)
    layer.forward(x)
    dx = layer.backward(np.array([[[[1.0, 2.0], [3.0, 4.0]]]]))
    expected = np.zeros((4, 4))
    expected[0, 0], expected[0, 2], expected[2, 0], expected[2, 2] = 1, 2, 3, 4
    np.testing.assert_array_equal(dx[0, 0], expected)


def test_maxpool_overlapping_windows_accumulate(kind):
    # 1x4 row [0, 5, 1, 0], window 1x2, stride 1: windows (0,5) (5,1) (1,0) -> winners 1, 1, 2
    x = np.array([[[[0.0, 5.0, 1.0, 0.0]]]])
    layer = kind.MaxPool2D((1, 2), stride=1)
    np.testing.assert_array_equal(layer.forward(x), [[[[5.0, 5.0, 1.0]]]])
    dx = layer.backward(np.array([[[[1.0, 10.0, 100.0]]]]))
    np.testing.assert_array_equal(dx, [[[[0.0, 11.0, 100.0, 0.0]]]])


def test_maxpool_large_window_global_pooling(kind):
    """A window of more than 2**15 entries (global max pooling over a 182x182 map)."""
    x = np.random.default_rng(3).standard_normal((1, 2, 182, 182))
    layer = kind.MaxPool2D(182)
    out = layer.forward(x)
    np.testing.assert_array_equal(out[:, :, 0, 0], x.max(axis=(2, 3)))
    dx = layer.backward(np.ones((1, 2, 1, 1)))
    for c in range(2):
        i, j = np.unravel_index(np.argmax(x[0, c]), (182, 182))
        assert dx[0, c, i, j] == 1 and dx[0, c].sum() == 1


@settings(max_examples=80, deadline=None)
@given(case=pool_cases())
def test_avgpool_matches_the_loops_and_the_mean(case):
    x = pool_input(case)
    k, s = case["kernel"], case["stride"]
    layer = AvgPool2D(k, s)
    out = layer.forward(x)
    np.testing.assert_allclose(out, avgpool_forward_naive(x, k, s), **TIGHT)
    for n, c, i, j in np.ndindex(out.shape):
        window = x[n, c, i * s[0]:i * s[0] + k[0], j * s[1]:j * s[1] + k[1]]
        assert abs(out[n, c, i, j] - window.sum() / window.size) < 1e-12
    dout = np.random.default_rng(case["seed"] + 1).standard_normal(out.shape)
    dx = layer.backward(dout)
    np.testing.assert_allclose(dx, avgpool_backward_naive(dout, x.shape, k, s), **TIGHT)
    np.testing.assert_allclose(dx.sum(), dout.sum(), rtol=1e-10, atol=1e-10)


def test_pool_stride_defaults_to_the_window(kind):
    assert kind.MaxPool2D(3).stride == (3, 3)
    assert AvgPool2D((2, 3)).stride == (2, 3)
    assert kind.MaxPool2D(2, stride=1).stride == (1, 1)


# -- gradient checks ----------------------------------------------------------------------------

def test_maxpool_gradient_matches_finite_differences(kind, grad_errors):
    # distinct values at least 0.01 apart: a step of 1e-6 never changes a window's winner
    x = np.random.default_rng(4).permutation(2 * 2 * 5 * 5).reshape(2, 2, 5, 5) * 0.01
    for layer in (kind.MaxPool2D(2), kind.MaxPool2D((3, 2), stride=(1, 2)), MaxPool2DNaive(2, 1)):
        assert grad_errors(layer, x)["x"] < 1e-7


def test_avgpool_gradient_matches_finite_differences(grad_errors):
    x = np.random.default_rng(5).standard_normal((2, 2, 5, 5))
    for layer in (AvgPool2D(2), AvgPool2D((3, 2), stride=(1, 2))):
        assert grad_errors(layer, x)["x"] < 1e-7


# -- dtypes -------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_and_pools_keep_the_dtype(kind, dtype):
    x = np.random.default_rng(6).standard_normal((2, 3, 6, 6)).astype(dtype)
    for layer in (kind.Conv2D(3, 4, 3, padding=1, rng=0, dtype=dtype),
                  Conv2DNaive(3, 4, 3, stride=2, rng=0, dtype=dtype),
                  kind.MaxPool2D(2), MaxPool2DNaive(2), AvgPool2D(2, 1)):
        out = layer.forward(x)
        assert out.dtype == dtype, layer
        assert layer.backward(np.ones_like(out)).dtype == dtype, layer
        for name, p in layer.params.items():
            assert p.dtype == dtype and layer.grads[name].dtype == dtype, (layer, name)


def test_float32_conv_is_close_to_float64(kind):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 7, 7))
    layer = kind.Conv2D(3, 4, 3, stride=2, padding=1, rng=rng, dtype=np.float32)
    W = layer.params["W"].astype(F64)
    expected = conv2d_forward_naive(x, W, np.zeros(4), (2, 2), (1, 1))
    np.testing.assert_allclose(layer.forward(x.astype(np.float32)), expected, rtol=1e-5, atol=1e-5)


# -- bad input ----------------------------------------------------------------------------------

def assert_names(err, *parts):
    msg = str(err.value)
    for part in parts:
        assert part in msg, f"{part!r} not in {msg!r}"


@pytest.mark.parametrize("layer", [Conv2D(3, 2, 3), MaxPool2D(2), AvgPool2D(2), FastConv2D(3, 2, 3),
                                   FastMaxPool2D(2)], ids=repr)
def test_image_layers_refuse_wrong_ndim(layer):
    x = np.ones((2, 3, 8), np.float32)
    with pytest.raises(ValueError) as err:
        layer.forward(x)
    assert_names(err, type(layer).__name__, "H, W)", "(2, 3, 8)")


def test_conv_refuses_wrong_channel_count(kind):
    with pytest.raises(ValueError) as err:
        kind.Conv2D(3, 2, 3).forward(np.ones((2, 1, 8, 8), np.float32))
    assert_names(err, "Conv2D", "(N, 3, H, W)", "(2, 1, 8, 8)")


def test_conv_refuses_a_kernel_larger_than_the_padded_input(kind):
    with pytest.raises(ValueError) as err:
        kind.Conv2D(1, 2, (5, 3), padding=1).forward(np.ones((1, 1, 2, 6), np.float32))
    assert_names(err, "Conv2D", "5x3", "4x8", "(1, 1, 2, 6)")
    # exactly fitting is fine: one output row
    assert kind.Conv2D(1, 2, (4, 3), padding=1).forward(np.ones((1, 1, 2, 6), np.float32)).shape == (1, 2, 1, 6)


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D, MaxPool2DNaive, FastMaxPool2D])
def test_pool_refuses_a_window_larger_than_the_input(cls):
    with pytest.raises(ValueError) as err:
        cls(3).forward(np.ones((1, 2, 2, 5), np.float32))
    assert_names(err, cls.__name__, "3x3", "2x5", "(1, 2, 2, 5)")


@pytest.mark.parametrize("layer", [Conv2D(2, 2, 3), MaxPool2D(2), AvgPool2D(2), FastConv2D(2, 2, 3),
                                   FastMaxPool2D(2)], ids=repr)
def test_image_layers_refuse_integer_input(layer):
    with pytest.raises(ValueError) as err:
        layer.forward(np.ones((1, 2, 4, 4), dtype=np.int32))
    assert_names(err, type(layer).__name__, "floating", "int32")


@pytest.mark.parametrize("layer", [Conv2D(2, 2, 3), Conv2DNaive(2, 2, 3), MaxPool2D(2),
                                   MaxPool2DNaive(2), AvgPool2D(2), FastConv2D(2, 2, 3),
                                   FastMaxPool2D(2)], ids=repr)
def test_image_layers_backward_before_forward_and_wrong_dout(layer):
    with pytest.raises(RuntimeError) as err:
        layer.backward(np.ones((1, 2, 2, 2), np.float32))
    assert_names(err, type(layer).__name__, "before forward")
    out = layer.forward(np.ones((1, 2, 4, 4), np.float32))
    with pytest.raises(ValueError) as err:
        layer.backward(np.ones((1, 2, 3, 3), np.float32))
    assert_names(err, type(layer).__name__, str(out.shape), "(1, 2, 3, 3)")


@settings(max_examples=40, deadline=None)
@given(case=conv_cases())
def test_conv_without_bias_is_the_convolution_with_zero_bias(kind, case):
    layer, x, rng = make_conv(case, kind.Conv2D)
    plain = kind.Conv2D(case["c"], case["f"], case["kernel"], case["stride"], case["padding"],
                   bias=False, dtype=F64)
    assert list(plain.params) == ["W"] and plain.config()["bias"] is False
    plain.params["W"][...] = layer.params["W"]
    zero = np.zeros(case["f"])
    out = plain.forward(x)
    np.testing.assert_allclose(out, conv_direct_sum(x, layer.params["W"], zero, case["stride"],
                                                    case["padding"]), **TIGHT)
    dout = rng.standard_normal(out.shape)
    dx = plain.backward(dout)
    ref_dx, ref_dw, _ = conv2d_backward_naive(dout, x, layer.params["W"], case["stride"],
                                              case["padding"])
    assert list(plain.grads) == ["W"]
    np.testing.assert_allclose(plain.grads["W"], ref_dw, **TIGHT)
    np.testing.assert_allclose(dx, ref_dx, **TIGHT)
    naive = Conv2DNaive(**plain.config(), dtype=F64)
    naive.params["W"][...] = layer.params["W"]
    np.testing.assert_allclose(naive.forward(x), out, **TIGHT)
    np.testing.assert_allclose(naive.backward(dout), dx, **TIGHT)
    assert list(naive.grads) == ["W"]


def test_conv_refuses_a_bias_that_is_not_true_or_false(kind):
    with pytest.raises(ValueError, match=r"Conv2D\(1, 2\): bias must be True or False"):
        kind.Conv2D(1, 2, 3, bias="no")


@pytest.mark.parametrize("kwargs", [dict(kernel_size=0), dict(kernel_size=3, stride=0),
                                    dict(kernel_size=3, padding=-1),
                                    dict(kernel_size=(3, 3, 3))])
def test_conv_refuses_bad_hyperparameters(kind, kwargs):
    with pytest.raises(ValueError, match="Conv2D"):
        kind.Conv2D(1, 1, **kwargs)


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D, FastMaxPool2D])
def test_pool_refuses_bad_hyperparameters(cls):
    with pytest.raises(ValueError, match=cls.__name__):
        cls(0)
    with pytest.raises(ValueError, match=cls.__name__):
        cls(2, stride=(1, 0))


# -- the fast twins against the taught layers, directly ---------------------------------------

@settings(max_examples=60, deadline=None)
@given(case=conv_cases(), input_grad=st.booleans())
def test_fast_conv_equals_the_taught_conv(case, input_grad):
    taught, x, rng = make_conv(case, Conv2D)
    twin, _, _ = make_conv(case, FastConv2D)
    out = taught.forward(x)
    np.testing.assert_allclose(twin.forward(x), out, **TIGHT)
    dout = rng.standard_normal(out.shape)
    dx = taught.backward(dout)
    dx_fast = twin.backward(dout, input_grad=input_grad)
    if input_grad:
        np.testing.assert_allclose(dx_fast, dx, **TIGHT)
    else:
        assert dx_fast is None
    for name in ("W", "b"):
        np.testing.assert_allclose(twin.grads[name], taught.grads[name], **TIGHT)


@settings(max_examples=60, deadline=None)
@given(case=pool_cases(), training=st.booleans())
def test_fast_maxpool_equals_the_taught_maxpool_bit_for_bit(case, training):
    x = pool_input(case)
    taught, twin = MaxPool2D(case["kernel"], case["stride"]), FastMaxPool2D(case["kernel"],
                                                                            case["stride"])
    taught.training = twin.training = training
    out = taught.forward(x)
    np.testing.assert_array_equal(twin.forward(x), out)
    dout = np.random.default_rng(case["seed"] + 3).standard_normal(out.shape)
    np.testing.assert_array_equal(twin.backward(dout), taught.backward(dout))
