"""How fast does the book's CNN train in NumPy, and how far is that from PyTorch?

Run from the repository root::

    python benchmarks/speed.py                      # a full epoch (938 batches of 64)
    python benchmarks/speed.py --batches 100        # quick: 100 batches, extrapolated
    python benchmarks/speed.py --sample --batches 3 --no-torch --json speed.json

One run prints, in order:

1. the machine: numpy and its BLAS (kernel, threads), CPUs, load, OpenBLAS variables;
2. NumPy: seconds to train ``cnn_lessons.models.cnn()`` (float32, Adam, batch 64) for N batches
   with the package's own step (forward, SoftmaxCrossEntropy, backward, Adam.step), and
   images/s for forward+backward alone;
3. PyTorch, when importable: the same network translated layer by layer from the Sequential
   (nothing about ``cnn()`` is hard-coded), the same initial weights, optimizer and batches,
   timed in chunks alternating with NumPy's so both share the machine's noise; plus a
   cross-check that the two networks compute the same outputs and gradients;
4. a per-layer profile of one NumPy training step, the most expensive layer first;
5. the loop-based ``Conv2DNaive`` against the vectorized ``Conv2D`` on a few images;
6. a summary, and with ``--json FILE`` every number in a JSON file.

Data: full MNIST from ``--data-dir`` or ``$CNN_LESSONS_DATA`` when given, otherwise (or with
``--sample``) the sample shipped with the package, repeated to make an epoch of the full
set's length (60,000 images).  Nothing is ever downloaded.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time

import numpy as np

import cnn_lessons
from cnn_lessons import fast, models
from cnn_lessons.activations import LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from cnn_lessons.conv import Conv2D, Conv2DNaive
from cnn_lessons.dense import Dense
from cnn_lessons.files import atomic_write
from cnn_lessons.flatten import Flatten
from cnn_lessons.losses import SoftmaxCrossEntropy
from cnn_lessons.model import takes_input_grad
from cnn_lessons.optimizers import Adam
from cnn_lessons.parallel import DataParallel, blas_threads
from cnn_lessons.pooling import AvgPool2D, MaxPool2D
from cnn_lessons.regularization import BatchNorm, Dropout

FULL_TRAIN_IMAGES = 60_000     # an "epoch" is this many images, whatever the data source


# -- command line -------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Training speed of the book's CNN in NumPy, against the same network in "
                    "PyTorch when it is installed.")
    p.add_argument("--batches", type=int, default=None,
                   help="training batches to time per framework (default: one full epoch); "
                        "fewer are extrapolated to seconds per epoch")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=None,
                   help="threads for PyTorch, processes for NumPy (default: all cores)")
    p.add_argument("--numpy-threads", type=int, default=None,
                   help="processes for NumPy only (default: --threads): the parts of "
                        "cnn_lessons.parallel.DataParallel, each using one BLAS thread")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data-dir", default=None, help="folder with the four MNIST files")
    src.add_argument("--sample", action="store_true",
                     help="use the sample shipped with the package even if full MNIST is set")
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch even if installed")
    p.add_argument("--lr", type=float, default=None,
                   help="Adam's learning rate on both sides (default: the cnn training recipe's, "
                        "else 1e-3); held constant")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chunks", type=int, default=None,
                   help="alternating chunks per measurement (default: about 20 batches each, "
                        "at most 50)")
    p.add_argument("--fb-batches", type=int, default=None,
                   help="batches for the forward+backward measurement (default: min(batches, 200))")
    p.add_argument("--profile-batches", type=int, default=None,
                   help="batches for the per-layer profile (default: min(batches, 30))")
    p.add_argument("--naive-images", type=int, default=8,
                   help="images for the loop-vs-vectorized Conv2D comparison (0 skips it)")
    p.add_argument("--json", default=None, metavar="FILE", help="write every number to FILE")
    args = p.parse_args(argv)
    if args.lr is None:
        args.lr = getattr(models, "RECIPES", {}).get("cnn", {}).get("lr", 1e-3)
    for name in ("batches", "batch_size", "threads", "numpy_threads", "chunks", "fb_batches",
                 "profile_batches"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.naive_images < 0:
        p.error(f"--naive-images must be >= 0, got {args.naive_images}")
    return args


def say(*lines):
    print(*lines, sep="\n", flush=True)


def heading(text):
    say("", text, "=" * len(text))


# -- 1. the machine -----------------------------------------------------------------------------

def numpy_blas_info():
    """threadpoolctl's description of the BLAS numpy uses, or None without threadpoolctl.

    Call before importing torch, whose own thread pools would show up too."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    return [{k: v for k, v in lib.items() if k != "filepath"}
            | {"library": os.path.basename(lib.get("filepath") or "")}
            for lib in threadpool_info() if lib.get("user_api") == "blas"]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def machine_info() -> dict:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    env = {name: os.environ.get(name) for name in (
        "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
        "MKL_NUM_THREADS")}
    return {"python": platform.python_version(), "numpy": np.__version__,
            "cnn_lessons": cnn_lessons.__version__, "cpu": cpu_model(),
            "cpu_count": os.cpu_count(), "usable_cores": cores, "load_average": load_average(),
            "blas": numpy_blas_info(), "env": env}


