"""Sequential: chaining, modes, summary, and model files (round trip, no pickle, refusals,
corruption, atomic writes)."""

import json
import os
import re

import numpy as np
import pytest

from cnn_lessons import (AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, FastConv2D, Flatten, MaxPool2D,
                         ReLU, Sequential, SoftmaxCrossEntropy, Tanh, models)
from cnn_lessons.model import FORMAT, ModelFileError, eval_mode, read_metadata


def small_cnn(seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return Sequential([
        Conv2D(1, 4, 3, padding=1, rng=rng, dtype=dtype),   # (N, 4, 8, 8)
        BatchNorm(4, dtype=dtype),
        ReLU(),
        MaxPool2D(2),                                        # (N, 4, 4, 4)
        Conv2D(4, 3, (3, 2), stride=(1, 2), rng=rng, dtype=dtype),   # (N, 3, 2, 2)
        Flatten(),                                           # (N, 12)
        Dropout(0.3, rng=rng),
        Dense(12, 5, rng=rng, dtype=dtype),
        BatchNorm(5, dtype=dtype),
    ])


def trained_a_little(model, seed=1, steps=3):
    """Run a few training-mode forwards so BatchNorm's running statistics are not the defaults."""
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        x = rng.standard_normal((6, 1, 8, 8)).astype(model[0].params["W"].dtype)
        model.forward(x * 2 + 1)
    for layer in model.layers:       # make every parameter non-trivial too
        for p in layer.params.values():
            p += rng.standard_normal(p.shape).astype(p.dtype) * 0.1
    return model


def images(n=4, seed=5, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal((n, 1, 8, 8)).astype(dtype)


# -- chaining -------------------------------------------------------------------------------------

def test_forward_and_backward_equal_manual_chaining():
    model = small_cnn(dtype=np.float64)
    twin = small_cnn(dtype=np.float64)
    x = images(dtype=np.float64)
    out = model.forward(x)
    # the twin is built from the same seed: same parameters, and its Dropout draws the same mask
    h = x
    for layer in twin.layers:
        h = layer.forward(h)
    np.testing.assert_allclose(out, h, rtol=1e-12, atol=1e-12)
    dout = np.random.default_rng(6).standard_normal(out.shape)
    dx = model.backward(dout)
    g = dout
    for layer in reversed(twin.layers):
        g = layer.backward(g)
    np.testing.assert_allclose(dx, g, rtol=1e-12, atol=1e-12)
    for i, layer in enumerate(model.layers):
        for name in layer.params:
            np.testing.assert_allclose(layer.grads[name], twin.layers[i].grads[name],
                                       rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("first", ["conv", "dense", "flatten"])
def test_backward_without_input_grad_gives_the_same_parameter_gradients(first):
    rng = np.random.default_rng(3)
    head = [Flatten(), Dense(16, 3, rng=rng, dtype=np.float64)]
    layers = {"conv": [FastConv2D(1, 1, 3, padding=1, rng=rng, dtype=np.float64), Tanh()] + head,
              "dense": [Dense(16, 4, rng=rng, dtype=np.float64), Tanh(),
                        Dense(4, 3, rng=rng, dtype=np.float64)],
              "flatten": head}[first]
    model = Sequential(layers)
    x = rng.standard_normal((5, 1, 4, 4))
    if first == "dense":
        x = x.reshape(5, 16)
    dout = rng.standard_normal((5, 3))
    model.forward(x)
    dx = model.backward(dout)
    full = {(i, k): g.copy() for i, layer in enumerate(model.layers) for k, g in layer.grads.items()}
    model.forward(x)
    skipped = model.backward(dout, input_grad=False)
    if first != "conv":   # a backward that takes no input_grad still returns its dx
        np.testing.assert_array_equal(skipped, dx)
    else:
        assert skipped is None
    assert dx.shape == x.shape
    for (i, k), g in full.items():
        np.testing.assert_array_equal(model.layers[i].grads[k], g)


def test_model_gradient_matches_finite_differences(numgrad):
    rng = np.random.default_rng(7)
    model = Sequential([Conv2D(1, 2, 3, rng=rng, dtype=np.float64), Tanh(), AvgPool2D(2),
                        Flatten(), Dense(8, 3, rng=rng, dtype=np.float64)])
    x = rng.standard_normal((3, 1, 6, 6))
    y = np.array([0, 2, 1])
    loss = SoftmaxCrossEntropy()
    loss.forward(model.forward(x), y)
    dx = model.backward(loss.backward())
    numeric = numgrad(lambda: loss.forward(model.forward(x), y), x)
    assert np.linalg.norm(dx - numeric) / (np.linalg.norm(dx) + np.linalg.norm(numeric)) < 1e-7
    dW = model[0].grads["W"].copy()
    numeric_W = numgrad(lambda: loss.forward(model.forward(x), y), model[0].params["W"])
    assert np.linalg.norm(dW - numeric_W) / (np.linalg.norm(dW) + np.linalg.norm(numeric_W)) < 1e-7


def test_sequential_refuses_something_that_is_not_a_layer():
    with pytest.raises(TypeError, match="layer 1"):
        Sequential([ReLU(), object()])


# -- modes ----------------------------------------------------------------------------------------

def test_train_and_eval_toggle_dropout_and_batchnorm():
    model = trained_a_little(small_cnn())
    x = images()
    model.eval()
    assert not model.training
    assert all(not layer.training for layer in model.layers)
    a, b = model.forward(x), model.forward(x)
    np.testing.assert_array_equal(a, b)                       # deterministic in eval mode
    stats = [l.buffers["running_mean"].copy() for l in model.layers if isinstance(l, BatchNorm)]
    model.forward(x)
    for l, s in zip([l for l in model.layers if isinstance(l, BatchNorm)], stats):
        np.testing.assert_array_equal(l.buffers["running_mean"], s)   # eval does not update
    assert model.train() is model
    assert all(layer.training for layer in model.layers)
    c, d = model.forward(x), model.forward(x)
    assert not np.array_equal(c, d)                           # Dropout draws new masks
    assert not np.array_equal(model.layers[1].buffers["running_mean"], stats[0])
    model.train(False)
    assert not model.training


def test_predict_uses_eval_mode_and_restores_the_mode():
    model = trained_a_little(small_cnn())
    x = images(n=7)
    model.train()
    pred = model.predict(x, batch_size=3)
    assert model.training
    model.eval()
    np.testing.assert_array_equal(pred, model.forward(x).argmax(axis=1))
    assert pred.shape == (7,)


# -- summary ------------------------------------------------------------------------------------

def test_summary_shows_output_shapes_and_parameter_counts():
    model = small_cnn()
    # counts from the shapes: conv F*C*kh*kw + F, batchnorm 2*C, dense in*out + out
    expected = [
        ((4, 8, 8), 4 * 1 * 3 * 3 + 4),
        ((4, 8, 8), 2 * 4),
        ((4, 8, 8), 0),
        ((4, 4, 4), 0),
        ((3, 2, 2), 3 * 4 * 3 * 2 + 3),
        ((12,), 0),
        ((12,), 0),
        ((5,), 12 * 5 + 5),
        ((5,), 2 * 5),
    ]
    total = sum(count for _, count in expected)
    assert model.num_params() == total == 40 + 8 + 75 + 65 + 10
    model.train()
    text = model.summary((1, 8, 8))
    assert model.training                         # summary leaves the mode as it found it
    lines = text.splitlines()
    for i, (shape, count) in enumerate(expected):
        line = next(l for l in lines if l.startswith(f"{i}: "))
        numbers = tuple(int(v) for v in re.findall(r"\d+", line.split(")", 1)[1]))
        # after the layer's repr: the output shape's sizes, then the parameter count
        assert numbers == (*shape, count), line
        assert str(shape).rstrip(",)").lstrip("(") in line
    total_line = next(l for l in lines if l.startswith("total"))
    assert total_line.split()[-1] == f"{total:,}"


# -- save and load --------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_save_load_round_trip_gives_identical_outputs(tmp_path, dtype):
    model = trained_a_little(small_cnn(seed=0, dtype=dtype)).eval()
    x = images(dtype=dtype)
    expected = model.forward(x)
    path = tmp_path / "model.npz"
    model.save(path, test_accuracy=0.5, note="tiny")
    loaded = Sequential.load(path).eval()
    for (name, a), (name2, b) in zip(model.state().items(), loaded.state().items()):
        assert name == name2 and a.dtype == b.dtype, (name, a.dtype, b.dtype)
        np.testing.assert_array_equal(a, b, err_msg=name)
    np.testing.assert_array_equal(loaded.forward(x), expected)
    assert read_metadata(path) == {"test_accuracy": 0.5, "note": "tiny"}


def test_load_state_into_a_fresh_model_copies_params_and_buffers(tmp_path):
    model = trained_a_little(small_cnn(seed=0)).eval()
    path = tmp_path / "m.npz"
    model.save(path)
    other = small_cnn(seed=42)
    arrays = {k: v for k, v in other.state().items()}
    other.load_state(path).eval()
    for key, arr in other.state().items():
        assert arr is arrays[key]                  # loaded in place: optimizers keep working
    assert "1.running_mean" in arrays and "1.running_var" in arrays
    np.testing.assert_array_equal(other.forward(images()), model.forward(images()))


def test_model_file_loads_without_pickle(tmp_path):
    model = trained_a_little(small_cnn())
    path = tmp_path / "m.npz"
    model.save(path)
    with np.load(path, allow_pickle=False) as data:
        assert "__model__" in data.files
        header = json.loads(str(data["__model__"]))
        assert [layer["type"] for layer in header["layers"]] == \
            [type(layer).__name__ for layer in model.layers]
        for key in data.files:
            assert data[key].dtype != object
        np.testing.assert_array_equal(data["1.running_var"], model[1].buffers["running_var"])
        np.testing.assert_array_equal(data["7.W"], model[7].params["W"])


def snapshot(model):
    return {k: v.copy() for k, v in model.state().items()}


def assert_unchanged(model, before):
    after = model.state()
    assert set(after) == set(before)
    for key in before:
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)


@pytest.mark.parametrize("other", [
    lambda: Sequential([Dense(4, 3, rng=1), Tanh(), Dense(3, 2, rng=1)]),       # a layer type
    lambda: Sequential([Dense(4, 3, rng=1), ReLU(), Dense(3, 3, rng=1)]),       # a shape
    lambda: Sequential([Dense(4, 3, rng=1), ReLU()]),                            # a layer fewer
    lambda: Sequential([Dense(5, 3, rng=1), ReLU(), Dense(3, 2, rng=1)]),       # another shape
], ids=["type", "shape", "length", "in_features"])
def test_load_refuses_a_mismatched_model_and_changes_nothing(tmp_path, other):
    path = tmp_path / "saved.npz"
    Sequential([Dense(4, 3, rng=0), ReLU(), Dense(3, 2, rng=0)]).save(path)
    target = other()
    before = snapshot(target)
    with pytest.raises(ModelFileError) as err:
        target.load_state(path)
    assert str(path) in str(err.value)
    assert_unchanged(target, before)


def test_load_refuses_a_mismatched_batchnorm(tmp_path):
    path = tmp_path / "bn.npz"
    Sequential([Dense(2, 3, rng=0), BatchNorm(3)]).save(path)
    target = Sequential([Dense(2, 4, rng=0), BatchNorm(4)])
    before = snapshot(target)
    with pytest.raises(ModelFileError, match=re.escape(str(path))):
        target.load_state(path)
    assert_unchanged(target, before)


@pytest.mark.parametrize("other", [
    lambda: Sequential([Conv2D(1, 2, 3, stride=2, rng=1), MaxPool2D(2)]),
    lambda: Sequential([Conv2D(1, 2, 3, padding=1, rng=1), MaxPool2D(2)]),
    lambda: Sequential([Conv2D(1, 2, 3, rng=1), MaxPool2D(3)]),
], ids=["stride", "padding", "pool"])
def test_load_refuses_layers_configured_differently(tmp_path, other):
    """Same layer types and array shapes, but a layer that computes a different function."""
    path = tmp_path / "conv.npz"
    Sequential([Conv2D(1, 2, 3, rng=0), MaxPool2D(2)]).save(path)
    target = other()
    before = snapshot(target)
    with pytest.raises(ModelFileError, match=re.escape(str(path))):
        target.load_state(path)
    assert_unchanged(target, before)


def test_missing_file_is_a_model_file_error(tmp_path):
    path = tmp_path / "nowhere.npz"
    with pytest.raises(ModelFileError, match=re.escape(str(path))):
        Sequential.load(path)


@pytest.fixture
def saved(tmp_path):
    model = trained_a_little(small_cnn())
    path = tmp_path / "good.npz"
    model.save(path)
    return model, path, path.read_bytes()


def test_truncated_file_is_a_model_file_error(saved, tmp_path):
    _, _, data = saved
    bad = tmp_path / "truncated.npz"
    for cut in list(range(0, len(data), max(1, len(data) // 40))) + [len(data) - 1]:
        bad.write_bytes(data[:cut])
        with pytest.raises(ModelFileError, match=re.escape(str(bad))):
            Sequential.load(bad)


@pytest.mark.parametrize("content", [b"not a model at all", b"PK\x03\x04garbage", b""],
                         ids=["text", "zip-magic", "empty"])
def test_garbage_file_is_a_model_file_error(tmp_path, content):
    bad = tmp_path / "garbage.npz"
    bad.write_bytes(content)
    with pytest.raises(ModelFileError, match=re.escape(str(bad))):
        Sequential.load(bad)


def test_npz_that_is_not_a_model_is_a_model_file_error(tmp_path):
    bad = tmp_path / "other.npz"
    np.savez(bad, weights=np.ones(3))
    with pytest.raises(ModelFileError, match=re.escape(str(bad))):
        Sequential.load(bad)


@pytest.mark.parametrize("header", [
    "{not json",
    "[]",
    json.dumps({"format": "something else", "layers": []}),
    json.dumps({"format": FORMAT}),                                   # no layer list
    json.dumps({"format": FORMAT, "layers": [1]}),                    # a layer that is no dict
    json.dumps({"format": FORMAT, "layers": [{"type": "os.system"}]}),
    json.dumps({"format": FORMAT, "layers": [{"type": "Dense", "config": {"in_features": 2}}]}),
], ids=["not-json", "list", "format", "no-layers", "layer-not-dict", "unknown-type",
        "bad-config"])
def test_malformed_header_is_a_model_file_error(tmp_path, header):
    bad = tmp_path / "header.npz"
    np.savez(bad, __model__=np.array(header))
    with pytest.raises(ModelFileError, match=re.escape(str(bad))):
        Sequential.load(bad)


def test_npy_file_instead_of_npz_is_a_model_file_error(tmp_path):
    bad = tmp_path / "array.npz"
    with open(bad, "wb") as f:
        np.save(f, np.ones(3))
    with pytest.raises(ModelFileError, match=re.escape(str(bad))):
        Sequential.load(bad)


def test_corrupted_bytes_give_a_model_file_error_or_the_same_model(tmp_path):
    """Flip one byte at a time: either the file is refused by name, or (a byte the format does
    not check) it loads the very same model.  Never a zipfile or numpy traceback."""
    rng = np.random.default_rng(8)
    model = Sequential([Dense(2, 3, rng=rng), BatchNorm(3)])     # a small file: ~2 KB
    model.forward(rng.standard_normal((4, 2)).astype(np.float32))
    model.eval()
    x = rng.standard_normal((3, 2)).astype(np.float32)
    expected = model.forward(x)
    good = tmp_path / "good.npz"
    model.save(good)
    data = good.read_bytes()
    bad = tmp_path / "flipped.npz"
    bad.write_bytes(data)
    escaped = []
    fd = os.open(bad, os.O_RDWR)
    try:
        for pos in range(len(data)):
            os.pwrite(fd, bytes([data[pos] ^ 0xFF]), pos)      # flip in place (fast) ...
            try:
                loaded = Sequential.load(bad)
            except ModelFileError as err:
                assert str(bad) in str(err)
                continue
            except Exception as err:   # noqa: BLE001 - the point is to list what escaped
                escaped.append(f"byte {pos}: {type(err).__name__}: {err}")
                continue
            finally:
                os.pwrite(fd, data[pos:pos + 1], pos)          # ... and restore
            np.testing.assert_array_equal(loaded.eval().forward(x), expected)
    finally:
        os.close(fd)
    assert not escaped, f"{len(escaped)} corruptions escaped as other errors: {escaped[:5]}"


def test_save_is_atomic(saved, tmp_path, monkeypatch):
    model, path, original = saved

    def failing_savez(file, *args, **kwargs):
        file.write(b"PK\x03\x04 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", failing_savez)
    with pytest.raises(OSError, match="disk full"):
        model.save(path)
    assert path.read_bytes() == original                     # the old model is untouched
    assert sorted(os.listdir(tmp_path)) == [path.name]       # and no temporary file is left
    with pytest.raises(OSError, match="disk full"):
        model.save(tmp_path / "new.npz")
    assert sorted(os.listdir(tmp_path)) == [path.name]


def test_save_overwrites_an_existing_model(tmp_path):
    path = tmp_path / "m.npz"
    small_cnn(seed=0).save(path)
    second = trained_a_little(small_cnn(seed=1))
    second.save(path)
    assert os.listdir(tmp_path) == ["m.npz"]
    loaded = Sequential.load(path)
    for key, arr in second.state().items():
        np.testing.assert_array_equal(loaded.state()[key], arr)


def test_a_fast_model_and_a_taught_model_share_their_files(tmp_path):
    """Fast layers are saved under their taught twins' names: a file written by either model
    loads into the other, and Sequential.load builds either kind."""
    x = np.random.default_rng(5).standard_normal((3, 1, 28, 28)).astype(np.float32)
    fast_model, taught_model = models.cnn(seed=3), models.cnn(seed=4, fast=False)
    fast_model.save(tmp_path / "fast.npz", note="fast")
    assert [e["type"] for e in json.loads(str(np.load(tmp_path / "fast.npz")["__model__"]))["layers"]][:3] \
        == ["Conv2D", "MaxPool2D", "BatchNorm"]
    taught_model.load_state(tmp_path / "fast.npz")
    with eval_mode(fast_model), eval_mode(taught_model):
        np.testing.assert_allclose(taught_model.forward(x), fast_model.forward(x), rtol=1e-5, atol=1e-6)
    loaded = Sequential.load(tmp_path / "fast.npz")
    assert type(loaded.layers[0]) is Conv2D
    quick = Sequential.load(tmp_path / "fast.npz", fast=True)
    assert type(quick.layers[0]) is FastConv2D and type(quick.layers[8]).__name__ == "FastFlatten"
    assert read_metadata(tmp_path / "fast.npz") == {"note": "fast"}
