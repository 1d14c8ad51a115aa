"""The overfit test: can an optimizer learn through this layer?

Gradient checks compare numbers at one point; this test asks what training asks.  The layer sits
in a tiny model ::

    stem: x M + c  ->  layer  ->  head: exp(t) * flatten(.) @ W  ->  softmax cross-entropy
    (learnable; M starts            (W fixed: the mean of each of K groups
     as the identity)                of values; t learnable)

and Adam trains the stem, the layer's own ``params`` and ``t``, first on one sample, then on a
handful (up to 4).  Each sample's label is the class the untrained model ranks *last*, so nothing
is fitted by luck.  The test passes when the loss falls below ``threshold`` within ``steps``,
measured in training mode (each step's own forward pass) or in evaluation mode when the layer
has a ``training`` flag -- whichever is lower: Dropout's training loss never settles (with
``p = 0.9`` most steps see almost nothing), BatchNorm's running averages lag behind a stem that
is still moving.

Why this head: ``W`` is never trained, so the head cannot change which class a sample points to
-- a trainable head could fit a handful of samples by itself, whatever the layer did, and the test
would prove nothing.  Only the stem and the layer can move each sample to its class, and the stem
learns only through the layer's ``backward``.  ``t`` lets the head grow more confident once the
classes are right, which layers with bounded outputs (softmax, sigmoid) need to reach a low loss.

Dead ends are avoided, not failed: a sample whose output is all zeros (every ReLU off) is not
used, nor is a class whose values are all zeros for a sample -- no gradient can reach them.  A
layer may refuse a batch of one with a ``ValueError`` (batch norm on ``(N, D)`` must: one value
per feature has no variance); the one-sample stage is then skipped, and the report says so.
The stem's matrix is ``D x D`` for ``D`` values per sample, meant for the small inputs a check
uses; above ``MAX_FULL`` values per sample it would not fit in memory (25,088 values make a
2.5 GB matrix), and the stem becomes a learnable scale per value, ``x * m + c``, instead.
"""

from __future__ import annotations


import numpy as np

from cnn_lessons.optimizers import Adam   # protocol-level: updates any layer's params in place

from . import guard
from .report import Report, error_text, layer_name

CLASSES = 4   # K
MAX_FULL = 1024   # values per sample up to which the stem is a full D x D matrix


class LinearStem:
    """The stem, a learnable affine map of each flattened sample: ``z = x M + c``.

    ``x (N, ...) -> z`` of the same shape; ``M (D, D)`` starts as the identity (the layer first
    sees ``x`` itself) and ``c (D,)`` at zero, with ``D`` the size of one sample.  Above
    ``MAX_FULL`` values ``M`` is diagonal, stored as ``m (D,)``: ``z = x * m + c``.  It follows
    the layer protocol, so Adam trains it like any layer.
    """

    def __init__(self, shape, dtype):
        d = int(np.prod(shape))
        self.full = d <= MAX_FULL
        scale = np.eye(d, dtype=dtype) if self.full else np.ones(d, dtype=dtype)
        self.params = {"M" if self.full else "m": scale, "c": np.zeros(d, dtype=dtype)}
        self.grads: dict[str, np.ndarray] = {}
        self._x = None

    def forward(self, x):
        self._x = x.reshape(len(x), -1)
        if self.full:
            z = self._x @ self.params["M"]
        else:
            z = self._x * self.params["m"]
        return (z + self.params["c"]).reshape(x.shape)

    def backward(self, dout):
        d2 = dout.reshape(len(dout), -1)
        self.grads["c"] = d2.sum(axis=0)
        if self.full:
            self.grads["M"] = self._x.T @ d2
            return (d2 @ self.params["M"].T).reshape(dout.shape)
        self.grads["m"] = (self._x * d2).sum(axis=0)
        return (d2 * self.params["m"]).reshape(dout.shape)


