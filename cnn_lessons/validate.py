"""The checks constructors and entry points make on their arguments, one call per group.

Each function returns the argument converted (``int``, ``float``, ``numpy.dtype``) or raises a
``ValueError`` whose sentence names ``where`` (a layer, an optimizer, a function), the argument
and what was expected.  They keep the chapters' classes short: a constructor asks for its
sizes, its settings and its dtype in three lines, and nonsense (``Dense(2.7, 3)``,
``BatchNorm(momentum=nan)``, ``kernel_size="33"``) never reaches NumPy.
"""

from __future__ import annotations

import math
import numbers

import numpy as np


def _is_int(value) -> bool:
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_))


def sizes(where: str, minimum: int = 1, **values) -> tuple[int, ...] | int:
    """Integers ``>= minimum`` (sizes, counts), by name: ``sizes("Dense", in_features=3,
    out_features=4) -> (3, 4)``; one value comes back as an int."""
    out = []
    for name, value in values.items():
        if not _is_int(value) or value < minimum:
            raise ValueError(f"{where}: {name} must be an integer >= {minimum}, got {value!r}")
        out.append(int(value))
    return out[0] if len(out) == 1 else tuple(out)


def number(where: str, name: str, value, low=None, high=None, *, low_open=False,
           high_open=False) -> float:
    """A finite real number in ``[low, high]`` (``low_open``/``high_open``: that end excluded)."""
    ok = isinstance(value, (numbers.Real, np.floating, np.integer)) \
        and not isinstance(value, (bool, np.bool_)) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "" if low is None else f"{'(' if low_open else '['}{low}, "
        hi = "" if high is None else f"{high}{')' if high_open else ']'}"
        span = (f" in {lo}{hi}" if low is not None and high is not None
                else f" {'>' if low_open else '>='} {low}" if low is not None
                else f" {'<' if high_open else '<='} {high}" if high is not None else "")
        raise ValueError(f"{where}: {name} must be a finite number{span}, got {value!r}")
    return float(value)


def float_dtype(where: str, dtype) -> np.dtype:
    """A floating-point ``numpy.dtype`` (float32 or float64; float16 overflows too easily)."""
    try:
        out = np.dtype(dtype)
    except TypeError:
        out = None
    if out is None or out.kind != "f" or out.itemsize < 4:
        raise ValueError(f"{where}: dtype must be a floating type (np.float32 or np.float64), "
                         f"got {dtype!r}")
    return out


def rng(where: str, value):
    """A ``numpy.random.Generator``, ``None`` or a non-negative int seed, else an error."""
    if value is None or isinstance(value, (np.random.Generator, np.random.SeedSequence,
                                           np.random.BitGenerator)):
        return value
    if _is_int(value) and value >= 0:
        return value
    raise ValueError(f"{where}: rng must be a numpy.random.Generator, a seed (an integer "
                     f">= 0) or None, got {value!r}")


def pair(where: str, name: str, value, minimum: int) -> tuple[int, int]:
    """``3 -> (3, 3)``; ``(3, 5) -> (3, 5)``; both integers ``>= minimum``.  Strings are refused
    (``"33"`` is not 3)."""
    if _is_int(value):
        out = (value, value)
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        out = tuple(value)
    else:
        out = ()
    if len(out) != 2 or not all(_is_int(v) and v >= minimum for v in out):
        raise ValueError(f"{where}: {name} must be an integer >= {minimum} or a pair of them, "
                         f"got {value!r}")
    return int(out[0]), int(out[1])


def array(where: str, name: str, value, *, finite: bool = False, nonempty: bool = False):
    """``value`` as a real floating-point array (not int, complex, string or object); with
    ``finite`` no NaN or inf, with ``nonempty`` at least one value."""
    value = np.asarray(value)
    if value.dtype.kind != "f":
        raise ValueError(f"{where}: {name} must be a real floating-point array, got dtype "
                         f"{value.dtype}")
    if nonempty and value.size == 0:
        raise ValueError(f"{where}: empty {name} (shape {value.shape}); the mean of an empty "
                         "batch is not a number")
    if finite and not np.isfinite(value).all():
        bad = "NaN" if np.isnan(value).any() else "inf"
        raise ValueError(f"{where}: {bad} in {name} (at index "
                         f"{tuple(int(i) for i in np.argwhere(~np.isfinite(value))[0])}); "
                         "expected finite numbers")
    return value
