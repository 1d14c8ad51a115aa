"""Sequential model: layers applied one after the other, and backpropagation through them.

``forward`` runs the layers in order; ``backward`` runs their ``backward`` in reverse, each
receiving the gradient the next one returned -- the chain rule, one layer at a time.

Models are saved as ``.npz`` files that load without pickle: the arrays (``"3.W"`` is
``params["W"]`` of layer 3) plus a JSON description of the layers under ``"__model__"``.
Writing goes to a temporary file first and is renamed into place, so an interrupted save never
leaves a half-written model behind.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import os

import numpy as np

from .files import atomic_write

FORMAT = "cnn_lessons.Sequential/1"


def layer_types() -> dict[str, type]:
    """The layer classes a saved model may name, by class name."""
    from . import activations, conv, dense, flatten, pooling, regularization
    classes = {}
    for module in (dense, activations, conv, pooling, flatten, regularization):
        for name in dir(module):
            obj = getattr(module, name)
            if isinstance(obj, type) and hasattr(obj, "forward") and obj.__module__ == module.__name__:
                classes[name] = obj
    return classes


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


class ModelFileError(ValueError):
    """A model file that is missing, corrupted or does not match the model."""


def takes_input_grad(layer) -> bool:
    """Whether ``layer.backward`` accepts ``input_grad`` (Conv2D and Dense do)."""
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

        ``input_grad=False``: nothing needs the gradient of the input images (training only
        needs the parameters' gradients), so a first layer whose ``backward`` takes an
        ``input_grad`` argument (Conv2D, Dense) skips it, and None may be returned.
        """
        if not self.layers:
            return dout
        for layer in reversed(self.layers[1:]):
            dout = layer.backward(dout)
        first = self.layers[0]
        if not input_grad and takes_input_grad(first):
            return first.backward(dout, input_grad=False)
        return first.backward(dout)

    def predict(self, x, batch_size: int = 1000) -> np.ndarray:
        """Class predictions ``(N,)`` in evaluation mode, in batches; restores the mode after."""
        with eval_mode(self):
            return np.concatenate([self.forward(x[i:i + batch_size]).argmax(axis=1)
                                   for i in range(0, len(x), batch_size)])

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

    # -- saving and loading ---------------------------------------------------------------
    def spec(self) -> list[dict]:
        """The layers as JSON-friendly dicts: ``{"type": "Conv2D", "config": {...}}``."""
        return [{"type": type(layer).__name__, "config": layer.config()} for layer in self.layers]

    def state(self) -> dict[str, np.ndarray]:
        """Every array that defines the trained model: params and buffers, by ``"i.name"``."""
        out = {}
        for i, layer in enumerate(self.layers):
            for name, arr in {**layer.params, **getattr(layer, "buffers", {})}.items():
                out[f"{i}.{name}"] = arr
        return out

    def save(self, path, **metadata) -> None:
        """Write the model to ``path`` (``.npz``), atomically. ``metadata`` (JSON-friendly,
        e.g. ``test_accuracy=0.993``) is stored alongside and returned by :func:`read_metadata`."""
        path = os.fspath(path)
        header = json.dumps({"format": FORMAT, "layers": self.spec(), "metadata": metadata})
        with atomic_write(path) as f:
            np.savez(f, __model__=np.array(header), **self.state())

    def load_state(self, path) -> "Sequential":
        """Load the arrays of a saved model into this one, refusing a file whose layers (types
        and settings) or shapes do not match. Nothing is changed unless everything matches."""
        header, arrays = _read(path)
        saved = [(entry["type"], entry.get("config", {})) for entry in header["layers"]]
        mine = [(layer["type"], layer["config"]) for layer in self.spec()]
        if [t for t, _ in saved] != [t for t, _ in mine]:
            raise ModelFileError(f"{path}: the file holds layers {[t for t, _ in saved]}, "
                                 f"this model has {[t for t, _ in mine]}")
        for i, (a, b) in enumerate(zip(saved, mine)):
            if a[1] != b[1]:
                raise ModelFileError(f"{path}: layer {i} ({a[0]}) was saved with settings {a[1]}, "
                                     f"this model's has {b[1]}")
        state = self.state()
        if set(arrays) != set(state):
            raise ModelFileError(f"{path}: the file holds arrays {sorted(arrays)}, "
                                 f"this model has {sorted(state)}")
        for key, target in state.items():
            if arrays[key].shape != target.shape:
                raise ModelFileError(f"{path}: array {key!r} has shape {arrays[key].shape} in the "
                                     f"file, {target.shape} in the model")
        for key, target in state.items():
            target[...] = arrays[key]          # in place: optimizers keep pointing at them
        return self

    @classmethod
    def load(cls, path) -> "Sequential":
        """Rebuild a saved model (its layers from the file's description, then its arrays,
        in the dtype they were saved in)."""
        header, arrays = _read(path)
        types = layer_types()
        layers = []
        for i, entry in enumerate(header["layers"]):
            if entry["type"] not in types:
                raise ModelFileError(f"{path}: layer {i} has unknown type {entry['type']!r}")
            try:
                layer = types[entry["type"]](**entry.get("config", {}))
            except (TypeError, ValueError) as err:
                raise ModelFileError(f"{path}: cannot rebuild layer {i} ({entry['type']}): {err}") from None
            for store in (layer.params, getattr(layer, "buffers", {})):
                for name, arr in store.items():
                    saved = arrays.get(f"{i}.{name}")
                    if saved is not None and np.issubdtype(saved.dtype, np.floating):
                        store[name] = arr.astype(saved.dtype)
            layers.append(layer)
        model = cls(layers)
        model.load_state(path)
        return model


def read_metadata(path) -> dict:
    """The ``metadata`` a model was saved with."""
    header, _ = _read(path)
    return header.get("metadata", {})


def _read(path):
    """``(header, arrays)`` from a model file, or a :class:`ModelFileError` naming the file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelFileError(f"{path}: no such model file")
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single array, not a model archive")
        with data:
            arrays = {k: data[k] for k in data.files}
    except Exception as err:  # zipfile, zlib and numpy each raise their own kinds
        raise ModelFileError(f"{path}: not a readable .npz model file ({err})") from None
    try:
        header = json.loads(str(arrays.pop("__model__")))
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise ValueError(f"unknown format {header.get('format') if isinstance(header, dict) else header!r}")
        layers = header.get("layers")
        if not isinstance(layers, list) or not all(
                isinstance(e, dict) and isinstance(e.get("type"), str)
                and isinstance(e.get("config", {}), dict) for e in layers):
            raise ValueError("its 'layers' entry is not a list of {type, config} objects")
    except (KeyError, ValueError) as err:
        raise ModelFileError(f"{path}: not a cnn_lessons model file ({err})") from None
    return header, arrays
