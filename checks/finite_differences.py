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

    |a - n| / max(|a|, |n|, floor)

The floor keeps a coordinate whose true gradient is (nearly) zero from dividing rounding noise by
almost nothing.  It is the larger of 1% of the tensor's largest ``|a|`` and ``noise / rtol``,
where ``noise`` bounds the rounding error of ``n``: each output the nudge moved is computed to
about 1e-15 of its size, and ``(L(+h) - L(-h)) / 2h`` divides that by ``2h``.  (A saturated
sigmoid has gradients of 1e-5 whose last digits are noise: they are not held to 1e-7.)  The
check passes when every compared coordinate has an error below ``rtol`` (1e-7 by default;
correct layers give about 1e-10).  A coordinate above ``rtol`` is measured again before it fails,
with steps ``10h`` and ``20h`` combined by Richardson's extrapolation: a layer that subtracts
nearly equal numbers (batch norm of two close values) has more rounding noise than the estimate
above, and the larger step divides it by ten.

Kinks.  ReLU at 0 and a window with two equal maxima have no derivative (and an input within
``h`` of one is no better): the one-sided differences ``right = (L(+h) - L(0)) / h`` and
``left = (L(0) - L(-h)) / h`` disagree by the jump in slope, where a smooth function lets them
differ only by ``h * L''``.  A coordinate is a kink when they disagree by more than ``KINK``
(relatively), or by more than twice ``rtol`` while backward matches one side to ``rtol`` -- as
at a kink of a piecewise-linear layer, whose one-sided differences are exact (this catches ties
whose jump, an entry of ``G``, happens to be small).  A comparison about to fail is also a
kink when the one-sided differences at a quarter of the step still disagree by half as much or
more: a smooth function's disagreement shrinks with the step, a jump in slope does not (along a
random direction through many ties, the jumps of different windows can nearly cancel and stay
under ``KINK``).  Kinks are skipped and counted, never
failed; but they may not hide everything: a tensor fails when they leave fewer than
``MIN_SMOOTH`` smooth coordinates compared (or fewer than half of a small tensor).  Coordinates
are drawn in a seeded random order until ``max_coords`` smooth ones are compared.

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

from . import diagnose, guard
from .protocol import protocol_checks
from .report import Report, error_text, layer_name

FLOOR = 1e-2   # relative errors never divide by less than 1% of the tensor's largest entry
EPS = 4 * np.finfo(np.float64).eps   # relative rounding error of one output of a forward pass
KINK = 1e-3    # one-sided differences further apart than this (relatively): a kink
MIN_SMOOTH = 20  # kinks may not leave fewer smooth coordinates than this (or half the tensor)
SALT = 0x6A7D  # mixed into the seed (see gradcheck)
TIMEOUT = 60   # seconds a layer's checks may take (see checks.guard)


