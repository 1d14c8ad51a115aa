"""Optimizers: every step against the textbook update written here (and against PyTorch when it
is installed), in float32 and float64, updating the very arrays the layers read.  The tests
that take ``fast`` run on the taught optimizers and on their twins in :mod:`cnn_lessons.fast`."""

import numpy as np
import pytest

from cnn_lessons import SGD, Adam, Dense, ReLU, Sequential, fast
from cnn_lessons.fast import FastAdam, FastSGD

TWINS = {SGD: FastSGD, Adam: FastAdam}


@pytest.fixture(params=[False, True], ids=["taught", "fast"])
def twin(request):
    """``twin(cls)``: the taught optimizer class, or its fast twin."""
    return (lambda cls: TWINS[cls]) if request.param else (lambda cls: cls)

STEPS = 5


def make_layers(dtype, seed=0):
    """Two Dense layers (a ReLU between them, which has nothing to update)."""
    rng = np.random.default_rng(seed)
    layers = [Dense(3, 4, rng=rng, dtype=dtype), ReLU(), Dense(4, 2, rng=rng, dtype=dtype)]
    for layer in layers:
        for p in layer.params.values():
            p[...] = rng.standard_normal(p.shape)
    return layers


def gradient_sequence(layers, dtype, seed=1):
    """``STEPS`` random gradients for every parameter: ``[{(i, name): g}, ...]``."""
    rng = np.random.default_rng(seed)
    return [{(i, name): rng.standard_normal(p.shape).astype(dtype)
             for i, layer in enumerate(layers) for name, p in layer.params.items()}
            for _ in range(STEPS)]


def run(optimizer_cls, layers, grads, **kwargs):
    """Step the optimizer through the gradients; yield a copy of every parameter after each step."""
    opt = optimizer_cls(layers, **kwargs)
    for step_grads in grads:
        for (i, name), g in step_grads.items():
            layers[i].grads[name] = g
        opt.step()
        yield {(i, name): p.copy() for i, layer in enumerate(layers)
               for name, p in layer.params.items()}


# -- textbook updates, one parameter at a time, in float64 --------------------------------------

def sgd_textbook(p, grads, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
    p = p.astype(np.float64)
    velocity = None
    for g in grads:
        g = g.astype(np.float64) + weight_decay * p
        if momentum:
            velocity = g if velocity is None else momentum * velocity + g
            direction = g + momentum * velocity if nesterov else velocity
        else:
            direction = g
        p = p - lr * direction
        yield p


def adam_textbook(p, grads, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
    p = p.astype(np.float64)
    b1, b2 = betas
    m = v = 0.0
    for t, g in enumerate(grads, start=1):
        g = g.astype(np.float64) + weight_decay * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1 ** t)
        v_hat = v / (1 - b2 ** t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
        yield p


SGD_CASES = [
    dict(lr=0.1),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.8, nesterov=True),
    dict(lr=0.1, weight_decay=0.01),
    dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1),
]
ADAM_CASES = [
    dict(lr=1e-3),
    dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6),
    dict(lr=0.01, weight_decay=0.05),
]
TOL = {np.float64: dict(rtol=1e-12, atol=1e-13), np.float32: dict(rtol=1e-5, atol=1e-6)}


def compare_with_textbook(optimizer_cls, textbook, kwargs, dtype):
    layers = make_layers(dtype)
    start = {(i, n): p.copy() for i, l in enumerate(layers) for n, p in l.params.items()}
    grads = gradient_sequence(layers, dtype)
    expected = {key: list(textbook(start[key], [g[key] for g in grads], **kwargs)) for key in start}
    for t, params in enumerate(run(optimizer_cls, layers, grads, **kwargs)):
        for key, value in params.items():
            assert value.dtype == dtype
            np.testing.assert_allclose(value, expected[key][t], **TOL[dtype],
                                       err_msg=f"step {t + 1}, parameter {key}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kwargs", SGD_CASES, ids=str)
