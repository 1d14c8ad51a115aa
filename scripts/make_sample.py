"""Make a sample shipped with the package: ``cnn_lessons/sample/<dataset>_sample.npz``.

From the full files of ``--dataset`` (``mnist``, the default, or ``fashion-mnist``; checked
against their SHA-256), draw a stratified random sample: ``--train-per-class`` training images
and ``--test-per-class`` test images of each class 0..9, with ``numpy.random.default_rng(--seed)``
(default 0). The images keep their original order (sorted by their index in the full set).
The defaults are those of the shipped samples: 500 and 100 for MNIST, 170 and 50 for
Fashion-MNIST (whose images compress less well: the file stays under 1 MB).

The ``.npz`` file (compressed, loads with ``allow_pickle=False``) holds
``x_train`` (N, 28, 28) uint8, ``y_train`` (N,) uint8, ``x_test``, ``y_test``, and
``train_index``, ``test_index`` (int64): the position of each digit in the full training
and test sets, so that ``full_x_train[train_index] == x_train``.

Usage::

    python scripts/make_sample.py --data-dir /path/to/mnist   # or set CNN_LESSONS_DATA
    python scripts/make_sample.py --dataset fashion-mnist --data-dir /usr/share/datasets/fashion-mnist

The same data and seed give the same arrays (the zip file's timestamps differ).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cnn_lessons.data import DATASETS, ENV_VAR, dataset_folder, read_dataset  # noqa: E402
from cnn_lessons.files import atomic_write  # noqa: E402


def stratified_indices(labels: np.ndarray, per_class: int, rng) -> np.ndarray:
    """``per_class`` indices of each class in ``labels`` ``(N,)``, drawn without replacement,
    returned sorted ``(10 * per_class,)``."""
    chosen = []
    for digit in range(10):
        where = np.flatnonzero(labels == digit)
        if len(where) < per_class:
            raise ValueError(f"only {len(where)} examples of class {digit}, "
                             f"{per_class} requested")
        chosen.append(rng.choice(where, size=per_class, replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64)


#: Images per class in the shipped samples, (training, test).
PER_CLASS = {"mnist": (500, 100), "fashion-mnist": (170, 50)}


def make_sample(data_dir, out, *, train_per_class=500, test_per_class=100, seed=0,
                dataset="mnist") -> Path:
    full = read_dataset(dataset_folder(data_dir, dataset), dataset)
    rng = np.random.default_rng(seed)
    train_index = stratified_indices(full["y_train"], train_per_class, rng)
    test_index = stratified_indices(full["y_test"], test_per_class, rng)
    arrays = {
        "x_train": full["x_train"][train_index], "y_train": full["y_train"][train_index],
        "x_test": full["x_test"][test_index], "y_test": full["y_test"][test_index],
        "train_index": train_index, "test_index": test_index,
    }
    out = Path(out)
    with atomic_write(out) as f:  # a temporary file, renamed into place when complete
        np.savez_compressed(f, **arrays)
    with np.load(out, allow_pickle=False) as f:  # read it back
        for key, value in arrays.items():
            assert np.array_equal(f[key], value) and f[key].dtype == value.dtype, key
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="mnist")
    parser.add_argument("--data-dir", default=os.environ.get(ENV_VAR) or None,
                        help=f"folder with the four full files (default: ${ENV_VAR})")
    parser.add_argument("--out", default=None, help="output .npz file (default: the shipped one)")
    parser.add_argument("--train-per-class", type=int, default=None)
    parser.add_argument("--test-per-class", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.data_dir is None:
        parser.error(f"give --data-dir or set ${ENV_VAR} to the folder with the full files")
    train, test = PER_CLASS[args.dataset]
    out = make_sample(args.data_dir, args.out or DATASETS[args.dataset].sample,
                      train_per_class=args.train_per_class or train,
                      test_per_class=args.test_per_class or test, seed=args.seed,
                      dataset=args.dataset)
    print(f"wrote {out} ({out.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
