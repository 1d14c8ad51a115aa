"""Command line: ``python -m cnn_lessons train ...`` and ``python -m cnn_lessons evaluate ...``.

    python -m cnn_lessons train --model cnn --epochs 3 --batch-size 64 --optimizer adam \\
        --lr 1e-3 --seed 0 --out model.npz [--dataset {mnist,fashion-mnist}] [--data-dir DIR] \\
        [--sample] [--metrics-json FILE]
    python -m cnn_lessons evaluate model.npz [--dataset NAME] [--data-dir DIR] [--sample] \\
        [--plots DIR]

A saved model remembers the dataset it was trained on, and ``evaluate`` uses that dataset
unless ``--dataset`` says otherwise.

Every failure (bad arguments, missing data, a corrupted or mismatched model file, an output
that cannot be written, a training that diverges) is reported in one line on stderr with exit
code 2; ``--debug`` shows the traceback instead.  Arguments and output paths are checked before
any work starts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from .data import DATASETS


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit code 2, like every other failure here
        self.exit(2, f"{self.prog}: error: {message}\n")


def _number(low, high=None, *, low_open=False, high_open=False):
    """An argparse type: a finite number in the given range (not nan, not inf); argparse
    names the option in the error."""
    from .validate import number
    try:                          # the sentence validate.number uses for this range
        number("", "", float("nan"), low, high, low_open=low_open, high_open=high_open)
    except ValueError as err:
        expected = str(err).split("must be ", 1)[1].split(", got")[0]

    def parse(text):
        try:
            return number("", "", float(text), low, high, low_open=low_open,
                          high_open=high_open)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    return parse



def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m cnn_lessons",
                description="Train and evaluate the book's networks on MNIST or Fashion-MNIST.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a model and save it")
    t.add_argument("--model", choices=["cnn", "mlp"], default="cnn")
    t.add_argument("--epochs", type=int, default=None, help="default: the model's recipe (cnn: 3)")
    t.add_argument("--batch-size", type=int, default=None, help="default: 64")
    t.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    t.add_argument("--lr", type=_number(0, low_open=True), default=None,
                   help="learning rate (default: the model's recipe for adam (cnn: 3e-3), 0.05 for sgd)")
    t.add_argument("--momentum", type=_number(0, 1, high_open=True), default=0.9,
                   help="SGD momentum, in [0, 1) (default 0.9)")
    t.add_argument("--weight-decay", type=_number(0), default=0.0)
    t.add_argument("--schedule", choices=["cosine", "step", "constant"], default=None,
                   help="learning-rate schedule (default: the model's recipe, cosine)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", default="model.npz", help="where to save the model (.npz)")
    t.add_argument("--dataset", choices=list(DATASETS), default="mnist",
                   help="the images to train on (default: mnist)")
    t.add_argument("--data-dir", default=None,
                   help="folder with the dataset's four IDX files (or a subfolder per dataset)")
    t.add_argument("--sample", action="store_true", help="use the small sample shipped with the package")
    t.add_argument("--limit", type=int, default=None, help="train on the first N images only")
    t.add_argument("--metrics-json", default=None, help="write history and timings to this file")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")

    e = sub.add_parser("evaluate", help="evaluate a saved model on the test set")
    e.add_argument("model_file")
    e.add_argument("--dataset", choices=list(DATASETS), default=None,
                   help="default: the dataset the model was trained on (mnist if unknown)")
    e.add_argument("--data-dir", default=None)
    e.add_argument("--sample", action="store_true")
    e.add_argument("--plots", default=None, metavar="DIR", help="write the figures as PNG into DIR")
    for command in (t, e):
        command.add_argument("--debug", action="store_true",
                             help="show the traceback of an error instead of one line")
    return p


def _positive(name, value, minimum=1):
    if value is not None and value < minimum:
        raise ValueError(f"--{name} must be {'positive' if minimum else '>= 0'}, got {value}")


def _check_outputs(args):
    """Refuse, before any training, outputs that cannot be written or that collide."""
    from .files import check_writable
    check_writable(args.out, "--out")
    if args.metrics_json:
        check_writable(args.metrics_json, "--metrics-json")
        if os.path.abspath(args.metrics_json) == os.path.abspath(args.out) or (
                os.path.exists(args.out) and os.path.exists(args.metrics_json)
                and os.path.samefile(args.out, args.metrics_json)):
            raise ValueError(f"--out and --metrics-json name the same file {args.out}; the "
                             "metrics would overwrite the model")


def _write_json_atomic(path, obj):
    from .files import atomic_write
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=1)


def _save(model, path, /, **metadata):
    """``model.save``, its errors naming ``--out``."""
    try:
        model.save(path, **metadata)
    except OSError as err:
        raise OSError(f"--out {path}: {err}") from None


def cmd_train(args) -> int:
    from . import models
    from .data import load_dataset
    from .evaluation import evaluate
    from .optimizers import SGD, Adam
    from .training import train

    for name in ("epochs", "batch_size", "limit"):
        _positive(name.replace("_", "-"), getattr(args, name))
    _positive("seed", args.seed, 0)
    _check_outputs(args)
    recipe = models.RECIPES[args.model]
    args.epochs = args.epochs or recipe["epochs"]
    args.batch_size = args.batch_size or recipe["batch_size"]
    args.schedule = args.schedule or recipe["lr_schedule"]
    data = load_dataset(args.dataset, args.data_dir, sample=args.sample)
    title = DATASETS[data.name].title
    x_train, y_train = data.x_train, data.y_train
    if args.limit:
        x_train, y_train = x_train[:args.limit], y_train[:args.limit]
    model = models.MODELS[args.model](seed=args.seed)
    if args.optimizer == "adam":
        opt = Adam(model, lr=args.lr or recipe["lr"], weight_decay=args.weight_decay)
    else:
        opt = SGD(model, lr=args.lr or 0.05, momentum=args.momentum, weight_decay=args.weight_decay)
    print(f"training {args.model} on {len(x_train):,} {data.kind} {title} images "
          f"({args.epochs} epochs, batch {args.batch_size}, {args.optimizer}, seed {args.seed})")
    start = time.perf_counter()
    history = train(model, x_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                    optimizer=opt, x_test=data.x_test, y_test=data.y_test, seed=args.seed,
                    lr_schedule=None if args.schedule == "constant" else args.schedule,
                    progress=not args.no_progress)
    seconds = time.perf_counter() - start
    ev = evaluate(model, data.x_test, data.y_test)
    _save(model, args.out, model=args.model, dataset=data.name, data=data.kind,
          test_accuracy=ev.accuracy, epochs=args.epochs, seed=args.seed)
    print(f"trained in {seconds:.1f} s ({', '.join(f'{s:.1f}' for s in history['epoch']['seconds'])} s per epoch)")
    print(f"test accuracy: {ev.accuracy:.2%}")
    print(f"saved {args.out}")
    if args.metrics_json:
        _write_json_atomic(args.metrics_json, {
            "model": args.model, "dataset": data.name, "data": data.kind, "epochs": args.epochs,
            "batch_size": args.batch_size, "optimizer": args.optimizer, "seed": args.seed,
            "test_accuracy": ev.accuracy, "seconds_total": seconds,
            "seconds_per_epoch": history["epoch"]["seconds"], "history": history})
    return 0


def cmd_evaluate(args) -> int:
    from . import plots
    from .data import load_dataset
    from .evaluation import evaluate, format_report
    from .files import check_writable
    from .model import Sequential, read_metadata

    if args.plots:                                    # before the work, not after it
        check_writable(os.path.join(args.plots, "confusion_matrix.png"), "--plots")
    model = Sequential.load(args.model_file)
    meta = read_metadata(args.model_file)
    name = args.dataset or meta.get("dataset", "mnist")
    if name not in DATASETS:
        raise ValueError(f"{args.model_file}: the model was trained on an unknown dataset "
                         f"{name!r}; choose one with --dataset {{{','.join(DATASETS)}}}")
    data = load_dataset(name, args.data_dir, sample=args.sample)
    ev = evaluate(model, data.x_test, data.y_test)
    print(f"{args.model_file}: {meta.get('model', 'model')} on {len(data.x_test):,} {data.kind} "
          f"{DATASETS[name].title} test images")
    print(format_report(ev, class_names=data.class_names))
    if args.plots:
        os.makedirs(args.plots, exist_ok=True)
        figures = {
            "confusion_matrix": plots.confusion_matrix(ev.confusion_matrix, data.class_names),
            "per_class_recall": plots.per_class_recall(ev.recall, data.class_names),
            "misclassified": plots.misclassified_grid(data.x_test[ev.misclassified],
                                                      data.y_test[ev.misclassified],
                                                      ev.predictions[ev.misclassified],
                                                      class_names=data.class_names),
        }
        first = model.layers[0]
        if "W" in first.params and first.params["W"].ndim == 4:        # a convolutional net
            figures["filters"] = plots.filters(first.params["W"])
            figures["feature_maps"] = plots.feature_maps(model, data.x_test[0])
        for name, fig in figures.items():
            path = os.path.join(args.plots, f"{name}.png")
            plots.save(fig, path, close=True)
            print(f"wrote {path}")
    return 0


def main(argv=None) -> int:
    import numpy as np
    args = _parser().parse_args(argv)
    # NumPy's overflow warnings would add lines to stderr; a training that diverges is stopped
    # by its guard, which says where (--debug lets the warnings through)
    quiet = np.errstate(all="ignore") if not args.debug else np.errstate()
    try:
        with quiet:
            return {"train": cmd_train, "evaluate": cmd_evaluate}[args.command](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # every failure, expected or not: one line (a traceback: --debug)
        if args.debug:
            raise
        from .data import DataError
        from .model import ModelFileError
        from .training import TrainingDiverged
        message = " ".join(line.strip() for line in str(err).splitlines())   # one line
        if isinstance(err, TrainingDiverged):
            message = f"training diverged: {message}"
        elif not isinstance(err, (DataError, ModelFileError, ValueError, OSError)):
            message = f"{type(err).__name__}: {message} (rerun with --debug for the traceback)"
        print(f"python -m cnn_lessons {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
