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
import zipfile

import numpy as np

from .files import atomic_write

FORMAT = "cnn_lessons.Sequential/1"
MAX_UNPACKED = 1 << 30
"""The most bytes a model file's arrays may take once unpacked (1 GiB, some 250 million
float32 numbers): a small compressed file that would unpack into more is refused unread."""


class ModelFileError(ValueError):
    """A model file that is missing, corrupted or does not match the model."""


def layer_types(fast: bool = False) -> dict[str, type]:
    """The layer classes a saved model may name, by name: the taught ones, or (``fast=True``)
    their fast twins where there is one."""
    from . import activations, conv, dense, fast as fast_module, flatten, pooling, regularization
    from .layer import Layer
    classes = {}
    for module in (dense, activations, conv, pooling, flatten, regularization):
        for name in dir(module):
            obj = getattr(module, name)
            if isinstance(obj, type) and hasattr(obj, "forward") and obj.__module__ == module.__name__ \
                    and not name.startswith("_") and obj.forward is not Layer.forward:  # not abstract
                classes[name] = obj
    if fast:
        classes.update({cls.saved_as: cls for cls in fast_module.LAYERS})
    return classes


def saved_name(layer) -> str:
    """The type name a layer is saved under (a fast layer's taught twin's)."""
    return getattr(type(layer), "saved_as", type(layer).__name__)


def spec(model) -> list[dict]:
    """The layers as JSON-friendly dicts: ``{"type": "Conv2D", "config": {...}}`` (a layer that
    follows the protocol without a ``config()`` method has the config ``{}``)."""
    return [{"type": saved_name(layer), "config": layer.config() if hasattr(layer, "config") else {}}
            for layer in model.layers]


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
    header, arrays = _header(model, metadata, path), state(model)
    for key, arr in arrays.items():           # a model that cannot be loaded is not saved
        _check_array(path, key, arr, "the model's", model)
    with atomic_write(path) as f:
        np.savez(f, __model__=np.array(header), **arrays)


