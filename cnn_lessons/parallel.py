"""Training on every core: data parallelism with processes.

Every image of a batch goes through the network on its own, except in batch norm, whose
statistics are taken over the whole batch.  So a batch of 64 can be cut into two halves, one
half sent through the model in this process and the other through a *replica* of the model in
a second process, on the second core.  The processes then add up their parameter gradients,
each one stretch of them.  The optimizer's update is elementwise, so its step is shared too:
each process updates its own stretch of every parameter (``Optimizer.step(part=...)``), with the
optimizer's state (Adam's ``m`` and ``v``) in the shared memory while the processes run.

Why processes and not threads?  NumPy releases Python's interpreter lock inside its loops, but a
training step makes hundreds of short NumPy calls, and two threads then spend their time
handing the lock to each other (measured here: two threads were *slower* than one).  Two
processes share nothing but the memory we give them, so each runs at full speed.

What the processes share is one block of shared memory (:mod:`multiprocessing.shared_memory`)
holding, as NumPy arrays: the parameters (they live there while the processes run), each
replica's part of the batch, its output and output gradient, every process's parameter
gradients (:func:`_add_up` adds them up), the optimizer's state, and a few counters through
which the processes tell each other what to do and when they are done.  Waiting is a loop that
reads a counter -- the waiting core would be idle anyway, and waking a sleeping
process costs a tenth of a millisecond here, a dozen times per step.

Batch norm stays exact: each replica's :class:`~cnn_lessons.regularization.BatchNorm` computes
its partial sums, ``sync.total`` adds up the parts of every process (PyTorch calls this
``SyncBatchNorm``), and all go on with the statistics of the whole batch.

Each process does its matrix products on one core (:func:`blas_threads`); ``train`` sets that.
The number of cores is the number this process may use, or ``$CNN_LESSONS_CORES``.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import platform
import sys
import time
import traceback
import warnings
import weakref
from multiprocessing import shared_memory

import numpy as np

from .optimizers import stretch

# one row of control counters (int64) per process; row 0 is the main process
_SEQ, _DONE, _CMD, _ROWS, _TRAINING, _ROUND, _ERROR, _ABORT, _ACTIVE, _ASLEEP = range(10)
_FORWARD, _BACKWARD, _STEP, _STOP = 1, 2, 3, 4
_ERR_BYTES = 4000


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
    """Why :class:`DataParallel` cannot run ``model`` here, or None when it can."""
    from .model import layer_types
    if platform.machine().lower() not in ("x86_64", "amd64"):
        # the counters rely on x86's ordering of memory writes between cores
        return f"processes share memory safely only on x86-64 here, not {platform.machine()}"
    if not hasattr(model, "layers") or not model.layers:
        return "only a Sequential model with layers can be replicated"
    known = layer_types()
    for i, layer in enumerate(model.layers):
        if known.get(type(layer).__name__) is not type(layer):
            return f"layer {i} ({type(layer).__name__}) is not one of the package's layers"
    return None


# -- the shared memory ------------------------------------------------------------------------

def _layout(entries):
    """``[(name, shape, dtype)] -> ({name: (offset, shape, dtype)}, total bytes)``, 64-aligned."""
    places, offset = {}, 0
    for name, shape, dtype in entries:
        places[name] = (offset, tuple(shape), np.dtype(dtype).str)
        offset += -(-int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize // 64) * 64
    return places, max(offset, 64)


def _views(buf, places):
    return {name: np.ndarray(shape, np.dtype(dtype), buffer=buf, offset=offset)
            for name, (offset, shape, dtype) in places.items()}


def _wait_until(ready, check, patience: float = 0.02, nap: float | None = 0.001):
    """Spin until ``ready()``; call ``check()`` (which raises on trouble) now and then.  After
    ``patience`` seconds, sleep ``nap`` seconds between looks so a long wait costs little CPU
    (``nap=None``: raise TimeoutError instead)."""
    start, spins = time.perf_counter(), 0
    while not ready():
        spins += 1
        if spins % 2048 == 0:
            check()
            if time.perf_counter() - start > patience:
                if nap is None:
                    raise TimeoutError
                time.sleep(nap)


class _Sync:
    """What each BatchNorm of a process holds while a step runs: ``total(value)`` returns the
    sum of ``value`` over the active processes, in rank order, so all get the same numbers."""

    def __init__(self, arrays, rank, check):
        self.ctl, self.slots, self.rank, self.check = arrays["ctl"], arrays["slots"], rank, check

    def barrier(self):
        """Wait until every active process has come this far (a round that adds nothing)."""
        self.total(np.zeros(0))

    def total(self, value):
        value = np.asarray(value)
        flat = value.reshape(-1)
        ctl, me = self.ctl, self.ctl[self.rank]
        active = int(ctl[0, _ACTIVE])
        rnd = int(me[_ROUND])
        slot = self.slots[:, rnd % 2, :flat.size]      # two slots, used in turn
        slot[self.rank] = flat
        me[_ROUND] = rnd + 1
        for other in range(active):
            _wait_until(lambda: ctl[other, _ROUND] > rnd, self.check)
        # A process writes the slot of this round again only after everyone has passed the
        # NEXT round, and so has read this one.
        out = slot[0].copy()
        for other in range(1, active):
            out += slot[other]
        return out.astype(value.dtype).reshape(value.shape)


def _add_up(model, arrays, rank, active, sync):
    """The gradients of the whole batch, added up by all processes together: each puts its
    own part's gradients in its slots ``g{rank}``; once all have (``sync.barrier()``), each adds
    one stretch of every gradient over the processes, into ``g0``, which then holds the whole
    batch's gradients.  ``g0 + g1 + ...`` in rank order: the same numbers as one adder."""
    for i, layer in enumerate(model.layers):
        for name, g in layer.grads.items():
            arrays[f"g{rank}.{i}.{name}"][...] = g
    sync.barrier()
    for i, layer in enumerate(model.layers):
        for name in layer.grads:
            total = arrays[f"g0.{i}.{name}"].reshape(-1)
            part = stretch(total.size, rank, active)
            for other in range(1, active):
                total[part] += arrays[f"g{other}.{i}.{name}"].reshape(-1)[part]


