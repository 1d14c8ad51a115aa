"""The training loop: epochs of shuffled mini-batches, forward, loss, backward, step.

One step on a batch ``xb (B, ...)``, ``yb (B,)``::

    logits = model.forward(xb)            # (B, K)
    loss   = loss_fn.forward(logits, yb)  # float, mean over the batch
    model.backward(loss_fn.backward())    # fills every layer's grads
    optimizer.step()                      # updates every layer's params in place

Everything else here is bookkeeping: a seeded shuffle (the same seed gives the same run), a
progress bar, a history of loss and accuracy per batch and per epoch, and a guard that stops
training with a clear message as soon as a loss or a gradient stops being a finite number.
On a machine with several cores the forward and backward passes of each batch are split over
as many processes (:mod:`cnn_lessons.parallel`); the numbers are the same up to rounding.
"""

from __future__ import annotations

import contextlib
import time

import numpy as np

from . import fast, parallel
from .evaluation import evaluate
from .layer import as_rng
from .losses import SoftmaxCrossEntropy
from .validate import sizes


class TrainingDiverged(RuntimeError):
    """The loss or a gradient became NaN or infinite."""


def _arrays(layer) -> dict:
    return {**layer.params, **getattr(layer, "buffers", {})}


def blame(model, xb, rows=None) -> str:
    """Where the first non-finite number of a forward pass of ``xb`` came from: the data (a
    NaN pixel), a weight or running statistic, or the first layer whose output is not finite
    although its input is.  The pass is replayed layer by layer; buffers are put back.
    ``rows``: the indices of the batch's examples in the training set, for the message."""
    bad = ~np.isfinite(xb)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        which = (f"example {int(rows[index[0]])} of x_train" if rows is not None
                 else f"example {index[0]} of the batch")
        return (f"it comes from the data: {which} holds {xb[index]} at {index[1:]} (a NaN or "
                "infinite pixel); check the images")
    for i, layer in enumerate(model.layers):
        for name, arr in _arrays(layer).items():
            if not np.isfinite(arr).all():
                return (f"it comes from a weight: layer {i} {layer!r} holds non-finite values "
                        f"in {name!r} (an update overflowed: lower the learning rate)")
    saved = [{k: v.copy() for k, v in getattr(layer, "buffers", {}).items()}
             for layer in model.layers]
    try:
        x = xb
        with np.errstate(all="ignore"):
            for i, layer in enumerate(model.layers):
                x = layer.forward(x)
                if not np.isfinite(x).all():
                    return (f"it appears in the output of layer {i} {layer!r}, whose input and "
                            "weights are finite (values too large: lower the learning rate)")
    except Exception:                    # a layer that refuses its input: no verdict
        return "its origin could not be traced"
    finally:
        for layer, buffers in zip(model.layers, saved):
            for k, v in buffers.items():
                layer.buffers[k][...] = v
    return ("every layer's output is finite: the loss itself overflowed (check its numerical "
            "stability)")


def _check_output(model, xb, logits, step: int, epoch: int, rows=None):
    """Stop before the loss when the network's output is not finite, saying where it began."""
    if not np.isfinite(logits).all():
        what = "nan" if np.isnan(logits).any() else "not finite"
        raise TrainingDiverged(f"step {step} (epoch {epoch}): the loss is {what}, the "
                               f"network's output holds non-finite values; {blame(model, xb, rows)}")


def _check_finite(model, loss: float, step: int, epoch: int, xb=None):
    """Stop at the first non-finite number, naming the step and the layer where it appeared."""
    where = f"step {step} (epoch {epoch})"
    if not np.isfinite(loss):
        origin = "" if xb is None else f"; {blame(model, xb)}"
        raise TrainingDiverged(f"{where}: the loss is {loss}{origin}; lower the learning rate "
                               "or check the initialisation and the loss's numerical stability")
    bad = [(i, name) for i, layer in enumerate(model.layers)
           for name, g in layer.grads.items() if not np.isfinite(g).all()]
    if bad:
        # backpropagation runs from the last layer to the first, and a NaN spreads downwards:
        # the highest layer hit is where it appeared
        i, name = bad[-1]
        layers = sorted({j for j, _ in bad})
        raise TrainingDiverged(f"{where}: layer {i} {model.layers[i]!r} has a non-finite gradient "
                               f"grads[{name!r}] (the first one backpropagation met; layers "
                               f"{layers} are affected)")
    _check_weights(model, where, params=False)


