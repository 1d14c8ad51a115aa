"""The harness proves itself: correct layers pass, even at their kinks and in float32; every
broken layer of the corpus is flagged, by the check that is meant to see its bug."""

import copy
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import broken_layers
import checks
from checks.builtin import CASES
from checks.finite_differences import to_float64
from cnn_lessons import (AvgPool2D, BatchNorm, Conv2D, Conv2DNaive, Dense, Dropout, Flatten,
                         LeakyReLU, MaxPool2D, ReLU, Sigmoid, Softmax, Tanh)

FD = "dL/"   # the finite-difference rows are named dL/dx, dL/dW, ...


def fd_rows(report):
    return [row for row in report.rows if row.check.startswith(FD)]


def digits(n, c, h, w, seed=0):
    """MNIST-like images: a zero background, a blob of quantized ink (k/255) in the middle,
    so many exact zeros and many exactly tied values."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, c, h, w), dtype=np.float32)
    ink = rng.integers(0, 256, size=(n, c, h - h // 3, w - w // 3)) / 255
    ink[rng.random(ink.shape) < 0.3] = 0
    x[:, :, h // 6:h // 6 + ink.shape[2], w // 6:w // 6 + ink.shape[3]] = ink
    return x


# -- the built-in layers -------------------------------------------------------------------------

@pytest.mark.parametrize("label", CASES)
def test_builtin_layer_passes_every_check(label):
    layer, x = CASES[label]()
    report = checks.check_layer(layer, x)
    assert report.ok, str(report)
    for row in fd_rows(report):
        assert row.max_rel_error < 1e-7 and row.coords, str(report)
    assert any(row.check.startswith("overfit") and row.steps is not None for row in report.rows)


def test_checks_leave_the_layer_and_x_untouched():
    layer = Dropout(0.5, rng=3)
    x = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    x_before, rng_before = x.copy(), copy.deepcopy(layer.rng).random(3)
    global_before = np.random.get_state()[1].copy()
    checks.check_layer(layer, x)
    assert np.array_equal(np.random.get_state()[1], global_before)
    assert np.array_equal(x, x_before) and x.dtype == np.float32
    assert np.array_equal(layer.rng.random(3), rng_before)       # the layer's generator not drawn
    bn = BatchNorm(3)
    checks.check_layer(bn, np.random.default_rng(1).standard_normal((4, 3, 2, 2)))
    assert bn.buffers["running_mean"].dtype == np.float32 and not np.any(bn.buffers["running_mean"])
    assert np.all(bn.buffers["running_var"] == 1) and bn.params["gamma"].dtype == np.float32


def test_reports_are_reproducible_and_seed_dependent():
    layer, x = Conv2D(2, 3, 3, rng=0), np.random.default_rng(1).standard_normal((2, 2, 6, 6))
    a, b = checks.gradcheck(layer, x, seed=5), checks.gradcheck(layer, x, seed=5)
    assert a.to_dict() == b.to_dict()
    c = checks.gradcheck(layer, x, seed=6)
    assert a.row("dL/dx").coords != c.row("dL/dx").coords       # 100 of 144 coordinates


# -- the broken corpus ---------------------------------------------------------------------------

@pytest.mark.parametrize("make", list(broken_layers.EXPECTED), ids=lambda f: f.__name__[5:])
def test_broken_layer_is_flagged_by_the_right_check(make):
    layer, x = make()
    report = checks.check_layer(layer, x, timeout=broken_layers.TIMEOUT.get(make, 60))
    expected = broken_layers.EXPECTED[make]
    assert not report.ok and report.status == "FAIL"
    assert expected in report.failed(), str(report)
    row = report.row(expected)
    assert row.detail and f"{expected}" in str(report) and "FAIL" in str(report)
    assert broken_layers.DIAGNOSIS[make] in row.detail, row.detail


def test_every_broken_layer_names_its_bug_and_its_diagnosis():
    assert set(broken_layers.DIAGNOSIS) == set(broken_layers.EXPECTED)
    for make in broken_layers.EXPECTED:
        layer, _ = make()
        assert "Bug" in type(layer).__doc__ or "raises" in type(layer).__doc__, make.__name__


@pytest.mark.parametrize("make", broken_layers.CORRECT, ids=lambda f: f.__name__[5:])
def test_correct_layers_on_awkward_inputs_never_fail(make):
    layer, x = make()
    report = checks.check_layer(layer, x)
    assert report.ok and report.status in ("PASS", "INCONCLUSIVE"), str(report)
    assert all(r.max_rel_error < 1e-7 for r in fd_rows(report)), str(report)
    for row in report.rows:
        if row.inconclusive:
            assert "saturates" in row.detail and "rescale x" in row.detail, row.detail


def test_tied_maxima_bug_is_seen_along_the_all_ones_direction():
    """Each tied maximum, nudged alone, is a kink; only moving the ties together sees the bug."""
    report = checks.gradcheck(*broken_layers.make_maxpool_grad_to_every_tie())
    row = report.row("dL/dx")
    assert not row.ok and "all-ones direction" in row.detail and row.kinks > 0
    correct = checks.gradcheck(MaxPool2D(2), broken_layers.tied_maxima((2, 2, 4, 4)))
    assert correct.ok and correct.row("dL/dx").kinks > 0, str(correct)


def test_a_small_error_is_caught():
    """The tolerance is tight: a gradient 1e-5 off (relatively) fails."""

    class SlightlyOff(Dense):
        def backward(self, dout):
            dx = super().backward(dout)
            self.grads["W"] = self.grads["W"] * (1 + 1e-5)
            return dx

    report = checks.gradcheck(SlightlyOff(4, 3, dtype=np.float64, rng=0),
                              np.random.default_rng(0).standard_normal((2, 4)))
    assert report.failed() == ["dL/dW"]
    assert 5e-6 < report.row("dL/dW").max_rel_error < 2e-5


def test_upstream_gradient_is_not_all_ones():
    """A softmax backward returning zeros is right for dout = ones (rows of y sum to 1) only."""

    class SoftmaxZeroGrad(Softmax):
        def backward(self, dout):
            return np.zeros_like(dout)

    report = checks.gradcheck(SoftmaxZeroGrad(), np.random.default_rng(0).standard_normal((3, 4)))
    assert "dL/dx" in report.failed()


# -- kinks ---------------------------------------------------------------------------------------

def near_kinks(shape, seed=0):
    """Normal numbers, a sixth of them exactly 0 and a sixth within 1e-7 of 0."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    u = rng.random(shape)
    x[u < 1 / 6] = 0.0
    close = (u >= 1 / 6) & (u < 1 / 3)
    x[close] = rng.uniform(-1e-7, 1e-7, size=close.sum())
    return x


