"""Processes or threads: which way does the book's CNN use every core better?

Times the same training steps (``cnn_lessons.models.cnn()``, float32, Adam, batch 64) two ways,
in alternating chunks (one, the other, one, the other...) so that both see the same background
load:

- ``threads``: one process, BLAS using every core for the matrix products;
- ``processes``: ``cnn_lessons.parallel.DataParallel``, one process per core, one BLAS thread
  each (what ``cnn_lessons.training.train`` does).

Prints the median ms per batch of each and the median over chunk pairs of threads/processes:
the gain of processes (above 1: processes are faster).

    python benchmarks/cores.py                 # 300 batches each, in 10 chunks
    python benchmarks/cores.py --batches 600 --chunks 20
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
from pathlib import Path

import numpy as np

from cnn_lessons import models
from cnn_lessons.parallel import blas_threads, cores


def _speed():
    """benchmarks/speed.py as a module (its runners and alternating clock)."""
    spec = importlib.util.spec_from_file_location("speed", Path(__file__).with_name("speed.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ThreadedRunner:
    """One process whose BLAS uses ``threads`` threads inside each step."""

    def __init__(self, runner, threads):
        self.runner, self.threads, self.name = runner, threads, "threads"

    def train_step(self, xb, yb):
        with blas_threads(self.threads):
            self.runner.train_step(xb, yb)


def compare(x, y, n_cores: int, batches: int, chunks: int, lr: float = 3e-3, seed: int = 0):
    """``{"threads_ms", "processes_ms", "gain"}``: median ms per batch each way and the median
    of threads/processes over chunk pairs."""
    speed = _speed()
    shape = x.shape[1:]
    one = ThreadedRunner(speed.NumpyRunner(models.cnn(seed=seed), lr, 1, 64, shape), n_cores)
    many = speed.NumpyRunner(models.cnn(seed=seed), lr, n_cores, 64, shape)
    many.name = "processes"
    order = speed.make_batches(len(x), 64, batches + 3, seed)
    try:
        with blas_threads(1):
            speed.warm_up([one, many], "train_step", x, y, order[:3])
            out = speed.alternate([one, many], "train_step", x, y, order[3:], chunks)
    finally:
        many.close()
    per_batch = {k: 1e3 * statistics.median(np.array(v["seconds"]) / np.array(v["batches"]))
                 for k, v in out.items()}
    return {"threads_ms": per_batch["threads"], "processes_ms": per_batch["processes"],
            "gain": speed.paired_ratio(out["threads"], out["processes"])}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--chunks", type=int, default=10)
    parser.add_argument("--cores", type=int, default=None, help="default: every usable core")
    parser.add_argument("--sample", action="store_true", help="the shipped 5,000-digit sample")
    args = parser.parse_args(argv)
    n_cores = args.cores or cores()
    if n_cores < 2:
        print("cores.py: one core only; nothing to compare", file=sys.stderr)
        return 2
    from cnn_lessons.data import load_mnist
    data = load_mnist(sample=args.sample)
    r = compare(data.x_train, data.y_train, n_cores, args.batches, args.chunks)
    print(f"{n_cores} cores, {args.batches} batches of 64 each way, {args.chunks} chunk pairs")
    print(f"one process, {n_cores} BLAS threads: {r['threads_ms']:.1f} ms/batch (median chunk)")
    print(f"{n_cores} processes, 1 BLAS thread each: {r['processes_ms']:.1f} ms/batch")
    print(f"processes are {r['gain']:.2f}x as fast (median over chunk pairs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
