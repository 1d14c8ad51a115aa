"""What kind of wrong: the pattern behind a failed finite-difference comparison.

A gradient check that only says "relative error 0.75 at W[0, 3]" leaves the student to guess.
The coordinates it compared say more when read together, so :func:`pattern` looks at all of them
(``a`` from backward, ``n`` numerical, at every compared index) and names the first pattern that
fits every one of them:

=====================  ==============================================================
pattern                the sentence (and the usual bug)
=====================  ==============================================================
zeros                  backward is 0 where the numerical gradient is not
nonzero where flat     backward is nonzero where the numerical gradient is 0 (a mask forgotten)
constant factor        backward = numerical x r everywhere; r is matched against the batch
                       size N, the number of output positions, the window size, small
                       fractions (averaged instead of summed, a missing 1/2, ...)
sign flip              r = -1, or a = -n on every wrong coordinate
rearranged             backward = numerical transposed, with its first two axes swapped,
                       or flipped (a kernel rotated by 180 degrees)
factor per index       r depends only on the index along one axis: matched against a
                       parameter of that length (``/ gamma[c]``: gamma forgotten)
some groups right      right for some samples (or channels) and wrong for the others
=====================  ==============================================================

Each sentence comes with a *representative* coordinate, one of typical size where the pattern
shows, not the worst one (the worst is usually where the signs differ, whatever the bug).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

TIGHT = 1e-6    # how exactly a pattern must fit (relatively): a correct layer fits to 1e-9


def fmt(v: float) -> str:
    return f"{v:.6g}"


def at(target, index) -> str:
    return f"{target}[{', '.join(str(i) for i in index)}]"


def quantities(x_shape, out_shape, layer) -> list[tuple[int, str, str, str]]:
    """``(value, name, hint if backward is 1/value too small, hint if value too large)``: the
    sizes a constant factor is usually made of."""
    found = []
    for attr in ("kernel_size", "pool_size", "window", "window_size"):
        size = getattr(layer, attr, None)
        try:
            dims = [int(d) for d in (size if isinstance(size, (tuple, list)) else [size])]
        except (TypeError, ValueError):
            continue
        k = int(np.prod(dims))
        if k > 1:
            name = " x ".join(str(d) for d in dims)
            found.append((k, f"the window size, {name} = {k}",
                          "divided by the window size where forward is not?",
                          "the gradient not divided by the window size?"))
            break
    n = x_shape[0] if x_shape else 0
    if n > 1:
        found.append((n, f"N with N = {n}",
                      "averaged over the batch instead of summed?",
                      "summed over the batch where forward takes the batch mean?"))
    if len(out_shape) >= 3:
        p = int(np.prod(out_shape[2:]))
        if p > 1:
            dims = " x ".join(str(d) for d in out_shape[2:])
            found.append((p, f"the number of output positions, {dims} = {p}",
                          "averaged over the output positions instead of summed?",
                          "summed over the output positions where forward averages?"))
        if n > 1 and p > 1:
            found.append((n * p, f"N x positions = {n} x {p} = {n * p} (the values of a "
                          "channel in the batch)",
                          "averaged over the batch and positions instead of summed?",
                          "a division by N x positions missing?"))
    return found


def describe_factor(r: float, x_shape, out_shape, layer) -> str:
    """``"= 1/N with N = 4: averaged over the batch instead of summed?"`` or ``""``."""
    matches = []
    for value, name, when_small, when_large in quantities(x_shape, out_shape, layer):
        if abs(r * value - 1) < 1e-6:
            short = name if name.startswith("N with") else f"({name})"
            matches.append(f"1/{short}: {when_small}")
        elif abs(r / value - 1) < 1e-6:
            matches.append(f"{name}: {when_large}")
    if matches:
        return " = " + " or ".join(matches)
    frac = Fraction(r).limit_denominator(12)
    if frac != 0 and abs(float(frac) - r) < 1e-6 * abs(r):
        if frac.denominator == 1:
            return f" = {frac.numerator}: a term counted {frac.numerator} times, or a factor lost?"
        return f" = {frac.numerator}/{frac.denominator}: a constant factor lost or added?"
    return ": a constant factor lost or added (a scale, a mean, a 1/2)?"


def _ratio(a, n):
    """Least-squares ``r`` with ``a = r n`` and how badly it fits (relative to ``max |a|, |n|``)."""
    nn = float(np.dot(n, n))
    if nn == 0:
        return None, np.inf
    r = float(np.dot(a, n)) / nn
    scale = max(float(np.max(np.abs(a))), float(np.max(np.abs(n))))
    return r, float(np.max(np.abs(a - r * n))) / scale if scale else 0.0


def _representative(idx, n, mask):
    """The index among ``idx[mask]`` whose ``|n|`` is the median: a typical coordinate."""
    chosen = np.flatnonzero(mask)
    if chosen.size == 0:
        chosen = np.arange(len(n))
    order = chosen[np.argsort(np.abs(n[chosen]))]
    return order[len(order) // 2]


def axis_name(target, axis, ndim):
    if target == "x":
        if axis == 0:
            return "samples", "sample"
        if axis == 1:
            return ("channels", "channel") if ndim >= 3 else ("features", "feature")
    return f"indices along axis {axis} of {target}", "index"


def _where_x(target, idx, mask, x):
    """``" (exactly where x < 0)"`` when the masked coordinates are those of x's negative (or
    positive) entries among the compared ones, else ``""``."""
    if target != "x" or x is None:
        return ""
    values = np.array([x[j] for j in idx])
    for sign, word in ((values < 0, "x < 0"), (values > 0, "x > 0")):
        if (sign == mask).all():
            return f" (exactly where {word})"
    return ""


def pattern(target, analytic, samples, rtol, *, x_shape, out_shape, layer, params, x=None):
    """A sentence naming what the compared coordinates have in common, or None.

    ``samples``: ``[(index, a, n, error)]`` for every coordinate compared one by one;
    ``analytic``: backward's whole tensor (for rearrangements).
    """
    if len(samples) < 2:
        return None
    idx = [s[0] for s in samples]
    a = np.array([s[1] for s in samples])
    n = np.array([s[2] for s in samples])
    err = np.array([s[3] for s in samples])
    if not (np.all(np.isfinite(n)) and np.all(np.isfinite(a))):
        return None
    bad = err > rtol
    if not bad.any():
        return None
    scale = max(float(np.max(np.abs(a))), float(np.max(np.abs(n))))
    if scale == 0:
        return None
    tiny = 1e-9 * scale
    sig = np.abs(n) > 1e-3 * scale
    m, nbad = len(samples), int(bad.sum())

    def show(i):
        return f"at {at(target, idx[i])}: backward {fmt(a[i])}, numerical {fmt(n[i])}"

    # zeros where the numerical gradient is not
    zero_bad = bad & (np.abs(a) <= tiny)
    if zero_bad.all() or (zero_bad == bad).all():
        i = _representative(idx, n, zero_bad)
        if np.all(np.abs(a) <= tiny):
            return f"backward is 0 everywhere, the numerical gradient is not (e.g. {show(i)})"
        return (f"backward is 0 at {nbad} of {m} coordinates{_where_x(target, idx, bad, x)} "
                f"where the numerical gradient is not, and right elsewhere: part of the "
                f"gradient is dropped (a mask or an index "
                f"range too small?); e.g. {show(i)}")

    # nonzero where the numerical gradient is 0
    nonzero_bad = bad & (np.abs(n) <= tiny)
    if (nonzero_bad == bad).all():
        i = _representative(idx, a, nonzero_bad)
        if target != "x" and np.all(np.abs(n) <= tiny):
            return (f"backward gives {target} a gradient, but forward's output does not move "
                    f"with {target} at all: forward reads another array (a copy made in "
                    f"__init__? see params are live); e.g. {show(i)}")
        return (f"backward is nonzero at {nbad} of {m} coordinates where the numerical "
                f"gradient is 0 (forward's output does not move with them there): a mask or "
                f"a zero branch missing in backward? e.g. {show(i)}")

    # one constant factor everywhere
    r, misfit = _ratio(a, n)
    if r is not None and misfit < TIGHT and abs(r - 1) > TIGHT:
        i = _representative(idx, n, sig)
        if abs(r + 1) < TIGHT:
            return f"backward is numerical × -1 everywhere: the sign is flipped (e.g. {show(i)})"
        return (f"backward is numerical × {r:.4g} everywhere"
                f"{describe_factor(r, x_shape, out_shape, layer)} (e.g. {show(i)})")

    # one constant factor on the wrong coordinates, right on the others
    rw, misfit_w = _ratio(a[bad], n[bad])
    if rw is not None and misfit_w < TIGHT and nbad < m:
        i = _representative(idx, n, bad & sig) if (bad & sig).any() else int(np.flatnonzero(bad)[0])
        where = _where_x(target, idx, bad, x)
        what = ("the sign is flipped" if abs(rw + 1) < TIGHT else
                f"backward is numerical × {rw:.4g}")
        return (f"{what} at {nbad} of {m} coordinates{where} and right at the others: one "
                f"branch of backward (one side of a kink, one case of an if) is wrong; e.g. "
                f"{show(i)}")

    # backward rearranged: transposed, axes swapped, flipped
    for name, transform in _rearrangements(analytic.shape):
        t = transform(analytic)
        tv = np.array([t[j] for j in idx])
        if np.max(np.abs(tv - n)) <= TIGHT * scale:
            i = _representative(idx, n, bad)
            j = idx[i]
            return (f"backward equals the numerical gradient {name}: {show(i)}, and "
                    f"backward has {fmt(tv[i])} at {at(target, _source(name, j, analytic.shape))}")

    ndim = analytic.ndim
    # a factor that depends on the index along one axis only
    for axis in range(ndim):
        keys = np.array([j[axis] for j in idx])
        groups = np.unique(keys)
        if len(groups) < 2:
            continue
        factors, fits = {}, True
        for g in groups:
            sel = (keys == g) & sig
            if sel.sum() < 2:          # one coordinate fits any factor: no evidence
                continue
            rg, mg = _ratio(a[keys == g], n[keys == g])
            if rg is None or mg > TIGHT:
                fits = False
                break
            factors[int(g)] = rg
        if not fits or len(factors) < 2:
            continue
        values = np.array(list(factors.values()))
        if np.ptp(values) <= TIGHT * np.max(np.abs(values)):
            continue                   # one constant: handled above
        plural, single = axis_name(target, axis, ndim)
        typical = _representative(idx, n, sig)
        for pname, p in params.items():
            p = np.asarray(p).ravel()
            if p.size != analytic.shape[axis]:
                continue
            pg = p[list(factors)]
            if np.all(pg != 0) and np.allclose(values * pg, 1, rtol=1e-6, atol=0):
                return (f"backward is numerical / {pname}[k] for each {single} k: the factor "
                        f"{pname} is forgotten in backward (e.g. {show(typical)})")
            if np.allclose(values, pg, rtol=1e-6, atol=0):
                return (f"backward is numerical × {pname}[k] for each {single} k: {pname} "
                        f"applied once too often (e.g. {show(typical)})")
            if np.allclose(values, pg ** 2, rtol=1e-6, atol=0) and np.all(pg != 0):
                return (f"backward is numerical × {pname}[k]**2 for each {single} k "
                        f"(e.g. {show(typical)})")
        listed = ", ".join(f"{k}: {v:.4g}" for k, v in list(factors.items())[:6])
        return (f"backward is numerical times a factor that depends only on the {single} "
                f"({listed}{', ...' if len(factors) > 6 else ''}): a per-{single} factor "
                f"(a parameter, a scale) missing or extra? e.g. {show(typical)}")

    # right for some samples or channels, wrong for the others
    for axis in range(min(ndim, 2)):
        keys = np.array([j[axis] for j in idx])
        groups = np.unique(keys)
        if len(groups) < 2:
            continue
        # right: every coordinate compared matches; wrong: a good share of them do not (a
        # sparse gradient, such as max pooling's, is right at its zeros even where it is wrong)
        right = [int(g) for g in groups if not bad[keys == g].any() and (keys == g).sum() >= 2]
        wrong = [int(g) for g in groups if bad[keys == g].mean() >= 0.25]
        if right and wrong and len(right) + len(wrong) == len(groups):
            plural, single = axis_name(target, axis, ndim)
            i = _representative(idx, n, bad)
            return (f"right for {plural} {_list(right)} and wrong for {plural} {_list(wrong)} "
                    f"of {target}: a loop or slice that covers only some {plural}, or mixes "
                    f"them up? e.g. {show(i)}")

    # gradient sent to the wrong entries: nonzero where numerical is 0, and the reverse
    extra = bad & (np.abs(n) <= tiny) & (np.abs(a) > tiny)
    missing = bad & (np.abs(a) <= tiny) & (np.abs(n) > tiny)
    if extra.any() and missing.any() and np.all(extra | missing | ~bad):
        i = _representative(idx, n, missing)
        j = int(np.flatnonzero(extra)[0])
        return (f"backward is nonzero at {int(extra.sum())} coordinates where the numerical "
                f"gradient is 0, and 0 at {int(missing.sum())} where it is not: the gradient "
                f"goes to the wrong entries (a wrong index, the wrong window's argmax?); e.g. "
                f"{show(i)}, and {show(j)}")

    # the right numbers in the wrong places
    if len(idx) == analytic.size and np.allclose(np.sort(a), np.sort(n), rtol=TIGHT,
                                                 atol=TIGHT * scale):
        i = _representative(idx, n, bad)
        return (f"backward holds the right values in the wrong places (sorted, backward and "
                f"the numerical gradient agree): a reshape or transpose that orders the axes "
                f"differently from forward's? e.g. {show(i)}")
    return None


def _list(values):
    return "[" + ", ".join(str(v) for v in values[:8]) + (", ...]" if len(values) > 8 else "]")


def _rearrangements(shape):
    ndim = len(shape)
    found = []
    if ndim >= 2 and shape[-1] == shape[-2] and shape[-1] > 1:
        found.append(("transposed", lambda g: np.swapaxes(g, -1, -2)))
    if ndim >= 3 and shape[0] == shape[1] and shape[0] > 1:
        found.append(("with its first two axes swapped", lambda g: np.swapaxes(g, 0, 1)))
    if ndim >= 3 and (shape[-1] > 1 or shape[-2] > 1):
        found.append(("flipped in its last two axes (a kernel rotated by 180 degrees)",
                      lambda g: g[..., ::-1, ::-1]))
    return found


def _source(name, index, shape):
    """Where, in backward's array, the value the numerical gradient has at ``index`` sits."""
    index = list(index)
    if name == "transposed":
        index[-1], index[-2] = index[-2], index[-1]
    elif name.startswith("with its first"):
        index[0], index[1] = index[1], index[0]
    else:
        index[-1], index[-2] = shape[-1] - 1 - index[-1], shape[-2] - 1 - index[-2]
    return tuple(index)


def ties(x) -> int:
    """How many entries of ``x`` share their value with another entry."""
    values = np.asarray(x).ravel()
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    return int(np.sum(counts[inverse] > 1))