@pytest.mark.parametrize("layer", [ReLU(), LeakyReLU(0.1)], ids=["ReLU", "LeakyReLU"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kinks_are_skipped_and_counted(layer, dtype):
    x = near_kinks((6, 10)).astype(dtype)
    report = checks.check_layer(layer, x)
    assert report.ok, str(report)
    at_kink = int(np.sum(np.abs(x.astype(np.float64)) < 1e-6))      # within h of the kink
    assert at_kink >= 10
    assert at_kink <= report.row("dL/dx").kinks <= at_kink + 2       # + the 2 directions


def test_kinks_never_hide_everything():
    report = checks.gradcheck(ReLU(), np.zeros((3, 8)))
    row = report.row("dL/dx")
    assert not row.ok and "kinks" in row.detail and row.kinks >= 24

    mostly = near_kinks((4, 6))
    mostly[:, :4] = 0                               # 16 + of 24 coordinates at the kink
    assert "dL/dx" in checks.gradcheck(ReLU(), mostly).failed()

    class ReLUNoMask(ReLU):
        """Backward forgets the mask -- hidden at kinks, but not allowed to pass through them."""

        def backward(self, dout):
            return dout.copy()

    assert "dL/dx" in checks.gradcheck(ReLUNoMask(), np.zeros((2, 5))).failed()


@pytest.mark.parametrize("make", [lambda: MaxPool2D(2), lambda: MaxPool2D(3, stride=1),
                                  lambda: MaxPool2D((2, 3), stride=(2, 1)), lambda: AvgPool2D(2),
                                  lambda: ReLU(), lambda: Conv2D(1, 2, 3, padding=1, rng=0)],
                         ids=["max2", "max3s1", "max2x3", "avg2", "relu", "conv"])
def test_mnist_like_inputs_with_ties_are_not_flagged(make):
    x = digits(2, 1, 12, 12)
    assert np.mean(x == 0) > 0.5
    report = checks.check_layer(make(), x)
    assert report.ok, str(report)


# -- float32, modes ----------------------------------------------------------------------------

def test_float32_layer_and_float64_input_in_any_mix():
    x32 = np.random.default_rng(0).standard_normal((2, 2, 5, 5)).astype(np.float32)
    for dtype in (np.float32, np.float64):
        for x in (x32, x32.astype(np.float64)):
            layer = Conv2D(2, 3, 3, stride=2, padding=1, rng=0, dtype=dtype)
            assert checks.check_layer(layer, x).ok


def test_batchnorm_in_training_and_evaluation():
    for training in (True, False):
        for shape in [(6, 4), (3, 4, 3, 3)]:
            bn = BatchNorm(4)
            bn.params["gamma"][:] = [0.5, 2.0, -1.0, 1.5]
            bn.buffers["running_mean"][:] = [0.1, -0.2, 0.3, 0.0]
            bn.buffers["running_var"][:] = [0.5, 2.0, 1.0, 3.0]
            bn.training = training
            x = 3 + 2 * np.random.default_rng(2).standard_normal(shape)
            report = checks.check_layer(bn, x)
            assert report.ok, str(report)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_is_checked_with_one_mask(p):
    x = np.random.default_rng(0).standard_normal((4, 16))
    report = checks.check_layer(Dropout(p, rng=1), x)
    assert report.ok, str(report)


# -- random configurations (hypothesis) -------------------------------------------------------

@st.composite
def conv_cases(draw):
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    sh, sw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    h = draw(st.integers(max(1, kh - 2 * ph), kh + 3))
    w = draw(st.integers(max(1, kw - 2 * pw), kw + 3))
    c, f, n = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 2))
    cls = draw(st.sampled_from([Conv2D, Conv2DNaive]))
    layer = cls(c, f, (kh, kw), stride=(sh, sw), padding=(ph, pw), rng=draw(st.integers(0, 9)))
    x = np.random.default_rng(draw(st.integers(0, 99))).standard_normal((n, c, h, w))
    return layer, x.astype(np.float32)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conv_cases())