def _header(model, metadata, path) -> str:
    """The JSON description of ``model``, refused (:class:`ModelFileError`, with the reason)
    unless reading it back gives the same description: otherwise the file would not load."""
    layers = spec(model)
    for i, entry in enumerate(layers):
        try:
            same = json.loads(json.dumps(entry)) == entry
        except (TypeError, ValueError) as err:
            same, why = False, f"({err})"
        else:
            why = "(tuples become lists, numpy numbers are not JSON)"
        if not same:
            raise ModelFileError(f"{path}: cannot save layer {i} ({entry['type']}): its config() "
                                 f"{entry['config']!r} does not read back from JSON {why}, so the "
                                 "file could not be loaded; return ints, floats, strings and lists")
    try:
        return json.dumps({"format": FORMAT, "layers": layers, "metadata": metadata},
                          allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ModelFileError(f"{path}: the metadata {metadata!r:.200} is not JSON ({err})") from None


def _check_array(path, key, arr, whose, model=None):
    """Refuse an array that is not real floating-point numbers, all finite (a diverged model,
    strings or complex numbers in a file), naming it."""
    layer = int(key.split(".")[0])
    what = f"{path}: {whose} array {key!r}" + (f" (layer {layer}, {model.layers[layer]!r})"
                                              if model is not None else "")
    if arr.dtype.kind != "f":
        raise ModelFileError(f"{what} holds {arr.dtype} values, expected floating-point numbers")
    if not np.isfinite(arr).all():
        raise ModelFileError(f"{what} holds {int((~np.isfinite(arr)).sum())} NaN or infinite "
                             "values (a diverged training?); a model file holds finite numbers")


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
    for key, target in mine_arrays.items():           # every check before the first change
        if arrays[key].shape != target.shape:
            raise ModelFileError(f"{path}: array {key!r} has shape {arrays[key].shape} in the "
                                 f"file, {target.shape} in the model")
        _check_array(path, key, arrays[key], "the file's")
    for key, target in mine_arrays.items():
        target[...] = arrays[key]          # in place: optimizers keep pointing at them
    return model


def declared_shapes(path, i, entry) -> dict[str, tuple[int, ...]]:
    """The shapes of the arrays the layer described by ``entry`` would allocate, computed from
    its config alone (before allocating them); ``{}`` for a type without arrays."""
    from .validate import pair, sizes
    kind, cfg = entry["type"], entry.get("config", {})
    where = f"{path}: layer {i} ({kind})"
    try:
        if kind == "Dense":
            n_in, n_out = sizes(where, in_features=cfg.get("in_features"),
                                out_features=cfg.get("out_features"))
            return {"W": (n_in, n_out), "b": (n_out,)}
        if kind in ("Conv2D", "Conv2DNaive"):
            c, f = sizes(where, in_channels=cfg.get("in_channels"),
                         out_channels=cfg.get("out_channels"))
            kh, kw = pair(where, "kernel_size", cfg.get("kernel_size"), 1)
            return {"W": (f, c, kh, kw), **({"b": (f,)} if cfg.get("bias", True) else {})}
        if kind == "BatchNorm":
            n = sizes(where, num_features=cfg.get("num_features"))
            return {name: (n,) for name in ("gamma", "beta", "running_mean", "running_var")}
    except ValueError as err:
        raise ModelFileError(str(err)) from None
    return {}


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
            raise ModelFileError(f"{path}: layer {i} has unknown type {entry['type']!r}; "
                                 f"known types: {', '.join(sorted(types))}")
        for name, shape in declared_shapes(path, i, entry).items():   # before allocating them
            held = arrays.get(f"{i}.{name}")
            if held is None or held.shape != shape:
                raise ModelFileError(
                    f"{path}: layer {i} ({entry['type']}, {entry.get('config')}) declares "
                    f"{name} of shape {shape}, the file holds "
                    f"{'no such array' if held is None else held.shape}")
    for i, entry in enumerate(header["layers"]):
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
        with open(path, "rb") as f:
            start = f.read(4)
        if start != b"PK\x03\x04":           # an .npz is a zip archive; refuse the rest here,
            raise ValueError(f"it starts with {start!r}, not with the zip signature "  # before
                             "b'PK\\x03\\x04' of an .npz archive")  # numpy speaks of pickle
        # the sizes the members declare, read from the archive's directory: zipfile never
        # inflates a member past its declared size, so this bounds what np.load will unpack
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
        if unpacked > MAX_UNPACKED:
            raise ValueError(f"its arrays would take {unpacked / 2**20:,.0f} MiB unpacked, more "
                             f"than the {MAX_UNPACKED / 2**20:,.0f} MiB a model file may hold")
        data = np.load(path, allow_pickle=False)
        with data:
            arrays = {k: data[k] for k in data.files}
    except Exception as err:  # zipfile, zlib and numpy each raise their own kinds
        reason = ("it holds Python objects (pickled data), which a model file never does"
                  if "pickle" in str(err) else err)
        raise ModelFileError(f"{path}: not a readable .npz model file ({reason})") from None
    try:
        header = json.loads(str(arrays.pop("__model__")))
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise ValueError(f"unknown format {header.get('format') if isinstance(header, dict) else header!r}")
        layers = header.get("layers")
        if not isinstance(layers, list) or not all(
                isinstance(e, dict) and isinstance(e.get("type"), str)
                and isinstance(e.get("config", {}), dict) for e in layers):
            raise ValueError("its 'layers' entry is not a list of {type, config} objects")
        if not isinstance(header.get("metadata", {}), dict):
            raise ValueError("its 'metadata' entry is not a JSON object")
    except (KeyError, ValueError) as err:
        raise ModelFileError(f"{path}: not a cnn_lessons model file ({err})") from None
    return header, arrays
