"""The training loop, the two models and the ``python -m cnn_lessons`` command line.

Everything runs on the MNIST sample shipped with the package (no network), on a few hundred
digits so that the whole file takes seconds.
"""

import json
import subprocess
import sys

import numpy as np
import pytest

from cnn_lessons import SGD, Adam, Conv2D, Dense, Flatten, ReLU, Sequential, models
from cnn_lessons.data import load_mnist
from cnn_lessons.model import read_metadata
from cnn_lessons.training import TrainingDiverged, evaluate_loss_accuracy, lr_at, train


@pytest.fixture(scope="module")
def sample():
    return load_mnist(sample=True)


def small_mlp(seed=0):
    rng = np.random.default_rng(seed)
    return Sequential([Flatten(), Dense(784, 32, rng=rng), ReLU(), Dense(32, 10, rng=rng)])


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "cnn_lessons", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


# -- models ---------------------------------------------------------------------------------

def test_cnn_shapes_and_parameter_count():
    model = models.cnn()
    out = model.forward(np.zeros((2, 1, 28, 28), np.float32))
    assert out.shape == (2, 10) and out.dtype == np.float32
    # counted from the architecture by hand: conv 1->32 3x3 and conv 32->64 3x3 without biases
    # (batch norm follows each), two BatchNorms, dense 64*7*7 -> 128 -> 10
    expected = (32 * 9) + (64 * 32 * 9) + 2 * 32 + 2 * 64 + (3136 * 128 + 128) + (128 * 10 + 10)
    assert model.num_params() == expected == 421_738
    assert [list(layer.params) for layer in model.layers if isinstance(layer, Conv2D)] == [["W"]] * 2


def test_models_are_seeded():
    a, b, c = models.cnn(seed=1), models.cnn(seed=1), models.cnn(seed=2)
    assert all(np.array_equal(p, q) for (_, p), (_, q) in zip(a.named_params(), b.named_params()))
    assert not np.array_equal(a.layers[0].params["W"], c.layers[0].params["W"])


# -- the training loop ----------------------------------------------------------------------

def test_training_learns_and_records_history(sample):
    model = small_mlp()
    x, y = sample.x_train[:640], sample.y_train[:640]
    before = evaluate_loss_accuracy(model, sample.x_test, sample.y_test)
    history = train(model, x, y, epochs=2, batch_size=64, optimizer=Adam(model, lr=3e-3),
                    x_test=sample.x_test, y_test=sample.y_test, progress=False)
    after = evaluate_loss_accuracy(model, sample.x_test, sample.y_test)
    assert after[0] < before[0] and after[1] > 0.75 > before[1]
    assert history["batch"]["step"] == list(range(1, 21))          # 10 batches per epoch
    assert history["epoch"]["epoch"] == [1, 2]
    assert history["epoch"]["test_accuracy"][-1] == pytest.approx(after[1])
    assert len(history["epoch"]["seconds"]) == 2
    # the per-epoch training loss is the size-weighted mean of that epoch's batch losses
    assert history["epoch"]["train_loss"][0] == pytest.approx(np.mean(history["batch"]["loss"][:10]))


def test_training_is_reproducible_with_a_seed(sample):
    x, y = sample.x_train[:256], sample.y_train[:256]
    runs = []
    for _ in range(2):
        model = small_mlp(seed=3)
        h = train(model, x, y, epochs=1, batch_size=32, optimizer=SGD(model, lr=0.1, momentum=0.9),
                  seed=7, progress=False)
        runs.append((h["batch"]["loss"], model.layers[1].params["W"].copy()))
    assert runs[0][0] == runs[1][0]
    assert np.array_equal(runs[0][1], runs[1][1])
    model = small_mlp(seed=3)
    other = train(model, x, y, epochs=1, batch_size=32, optimizer=SGD(model, lr=0.1), seed=8,
                  progress=False)
    assert other["batch"]["loss"] != runs[0][0]


def test_cosine_schedule_is_followed_and_restored(sample):
    model = small_mlp()
    opt = Adam(model, lr=1e-2)
    h = train(model, sample.x_train[:128], sample.y_train[:128], epochs=2, batch_size=32,
              optimizer=opt, lr_schedule="cosine", progress=False)
    expected = [1e-2 * 0.5 * (1 + np.cos(np.pi * (i / 4) / 2)) for i in range(8)]
    assert h["batch"]["lr"] == pytest.approx(expected)
    assert opt.lr == 1e-2
    assert lr_at("step", 1.0, 2.5, 3) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="schedule"):
        lr_at("linear", 1.0, 0, 1)