def test_sgd_matches_the_textbook_update(twin, kwargs, dtype):
    compare_with_textbook(twin(SGD), sgd_textbook, kwargs, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kwargs", ADAM_CASES, ids=str)
def test_adam_matches_the_textbook_update(twin, kwargs, dtype):
    compare_with_textbook(twin(Adam), adam_textbook, kwargs, dtype)


@pytest.mark.parametrize("cls, textbook, kwargs", [(FastSGD, sgd_textbook, SGD_CASES[-1]),
                                                   (FastAdam, adam_textbook, ADAM_CASES[-1])])
def test_a_large_parameter_is_updated_block_by_block_with_the_same_numbers(
        cls, textbook, kwargs, monkeypatch):
    """Parameters larger than fast.BLOCK are updated in blocks (for the cache); with a
    block of 7 values every parameter here is cut into blocks, and a last, shorter one."""
    monkeypatch.setattr(fast, "BLOCK", 7)
    compare_with_textbook(cls, textbook, kwargs, np.float64)


def test_a_non_contiguous_parameter_is_updated_in_place(twin, monkeypatch):
    monkeypatch.setattr(fast, "BLOCK", 7)
    layer = Dense(6, 5, rng=0, dtype=np.float64)
    layer.params["W"] = np.asfortranarray(layer.params["W"])
    w = layer.params["W"]
    before = w.copy()
    layer.grads = {"W": np.ones_like(w), "b": np.ones(5)}
    twin(Adam)(layer, lr=0.1).step()
    assert layer.params["W"] is w and not w.flags.c_contiguous
    np.testing.assert_allclose(w, before - 0.1, rtol=1e-6)   # Adam's first step: lr * sign(g)


def test_adam_first_step_moves_each_weight_by_about_lr(twin):
    """With bias correction the first step is lr * g / (|g| + eps): the sign of g times lr."""
    layer = Dense(3, 2, rng=0, dtype=np.float64)
    before = layer.params["W"].copy()
    layer.grads["W"] = np.array([[1e-3, -5.0], [2.0, -1e-2], [30.0, 0.5]])
    layer.grads["b"] = np.array([1.0, -1.0])
    twin(Adam)([layer], lr=0.01).step()
    np.testing.assert_allclose(before - layer.params["W"], 0.01 * np.sign(layer.grads["W"]),
                               rtol=1e-5)


# -- against PyTorch ----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, kwargs", [("SGD", c) for c in SGD_CASES]
                         + [("Adam", c) for c in ADAM_CASES], ids=str)
def test_optimizers_match_torch(twin, name, kwargs, dtype):
    torch = pytest.importorskip("torch")
    ours = twin({"SGD": SGD, "Adam": Adam}[name])
    layers = make_layers(dtype)
    grads = gradient_sequence(layers, dtype)
    keys = [(i, n) for i, l in enumerate(layers) for n in l.params]
    tensors = {k: torch.tensor(layers[k[0]].params[k[1]].copy(), requires_grad=True) for k in keys}
    torch_kwargs = dict(kwargs)
    if "betas" in torch_kwargs:
        torch_kwargs["betas"] = tuple(torch_kwargs["betas"])
    reference = getattr(torch.optim, name)(list(tensors.values()), **torch_kwargs)
    for t, params in enumerate(run(ours, layers, grads, **kwargs)):
        for k in keys:
            tensors[k].grad = torch.from_numpy(grads[t][k].copy())
        reference.step()
        for k in keys:
            np.testing.assert_allclose(params[k], tensors[k].detach().numpy(), **TOL[dtype],
                                       err_msg=f"{name} step {t + 1}, parameter {k}")


def test_adam_flushes_a_decaying_first_moment_instead_of_making_it_subnormal():
    """A unit whose gradient stops: m shrinks by b1 per step and would pass through float32's
    subnormal range (slow arithmetic); the fast Adam zeroes it first."""
    layer = Dense(1, 4, dtype=np.float32)
    opt = FastAdam([layer], lr=1e-3)
    tiny = np.finfo(np.float32).tiny                      # the smallest normal float32
    for t in range(1200):                                 # 0.9**1200 ~ 1e-55
        layer.grads = {"W": np.full((1, 4), 1.0 if t == 0 else 0.0, np.float32),
                       "b": np.zeros(4, np.float32)}
        opt.step()
        m = opt.state[0]["m"]
        assert not np.any((m != 0) & (np.abs(m) < tiny)), f"subnormal m after step {t + 1}"
    assert np.all(opt.state[0]["m"] == 0)


@pytest.mark.parametrize("cls, kwargs", [(FastSGD, dict(lr=0.1)),
                                         (FastSGD, dict(lr=0.1, momentum=0.9, nesterov=True,
                                                        weight_decay=0.01)),
                                         (FastAdam, dict(lr=0.01, weight_decay=0.01))], ids=str)
