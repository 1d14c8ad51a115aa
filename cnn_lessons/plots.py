"""Plots for the book: learning curves, confusion matrices, mistakes, filters and feature maps.

Every function takes data and returns a matplotlib ``Figure``; none calls ``plt.show()``.

- In a notebook the figure appears at the end of the cell.  End the line with ``;`` (or assign
  the result, ``fig = ...``) so that it is not shown a second time as the cell's value.
- In a script, write it with :func:`save` and close it, ``plt.close(fig)`` (or
  ``save(fig, path, close=True)``), so that figures do not pile up in memory.

The module never chooses a matplotlib backend; scripts without a display can set
``MPLBACKEND=Agg``.
"""

from __future__ import annotations

import math
import os

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator, PercentFormatter

from .evaluation import eval_mode
from .files import atomic_write

BOOK_WIDTH = 9.0          # inches: a figure this wide fits the page at a readable font size


def _names(class_names, k: int, where: str) -> list[str]:
    """``k`` class names as strings (default ``"0"``, ``"1"``, ...)."""
    if class_names is None:
        return [str(i) for i in range(k)]
    names = [str(c) for c in class_names]
    if len(names) != k:
        raise ValueError(f"{where}: expected {k} class names, got {len(names)}")
    return names


def _class_ticks(ax, axis: str, names: list[str]) -> None:
    """One tick per class on ``axis`` ("x" or "y"), labelled with its name; names longer than
    a digit or two (Fashion-MNIST's "Ankle boot") are slanted on the x axis so they do not
    overlap."""
    if axis == "y":
        ax.set_yticks(range(len(names)), names)
    elif max(map(len, names)) > 3:
        ax.set_xticks(range(len(names)), names, rotation=40, ha="right",
                      rotation_mode="anchor")
    else:
        ax.set_xticks(range(len(names)), names)


# -- learning curves -----------------------------------------------------------------------------

def moving_average(values, window: int) -> np.ndarray:
    """Mean of each run of ``window`` consecutive values: ``(n,) -> (n - window + 1,)``.

    ``out[i] = mean(values[i : i + window])``, computed with a cumulative sum.
    """
    values = np.asarray(values, dtype=np.float64)
    window = max(1, min(int(window), len(values)))
    csum = np.concatenate([[0.0], np.cumsum(values)])
    return (csum[window:] - csum[:-window]) / window


def learning_curves(history: dict, smooth: int | None = None):
    """Loss (left) and accuracy (right) during training.

    ``history`` as returned by :func:`cnn_lessons.training.train`::

        {"batch": {"step": [...], "loss": [...], "accuracy": [...]},
         "epoch": {"epoch": [1, 2, ...], "train_loss": [...], "train_accuracy": [...],
                   "test_loss": [...], "test_accuracy": [...]}}

    Accuracies are fractions in ``[0, 1]``.  Either part may be missing, and so may the test
    entries (or be empty lists); lists that are there must be as long as ``step`` / ``epoch``.
    Per-batch values are drawn faintly, with their moving average over ``smooth`` batches on top
    (default: about 1/50 of the run); per-epoch values are points at the end of each epoch.  The horizontal axis counts epochs when the epochs are known
    (batch ``step`` ``s`` of a run of ``S`` steps in ``E`` epochs sits at ``s * E / S``),
    batches otherwise.
    """
    batch = history.get("batch") or {}
    epoch = history.get("epoch") or {}
    steps = np.asarray(batch.get("step", []), dtype=np.float64)
    epochs = np.asarray(epoch.get("epoch", []), dtype=np.float64)
    if len(steps) == 0 and len(epochs) == 0:
        raise ValueError("learning_curves: the history has neither 'batch' steps nor 'epoch' "
                         "entries; expected e.g. {'batch': {'step': [...], 'loss': [...]}, ...}")

    if len(epochs):
        xlabel = "epoch"
        batch_x = steps * (epochs[-1] / steps[-1]) if len(steps) and steps[-1] > 0 else steps
    else:
        xlabel = "batch"
        batch_x = steps
    window = max(1, int(smooth) if smooth is not None else len(steps) // 50)

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(BOOK_WIDTH, 3.6), layout="constrained")
    for ax, key, title in ((ax_loss, "loss", "loss"), (ax_acc, "accuracy", "accuracy")):
        values = batch.get(key)
        _check_length(values, steps, f"batch {key!r}", "batch 'step'")
        w = min(window, len(values)) if values is not None else 0
        if w == 1:
            ax.plot(batch_x, values, color="C0", linewidth=1, label="train, per batch")
        elif w > 1:
            ax.plot(batch_x, values, color="C0", alpha=0.25, linewidth=0.8)
            smoothed = moving_average(values, w)                   # (n - w + 1,)
            ax.plot(batch_x[w - 1:], smoothed, color="C0", label=f"train, per batch (mean of {w})")
        for split, color, marker in (("train", "C0", "o"), ("test", "C1", "s")):
            values = epoch.get(f"{split}_{key}")
            _check_length(values, epochs, f"epoch '{split}_{key}'", "epoch 'epoch'")
            if values is not None and len(values):
                ax.plot(epochs, values, linestyle="--" if split == "test" else "none",
                        marker=marker, color=color, label=f"{split}, per epoch")
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
        if len(epochs):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    ax_loss.set_ylabel("loss (cross-entropy)")
    ax_acc.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    return fig


