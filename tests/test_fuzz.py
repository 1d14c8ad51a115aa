"""Bad input, the way careless and hostile users give it: every case ends in a named error (a
sentence naming the layer, file or option and what was expected) or a correct result -- never a
raw NumPy traceback, a silent NaN, a half-changed model, a file left behind or a hang.

The table-driven cases reproduce the findings one by one; the hypothesis-driven ones throw
random junk at the same entry points.  Every test runs under an alarm (``TIME_LIMIT``), so a
hang fails instead of blocking the suite.  The one full-MNIST training case is opt-in
(``CNN_LESSONS_SLOW=1`` and ``CNN_LESSONS_DATA``).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnn_lessons import (SGD, Adam, AvgPool2D, BatchNorm, BCEWithLogits, Conv2D, Dense, Dropout,
                         FastAdam, FastBatchNorm, FastConv2D, FastFlatten, FastMaxPool2D, FastSGD,
                         Flatten, LeakyReLU, MaxPool2D, MaxPool2DNaive, MSELoss, ReLU, Sequential,
                         Sigmoid, Softmax, SoftmaxCrossEntropy, Tanh)
from cnn_lessons import files, models, saving
from cnn_lessons.data import DataError, load_mnist, parse_idx
from cnn_lessons.model import ModelFileError
from cnn_lessons.training import TrainingDiverged, train

TIME_LIMIT = 30        # seconds per test: a hang is a failure, not a stuck suite
NAN, INF = float("nan"), float("inf")
SLOW = os.environ.get("CNN_LESSONS_SLOW") == "1"


@pytest.fixture(autouse=True)
def time_limit():
    def hang(signum, frame):
        raise TimeoutError(f"no answer within {TIME_LIMIT} s: a hang")
    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(TIME_LIMIT)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def refused(call, error, *names):
    """``call()`` raises ``error`` (a ValueError or one of ours), in one sentence naming every
    string of ``names``, without a numpy-internal wording."""
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    for name in names:
        assert name in message, f"{name!r} not named in: {message}"
    for raw in ("invalid literal", "could not convert", "SeedSequence", "ZeroDivision",
                "cannot reshape", "allow_pickle", "pickle.load"):
        assert raw not in message, message
    return message


def f32(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# -- constructors ---------------------------------------------------------------------------------

CONSTRUCTORS = [
    ("BatchNorm momentum 2", lambda: BatchNorm(4, momentum=2.0), "BatchNorm(4)", "momentum"),
    ("BatchNorm momentum nan", lambda: BatchNorm(4, momentum=NAN), "BatchNorm(4)", "momentum"),
    ("BatchNorm eps < 0", lambda: BatchNorm(4, eps=-1), "BatchNorm(4)", "eps"),
    ("BatchNorm(0)", lambda: BatchNorm(0), "BatchNorm", "num_features"),
    ("BatchNorm float16", lambda: BatchNorm(3, dtype=np.float16), "BatchNorm", "dtype"),
    ("FastBatchNorm momentum", lambda: FastBatchNorm(4, momentum=-0.1), "BatchNorm", "momentum"),
    ("Conv2D out 0", lambda: Conv2D(1, 0, 3), "Conv2D(1, 0)", "out_channels"),
    ("Conv2D in 0", lambda: Conv2D(0, 2, 3), "Conv2D(0, 2)", "in_channels"),
    ("Conv2D kernel '33'", lambda: Conv2D(1, 2, "33"), "Conv2D(1, 2)", "kernel_size"),
    ("Conv2D kernel 'ab'", lambda: Conv2D(1, 2, "ab"), "Conv2D(1, 2)", "kernel_size"),
    ("Conv2D kernel 2.5", lambda: Conv2D(1, 2, 2.5), "Conv2D(1, 2)", "kernel_size"),
    ("Conv2D kernel triple", lambda: Conv2D(1, 2, (3, 3, 3)), "Conv2D(1, 2)", "kernel_size"),
    ("Conv2D padding -1", lambda: Conv2D(1, 2, 3, padding=-1), "Conv2D(1, 2)", "padding"),
    ("Conv2D stride 0", lambda: Conv2D(1, 2, 3, stride=0), "Conv2D(1, 2)", "stride"),
    ("Conv2D dtype int", lambda: Conv2D(1, 2, 3, dtype=np.int32), "Conv2D(1, 2)", "dtype"),
    ("FastConv2D out 0", lambda: FastConv2D(1, 0, 3), "FastConv2D(1, 0)", "out_channels"),
    ("Dense(0, 3)", lambda: Dense(0, 3), "Dense", "in_features"),
    ("Dense(-1, 3)", lambda: Dense(-1, 3), "Dense", "in_features"),
    ("Dense(2.7, 3)", lambda: Dense(2.7, 3), "Dense", "in_features"),
    ("Dense(True, 3)", lambda: Dense(True, 3), "Dense", "in_features"),
    ("Dense('3', 3)", lambda: Dense("3", 3), "Dense", "in_features"),
    ("Dense int64", lambda: Dense(2, 3, dtype=np.int64), "Dense(2, 3)", "dtype"),
    ("Dense dtype 'foo'", lambda: Dense(2, 3, dtype="foo"), "Dense(2, 3)", "dtype"),
    ("Dense rng str", lambda: Dense(2, 3, rng="seed"), "Dense(2, 3)", "rng"),
    ("Dense rng -1", lambda: Dense(2, 3, rng=-1), "Dense(2, 3)", "rng"),
    ("Dense init", lambda: Dense(2, 3, init="xavier"), "initialiser", "'he'"),
    ("Dropout p '0.5'", lambda: Dropout(p="0.5"), "Dropout", "p"),
    ("Dropout p 1", lambda: Dropout(p=1), "Dropout", "p"),
    ("Dropout p nan", lambda: Dropout(p=NAN), "Dropout", "p"),
    ("Dropout rng", lambda: Dropout(0.5, rng=[1.5]), "Dropout", "rng"),
    ("LeakyReLU 'a'", lambda: LeakyReLU("a"), "LeakyReLU", "negative_slope"),
    ("LeakyReLU inf", lambda: LeakyReLU(INF), "LeakyReLU", "negative_slope"),
    ("MaxPool2D '2'", lambda: MaxPool2D("2"), "MaxPool2D", "kernel_size"),
    ("AvgPool2D stride 0", lambda: AvgPool2D(2, stride=0), "AvgPool2D", "stride"),
    ("Adam lr nan", lambda: Adam([Dense(2, 2)], lr=NAN), "Adam", "lr"),
    ("SGD lr inf", lambda: SGD([Dense(2, 2)], lr=INF), "SGD", "lr"),
    ("SGD lr None", lambda: SGD([Dense(2, 2)], lr=None), "SGD", "lr"),
    ("SGD lr 0", lambda: SGD([Dense(2, 2)], lr=0), "SGD", "lr"),
    ("Adam eps < 0", lambda: Adam([Dense(2, 2)], eps=-1e-8), "Adam", "eps"),
    ("SGD momentum -3", lambda: SGD([Dense(2, 2)], momentum=-3), "SGD", "momentum"),
    ("SGD momentum 1", lambda: SGD([Dense(2, 2)], momentum=1.0), "SGD", "momentum"),
    ("SGD weight_decay nan", lambda: SGD([Dense(2, 2)], weight_decay=NAN), "SGD", "weight_decay"),
    ("Adam three betas", lambda: Adam([Dense(2, 2)], betas=(0.9, 0.99, 0.5)), "Adam", "betas"),
    ("Adam beta nan", lambda: Adam([Dense(2, 2)], betas=(NAN, 0.9)), "Adam", "betas[0]"),
    ("SGD on a string", lambda: SGD("model", lr=0.1), "SGD", "model"),
    ("Adam on numbers", lambda: Adam([1, 2, 3]), "Adam", "layers"),
    ("FastSGD lr nan", lambda: FastSGD([Dense(2, 2)], lr=NAN), "FastSGD", "lr"),
    ("FastAdam eps nan", lambda: FastAdam([Dense(2, 2)], eps=NAN), "FastAdam", "eps"),
]


@pytest.mark.parametrize("call, names", [(c[1], c[2:]) for c in CONSTRUCTORS],
                         ids=[c[0] for c in CONSTRUCTORS])
def test_constructors_refuse_nonsense_by_name(call, names):
    refused(call, ValueError, *names)


JUNK = st.one_of(st.none(), st.booleans(), st.integers(-3, 6), st.floats(allow_nan=True),
                 st.text(max_size=3), st.complex_numbers(max_magnitude=3),
                 st.tuples(st.integers(-1, 4), st.integers(-1, 4)),
                 st.lists(st.integers(0, 3), max_size=3))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(a=JUNK, b=JUNK, k=JUNK, p=JUNK)
def test_constructors_on_random_junk_build_a_working_layer_or_name_themselves(a, b, k, p):
    for cls, args, name in [(Dense, (a, b), "Dense"), (Conv2D, (a, b, k), "Conv2D"),
                            (BatchNorm, (a,), "BatchNorm"), (Dropout, (p,), "Dropout"),
                            (LeakyReLU, (p,), "LeakyReLU"), (MaxPool2D, (k,), "MaxPool2D")]:
        try:
            layer = cls(*args)
        except ValueError as err:
            assert name in str(err), err
            continue
        for arr in layer.params.values():       # built: real, finite, the declared sizes
            assert arr.dtype == np.float32 and np.isfinite(arr).all() and arr.size > 0
    for cls in (SGD, Adam):
        try:
            cls([Dense(2, 2, rng=0)], lr=p)
        except ValueError as err:
            assert cls.__name__ in str(err) and "lr" in str(err)
        else:
            assert math.isfinite(p) and p > 0


# -- inputs ---------------------------------------------------------------------------------------

def forward_then(layer, x, dout):
    return lambda: (layer.forward(x), layer.backward(dout))


INPUTS = [
    ("Conv2D empty batch", lambda: Conv2D(1, 2, 3)(np.zeros((0, 1, 5, 5), np.float32)), "Conv2D"),
    ("FastConv2D empty batch", lambda: FastConv2D(1, 2, 3)(np.zeros((0, 1, 5, 5), np.float32)),
     "FastConv2D"),
    ("Conv2D empty image", lambda: Conv2D(1, 2, 1, padding=1)(np.zeros((2, 1, 0, 0), np.float32)),
     "Conv2D"),
    ("Softmax 1-D", lambda: Softmax()(np.array([1.0, 2.0, 3.0])), "Softmax", "(N, K)"),
    ("Dense complex dout", forward_then(Dense(3, 2), f32(4, 3), np.ones((4, 2), complex)),
     "Dense", "complex"),
    ("ReLU string dout", forward_then(ReLU(), f32(4, 3), np.full((4, 3), "a")), "ReLU", "dout"),
    ("Conv2D complex dout", forward_then(Conv2D(1, 2, 3), f32(2, 1, 5, 5),
                                         np.ones((2, 2, 3, 3), complex)), "Conv2D", "dout"),
    ("Sigmoid object dout", forward_then(Sigmoid(), f32(2, 2), np.array([[1, None], [2, 3]])),
     "Sigmoid", "dout"),
    ("BatchNorm float16 input", lambda: BatchNorm(2)(np.full((4, 2), 300, np.float16)),
     "BatchNorm", "float16"),
    ("Dense complex input", lambda: Dense(3, 2)(np.ones((2, 3), complex)), "Dense", "complex"),
    ("CE NaN logits", lambda: SoftmaxCrossEntropy()(np.array([[NAN, 1.0]]), np.array([0])),
     "SoftmaxCrossEntropy", "NaN"),
    ("CE inf logits", lambda: SoftmaxCrossEntropy()(np.array([[INF, 1.0]]), np.array([0])),
     "SoftmaxCrossEntropy", "inf"),
    ("CE empty batch", lambda: SoftmaxCrossEntropy()(np.zeros((0, 3)), np.zeros(0, int)),
     "SoftmaxCrossEntropy", "empty"),
    ("BCE NaN targets", lambda: BCEWithLogits()(np.zeros(3), np.array([NAN, 0, 1.0])),
     "BCEWithLogits", "NaN", "targets"),
    ("BCE inf logits", lambda: BCEWithLogits()(np.array([INF, 0.0]), np.array([1.0, 0])),
     "BCEWithLogits", "inf"),
    ("MSE empty batch", lambda: MSELoss()(np.zeros(0), np.zeros(0)), "MSELoss", "empty"),
    ("MSE NaN targets", lambda: MSELoss()(np.zeros(2), np.array([1.0, NAN])), "MSELoss", "NaN"),
    ("MSE string targets", lambda: MSELoss()(np.zeros(2), np.array(["a", "b"])), "MSELoss",
     "targets"),
]


@pytest.mark.parametrize("call, names", [(c[1], c[2:]) for c in INPUTS],
                         ids=[c[0] for c in INPUTS])
def test_bad_inputs_are_refused_by_name(call, names):
    refused(call, ValueError, *names)


def fresh_layers():
    return [Dense(3, 2, rng=0), ReLU(), LeakyReLU(0.1), Sigmoid(), Tanh(), Softmax(), Flatten(),
            FastFlatten(), Dropout(0.3, rng=0), BatchNorm(3), FastBatchNorm(3),
            Conv2D(3, 2, 2, rng=0), FastConv2D(3, 2, 2, rng=0), MaxPool2D(2), FastMaxPool2D(2),
            AvgPool2D(2)]


@settings(max_examples=80, deadline=None)
@given(shape=st.lists(st.integers(0, 4), min_size=0, max_size=4),
       dtype=st.sampled_from(["f4", "f8", "i4", "c16", "U1", "b1"]),
       dout_dtype=st.sampled_from(["f4", "f8", "c16", "U1"]))
def test_every_layer_on_random_arrays_names_itself_or_answers_in_shape(shape, dtype, dout_dtype):
    x = np.ones(shape, dtype)
    for layer in fresh_layers():
        try:
            out = layer.forward(x)
        except ValueError as err:
            assert type(layer).__name__ in str(err), err
            continue
        assert dtype in ("f4", "f8") and np.isfinite(out).all()   # only floats get through
        dout = np.ones(out.shape, dout_dtype)
        try:
            dx = layer.backward(dout)
        except ValueError as err:
            assert type(layer).__name__ in str(err) and dout_dtype not in ("f4", "f8"), err
        else:
            assert dout_dtype in ("f4", "f8") and dx.shape == x.shape and np.isfinite(dx).all()


@pytest.mark.parametrize("cls", [Flatten, FastFlatten])
def test_flatten_on_an_empty_batch_is_an_empty_batch(cls):
    layer = cls()
    out = layer.forward(np.zeros((0, 3, 2, 2), np.float32))
    assert out.shape == (0, 12)
    assert layer.backward(np.zeros((0, 12), np.float32)).shape == (0, 3, 2, 2)


def test_max_pool_over_nan_agrees_with_the_loops():
    """A window holding NaN has NaN as its maximum, and its gradient goes to the first NaN,
    as ``np.argmax`` in the loop version decides; the fast twin's output agrees."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 6, 6))
    x[rng.random(x.shape) < 0.15] = np.nan
    for kernel, stride in [(2, 2), (3, 2), (2, 1)]:
        loops, vec = MaxPool2DNaive(kernel, stride), MaxPool2D(kernel, stride)
        out_l, out_v = loops.forward(x), vec.forward(x)
        np.testing.assert_array_equal(out_l, out_v)                  # NaN where NaN
        assert np.isnan(out_v).any()
        dout = rng.standard_normal(out_l.shape)
        # the same winners; overlapping windows add in another order (rounding only)
        np.testing.assert_allclose(loops.backward(dout), vec.backward(dout), rtol=1e-13, atol=0)
        np.testing.assert_array_equal(np.isnan(FastMaxPool2D(kernel, stride).forward(x)),
                                      np.isnan(out_l))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from([0.0, 1.0, -2.5, 1e4, -1e4, NAN, INF, -INF]), min_size=0,
                max_size=12), st.integers(1, 4))