def test_any_convolution_passes(case):
    report = checks.gradcheck(*case)
    assert report.ok, str(report)


@st.composite
def pool_cases(draw):
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h, w = draw(st.integers(kh, kh + 5)), draw(st.integers(kw, kw + 5))
    cls = draw(st.sampled_from([MaxPool2D, AvgPool2D]))
    seed = draw(st.integers(0, 99))
    if draw(st.booleans()):
        x = np.random.default_rng(seed).standard_normal((2, 2, h, w))
    else:   # ties: small integers, half of them exactly zero
        x = np.random.default_rng(seed).integers(0, 4, size=(2, 2, h, w)) * 0.25
        x *= np.random.default_rng(seed + 1).random(x.shape) < 0.5
    return cls((kh, kw), stride=(sh, sw)), x.astype(np.float32)


# Found by hypothesis: along the random direction the slope jumps of many tied windows nearly
# cancel, staying under KINK; the one-sided differences at a quarter step tell it is a kink.
TIES_1x3 = (np.array([
    [[[3, 0, 2, 0, 3, 1, 0, 3], [0, 0, 0, 0, 3, 3, 0, 2], [0, 0, 3, 0, 0, 0, 3, 1],
      [0, 0, 0, 0, 1, 0, 1, 3]],
     [[0, 3, 1, 2, 0, 0, 0, 3], [0, 0, 0, 0, 0, 0, 2, 2], [0, 3, 2, 0, 0, 2, 1, 3],
      [0, 3, 0, 0, 0, 0, 3, 0]]],
    [[[0, 0, 3, 0, 1, 0, 3, 0], [0, 3, 2, 2, 0, 0, 1, 0], [0, 2, 0, 2, 0, 0, 0, 0],
      [0, 0, 0, 0, 2, 0, 2, 3]],
     [[2, 3, 1, 2, 2, 2, 2, 2], [1, 0, 0, 3, 3, 0, 0, 2], [0, 0, 3, 1, 3, 1, 0, 0],
      [0, 0, 0, 0, 0, 0, 2, 0]]]]) * 0.25).astype(np.float32)