def print_machine(info, numpy_threads):
    heading("1. Machine")
    say(f"python {info['python']}, numpy {info['numpy']}, cnn_lessons {info['cnn_lessons']}",
        f"CPU: {info['cpu']}; {info['cpu_count']} logical CPUs, {info['usable_cores']} usable",
        f"load average (1, 5, 15 min) at start: {info['load_average']}")
    if info["blas"] is None:
        say("BLAS: threadpoolctl is not installed (pip install threadpoolctl): kernel unknown, "
            "NumPy's BLAS threads not controlled")
    for lib in info["blas"] or []:
        say(f"BLAS: {lib.get('internal_api')} {lib.get('version')} ({lib['library']}), "
            f"kernel {lib.get('architecture')}, threading {lib.get('threading_layer')}, "
            f"{lib.get('num_threads')} threads by default; this run: 1 per process, "
            f"{numpy_threads} process{'es' if numpy_threads > 1 else ''} "
            f"(cnn_lessons.parallel.DataParallel)")
    for name, value in info["env"].items():
        if name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
            say(f"{name}: " + ("unset" if value is None else
                               f"{value!r} (left as is: it selects or tunes the sgemm kernel)"))
        elif value is not None:
            say(f"{name}: {value!r}")


# -- data and batches ---------------------------------------------------------------------------

def load_data(args):
    """``(x, y, description)``: full MNIST when asked for, the shipped sample otherwise."""
    from cnn_lessons.data import ENV_VAR, load_mnist
    if not args.sample and (args.data_dir or os.environ.get(ENV_VAR)):
        data = load_mnist(args.data_dir)          # never downloads: a folder was named
        return data.x_train, data.y_train, f"full MNIST from {data.source}"
    data = load_mnist(sample=True)
    why = "--sample" if args.sample else f"no --data-dir and no ${ENV_VAR}"
    return data.x_train, data.y_train, (f"the shipped sample ({len(data.x_train)} images, "
                                         f"repeated; {why})")


def epoch_layout(n_images: int, batch_size: int):
    """``(images per epoch, batches per epoch)``: the full training set's length, or the
    data's own when it is the full set (or larger)."""
    per_epoch = max(n_images, FULL_TRAIN_IMAGES)
    return per_epoch, math.ceil(per_epoch / batch_size)


def make_batches(n_images: int, batch_size: int, count: int, seed: int):
    """``count`` index arrays, epoch after epoch as ``train`` draws them: each epoch a fresh
    shuffle of ``epoch_layout`` images (the data repeated when it is smaller), the last batch
    of an epoch holding the remainder."""
    rng = np.random.default_rng(seed)
    per_epoch, _ = epoch_layout(n_images, batch_size)
    out = []
    while len(out) < count:
        reps = math.ceil(per_epoch / n_images)
        order = np.concatenate([rng.permutation(n_images) for _ in range(reps)])[:per_epoch]
        out.extend(order[i:i + batch_size] for i in range(0, per_epoch, batch_size))
    return out[:count]


# -- the two training steps ---------------------------------------------------------------------

class NumpyRunner:
    """The package's own training step on a ``Sequential``."""

    name = "numpy"

    def __init__(self, model, lr, processes, batch_size, input_shape):
        self.model, self.loss = model, SoftmaxCrossEntropy()
        self.optimizer = Adam(model, lr=lr)
        # as cnn_lessons.training.train does: with several cores, DataParallel
        self.net = (DataParallel(model, batch_size, input_shape, processes,
                                 optimizer=self.optimizer) if processes > 1 else model)
        shared = self.net is not model and self.net.optimizer is not None
        self.step = self.net.step if shared else fast.twin(self.optimizer).step

    def train_step(self, xb, yb):
        self.forward_backward(xb, yb)
        self.step()

    def forward_backward(self, xb, yb):
        logits = self.net.forward(xb)
        self.loss.forward(logits, yb)
        self.net.backward(self.loss.backward(), input_grad=False)

    def close(self):
        if self.net is not self.model:
            self.net.close()