def test_losses_give_a_finite_number_or_name_the_problem(values, k):
    n = len(values) // k
    logits = np.array(values[:n * k], dtype=np.float64).reshape(n, k)
    finite = np.isfinite(logits).all() and n > 0
    for loss, target in [(SoftmaxCrossEntropy(), np.zeros(n, int)),
                         (BCEWithLogits(), np.full(logits.shape, 0.5)),
                         (MSELoss(), np.zeros(logits.shape))]:
        try:
            value = loss(logits, target)
        except ValueError as err:
            assert not finite and type(loss).__name__ in str(err)
        else:
            assert finite and math.isfinite(value)
            assert np.isfinite(loss.backward()).all()


# -- model files ----------------------------------------------------------------------------------

def write_model(path, layers, arrays, metadata=None):
    """A model file written by hand: the JSON header and the arrays, as an attacker would."""
    header = {"format": saving.FORMAT, "layers": layers, "metadata": metadata or {}}
    np.savez(path, __model__=np.array(json.dumps(header)), **arrays)


def two_dense():
    return Sequential([Dense(3, 4, rng=0), ReLU(), Dense(4, 2, rng=1)])


def test_load_state_changes_nothing_unless_everything_matches(tmp_path):
    """Layer 1's bias holds strings: layer 0's weights must not have been overwritten."""
    good = two_dense()
    arrays = {k: v + 1 for k, v in saving.state(good).items()}
    arrays["2.b"] = np.array(["x", "y"])
    write_model(tmp_path / "m.npz", saving.spec(good), arrays)
    target = two_dense()
    before = {k: v.copy() for k, v in saving.state(target).items()}
    refused(lambda: target.load_state(tmp_path / "m.npz"), ModelFileError, "'2.b'", "m.npz")
    for key, value in saving.state(target).items():
        np.testing.assert_array_equal(value, before[key])