@settings(max_examples=80, deadline=None)
@given(pool_cases())
@example((MaxPool2D((1, 3)), TIES_1x3))
def test_any_pooling_passes(case):
    layer, x = case
    report = checks.gradcheck(layer, x)
    smooth_coordinates = len(report.row("dL/dx").coords)
    if not report.ok:   # only allowed: an input made almost entirely of ties
        assert report.failed() == ["dL/dx"] and "kinks" in report.row("dL/dx").detail, str(report)
        assert smooth_coordinates < 20
    else:
        assert report.row("dL/dx").max_rel_error < 1e-7


@st.composite
def vector_cases(draw):
    n, d = draw(st.integers(2, 5)), draw(st.integers(2, 7))
    make = draw(st.sampled_from([ReLU, lambda: LeakyReLU(0.2), Sigmoid, Tanh, Softmax, Flatten,
                                 lambda: Dropout(0.3, rng=1), lambda: BatchNorm(d),
                                 lambda: Dense(d, 3, rng=2)]))
    x = np.random.default_rng(draw(st.integers(0, 99))).standard_normal((n, d))
    return make(), x.astype(draw(st.sampled_from([np.float32, np.float64])))


@settings(max_examples=60, deadline=None)
@given(vector_cases())
def test_any_vector_layer_passes(case):
    report = checks.gradcheck(*case)
    assert report.ok, str(report)


# -- the pieces --------------------------------------------------------------------------------

def test_to_float64_keeps_aliases_and_leaves_the_original_alone():
    layer = Dense(3, 2, rng=0)
    layer.W = layer.params["W"]                         # an attribute that *is* a param
    layer.extras = [layer.params["b"], (np.ones(2, np.float32), 3), np.arange(3)]
    layer.dtype, layer.out_dtype, layer.index_dtype = np.float32, np.dtype("float32"), np.int64
    copy64 = to_float64(layer)
    assert copy64.dtype is np.float64 and copy64.out_dtype == np.float64
    assert copy64.index_dtype is np.int64
    assert copy64.W is copy64.params["W"] and copy64.W.dtype == np.float64
    assert copy64.extras[0] is copy64.params["b"]
    assert copy64.extras[1][0].dtype == np.float64
    assert copy64.extras[2].dtype == layer.extras[2].dtype          # integers stay integers
    assert layer.params["W"].dtype == np.float32 and layer.W is layer.params["W"]
    assert np.array_equal(copy64.W, layer.W.astype(np.float64))


def test_a_layer_that_keeps_its_dtype_is_checked_in_float64():
    class DenseKeepsDtype(Dense):
        def __init__(self, *args, dtype=np.float32, **kwargs):
            super().__init__(*args, dtype=dtype, **kwargs)
            self.dtype = dtype

        def forward(self, x):
            return super().forward(x).astype(self.dtype)

    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    assert checks.gradcheck(DenseKeepsDtype(4, 2, rng=0), x).ok


class Crashing:
    """Each attribute a different way for a student's layer to break."""

    def __init__(self, where):
        self.where, self.params, self.grads = where, {}, {}

    def forward(self, x):
        if self.where == "forward":
            raise IndexError("tuple index out of range")
        if self.where == "output":
            return "not an array"
        return x * 2

    def backward(self, dout):
        if self.where == "backward":
            raise KeyError("W")
        if self.where == "nan":
            return dout * np.nan
        return dout * 2


@pytest.mark.parametrize("where, check, text", [
    ("forward", "forward/backward run", "IndexError: tuple index out of range"),
    ("backward", "forward/backward run", "KeyError"),
    ("output", "forward/backward run", ""),
    ("nan", "dL/dx", "nan"),
])
def test_crashing_layers_become_failed_checks(where, check, text):
    report = checks.check_layer(Crashing(where), np.ones((2, 3)))
    assert not report.ok and check in report.failed()
    assert text in report.row(check).detail
    json.dumps(report.to_dict())                        # NaN and all: still valid JSON


def test_not_a_layer_at_all():
    for layer, x in [(None, np.ones((2, 2))), (ReLU(), "text"), (object(), np.ones(3))]:
        report = checks.check_layer(layer, x)
        assert not report.ok and str(report)


