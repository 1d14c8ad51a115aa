"""Saving and loading a :class:`~cnn_lessons.model.Sequential` (chapter 10).

A model file is an ``.npz`` archive that loads without pickle: the arrays (``"3.W"`` is
``params["W"]`` of layer 3, buffers alike) plus a JSON description of the layers under
``"__model__"``: ``{"format", "layers": [{"type": "Conv2D", "config": {...}}, ...],
"metadata": {...}}``.  Writing goes to a temporary file first and is renamed into place, so an
interrupted save never leaves a half-written model behind.

A layer of :mod:`cnn_lessons.fast` is saved under the name of the taught layer it twins
(``saved_as``): a file holds the numbers, not the speed, and loads into either kind.
"""

from __future__ import annotations

import json
import os

import numpy as np

from .files import atomic_write

FORMAT = "cnn_lessons.Sequential/1"


class ModelFileError(ValueError):
    """A model file that is missing, corrupted or does not match the model."""


def layer_types(fast: bool = False) -> dict[str, type]:
    """The layer classes a saved model may name, by name: the taught ones, or (``fast=True``)
    their fast twins where there is one."""
    from . import activations, conv, dense, fast as fast_module, flatten, pooling, regularization
    classes = {}
    for module in (dense, activations, conv, pooling, flatten, regularization):
        for name in dir(module):
            obj = getattr(module, name)
            if isinstance(obj, type) and hasattr(obj, "forward") and obj.__module__ == module.__name__:
                classes[name] = obj
    if fast:
        classes.update({cls.saved_as: cls for cls in fast_module.LAYERS})
    return classes


def saved_name(layer) -> str:
    """The type name a layer is saved under (a fast layer's taught twin's)."""
    return getattr(type(layer), "saved_as", type(layer).__name__)


def spec(model) -> list[dict]:
    """The layers as JSON-friendly dicts: ``{"type": "Conv2D", "config": {...}}``."""
    return [{"type": saved_name(layer), "config": layer.config()} for layer in model.layers]


def state(model) -> dict[str, np.ndarray]:
    """Every array that defines the trained model: params and buffers, by ``"i.name"``."""
    out = {}
    for i, layer in enumerate(model.layers):
        for name, arr in {**layer.params, **getattr(layer, "buffers", {})}.items():
            out[f"{i}.{name}"] = arr
    return out


def save(model, path, /, **metadata) -> None:
    """Write ``model`` to ``path`` (``.npz``), atomically.  ``metadata`` (JSON-friendly, e.g.
    ``test_accuracy=0.993``) is stored alongside and returned by :func:`read_metadata`."""
    path = os.fspath(path)
    header = json.dumps({"format": FORMAT, "layers": spec(model), "metadata": metadata})
    with atomic_write(path) as f:
        np.savez(f, __model__=np.array(header), **state(model))


def load_state(model, path):
    """Load the arrays of a saved model into ``model``, refusing a file whose layers
    (types and settings) or shapes do not match.  Nothing is changed unless everything matches.
    Returns the model."""
    header, arrays = _read(path)
    saved = [(entry["type"], entry.get("config", {})) for entry in header["layers"]]
    mine = [(layer["type"], layer["config"]) for layer in spec(model)]
    if [t for t, _ in saved] != [t for t, _ in mine]:
        raise ModelFileError(f"{path}: the file holds layers {[t for t, _ in saved]}, "
                             f"this model has {[t for t, _ in mine]}")
    for i, (a, b) in enumerate(zip(saved, mine)):
        if a[1] != b[1]:
            raise ModelFileError(f"{path}: layer {i} ({a[0]}) was saved with settings {a[1]}, "
                                 f"this model's has {b[1]}")
    mine_arrays = state(model)
    if set(arrays) != set(mine_arrays):
        raise ModelFileError(f"{path}: the file holds arrays {sorted(arrays)}, "
                             f"this model has {sorted(mine_arrays)}")
    for key, target in mine_arrays.items():
        if arrays[key].shape != target.shape:
            raise ModelFileError(f"{path}: array {key!r} has shape {arrays[key].shape} in the "
                                 f"file, {target.shape} in the model")
    for key, target in mine_arrays.items():
        target[...] = arrays[key]          # in place: optimizers keep pointing at them
    return model


def load(path, fast: bool = False, cls=None):
    """Rebuild a saved model: its layers from the file's description (the taught layers, or
    with ``fast=True`` their fast twins), then its arrays, in the dtype they were saved in."""
    if cls is None:
        from .model import Sequential as cls
    header, arrays = _read(path)
    types = layer_types(fast)
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
    load_state(model, path)
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
