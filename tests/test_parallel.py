"""DataParallel: the same numbers as one process, failures reported and recovered from,
processes and shared memory released."""

import os
from multiprocessing import shared_memory

import numpy as np
import pytest

from cnn_lessons import (FastBatchNorm, FastConv2D, FastFlatten, FastMaxPool2D, Adam, BatchNorm, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU,
                         Sequential, SoftmaxCrossEntropy)
from cnn_lessons.parallel import DataParallel, batch_parts, cores, why_not
from cnn_lessons.training import train

pytestmark = pytest.mark.skipif(why_not(Sequential([ReLU()])) is not None,
                                reason="DataParallel does not run on this machine")


def small_net(seed=0, dtype=np.float64, dropout=0.0, fast=False):
    """A small CNN of the taught layers, or (``fast=True``) of their fast twins."""
    rng = np.random.default_rng(seed)
    conv, pool, norm, flat = ((FastConv2D, FastMaxPool2D, FastBatchNorm, FastFlatten) if fast
                              else (Conv2D, MaxPool2D, BatchNorm, Flatten))
    layers = [conv(1, 4, 3, padding=1, rng=rng, dtype=dtype), pool(2),
              norm(4, dtype=dtype), ReLU(), flat(), Dense(64, 6, rng=rng, dtype=dtype),
              norm(6, dtype=dtype), ReLU(), Dense(6, 3, rng=rng, dtype=dtype)]
    if dropout:
        layers.insert(-1, Dropout(dropout, rng=rng))
    return Sequential(layers)


def batch(n, seed=1, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 1, 8, 8)).astype(dtype), rng.integers(0, 3, n)


def grads(model):
    return {(i, k): g.copy() for i, layer in enumerate(model.layers) for k, g in layer.grads.items()}


def test_spawned_replicas_train_like_one_process():
    """The start method of macOS and Windows, forced here: replicas that import the package
    afresh instead of inheriting this process give the same forward, gradients and steps."""
    x, y = batch(8)
    alone, split = small_net(fast=True), small_net(fast=True)
    loss = SoftmaxCrossEntropy()
    opt_a, opt_s = Adam(alone, lr=0.01), Adam(split, lr=0.01)
    with DataParallel(split, 8, (1, 8, 8), 2, dtype=np.float64, optimizer=opt_s,
                      start_method="spawn") as dp:
        assert type(dp._workers[0]).__name__ == "SpawnProcess"
        for _ in range(2):
            loss.forward(alone.forward(x), y)
            alone.backward(loss.backward(), input_grad=False)
            opt_a.step()
            loss.forward(dp.forward(x), y)
            dp.backward(loss.backward())
            dp.step()
        np.testing.assert_allclose(dp.forward(x), alone.forward(x), rtol=1e-9, atol=1e-12)


def test_batch_parts_cover_the_batch_in_order():
    assert batch_parts(64, 2) == [slice(0, 32), slice(32, 64)]
    assert batch_parts(5, 2) == [slice(0, 2), slice(2, 5)]
    assert batch_parts(1, 4) == [slice(0, 1)]
    for n in range(1, 20):
        for parts in range(1, 6):
            slices = batch_parts(n, parts)
            assert [s.start for s in slices[1:]] == [s.stop for s in slices[:-1]]
            assert slices[0].start == 0 and slices[-1].stop == n
            assert min(s.stop - s.start for s in slices) >= 1


def test_cores_reads_the_environment(monkeypatch):
    monkeypatch.setenv("CNN_LESSONS_CORES", "3")
    assert cores() == 3
    monkeypatch.setenv("CNN_LESSONS_CORES", "0")
    with pytest.raises(ValueError, match="CNN_LESSONS_CORES"):
        cores()
    monkeypatch.delenv("CNN_LESSONS_CORES")
    assert cores() >= 1


