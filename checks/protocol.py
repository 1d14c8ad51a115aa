"""What finite differences alone miss: the layer protocol's promises, checked one by one.

Each check runs on a fresh copy of the float64 snapshot of the layer (NumPy's global generator
reseeded, :func:`checks.guard.fresh`), with the same input ``x`` and upstream gradient ``G`` as
the finite differences:

============================  ==================================================================
check                         the bug it catches
============================  ==================================================================
deterministic forward         forward draws from an unseeded generator (NumPy's global one is
                              reseeded for every copy, so ``np.random.rand`` is fine)
batch axis kept               the output's first axis is not the batch (``x.reshape(-1)``)
finite output                 forward returns NaN or inf (``exp`` overflowing: no max shift)
grads match params            a gradient missing, extra, of the wrong shape (db not summed), or
                              not in its parameter's dtype (float32 grads for float64 params)
dx shape                      backward returns something not shaped like x
x unchanged by forward        forward writes into its input (``np.maximum(x, 0, out=x)``)
dout unchanged by backward    backward writes into dout (``dout *= mask``)
x unchanged by backward       backward writes into the x forward kept (``mask = self.x;
                              mask[mask < 0] = 0``): the layer below still holds that array
output unchanged by backward  backward writes into forward's output (``self.y **= 2``): the
                              layer above still holds it as its input
backward twice                a second ``backward(dout)`` after one forward gives another
                              result: the first one changed what forward saved
no accumulation               ``grads["W"] += ...``: the second backward doubles the gradient
fresh cache                   backward uses what an EARLIER forward saved (a stale cache)
zero dout gives zero grads    something added to the gradient whatever dout is (weight decay)
params are live               forward reads a copy of ``params["W"]``, so an optimizer's update
                              of ``params`` never reaches it
============================  ==================================================================
"""

from __future__ import annotations

import copy

import numpy as np

from . import guard
from .report import error_text


PROTOCOL_CHECKS = ("forward/backward run", "finite output", "deterministic forward",
                   "batch axis kept", "grads match params",
                   "dx shape", "x unchanged by forward", "dout unchanged by backward",
                   "x unchanged by backward", "output unchanged by backward", "backward twice",
                   "no accumulation", "fresh cache", "zero dout gives zero grads",
                   "params are live")


