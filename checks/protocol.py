"""What finite differences alone miss: the layer protocol's promises, checked one by one.

Each check runs on a fresh copy of the float64 snapshot of the layer, with the same input ``x``
and upstream gradient ``G`` as the finite differences:

============================  ==================================================================
check                         the bug it catches
============================  ==================================================================
deterministic forward         forward draws from a global or unseeded random generator
batch axis kept               the output's first axis is not the batch (``x.reshape(-1)``)
grads match params            a gradient missing, extra, or of the wrong shape (db not summed)
dx shape                      backward returns something not shaped like x
x unchanged by forward        forward writes into its input (``np.maximum(x, 0, out=x)``)
dout unchanged by backward    backward writes into dout (``dout *= mask``)
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

from .report import error_text


PROTOCOL_CHECKS = ("forward/backward run", "deterministic forward", "batch axis kept",
                   "grads match params",
                   "dx shape", "x unchanged by forward", "dout unchanged by backward",
                   "no accumulation", "fresh cache", "zero dout gives zero grads",
                   "params are live")


def protocol_checks(report, snapshot, x, G, dx, grads):
    """Add one row per check to ``report``.  ``dx``, ``grads``: from ``backward(G)``."""
    params = dict(snapshot.params)

    def fresh():
        return copy.deepcopy(snapshot)

    def deterministic():
        a, b = fresh().forward(x.copy()), fresh().forward(x.copy())
        if np.array_equal(a, b, equal_nan=True):
            return True, "two copies of the layer give the same output"
        return False, ("two identical copies of the layer gave different outputs: forward "
                       "draws from a global or unseeded random generator?")

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
                 no_accumulation, fresh_cache, zero_dout, params_live]
    for name, check in zip(PROTOCOL_CHECKS[1:], functions):  # [0] is run by gradcheck
        try:
            ok, detail = check()
        except Exception as err:
            ok, detail = False, error_text(err)
        report.add(name, ok, detail)