@pytest.mark.parametrize("fast", [False, True], ids=["taught", "fast"])
@pytest.mark.parametrize("n, processes", [(8, 2), (7, 2), (9, 3), (2, 3)])
def test_forward_and_backward_equal_one_process(n, processes, fast):
    """float64: logits, every gradient and batch norm's running statistics agree with the
    model run on the whole batch in one process (synchronised batch statistics)."""
    x, y = batch(n)
    alone, split = small_net(fast=fast), small_net(fast=fast)
    loss = SoftmaxCrossEntropy()
    logits = alone.forward(x)
    loss.forward(logits, y)
    alone.backward(loss.backward(), input_grad=False)
    with DataParallel(split, 9, (1, 8, 8), processes, dtype=np.float64) as dp:
        out = dp.forward(x)
        loss.forward(out, y)
        assert dp.backward(loss.backward()) is None
    np.testing.assert_allclose(out, logits, rtol=1e-12, atol=1e-12)
    expected = grads(alone)
    for key, g in grads(split).items():        # (biases just before a batch norm have a
        np.testing.assert_allclose(g, expected[key], rtol=1e-10, atol=1e-13,   # gradient of
                                   err_msg=str(key))                           # 0: rounding)
    for mine, theirs in zip(split.layers, alone.layers):
        for name, buf in getattr(mine, "buffers", {}).items():
            np.testing.assert_allclose(buf, theirs.buffers[name], rtol=1e-12, atol=1e-14)


def test_evaluation_mode_uses_the_running_statistics_in_every_process():
    """After a few training batches, evaluation in float64 gives the one-process logits to
    rounding: the replicas normalise with the model's running statistics, not their own."""
    x, y = batch(8)
    alone, split = small_net(), small_net()
    for net in (alone, split):
        for layer in net.layers:
            if "running_var" in getattr(layer, "buffers", {}):
                layer.buffers["running_mean"][...] = np.linspace(-1, 1, layer.num_features)
                layer.buffers["running_var"][...] = np.linspace(0.5, 2, layer.num_features)
    with DataParallel(split, 8, (1, 8, 8), 2, dtype=np.float64) as dp:
        dp.eval()
        out = dp.forward(x)
    alone.eval()
    np.testing.assert_allclose(out, alone.forward(x), rtol=1e-12, atol=1e-13)


def test_replicas_follow_the_parameters_after_an_optimizer_step():
    x, y = batch(8)
    alone, split = small_net(), small_net()
    loss = SoftmaxCrossEntropy()
    opt_a, opt_s = Adam(alone, lr=0.01), Adam(split, lr=0.01)
    with DataParallel(split, 8, (1, 8, 8), 2, dtype=np.float64) as dp:
        for _ in range(3):
            loss.forward(alone.forward(x), y)
            alone.backward(loss.backward())
            opt_a.step()
            loss.forward(dp.forward(x), y)
            dp.backward(loss.backward())
            opt_s.step()
        np.testing.assert_allclose(dp.forward(x), alone.forward(x), rtol=1e-10, atol=1e-12)


def test_the_optimizer_step_is_shared_and_its_state_comes_back():
    x, y = batch(8)
    alone, split = small_net(), small_net()
    loss = SoftmaxCrossEntropy()
    opt_a, opt_s = Adam(alone, lr=0.01), Adam(split, lr=0.01)
    own = [layer.params[name] for layer, name in opt_s.slots]
    with DataParallel(split, 8, (1, 8, 8), 2, dtype=np.float64, optimizer=opt_s) as dp:
        assert dp.optimizer is opt_s
        for _ in range(3):
            loss.forward(alone.forward(x), y)
            alone.backward(loss.backward())
            opt_a.step()
            loss.forward(dp.forward(x), y)
            dp.backward(loss.backward())
            dp.step()
    # A bias just before a batch norm has a gradient of exactly 0 in theory and of rounding
    # noise (1e-17) in practice, which Adam scales up to steps of size lr: those parameters
    # wander by noise in both runs and are not compared.
    noise = {(i, name) for i, layer in enumerate(alone.layers)
             for name, g in layer.grads.items() if np.abs(g).max() < 1e-12}
    assert noise == {(0, "b"), (5, "b")}
    # the model's own arrays again, holding the trained values
    assert all(layer.params[name] is arr for (layer, name), arr in zip(opt_s.slots, own))
    for i, (a, s) in enumerate(zip(alone.layers, split.layers)):
        for name in a.params:
            if (i, name) not in noise:
                np.testing.assert_allclose(s.params[name], a.params[name], rtol=1e-10)
    for k, (layer, name) in enumerate(opt_s.slots):      # private arrays again, equal to
        for key, arr in opt_s.state[k].items():           # one process's
            assert arr.flags.owndata and arr.flags.writeable
            if (split.layers.index(layer), name) not in noise:
                np.testing.assert_allclose(arr, opt_a.state[k][key], rtol=1e-9)
    assert opt_s.t == opt_a.t == 3