def _check_weights(model, where: str, params: bool = True):
    """Stop when a running statistic (or, with ``params``, a parameter) is not finite: batch
    norm's running variance can overflow while the normalised outputs stay finite."""
    for i, layer in enumerate(model.layers):
        for name, arr in (_arrays(layer) if params else getattr(layer, "buffers", {})).items():
            if not np.isfinite(arr).all():
                raise TrainingDiverged(f"{where}: layer {i} {layer!r} holds non-finite values "
                                       f"in {name!r}; lower the learning rate")


def lr_at(schedule, base_lr: float, epoch_fraction: float, epochs: int) -> float:
    """Learning rate at ``epoch_fraction`` (0 at the start, ``epochs`` at the end).

    ``None``: constant. ``"cosine"``: from ``base_lr`` down to 0 along half a cosine.
    ``"step"``: divided by 10 for the last epoch.
    """
    if schedule is None or schedule == "constant":
        return base_lr
    if schedule == "cosine":
        return base_lr * 0.5 * (1 + np.cos(np.pi * epoch_fraction / epochs))
    if schedule == "step":
        return base_lr * (0.1 if epoch_fraction >= epochs - 1 and epochs > 1 else 1.0)
    raise ValueError(f"unknown learning-rate schedule {schedule!r}; use None, 'cosine' or 'step'")


EVAL_BATCH = 1000
"""Inputs per forward pass when the model is evaluated after each epoch."""


def evaluate_loss_accuracy(model, x, y, loss_fn=None, batch_size: int = EVAL_BATCH):
    """Mean loss and accuracy of ``model`` on ``x (N, ...)``, ``y (N,)``, in evaluation mode
    (:func:`cnn_lessons.evaluation.evaluate`, reduced to the two numbers training records)."""
    ev = evaluate(model, x, y, batch_size=batch_size, loss=loss_fn)
    return ev.loss, ev.accuracy