# -- the replica's process ----------------------------------------------------------------------

def _wait_for_command(me, seen, wake, alive, patience=0.01):
    """Spin for ``patience`` seconds; then sleep on the ``wake`` pipe, so that an idle replica
    takes no CPU from anything else running (evaluation, another program).  The main process
    writes to the pipe when it sees ``_ASLEEP`` set; the timeout covers the rare moment when
    both look at the same time."""
    try:
        _wait_until(lambda: me[_SEQ] != seen, alive, patience=patience, nap=None)
    except TimeoutError:
        me[_ASLEEP] = 1
        try:
            while me[_SEQ] == seen:
                if wake.poll(0.05):
                    wake.recv_bytes()
                alive()
        finally:
            me[_ASLEEP] = 0


def _replica_main(shm_name, places, spec, rank, seed, wake, optimizer):
    """The loop of a replica process: wait for a command, run it, say it is done."""
    from .model import Sequential, layer_types
    # A forked replica inherits the parent's sys.stdout, which in a notebook is a message
    # queue of the kernel; anything it prints goes to the process's own streams instead.
    sys.stdout, sys.stderr = sys.__stdout__ or sys.stdout, sys.__stderr__ or sys.stderr
    shm = shared_memory.SharedMemory(name=shm_name)   # the main process removes it at the end
    arrays = _views(shm.buf, places)
    ctl, me = arrays["ctl"], arrays["ctl"][rank]
    parent = os.getppid()

    def alive():
        if os.getppid() != parent:
            raise SystemExit(0)                      # the main process is gone

    def check():
        alive()
        if me[_ABORT]:
            raise RuntimeError("stopped: the main process failed during this step")

    sync = _Sync(arrays, rank, check)
    types = layer_types()
    model = Sequential([types[entry["type"]](**entry["config"]) for entry in spec])
    rng = np.random.default_rng(seed)
    for i, layer in enumerate(model.layers):
        for name in layer.params:
            layer.params[name] = arrays[f"p{i}.{name}"]      # the main process's values
        for name in getattr(layer, "buffers", {}):
            layer.buffers[name] = arrays[f"b{i}.{name}"]     # batch norm's running statistics
        if isinstance(getattr(layer, "rng", None), np.random.Generator):
            layer.rng = np.random.default_rng(rng.integers(2**63))   # its own dropout masks
        if hasattr(layer, "sync"):
            layer.sync = sync
    opt = None
    if optimizer is not None:       # the same optimizer, on the shared parameters and state
        from . import optimizers
        kind, config, slots = optimizer
        opt = getattr(optimizers, kind)(model, **config)
        for i, keys in enumerate(slots):
            opt.state[i] = {key: arrays[f"s{i}.{key}"] for key in keys}
    with blas_threads(1):
        seen = 0
        while True:
            try:
                _wait_for_command(me, seen, wake, alive)
            except SystemExit:
                break
            seen = int(me[_SEQ])
            if me[_CMD] == _STOP:
                break
            try:
                n = int(me[_ROWS])
                if me[_CMD] == _FORWARD:
                    model.train(bool(me[_TRAINING]))
                    arrays[f"y{rank}"][:n] = model.forward(arrays[f"x{rank}"][:n])
                elif me[_CMD] == _STEP:     # this process's stretch of every parameter
                    for i, layer in enumerate(model.layers):
                        layer.grads = {k: arrays[f"g0.{i}.{k}"] for k in layer.params}
                    opt.lr, opt.t = float(arrays["opt"][0]), int(arrays["opt"][1]) - 1
                    opt.step(part=(rank, int(me[_ROWS])))
                else:
                    model.backward(arrays[f"d{rank}"][:n], input_grad=False)
                    _add_up(model, arrays, rank, int(ctl[0, _ACTIVE]), sync)
                me[_ERROR] = 0
            except BaseException as err:             # noqa: BLE001 - reported to the main process
                if isinstance(err, SystemExit):
                    break
                message = traceback.format_exc()[-_ERR_BYTES:].encode("utf-8", "replace")
                arrays["err"][rank, :len(message)] = np.frombuffer(message, np.uint8)
                me[_ERROR] = len(message)
            me[_DONE] = seen
    del arrays, ctl, me
    shm.close()