class TorchRunner:
    """The same step in PyTorch: forward, cross-entropy, backward, Adam."""

    name = "torch"

    def __init__(self, torch, net, numpy_optimizer):
        self.torch, self.net = torch, net
        self.optimizer = torch.optim.Adam(net.parameters(), lr=numpy_optimizer.lr,
                                          betas=numpy_optimizer.betas, eps=numpy_optimizer.eps,
                                          weight_decay=numpy_optimizer.weight_decay)
        self.loss = torch.nn.CrossEntropyLoss()

    def _to_torch(self, xb, yb):
        return self.torch.from_numpy(xb), self.torch.from_numpy(yb)

    def train_step(self, xb, yb):
        xb, yb = self._to_torch(xb, yb)
        self.optimizer.zero_grad(set_to_none=True)
        self.loss(self.net(xb), yb).backward()
        self.optimizer.step()

    def forward_backward(self, xb, yb):
        xb, yb = self._to_torch(xb, yb)
        self.optimizer.zero_grad(set_to_none=True)
        self.loss(self.net(xb), yb).backward()


def alternate(runners, step: str, x, y, batches, chunks: int):
    """Time ``runner.<step>`` on ``batches``, split into ``chunks`` chunks, the runners taking
    turns chunk by chunk (A B A B ...) so that both see the same moments of machine noise.

    Each chunk starts with one untimed step on its first batch: the first step after the
    other library ran is slow (its threads are still spinning down, ours waking up), and a
    library used alone does not pay that.

    Returns ``{runner name: {"seconds": [...], "batches": [...], "batch_seconds": [...]}}``:
    each chunk's time and number of batches, and the time of every batch."""
    bounds = np.linspace(0, len(batches), chunks + 1).round().astype(int)
    out = {r.name: {"seconds": [], "batches": [], "batch_seconds": []} for r in runners}
    clock = time.perf_counter
    for k in range(chunks):
        part = batches[bounds[k]:bounds[k + 1]]
        for r in runners:
            run, times = getattr(r, step), out[r.name]["batch_seconds"]
            run(x[part[0]], y[part[0]])                     # untimed: the switch-over
            start = clock()
            for idx in part:
                t = clock()
                run(x[idx], y[idx])
                times.append(clock() - t)
            out[r.name]["seconds"].append(clock() - start)
            out[r.name]["batches"].append(len(part))
    return out


def warm_up(runners, step, x, y, batches):
    for r in runners:
        for idx in batches:
            getattr(r, step)(x[idx], y[idx])


