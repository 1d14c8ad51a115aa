"""Sequential model: layers applied one after the other, and backpropagation through them.

``forward`` runs the layers in order; ``backward`` runs their ``backward`` in reverse, each
receiving the gradient the next one returned -- the chain rule, one layer at a time.

Saving and loading live in :mod:`cnn_lessons.saving`; the methods here call it.
"""

from __future__ import annotations

import contextlib
import functools
import inspect

import numpy as np

from . import saving
from .validate import sizes
from .saving import FORMAT, ModelFileError, layer_types, read_metadata  # noqa: F401 (its interface)


@contextlib.contextmanager
def eval_mode(model):
    """``with eval_mode(model): ...`` -- evaluation mode inside, the previous mode afterwards.

    For a model with ``layers`` (a :class:`~cnn_lessons.model.Sequential`) each layer's own
    ``training`` flag is put back exactly as it was, even if the block raises.
    """
    layers = getattr(model, "layers", None)
    if layers is not None:
        before = [(layer, layer.training) for layer in layers if hasattr(layer, "training")]
        model.eval()
        try:
            yield model
        finally:
            for layer, flag in before:
                layer.training = flag
    else:
        was_training = getattr(model, "training", False)
        model.eval()
        try:
            yield model
        finally:
            model.train(was_training)


def takes_input_grad(layer) -> bool:
    """Whether ``layer.backward`` accepts ``input_grad`` (``fast.FastConv2D``'s does)."""
    backward = layer.backward
    return _has_input_grad(getattr(backward, "__func__", backward))


@functools.lru_cache(maxsize=256)
def _has_input_grad(function) -> bool:
    # inspect.signature takes tens of microseconds: once per function, not once per step
    return "input_grad" in inspect.signature(function).parameters


class Sequential:
    """``Sequential([layer, layer, ...])``."""

    def __init__(self, layers):
        self.layers = list(layers)
        for i, layer in enumerate(self.layers):
            for attr in ("forward", "backward", "params", "grads"):
                if not hasattr(layer, attr):
                    raise TypeError(f"Sequential: layer {i} ({layer!r}) has no {attr!r}; "
                                    "see the layer protocol in cnn_lessons.layer")

    def __repr__(self):
        inner = ",\n".join(f"    {layer!r}" for layer in self.layers)
        return f"Sequential([\n{inner}\n])"

    def __getitem__(self, i):
        return self.layers[i]

    def __len__(self):
        return len(self.layers)

    # -- running --------------------------------------------------------------------------
    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    __call__ = forward

    def backward(self, dout, input_grad: bool = True):
        """Backpropagate ``dout`` (the loss gradient of the output); returns dL/dx of the input.
        ``input_grad=False`` lets a first layer whose ``backward`` takes ``input_grad`` skip
        the images' gradient, which training never needs (None may then be returned)."""
        if not self.layers:
            return dout
        for layer in reversed(self.layers[1:]):
            dout = layer.backward(dout)
        first = self.layers[0]
        if not input_grad and takes_input_grad(first):
            return first.backward(dout, input_grad=False)
        return first.backward(dout)

    def predict(self, x, batch_size: int = 1000) -> np.ndarray:
        """Class predictions ``(N,)`` in evaluation mode, in batches; restores the mode after.
        An empty batch ``(0, ...)`` has no predictions."""
        batch_size, x = sizes("Sequential.predict", batch_size=batch_size), np.atleast_1d(x)
        with eval_mode(self):
            out = [self.forward(x[i:i + batch_size]).argmax(axis=1)
                   for i in range(0, len(x), batch_size)]
        return np.concatenate(out) if out else np.zeros(0, dtype=np.intp)

    # -- modes and parameters -----------------------------------------------------------
    @property
    def training(self) -> bool:
        return any(getattr(layer, "training", False) for layer in self.layers)

    def train(self, mode: bool = True):
        """Training mode (Dropout drops, BatchNorm uses batch statistics)."""
        for layer in self.layers:
            if hasattr(layer, "training"):
                layer.training = mode
        return self

    def eval(self):
        """Evaluation mode: Dropout is the identity, BatchNorm uses its running statistics."""
        return self.train(False)

    def named_params(self):
        """``[("0.W", array), ...]``: every learnable array with its place in the model."""
        return [(f"{i}.{name}", p) for i, layer in enumerate(self.layers)
                for name, p in layer.params.items()]

    def num_params(self) -> int:
        return sum(p.size for _, p in self.named_params())

    def summary(self, input_shape) -> str:
        """A table of output shape and parameter count per layer, for one input of
        ``input_shape`` (without the batch axis), e.g. ``(1, 28, 28)``."""
        params = next((p for _, p in self.named_params()), np.zeros(0, np.float32))
        x = np.zeros((1, *input_shape), dtype=params.dtype)
        rows = [("layer", "output shape", "params")]
        with eval_mode(self):
            for i, layer in enumerate(self.layers):
                x = layer.forward(x)
                count = sum(p.size for p in layer.params.values())
                shape = "(" + ", ".join(["N", *map(str, x.shape[1:])]) + ")"
                rows.append((f"{i}: {layer!r}", shape, f"{count:,}"))
        rows.append(("total", "", f"{self.num_params():,}"))
        widths = [max(len(r[k]) for r in rows) for k in range(3)]
        lines = [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:>{widths[2]}}" for a, b, c in rows]
        lines.insert(1, "-" * len(lines[0]))
        lines.insert(len(lines) - 1, "-" * len(lines[0]))
        return "\n".join(lines)

    # -- saving and loading: the functions of cnn_lessons.saving, as methods ------------
    spec, state, save, load_state = saving.spec, saving.state, saving.save, saving.load_state

    @classmethod
    def load(cls, path, fast: bool = False) -> "Sequential":
        """Rebuild a saved model (:func:`cnn_lessons.saving.load`)."""
        return saving.load(path, fast=fast, cls=cls)