@pytest.mark.parametrize("bad, names", [
    (np.array([1 + 2j, 3j]), ["'2.b'", "complex"]),
    (np.array(["a", "b"]), ["'2.b'"]),
    (np.array([np.nan, 1.0]), ["'2.b'", "NaN"]),
    (np.array([1, 2]), ["'2.b'", "int"]),
], ids=["complex", "string", "nan", "int"])
def test_weights_that_are_not_finite_real_numbers_are_refused(tmp_path, bad, names):
    good = two_dense()
    arrays = dict(saving.state(good))
    arrays["2.b"] = bad
    write_model(tmp_path / "m.npz", saving.spec(good), arrays)
    refused(lambda: Sequential.load(tmp_path / "m.npz"), ModelFileError, *names)
    refused(lambda: two_dense().load_state(tmp_path / "m.npz"), ModelFileError, *names)


@pytest.mark.parametrize("size", [40_000, 10**7, 2**40])
def test_declared_sizes_are_checked_before_anything_is_allocated(tmp_path, size):
    write_model(tmp_path / "m.npz", [{"type": "Dense", "config": {"in_features": size,
                                                                  "out_features": size}}],
                {"0.W": np.zeros((3, 4), np.float32), "0.b": np.zeros(4, np.float32)})
    start = time.perf_counter()
    refused(lambda: Sequential.load(tmp_path / "m.npz"), ModelFileError, "layer 0", "Dense",
            str((size, size)), "(3, 4)")
    assert time.perf_counter() - start < 1.0