def default_chunks(n_batches: int) -> int:
    """About 20 batches per chunk (a second or two), at most 50 chunks: short chunks run back
    to back see the same background load, which is what pairing them relies on."""
    return max(1, min(50, n_batches // 20))


def summarize(chunks, batch_size, batches_per_epoch):
    """Totals and medians of one runner's timings: ``epoch_seconds`` is the median batch time
    times the batches of an epoch; ``*_best`` come from its fastest chunk (the one least
    disturbed by other jobs)."""
    rates = [s / b for s, b in zip(chunks["seconds"], chunks["batches"])]   # s per batch
    per_batch = statistics.median(chunks["batch_seconds"])
    return {"chunk_seconds": [round(s, 4) for s in chunks["seconds"]],
            "chunk_batches": chunks["batches"],
            "batch_seconds": [round(t, 5) for t in chunks["batch_seconds"]],
            "batches": sum(chunks["batches"]), "seconds_total": sum(chunks["seconds"]),
            "seconds_per_batch_median": per_batch,
            "epoch_seconds": per_batch * batches_per_epoch,
            "epoch_seconds_best": min(rates) * batches_per_epoch,
            "images_per_second": batch_size / per_batch,
            "images_per_second_best": batch_size / min(rates)}


def per_batch_spread(s) -> str:
    """``ms/batch: median 36.1; chunk means 33.0 to 80.2``."""
    rates = [t / b * 1e3 for t, b in zip(s["chunk_seconds"], s["chunk_batches"])]
    return (f"ms/batch: median {s['seconds_per_batch_median'] * 1e3:.1f}; "
            f"{len(rates)} chunk means {min(rates):.1f} to {max(rates):.1f}")


def paired_ratio(a, b):
    """Median over chunks of (a's chunk time / b's chunk time): each pair ran back to back."""
    return statistics.median(sa / sb for sa, sb in zip(a["seconds"], b["seconds"]))


# -- translating a Sequential into PyTorch ------------------------------------------------------

def trace_input_shapes(model, input_shape):
    """The input shape (without the batch axis) each layer sees, from one evaluation-mode
    forward pass of two zero images."""
    params = [p for _, p in model.named_params()]
    x = np.zeros((2, *input_shape), dtype=params[0].dtype if params else np.float32)
    was_training = model.training
    model.eval()
    shapes = []
    try:
        for layer in model.layers:
            shapes.append(x.shape[1:])
            x = layer.forward(x)
    finally:
        model.train(was_training)
    return shapes


def to_torch(model, input_shape):
    """An ``nn.Sequential`` computing what ``model`` computes, and the links between their arrays.

    Every layer is translated from its own settings (kernel, stride, padding, eps, momentum,
    ...), so any Sequential of these layer types works.  Returns ``(net, links)`` where
    ``links`` is a list of ``(layer, key, tensor, transpose)``: ``layer.params[key]`` (or
    ``layer.buffers[key]``) corresponds to ``tensor`` (transposed when ``transpose``).
    The weights are copied over, so both start equal.  A layer type without a counterpart
    raises ValueError naming it.
    """
    import torch
    from torch import nn

    first = next((p for _, p in model.named_params()), np.zeros(0, np.float32))
    dtype = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}[first.dtype]
    modules, links = [], []
    for i, (layer, shape) in enumerate(zip(model.layers, trace_input_shapes(model, input_shape))):
        if isinstance(layer, Conv2D):                 # Conv2DNaive too
            bias = "b" in layer.params
            m = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                          stride=layer.stride, padding=layer.padding, bias=bias, dtype=dtype)
            links.append((layer, "W", m.weight, False))
            if bias:
                links.append((layer, "b", m.bias, False))
        elif isinstance(layer, MaxPool2D):            # MaxPool2DNaive too
            m = nn.MaxPool2d(layer.kernel_size, stride=layer.stride)
        elif isinstance(layer, AvgPool2D):
            m = nn.AvgPool2d(layer.kernel_size, stride=layer.stride)
        elif isinstance(layer, BatchNorm):
            kind = {1: nn.BatchNorm1d, 3: nn.BatchNorm2d}.get(len(shape))
            if kind is None:
                raise ValueError(f"to_torch: layer {i} {layer!r} sees inputs of shape "
                                 f"(N, *{shape}); only (N, D) and (N, C, H, W) translate")
            m = kind(layer.num_features, eps=layer.eps, momentum=layer.momentum, dtype=dtype)
            links += [(layer, "gamma", m.weight, False), (layer, "beta", m.bias, False),
                      (layer, "running_mean", m.running_mean, False),
                      (layer, "running_var", m.running_var, False)]
        elif isinstance(layer, Dense):
            m = nn.Linear(layer.in_features, layer.out_features, dtype=dtype)
            links += [(layer, "W", m.weight, True), (layer, "b", m.bias, False)]
        elif isinstance(layer, LeakyReLU):
            m = nn.LeakyReLU(layer.negative_slope)
        elif isinstance(layer, ReLU):
            m = nn.ReLU()
        elif isinstance(layer, Sigmoid):
            m = nn.Sigmoid()
        elif isinstance(layer, Tanh):
            m = nn.Tanh()
        elif isinstance(layer, Softmax):
            m = nn.Softmax(dim=-1)
        elif isinstance(layer, Flatten):
            m = nn.Flatten()                          # row-major over (C, H, W), like ours
        elif isinstance(layer, Dropout):
            m = nn.Dropout(layer.p)
        else:
            raise ValueError(f"to_torch: layer {i} {layer!r} ({type(layer).__name__}) has no "
                             "PyTorch translation here")
        modules.append(m)
    net = nn.Sequential(*modules)     # built in the right dtype: .to() would replace buffers
    net.train(model.training)
    copy_to_torch(links)
    return net, links


def _numpy_array(layer, key):
    return layer.params[key] if key in layer.params else layer.buffers[key]


def copy_to_torch(links):
    """Copy every linked NumPy array into its tensor."""
    import torch
    with torch.no_grad():
        for layer, key, tensor, transpose in links:
            a = _numpy_array(layer, key)
            tensor.copy_(torch.from_numpy(np.ascontiguousarray(a.T if transpose else a)))


def as_float64(model):
    """A float64 copy of ``model`` (params and buffers cast; the original is untouched)."""
    twin = copy.deepcopy(model)
    for layer in twin.layers:
        for store in (layer.params, getattr(layer, "buffers", {})):
            for key, value in store.items():
                store[key] = value.astype(np.float64)
    return twin


def _without_dropout(model, net):
    """Training mode for both, except Dropout: both then compute the same function."""
    model.train()
    net.train()
    for layer, module in zip(model.layers, net):
        if isinstance(layer, Dropout):
            layer.training = False
            module.eval()


