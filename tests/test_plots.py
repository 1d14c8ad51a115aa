"""Plots: each returns a Figure holding the data it was given, labelled; save() writes PNGs atomically."""

import os

import matplotlib

matplotlib.use("Agg")          # no display needed (MPLBACKEND=Agg does the same)

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from cnn_lessons import plots  # noqa: E402
from cnn_lessons.activations import ReLU  # noqa: E402
from cnn_lessons.conv import Conv2D  # noqa: E402
from cnn_lessons.flatten import Flatten  # noqa: E402
from cnn_lessons.model import Sequential  # noqa: E402
from cnn_lessons.pooling import MaxPool2D  # noqa: E402
from cnn_lessons.regularization import Dropout  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def image_axes(fig):
    return [ax for ax in fig.axes if ax.images]


# -- learning curves -------------------------------------------------------------------------------

def make_history(epochs=3, per_epoch=40, test=True):
    rng = np.random.default_rng(0)
    steps = list(range(1, epochs * per_epoch + 1))
    history = {
        "batch": {"step": steps, "loss": list(rng.random(len(steps))),
                  "accuracy": list(rng.random(len(steps)))},
        "epoch": {"epoch": list(range(1, epochs + 1)),
                  "train_loss": list(rng.random(epochs)), "train_accuracy": list(rng.random(epochs)),
                  "seconds": [1.0] * epochs},
    }
    if test:
        history["epoch"]["test_loss"] = list(rng.random(epochs))
        history["epoch"]["test_accuracy"] = list(rng.random(epochs))
    return history


def lines_by_label(ax):
    return {line.get_label(): line for line in ax.get_lines()}


def test_moving_average_matches_a_loop():
    values = np.random.default_rng(1).random(17)
    for window in (1, 4, 17):
        expected = [sum(values[i:i + window]) / window for i in range(len(values) - window + 1)]
        np.testing.assert_allclose(plots.moving_average(values, window), expected)


def test_learning_curves_full_history():
    h = make_history()
    fig = plots.learning_curves(h, smooth=5)
    assert isinstance(fig, Figure)
    ax_loss, ax_acc = fig.axes
    assert ax_loss.get_title() == "loss" and ax_acc.get_title() == "accuracy"
    assert ax_loss.get_xlabel() == ax_acc.get_xlabel() == "epoch"
    for ax, key in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        lines = ax.get_lines()
        assert len(lines) == 4                    # raw batches, smoothed, train epochs, test epochs
        raw = lines[0]
        # 120 steps in 3 epochs: step s sits at s / 40 epochs, the last one at epoch 3
        np.testing.assert_allclose(raw.get_xdata(), np.arange(1, 121) / 40)
        np.testing.assert_allclose(raw.get_ydata(), h["batch"][key])
        labelled = lines_by_label(ax)
        smoothed = labelled["train, per batch (mean of 5)"]
        np.testing.assert_allclose(smoothed.get_ydata(), plots.moving_average(h["batch"][key], 5))
        np.testing.assert_allclose(smoothed.get_xdata(), np.arange(5, 121) / 40)
        for split in ("train", "test"):
            line = labelled[f"{split}, per epoch"]
            np.testing.assert_allclose(line.get_xdata(), [1, 2, 3])
            np.testing.assert_allclose(line.get_ydata(), h["epoch"][f"{split}_{key}"])
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert "test, per epoch" in legend


@pytest.mark.parametrize("drop", ["missing", "empty"])
def test_learning_curves_without_test_values(drop):
    h = make_history(test=drop == "empty")
    if drop == "empty":
        h["epoch"]["test_loss"], h["epoch"]["test_accuracy"] = [], []
    fig = plots.learning_curves(h)
    for ax in fig.axes:
        labels = set(lines_by_label(ax))
        assert "train, per epoch" in labels and "test, per epoch" not in labels
        assert len(ax.get_lines()) == 3


def test_learning_curves_with_only_batches_or_only_epochs():
    h = make_history()
    only_batches = plots.learning_curves({"batch": h["batch"]})
    assert [ax.get_xlabel() for ax in only_batches.axes] == ["batch", "batch"]
    np.testing.assert_allclose(only_batches.axes[0].get_lines()[0].get_xdata(), h["batch"]["step"])

    only_epochs = plots.learning_curves({"epoch": h["epoch"]})
    assert [ax.get_xlabel() for ax in only_epochs.axes] == ["epoch", "epoch"]
    assert all(len(ax.get_lines()) == 2 for ax in only_epochs.axes)

    no_accuracy = {"batch": {"step": h["batch"]["step"], "loss": h["batch"]["loss"]}}
    fig = plots.learning_curves(no_accuracy)
    assert len(fig.axes[0].get_lines()) == 2 and len(fig.axes[1].get_lines()) == 0

    with pytest.raises(ValueError, match="neither"):
        plots.learning_curves({})