def test_declared_shapes_are_the_shapes_the_layers_allocate():
    """saving.declared_shapes (read before allocating) against the layers themselves."""
    for layer in [Dense(3, 5), Conv2D(2, 4, (3, 5)), Conv2D(2, 4, 3, bias=False),
                  BatchNorm(7), FastBatchNorm(3), FastConv2D(1, 2, 3), MaxPool2D(2), ReLU()]:
        entry = {"type": saving.saved_name(layer), "config": layer.config()}
        shapes = saving.declared_shapes("f", 0, entry)
        actual = {k: v.shape for k, v in {**layer.params, **layer.buffers}.items()}
        assert shapes == actual, layer


@pytest.mark.parametrize("entry, names", [
    ({"type": "Softmax2", "config": {}}, ["unknown type 'Softmax2'"]),
    ({"type": "_Pool2D", "config": {"kernel_size": 2}}, ["unknown type '_Pool2D'"]),
    ({"type": "Layer", "config": {}}, ["unknown type 'Layer'"]),
    ({"type": "Dense", "config": {"in_features": "3", "out_features": 4}}, ["in_features"]),
    ({"type": "Dropout", "config": {"p": 7}}, ["Dropout", "p"]),
    ({"type": "ReLU", "config": {"x": 1}}, ["layer 0", "ReLU"]),
], ids=["unknown", "abstract", "base", "string size", "bad p", "unknown setting"])
def test_layer_types_and_settings_of_a_file_are_checked(tmp_path, entry, names):
    write_model(tmp_path / "m.npz", [entry], {})
    refused(lambda: Sequential.load(tmp_path / "m.npz"), ModelFileError, "m.npz", *names)