def test_missing_params_dict_is_a_failure():
    class NoParams:
        def forward(self, x):
            return x

        def backward(self, dout):
            return dout

    report = checks.gradcheck(NoParams(), np.ones((2, 3)))
    assert report.failed() == ["forward/backward run"]
    assert "params" in report.row("forward/backward run").detail

    layer = NoParams()
    layer.params, layer.grads = {"w": [1.0, 2.0]}, {}
    report = checks.check_layer(layer, np.ones((2, 3)))
    assert "forward/backward run" in report.failed()
    assert "params['w'] is a list" in report.row("forward/backward run").detail


def test_report_table_and_dict():
    report = checks.check_layer(ReLU(), np.random.default_rng(0).standard_normal((3, 4)))
    text = str(report)
    assert text.splitlines()[0] == "ReLU(): PASS"
    for row in report.rows:
        assert row.check in text
    data = json.loads(json.dumps(report.to_dict()))
    assert data["ok"] is True and data["layer"] == "ReLU()"
    assert [r["check"] for r in data["checks"]] == [r.check for r in report.rows]


# -- overfit -----------------------------------------------------------------------------------

def test_overfit_reports_steps_and_loss():
    x = np.random.default_rng(0).standard_normal((6, 5))
    report = checks.overfit_one_sample(Dense(5, 3, rng=0), x)
    assert report.ok and [r.check for r in report.rows] == ["overfit 1 sample", "overfit 4 samples"]
    for row in report.rows:
        assert 0 < row.steps < 300 and row.loss < 0.05


def test_overfit_needs_the_gradient_to_flow_through_the_layer():
    class ReLUDeaf(ReLU):
        """Backward returns zeros: nothing reaches the stem."""

        def backward(self, dout):
            return np.zeros_like(dout)

    class TanhBackwards(ReLU):
        """Backward points uphill."""

        def forward(self, x):
            self._y = np.tanh(x)
            return self._y

        def backward(self, dout):
            return -dout * (1 - self._y ** 2)

    x = np.random.default_rng(0).standard_normal((4, 8))
    for layer in (ReLUDeaf(), TanhBackwards()):
        report = checks.overfit_one_sample(layer, x, steps=200)
        assert not report.ok
        assert "does not lead the optimizer downhill" in report.rows[-1].detail


def test_overfit_skips_a_batch_of_one_that_batchnorm_refuses():
    x = np.random.default_rng(0).standard_normal((5, 4))
    report = checks.overfit_one_sample(BatchNorm(4), x)
    assert report.ok
    assert report.rows[0].detail.startswith("skipped") and report.rows[1].steps > 0


def test_overfit_is_inconclusive_on_an_input_with_all_outputs_zero():
    """Every ReLU off says nothing against the layer: inconclusive, not a failure."""
    report = checks.overfit_one_sample(ReLU(), -np.ones((3, 4)))
    row = report.rows[0]
    assert row.inconclusive and row.status == "INCONCLUSIVE" and "all zeros" in row.detail
    assert report.ok and report.status == "INCONCLUSIVE"
    x = np.random.default_rng(0).standard_normal((5, 8))
    x[:3] = -np.abs(x[:3])                        # three samples all off: the others are used
    report = checks.overfit_one_sample(ReLU(), x)
    assert report.ok and [r.check for r in report.rows] == ["overfit 1 sample", "overfit 2 samples"]


def test_overfit_leaves_the_layer_alone():
    layer = Dense(3, 2, rng=0)
    before = {k: p.copy() for k, p in layer.params.items()}
    checks.overfit_one_sample(layer, np.ones((2, 3)))
    assert all(np.array_equal(layer.params[k], before[k]) for k in before)


def test_overfit_on_a_large_input_uses_a_diagonal_stem():
    """A (4, 32, 28, 28) batch has 25,088 values per sample: a D x D stem would need 2.5 GB."""
    from checks.overfit import MAX_FULL, LinearStem
    x = np.random.default_rng(0).random((4, 32, 28, 28))
    stem = LinearStem(x.shape[1:], np.float64)
    assert not stem.full and stem.params["m"].shape == (32 * 28 * 28,) > (MAX_FULL,)
    report = checks.overfit_one_sample(MaxPool2D(2), x)
    assert report.ok, str(report)
    # and the diagonal stem's own gradient is right
    assert checks.gradcheck(stem, x[:2]).ok


