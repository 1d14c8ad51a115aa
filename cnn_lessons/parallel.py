"""Training on every core: data parallelism with processes.

Every image of a batch goes through the network on its own, except in batch norm, whose
statistics are taken over the whole batch.  So a batch of 64 can be cut into two halves, one
half sent through the model in this process and the other through a *replica* of the model in
a second process, on the second core.  The processes then add up their parameter gradients,
each one stretch of them, and each updates its stretch of every parameter (the optimizer's
update is elementwise).

Why processes and not threads?  NumPy releases Python's interpreter lock inside its loops, but a
training step makes hundreds of short NumPy calls, and two threads then spend their time
handing the lock to each other.  Two processes share nothing but the memory we give them.

Everything comes from the standard library, so it runs the same on every machine:

- one block of :mod:`multiprocessing.shared_memory` holds, as NumPy arrays, the parameters (they
  live there while the processes run), each replica's part of the batch, its output and output
  gradient, every process's gradients, the optimizer's state and batch norm's partial sums;
- a :func:`multiprocessing.Pipe` per replica carries commands ("forward", "backward", "step")
  one way and "done" or the replica's traceback the other way;
- a :class:`multiprocessing.Barrier` is where the processes meet inside a command: in every
  :class:`SyncBatchNorm` (each puts its partial sums in its slot, waits, then all add up the
  same slots in the same order) and before adding up the gradients.

Replicas are forked on Linux (they start at once) and spawned elsewhere; ``start_method``
chooses.  Each process does its matrix products on one core (:func:`blas_threads`).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
import threading
import traceback
import warnings
import weakref
from multiprocessing import shared_memory

import numpy as np

from . import fast
from .fast import FastBatchNorm, stretch
from .regularization import BatchNorm

TIMEOUT = 120.0
"""Seconds a process waits at a meeting before it gives up (a partner that died)."""


def cores() -> int:
    """Cores to train on: ``$CNN_LESSONS_CORES``, else the cores this process may use."""
    value = os.environ.get("CNN_LESSONS_CORES", "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"CNN_LESSONS_CORES must be a whole number >= 1, got {value!r}")
        return int(value)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                       # not on Linux
        return os.cpu_count() or 1


def batch_parts(n: int, parts: int) -> list[slice]:
    """``range(n)`` cut into at most ``parts`` contiguous slices of nearly equal length:
    ``batch_parts(64, 2) == [slice(0, 32), slice(32, 64)]``, never an empty slice."""
    parts = max(1, min(parts, n))
    return [stretch(n, k, parts) for k in range(parts)]


@contextlib.contextmanager
def blas_threads(count: int):
    """``with blas_threads(1): ...`` -- NumPy's matrix products use ``count`` threads inside
    (set through threadpoolctl), and as many as before afterwards."""
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=count, user_api="blas"):
        yield


def why_not(model) -> str | None:
    """Why :class:`DataParallel` cannot run ``model``, or None when it can."""
    from .saving import layer_types
    if not hasattr(model, "layers") or not model.layers:
        return "only a Sequential model with layers can be replicated"
    known = set(layer_types().values()) | set(layer_types(fast=True).values())
    for i, layer in enumerate(model.layers):
        if type(layer) not in known:
            return f"layer {i} ({type(layer).__name__}) is not one of the package's layers"
    return None


# -- meetings -----------------------------------------------------------------------------------

class _Group:
    """One process's side of the meetings: ``total(value)`` returns the sum of ``value`` over
    the active processes, added in rank order, so that every process gets the same numbers."""

    def __init__(self, slots, barriers, rank):
        self.slots, self.barriers, self.rank = slots, barriers, rank   # slots (2, P, width)
        self.active, self.round = 1, 0

    def start(self, active: int):
        """A new command, with ``active`` processes taking part."""
        self.active, self.round = active, 0

    def wait(self):
        """Until every active process has come this far."""
        if self.active > 1:
            self.barriers[self.active].wait(TIMEOUT)

    def total(self, value):
        value = np.asarray(value)
        flat = value.reshape(-1)
        # two slots used in turn: a process writes this slot again two meetings later, when
        # every process has passed the next meeting and so has read this one
        slot = self.slots[self.round % 2, :, :flat.size]
        self.round += 1
        slot[self.rank] = flat
        self.wait()
        out = slot[0].copy()
        for other in range(1, self.active):
            out += slot[other]
        return out.astype(value.dtype).reshape(value.shape)


class SyncBatchNorm(FastBatchNorm):
    """Batch norm over a batch split between processes (PyTorch calls it the same): each
    process's partial sums are added up at a meeting, so all normalise with the statistics of
    the whole batch.  ``group`` is set by :class:`DataParallel`."""

    group: _Group | None = None

    def _batch_sum(self, value):
        return value if self.group is None else self.group.total(value)


def _sync_twin(layer, group):
    """A :class:`SyncBatchNorm` sharing ``layer``'s params, grads and buffers (the very
    dicts), or ``layer`` itself when it is no batch norm."""
    if not isinstance(layer, BatchNorm):
        return layer
    twin = SyncBatchNorm(layer.num_features, layer.eps, layer.momentum)
    twin.params, twin.grads, twin.buffers = layer.params, layer.grads, layer.buffers
    twin.training, twin.group = layer.training, group
    return twin


def _add_up(layers, arrays, rank, group):
    """The gradients of the whole batch, added up by all processes together: each puts its
    part's gradients in its own slots; after a meeting, each adds one stretch of every
    gradient over the processes, into rank 0's slots, which then hold the batch's gradients."""
    for i, layer in enumerate(layers):
        for name, g in layer.grads.items():
            arrays["grad", rank, i, name][...] = g
    group.wait()
    for i, layer in enumerate(layers):
        for name in layer.grads:
            total = arrays["grad", 0, i, name].reshape(-1)
            part = stretch(total.size, rank, group.active)
            for other in range(1, group.active):
                total[part] += arrays["grad", other, i, name].reshape(-1)[part]


# -- the shared memory -------------------------------------------------------------------------

def _views(buf, entries):
    """``{key: array}`` for ``entries = [(key, shape, dtype), ...]`` laid out one after the
    other in ``buf`` (64-byte aligned); with ``buf=None``, only the size in bytes."""
    arrays, offset = {}, 0
    for key, shape, dtype in entries:
        if buf is not None:
            arrays[key] = np.ndarray(shape, dtype, buffer=buf, offset=offset)
        offset += -(-int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize // 64) * 64
    return arrays if buf is not None else max(offset, 64)


# -- the replica's process ----------------------------------------------------------------------

def _replica(conn, shm_name, entries, layers, rank, seed, barriers, optimizer):
    """A replica: rebuild the model on the shared arrays, then run commands until "stop"."""
    from .model import Sequential
    # A forked replica inherits the parent's sys.stdout, which in a notebook is a message
    # queue of the kernel; anything it prints goes to the process's own streams instead.
    sys.stdout, sys.stderr = sys.__stdout__ or sys.stdout, sys.__stderr__ or sys.stderr
    shm = shared_memory.SharedMemory(name=shm_name)   # the main process removes it at the end
    arrays = _views(shm.buf, entries)
    group = _Group(arrays["slots"], barriers, rank)
    rng = np.random.default_rng(seed)
    model = Sequential([_sync_twin(cls(**config), group) for cls, config in layers])
    grads = []
    for i, layer in enumerate(model.layers):
        for name in layer.params:
            layer.params[name] = arrays["param", i, name]
        grads.append({name: arrays["grad", 0, i, name] for name in layer.params})
        if isinstance(getattr(layer, "rng", None), np.random.Generator):
            layer.rng = np.random.default_rng(rng.integers(2**63))   # its own dropout masks
    opt = None
    if optimizer is not None:       # the same optimizer, on the shared parameters and state
        cls, config, keys = optimizer
        opt = cls(model, **config)
        opt.state = {i: {key: arrays["state", i, key] for key in names}
                     for i, names in enumerate(keys)}
    with blas_threads(1):
        while True:
            try:
                command, active, *args = conn.recv()
            except (EOFError, OSError):              # the main process is gone
                break
            if command == "stop":
                break
            group.start(active)
            try:
                if command == "forward":
                    rows, training, buffers = args
                    model.train(training)
                    for layer, saved in zip(model.layers, buffers):
                        layer.buffers.update(saved)  # running statistics, in evaluation
                    arrays["y", rank][:rows] = model.forward(arrays["x", rank][:rows])
                elif command == "backward":
                    model.backward(arrays["d", rank][:args[0]], input_grad=False)
                    _add_up(model.layers, arrays, rank, group)
                else:                                # "step": this process's stretch
                    for layer, g in zip(model.layers, grads):
                        layer.grads = dict(g)
                    opt.lr, opt.t = args[0], args[1] - 1
                    opt.step(part=(rank, active))
                conn.send(("done",))
            except Exception:                        # noqa: BLE001 - reported to the main process
                barriers[active].abort()             # nobody waits for this process any more
                conn.send(("error", traceback.format_exc()))
    del arrays, group, model, opt, grads
    shm.close()


# -- the main process's side -------------------------------------------------------------------

class DataParallel:
    """``DataParallel(model, batch_size, input_shape, processes=None)``: ``forward`` and
    ``backward`` like the model's, with each batch (of at most ``batch_size`` inputs of
    ``input_shape``) cut into ``processes`` parts (default: :func:`cores`) worked on at the same
    time, one process per part.  With ``optimizer`` (an SGD or Adam on ``model``), :meth:`step`
    has every process update its stretch of every parameter.

    After ``backward`` the model's ``grads`` are those of the whole batch.  While it runs, the
    model's parameters live in the shared memory (change them in place, do not replace them);
    use it as a context manager, or call :meth:`close`, to stop the processes, copy the
    parameters back into the model's own arrays and free the shared memory.
    ``start_method``: "fork" or "spawn" (default: fork on Linux, spawn elsewhere).
    """

    def __init__(self, model, batch_size: int, input_shape, processes: int | None = None,
                 dtype=np.float32, optimizer=None, start_method: str | None = None):
        reason = why_not(model)
        if reason:
            raise ValueError(f"DataParallel: {reason}")
        self.model = model
        self.processes = cores() if processes is None else int(processes)
        if self.processes < 2:
            raise ValueError(f"DataParallel: needs at least 2 processes, got {self.processes}")
        self.rows = -(-int(batch_size) // self.processes)       # largest part of a batch
        from .model import eval_mode
        with eval_mode(model):       # the shape of one output, from a forward of two zeros
            out_shape = model.forward(np.zeros((2, *input_shape), dtype)).shape[1:]
        width = 2 * max(getattr(layer, "num_features", 0) for layer in model.layers) + 2
        entries = [("slots", (2, self.processes, width), np.float64)]
        for i, layer in enumerate(model.layers):
            entries += [(("param", i, k), p.shape, p.dtype) for k, p in layer.params.items()]
        for r in range(self.processes):    # rank 0's gradients: its own, then the batch's
            entries += [(("grad", r, i, k), p.shape, p.dtype)
                        for i, layer in enumerate(model.layers) for k, p in layer.params.items()]
            if r > 0:
                entries += [(("x", r), (self.rows, *input_shape), dtype),
                            (("y", r), (self.rows, *out_shape), dtype),
                            (("d", r), (self.rows, *out_shape), dtype)]
        self.optimizer = optimizer if _can_share(optimizer, model) else None
        opt_spec = None
        if self.optimizer is not None:
            states = [optimizer.state_of(i, layer.params[name])
                      for i, (layer, name) in enumerate(optimizer.slots)]
            entries += [(("state", i, key), a.shape, a.dtype)
                        for i, state in enumerate(states) for key, a in state.items()]
            self._fast_opt = fast.twin(optimizer)
            opt_spec = (type(self._fast_opt), optimizer.config(), [list(s) for s in states])
        self._shm = shared_memory.SharedMemory(create=True, size=_views(None, entries))
        self.arrays = _views(self._shm.buf, entries)
        # While the processes run, the parameters and the optimizer's state live in the shared
        # memory; close() copies them back into the model's (and the optimizer's) own arrays.
        owners = [(layer.params, k, ("param", i, k))
                  for i, layer in enumerate(model.layers) for k in layer.params]
        if self.optimizer is not None:
            owners += [(state, key, ("state", i, key))
                       for i, state in enumerate(states) for key in state]
        moved = []
        for owner, key, place in owners:
            self.arrays[place][...] = owner[key]
            moved.append((owner, key, owner[key]))
            owner[key] = self.arrays[place]
        if start_method is None:
            start_method = "fork" if sys.platform == "linux" else "spawn"
        context = multiprocessing.get_context(start_method)
        self._barriers = {k: context.Barrier(k) for k in range(2, self.processes + 1)}
        self._group = _Group(self.arrays["slots"], self._barriers, 0)
        self._net = [_sync_twin(layer, self._group) for layer in model.layers]
        layers = [(type(layer), layer.config()) for layer in model.layers]
        seeds = np.random.SeedSequence(_dropout_seed(model)).spawn(self.processes)
        self._pipes, self._workers = [], []
        with warnings.catch_warnings():
            # Python 3.12+ warns when a process with threads (a notebook kernel has several)
            # forks; the replica only runs its loop and never touches their locks.
            warnings.filterwarnings("ignore", message=".*fork.*", category=DeprecationWarning)
            for r in range(1, self.processes):
                mine, theirs = context.Pipe()
                process = context.Process(
                    target=_replica, daemon=True, name=f"cnn_lessons replica {r}",
                    args=(theirs, self._shm.name, entries, layers, r,
                          seeds[r].generate_state(1)[0], self._barriers, opt_spec))
                process.start()
                theirs.close()                   # so that a replica's death ends our reads
                self._pipes.append(mine)
                self._workers.append(process)
        self._finalizer = weakref.finalize(self, _shutdown, self._workers, self._pipes,
                                           self._shm, self.arrays, moved, model.layers)
        self._parts: list[slice] = []
        self._pending: list[int] = []

    def close(self):
        """Stop the replica processes and free the shared memory."""
        self._finalizer()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- one command to the replicas, this process's part, and their answers ------------------
    def _collect(self):
        """The answer of every replica still to answer: the texts of those that failed."""
        errors = []
        for rank in list(self._pending):
            try:
                answer = self._pipes[rank - 1].recv()
            except (EOFError, OSError):
                process = self._workers[rank - 1]
                process.join(1)
                answer = ("died", f"died (exit code {process.exitcode})")
            self._pending.remove(rank)
            if answer[0] != "done":
                errors.append(f"replica process {rank} " + (
                    answer[1] if answer[0] == "died" else "failed:\n" + answer[1]))
        return errors

    def _run(self, messages, work):
        """Send ``messages[rank]`` to each active replica, do this process's part with
        ``work()``, collect the replicas' answers.  A failure anywhere breaks the meeting point,
        so that nobody waits for a process that will not come, and the next command starts
        from a clean slate."""
        active = len(messages)
        for rank in range(1, active):
            process = self._workers[rank - 1]
            if not process.is_alive():
                raise RuntimeError(f"DataParallel: replica process {rank} died "
                                   f"(exit code {process.exitcode})")
        self._pending = []                       # replicas whose answer is still to come
        for rank in range(1, active):
            self._pipes[rank - 1].send(messages[rank])
            self._pending.append(rank)
        self._group.start(active)
        barrier = self._barriers.get(active)
        try:
            try:
                result = work()
            except threading.BrokenBarrierError:
                result = None                        # a replica failed: its error is reported
            errors = self._collect()
        except BaseException:                        # an error here, or Ctrl-C
            if barrier is not None:
                barrier.abort()                      # release the replicas waiting there,
            with contextlib.suppress(Exception):     # hear them out
                self._collect()
            raise
        finally:
            if barrier is not None and barrier.broken:
                barrier.reset()                      # the next command starts clean
        if errors:
            raise RuntimeError("DataParallel: " + "\n".join(errors))
        return result

    # -- the model's interface -------------------------------------------------------------------
    @property
    def layers(self):
        """The model's layers (so that ``eval_mode`` and ``evaluate`` work on a DataParallel)."""
        return self.model.layers

    @property
    def training(self) -> bool:
        return self.model.training

    def train(self, mode: bool = True):
        """Training or evaluation mode, for the model and (at the next forward) its replicas."""
        self.model.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def accepts(self, x) -> bool:
        """Whether inputs like ``x`` fit the shared memory (shape of one input, dtype)."""
        expected = self.arrays["x", 1]
        return np.shape(x)[1:] == expected.shape[1:] and np.asarray(x[:1]).dtype == expected.dtype

    def forward(self, x):
        """``x (N, ...) -> out (N, ...)``, the model's output for the whole batch."""
        x = np.asarray(x)
        if x.ndim < 1 or len(x) == 0:
            raise ValueError(f"DataParallel: expected a non-empty batch, got shape {x.shape}")
        if not self.accepts(x):
            shape = ", ".join(map(str, self.arrays["x", 1].shape[1:]))
            raise ValueError(f"DataParallel: built for inputs (N, {shape}) of "
                             f"{self.arrays['x', 1].dtype}, got {x.shape} of {x.dtype}")
        parts = batch_parts(len(x), self.processes)
        if parts[0].stop - parts[0].start > self.rows:
            raise ValueError(f"DataParallel: built for batches of at most "
                             f"{self.rows * self.processes}, got {len(x)}")
        self._parts = parts
        rows = [s.stop - s.start for s in parts]
        for rank in range(1, len(parts)):
            self.arrays["x", rank][:rows[rank]] = x[parts[rank]]
        training = self.model.training
        for twin, layer in zip(self._net, self.model.layers):
            twin.training = layer.training
        buffers = [{} if training else dict(getattr(layer, "buffers", {}))
                   for layer in self.model.layers]      # running statistics, for evaluation

        def work():
            out = x[parts[0]]
            for layer in self._net:
                out = layer.forward(out)
            return out

        out0 = self._run([None] + [("forward", len(parts), rows[r], training, buffers)
                                   for r in range(1, len(parts))], work)
        return np.concatenate([out0] + [self.arrays["y", r][:rows[r]]
                                        for r in range(1, len(parts))])

    def step(self):
        """The optimizer's step (the ``optimizer`` given to the constructor), each process
        updating its stretch of every parameter in the shared memory.  Refused when no
        optimizer could be shared (``self.optimizer is None``): call the optimizer's own step."""
        if self.optimizer is None:
            raise ValueError("DataParallel.step: no optimizer was given, or it cannot be shared "
                             "(use the optimizer's own step)")
        for i, layer in enumerate(self.model.layers):   # the replicas read the whole batch's
            for name in layer.params:                   # gradients from rank 0's slots
                if layer.grads[name] is not self.arrays["grad", 0, i, name]:
                    self.arrays["grad", 0, i, name][...] = layer.grads[name]   # set by hand
        opt, parts = self._fast_opt, self.processes
        self._run([None] + [("step", parts, opt.lr, opt.t + 1)] * (parts - 1),
                  lambda: opt.step(part=(0, parts)))

    def backward(self, dout, input_grad: bool = False):
        """Backpropagate ``dout`` (the loss gradient of the last forward's output) and leave the
        whole batch's gradients in the model's ``grads``.  No input gradient: returns None.

        The ``grads`` are views of the shared memory, overwritten by the next backward (copy
        them to keep them); :meth:`close` gives the model copies of the last ones."""
        if input_grad:
            raise ValueError("DataParallel: backward computes parameter gradients only")
        dout = np.asarray(dout)
        if not self._parts or len(dout) != self._parts[-1].stop:
            raise ValueError("DataParallel: backward() needs the dout of the last forward() "
                             f"batch, got shape {dout.shape}")
        parts = self._parts
        rows = [s.stop - s.start for s in parts]
        for rank in range(1, len(parts)):
            self.arrays["d", rank][:rows[rank]] = dout[parts[rank]]

        def work():
            from .model import Sequential
            Sequential(self._net).backward(dout[parts[0]], input_grad=False)
            _add_up(self._net, self.arrays, 0, self._group)

        self._run([None] + [("backward", len(parts), rows[r]) for r in range(1, len(parts))],
                  work)
        for i, layer in enumerate(self.model.layers):
            layer.grads = {k: self.arrays["grad", 0, i, k] for k in layer.params}
        return None