@pytest.mark.parametrize("metadata", [[1, 2], "text", 3])
def test_metadata_of_the_wrong_type_is_refused(tmp_path, metadata):
    path = tmp_path / "m.npz"
    header = {"format": saving.FORMAT, "layers": [], "metadata": metadata}
    np.savez(path, __model__=np.array(json.dumps(header)))
    refused(lambda: saving.read_metadata(path), ModelFileError, "metadata")


def test_a_small_file_that_would_unpack_into_too_much_is_refused_unread(tmp_path, monkeypatch):
    good = two_dense()
    header = {"format": saving.FORMAT, "layers": saving.spec(good), "metadata": {}}
    bomb = tmp_path / "bomb.npz"                 # 4 MiB of zeros in a file of a few kB
    np.savez_compressed(bomb, __model__=np.array(json.dumps(header)),
                        **saving.state(good), extra=np.zeros(2**20, np.float32))
    assert bomb.stat().st_size < 2**15
    monkeypatch.setattr(saving, "MAX_UNPACKED", 2**21)
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("the arrays were read"))
    refused(lambda: Sequential.load(bomb), ModelFileError, "bomb.npz", "MiB unpacked", "2 MiB")
    refused(lambda: saving.read_metadata(bomb), ModelFileError, "bomb.npz", "MiB unpacked")
    monkeypatch.undo()
    refused(lambda: Sequential.load(bomb), ModelFileError, "bomb.npz", "'extra'")