def to_float64(layer):
    """A deep copy of ``layer`` in which every floating array is a float64 copy.

    Arrays are found in the layer's attributes, inside dicts, lists and tuples, and inside
    nested layers.  An array reachable twice (an attribute that *is* ``params["W"]``) becomes one
    float64 array reachable twice, so the copy keeps the layer's aliasing.  A floating dtype kept
    as an attribute (``self.dtype = np.float32``) becomes float64 too.
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
    elif isinstance(obj, np.dtype) or (isinstance(obj, type) and issubclass(obj, np.generic)):
        if np.issubdtype(obj, np.floating):              # self.dtype = np.float32
            new = np.float64 if isinstance(obj, type) else np.dtype(np.float64)
    elif isinstance(obj, dict):
        for key in obj:
            obj[key] = _upcast(obj[key], memo)
    elif isinstance(obj, list):
        obj[:] = [_upcast(item, memo) for item in obj]
    elif isinstance(obj, tuple):
        new = tuple(_upcast(item, memo) for item in obj)
    elif (top or hasattr(obj, "forward")) and hasattr(obj, "__dict__") \
            and not isinstance(obj, type):
        for key, value in vars(obj).items():
            vars(obj)[key] = _upcast(value, memo)
    memo[id(obj)] = (obj, new)    # keep obj alive: its id must not be reused by a new object
    return new


def loss_terms(snapshot, x, G, seed=0):
    """``terms(target, value)``: the terms of ``L = sum(forward(x) * G)``, an array shaped like
    the output, computed on a fresh copy of ``snapshot`` (NumPy's global generator reseeded, see
    :func:`checks.guard.fresh`) with ``x`` (target ``"x"``) or ``params[target]`` (in place, as
    an optimizer updates it) replaced by ``value``."""

    def terms(target=None, value=None):
        layer = guard.fresh(snapshot, seed)
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


def directional_differences(terms, target, base, v, h, terms0):
    """``(central, right, left, noise, w)``: the derivative of ``L`` along ``w``, measured
    three ways, and how much rounding noise the central one may carry.

    ``central = (L(+h) - L(-h)) / 2h``, ``right = (L(+h) - L(0)) / h``,
    ``left = (L(0) - L(-h)) / h``.
    ``noise``: each output the nudge moved is computed to about ``EPS`` of its size; divided by
    ``2h``, that is how far ``central`` may stray without any bug.
    ``w`` is ``v`` as the computer really moved: ``base + h v`` is rounded to the nearest float,
    by up to 1e-16 * |base|, which is 1e-10 of the step ``h`` -- the size of a correct layer's
    error.  Comparing with ``a . w`` instead of ``a . v`` removes it.
    """
    up, down = base + h * v, base - h * v
    plus, minus = terms(target, up), terms(target, down)
    moved = plus != minus
    noise = EPS * float(np.sum(np.abs(plus[moved])) + np.sum(np.abs(minus[moved]))) / (2 * h)
    return (difference(plus, minus) / (2 * h), difference(plus, terms0) / h,
            difference(terms0, minus) / h, noise, (up - down) / (2 * h))


def gradcheck(layer, x, *, seed: int = 0, h: float = 1e-6, rtol: float = 1e-7,
              max_coords: int = 100, timeout: float | None = TIMEOUT) -> Report:
    """Check ``layer.backward`` against finite differences, plus the protocol checks.

    ``x``: an input the layer accepts, e.g. ``(N, C, H, W)``, with entries of order 1 (the
    gradients of a softmax fed logits of 100 are below float64's rounding).  For ``x`` and each
    entry of ``params``, up to ``max_coords`` coordinates are compared one by one (all of a small
    tensor; a seeded sample of a large one), then the whole tensor along a random and the
    all-ones direction.  ``h``: the step; ``rtol``: the largest relative error that passes;
    ``timeout``: seconds before a layer that does not return fails (None: no limit).
    Returns a :class:`~checks.report.Report` with one row per check; never raises.
    """
    report = Report(layer_name(layer))
    with guard.user_rng_kept():
        try:
            with guard.guarded(timeout):
                _gradcheck(report, layer, x, seed, h, rtol, max_coords)
        except guard.LayerTimeout as err:
            report.add("time limit", False, err.detail())
    return report


def _gradcheck(report, layer, x, seed, h, rtol, max_coords):
    try:
        snapshot = to_float64(layer)
        x64 = np.array(x, dtype=np.float64)
    except BaseException as err:
        guard.layer_error(err)
        report.add("float64 copy", False, f"could not copy the layer or x: {error_text(err)}"
                   f"{guard.error_kind(err)}")
        return
    # a stream of its own: with default_rng(seed), an x drawn with the same seed would equal G
    rng = np.random.default_rng([seed, SALT])

    def fresh():
        return guard.fresh(snapshot, seed)

    try:
        probe = fresh()
        out = probe.forward(x64.copy())
        if not (isinstance(out, np.ndarray) and np.issubdtype(out.dtype, np.floating)):
            raise TypeError(f"forward returned {type(out).__name__} "
                            f"{getattr(out, 'dtype', '')}, expected a floating-point array")
        out = np.array(out, copy=True)
        G = rng.standard_normal(out.shape)
        dx = probe.backward(G.copy())
        for attr in ("params", "grads"):
            if not isinstance(getattr(probe, attr, None), dict):
                raise TypeError(f"the layer has no {attr!r} dict (the protocol asks for one, "
                                "empty when the layer learns nothing)")
        for name, p in probe.params.items():
            if not (isinstance(p, np.ndarray) and np.issubdtype(p.dtype, np.floating)):
                raise TypeError(f"params[{name!r}] is a {type(p).__name__}, expected a "
                                "floating-point array")
        grads = dict(probe.grads)
        terms = loss_terms(snapshot, x64, G, seed)
        terms0 = terms()
    except BaseException as err:
        guard.layer_error(err)
        report.add("forward/backward run", False, error_text(err) + guard.error_kind(err))
        return
    report.add("forward/backward run", True, f"output {out.shape}")
    finite = bool(np.all(np.isfinite(out)))
    report.add("finite output", finite, "" if finite else nonfinite_forward(out, x64))

    protocol_checks(report, snapshot, x64, G, dx, grads, fresh=fresh, out=out)

    tensors = [("x", "dL/dx", dx, x64)]
    tensors += [(name, f"dL/d{name}", grads.get(name), p) for name, p in snapshot.params.items()]
    context = dict(x_shape=x64.shape, out_shape=out.shape, layer=snapshot,
                   params=dict(snapshot.params), out_dtype=out.dtype, x=x64)
    for target, check, analytic, base in tensors:
        if not finite:
            report.add(check, False, "not compared: forward's output is not finite for this x "
                       "(see the row finite output)")
            continue
        _check_tensor(report, check, terms, terms0, target, analytic, base, rng, h, rtol,
                      max_coords, context)


def nonfinite_forward(out, x) -> str:
    """Where forward's output is NaN or infinite, and the usual reasons."""
    bad = ~np.isfinite(out)
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    kinds = " and ".join(k for k, m in (("nan", np.isnan(out)), ("inf", np.isinf(out)))
                         if m.any())
    largest = float(np.max(np.abs(x))) if x.size else 0.0
    return (f"forward itself returned {kinds} at {int(bad.sum())} of {out.size} entries (e.g. "
            f"out[{', '.join(map(str, first))}] = {out[first]}) for an x whose largest |entry| "
            f"is {largest:.3g}: an exp that overflows (softmax: subtract each row's max first), "
            "a log of 0, a division by 0 or by an overflowing sum?")


def low_precision(terms, target, base, out_dtype, rng):
    """A sentence when forward computes in float32 (or less) although it gets float64, else None.

    Two signs: forward returns float32; or forward's output is bit for bit the same when
    ``target`` is rounded to float32 (somewhere inside, forward rounds it).  The harness runs
    the layer in float64, where float32 rounding, divided by the step h, looks like an error
    of 1e-3.
    """
    if np.dtype(out_dtype).itemsize < 8:
        return f"forward returns {np.dtype(out_dtype).name} for float64 x and params"
    if base.size == 0:
        return None
    v = rng.uniform(-1, 1, base.shape)
    # float64 numbers that float32 lacks, moved enough for float32's rounding of them to show
    # in a float64 output
    fine = base + 1e-7 * max(float(np.max(np.abs(base))), 1.0) * v
    rounded = fine.astype(np.float32).astype(np.float64)
    t_fine, t_rounded = terms(target, fine), terms(target, rounded)
    t_far = terms(target, fine + 1e-4 * v * np.maximum(np.abs(fine), 1))
    depends = t_far != t_fine                             # outputs the target moves
    if not depends.any():
        return None
    if np.mean(t_fine[depends] == t_rounded[depends]) >= 0.9:
        return (f"forward gives the same output, bit for bit, when {target} is rounded to "
                "float32: the layer casts to float32 inside forward")
    return None


def _float32_sentence(evidence, worst, rtol):
    seen = (f"an error (relative error {worst:.1e} > {rtol:.0e})" if not worst <= rtol
            else "kinks everywhere (too few smooth coordinates to compare)")
    return (f"{evidence} (astype(np.float32), np.float32(...), dtype=np.float32?): it computes "
            f"to about 7 digits, and finite differences at step 1e-6 see that rounding as "
            f"{seen}; keep the dtype of x and params, as the protocol asks")


def _check_tensor(report, check, terms, terms0, target, analytic, base, rng, h, rtol, max_coords,
                  context):
    """Add one row comparing ``analytic`` (what backward said) with finite differences."""
    shape = base.shape
    if analytic is None or np.shape(analytic) != shape:
        what = "backward's return value" if target == "x" else f"grads[{target!r}]"
        got = "nothing" if analytic is None else f"shape {np.shape(analytic)}"
        report.add(check, False, f"cannot compare: {what} is {got}, expected shape {shape}")
        return
    analytic = np.asarray(analytic, dtype=np.float64)
    if not np.all(np.isfinite(analytic)):
        bad_mask = ~np.isfinite(analytic)
        bad = tuple(int(i) for i in np.argwhere(bad_mask)[0])
        report.add(check, False, f"backward gave {analytic[bad]} at {int(bad_mask.sum())} of "
                   f"{analytic.size} entries (e.g. {diagnose.at(target, bad)}), although "
                   "forward's output is finite: a division by 0, a log of 0 or an exp that "
                   "overflows in backward?")
        return
    size = analytic.size
    floor = FLOOR * np.max(np.abs(analytic), initial=0.0)

    def compare(v):
        """``(relative error, backward's value, numerical value)`` along ``v``; None at a kink."""
        central, right, left, noise, w = directional_differences(terms, target, base, v, h, terms0)
        a = float(np.sum(analytic * w))
        # along a direction, ``a`` is a sum, known only to the size of its terms
        scale = max(abs(a), abs(central), float(np.sum(np.abs(analytic * w))), floor,
                    noise / rtol)
        if not math.isfinite(scale):
            return math.inf, a, central
        if scale == 0:
            return 0.0, a, central
        gap = abs(right - left) / scale
        if gap > KINK or (gap > 2 * rtol and min(abs(a - right), abs(a - left)) / scale <= rtol):
            return None
        if abs(a - central) > rtol * scale and abs(right - left) > 100 * noise:
            # Before failing: is it a kink whose jumps in slope nearly cancel?  Those do not
            # shrink with the step; a smooth function's disagreement does.
            right4, left4 = directional_differences(terms, target, base, v, h / 4, terms0)[1:3]
            if abs(right4 - left4) >= 0.5 * abs(right - left):
                return None
        if abs(a - central) > rtol * scale:
            # Before failing, a second opinion with less rounding noise. A layer that subtracts
            # nearly equal numbers (batch norm of two close values) computes its outputs to
            # far fewer digits than the noise estimate assumes, and dividing by 2h magnifies
            # that. Ten times the step divides the noise by ten; Richardson's extrapolation,
            # (4 D(10h) - D(20h)) / 3, cancels the h^2 error a larger step brings.
            d10 = directional_differences(terms, target, base, v, 10 * h, terms0)[0]
            d20 = directional_differences(terms, target, base, v, 20 * h, terms0)[0]
            better = (4 * d10 - d20) / 3
            if abs(a - better) < abs(a - central):
                central = better
        return abs(a - central) / scale, a, central

    worst, where, kinks, coords, examined = 0.0, None, 0, [], 0
    samples, directions = [], {}
    try:
        # coordinates in a seeded random order, until max_coords smooth ones are compared
        for i in rng.permutation(size)[:10 * max_coords]:
            if len(coords) == max_coords:
                break
            examined += 1
            index = tuple(int(k) for k in np.unravel_index(i, shape))
            v = np.zeros(shape)
            v[index] = 1.0
            result = compare(v)
            if result is None:
                kinks += 1
                continue
            coords.append(index)
            samples.append((index, *result[1:], result[0]))
            if not result[0] <= worst:                   # "not <=" also catches NaN
                worst, where = result[0], (f"at {diagnose.at(target, index)}", *result[1:])
        for label, v in [("a random direction", rng.standard_normal(shape)),
                         ("the all-ones direction", np.ones(shape))]:
            result = compare(v)
            if result is None:
                kinks += 1
                continue
            directions[label] = result
            if not result[0] <= worst:
                worst, where = result[0], (f"along {label}", *result[1:])
    except BaseException as err:
        guard.layer_error(err)
        report.add(check, False, f"forward failed during finite differences: {error_text(err)}"
                   f"{guard.error_kind(err)}")
        return
    numbers = dict(max_rel_error=worst, kinks=kinks, coords=sorted(coords))
    needed = min(MIN_SMOOTH, size / 2)
    if worst <= rtol and len(coords) >= needed:
        which = "all" if examined == size else "a seeded sample"
        report.add(check, True, f"{len(coords)} coordinates ({which} of {size}) and 2 directions",
                   **numbers)
        return
    try:
        cast = low_precision(terms, target, base, context["out_dtype"], rng)
    except BaseException as err:
        guard.layer_error(err)
        cast = None
    if cast:
        report.add(check, False, _float32_sentence(cast, worst, rtol), **numbers)
    elif not worst <= rtol:
        report.add(check, False, _failure(target, analytic, samples, directions, where, worst,
                                          rtol, size, kinks, context), **numbers)
    else:
        report.add(check, False, f"{examined - len(coords)} of {examined} coordinates sit at kinks "
                   f"(ReLU at 0, tied maxima): {len(coords)} smooth ones are too few to vouch for "
                   "the gradient; use an input away from kinks", **numbers)


def _failure(target, analytic, samples, directions, where, worst, rtol, size, kinks, context):
    """The detail of a failed comparison: the pattern when there is one, with a representative
    coordinate; otherwise the worst comparison."""
    head = f"relative error {worst:.1e} > {rtol:.0e}"
    numerical = [s[2] for s in samples] + [d[2] for d in directions.values()]
    if not all(math.isfinite(n) for n in numerical):
        return (f"{head}: forward returned nan or inf at an input within 1e-6 of this one "
                f"(moving {target}): a formula that overflows near here (an exp of a large "
                "number, a log or division near 0)?")
    wrong = [s for s in samples if not s[3] <= rtol]
    if wrong:
        try:
            found = diagnose.pattern(target, analytic, samples, rtol,
                                     x_shape=context["x_shape"], out_shape=context["out_shape"],
                                     layer=context["layer"], params=context["params"],
                                     x=context["x"])
        except Exception:              # a diagnosis is a bonus: never lose the row for it
            found = None
        if found:
            return f"{head}: {found}"
        typical = sorted(wrong, key=lambda s: abs(s[2]))[len(wrong) // 2]
        return (f"{head}: {len(wrong)} of {len(samples)} coordinates are wrong, with no simple "
                f"pattern (not a constant factor, a sign, a transpose, some samples only): "
                f"the formula itself? e.g. at {diagnose.at(target, typical[0])}: backward "
                f"{typical[1]:.6g}, numerical {typical[2]:.6g}")
    ok = f"the {len(samples)} coordinates compared one by one all match, but"
    ones = directions.get("the all-ones direction")
    if ones is not None and not ones[0] <= rtol:
        _, a, n = ones
        text = (f"{head}: {ok} along the all-ones direction (every entry of {target} moved "
                f"together by the same step, so that tied values stay tied) backward gives "
                f"{a:.6g} and finite differences {n:.6g}")
        tied = diagnose.ties(context["x"]) if target == "x" else 0
        if tied:
            text += (f". x has {tied} entries that share their value with another (ties; each "
                     "nudged alone is a kink, skipped): a tie's gradient must go to one of them "
                     "(the first maximum, as np.argmax picks it), not to each")
        elif kinks:
            text += f"; the error hides at the {kinks} kinks skipped one by one"
        return text
    _, a, n = directions.get("a random direction", (None, math.nan, math.nan))
    rest = size - len(samples)
    hidden = (f"among the {rest} entries not compared one by one" if rest
              else "where the one-by-one comparisons cannot see it")
    return (f"{head}: {ok} along a random direction (all {size} entries of {target} moved at "
            f"once) backward gives {a:.6g} and finite differences {n:.6g}: the error hides "
            f"{hidden}")
