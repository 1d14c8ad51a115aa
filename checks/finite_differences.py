"""Finite-difference gradient check for any object that follows the layer protocol.

The recipe.  Draw a random upstream gradient ``G`` shaped like the output (seeded normal numbers,
never all ones: a constant ``G`` hides bugs in softmax and batch norm, whose gradients sum to zero
along a row) and look at the scalar

    L = sum(forward(x) * G)          so that    dL/dout = G.

``backward(G)`` claims dL/dx and dL/dp for every ``p`` in ``params``.  Finite differences measure
them: nudge one coordinate by ``+h`` and ``-h``, and

    numerical = (L(+h) - L(-h)) / 2h.

Everything runs in float64 on a copy of the layer (:func:`to_float64`): in float32 the rounding
error of ``L`` divided by ``h`` would swamp the comparison, and a float32 layer must not fail for
being float32.  Every ``L`` is computed on a fresh copy of that float64 snapshot, so Dropout draws
the same mask each time and BatchNorm's running averages do not drift between evaluations.

Relative error, per coordinate (``a`` from backward, ``n`` numerical)::

    |a - n| / max(|a|, |n|, FLOOR)

The floor keeps coordinates whose true gradient is (close to) zero from dividing rounding noise
by almost nothing.  The check passes when every compared coordinate has an error below ``rtol``
(1e-7 by default; correct layers give about 1e-10).

Kinks.  ReLU at 0 and a window with two equal maxima have no derivative: the two one-sided
differences ``(L(+h) - L(0)) / h`` and ``(L(0) - L(-h)) / h`` disagree by a jump, where a smooth
function lets them differ only by ``h * L''`` (tiny).  Such coordinates are skipped and counted;
when they are more than half of a tensor's compared coordinates, the tensor fails -- a check made
mostly of skips proves nothing.

Ties.  Nudging one of two tied maxima alone is always a kink, so coordinate-by-coordinate checks
can never see a max-pool that sends the gradient to *every* tied input.  Moving all inputs
together can: along the all-ones direction ties stay tied, and ``L`` stays smooth.  Each tensor is
therefore also checked along two directions: a random one (which also covers the coordinates a
sample left out) and all-ones, comparing ``sum(a * v)`` with the directional difference.
"""

from __future__ import annotations

import copy
import math

import numpy as np

from .protocol import protocol_checks
from .report import Report, error_text, layer_name

FLOOR = 1e-2   # relative errors never divide by less than 1% of the tensor's largest entry
KINK = 1e-3    # one-sided differences further apart than this (relatively): a kink
SALT = 0x6A7D  # mixed into the seed (see gradcheck)


def to_float64(layer):
    """A deep copy of ``layer`` in which every floating array is a float64 copy.

    Arrays are found in the layer's attributes, inside dicts, lists and tuples, and inside
    nested layers.  An array reachable twice (an attribute that *is* ``params["W"]``) becomes one
    float64 array reachable twice, so the copy keeps the layer's aliasing.
    """
    layer = copy.deepcopy(layer)
    _upcast(layer, {}, top=True)
    return layer


def _upcast(obj, memo, top=False):
    if id(obj) in memo:
        return memo[id(obj)][1]
    new = obj
    if isinstance(obj, np.ndarray):
        if np.issubdtype(obj.dtype, np.floating):
            new = obj.astype(np.float64)
    elif isinstance(obj, dict):
        for key in obj:
            obj[key] = _upcast(obj[key], memo)
    elif isinstance(obj, list):
        obj[:] = [_upcast(item, memo) for item in obj]
    elif isinstance(obj, tuple):
        new = tuple(_upcast(item, memo) for item in obj)
    elif (top or hasattr(obj, "forward")) and hasattr(obj, "__dict__"):
        for key, value in vars(obj).items():
            vars(obj)[key] = _upcast(value, memo)
    memo[id(obj)] = (obj, new)    # keep obj alive: its id must not be reused by a new object
    return new


def loss_terms(snapshot, x, G):
    """``terms(target, value)``: the terms of ``L = sum(forward(x) * G)``, an array shaped like
    the output, computed on a fresh copy of ``snapshot`` with ``x`` (target ``"x"``) or
    ``params[target]`` (in place, as an optimizer updates it) replaced by ``value``."""

    def terms(target=None, value=None):
        layer = copy.deepcopy(snapshot)
        x_in = x.copy()
        if target == "x":
            x_in = value.copy()
        elif target is not None:
            layer.params[target][...] = value
        return np.asarray(layer.forward(x_in), dtype=np.float64) * G

    return terms


def difference(terms_a, terms_b) -> float:
    """``L_a - L_b``, subtracting term by term before summing exactly (``math.fsum``).

    Summing first would round each ``L`` to 1e-16 of its size, an error that dividing by ``h``
    turns into 1e-10 of ``|L|`` -- as large as the gradient of a small coordinate.  Term by
    term, the outputs the nudge did not move cancel exactly.
    """
    return math.fsum((terms_a - terms_b).ravel().tolist())