class Head:
    """The head: ``logits = exp(t) * flatten(z) @ W``, ``W`` fixed, ``t`` learnable.

    ``z (N, ...) -> logits (N, K)``.  ``W (D, K)`` averages the ``D`` values of a sample in ``K``
    interleaved groups (value ``j`` votes for class ``j % K``) and never changes, so the head
    cannot change which class a sample points to.  Learning ``t`` only lets it grow more
    confident, which a layer with bounded outputs (softmax, sigmoid) needs to reach a low loss.
    """

    def __init__(self, d, classes):
        self.W = np.zeros((d, classes))
        self.W[np.arange(d), np.arange(d) % classes] = 1
        self.W /= self.W.sum(axis=0)
        self.params = {"t": np.zeros((), dtype=np.float64)}
        self.grads: dict[str, np.ndarray] = {}
        self._u = None

    def forward(self, z):
        self._u = np.asarray(z).reshape(len(z), -1).astype(np.float64) @ self.W
        return np.exp(self.params["t"]) * self._u

    def backward(self, dlogits):
        scale = np.exp(self.params["t"])
        self.grads["t"] = np.asarray(np.sum(dlogits * self._u) * scale)
        return (scale * dlogits) @ self.W.T


def cross_entropy(logits, y):
    """Mean softmax cross-entropy of ``logits (N, K)`` for labels ``y (N,)``, and its gradient."""
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    n = len(y)
    loss = -log_p[np.arange(n), y].mean()
    d = np.exp(log_p)
    d[np.arange(n), y] -= 1
    return float(loss), d / n


def in_eval_mode(model, run):
    """``run()`` with ``model.training`` False, when the model has that flag."""
    training = getattr(model, "training", None)
    if training is not None:
        model.training = False
    try:
        return run()
    finally:
        if training is not None:
            model.training = training


def evaluate(model, stem, head, x, y) -> float:
    """The loss as a trained model is used: in evaluation mode when the layer has one (Dropout
    off, BatchNorm on its running averages), so a noisy layer is judged by what it learned."""
    logits = in_eval_mode(model, lambda: head.forward(model.forward(stem.forward(x))))
    return cross_entropy(logits, y)[0]


def overfit_one_sample(layer, x, *, steps: int = 300, threshold: float = 0.05, seed: int = 0,
                       lr: float = 0.05, timeout: float | None = 60) -> Report:
    """Train ``stem -> layer -> head`` on one sample of ``x``, then on up to 4 (chosen by seed).

    ``x``: a batch the layer accepts, e.g. ``(N, C, H, W)``.  Only samples on which the layer's
    output is not all zeros are used (nothing can learn from a sample whose every ReLU is off).
    The layer itself is not changed: training runs on a deep copy, in the layer's own dtype.
    A stage that stalls because ``x`` saturates the layer (forward is flat there) is
    inconclusive, not failed, and so is an ``x`` on which the output is all zeros: neither says
    anything against the layer.  ``timeout``: seconds before a layer that does not return fails.
    Returns a :class:`~checks.report.Report` with one row per stage (steps taken, final loss);
    never raises.
    """
    report = Report(layer_name(layer))
    with guard.user_rng_kept():
        try:
            with guard.guarded(timeout):
                _overfit_all(report, layer, x, steps, threshold, seed, lr)
        except guard.LayerTimeout as err:
            report.add("time limit", False, err.detail())
    return report


def _overfit_all(report, layer, x, steps, threshold, seed, lr):
    try:
        x = np.asarray(x)
        if not np.issubdtype(x.dtype, np.floating):
            x = x.astype(np.float64)
        model = guard.fresh(layer, seed)
        out = np.asarray(in_eval_mode(model, lambda: model.forward(x.copy())))
        order = np.random.default_rng(seed).permutation(len(x))     # seed picks the samples
        live = [i for i in order if np.any(out[i])]
    except BaseException as err:
        guard.layer_error(err)
        report.add("overfit", False, error_text(err) + guard.error_kind(err))
        return
    if not live:
        report.add("overfit", True, "inconclusive: the output is all zeros for every sample of "
                   "x (every ReLU unit off?): no gradient can flow, so nothing can be learned; "
                   "use an input with some nonzero output", inconclusive=True)
        return
    for n in sorted({1, min(CLASSES, len(live))}):
        _overfit(report, layer, x[np.sort(live[:n])], steps, threshold, lr, seed)