def _check_length(values, reference, name: str, reference_name: str) -> None:
    """Refuse a history list (when present and not empty) that does not match its x values."""
    if values is not None and len(values) and len(values) != len(reference):
        raise ValueError(f"learning_curves: history {name} has {len(values)} values but "
                         f"{reference_name} has {len(reference)}")


# -- how the classifier errs -------------------------------------------------------------------

def confusion_matrix(cm, class_names=None):
    """Heat map of a confusion matrix ``cm (K, K)`` (rows = true class, columns = predicted),
    with the count written in every cell.

    The colour of a cell is its share of the row -- the fraction of the true class that went
    there -- so that the diagonal is dark and the few mistakes stay visible next to it.
    """
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"plots.confusion_matrix: expected a square matrix (K, K), got shape {cm.shape}")
    k = len(cm)
    names = _names(class_names, k, "plots.confusion_matrix")
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)      # (K, K)

    size = min(BOOK_WIDTH * 0.6, 1.2 + 0.5 * k)
    fig, ax = plt.subplots(figsize=(size, size), layout="constrained")
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            color = "white" if share[i, j] > 0.5 else ("0.6" if cm[i, j] == 0 else "black")
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", color=color,
                    fontsize=8 if k > 8 else 10)
    _class_ticks(ax, "x", names)
    _class_ticks(ax, "y", names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title("confusion matrix (colour: share of the true class)")
    return fig


def per_class_recall(recall, class_names=None):
    """Bar chart of ``recall (K,)``: for each class, the fraction of its samples found.

    Each bar carries its value; the title gives the mean over the classes.
    """
    recall = np.asarray(recall, dtype=np.float64)
    if recall.ndim != 1 or len(recall) == 0:
        raise ValueError(f"per_class_recall: expected recall of shape (K,), got {recall.shape}")
    if np.any((recall < 0) | (recall > 1)):
        raise ValueError("per_class_recall: recall values are fractions in [0, 1], "
                         f"got values from {recall.min()} to {recall.max()}")
    k = len(recall)
    names = _names(class_names, k, "per_class_recall")

    fig, ax = plt.subplots(figsize=(min(BOOK_WIDTH, 2 + 0.6 * k), 3.4), layout="constrained")
    bars = ax.bar(range(k), recall, color="C0")
    for bar, r in zip(bars, recall):
        ax.text(bar.get_x() + bar.get_width() / 2, r + 0.01, f"{100 * r:.1f}%",
                ha="center", va="bottom", fontsize=8)
    _class_ticks(ax, "x", names)
    ax.set_ylim(0, 1.1)
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    ax.set_xlabel("class")
    ax.set_ylabel("recall")
    ax.set_title(f"recall per class (mean {100 * recall.mean():.2f}%)")
    return fig


def _as_images(images, where: str) -> np.ndarray:
    """``(M, 1, H, W)`` or ``(M, H, W)`` -> ``(M, H, W)``."""
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.ndim != 3:
        raise ValueError(f"{where}: expected images of shape (M, 1, H, W) or (M, H, W), "
                         f"got {images.shape}")
    return images


def misclassified_grid(images, y_true, y_pred, max_images: int = 25, class_names=None):
    """The first ``max_images`` of the given images in a grid, each titled
    ``"true 7 / pred 1"`` (or with the ``class_names`` of the labels: ``"true Shirt /
    pred T-shirt/top"``, on two lines).

    ``images (M, 1, H, W)`` or ``(M, H, W)``, ``y_true (M,)``, ``y_pred (M,)`` -- typically
    ``x[ev.misclassified]``, ``ev.labels[ev.misclassified]``, ``ev.predictions[ev.misclassified]``
    for an :class:`~cnn_lessons.evaluation.Evaluation` ``ev``.
    """
    images = _as_images(images, "misclassified_grid")
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    m = len(images)
    if y_true.shape != (m,) or y_pred.shape != (m,):
        raise ValueError(f"misclassified_grid: expected y_true and y_pred of shape ({m},) for "
                         f"{m} images, got {y_true.shape} and {y_pred.shape}")
    if int(max_images) < 1:
        raise ValueError(f"misclassified_grid: max_images must be >= 1, got {max_images}")
    if class_names is not None:
        class_names = [str(c) for c in class_names]
        labels = np.concatenate([y_true, y_pred]).astype(np.int64)
        if labels.size and (labels.min() < 0 or labels.max() >= len(class_names)):
            raise ValueError(f"misclassified_grid: labels must lie in [0, {len(class_names)}) "
                             f"to be named by the {len(class_names)} class names, got values "
                             f"from {labels.min()} to {labels.max()}")
    n = min(m, int(max_images))
    if n == 0:
        fig, ax = plt.subplots(figsize=(3, 1.5), layout="constrained")
        ax.text(0.5, 0.5, "no misclassified images", ha="center", va="center")
        ax.set_axis_off()
        return fig

    ncols = math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    row_height = 1.55 if class_names is None else 1.75       # two-line titles
    fig = plt.figure(figsize=(min(BOOK_WIDTH, 1.4 * ncols + 0.4), row_height * nrows + 0.5),
                     layout="constrained")
    for i in range(n):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        ax.imshow(images[i], cmap="gray_r")
        if class_names is None:
            ax.set_title(f"true {y_true[i]} / pred {y_pred[i]}", fontsize=9)
        else:
            ax.set_title(f"true {class_names[y_true[i]]}\npred {class_names[y_pred[i]]}",
                         fontsize=8)
        ax.set_axis_off()
    fig.suptitle(f"{n} of {m} misclassified images" if n < m else f"{m} misclassified images")
    return fig


# -- what the network learned -------------------------------------------------------------------

def filters(W, channel: int | None = None):
    """First-layer filters ``W (F, C, kh, kw)`` as small images, one per filter.

    ``channel=None`` shows the mean over the ``C`` input channels (for a grayscale input,
    ``C = 1``, that is the filter itself); an integer shows that channel.  All filters share one
    colour scale, symmetric around 0: red weights add to the response, blue ones subtract.
    """
    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 4:
        raise ValueError(f"filters: expected weights of shape (F, C, kh, kw), got {W.shape}")
    f, c = W.shape[:2]
    if channel is None:
        shown = W.mean(axis=1)                      # (F, kh, kw)
        what = "mean over input channels" if c > 1 else None
    else:
        if not 0 <= channel < c:
            raise ValueError(f"filters: channel must lie in [0, {c}), got {channel}")
        shown = W[:, channel]
        what = f"input channel {channel}"
    vmax = float(np.abs(shown).max()) or 1.0

    ncols = min(f, 8)
    nrows = math.ceil(f / ncols)
    fig = plt.figure(figsize=(min(BOOK_WIDTH, 1.1 * ncols + 1.2), 1.2 * nrows + 0.6),
                     layout="constrained")
    axes = []
    for i in range(f):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        im = ax.imshow(shown[i], cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        ax.set_title(f"filter {i}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        axes.append(ax)
    fig.colorbar(im, ax=axes, shrink=0.8, label="weight")
    title = f"{f} first-layer filters, {W.shape[2]}x{W.shape[3]}"
    fig.suptitle(f"{title} ({what})" if what else title)
    return fig


def feature_maps(model, image, layers=None, max_channels: int = 8):
    """What one image looks like after each convolution and pooling layer of ``model``.

    ``model``: a :class:`~cnn_lessons.model.Sequential`; ``image (C, H, W)`` (e.g.
    ``(1, 28, 28)``) or ``(H, W)``.  ``layers``: indices into ``model.layers`` to show; by default
    every layer whose class name contains ``"Conv"`` or ``"Pool"``.  The first row is the input;
    then one row per chosen layer, labelled ``"i: Type"`` with its output shape, showing its
    first ``max_channels`` channels on one colour scale per layer.

    The image runs through the model in evaluation mode; the training flags are restored after.
    """
    if not hasattr(model, "layers"):
        raise ValueError(f"feature_maps: expected a Sequential model with .layers, got {type(model).__name__}")
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3:
        raise ValueError(f"feature_maps: expected one image (C, H, W) or (H, W), got shape {image.shape}")
    n_layers = len(model.layers)
    if layers is None:
        layers = [i for i, layer in enumerate(model.layers)
                  if "Conv" in type(layer).__name__ or "Pool" in type(layer).__name__]
        if not layers:
            raise ValueError("feature_maps: the model has no Conv or Pool layer; pass layers=[...]")
    else:
        layers = [int(i) for i in layers]
        bad = [i for i in layers if not 0 <= i < n_layers]
        if bad or not layers:
            raise ValueError(f"feature_maps: layers must be indices in [0, {n_layers}), got {layers}")
    if int(max_channels) < 1:
        raise ValueError(f"feature_maps: max_channels must be >= 1, got {max_channels}")

    outputs = {}                                    # layer index -> (C, H, W)
    x = image[None]                                 # (1, C, H, W): a batch of one
    with eval_mode(model):
        for i in range(max(layers) + 1):
            x = model.layers[i].forward(x)
            if i in layers:
                if x.ndim != 4:
                    raise ValueError(f"feature_maps: layer {i} ({model.layers[i]!r}) outputs shape "
                                     f"{x.shape}, not images (1, C, H, W)")
                outputs[i] = np.array(x[0])

    ncols = min(max_channels, max(o.shape[0] for o in outputs.values()))
    nrows = 1 + len(layers)
    fig = plt.figure(figsize=(min(BOOK_WIDTH, 1.1 * ncols + 1.4), 1.2 * nrows + 0.5),
                     layout="constrained")
    grid = fig.add_gridspec(nrows, ncols)

    ax = fig.add_subplot(grid[0, 0])
    ax.imshow(image[0], cmap="gray_r")
    ax.set_title("input", fontsize=9)
    _label(ax, "x".join(map(str, image.shape)))
    for row, i in enumerate(layers, start=1):
        maps = outputs[i][:max_channels]                            # (c, Ho, Wo)
        lo, hi = float(maps.min()), float(maps.max())
        for ch in range(len(maps)):
            ax = fig.add_subplot(grid[row, ch])
            ax.imshow(maps[ch], cmap="viridis", vmin=lo, vmax=hi)
            ax.set_title(f"channel {ch}", fontsize=8)
            if ch == 0:
                shape = "x".join(map(str, outputs[i].shape))
                _label(ax, f"{i}: {type(model.layers[i]).__name__}\n{shape}")
            else:
                _label(ax, "")
    fig.suptitle("feature maps, layer by layer")
    return fig


def _label(ax, text: str) -> None:
    """No ticks, and ``text`` beside the image (a row label when it is the first column)."""
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_ylabel(text, fontsize=8, rotation=0, ha="right", va="center")


# -- writing figures ------------------------------------------------------------------------------

def save(fig, path, dpi: int = 150, close: bool = False) -> str:
    """Write ``fig`` as a PNG to ``path``, atomically; returns the path.

    The image goes to a temporary file in the same folder first and is renamed into place, so
    ``path`` never holds a half-written figure.  Missing folders are created.  ``close=True``
    closes the figure afterwards (what scripts want).
    """
    path = os.fspath(path)
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=dpi)
    if close:
        plt.close(fig)
    return path
