"""Optimizers: update every layer's ``params`` in place from its ``grads``.

With ``g = grad + weight_decay * p`` (L2 weight decay folded into the gradient, as PyTorch does):

SGD, momentum ``mu``, learning rate ``lr``::

    v = mu * v + g                 (v starts at 0, so the first v is g)
    p -= lr * (g + mu * v)  if nesterov  else  lr * v

Adam, ``betas = (b1, b2)``, step ``t = 1, 2, ...``::

    m = b1 m + (1 - b1) g ;  v = b2 v + (1 - b2) g**2
    p -= lr * (m / (1 - b1**t)) / (sqrt(v / (1 - b2**t)) + eps)

Both take the layers to update: a list of layers, a single layer, or a model with ``.layers``.
"""

from __future__ import annotations

import numpy as np


def _parameters(layers):
    """``[(layer, name), ...]`` for every learnable array of ``layers``."""
    if hasattr(layers, "layers"):
        layers = layers.layers
    elif hasattr(layers, "params"):
        layers = [layers]
    return [(layer, name) for layer in layers for name in layer.params]


def stretch(n: int, k: int, parts: int) -> slice:
    """The ``k``-th of ``parts`` nearly equal stretches of ``range(n)``."""
    return slice(n * k // parts, n * (k + 1) // parts)


BLOCK = 1 << 16
"""Values per block when a large parameter is updated (see :meth:`Optimizer.step`)."""


class Optimizer:
    state_names: tuple[str, ...] = ()   # arrays kept per parameter, shaped like it

    def __init__(self, layers, lr: float, weight_decay: float = 0.0):
        if lr <= 0:
            raise ValueError(f"{type(self).__name__}: lr must be positive, got {lr}")
        self.slots = _parameters(layers)
        self.lr, self.weight_decay = float(lr), float(weight_decay)
        self.t = 0
        self.state: dict[int, dict[str, np.ndarray]] = {}

    def _gradient(self, layer, name, p) -> np.ndarray:
        if name not in layer.grads:
            raise RuntimeError(f"{type(self).__name__}: {layer!r} has no gradient for {name!r}; "
                               "call backward() before step()")
        g = layer.grads[name]
        if g.shape != p.shape:
            raise ValueError(f"{type(self).__name__}: {layer!r} grads[{name!r}] has shape "
                             f"{g.shape}, params[{name!r}] has {p.shape}")
        if self.weight_decay:
            g = g + p.dtype.type(self.weight_decay) * p
        return g

    def state_of(self, i: int, p) -> dict[str, np.ndarray]:
        """The state arrays of parameter ``i`` (``self.slots[i]``), zeros the first time."""
        state = self.state.setdefault(i, {})
        for key in self.state_names:
            if key not in state:
                state[key] = np.zeros_like(p)
        return state

    def config(self) -> dict:
        """Constructor arguments that rebuild this optimizer on other layers."""
        return {"lr": self.lr, "weight_decay": self.weight_decay}

    def step(self, part=None):
        """Apply one update to every parameter.

        ``part=(k, K)``: update only the ``k``-th of ``K`` stretches of every parameter
        (flattened; parameters must be contiguous). The update is elementwise, so the
        stretches can be done by different processes (:class:`cnn_lessons.parallel.DataParallel`).
        """
        self.t += 1
        for i, (layer, name) in enumerate(self.slots):
            p = layer.params[name]
            g = self._gradient(layer, name, p)
            state = self.state_of(i, p)
            if part is None and (p.size <= BLOCK or not p.flags.c_contiguous):
                self._update(p, g, state)
                continue
            # A large parameter (or a stretch of one) is updated block by block: the update
            # makes about ten passes over its arrays, and a block's arrays stay in the
            # processor's cache from one pass to the next, where a whole 400,000-value matrix
            # would not.  The update is elementwise, so the numbers are the same.
            rows = slice(0, p.size) if part is None else stretch(p.size, *part)
            flat_p, flat_g = p.reshape(-1), g.reshape(-1)
            flat_state = {key: a.reshape(-1) for key, a in state.items()}
            for start in range(rows.start, rows.stop, BLOCK):
                block = slice(start, min(start + BLOCK, rows.stop))
                self._update(flat_p[block], flat_g[block],
                             {key: a[block] for key, a in flat_state.items()})

    def _update(self, p, g, state):  # pragma: no cover - abstract
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay."""

    def __init__(self, layers, lr: float = 0.01, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0):
        super().__init__(layers, lr, weight_decay)
        if nesterov and momentum <= 0:
            raise ValueError("SGD: Nesterov momentum requires momentum > 0")
        self.momentum, self.nesterov = float(momentum), bool(nesterov)
        self.state_names = ("v",) if self.momentum else ()

    def config(self):
        return {**super().config(), "momentum": self.momentum, "nesterov": self.nesterov}

    def _update(self, p, g, state):
        lr = p.dtype.type(self.lr)  # a float64 scalar in a float32 update is much slower
        if self.momentum:
            mu = p.dtype.type(self.momentum)
            v = state["v"]
            v *= mu
            v += g
            g = g + mu * v if self.nesterov else v
        p -= lr * g


class Adam(Optimizer):
    """Adam with bias correction and (coupled, PyTorch-style) L2 weight decay."""

    state_names = ("m", "v")

    def __init__(self, layers, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(layers, lr, weight_decay)
        b1, b2 = betas
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(f"Adam: betas must lie in [0, 1), got {betas}")
        self.betas, self.eps = (float(b1), float(b2)), float(eps)

    def config(self):
        return {**super().config(), "betas": list(self.betas), "eps": self.eps}

    def _update(self, p, g, state):
        m, v, tmp = state["m"], state["v"], np.empty_like(p)
        f = p.dtype.type
        b1, b2 = self.betas
        m *= f(b1)
        m += f(1 - b1) * g
        v *= f(b2)
        np.multiply(g, g, out=tmp)
        tmp *= f(1 - b2)
        v += tmp
        # Units that never fire make m decay towards subnormal floats, which are many times
        # slower to compute with; zero them instead (they are below float32's normal range).
        # m shrinks by b1 per step, so looking every 16 steps is often enough.
        if self.t % 16 == 1:
            np.abs(m, out=tmp)
            m[tmp < f(1e-30)] = 0
        # p -= lr_t * m / (sqrt(v) * c + eps)  with  lr_t = lr / (1 - b1**t),
        # c = 1 / sqrt(1 - b2**t); written as  (lr_t / c) * m / (sqrt(v) + eps / c)
        step = self.lr / (1 - b1 ** self.t)
        c = 1.0 / np.sqrt(1 - b2 ** self.t)
        np.sqrt(v, out=tmp)
        tmp += f(self.eps / c)
        np.divide(m, tmp, out=tmp)
        tmp *= f(step / c)
        p -= tmp