def cross_check(model, net, input_shape, x, y):
    """Do ``model`` and its translation ``net`` compute the same thing? On one batch ``x, y``:

    - ``forward_eval_max_abs_diff``: max |logits difference| in evaluation mode, float32 (the
      models as benchmarked);
    - ``float64_*``: float64 copies of both in training mode with Dropout off (BatchNorm on
      batch statistics): the logits, and each parameter's gradient of the mean cross-entropy,
      relative to its largest entry (or to 0.1% of the network's largest gradient, for
      gradients that are zero in exact arithmetic, like a bias just before BatchNorm).
      float64 keeps rounding far below any real discrepancy; in float32, a max-pool window
      whose two largest inputs differ by less than the rounding error may pick a different
      winner, which changes the gradients of the layers below it by a few percent.

    Neither model's state changes."""
    import torch
    was_training = model.training
    try:
        model.eval()
        net.eval()
        with torch.no_grad():
            logits_t = net(torch.from_numpy(x)).numpy()
        diff_eval = float(np.max(np.abs(logits_t - model.forward(x))))
    finally:
        model.train(was_training)
        net.train(was_training)

    m64 = as_float64(model)
    net64, links = to_torch(m64, input_shape)
    _without_dropout(m64, net64)
    x64 = x.astype(np.float64)
    loss_fn = SoftmaxCrossEntropy()
    logits = m64.forward(x64)
    loss_fn.forward(logits, y)
    m64.backward(loss_fn.backward())
    logits_t = net64(torch.from_numpy(x64))
    torch.nn.functional.cross_entropy(logits_t, torch.from_numpy(y)).backward()
    pairs = {}
    for i, layer in enumerate(m64.layers):
        for layer_, key, tensor, transpose in links:
            if layer_ is layer and key in layer.params:
                g = tensor.grad.numpy()
                pairs[f"{i}.{key}"] = (layer.grads[key], g.T if transpose else g)
    largest = max(float(np.max(np.abs(t))) for _, t in pairs.values())
    grads = {name: float(np.max(np.abs(a - t))) / max(float(np.max(np.abs(t))), 1e-3 * largest)
             for name, (a, t) in pairs.items()}
    return {"forward_eval_max_abs_diff": diff_eval,
            "float64_forward_train_max_abs_diff":
                float(np.max(np.abs(logits_t.detach().numpy() - logits))),
            "float64_grad_max_rel_diff": grads}


# -- 4. per-layer profile -----------------------------------------------------------------------

def profile_step(model, optimizer, x, y, batches):
    """Median milliseconds per batch of each layer's forward and backward, the loss and the
    optimizer step, over ``batches`` (training mode, the optimizer stepping as in training).
    Medians, not means: a burst of another job's work lands in a few batches only."""
    stepper = fast.twin(optimizer)       # as training steps
    n = len(model.layers)
    fwd, bwd = np.zeros((len(batches), n)), np.zeros((len(batches), n))
    loss_time, opt_time = np.zeros(len(batches)), np.zeros(len(batches))
    loss_fn = SoftmaxCrossEntropy()
    clock = time.perf_counter
    skip_first_dx = takes_input_grad(model.layers[0])
    for b, idx in enumerate(batches):
        out, yb = x[idx], y[idx]
        for i, layer in enumerate(model.layers):
            t = clock()
            out = layer.forward(out)
            fwd[b, i] = clock() - t
        t = clock()
        loss_fn.forward(out, yb)
        d = loss_fn.backward()
        loss_time[b] = clock() - t
        for i in reversed(range(n)):
            t = clock()
            if i == 0 and skip_first_dx:    # as Sequential.backward(..., input_grad=False)
                model.layers[0].backward(d, input_grad=False)
            else:
                d = model.layers[i].backward(d)
            bwd[b, i] = clock() - t
        t = clock()
        stepper.step()
        opt_time[b] = clock() - t
    fwd, bwd = np.median(fwd, axis=0) * 1e3, np.median(bwd, axis=0) * 1e3
    rows = [{"layer": f"{i}: {layer!r}", "forward_ms": fwd[i], "backward_ms": bwd[i]}
            for i, layer in enumerate(model.layers)]
    rows.append({"layer": "loss (SoftmaxCrossEntropy fwd+bwd)",
                 "forward_ms": float(np.median(loss_time)) * 1e3, "backward_ms": 0.0})
    rows.append({"layer": f"optimizer ({type(optimizer).__name__}.step)",
                 "forward_ms": float(np.median(opt_time)) * 1e3, "backward_ms": 0.0})
    for r in rows:
        r["forward_ms"], r["backward_ms"] = float(r["forward_ms"]), float(r["backward_ms"])
    for r in rows:
        r["total_ms"] = r["forward_ms"] + r["backward_ms"]
    total = sum(r["total_ms"] for r in rows)
    for r in rows:
        r["share"] = r["total_ms"] / total
    rows.sort(key=lambda r: -r["total_ms"])
    return rows, total