def test_summary_is_one_line_when_passing_and_the_table_when_failing():
    from checks.report import Report
    report = Report("Toy")
    report.add("dL/dx", True, max_rel_error=3e-10)
    report.add("dL/dW", True, max_rel_error=2e-9)
    report.add("overfit", True, steps=40)
    assert report.summary() == "Toy: PASS (3 checks, worst relative error 2.0e-09)"
    report.add("dL/db", False, "backward is zero", max_rel_error=1.0)
    assert report.summary() == str(report)
    assert "backward is zero" in report.summary() and "\n" in report.summary()


# -- inconclusive, never a failure of a correct layer -----------------------------------------

def test_saturated_input_is_inconclusive_with_the_reason_and_a_hint():
    layer, x = broken_layers.make_sigmoid_saturated()
    report = checks.overfit_one_sample(layer, x)
    (stalled,) = [r for r in report.rows if r.inconclusive]
    assert stalled.ok and stalled.steps == 300 and stalled.loss > 0.05
    assert "saturates the layer" in stalled.detail and "rescale x" in stalled.detail
    assert "downhill" not in stalled.detail
    assert report.ok and report.status == "INCONCLUSIVE"
    # the same layer on inputs of order 1 learns
    assert checks.overfit_one_sample(layer, x / x.std()).status == "PASS"


def test_check_layer_never_blames_a_gradient_the_finite_differences_confirmed(monkeypatch):
    """Even when the saturation test does not fire, a stall after a passing gradient check is
    inconclusive, with the reason; on its own, the overfit test still fails it."""
    import checks.overfit
    monkeypatch.setattr(checks.overfit, "SATURATED", 0.0)
    layer, x = broken_layers.make_sigmoid_saturated()
    alone = checks.overfit_one_sample(layer, x)
    assert not alone.ok and "downhill" in alone.rows[-1].detail
    report = checks.check_layer(layer, x)
    assert report.ok and report.status == "INCONCLUSIVE"
    (row,) = [r for r in report.rows if r.inconclusive]
    assert "finite differences confirm every gradient" in row.detail
    assert "downhill" not in str(report)


def test_a_wrong_gradient_still_fails_the_overfit_stage():
    report = checks.check_layer(*broken_layers.make_tanh_sign_flipped())
    assert report.row("overfit 3 samples").status == "FAIL"


def test_report_status_summary_and_dict_with_an_inconclusive_row():
    from checks.report import Report
    report = Report("Toy")
    report.add("dL/dx", True, max_rel_error=3e-10)
    report.add("overfit", True, "inconclusive: x saturates the layer", inconclusive=True)
    assert report.ok and report.status == "INCONCLUSIVE" and report.failed() == []
    assert report.inconclusive() == ["overfit"]
    assert report.summary().splitlines() == [
        "Toy: INCONCLUSIVE (2 checks, worst relative error 3.0e-10)",
        "  overfit: inconclusive: x saturates the layer"]
    assert str(report).splitlines()[0] == "Toy: INCONCLUSIVE" and "INCONCLUSIVE" in str(report)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["status"] == "INCONCLUSIVE" and data["checks"][1]["inconclusive"] is True
    assert Report.from_dict(data) == report


def test_report_from_dict_restores_non_finite_numbers_and_coordinates():
    from checks.report import Report
    report = checks.gradcheck(*broken_layers.make_dense_grad_averaged())
    report.rows[0].max_rel_error = float("nan")
    again = Report.from_dict(json.loads(json.dumps(report.to_dict())))
    assert np.isnan(again.rows[0].max_rel_error)
    assert again.row("dL/dW").coords == report.row("dL/dW").coords
    assert str(again).splitlines()[1:] == str(report).splitlines()[1:]


# -- NumPy's global generator ------------------------------------------------------------------

def test_a_layer_drawing_from_numpys_global_generator_is_checked_like_any_other():
    np.random.seed(123)
    expected_next = np.random.random(3)
    np.random.seed(123)
    layer, x = broken_layers.make_dropout_global_random()
    report = checks.check_layer(layer, x)
    assert report.status == "PASS", str(report)
    assert report.row("dL/dx").kinks == 0 and len(report.row("dL/dx").coords) == x.size
    assert np.array_equal(np.random.random(3), expected_next)    # the caller's state is kept


# -- time limit and exits ----------------------------------------------------------------------