def test_an_optimizer_on_other_layers_is_not_shared():
    model = small_net()
    reversed_opt = Adam(list(reversed(model.layers)))
    with DataParallel(model, 8, (1, 8, 8), 2, dtype=np.float64, optimizer=reversed_opt) as dp:
        assert dp.optimizer is None
        with pytest.raises(ValueError, match="no optimizer"):
            dp.step()


def test_train_on_two_cores_matches_one_core():
    x, y = batch(40, seed=3)
    histories = []
    for n_cores in (1, 2):
        model = small_net(seed=4)
        h = train(model, x, y, epochs=2, batch_size=16, optimizer=Adam(model, lr=0.01),
                  seed=5, progress=False, cores=n_cores)
        histories.append((h["batch"]["loss"], model.forward(x)))
    np.testing.assert_allclose(histories[1][0], histories[0][0], rtol=1e-9)
    np.testing.assert_allclose(histories[1][1], histories[0][1], rtol=1e-8, atol=1e-10)


def test_dropout_replicas_are_seeded_from_the_model():
    x, y = batch(16)
    runs = []
    for _ in range(2):
        model = small_net(seed=6, dropout=0.5)
        h = train(model, x, y, epochs=1, batch_size=16, optimizer=Adam(model), seed=0,
                  progress=False, cores=2)
        runs.append(h["batch"]["loss"])
    assert runs[0] == runs[1]


def test_a_model_with_unknown_layers_trains_in_one_process():
    class Doubling(ReLU):
        pass

    model = Sequential([Flatten(), Dense(64, 3), Doubling()])
    assert "not one of the package's layers" in why_not(model)
    with pytest.raises(ValueError, match="DataParallel: layer 2"):
        DataParallel(model, 8, (1, 8, 8), 2)
    x, y = batch(8, dtype=np.float32)
    h = train(model, x, y, epochs=1, batch_size=4, optimizer=Adam(model), progress=False, cores=2)
    assert len(h["batch"]["loss"]) == 2


def test_bad_input_is_refused_by_name():
    with DataParallel(small_net(), 8, (1, 8, 8), 2, dtype=np.float64) as dp:
        with pytest.raises(ValueError, match=r"DataParallel: built for inputs \(N, 1, 8, 8\)"):
            dp.forward(np.zeros((4, 1, 6, 6)))
        with pytest.raises(ValueError, match="float64"):
            dp.forward(np.zeros((4, 1, 8, 8), np.float32))
        with pytest.raises(ValueError, match="at most 8"):
            dp.forward(np.zeros((12, 1, 8, 8)))
        with pytest.raises(ValueError, match="last forward"):
            dp.backward(np.zeros((4, 3)))