def train(model, x_train, y_train, *, epochs: int = 1, batch_size: int = 64, optimizer,
          loss_fn=None, x_test=None, y_test=None, seed=0, lr_schedule=None,
          progress: bool = True, check_finite: bool = True, callback=None,
          cores: int | None = None) -> dict:
    """Train ``model`` and return its history.

    ``x_train (N, ...)``, ``y_train (N,)`` integer labels; ``optimizer`` built on ``model``;
    ``loss_fn`` defaults to :class:`SoftmaxCrossEntropy`.  When ``x_test``/``y_test`` are given
    the model is evaluated on them after every epoch.  ``lr_schedule``: see :func:`lr_at`.
    ``cores``: how many cores to train on (default: every core this process may use, see
    :func:`cnn_lessons.parallel.cores`).  With more than one, each batch is cut into parts
    trained side by side in as many processes by :class:`cnn_lessons.parallel.DataParallel`
    (the same numbers up to rounding); a model it cannot replicate trains in this process.

    Returns ``{"batch": {"step", "loss", "accuracy", "lr"}, "epoch": {"epoch", "train_loss",
    "train_accuracy", "test_loss", "test_accuracy", "seconds"}}``, lists of numbers.
    """
    if len(x_train) != len(y_train):
        raise ValueError(f"train: {len(x_train)} training inputs but {len(y_train)} labels")
    if len(x_train) == 0:
        raise ValueError("train: no training examples (x_train is empty)")
    epochs, batch_size = sizes("train", epochs=epochs, batch_size=batch_size)
    if not hasattr(optimizer, "step") or not hasattr(optimizer, "lr"):
        raise ValueError(f"train: optimizer must be an optimizer built on the model (such as "
                         f"Adam(model)), got {optimizer!r:.80}")
    loss_fn = loss_fn or SoftmaxCrossEntropy()
    rng = as_rng(seed)
    n = len(x_train)
    batches_per_epoch = -(-n // batch_size)
    base_lr = optimizer.lr
    history = {"batch": {"step": [], "loss": [], "accuracy": [], "lr": []},
               "epoch": {"epoch": [], "train_loss": [], "train_accuracy": [],
                         "test_loss": [], "test_accuracy": [], "seconds": []}}
    model.train()
    cores = parallel.cores() if cores is None else int(cores)
    if cores < 1:
        raise ValueError(f"train: cores must be >= 1, got {cores}")
    # Several cores: each batch is cut into parts trained side by side, one process per core,
    # each doing its matrix products on its own core (see parallel.py).
    runner = None
    if cores > 1 and batch_size > 1 and parallel.why_not(model) is None:
        runner = parallel.DataParallel(model, max(batch_size, EVAL_BATCH),
                                       np.shape(x_train)[1:], cores,
                                       dtype=np.asarray(x_train[:1]).dtype, optimizer=optimizer)
    net = model if runner is None else runner
    # with a shareable optimizer, each process updates its share of the parameters; in one
    # process, the optimizer's fast twin (the same numbers, block by block) steps
    apply_step = runner.step if runner is not None and runner.optimizer is not None \
        else fast.twin(optimizer).step
    step = 0

    def one_epoch(epoch, order, bar):
        nonlocal step
        seen = correct = 0
        loss_sum = 0.0
        for b in range(batches_per_epoch):
            idx = order[b * batch_size:(b + 1) * batch_size]
            xb, yb = x_train[idx], y_train[idx]
            optimizer.lr = lr_at(lr_schedule, base_lr, epoch - 1 + b / batches_per_epoch, epochs)
            logits = net.forward(xb)
            if check_finite:
                _check_output(model, xb, logits, step + 1, epoch, idx)
            loss = loss_fn.forward(logits, yb)
            net.backward(loss_fn.backward(), input_grad=False)   # no gradient of the images
            step += 1
            if check_finite:
                _check_finite(model, loss, step, epoch, xb)
            apply_step()
            hits = int((logits.argmax(axis=1) == yb).sum())
            seen += len(yb)
            correct += hits
            loss_sum += loss * len(yb)
            h = history["batch"]
            h["step"].append(step)
            h["loss"].append(loss)
            h["accuracy"].append(hits / len(yb))
            h["lr"].append(optimizer.lr)
            if bar is not None:
                bar.update(1)
                if b % 20 == 0 or b == batches_per_epoch - 1:
                    bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.2%}")
            if callback is not None:
                callback(step, loss)
        return loss_sum / seen, correct / seen

    evaluator = net if runner is None or x_test is None or runner.accepts(x_test) else model
    try:
        # one BLAS thread per process while the processes work (see parallel.py)
        with parallel.blas_threads(1) if runner is not None else contextlib.nullcontext():
            for epoch in range(1, epochs + 1):
                start = time.perf_counter()
                order = rng.permutation(n)
                bar = _progress(batches_per_epoch, f"epoch {epoch}/{epochs}", progress)
                train_loss, train_acc = one_epoch(epoch, order, bar)
                seconds = time.perf_counter() - start
                e = history["epoch"]
                e["epoch"].append(epoch)
                e["train_loss"].append(train_loss)
                e["train_accuracy"].append(train_acc)
                e["seconds"].append(seconds)
                if check_finite:            # the last step's update, before anyone saves it
                    _check_weights(model, f"after epoch {epoch}")
                if x_test is not None:
                    test_loss, test_acc = evaluate_loss_accuracy(evaluator, x_test, y_test,
                                                                 loss_fn, EVAL_BATCH)
                    e["test_loss"].append(test_loss)
                    e["test_accuracy"].append(test_acc)
                if bar is not None:
                    post = {"loss": f"{train_loss:.4f}", "acc": f"{train_acc:.2%}"}
                    if x_test is not None:
                        post["test_acc"] = f"{e['test_accuracy'][-1]:.2%}"
                    bar.set_postfix(post)
                    bar.close()
    finally:
        if runner is not None:
            runner.close()
    optimizer.lr = base_lr
    return history


def _progress(total: int, desc: str, enabled: bool):
    """A tqdm bar (written to stdout, so it shows in the book without counting as stderr)."""
    if not enabled:
        return None
    import sys

    from tqdm import tqdm  # the text bar: renders offline in the book too
    return tqdm(total=total, desc=desc, file=sys.stdout, leave=True, mininterval=1.0)