def _can_share(optimizer, model) -> bool:
    """Whether the replicas can take a share of ``optimizer``'s step: an SGD or Adam on this
    model's layers, whose parameters are contiguous (flattened views)."""
    from .optimizers import SGD, Adam
    if optimizer is None or type(fast.twin(optimizer)) not in (fast.FastSGD, fast.FastAdam) \
            or not isinstance(optimizer, (SGD, Adam)):
        return False
    theirs = [(id(layer), name) for layer, name in optimizer.slots]
    ours = [(id(layer), name) for layer in model.layers for name in layer.params]
    return theirs == ours and all(layer.params[name].flags.c_contiguous
                                  for layer, name in optimizer.slots)


def _dropout_seed(model) -> int:
    """A seed for the replicas' dropout masks, drawn from the model's own dropout generator
    (so that a seeded model trains the same way twice); 0 without dropout."""
    for layer in model.layers:
        rng = getattr(layer, "rng", None)
        if isinstance(rng, np.random.Generator):
            return int(rng.integers(2**63))
    return 0


def _shutdown(workers, pipes, shm, arrays, moved, layers):
    """Stop the replicas ("stop", then terminate if they do not answer), free the memory."""
    for pipe in pipes:
        with contextlib.suppress(OSError, ValueError):
            pipe.send(("stop", 0))
    for process in workers:
        process.join(timeout=5)
        if process.is_alive():
            process.terminate()
            process.join(timeout=5)
    for pipe in pipes:
        pipe.close()
    for owner, key, own in moved:        # parameters and optimizer state back into the
        own[...] = owner[key]            # arrays they came from (so references to them stay
        owner[key] = own                 # good)
    memory = np.frombuffer(shm.buf, np.uint8)
    for layer in layers:                 # the last gradients, copied out of the shared memory
        layer.grads = {k: g.copy() if np.may_share_memory(g, memory) else g
                       for k, g in layer.grads.items()}
    del memory
    arrays.clear()
    with contextlib.suppress(BufferError):   # a view someone still holds keeps it mapped
        shm.close()
    shm.unlink()