@pytest.mark.parametrize("parts", [2, 3])
def test_a_step_in_stretches_equals_the_whole_step(cls, kwargs, parts):
    """step(part=(k, K)) for every k updates exactly what step() does (DataParallel lets
    each process do one stretch)."""
    whole, split = make_layers(np.float64), make_layers(np.float64)
    grads = gradient_sequence(whole, np.float64)
    opt_whole, opt_split = cls(whole, **kwargs), cls(split, **kwargs)
    for t in range(4):
        for layers in (whole, split):
            for (i, name), g in grads[t].items():
                layers[i].grads[name] = g.copy()
        opt_whole.step()
        for k in range(parts):
            opt_split.t = t                  # each process counts its own steps
            opt_split.step(part=(k, parts))
        for a, b in zip(whole, split):
            for name in a.params:
                np.testing.assert_array_equal(b.params[name], a.params[name])


# -- what gets updated --------------------------------------------------------------------------

@pytest.mark.parametrize("optimizer_cls", [SGD, Adam])
def test_params_are_updated_in_place(twin, optimizer_cls):
    layers = make_layers(np.float64)
    model = Sequential(layers)
    arrays = {(i, n): p for i, l in enumerate(layers) for n, p in l.params.items()}
    before = {k: p.copy() for k, p in arrays.items()}
    x = np.random.default_rng(2).standard_normal((5, 3))
    model.backward(np.ones_like(model.forward(x)))
    twin(optimizer_cls)(model, lr=0.1).step()
    for (i, n), p in arrays.items():
        assert layers[i].params[n] is p                      # the same object ...
        assert not np.array_equal(p, before[(i, n)])         # ... with new values


@pytest.mark.parametrize("target", ["layer", "list", "model"])
def test_optimizer_accepts_a_layer_a_list_or_a_model(twin, target):
    layer = Dense(2, 2, rng=0, dtype=np.float64)
    layer.grads = {"W": np.ones((2, 2)), "b": np.ones(2)}
    before = {k: p.copy() for k, p in layer.params.items()}
    arg = {"layer": layer, "list": [layer, ReLU()], "model": Sequential([ReLU(), layer])}[target]
    twin(SGD)(arg, lr=0.5).step()
    for k, p in layer.params.items():
        np.testing.assert_allclose(p, before[k] - 0.5)


# -- bad use ------------------------------------------------------------------------------------

def test_step_before_backward_is_a_runtime_error(twin):
    layer = Dense(2, 2)
    with pytest.raises(RuntimeError, match="SGD.*Dense.*backward"):
        twin(SGD)([layer]).step()


def test_gradient_of_the_wrong_shape_is_refused(twin):
    layer = Dense(2, 3)
    layer.grads = {"W": np.ones((3, 2), np.float32), "b": np.ones(3, np.float32)}
    with pytest.raises(ValueError, match=r"Adam.*\(3, 2\).*\(2, 3\)"):
        twin(Adam)([layer]).step()


@pytest.mark.parametrize("make", [
    lambda l: SGD(l, lr=0), lambda l: SGD(l, lr=-1), lambda l: Adam(l, lr=0),
    lambda l: SGD(l, lr=0.1, nesterov=True), lambda l: Adam(l, betas=(1.0, 0.999)),
    lambda l: Adam(l, betas=(0.9, -0.1)),
])
def test_bad_hyperparameters_are_refused(make):
    with pytest.raises(ValueError):
        make([Dense(2, 2)])


@pytest.mark.parametrize("cls, kwargs", [(SGD, dict(lr=0.1, momentum=0.9)),
                                         (Adam, dict(lr=0.01, weight_decay=0.01))], ids=str)
def test_the_fast_twin_shares_the_taught_optimizers_state(cls, kwargs):
    """fast.twin(opt) steps the same parameters with the same state, lr and step count, so the
    two may take turns; the numbers equal the taught optimizer's alone."""
    alone, shared = make_layers(np.float64), make_layers(np.float64)
    grads = gradient_sequence(alone, np.float64)
    opt_alone, opt = cls(alone, **kwargs), cls(shared, **kwargs)
    quick = fast.twin(opt)
    assert type(quick) is TWINS[cls] and quick.state is opt.state
    for t in range(STEPS):
        for layers in (alone, shared):
            for (i, name), g in grads[t].items():
                layers[i].grads[name] = g
        opt_alone.step()
        (quick if t % 2 else opt).step()
        opt.lr = quick.lr = opt.lr * 0.9 if t == 2 else opt.lr
        opt_alone.lr = opt.lr
    assert opt.t == quick.t == STEPS
    for a, b in zip(alone, shared):
        for name in a.params:
            np.testing.assert_allclose(b.params[name], a.params[name], rtol=1e-12)
    assert fast.twin(object) is object