# -- the main process's side -------------------------------------------------------------------

class DataParallel:
    """``DataParallel(model, batch_size, input_shape, processes=None)``: ``forward`` and
    ``backward`` like the model's, with each batch (of at most ``batch_size`` inputs of
    ``input_shape``) cut into ``processes`` parts (default: :func:`cores`) worked on at the same
    time, one process per part.  ``train``/``eval`` switch the mode of the model and replicas.

    After ``backward`` the model's ``grads`` are those of the whole batch.  While it runs, the
    model's parameters live in the shared memory (change them in place, do not replace them);
    use it as a context manager, or call :meth:`close`, to stop the processes, copy the
    parameters back into the model's own arrays and free the shared memory.
    """

    def __init__(self, model, batch_size: int, input_shape, processes: int | None = None,
                 dtype=np.float32, optimizer=None):
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
        features = [getattr(layer, "num_features", 0) for layer in model.layers]
        entries = [("ctl", (self.processes, 10), np.int64),
                   ("slots", (self.processes, 2, 2 * max(features) + 2), np.float64),
                   ("err", (self.processes, _ERR_BYTES), np.uint8)]
        for i, layer in enumerate(model.layers):
            entries += [(f"p{i}.{k}", p.shape, p.dtype) for k, p in layer.params.items()]
            entries += [(f"b{i}.{k}", b.shape, b.dtype)
                        for k, b in getattr(layer, "buffers", {}).items()]
        for r in range(self.processes):    # g0: this process's gradients, then the batch's
            if r > 0:
                entries += [(f"x{r}", (self.rows, *input_shape), dtype),
                            (f"y{r}", (self.rows, *out_shape), dtype),
                            (f"d{r}", (self.rows, *out_shape), dtype)]
            for i, layer in enumerate(model.layers):
                entries += [(f"g{r}.{i}.{k}", p.shape, p.dtype) for k, p in layer.params.items()]
        # The optimizer's step is elementwise: each process can update its own stretch of every
        # parameter, if the optimizer's state (Adam's m and v) is shared too.
        self.optimizer = optimizer if _can_share(optimizer, model) else None
        shared_state = []
        if self.optimizer is not None:
            entries.append(("opt", (2,), np.float64))            # this step's lr and t
            for i, (layer, name) in enumerate(optimizer.slots):
                p = layer.params[name]
                state = optimizer.state_of(i, p)
                entries += [(f"s{i}.{key}", p.shape, p.dtype) for key in optimizer.state_names]
                shared_state.append((state, list(optimizer.state_names)))
        places, size = _layout(entries)
        self._shm = shared_memory.SharedMemory(create=True, size=size)
        self.arrays = _views(self._shm.buf, places)
        self.arrays["ctl"][...] = 0
        # While the processes run, the parameters and the optimizer's state live in the shared
        # memory, where every process reads them and updates its stretch; close() copies them
        # back into the model's (and the optimizer's) own arrays.
        places_of = [(layer.params, k, f"p{i}.{k}") for i, layer in enumerate(model.layers)
                     for k in layer.params]
        places_of += [(state, key, f"s{i}.{key}") for i, (state, keys) in enumerate(shared_state)
                      for key in keys]
        moved = []
        for owner, key, name in places_of:
            self.arrays[name][...] = owner[key]
            moved.append((owner, key, owner[key]))
            owner[key] = self.arrays[name]
        opt_spec = None if self.optimizer is None else (
            type(optimizer).__name__, optimizer.config(), [keys for _, keys in shared_state])
        # On Linux the replicas are forked (as PyTorch's DataLoader does): they start at once,
        # and a script need not guard its code with `if __name__ == "__main__"`.
        context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
        self._wake = {r: context.Pipe(duplex=False) for r in range(1, self.processes)}
        seeds = np.random.SeedSequence(_dropout_seed(model)).spawn(self.processes)
        self._workers = [context.Process(target=_replica_main, daemon=True,
                                         name=f"cnn_lessons replica {r}",
                                         args=(self._shm.name, places, model.spec(), r,
                                               seeds[r].generate_state(1)[0], self._wake[r][0],
                                               opt_spec))
                         for r in range(1, self.processes)]
        with warnings.catch_warnings():
            # Python 3.12+ warns when a process with threads (a notebook kernel has several)
            # forks; the replica only runs the loop below and never touches their locks.
            warnings.filterwarnings("ignore", message=".*fork.*", category=DeprecationWarning)
            for process in self._workers:
                process.start()
        self._finalizer = weakref.finalize(self, _shutdown, self._workers, self._shm,
                                           self.arrays, self._wake, moved, model.layers)
        self._active = 0
        self._parts: list[slice] = []

    def close(self):
        """Stop the replica processes and free the shared memory."""
        self._finalizer()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- one command to every replica, then wait ---------------------------------------------
    def _check(self, rank):
        ctl = self.arrays["ctl"]
        process = self._workers[rank - 1]
        if ctl[rank, _DONE] != ctl[rank, _SEQ] and not process.is_alive():
            raise RuntimeError(f"DataParallel: replica process {rank} died "
                               f"(exit code {process.exitcode})")

    def _check_meeting(self):
        """While this process waits for the replicas to meet: a replica that died, or that
        finished the command without coming (it failed), is reported, not waited for."""
        ctl = self.arrays["ctl"]
        for rank in range(1, self._active):
            self._check(rank)
            if ctl[rank, _DONE] == ctl[rank, _SEQ] and ctl[rank, _ERROR]:
                raise RuntimeError("DataParallel: " + self._error(rank))

    def _error(self, rank):
        text = bytes(self.arrays["err"][rank, :self.arrays["ctl"][rank, _ERROR]])
        return f"replica process {rank} failed:\n" + text.decode("utf-8", "replace")

    def _send(self, command, rows):
        ctl = self.arrays["ctl"]
        for rank in range(1, self._active):
            ctl[rank, _CMD], ctl[rank, _ROWS] = command, rows[rank]
            ctl[rank, _TRAINING] = self.model.training
            ctl[rank, _SEQ] += 1
            if ctl[rank, _ASLEEP]:                   # an idle replica waits on its pipe
                self._wake[rank][1].send_bytes(b"")

    def _collect(self):
        ctl = self.arrays["ctl"]
        for rank in range(1, self._active):
            _wait_until(lambda: ctl[rank, _DONE] == ctl[rank, _SEQ], lambda: self._check(rank))
        return [self._error(rank) for rank in range(1, self._active) if ctl[rank, _ERROR]]

    def _run(self, command, rows, work):
        """Send ``command`` to the replicas, do this process's part with ``work(sync)``, wait.
        ``sync`` is this process's side of the meetings (:class:`_Sync`)."""
        ctl = self.arrays["ctl"]
        self._send(command, rows)
        sync = _Sync(self.arrays, 0, self._check_meeting)
        norms = [layer for layer in self.model.layers if hasattr(layer, "sync")]
        for layer in norms:
            layer.sync = sync
        try:
            result = work(sync)
            errors = self._collect()
        except BaseException:                        # an error here, or Ctrl-C while waiting:
            ctl[1:, _ABORT] = 1                      # release replicas waiting for this one,
            with contextlib.suppress(Exception):     # let them finish, and start the next
                self._collect()                      # step from a clean slate
            ctl[:, _ABORT] = 0
            ctl[:, _ROUND] = 0
            raise
        finally:
            for layer in norms:
                layer.sync = None
        if errors:
            ctl[:, _ROUND] = 0
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
        expected = self.arrays["x1"]
        return np.shape(x)[1:] == expected.shape[1:] and np.asarray(x[:1]).dtype == expected.dtype

    def forward(self, x):
        """``x (N, ...) -> out (N, ...)``, the model's output for the whole batch."""
        x = np.asarray(x)
        if x.ndim < 1 or len(x) == 0:
            raise ValueError(f"DataParallel: expected a non-empty batch, got shape {x.shape}")
        if not self.accepts(x):
            shape = ", ".join(map(str, self.arrays["x1"].shape[1:]))
            raise ValueError(f"DataParallel: built for inputs (N, {shape}) of "
                             f"{self.arrays['x1'].dtype}, got {x.shape} of {x.dtype}")
        parts = batch_parts(len(x), self.processes)
        if parts[0].stop - parts[0].start > self.rows:
            raise ValueError(f"DataParallel: built for batches of at most "
                             f"{self.rows * self.processes}, got {len(x)}")
        self._parts, self._active = parts, len(parts)
        self.arrays["ctl"][0, _ACTIVE] = self._active
        for i, layer in enumerate(self.model.layers):        # (the parameters are shared
            for k, b in getattr(layer, "buffers", {}).items():  # already, see __init__)
                self.arrays[f"b{i}.{k}"][...] = b
        rows = [s.stop - s.start for s in parts]
        for rank in range(1, self._active):
            self.arrays[f"x{rank}"][:rows[rank]] = x[parts[rank]]
        out0 = self._run(_FORWARD, rows, lambda sync: self.model.forward(x[parts[0]]))
        return np.concatenate([out0] + [self.arrays[f"y{r}"][:rows[r]]
                                        for r in range(1, self._active)])

    def step(self):
        """The optimizer's step (the ``optimizer`` given to the constructor), each process
        updating its stretch of every parameter in the shared memory.  Refused when no
        optimizer could be shared (``self.optimizer is None``): call the optimizer's own step."""
        if self.optimizer is None:
            raise ValueError("DataParallel.step: no optimizer was given, or it cannot be shared "
                             "(use the optimizer's own step)")
        opt, parts = self.optimizer, self.processes
        for i, layer in enumerate(self.model.layers):   # the replicas read the whole batch's
            for name in layer.params:                   # gradients from g0
                if layer.grads[name] is not self.arrays[f"g0.{i}.{name}"]:
                    self.arrays[f"g0.{i}.{name}"][...] = layer.grads[name]   # set by hand
        self.arrays["opt"][:] = opt.lr, opt.t + 1
        self._active = parts
        # (the command's "rows" field carries the number of stretches)
        self._run(_STEP, [parts] * parts, lambda sync: opt.step(part=(0, parts)))

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
        rows = [s.stop - s.start for s in self._parts]
        for rank in range(1, self._active):
            self.arrays[f"d{rank}"][:rows[rank]] = dout[self._parts[rank]]

        def work(sync):
            self.model.backward(dout[self._parts[0]], input_grad=False)
            _add_up(self.model, self.arrays, 0, self._active, sync)

        self._run(_BACKWARD, rows, work)
        for i, layer in enumerate(self.model.layers):
            layer.grads = {k: self.arrays[f"g0.{i}.{k}"] for k in layer.grads}
        return None