def test_files_that_numpy_would_unpickle_never_mention_pickle(tmp_path):
    as_json = tmp_path / "metrics.npz"
    as_json.write_text(json.dumps({"test_accuracy": 0.9}))
    refused(lambda: Sequential.load(as_json), ModelFileError, "metrics.npz", "zip")
    objects = tmp_path / "objects.npz"
    np.savez(objects, __model__=np.array([{"a": 1}], dtype=object))
    refused(lambda: Sequential.load(objects), ModelFileError, "objects.npz", "Python objects")


def test_a_layer_whose_config_does_not_survive_json_is_refused_at_save(tmp_path):
    class Tupled(Dense):
        def config(self):
            return {"sizes": (self.in_features, self.out_features)}    # a tuple comes back a list

    path = tmp_path / "m.npz"
    refused(lambda: Sequential([Tupled(2, 3)]).save(path), ModelFileError, "layer 0", "Tupled",
            "JSON")
    assert not path.exists() and os.listdir(tmp_path) == []


def test_a_protocol_only_layer_saves_and_loads_back_into_its_model(tmp_path):
    class Scale:                               # the protocol, no base class, no config()
        def __init__(self):
            self.params = {"s": np.full(3, 2.0, np.float32)}
            self.grads = {}

        def forward(self, x):
            return x * self.params["s"]

        def backward(self, dout):
            return dout * self.params["s"]

    model = Sequential([Dense(2, 3, rng=0), Scale()])
    model.layers[1].params["s"][:] = 5
    model.save(tmp_path / "m.npz")
    twin = Sequential([Dense(2, 3, rng=1), Scale()]).load_state(tmp_path / "m.npz")
    x = f32(4, 2)
    np.testing.assert_array_equal(twin.forward(x), model.forward(x))
    refused(lambda: Sequential.load(tmp_path / "m.npz"), ModelFileError, "unknown type 'Scale'")


def test_a_diverged_model_is_never_saved(tmp_path):
    model = models.cnn(fast=False)
    model.layers[2].buffers["running_var"][3] = np.inf
    refused(lambda: model.save(tmp_path / "m.npz"), ModelFileError, "'2.running_var'", "layer 2",
            "BatchNorm")
    assert os.listdir(tmp_path) == []


def test_predict_on_an_empty_array_is_empty():
    model = two_dense()
    assert model.predict(np.zeros((0, 3), np.float32)).shape == (0,)
    refused(lambda: model.predict(np.float32(1)), ValueError, "Dense")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n_in=st.one_of(st.integers(-2, 6), st.integers(10**6, 10**12), st.just("4")),
       n_out=st.integers(-2, 6), held=st.tuples(st.integers(0, 6), st.integers(0, 6)),
       dtype=st.sampled_from(["f4", "f8", "c8", "i4", "U2"]))
def test_random_model_files_load_correctly_or_are_refused(tmp_path_factory, n_in, n_out, held,
                                                          dtype):
    path = tmp_path_factory.mktemp("fuzz") / "m.npz"
    write_model(path, [{"type": "Dense", "config": {"in_features": n_in, "out_features": n_out}}],
                {"0.W": np.ones(held, dtype), "0.b": np.ones(held[1:], dtype)})
    try:
        model = Sequential.load(path)
    except ModelFileError as err:
        assert str(path) in str(err)
    else:
        assert (n_in, n_out) == held and dtype in ("f4", "f8")
        np.testing.assert_array_equal(model.layers[0].params["W"], np.ones(held))


# -- writing files: atomic, no temporary file left behind ------------------------------------------

def test_an_interrupted_write_leaves_nothing_behind(tmp_path):
    target = tmp_path / "model.npz"
    target.write_bytes(b"old")
    for error in (KeyboardInterrupt, ValueError):
        with pytest.raises(error):
            with files.atomic_write(target) as f:
                f.write(b"half of the new")
                raise error()
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["model.npz"]


def test_a_write_error_names_the_target_not_the_temporary_file():
    message = refused(lambda: files.atomic_write("/proc/model.npz").__enter__(), OSError,
                      "/proc/model.npz")
    assert ".tmp" not in message