def test_a_failure_in_this_process_releases_the_replica_and_the_next_step_works():
    model = small_net()
    x, y = batch(8)
    with DataParallel(model, 8, (1, 8, 8), 2, dtype=np.float64) as dp:
        dense = model.layers[5]
        original = dense.forward

        def broken(h):
            raise ArithmeticError("boom")

        dense.forward = broken              # after the first batch norm: the replica waits
        with pytest.raises(ArithmeticError, match="boom"):      # there for the second one
            dp.forward(x)
        dense.forward = original
        out = dp.forward(x)
    np.testing.assert_allclose(out, small_net().forward(x), rtol=1e-12, atol=1e-12)


def test_an_interrupt_while_waiting_leaves_a_clean_state():
    """Ctrl-C in a notebook usually lands while this process waits for the replica."""
    model = small_net()
    x, _ = batch(8)
    with DataParallel(model, 8, (1, 8, 8), 2, dtype=np.float64) as dp:
        real, calls = dp._collect, []

        def interrupted():
            if not calls:
                calls.append(1)
                raise KeyboardInterrupt
            return real()

        dp._collect = interrupted
        with pytest.raises(KeyboardInterrupt):
            dp.forward(x)
        first = dp.forward(x)
        second = dp.forward(x)
    expected = small_net().forward(x)
    np.testing.assert_allclose(first, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(second, expected, rtol=1e-12, atol=1e-12)


def test_a_dead_replica_is_reported_not_waited_for():
    x, _ = batch(8)
    with DataParallel(small_net(), 8, (1, 8, 8), 2, dtype=np.float64) as dp:
        dp._workers[0].kill()
        dp._workers[0].join()
        with pytest.raises(RuntimeError, match="replica process 1 died"):
            dp.forward(x)


def test_close_stops_the_processes_and_frees_the_memory():
    dp = DataParallel(small_net(), 8, (1, 8, 8), 2, dtype=np.float64)
    name, workers = dp._shm.name, list(dp._workers)
    dp.forward(batch(8)[0])
    dp.close()
    assert not any(w.is_alive() for w in workers)
    with pytest.raises(FileNotFoundError):
        shared_memory.SharedMemory(name=name)
    dp.close()                                  # twice is harmless


def test_a_failure_in_a_replica_is_reported_and_the_next_step_works(tmp_path, monkeypatch):
    """A replica that fails before a meeting (here: in backward, before the batch norms')
    never comes to it: this process reports the replica's error instead of waiting."""
    flag = tmp_path / "fail"
    flag.touch()
    main, original = os.getpid(), Flatten.backward

    def backward(self, dout):
        if os.getpid() != main and flag.exists():
            raise ArithmeticError("replica boom")
        return original(self, dout)

    monkeypatch.setattr(Flatten, "backward", backward)     # before the replica is forked
    x, y = batch(8)
    loss = SoftmaxCrossEntropy()
    with DataParallel(small_net(), 8, (1, 8, 8), 2, dtype=np.float64) as dp:
        loss.forward(dp.forward(x), y)
        with pytest.raises(RuntimeError, match="(?s)replica process 1 failed.*replica boom"):
            dp.backward(loss.backward())
        flag.unlink()
        loss.forward(dp.forward(x), y)
        dp.backward(loss.backward())
        got = grads(dp.model)
    one = small_net()
    loss.forward(one.forward(x), y)
    one.backward(loss.backward())
    for key, g in grads(one).items():
        np.testing.assert_allclose(got[key], g, rtol=1e-10, atol=1e-12)


def test_gradients_are_shared_views_until_close_then_the_models_own():
    x, y = batch(8)
    loss = SoftmaxCrossEntropy()
    model = small_net()
    dp = DataParallel(model, 8, (1, 8, 8), 2, dtype=np.float64)
    loss.forward(dp.forward(x), y)
    dp.backward(loss.backward())
    w = model.layers[0].grads["W"]
    assert np.may_share_memory(w, np.frombuffer(dp._shm.buf, np.uint8))
    kept = w.copy()
    dp.close()
    after = model.layers[0].grads["W"]
    assert after is not w and after.flags.owndata
    np.testing.assert_array_equal(after, kept)