def _can_share(optimizer, model) -> bool:
    """Whether the replicas can take a share of ``optimizer``'s step: one of the package's
    optimizers, on this model's layers, whose parameters are contiguous (flattened views)."""
    from .optimizers import SGD, Adam
    if type(optimizer) not in (SGD, Adam):
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


def _in_buffer(array, buffer) -> bool:
    """Whether ``array`` is a view of ``buffer`` (the shared memory)."""
    return np.may_share_memory(array, np.frombuffer(buffer, np.uint8))


def _shutdown(workers, shm, arrays, wake, moved, layers):
    """Stop the replicas (a STOP command, then terminate if they do not answer), free memory."""
    ctl = arrays["ctl"]
    for rank, process in enumerate(workers, start=1):
        ctl[rank, _ABORT] = 1            # a replica stuck waiting for this process gives up
        ctl[rank, _CMD] = _STOP
        ctl[rank, _SEQ] += 1
        with contextlib.suppress(OSError):
            wake[rank][1].send_bytes(b"")
    for process in workers:
        process.join(timeout=5)
        if process.is_alive():
            process.terminate()
            process.join(timeout=5)
    for receive, send in wake.values():
        receive.close()
        send.close()
    for owner, key, own in moved:        # parameters and optimizer state back into the
        own[...] = owner[key]            # arrays they came from (so references to them stay
        owner[key] = own                 # good)
    for layer in layers:                 # the last gradients, copied out of the shared memory
        layer.grads = {k: g.copy() if _in_buffer(g, shm.buf) else g
                       for k, g in layer.grads.items()}
    arrays.clear()
    del ctl
    with contextlib.suppress(BufferError):   # a view someone still holds keeps it mapped
        shm.close()
    shm.unlink()