WRITER = textwrap.dedent("""
    import sys, time
    from cnn_lessons.files import atomic_write
    with atomic_write(sys.argv[1]) as f:
        f.write(b"x" * 1000)
        print("writing", flush=True)
        time.sleep(60)
""")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_during_a_write_removes_the_temporary_file(tmp_path, sig):
    target = tmp_path / "model.npz"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    assert len(os.listdir(tmp_path)) == 1                        # the temporary file
    proc.send_signal(sig)
    proc.communicate(timeout=20)
    assert proc.returncode != 0
    assert os.listdir(tmp_path) == []                             # nothing saved, nothing left


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path / "model.npz")],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.kill()                                                   # SIGKILL: no cleanup possible
    proc.wait()
    [stale] = os.listdir(tmp_path)
    assert stale.startswith(".model.npz.") and stale.endswith(".tmp")
    two_dense().save(tmp_path / "model.npz")        # a minute's grace: it may be another
    assert stale in os.listdir(tmp_path)            # container's live process of that number
    old = time.time() - files.STALE_AFTER - 1
    os.utime(tmp_path / stale, (old, old))
    live = tmp_path / f".model.npz.{os.getpid()}.abcd.tmp"      # a writer still running
    live.write_bytes(b"busy")
    os.utime(live, (old, old))
    two_dense().save(tmp_path / "model.npz")
    assert sorted(os.listdir(tmp_path)) == sorted(["model.npz", live.name])


def test_a_killed_downloads_part_file_is_removed_by_the_next_one(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = tmp_path / f".tmp-train-images-idx3-ubyte-{dead}.xyz.part"
    stale.write_bytes(b"x" * 100)
    old = time.time() - files.STALE_AFTER - 1
    os.utime(stale, (old, old))
    fd, fresh = files.temp_file(tmp_path, ".tmp-train-images-idx3-ubyte-", ".part")
    os.close(fd)
    assert os.listdir(tmp_path) == [os.path.basename(fresh)]


# -- training and data ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sample():
    return load_mnist(sample=True)


def tiny_mlp(seed=0):
    return models.mlp(hidden=16, seed=seed)


@pytest.mark.parametrize("kwargs, names", [
    ({"batch_size": 2.5}, ["train", "batch_size"]),
    ({"batch_size": 0}, ["train", "batch_size"]),
    ({"epochs": 1.0}, ["train", "epochs"]),
    ({"optimizer": None}, ["train", "optimizer"]),
], ids=["float batch", "zero batch", "float epochs", "no optimizer"])
def test_train_refuses_bad_arguments_by_name(sample, kwargs, names):
    model = tiny_mlp()
    args = {"epochs": 1, "batch_size": 32, "optimizer": Adam(model), "progress": False, **kwargs}
    refused(lambda: train(model, sample.x_train[:64], sample.y_train[:64], **args), ValueError,
            *names)


def test_train_on_no_examples_is_refused(sample):
    model = tiny_mlp()
    refused(lambda: train(model, sample.x_train[:0], sample.y_train[:0], optimizer=Adam(model),
                          progress=False), ValueError, "train", "no training examples")


def test_divergence_from_a_nan_pixel_blames_the_data(sample):
    model = tiny_mlp()
    x = sample.x_train[:96].copy()
    x[70, 0, 5, 6] = np.nan
    message = refused(lambda: train(model, x, sample.y_train[:96], batch_size=32, cores=1,
                                    optimizer=Adam(model), progress=False, seed=None),
                      TrainingDiverged, "the loss is nan", "the data", "example 70")
    assert "(0, 5, 6)" in message


def test_divergence_from_a_nan_weight_blames_the_weight(sample):
    model = tiny_mlp()
    model.layers[3].params["W"][2, 1] = np.nan
    refused(lambda: train(model, sample.x_train[:64], sample.y_train[:64], batch_size=32, cores=1,
                          optimizer=Adam(model), progress=False),
            TrainingDiverged, "step 1", "a weight", "layer 3", "'W'")


def test_divergence_inside_the_network_names_the_layer(sample):
    model = Sequential([Flatten(), Dense(784, 8, rng=0), ReLU(), Dense(8, 10, rng=1)])
    model.layers[3].params["W"][...] = 3e38                      # finite, but x @ W overflows
    with np.errstate(over="ignore", invalid="ignore"):
        refused(lambda: train(model, sample.x_train[:32], sample.y_train[:32], batch_size=32,
                              cores=1, optimizer=SGD(model, lr=0.1), progress=False),
                TrainingDiverged, "output of layer 3", "Dense(in_features=8")


def test_a_diverging_cnn_stops_and_is_not_kept_with_infinite_statistics(sample, tmp_path):
    """SGD at lr 1e4: batch norm's running variance overflows while its outputs stay finite."""
    model = Sequential([FastConv2D(1, 4, 3, rng=0), FastMaxPool2D(2), FastBatchNorm(4), ReLU(),
                        FastFlatten(), Dense(4 * 13 * 13, 10, rng=1)])
    with np.errstate(all="ignore"):
        refused(lambda: train(model, sample.x_train[:192], sample.y_train[:192], batch_size=32,
                              cores=1, optimizer=SGD(model, lr=1e4, momentum=0.9),
                              progress=False), TrainingDiverged, "layer")
    refused(lambda: model.save(tmp_path / "m.npz"), ModelFileError, "NaN or infinite")


@pytest.mark.parametrize("blob, names", [
    (b"\0\0\x08\x04" + (0xFFFFFFFF).to_bytes(4, "big") * 4, ["promises", "bytes"]),
    (b"\0\0\x08\x02" + (2**31).to_bytes(4, "big") * 2 + b"\0" * 16, ["promises"]),
    (b"\0\0\x08", ["shorter"]),
], ids=["product overflows int64", "product wraps", "too short"])
def test_idx_headers_whose_sizes_overflow_are_refused(blob, names):
    refused(lambda: parse_idx(blob, name="evil-idx"), DataError, "evil-idx", *names)


def test_load_mnist_refuses_a_dtype_that_is_not_floating():
    for dtype in ("foo", np.int32, None.__class__):
        refused(lambda: load_mnist(sample=True, dtype=dtype), ValueError, "load_", "dtype")


# -- the command line ----------------------------------------------------------------------------

def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "cnn_lessons", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=120)