def print_profile(rows, total, n_batches, batches_per_epoch):
    width = max(len(r["layer"]) for r in rows)
    say(f"median over {n_batches} batches, ms per batch; the optimizer and loss rows count their "
        "whole time under 'forward'",
        f"{'layer':<{width}}  {'forward':>8}  {'backward':>8}  {'total':>8}  {'share':>6}",
        "-" * (width + 40))
    for r in rows:
        say(f"{r['layer']:<{width}}  {r['forward_ms']:8.2f}  {r['backward_ms']:8.2f}  "
            f"{r['total_ms']:8.2f}  {r['share']:6.1%}")
    say("-" * (width + 40),
        f"{'sum':<{width}}  {'':>8}  {'':>8}  {total:8.2f}  "
        f"(= {total * batches_per_epoch / 1e3:.1f} s per {batches_per_epoch}-batch epoch)")


# -- 5. loops against im2col --------------------------------------------------------------------

def naive_vs_vectorized(model, input_shape, n_images, seed):
    """Forward+backward of the model's second Conv2D (its first if it has one), built once with
    loops (``Conv2DNaive``) and once vectorized, on ``n_images`` random inputs of that layer's
    input shape. Returns a dict of timings, or None when the model has no Conv2D."""
    shapes = trace_input_shapes(model, input_shape)
    convs = [(layer, s) for layer, s in zip(model.layers, shapes) if isinstance(layer, Conv2D)]
    if not convs:
        return None
    layer, shape = convs[1] if len(convs) > 1 else convs[0]
    cfg = layer.config()
    dtype = layer.params["W"].dtype
    naive, vectorized = Conv2DNaive(**cfg, dtype=dtype), type(layer)(**cfg, dtype=dtype)
    for target in (naive, vectorized):
        for key, value in layer.params.items():
            target.params[key][...] = value
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_images, *shape)).astype(dtype)

    def run(conv):
        out = conv.forward(x)
        dout = np.random.default_rng(seed + 1).standard_normal(out.shape).astype(dtype)
        return out, conv.backward(dout), dict(conv.grads)

    start = time.perf_counter()
    out_n, dx_n, g_n = run(naive)
    t_naive = time.perf_counter() - start
    run(vectorized)                                      # warm-up: buffers, caches
    times = []
    budget = time.perf_counter() + min(2.0, max(0.2, t_naive))
    while len(times) < 5 or (time.perf_counter() < budget and len(times) < 1000):
        start = time.perf_counter()
        out_f, dx_f, g_f = run(vectorized)
        times.append(time.perf_counter() - start)
    t_fast = min(times)                  # as timeit does: the run least disturbed
    diff = max(float(np.max(np.abs(a - b))) for a, b in
               [(out_n, out_f), (dx_n, dx_f)] + [(g_n[k], g_f[k]) for k in g_n])
    return {"layer": repr(layer), "input_shape": [n_images, *shape],
            "naive_seconds": t_naive, "vectorized_seconds": t_fast,
            "vectorized_repeats": len(times), "speedup": t_naive / t_fast,
            "max_abs_diff": diff}


# -- the run ------------------------------------------------------------------------------------

def write_json(path, results):
    """Write ``results`` to ``path`` atomically (a temporary file renamed into place)."""
    with atomic_write(path, "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")


def import_torch(args):
    """``(torch module or None, reason)``."""
    if args.no_torch:
        return None, "skipped (--no-torch)"
    try:
        import torch
    except ImportError as err:
        return None, f"not importable ({err}); pip install torch for the comparison"
    return torch, None


def main(argv=None) -> int:
    args = parse_args(argv)
    results = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
               "argv": sys.argv[1:] if argv is None else list(argv)}
    info = machine_info()                     # before torch is imported: numpy's BLAS only
    cores = info["usable_cores"] or 1
    threads = args.threads or cores
    numpy_threads = args.numpy_threads or threads
    # as cnn_lessons.training.train does: each NumPy process does its matrix products on
    # one core
    with blas_threads(1):
        return run(args, results, info, threads, numpy_threads)