def gain(model, z, seed) -> float:
    """How far forward's output moves per unit of input, at ``z`` (evaluation mode, a random
    direction, a small central difference): about 0.25 for a sigmoid at 0, 1e-4 at 9."""
    v = np.random.default_rng([seed, 7]).standard_normal(z.shape)
    v /= np.linalg.norm(v)
    eps = 1e-3 * max(1.0, float(np.sqrt(np.mean(z.astype(np.float64) ** 2))))

    def f(zz):
        probe = guard.fresh(model, seed)
        return np.asarray(in_eval_mode(probe, lambda: probe.forward(zz)), dtype=np.float64)

    dz = (eps * v).astype(z.dtype)
    return float(np.linalg.norm(f(z + dz) - f(z - dz)) / (2 * eps))


SATURATED = 1e-2   # a gain below this: the input sits where forward is flat


def _overfit(report, layer, x, steps, threshold, lr, seed):
    n = len(x)
    check = "overfit 1 sample" if n == 1 else f"overfit {n} samples"
    try:
        model = guard.fresh(layer, seed)
        stem = LinearStem(x.shape[1:], x.dtype)
        try:
            out = np.asarray(model.forward(stem.forward(x)))
        except ValueError as err:
            if n > 1:
                raise
            report.add(check, True, f"skipped: the layer refuses a batch of one "
                       f"({error_text(err)})")
            return
        if out[0].size < 2:
            report.add(check, True, "skipped: one output value per sample leaves nothing to "
                       "classify")
            return
        head = Head(out[0].size, min(CLASSES, out[0].size))
        # each sample's label: the class the untrained model ranks last -- among the classes
        # with a nonzero value: a group of zeros is likely dead (ReLU of negative inputs), out
        # of reach of any gradient
        out = np.asarray(in_eval_mode(model, lambda: model.forward(stem.forward(x))))
        alive = ((out.reshape(n, -1) != 0) @ (head.W > 0)) > 0            # (N, K)
        y = np.argmin(np.where(alive, head.forward(out), np.inf), axis=1)
        optimizer = Adam([stem, model, head], lr=lr)
        step, loss = 0, evaluate(model, stem, head, x, y)
        while loss >= threshold and np.isfinite(loss) and step < steps:
            out = np.asarray(model.forward(stem.forward(x)))
            train_loss, dlogits = cross_entropy(head.forward(out), y)
            if train_loss < threshold:          # low in training mode: done too
                loss = train_loss
                break
            dout = head.backward(dlogits).reshape(out.shape).astype(out.dtype)
            stem.backward(model.backward(dout))
            optimizer.step()
            step += 1
            loss = evaluate(model, stem, head, x, y)
        flat = None
        if not loss < threshold and np.isfinite(loss):
            try:
                flat = min(gain(model, stem.forward(x), seed),
                           gain(guard.fresh(layer, seed), x, seed))
            except Exception:          # no gain, no verdict on saturation: the stall stands
                flat = None
    except BaseException as err:
        guard.layer_error(err)
        report.add(check, False, error_text(err) + guard.error_kind(err))
        return
    if loss < threshold:
        report.add(check, True, f"loss {loss:.4f} < {threshold:g} after {step} steps",
                   steps=step, loss=loss)
    elif not np.isfinite(loss):
        report.add(check, False, f"the loss became {loss} after {step} steps: forward's output "
                   "is not finite (an exp that overflows, a log or division near 0?); see the "
                   "row finite output", steps=step, loss=loss)
    elif flat is not None and flat < SATURATED:
        largest = float(np.max(np.abs(x))) if x.size else 0.0
        report.add(check, True, f"inconclusive: loss still {loss:.4f} after {step} steps, "
                   f"because x saturates the layer: its output moves only {flat:.1e} per unit "
                   f"of input here (largest |x| {largest:.3g}), so every gradient through it is "
                   "tiny; rescale x to entries of order 1 (e.g. x / x.std()) to test learning",
                   steps=step, loss=loss, inconclusive=True)
    else:
        report.add(check, False, f"loss still {loss:.4f} (not < {threshold:g}) after {step} "
                   "steps: the gradient does not lead the optimizer downhill", steps=step,
                   loss=loss)