def one_line_error(r, *names):
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    for name in names:
        assert name in lines[0], lines[0]
    assert "pickle" not in r.stderr
    return lines[0]


@pytest.mark.parametrize("args, names", [
    (["--lr", "nan"], ["--lr"]), (["--lr", "inf"], ["--lr"]), (["--lr", "-1"], ["--lr"]),
    (["--weight-decay", "nan"], ["--weight-decay"]), (["--momentum", "-3"], ["--momentum"]),
    (["--seed", "-1"], ["--seed"]), (["--batch-size", "2.5"], ["--batch-size"]),
    (["--limit", "0"], ["--limit"]), (["--epochs", "0"], ["--epochs"]),
    (["--out", "/proc/nowhere/model.npz"], ["--out", "/proc/nowhere/model.npz"]),
    (["--out", "."], ["--out", "folder"]),
    (["--out", "same.npz", "--metrics-json", "same.npz"], ["--out", "--metrics-json"]),
    (["--out", "m.npz", "--metrics-json", "/proc/m.json"], ["--metrics-json", "/proc/m.json"]),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_cli_train_refuses_before_any_work(tmp_path, args, names):
    r = cli("train", "--sample", "--model", "mlp", "--no-progress", *args, cwd=tmp_path)
    one_line_error(r, *names)
    assert "training" not in r.stdout and os.listdir(tmp_path) == []


def test_cli_divergence_is_one_line_and_saves_nothing(tmp_path):
    r = cli("train", "--sample", "--model", "mlp", "--optimizer", "sgd", "--lr", "1e30",
            "--limit", "256", "--epochs", "1", "--no-progress", "--out", "m.npz", cwd=tmp_path)
    one_line_error(r, "training diverged", "step")
    assert os.listdir(tmp_path) == []


def test_cli_debug_shows_the_traceback(tmp_path):
    r = cli("evaluate", "missing.npz", "--sample", "--debug", cwd=tmp_path)
    assert r.returncode != 0 and "Traceback" in r.stderr and "missing.npz" in r.stderr


def test_cli_evaluate_refuses_a_plots_folder_it_cannot_write_before_any_work(tmp_path):
    two_dense().save(tmp_path / "m.npz")
    (tmp_path / "afile").write_text("")
    one_line_error(cli("evaluate", "m.npz", "--sample", "--plots", "afile/plots", cwd=tmp_path),
                   "--plots", "afile")


def test_cli_evaluate_on_the_metrics_file_never_suggests_pickle(tmp_path):
    (tmp_path / "same.npz").write_text(json.dumps({"history": []}))
    one_line_error(cli("evaluate", "same.npz", "--sample", cwd=tmp_path), "same.npz")


@pytest.mark.skipif(not (SLOW and os.environ.get("CNN_LESSONS_DATA")),
                    reason="full-MNIST training: CNN_LESSONS_SLOW=1 and CNN_LESSONS_DATA")
def test_cli_full_training_that_diverges_saves_nothing(tmp_path):
    signal.alarm(600)
    r = cli("train", "--model", "cnn", "--optimizer", "sgd", "--lr", "1e4", "--epochs", "1",
            "--no-progress", "--out", "m.npz", cwd=tmp_path)
    one_line_error(r, "training diverged")
    assert os.listdir(tmp_path) == []