@pytest.mark.parametrize("make, phase", [
    (broken_layers.make_relu_forward_never_returns, "forward"),
    (broken_layers.make_relu_backward_never_returns, "backward")])
def test_a_layer_that_never_returns_fails_with_the_phase(make, phase):
    import time
    start = time.perf_counter()
    for function in (checks.check_layer, checks.gradcheck):
        report = function(*make(), timeout=0.5)
        assert report.failed() == ["time limit"]
        assert report.row("time limit").detail.startswith(f"timed out in {phase}: no return "
                                                          "within 0.5 s")
    assert time.perf_counter() - start < 5


def test_no_alarm_is_left_behind():
    import signal
    before = signal.getsignal(signal.SIGALRM), signal.getsignal(signal.SIGINT)
    checks.check_layer(ReLU(), np.random.default_rng(0).standard_normal((3, 4)), timeout=5)
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert (signal.getsignal(signal.SIGALRM), signal.getsignal(signal.SIGINT)) == before


@pytest.mark.parametrize("error", [SystemExit(0), SystemExit(3), KeyboardInterrupt()])
def test_exits_raised_by_the_layer_are_its_failure(error):
    class Raises(ReLU):
        def backward(self, dout):
            raise error

    report = checks.check_layer(Raises(), np.random.default_rng(0).standard_normal((3, 4)))
    assert not report.ok and "forward/backward run" in report.failed()
    assert type(error).__name__ in report.row("forward/backward run").detail


def test_a_real_ctrl_c_still_stops_the_checks():
    import os
    import signal

    class PressesCtrlC(ReLU):
        def forward(self, x):
            os.kill(os.getpid(), signal.SIGINT)      # as the terminal does on Ctrl-C
            return super().forward(x)

    with pytest.raises(KeyboardInterrupt):
        checks.check_layer(PressesCtrlC(), np.ones((2, 3)))


def test_an_alarm_armed_by_the_caller_is_left_alone():
    """A test runner's own time limit (an armed ITIMER_REAL) wins over the harness's."""
    import signal

    def ring(signum, frame):
        raise TimeoutError("the caller's alarm")

    old = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, 30)
    try:
        checks.check_layer(ReLU(), np.random.default_rng(0).standard_normal((3, 4)), timeout=1)
        remaining = signal.getitimer(signal.ITIMER_REAL)[0]
        assert 0 < remaining <= 30 and signal.getsignal(signal.SIGALRM) is ring
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_a_backward_that_forgets_a_mask_is_named():
    """ReLU's gradient passed through unmasked: nonzero exactly where forward is flat."""

    class ReLUNoMask(ReLU):
        def backward(self, dout):
            return dout.copy()

    x = np.random.default_rng(0).standard_normal((3, 6))
    row = checks.gradcheck(ReLUNoMask(), x).row("dL/dx")
    assert not row.ok
    assert "nonzero at" in row.detail and "where the numerical gradient is 0" in row.detail
    assert f"{int(np.sum(x < 0))} of 18 coordinates" in row.detail


def test_a_diagnosis_that_fails_never_loses_the_row(monkeypatch):
    from checks import diagnose

    def broken(*args, **kwargs):
        raise IndexError("a bug in the diagnosis")

    monkeypatch.setattr(diagnose, "pattern", broken)
    row = checks.gradcheck(*broken_layers.make_dense_grad_averaged()).row("dL/dW")
    assert not row.ok and "no simple pattern" in row.detail


def test_a_gradient_for_a_parameter_forward_ignores_points_at_a_copy():
    row = checks.gradcheck(*broken_layers.make_dense_params_copied()).row("dL/dW")
    assert not row.ok and "forward reads another array (a copy" in row.detail


def test_one_coordinate_per_index_is_no_evidence_of_a_factor_per_index():
    """A 1-D gradient off by a small penalty is not "a factor per index"."""

    class DecayInBackward(Dense):
        def backward(self, dout):
            dx = super().backward(dout)
            self.grads["b"] = self.grads["b"] + 1e-3 * self.params["b"] + 1e-3
            return dx

    row = checks.gradcheck(DecayInBackward(4, 3, rng=0, dtype=np.float64),
                           np.random.default_rng(0).standard_normal((5, 4))).row("dL/db")
    assert not row.ok and "depends only on" not in row.detail