def run(args, results, info, threads, numpy_threads) -> int:
    print_machine(info, numpy_threads)
    results["machine"] = info
    torch, why_not = import_torch(args)
    if torch is not None:
        torch.set_num_threads(threads)
        n = torch.get_num_threads()
        say(f"PyTorch {torch.__version__}: {n} thread{'s' if n > 1 else ''}, "
            f"oneDNN {'on' if torch.backends.mkldnn.is_available() else 'off'}")
        results["machine"]["torch"] = {"version": torch.__version__,
                                       "threads": torch.get_num_threads()}
    else:
        say(f"PyTorch: {why_not}")
        results["machine"]["torch"] = None

    # -- data, model, batches
    try:
        x, y, source = load_data(args)
    except ValueError as err:           # cnn_lessons.data.DataError: missing or corrupt files
        print(f"speed.py: {err}", file=sys.stderr)
        return 2
    B = args.batch_size
    images_per_epoch, batches_per_epoch = epoch_layout(len(x), B)
    n_batches = args.batches or batches_per_epoch
    extrapolated = n_batches < batches_per_epoch
    chunks = min(args.chunks or default_chunks(n_batches), n_batches)
    fb_batches = args.fb_batches or min(n_batches, 200)
    prof_batches = args.profile_batches or min(n_batches, 30)
    warm = 3
    all_batches = make_batches(len(x), B, warm + n_batches + fb_batches + prof_batches, args.seed)
    warm_b, train_b = all_batches[:warm], all_batches[warm:warm + n_batches]
    fb_b = all_batches[warm + n_batches:warm + n_batches + fb_batches]
    prof_b = all_batches[warm + n_batches + fb_batches:]
    model = models.cnn(seed=args.seed)
    input_shape = x.shape[1:]
    numpy_runner = NumpyRunner(model, args.lr, numpy_threads, B, x.shape[1:])
    runners = [numpy_runner]
    results["settings"] = {"data": source, "batch_size": B, "batches": n_batches,
                           "batches_per_epoch": batches_per_epoch,
                           "images_per_epoch": images_per_epoch, "extrapolated": extrapolated,
                           "chunks": chunks, "threads_torch": threads if torch else None,
                           "numpy_processes": numpy_threads, "blas_threads_per_process": 1,
                           "lr": args.lr,
                           "dtype": "float32", "optimizer": "Adam",
                           "model": "cnn_lessons.models.cnn()",
                           "layers": [repr(layer) for layer in model.layers],
                           "num_params": model.num_params()}
    say(f"data: {source}",
        f"model: cnn_lessons.models.cnn(), {model.num_params():,} parameters, "
        f"{' -> '.join(type(layer).__name__ for layer in model.layers)}",
        f"training step: forward, SoftmaxCrossEntropy, backward, Adam(lr={args.lr}).step; "
        f"float32, batch {B}")

    # -- the PyTorch twin, and the cross-check
    net = None
    if torch is not None:
        try:
            net, _ = to_torch(model, input_shape)
        except ValueError as err:
            say(f"PyTorch: cannot translate the model: {err}")
            torch = None
    if net is not None:
        heading("Cross-check: the same network in PyTorch")
        say(f"translated: {' -> '.join(type(m).__name__ for m in net)}")
        check_idx = train_b[0]
        check = cross_check(model, net, input_shape, x[check_idx], y[check_idx])
        results["cross_check"] = check
        worst = max(check["float64_grad_max_rel_diff"].items(), key=lambda kv: kv[1])
        say(f"one batch of {len(check_idx)}, same initial weights:",
            f"  float32, evaluation mode: max |numpy - torch| logits = "
            f"{check['forward_eval_max_abs_diff']:.1e}",
            f"  float64, training mode without dropout: max |numpy - torch| logits = "
            f"{check['float64_forward_train_max_abs_diff']:.1e};",
            f"    parameter gradients, max |numpy - torch| / max |torch| = {worst[1]:.1e} "
            f"(worst: {worst[0]})")
        runners.append(TorchRunner(torch, net, numpy_runner.optimizer))

    # -- 2 and 3: training, alternating
    what = (f"{n_batches} of {batches_per_epoch} batches, EXTRAPOLATED to an epoch"
            if extrapolated else f"{n_batches} batches = one epoch")
    heading(f"2-3. Training speed ({what})")
    say(f"{chunks} chunks, {' / '.join(r.name for r in runners)} alternating; "
        f"{warm} warm-up batches each, not timed")
    warm_up(runners, "train_step", x, y, warm_b)
    timed = alternate(runners, "train_step", x, y, train_b, chunks)
    train = {name: summarize(c, B, batches_per_epoch) for name, c in timed.items()}
    for name, s in train.items():
        say(f"{name:5s}: {s['seconds_total']:7.2f} s for {s['batches']} batches; "
            + per_batch_spread(s) + f" -> {s['epoch_seconds']:.1f} s/epoch"
            + (" extrapolated" if extrapolated else "")
            + f" (fastest chunk: {s['epoch_seconds_best']:.1f})")
    results["train"] = train

    say("", f"forward+backward alone (loss included, no optimizer step): {fb_batches} batches "
        f"in {default_chunks(fb_batches)} chunks")
    warm_up(runners, "forward_backward", x, y, warm_b)
    fb_timed = alternate(runners, "forward_backward", x, y, fb_b, default_chunks(fb_batches))
    fb = {name: summarize(c, B, batches_per_epoch) for name, c in fb_timed.items()}
    for name, s in fb.items():
        say(f"{name:5s}: {s['images_per_second']:8.0f} images/s (fastest chunk: "
            f"{s['images_per_second_best']:.0f}); " + per_batch_spread(s))
    results["forward_backward"] = fb
    ratios = None
    if torch is not None:
        ratios = {
            "training": train["numpy"]["epoch_seconds"] / train["torch"]["epoch_seconds"],
            "training_paired": paired_ratio(timed["numpy"], timed["torch"]),
            "training_best": (train["numpy"]["epoch_seconds_best"]
                              / train["torch"]["epoch_seconds_best"]),
            "forward_backward": (fb["torch"]["images_per_second"]
                                 / fb["numpy"]["images_per_second"]),
            "forward_backward_paired": paired_ratio(fb_timed["numpy"], fb_timed["torch"]),
            "forward_backward_best": (fb["torch"]["images_per_second_best"]
                                      / fb["numpy"]["images_per_second_best"]),
        }
        results["ratio_numpy_over_torch"] = ratios

    numpy_runner.close()              # the replica processes are not needed any more

    # -- 4. per-layer profile
    heading("4. Per-layer time of one NumPy training step, in one process "
            "(most expensive first)")
    rows, total = profile_step(model, numpy_runner.optimizer, x, y, prof_b)
    print_profile(rows, total, len(prof_b), batches_per_epoch)
    results["profile"] = {"batches": len(prof_b), "total_ms": total, "rows": rows}

    # -- 5. loops against im2col
    naive = None
    if args.naive_images:
        heading("5. Loop Conv2D (Conv2DNaive) against vectorized Conv2D")
        naive = naive_vs_vectorized(model, input_shape, args.naive_images, args.seed)
        if naive is None:
            say("the model has no Conv2D layer")
        else:
            say(f"{naive['layer']} on input {tuple(naive['input_shape'])}, forward+backward:",
                f"  loops:      {naive['naive_seconds'] * 1e3:10.1f} ms",
                f"  vectorized: {naive['vectorized_seconds'] * 1e3:10.2f} ms "
                f"(fastest of {naive['vectorized_repeats']})",
                f"  speed-up:   {naive['speedup']:10.0f}x   (outputs and gradients agree to "
                f"{naive['max_abs_diff']:.1e})")
    results["naive_conv"] = naive

    # -- 6. summary
    results["machine"]["load_average_end"] = load_average()
    heading("6. Summary")
    how = (f"EXTRAPOLATED from {n_batches} of {batches_per_epoch} batches of {B}" if extrapolated
           else f"{batches_per_epoch} batches of {B}")
    say(f"numpy  epoch: {train['numpy']['epoch_seconds']:.1f} s   ({how}; fastest chunk "
        f"{train['numpy']['epoch_seconds_best']:.1f} s)")
    if ratios is not None:
        say(f"torch  epoch: {train['torch']['epoch_seconds']:.1f} s   "
            f"({threads} thread{'s' if threads > 1 else ''}; fastest chunk "
            f"{train['torch']['epoch_seconds_best']:.1f} s)",
            f"ratio numpy/torch (training): {ratios['training']:.2f}x   (chunk pairs: "
            f"{ratios['training_paired']:.2f}x, fastest chunks: {ratios['training_best']:.2f}x)",
            f"numpy  forward+backward: {fb['numpy']['images_per_second']:.0f} images/s",
            f"torch  forward+backward: {fb['torch']['images_per_second']:.0f} images/s",
            f"ratio numpy/torch (forward+backward): {ratios['forward_backward']:.2f}x   "
            f"(chunk pairs: {ratios['forward_backward_paired']:.2f}x, fastest chunks: "
            f"{ratios['forward_backward_best']:.2f}x)",
            f"cross-check max |numpy - torch| logits: "
            f"{results['cross_check']['forward_eval_max_abs_diff']:.1e}")
    else:
        say(f"numpy  forward+backward: {fb['numpy']['images_per_second']:.0f} images/s",
            f"torch: {why_not}")
    if naive is not None:
        say(f"Conv2D loops/vectorized: {naive['speedup']:.0f}x")
    load = results["machine"]["load_average_end"]
    start_load = (info["load_average"] or [0])[0]
    busy = load is not None and max(load[0], start_load) > info["usable_cores"]
    say(f"load average at start {info['load_average']}, at end {load}, on "
        f"{info['usable_cores']} cores" + ("  -- BUSY: other jobs shared the machine, the "
                                          "times above are inflated (--threads 1 suffers "
                                          "least from that)" if busy else ""))
    if args.json:
        write_json(args.json, results)
        say(f"numbers written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
