"""Tests for benchmarks/speed.py: it runs end to end (with and without PyTorch), and its
translation of a Sequential into PyTorch computes what our layers compute."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cnn_lessons import (AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, Flatten, LeakyReLU,
                         MaxPool2D, ReLU, Sequential, Sigmoid, Softmax, Tanh, models)
from cnn_lessons.layer import Layer

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "speed.py"
QUICK = ["--sample", "--batches", "3", "--fb-batches", "2", "--profile-batches", "2",
         "--naive-images", "2", "--threads", "1"]   # one thread: steady on a shared machine


@pytest.fixture(scope="module")
def speed():
    spec = importlib.util.spec_from_file_location("benchmarks_speed", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_epoch_layout_and_batches(speed):
    # the sample is repeated to the full training set's length; the full set is itself
    assert speed.epoch_layout(5000, 64) == (60000, 938)
    assert speed.epoch_layout(60000, 64) == (60000, 938)
    batches = speed.make_batches(5000, 64, 938 + 2, seed=0)
    sizes = [len(b) for b in batches]
    assert sizes[:937] == [64] * 937 and sizes[937] == 60000 - 937 * 64 and sizes[938:] == [64, 64]
    counts = np.bincount(np.concatenate(batches[:938]), minlength=5000)
    assert (counts == 12).all()                     # 12 shuffled copies of the sample


def test_runs_without_torch(tmp_path):
    """torch made unimportable in a fresh interpreter: the run completes without it."""
    out_json = tmp_path / "speed.json"
    code = ("import runpy, sys; sys.modules['torch'] = None; "
            f"sys.argv = [{str(SCRIPT)!r}] + sys.argv[1:]; "
            f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code, *QUICK, "--json", str(out_json)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "numpy  epoch:" in out and "EXTRAPOLATED from 3 of 938 batches of 64" in out
    assert "torch: not importable" in out and "torch  epoch:" not in out
    for section in ("1. Machine", "OPENBLAS_CORETYPE:", "4. Per-layer time", "6. Summary"):
        assert section in out
    results = json.loads(out_json.read_text())
    assert results["train"]["numpy"]["batches"] == 3
    assert results["train"]["numpy"]["epoch_seconds"] > 0
    assert "torch" not in results["train"] and results["machine"]["torch"] is None
    # one profile row per layer, plus the loss and the optimizer
    assert len(results["profile"]["rows"]) == len(models.cnn().layers) + 2
    shares = [r["share"] for r in results["profile"]["rows"]]
    assert shares == sorted(shares, reverse=True) and abs(sum(shares) - 1) < 1e-9
    assert results["naive_conv"]["max_abs_diff"] < 1e-3
    assert results["naive_conv"]["speedup"] > 0


def test_missing_data_folder_is_a_clear_error(speed, tmp_path, capsys):
    code = speed.main(["--data-dir", str(tmp_path / "nowhere"), "--no-torch", "--batches", "1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "speed.py:" in err and "nowhere" in err and "does not exist" in err


def test_runs_with_torch(speed, capsys, tmp_path):
    torch = pytest.importorskip("torch")
    out_json = tmp_path / "speed.json"
    threads = torch.get_num_threads()
    try:
        assert speed.main([*QUICK, "--json", str(out_json)]) == 0
    finally:
        torch.set_num_threads(threads)             # leave the other tests' PyTorch as it was
    out = capsys.readouterr().out
    for line in ("numpy  epoch:", "torch  epoch:", "ratio numpy/torch (training):",
                 "ratio numpy/torch (forward+backward):"):
        assert line in out
    results = json.loads(out_json.read_text())
    train = results["train"]
    assert train["torch"]["batches"] == 3 and len(train["torch"]["batch_seconds"]) == 3
    # the summary's figures follow from the recorded batch times
    for side in ("numpy", "torch"):
        median = float(np.median(train[side]["batch_seconds"]))
        assert train[side]["epoch_seconds"] == pytest.approx(median * 938, rel=1e-3)
    assert results["ratio_numpy_over_torch"]["training"] == pytest.approx(
        train["numpy"]["epoch_seconds"] / train["torch"]["epoch_seconds"])
    check = results["cross_check"]
    assert check["forward_eval_max_abs_diff"] < 1e-4
    assert check["float64_forward_train_max_abs_diff"] < 1e-10
    assert max(check["float64_grad_max_rel_diff"].values()) < 1e-8


def every_layer_model(rng):
    """A float64 Sequential using every layer type the translation knows, with non-default
    settings, and BatchNorm running statistics that are not the identity."""
    f64 = np.float64
    model = Sequential([
        Conv2D(2, 4, (3, 2), stride=2, padding=1, rng=rng, dtype=f64),     # (N, 4, 5, 5)
        BatchNorm(4, eps=1e-3, momentum=0.3, dtype=f64), LeakyReLU(0.2),
        AvgPool2D(2, stride=1),                                              # (N, 4, 4, 4)
        Conv2D(4, 3, 2, bias=False, rng=rng, dtype=f64), Tanh(),             # (N, 3, 3, 3)
        MaxPool2D(2, stride=1),                                              # (N, 3, 2, 2)
        Flatten(), Dense(12, 6, rng=rng, dtype=f64),
        BatchNorm(6, eps=1e-4, momentum=0.2, dtype=f64), Sigmoid(), Dropout(0.3, rng=rng),
        Dense(6, 5, rng=rng, dtype=f64), ReLU(), Dense(5, 3, rng=rng, dtype=f64), Softmax(),
    ])
    for layer in model.layers:
        if isinstance(layer, BatchNorm):
            layer.buffers["running_mean"][...] = rng.standard_normal(layer.num_features)
            layer.buffers["running_var"][...] = rng.uniform(0.5, 2.0, layer.num_features)
    return model


def test_translation_computes_the_same(speed):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    model = every_layer_model(rng)
    x = rng.standard_normal((5, 2, 9, 8))
    net, links = speed.to_torch(model, x.shape[1:])
    assert [type(m).__name__ for m in net][:2] == ["Conv2d", "BatchNorm2d"]
    assert type(net[9]).__name__ == "BatchNorm1d"
    # evaluation mode: running statistics and weights were copied
    model.eval()
    net.eval()
    with torch.no_grad():
        np.testing.assert_allclose(net(torch.from_numpy(x)).numpy(), model.forward(x),
                                   rtol=1e-12, atol=1e-13)
    # training mode without dropout: batch statistics, the same running-statistic updates
    # (eps and momentum carried over) and the same gradients
    speed._without_dropout(model, net)
    out = model.forward(x)
    dout = rng.standard_normal(out.shape)
    model.backward(dout)
    t_out = net(torch.from_numpy(x))
    t_out.backward(torch.from_numpy(dout))
    np.testing.assert_allclose(t_out.detach().numpy(), out, rtol=1e-12, atol=1e-13)
    assert len(links) == 2 * 5 - 1 + 4 * 2          # 5 Conv2D/Dense (W, b; one without b),
    assert type(net[4]).__name__ == "Conv2d" and net[4].bias is None   # 2 BatchNorms
    for layer, key, tensor, transpose in links:
        if key in layer.params:
            ours, theirs = layer.grads[key], tensor.grad.numpy()
        else:
            ours, theirs = layer.buffers[key], tensor.numpy()
        np.testing.assert_allclose(ours, theirs.T if transpose else theirs,
                                   rtol=1e-10, atol=1e-12, err_msg=f"{layer!r} {key}")


def test_cross_check_on_the_book_cnn(speed):
    pytest.importorskip("torch")
    model = models.cnn(seed=1)
    net, _ = speed.to_torch(model, (1, 28, 28))
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (8, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 8)
    state = {k: v.copy() for k, v in model.state().items()}
    check = speed.cross_check(model, net, (1, 28, 28), x, y)
    assert check["forward_eval_max_abs_diff"] < 1e-4
    assert max(check["float64_grad_max_rel_diff"].values()) < 1e-8
    for key, value in model.state().items():            # the benchmarked model is untouched
        np.testing.assert_array_equal(value, state[key])


def test_untranslatable_layer_is_refused(speed):
    pytest.importorskip("torch")

    class Square(Layer):
        def forward(self, x):
            return x * x

    with pytest.raises(ValueError, match=r"layer 1 Square\(\).*no PyTorch translation"):
        speed.to_torch(Sequential([Flatten(), Square()]), (1, 2, 2))