def directional_difference(terms, target, base, v, h, terms0, floor):
    """``(numerical derivative of L along w, w, is there a kink within h)``.

    ``w`` is ``v`` as the computer really moved: ``base + h v`` is rounded to the nearest float,
    by up to 1e-16 * |base|, which is 1e-10 of the step ``h`` -- the size of a correct layer's
    error.  Comparing ``a . w`` instead of ``a . v`` removes it.
    """
    up, down = base + h * v, base - h * v
    w = (up - down) / (2 * h)
    plus, minus = terms(target, up), terms(target, down)
    right, left = difference(plus, terms0) / h, difference(terms0, minus) / h
    kink = abs(right - left) > KINK * max(abs(right), abs(left), floor)
    return difference(plus, minus) / (2 * h), w, kink


def gradcheck(layer, x, *, seed: int = 0, h: float = 1e-6, rtol: float = 1e-7,
              max_coords: int = 40) -> Report:
    """Check ``layer.backward`` against finite differences, plus the protocol checks.

    ``x``: an input the layer accepts, e.g. ``(N, C, H, W)``.  Tensors with at most
    ``max_coords`` entries are compared coordinate by coordinate in full; larger ones on a seeded
    sample of ``max_coords`` coordinates (each tensor gets its own), and every tensor along a
    random and the all-ones direction.  Returns a :class:`~checks.report.Report`; never raises.
    """
    report = Report(layer_name(layer))
    try:
        snapshot = to_float64(layer)
        x64 = np.array(x, dtype=np.float64)
    except Exception as err:
        report.add("float64 copy", False, f"could not copy the layer or x: {error_text(err)}")
        return report
    # a stream of its own: with default_rng(seed), an x drawn with the same seed would equal G
    rng = np.random.default_rng([seed, SALT])
    try:
        probe = copy.deepcopy(snapshot)
        out = np.asarray(probe.forward(x64.copy()))
        G = rng.standard_normal(out.shape)
        dx = probe.backward(G.copy())
        for attr in ("params", "grads"):
            if not isinstance(getattr(probe, attr, None), dict):
                raise TypeError(f"the layer has no {attr!r} dict (the protocol asks for one, "
                                "empty when the layer learns nothing)")
        grads = dict(probe.grads)
    except Exception as err:
        report.add("forward/backward run", False, error_text(err))
        return report
    report.add("forward/backward run", True, f"output {out.shape}")

    protocol_checks(report, snapshot, x64, G, dx, grads)

    terms = loss_terms(snapshot, x64, G)
    terms0 = terms()
    tensors = [("x", "dL/dx", dx, x64)]
    tensors += [(name, f"dL/d{name}", grads.get(name), p) for name, p in snapshot.params.items()]
    for target, check, analytic, base in tensors:
        _check_tensor(report, check, terms, terms0, target, analytic, base, rng, h, rtol, max_coords)
    return report


def _check_tensor(report, check, terms, terms0, target, analytic, base, rng, h, rtol, max_coords):
    """Add one row comparing ``analytic`` (what backward said) with finite differences."""
    what = "backward's return value" if target == "x" else f"grads[{target!r}]"
    shape = base.shape
    if analytic is None or np.shape(analytic) != shape:
        got = "nothing" if analytic is None else f"shape {np.shape(analytic)}"
        report.add(check, False, f"cannot compare: {what} is {got}, expected shape {shape}")
        return
    analytic = np.asarray(analytic, dtype=np.float64)
    size = analytic.size
    if size <= max_coords:
        flat, sampled = np.arange(size), f"all {size} coordinates"
    else:
        flat = np.sort(rng.choice(size, max_coords, replace=False))
        sampled = f"{max_coords} of {size} coordinates (seeded sample)"
    coords = [tuple(int(i) for i in np.unravel_index(i, shape)) for i in flat]
    directions = [(f"at {target}{list(index)}", np.eye(1, size, i).reshape(shape))
                  for i, index in zip(flat, coords)]
    directions += [("along a random direction", rng.standard_normal(shape)),
                   ("along the all-ones direction", np.ones(shape))]
    floor = FLOOR * np.max(np.abs(analytic), initial=0.0)
    worst, where, kinks, coord_kinks = 0.0, "", 0, 0
    try:
        for k, (label, v) in enumerate(directions):
            numerical, w, kink = directional_difference(terms, target, base, v, h, terms0, floor)
            if kink:
                kinks += 1
                coord_kinks += k < len(flat)
                continue
            a = float(np.sum(analytic * w))
            # (along a direction, a is a sum, known only to the size of its terms)
            scale = max(abs(a), abs(numerical), np.sum(np.abs(analytic * w)), floor)
            err = abs(a - numerical) / scale if scale > 0 else 0.0
            if not err <= worst:                     # "not <=" also catches NaN
                worst, where = err, f"{label}: backward {a:.6g}, numerical {numerical:.6g}"
    except Exception as err:
        report.add(check, False, f"forward failed during finite differences: {error_text(err)}")
        return
    numbers = dict(max_rel_error=worst, kinks=kinks, coords=coords)
    if not worst <= rtol:
        report.add(check, False, f"relative error {worst:.1e} > {rtol:.0e} {where}", **numbers)
    elif coord_kinks > len(flat) / 2:
        report.add(check, False, f"{coord_kinks} of {len(flat)} coordinates sit at kinks "
                   "(ReLU at 0, tied maxima): too few left to vouch for the gradient; "
                   "use an input away from kinks", **numbers)
    else:
        report.add(check, True, f"{sampled} and 2 directions", **numbers)