def protocol_checks(report, snapshot, x, G, dx, grads, fresh=None, out=None):
    """Add one row per check to ``report``.  ``dx``, ``grads``: from ``backward(G)``; ``out``:
    forward's output; ``fresh()``: a fresh copy of ``snapshot`` (default: a deep copy)."""
    params = dict(snapshot.params)
    fresh = fresh or (lambda: copy.deepcopy(snapshot))
    finite = out is None or bool(np.all(np.isfinite(out)))
    twice = {}

    def run_twice():
        """One forward, then backward twice; what changed in between (computed once)."""
        if not twice:
            layer, x_in = fresh(), x.copy()
            y = layer.forward(x_in)
            x_kept, y_kept = x_in.copy(), np.array(y, copy=True)
            dx1 = np.array(layer.backward(G.copy()), copy=True)
            g1 = {k: np.array(g, copy=True) for k, g in layer.grads.items()}
            x_after, y_after = x_in.copy(), np.array(y, copy=True)
            dx2 = np.array(layer.backward(G.copy()), copy=True)
            g2 = {k: np.array(g, copy=True) for k, g in layer.grads.items()}
            twice.update(x=(x_kept, x_after), y=(y_kept, y_after), dx=(dx1, dx2), g=(g1, g2))
        return twice

    def deterministic():
        a, b = fresh().forward(x.copy()), fresh().forward(x.copy())
        if np.array_equal(a, b, equal_nan=True):
            return True, "two copies of the layer give the same output"
        return False, ("two identical copies of the layer gave different outputs: forward "
                       "draws from a generator nobody seeded (np.random.default_rng() without a "
                       "seed, in forward or at import)? Give the layer a seeded generator")

    def batch_axis():
        out = np.asarray(fresh().forward(x.copy()))
        if out.ndim >= 1 and out.shape[0] == x.shape[0]:
            return True, f"{x.shape[0]} in, {out.shape[0]} out"
        return False, (f"input batch of {x.shape[0]} gave output of shape {out.shape}: the first "
                       "axis must stay the batch (flattening it away mixes samples)")

    def grads_match():
        missing, extra = sorted(set(params) - set(grads)), sorted(set(grads) - set(params))
        if missing or extra:
            return False, f"grads keys {sorted(grads)} != params keys {sorted(params)}"
        wrong = [f"grads[{k!r}] {np.shape(grads[k])} vs params[{k!r}] {np.shape(params[k])}"
                 for k in params if np.shape(grads[k]) != np.shape(params[k])]
        if wrong:
            return False, "; ".join(wrong)
        dtypes = [f"grads[{k!r}] is {np.asarray(grads[k]).dtype}, params[{k!r}] is "
                  f"{params[k].dtype}" for k in params
                  if np.asarray(grads[k]).dtype != params[k].dtype]
        if dtypes:
            return False, ("; ".join(dtypes) + ": the gradient is computed in (or cast to) "
                           "another dtype (astype, np.float32(...), dtype=...); compute it in "
                           "its parameter's dtype")
        return True, f"keys {sorted(params)}" if params else "no params"

    def dx_shape():
        if isinstance(dx, np.ndarray) and dx.shape == x.shape:
            return True, f"{x.shape}"
        got = f"shape {np.shape(dx)}" if dx is not None else "None"
        return False, f"backward returned {got}, x has shape {x.shape}"

    def x_unchanged():
        x_in = x.copy()
        fresh().forward(x_in)
        if np.array_equal(x_in, x, equal_nan=True):
            return True, ""
        return False, "forward modified its input x in place"

    def dout_unchanged():
        layer, dout = fresh(), G.copy()
        layer.forward(x.copy())
        layer.backward(dout)
        if np.array_equal(dout, G):
            return True, ""
        return False, "backward modified dout in place"

    def x_unchanged_by_backward():
        before, after = run_twice()["x"]
        if np.array_equal(before, after, equal_nan=True):
            return True, ""
        return False, ("backward wrote into the x that forward received (e.g. mask = self.x; "
                       "mask[...] = ...): in a network the layer below still holds that array; "
                       "copy before writing")

    def out_unchanged_by_backward():
        before, after = run_twice()["y"]
        if np.array_equal(before, after, equal_nan=True):
            return True, ""
        return False, ("backward wrote into the output forward returned (e.g. self.y **= 2, "
                       "self.out *= ...): in a network the layer above holds it as its input; "
                       "compute into a new array")

    def backward_twice():
        t = run_twice()
        (dx1, dx2), (g1, g2) = t["dx"], t["g"]
        if not (dx1.shape == dx2.shape and np.allclose(dx1, dx2, rtol=1e-12, atol=0,
                                                       equal_nan=True)):
            return False, ("a second backward(dout) after the same forward returned another "
                           "dx: the first backward changed what forward saved (an in-place "
                           "write into a cached array?)")
        differ = [k for k in g1 if k not in g2 or np.shape(g1[k]) != np.shape(g2[k])
                  or not np.allclose(g1[k], g2[k], rtol=1e-12, atol=0, equal_nan=True)]
        if differ:
            doubled = all(k in g2 and np.shape(g1[k]) == np.shape(g2[k])
                          and np.allclose(g2[k], 2 * g1[k], rtol=1e-9, atol=0) for k in differ)
            why = ("doubled: gradients added (+=) to the previous call's?" if doubled else
                   "the first backward changed what forward saved?")
            return False, (f"a second backward(dout) after the same forward changed grads "
                           f"{differ}: {why}")
        return True, "same dx and grads"

    def no_accumulation():
        layer = fresh()
        layer.forward(x.copy())
        layer.backward(G.copy())
        first = {k: np.array(g, copy=True) for k, g in layer.grads.items()}
        layer.forward(x.copy())
        layer.backward(G.copy())
        differ = [k for k in first
                  if k not in layer.grads or np.shape(layer.grads[k]) != first[k].shape
                  or not np.allclose(layer.grads[k], first[k], rtol=1e-12, atol=0)]
        if differ:
            return False, (f"a second forward+backward with the same x and dout changed "
                           f"grads {differ}: gradients accumulated (+=) across calls?")
        return True, "second forward+backward gives the same grads"

    def fresh_cache():
        if not finite:
            return True, "skipped: forward's output is not finite (see finite output)"
        probe = fresh()
        if not np.array_equal(probe.forward(x.copy()), probe.forward(x.copy())):
            return True, "skipped: forward is random from call to call (dropout in training)"
        other = x + np.random.default_rng(12345).standard_normal(x.shape)
        stale = fresh()
        stale.forward(other)          # a different batch first, then the one backward is for
        stale.forward(x.copy())
        dx_stale = stale.backward(G.copy())
        if not np.allclose(dx_stale, dx, rtol=1e-9, atol=1e-12) or any(
                not np.allclose(stale.grads[k], grads[k], rtol=1e-9, atol=1e-12) for k in grads):
            return False, ("after forward on another batch, then forward(x) and backward, the "
                           "gradients differ from a fresh layer's: backward uses a stale cache")
        return True, ""

    def zero_dout():
        if not finite:
            return True, "skipped: forward's output is not finite (see finite output)"
        layer = fresh()
        out = layer.forward(x.copy())
        dx0 = layer.backward(np.zeros(np.shape(out)))
        bad = [] if np.all(np.asarray(dx0) == 0) else ["dx"]
        bad += [f"grads[{k!r}]" for k, g in layer.grads.items() if not np.all(np.asarray(g) == 0)]
        if bad:
            return False, (f"dout = 0 gave nonzero {', '.join(bad)}: something is added to the "
                           "gradient whatever dout is (a penalty belongs in the loss or optimizer)")
        return True, ""

    def params_live():
        dead = []
        for name in params:
            layer = fresh()
            before = np.array(layer.forward(x.copy()), copy=True)
            p = layer.params[name]
            p += 0.01 * (1 + np.abs(p))               # in place, as an optimizer updates
            after = np.asarray(layer.forward(x.copy()))
            claims = name not in grads or np.any(np.asarray(grads[name]) != 0)
            if claims and np.array_equal(before, after):
                dead.append(name)
        if dead:
            return False, (f"changing params{dead} in place did not change the output, although "
                           "the gradient says it should: forward reads a different array (a copy?)")
        return True, f"{len(params)} params" if params else "no params"

    functions = [deterministic, batch_axis, grads_match, dx_shape, x_unchanged, dout_unchanged,
                 x_unchanged_by_backward, out_unchanged_by_backward, backward_twice,
                 no_accumulation, fresh_cache, zero_dout, params_live]
    for name, check in zip(PROTOCOL_CHECKS[2:], functions):  # [:2] are run by gradcheck
        try:
            ok, detail = check()
        except BaseException as err:
            guard.layer_error(err)
            ok, detail = False, error_text(err) + guard.error_kind(err)
        report.add(name, ok, detail)
