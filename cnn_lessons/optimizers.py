"""Optimizers: update every layer's ``params`` in place from its ``grads``.

With ``g = grad + weight_decay * p`` (L2 weight decay folded into the gradient, as PyTorch does):

SGD, momentum ``mu``, learning rate ``lr``::

    v = mu * v + g                 (v starts at 0, so the first v is g)
    p -= lr * (g + mu * v)  if nesterov  else  lr * v

Adam, ``betas = (b1, b2)``, step ``t = 1, 2, ...``::

    m = b1 m + (1 - b1) g ;  v = b2 v + (1 - b2) g**2
    p -= lr * (m / (1 - b1**t)) / (sqrt(v / (1 - b2**t)) + eps)

Both take the layers to update: a list of layers, a single layer, or a model with ``.layers``.
Chapter 5 writes the two updates as functions; here they are the ``_update`` methods.  The
twins :class:`cnn_lessons.fast.FastSGD` and :class:`cnn_lessons.fast.FastAdam` update the
same numbers faster.
"""

from __future__ import annotations

import numpy as np

from .validate import number


def _parameters(layers):
    """``[(layer, name), ...]`` for every learnable array of ``layers``."""
    if hasattr(layers, "layers"):
        layers = layers.layers
    elif hasattr(layers, "params"):
        layers = [layers]
    if not isinstance(layers, (list, tuple)) or not all(
            isinstance(getattr(layer, "params", None), dict) for layer in layers):
        raise ValueError(f"expected a model, a layer or a list of layers (objects with a "
                         f"'params' dict), got {layers!r:.80}")
    return [(layer, name) for layer in layers for name in layer.params]


class Optimizer:
    state_names: tuple[str, ...] = ()   # arrays kept per parameter, shaped like it

    def __init__(self, layers, lr: float, weight_decay: float = 0.0):
        where = type(self).__name__
        self.lr = number(where, "lr", lr, 0, low_open=True)
        self.weight_decay = number(where, "weight_decay", weight_decay, 0)
        try:
            self.slots = _parameters(layers)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
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

    def step(self):
        """Apply one update to every parameter, in place."""
        self.t += 1
        for i, (layer, name) in enumerate(self.slots):
            p = layer.params[name]
            self._update(p, self._gradient(layer, name, p), self.state_of(i, p))

    def _update(self, p, g, state):  # pragma: no cover - abstract
        """Update ``p`` in place from its gradient ``g`` and its ``state`` arrays (all ``p``'s
        shape)."""
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay."""

    def __init__(self, layers, lr: float = 0.01, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0):
        super().__init__(layers, lr, weight_decay)
        self.momentum = number(type(self).__name__, "momentum", momentum, 0, 1, high_open=True)
        if nesterov and momentum <= 0:
            raise ValueError("SGD: Nesterov momentum requires momentum > 0")
        self.nesterov = bool(nesterov)
        self.state_names = ("v",) if self.momentum else ()

    def config(self):
        return {**super().config(), "momentum": self.momentum, "nesterov": self.nesterov}

    def _update(self, p, g, state):
        lr, momentum = float(self.lr), self.momentum   # Python floats keep float32 float32
        if momentum:
            v = state["v"]
            v *= momentum
            v += g
            g = g + momentum * v if self.nesterov else v
        p -= lr * g


class Adam(Optimizer):
    """Adam with bias correction and (coupled, PyTorch-style) L2 weight decay."""

    state_names = ("m", "v")

    def __init__(self, layers, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(layers, lr, weight_decay)
        where = type(self).__name__
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"{where}: betas must be a pair (b1, b2), got {betas!r}")
        self.betas = tuple(number(where, f"betas[{i}]", b, 0, 1, high_open=True)
                           for i, b in enumerate(betas))
        self.eps = number(where, "eps", eps, 0, low_open=True)

    def config(self):
        return {**super().config(), "betas": list(self.betas), "eps": self.eps}

    def _update(self, p, g, state):
        (b1, b2), t, m, v = self.betas, self.t, state["m"], state["v"]
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * g * g
        m_hat = m / (1 - b1 ** t)
        v_hat = v / (1 - b2 ** t)
        p -= float(self.lr) * m_hat / (np.sqrt(v_hat) + self.eps)
