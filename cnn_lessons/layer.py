"""The layer protocol, and the small base class every layer of the book shares.

A *layer* is any object with

- ``params``: ``dict[str, np.ndarray]`` -- the learnable arrays, by name (``{}`` when none).
  They are the very arrays ``forward`` reads, so an optimizer that updates them in place
  changes the layer.
- ``grads``: ``dict[str, np.ndarray]`` -- after ``backward``, the same keys and shapes as
  ``params``.
- ``forward(x) -> out`` -- batch first; images are ``(N, C, H, W)``.
- ``backward(dout) -> dx`` -- returns dL/dx with the shape of ``x`` and fills ``grads``.
- optionally ``training: bool`` -- Dropout and BatchNorm behave differently when False.

Nothing in the harness (``checks``) needs this base class: a student's layer written from
scratch that follows the protocol is checked the same way.  The class below only gathers the
input checks every layer needs, so that a wrong shape fails with a sentence that names the
layer instead of a numpy broadcasting traceback.
"""

from __future__ import annotations

import numpy as np

from . import validate


class Layer:
    """Base class: empty ``params``/``grads``, a ``training`` flag and input checks."""

    def __init__(self):
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}  # saved with the model, not learned
        self.training = True
        self._cache = None

    # -- the protocol -----------------------------------------------------------------
    def forward(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, dout: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    # -- what a model needs to save and rebuild the layer -------------------------------
    def config(self) -> dict:
        """Constructor arguments that rebuild this layer (JSON-friendly)."""
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    # -- checks shared by all layers ------------------------------------------------------
    def _check_input(self, x, ndim: int | tuple[int, ...], layout: str,
                     sizes: dict[int, int] | None = None) -> np.ndarray:
        """Return ``x`` as an array after checking its ndim, dtype and named sizes.

        ``layout`` is a human-readable shape such as ``"(N, C, H, W)"``; ``sizes`` maps an
        axis index to its required length, e.g. ``{1: in_channels}``.
        """
        if not isinstance(x, np.ndarray):
            x = np.asarray(x)
        ndims = (ndim,) if isinstance(ndim, int) else ndim
        if x.ndim not in ndims:
            raise ValueError(
                f"{self!r}: expected input of shape {layout}, "
                f"got an array with {x.ndim} dimension(s), shape {x.shape}"
            )
        if not np.issubdtype(x.dtype, np.floating):
            raise ValueError(
                f"{self!r}: expected a floating-point input (float32 or float64), "
                f"got dtype {x.dtype}; convert with x.astype(np.float32)"
            )
        for ax, size in (sizes or {}).items():
            if x.shape[ax] != size:
                raise ValueError(
                    f"{self!r}: expected input of shape {layout} with {size} at axis {ax}, "
                    f"got shape {x.shape}"
                )
        return x

    def _saved(self):
        """What ``forward`` saved for ``backward``; refuses a backward no forward preceded."""
        if self._cache is None:
            raise RuntimeError(
                f"{self!r}: backward() was called before forward(); "
                "run forward(x) first so the layer has something to differentiate"
            )
        return self._cache

    def _check_dout(self, dout, expected_shape: tuple[int, ...]) -> np.ndarray:
        """Check that ``dout`` has the shape ``forward`` returned."""
        dout = np.asarray(dout)
        if dout.dtype.kind != "f":              # complex, string, object: not a gradient
            raise ValueError(f"{self!r}: backward() expected a floating-point dout, "
                             f"got dtype {dout.dtype}")
        if dout.shape != tuple(expected_shape):
            raise ValueError(
                f"{self!r}: backward() expected dout of shape {tuple(expected_shape)} "
                f"(the shape forward returned), got {dout.shape}"
            )
        return dout


def as_rng(rng, where: str = "as_rng") -> np.random.Generator:
    """A ``numpy.random.Generator`` from a Generator, a seed or None (anything else is refused,
    naming ``where``)."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(validate.rng(where, rng))


def compact(p: tuple[int, int]):
    """``(3, 3) -> 3``, ``(3, 5) -> [3, 5]``: the shortest JSON-friendly form of a pair."""
    return p[0] if p[0] == p[1] else list(p)


def pair(value, name: str, layer: str, minimum: int = 1) -> tuple[int, int]:
    """``3 -> (3, 3)``; ``(3, 5) -> (3, 5)``; anything else (``"33"``, ``2.5``, a value below
    ``minimum``) is refused by name."""
    return validate.pair(layer, name, value, minimum)