def test_learning_curves_without_smoothing_draws_one_batch_line():
    h = make_history(epochs=2, per_epoch=10)
    fig = plots.learning_curves(h, smooth=1)
    for ax, key in zip(fig.axes, ("loss", "accuracy")):
        line = lines_by_label(ax)["train, per batch"]
        np.testing.assert_allclose(line.get_ydata(), h["batch"][key])
        assert len(ax.get_lines()) == 3            # batches, train epochs, test epochs


def test_learning_curves_refuses_lists_of_the_wrong_length():
    h = make_history()
    h["batch"]["loss"] = h["batch"]["loss"][:-1]
    with pytest.raises(ValueError, match="batch 'loss' has 119 values but batch 'step' has 120"):
        plots.learning_curves(h)
    h = make_history()
    h["epoch"]["test_accuracy"] = h["epoch"]["test_accuracy"] + [0.5]
    with pytest.raises(ValueError, match="'test_accuracy' has 4 values but epoch 'epoch' has 3"):
        plots.learning_curves(h)


# -- confusion matrix and recall ------------------------------------------------------------------

def test_confusion_matrix_heatmap_shows_every_count():
    cm = np.array([[5, 1, 0], [2, 7, 1], [0, 0, 4]])
    fig = plots.confusion_matrix(cm, class_names=["a", "b", "c"])
    (ax,) = fig.axes
    (image,) = ax.images
    # colour = share of the row (true class)
    np.testing.assert_allclose(image.get_array(), cm / cm.sum(axis=1, keepdims=True))
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    assert len(ax.texts) == 9
    assert cells == {(i, j): str(cm[i, j]) for i in range(3) for j in range(3)}
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b", "c"]
    assert ax.get_xlabel() == "predicted class" and ax.get_ylabel() == "true class"
    assert "confusion matrix" in ax.get_title()


def test_confusion_matrix_plot_bad_input():
    with pytest.raises(ValueError, match=r"square.*\(2, 3\)"):
        plots.confusion_matrix(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="expected 2 class names, got 3"):
        plots.confusion_matrix(np.eye(2), class_names=["a", "b", "c"])