def test_nan_loss_stops_training_with_the_step(sample):
    model = small_mlp()
    x = sample.x_train[:128].copy()
    x[70] = np.nan                                   # in the third batch of 32, unshuffled order
    with pytest.raises(TrainingDiverged, match=r"step \d+ \(epoch 1\): the loss is nan"):
        train(model, x, sample.y_train[:128], epochs=1, batch_size=32,
              optimizer=Adam(model), progress=False)


def test_non_finite_gradient_names_the_layer(sample):
    class InfGradient(ReLU):
        """Finite forward, but backward hands an infinite gradient to the layer below."""

        def backward(self, dout):
            return super().backward(dout) * np.float32(np.inf)

    rng = np.random.default_rng(0)
    model = Sequential([Flatten(), Dense(784, 16, rng=rng), InfGradient(),
                        Dense(16, 10, rng=rng)])
    with pytest.raises(TrainingDiverged) as err, np.errstate(invalid="ignore"):
        train(model, sample.x_train[:64], sample.y_train[:64], epochs=1, batch_size=64,
              optimizer=SGD(model, lr=0.1), progress=False)
    message = str(err.value)
    assert "step 1 (epoch 1)" in message and "layer 1 Dense(in_features=784" in message


def test_train_refuses_bad_arguments(sample):
    model = small_mlp()
    with pytest.raises(ValueError, match="labels"):
        train(model, sample.x_train[:10], sample.y_train[:9], optimizer=Adam(model))
    with pytest.raises(ValueError, match="epochs"):
        train(model, sample.x_train[:10], sample.y_train[:10], epochs=0, optimizer=Adam(model))


# -- the command line -------------------------------------------------------------------------

def test_cli_train_then_evaluate(tmp_path):
    out, metrics, plots = tmp_path / "m.npz", tmp_path / "metrics.json", tmp_path / "plots"
    r = run_cli("train", "--model", "mlp", "--sample", "--limit", "640", "--epochs", "1",
                "--out", str(out), "--metrics-json", str(metrics), "--no-progress")
    assert r.returncode == 0, r.stderr
    line = [l for l in r.stdout.splitlines() if l.startswith("test accuracy: ")]
    assert len(line) == 1
    accuracy = float(line[0].split()[-1].rstrip("%")) / 100
    data = json.loads(metrics.read_text())
    assert data["test_accuracy"] == pytest.approx(accuracy, abs=5e-5)
    assert data["data"] == "sample" and len(data["seconds_per_epoch"]) == 1
    assert len(data["history"]["batch"]["loss"]) == 10
    assert read_metadata(out)["test_accuracy"] == pytest.approx(data["test_accuracy"])

    r = run_cli("evaluate", str(out), "--sample", "--plots", str(plots))
    assert r.returncode == 0, r.stderr
    assert f"test accuracy: {accuracy:.2%}" in r.stdout               # reproduced from the file
    assert "confusion matrix" in r.stdout
    for name in ("confusion_matrix", "per_class_recall", "misclassified"):
        assert (plots / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (plots / "filters.png").exists()            # an MLP has no filters to draw


def test_cli_evaluate_draws_a_cnns_filters_and_feature_maps(tmp_path, sample):
    model = models.cnn()
    model.save(tmp_path / "cnn.npz", model="cnn")
    r = run_cli("evaluate", str(tmp_path / "cnn.npz"), "--sample", "--plots", str(tmp_path / "p"))
    assert r.returncode == 0, r.stderr
    assert f"test accuracy: {np.mean(model.predict(sample.x_test) == sample.y_test):.2%}" in r.stdout
    for name in ("filters", "feature_maps", "confusion_matrix"):
        assert (tmp_path / "p" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args, message", [
    (["train", "--epochs", "0", "--sample"], "--epochs must be positive"),
    (["train", "--model", "resnet"], "invalid choice"),
    (["train", "--data-dir", "/nonexistent/mnist"], "/nonexistent/mnist"),
    (["evaluate", "/nonexistent/model.npz", "--sample"], "no such model file"),
])
def test_cli_errors_are_one_line_with_exit_code_2(args, message):
    r = run_cli(*args)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr


def test_cli_refuses_a_corrupted_model_file(tmp_path):
    bad = tmp_path / "broken.npz"
    bad.write_bytes(b"PK\x03\x04 this is not a model")
    r = run_cli("evaluate", str(bad), "--sample")
    assert r.returncode == 2
    assert str(bad) in r.stderr and len(r.stderr.strip().splitlines()) == 1