def test_per_class_recall_bars():
    recall = np.array([0.99, 0.5, 1.0, 0.0])
    fig = plots.per_class_recall(recall, class_names=["w", "x", "y", "z"])
    (ax,) = fig.axes
    bars = ax.patches
    assert len(bars) == 4
    np.testing.assert_allclose([b.get_height() for b in bars], recall)
    assert [t.get_text() for t in ax.texts] == ["99.0%", "50.0%", "100.0%", "0.0%"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["w", "x", "y", "z"]
    assert "recall" in ax.get_title() and "mean 62.25%" in ax.get_title()
    assert ax.get_ylabel() == "recall"
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        plots.per_class_recall([0.5, 99.0])
    with pytest.raises(ValueError, match=r"shape \(K,\)"):
        plots.per_class_recall(np.zeros((2, 2)))


# -- misclassified digits -------------------------------------------------------------------------

def test_misclassified_grid_titles_and_images():
    rng = np.random.default_rng(2)
    images = rng.random((30, 1, 28, 28))
    y_true, y_pred = rng.integers(0, 10, 30), rng.integers(0, 10, 30)
    fig = plots.misclassified_grid(images, y_true, y_pred, max_images=25)
    axes = image_axes(fig)
    assert len(axes) == len(fig.axes) == 25
    for i, ax in enumerate(axes):
        assert ax.get_title() == f"true {y_true[i]} / pred {y_pred[i]}"
        np.testing.assert_array_equal(ax.images[0].get_array(), images[i, 0])
    assert "25 of 30" in fig.get_suptitle()


def test_misclassified_grid_accepts_three_dimensional_images_and_none():
    images = np.zeros((3, 28, 28))
    fig = plots.misclassified_grid(images, [7, 1, 2], [1, 7, 3])
    assert [ax.get_title() for ax in image_axes(fig)] == ["true 7 / pred 1", "true 1 / pred 7",
                                                         "true 2 / pred 3"]
    empty = plots.misclassified_grid(np.zeros((0, 1, 28, 28)), [], [])
    assert not image_axes(empty)
    assert "no misclassified" in empty.axes[0].texts[0].get_text()


def test_misclassified_grid_bad_input():
    with pytest.raises(ValueError, match=r"shape \(2,\) for 2 images"):
        plots.misclassified_grid(np.zeros((2, 28, 28)), [1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match=r"\(M, 1, H, W\) or \(M, H, W\)"):
        plots.misclassified_grid(np.zeros((2, 3, 28, 28)), [1, 2], [1, 2])


# -- filters ------------------------------------------------------------------------------------------

def test_filters_grid_with_symmetric_colour_scale():
    W = np.random.default_rng(3).normal(size=(6, 1, 5, 5))
    fig = plots.filters(W)
    axes = image_axes(fig)
    assert len(axes) == 6
    assert len(fig.axes) == 7                        # six filters and one colour bar
    m = np.abs(W).max()
    for i, ax in enumerate(axes):
        assert ax.get_title() == f"filter {i}"
        np.testing.assert_allclose(ax.images[0].get_array(), W[i, 0])
        assert ax.images[0].get_clim() == pytest.approx((-m, m))
    assert "6 first-layer filters" in fig.get_suptitle()


def test_filters_of_several_channels_mean_or_one():
    W = np.random.default_rng(4).normal(size=(3, 2, 3, 3))
    mean = image_axes(plots.filters(W))
    np.testing.assert_allclose(mean[1].images[0].get_array(), (W[1, 0] + W[1, 1]) / 2)
    one = image_axes(plots.filters(W, channel=1))
    np.testing.assert_allclose(one[2].images[0].get_array(), W[2, 1])
    with pytest.raises(ValueError, match=r"channel must lie in \[0, 2\)"):
        plots.filters(W, channel=2)
    with pytest.raises(ValueError, match=r"\(F, C, kh, kw\)"):
        plots.filters(W[0])


# -- feature maps -----------------------------------------------------------------------------------

def tiny_cnn(dropout=False):
    layers = [Conv2D(1, 3, 3, rng=0, dtype=np.float64), ReLU()]
    if dropout:
        layers.append(Dropout(0.5, rng=1))
    layers += [MaxPool2D(2), Flatten()]
    return Sequential(layers)


@pytest.mark.parametrize("training", [True, False])
def test_feature_maps_rows_per_layer_and_training_flag(training):
    model = tiny_cnn(dropout=True).train(training)
    image = np.random.default_rng(5).random((1, 12, 12))
    fig = plots.feature_maps(model, image)
    assert model.training is training
    assert all(layer.training is training for layer in model.layers)

    axes = image_axes(fig)
    assert len(axes) == 1 + 3 + 3                   # the input, then 3 channels of Conv2D and of pool
    assert axes[0].get_title() == "input"
    np.testing.assert_array_equal(axes[0].images[0].get_array(), image[0])
    # expected outputs, computed in evaluation mode (Dropout is the identity there)
    conv = model.layers[0].forward(image[None])[0]                          # (3, 10, 10)
    pooled = model.layers[3].forward(np.maximum(conv, 0)[None])[0]          # (3, 5, 5)
    row_labels = [ax.get_ylabel() for ax in axes if ax.get_ylabel()]
    assert row_labels[1].startswith("0: Conv2D") and "3x10x10" in row_labels[1]
    assert row_labels[2].startswith("3: MaxPool2D") and "3x5x5" in row_labels[2]
    for c in range(3):
        assert axes[1 + c].get_title() == f"channel {c}"
        np.testing.assert_allclose(axes[1 + c].images[0].get_array(), conv[c])
        np.testing.assert_allclose(axes[4 + c].images[0].get_array(), pooled[c])
    assert model.training is training              # the manual forwards above change nothing


def test_feature_maps_chosen_layers_channel_limit_and_2d_image():
    model = tiny_cnn()
    fig = plots.feature_maps(model, np.ones((12, 12)), layers=[1], max_channels=2)
    axes = image_axes(fig)
    assert len(axes) == 1 + 2
    assert axes[1].get_ylabel().startswith("1: ReLU")


def test_feature_maps_bad_input_restores_the_flag():
    model = tiny_cnn().train(True)
    with pytest.raises(ValueError, match=r"layer 3 \(Flatten\(\)\) outputs shape \(1, 75\)"):
        plots.feature_maps(model, np.ones((1, 12, 12)), layers=[3])
    assert model.training
    with pytest.raises(ValueError, match=r"indices in \[0, 4\)"):
        plots.feature_maps(model, np.ones((1, 12, 12)), layers=[4])
    with pytest.raises(ValueError, match=r"one image \(C, H, W\)"):
        plots.feature_maps(model, np.ones((1, 1, 12, 12)))
    with pytest.raises(ValueError, match="no Conv or Pool"):
        plots.feature_maps(Sequential([Flatten()]), np.ones((1, 12, 12)))


# -- saving ---------------------------------------------------------------------------------------------

def small_figure():
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    return fig


def test_save_writes_a_png_into_a_new_folder(tmp_path):
    path = tmp_path / "figures" / "sub" / "curve.png"
    assert plots.save(small_figure(), path) == str(path)
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 100
    assert os.listdir(path.parent) == ["curve.png"]            # no temporary file left behind
    assert path.stat().st_mode & 0o777 == 0o644


def test_save_replaces_atomically_and_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "fig.png"
    path.write_bytes(b"old contents")
    fig = small_figure()

    def broken_savefig(f, **kwargs):
        f.write(b"\x89PNG half written")
        raise RuntimeError("disk full")

    original = fig.savefig
    fig.savefig = broken_savefig
    with pytest.raises(RuntimeError, match="disk full"):
        plots.save(fig, path)
    assert path.read_bytes() == b"old contents"
    assert os.listdir(tmp_path) == ["fig.png"]

    fig.savefig = original
    plots.save(fig, path)
    assert path.read_bytes()[:8] == PNG_SIGNATURE


def test_save_close_closes_the_figure(tmp_path):
    fig = small_figure()
    plots.save(fig, tmp_path / "a.png")
    assert plt.fignum_exists(fig.number)
    plots.save(fig, tmp_path / "b.png", close=True)
    assert not plt.fignum_exists(fig.number)
