"""MNIST and Fashion-MNIST: images read from the original IDX files, and mini-batches of them.

Two datasets share one format, one size and one loader, :func:`load_dataset`:

- ``"mnist"``: handwritten digits 0-9 (:func:`load_mnist` is ``load_dataset("mnist", ...)``);
- ``"fashion-mnist"``: Zalando's photos of clothes, shoes and bags in 10 classes, from
  "T-shirt/top" to "Ankle boot" (:data:`DATASETS` holds the names of the classes).

Each comes in two forms:

- the **full** dataset -- 60,000 training and 10,000 test images -- read from the four files in
  which it was published (``train-images-idx3-ubyte`` and friends, gzip-compressed or not; the
  two datasets use the same four names), each checked against its SHA-256. A file of the other
  dataset is recognised by its checksum and refused with a message that says so;
- a **sample** that ships inside this package (``sample=True``), a stratified draw from the full
  set made by ``scripts/make_sample.py``: for MNIST 5,000 training and 1,000 test digits, for
  Fashion-MNIST 1,700 training and 500 test images. Nothing falls back from one to the other
  on its own.

Where the full files are looked for, in this order:

1. the ``data_dir`` argument;
2. the folder named by the environment variable ``CNN_LESSONS_DATA``;
3. a per-user cache folder (:func:`cache_dir`, e.g. ``~/.cache/cnn_lessons/fashion-mnist``),
   then the system folder where a Linux distribution installs the dataset, if any (Debian's
   package ``dataset-fashion-mnist``); files missing in the cache are downloaded from the
   public mirrors (:func:`download_dataset`).

A folder given by 1. or 2. either holds the four files itself or has one subfolder per dataset,
named as the dataset (``$CNN_LESSONS_DATA/mnist/``, ``$CNN_LESSONS_DATA/fashion-mnist/``); the
subfolder wins when it exists. Nothing is downloaded into a folder given by 1. or 2.

The IDX format (one file per array) is simple enough to read by hand, see :func:`read_idx`::

    bytes 0-1   0x00 0x00
    byte  2     the type of the values: 0x08 = unsigned byte (MNIST), 0x09 = signed byte,
                0x0B = int16, 0x0C = int32, 0x0D = float32, 0x0E = float64
    byte  3     the number of dimensions d (images: 3, labels: 1)
    then        d sizes, each a 4-byte big-endian unsigned integer (images: N, 28, 28)
    then        the values, big-endian, row-major (C order)

So the image files start with the "magic number" ``0x00000803`` and the label files with
``0x00000801``.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import sys
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .files import cleans_up_on_signals, temp_file
from .validate import float_dtype

ENV_VAR = "CNN_LESSONS_DATA"

#: The four file names (uncompressed), the same for both datasets, in the order
#: x_train, y_train, x_test, y_test.
FILE_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
SAMPLE_DIR = Path(__file__).parent / "sample"


@dataclass(frozen=True)
class DatasetInfo:
    """What the loader knows of one dataset.

    ``sha256``: for each of :data:`FILE_NAMES`, the SHA-256 of its *uncompressed* contents. A gzip
    file's bytes depend on how it was compressed, so the contents are what is checked: a
    re-compressed copy is accepted. ``mirrors``: base URLs serving ``<name>.gz``, tried in turn.
    ``class_names``: the 10 labels' names. ``system_dirs``: folders where an operating-system
    package installs the files. ``sample``: the sample shipped with the package.
    """

    name: str
    title: str
    sha256: dict
    mirrors: tuple
    class_names: tuple
    sample: Path
    system_dirs: tuple = ()

    def __post_init__(self):
        assert tuple(self.sha256) == FILE_NAMES and len(self.class_names) == 10


DATASETS = {
    # The SHA-256 values published with the MNIST database.
    # (The original site, yann.lecun.com/exdb/mnist/, no longer serves the files.)
    "mnist": DatasetInfo(
        name="mnist", title="MNIST",
        sha256={
            "train-images-idx3-ubyte":
                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte":
                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte":
                "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte":
                "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",
                 "https://storage.googleapis.com/cvdf-datasets/mnist/"),
        class_names=tuple(str(digit) for digit in range(10)),
        sample=SAMPLE_DIR / "mnist_sample.npz"),
    # Zalando publishes the MD5 of its four .gz files; these are the SHA-256 of the contents
    # of exactly those files.
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist", title="Fashion-MNIST",
        sha256={
            "train-images-idx3-ubyte":
                "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte":
                "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte":
                "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte":
                "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        mirrors=("https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/"
                 "data/fashion/",
                 "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"),
        class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                     "Shirt", "Sneaker", "Bag", "Ankle boot"),
        sample=SAMPLE_DIR / "fashion-mnist_sample.npz",
        system_dirs=("/usr/share/datasets/fashion-mnist",)),
}

#: Shortcuts to MNIST's checksums, mirrors and sample.
SHA256 = DATASETS["mnist"].sha256
MIRRORS = DATASETS["mnist"].mirrors
SAMPLE_PATH = DATASETS["mnist"].sample

IDX_TYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
             0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
GZIP_MAGIC = b"\x1f\x8b"


class DataError(ValueError):
    """A data file or folder that is missing, truncated, malformed or fails its checksum."""


@dataclass(repr=False)
class MNIST:
    """A dataset of MNIST's form (MNIST itself or Fashion-MNIST), ready for a network.

    ``x_train`` ``(N, 1, 28, 28)`` pixel intensities in [0, 1] (``0`` = background),
    ``y_train`` ``(N,)`` int64 class labels 0..9, and the same for ``x_test``, ``y_test``.
    ``kind`` is ``"full"`` or ``"sample"``; ``source`` the folder or file they were read from;
    ``name`` the dataset (a key of :data:`DATASETS`) and ``class_names`` its 10 labels' names.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    kind: str
    source: str
    name: str = "mnist"
    class_names: tuple = DATASETS["mnist"].class_names

    def __repr__(self):
        return (f"{DATASETS[self.name].title}(kind={self.kind!r}, x_train={self.x_train.shape} "
                f"{self.x_train.dtype}, x_test={self.x_test.shape}, source={self.source!r})")


def dataset_info(name) -> DatasetInfo:
    """The :class:`DatasetInfo` of ``name`` (``"mnist"`` or ``"fashion-mnist"``)."""
    if isinstance(name, DatasetInfo):
        return name
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}: expected one of "
                         f"{', '.join(map(repr, DATASETS))}")
    return DATASETS[name]


# -- reading IDX files --------------------------------------------------------------------

def read_bytes(path) -> bytes:
    """The contents of ``path``, decompressed if it is gzip (recognised by its first two
    bytes, whatever its name)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            compressed = f.read(2) == GZIP_MAGIC
        if not compressed:
            return path.read_bytes()
        with gzip.open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"{path}: broken gzip file (truncated or corrupted download?): {e}") \
            from None


def parse_idx(data: bytes, *, name="<bytes>", ndim: int | None = None) -> np.ndarray:
    """Decode the IDX bytes ``data`` (see the module docstring) into an array, in native byte
    order. ``ndim`` (optional) is the number of dimensions expected: 3 means the magic number
    must be ``0x00000803``. ``name`` appears in error messages."""
    if len(data) < 4:
        raise DataError(f"{name}: not an IDX file: {len(data)} bytes, shorter than the 4-byte "
                        "magic number")
    magic = int.from_bytes(data[:4], "big")
    zero, type_code, dims = data[0:2], data[2], data[3]
    if zero != b"\0\0" or type_code not in IDX_TYPES:
        raise DataError(f"{name}: not an IDX file: magic number 0x{magic:08X}, expected "
                        "0x0000TTDD (TT a type code such as 08, DD the number of dimensions)")
    if ndim is not None and dims != ndim:
        raise DataError(f"{name}: wrong magic number 0x{magic:08X}: expected "
                        f"0x{0x0800 + ndim:08X} ({ndim}-dimensional), the file has {dims} "
                        "dimensions")
    header = 4 + 4 * dims
    if len(data) < header:
        raise DataError(f"{name}: truncated IDX header: {dims} dimensions need {header} bytes, "
                        f"the file has {len(data)}")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    dtype = IDX_TYPES[type_code]
    expected = header + math.prod(shape) * dtype.itemsize      # exact: no int64 overflow
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "too long"
        raise DataError(f"{name}: {what}: the header promises shape {shape} of {dtype.name}, "
                        f"{expected} bytes in all, the file has {len(data)} bytes")
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def read_idx(path, *, ndim: int | None = None) -> np.ndarray:
    """Read one IDX file (gzip-compressed or not) into an array.

    ``read_idx("train-images-idx3-ubyte.gz")`` is ``(60000, 28, 28)`` uint8 and
    ``read_idx("train-labels-idx1-ubyte.gz")`` ``(60000,)`` uint8. With ``ndim`` given, a file
    with another number of dimensions (another magic number) is refused.
    """
    return parse_idx(read_bytes(path), name=str(path), ndim=ndim)


# -- where the files are --------------------------------------------------------------------

def cache_dir(name="mnist") -> Path:
    """The per-user folder where the downloaded files of dataset ``name`` are kept
    (``~/.cache/cnn_lessons/mnist`` on Linux, following ``XDG_CACHE_HOME``)."""
    import platformdirs  # pooch's own choice of folder, without importing pooch (and tqdm)
    return Path(platformdirs.user_cache_dir("cnn_lessons")) / dataset_info(name).name


def find_file(folder, name) -> Path | None:
    """``folder/name.gz`` or else ``folder/name`` if either exists, otherwise ``None``."""
    for candidate in (Path(folder) / f"{name}.gz", Path(folder) / name):
        if candidate.is_file():
            return candidate
    return None


def dataset_folder(folder, name="mnist") -> Path:
    """Where the files of dataset ``name`` are under a folder given by the user: its subfolder
    named as the dataset (``folder/fashion-mnist``) when there is one, else the folder itself."""
    sub = Path(folder) / dataset_info(name).name
    return sub if sub.is_dir() else Path(folder)


def dataset_files(folder, name="mnist", *, origin="data folder") -> dict[str, Path]:
    """The four files of dataset ``name`` in ``folder``, by file name; a clear
    :class:`DataError` if the folder or any file is missing. ``origin`` says where the folder
    came from, for the message."""
    info = dataset_info(name)
    folder = Path(folder)
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise DataError(f"{info.title} {origin} {folder} {what}")
    found = {file: find_file(folder, file) for file in FILE_NAMES}
    missing = [file for file, path in found.items() if path is None]
    if missing:
        raise DataError(
            f"{info.title} {origin} {folder} is missing {', '.join(missing)}. It must hold the "
            f"four files {', '.join(FILE_NAMES)} (each may be gzip-compressed, ending in .gz), "
            f"or a subfolder {info.name}/ holding them. Use sample=True for the small sample "
            "shipped with the package.")
    return found


def mnist_files(folder, *, origin="data folder") -> dict[str, Path]:
    """The four MNIST files in ``folder``: :func:`dataset_files` for ``"mnist"``."""
    return dataset_files(folder, "mnist", origin=origin)


def find_dataset(name="mnist", data_dir=None) -> Path:
    """The folder holding the full files of dataset ``name``: under ``data_dir``, else under
    ``$CNN_LESSONS_DATA`` (each through :func:`dataset_folder`), else :func:`cache_dir` when it
    is complete, else a system folder that holds them, else the cache after downloading what is
    missing there. An empty ``CNN_LESSONS_DATA`` counts as unset, and so does one that points
    straight at another dataset's files (a ``data_dir`` that does is refused)."""
    info = dataset_info(name)
    env = os.environ.get(ENV_VAR, "")
    for given, origin in ((data_dir, "data folder (data_dir argument)"),
                          (env or None, f"data folder (${ENV_VAR})")):
        if given is not None:
            folder = dataset_folder(given, info)
            if given is env and _holds_another_dataset(folder, info):
                continue      # $CNN_LESSONS_DATA pointing at MNIST's files says nothing of Fashion's
            dataset_files(folder, info, origin=origin)
            return folder
    folder = cache_dir(info.name)
    if all(find_file(folder, file) for file in FILE_NAMES):
        return folder
    for system in info.system_dirs:
        if all(find_file(system, file) for file in FILE_NAMES):
            return Path(system)
    return download_dataset(info.name, folder)


def _holds_another_dataset(folder, info) -> bool:
    """True when ``folder``'s (small) test-label file is another dataset's: both datasets use
    the same file names."""
    labels = find_file(folder, "t10k-labels-idx1-ubyte")
    if labels is None:
        return False
    got = hashlib.sha256(read_bytes(labels)).hexdigest()
    return any(other.name != info.name and got == other.sha256["t10k-labels-idx1-ubyte"]
               for other in DATASETS.values())


def find_mnist(data_dir=None) -> Path:
    """The folder holding the full MNIST files: :func:`find_dataset` for ``"mnist"``."""
    return find_dataset("mnist", data_dir)


# -- checksums and downloading -----------------------------------------------------------

def check_sha256(data: bytes, file: str, where, name="mnist") -> None:
    """Refuse the contents ``data`` of file ``file`` of dataset ``name`` (read from ``where``)
    unless their SHA-256 is the expected one; a file of another dataset is named as such."""
    info = dataset_info(name)
    got = hashlib.sha256(data).hexdigest()
    if got == info.sha256[file]:
        return
    for other in DATASETS.values():
        if other.name != info.name and got == other.sha256.get(file):
            raise DataError(
                f"{where}: this is the {other.title} file {file}, not the {info.title} one: "
                f"{info.title} was asked for. Point the data folder at the {info.title} files "
                f"(or at a folder with a subfolder {info.name}/), or ask for the dataset "
                f"{other.name!r}.")
    raise DataError(f"{where}: checksum mismatch for {file}: expected SHA-256 "
                    f"{info.sha256[file]}, got {got}. The file is corrupted or not the "
                    f"{info.title} file; delete it (a cached copy is downloaded again).")


@cleans_up_on_signals          # a kill removes the partial download, as an error does
def download_dataset(name="mnist", folder=None, *, mirrors=None, progressbar=None) -> Path:
    """Download the files of dataset ``name`` missing from ``folder`` (default
    :func:`cache_dir`) and return the folder. ``mirrors``: base URLs to try in turn (default
    the dataset's own).

    Each file is tried on each mirror in turn. A download goes into a temporary file in
    ``folder``, its decompressed contents are checked against the dataset's SHA-256, and only
    then is it renamed into place: an interrupted or corrupted download never stays in the
    folder. Messages go to stdout, and the progress bar (stderr) only to a terminal: a notebook
    that downloads the data, such as a chapter of the book, then writes nothing to stderr.
    """
    with warnings.catch_warnings():     # imported here: only downloading needs it
        # pooch imports tqdm.auto, which warns on stderr in a notebook without ipywidgets;
        # no bar is drawn there anyway (progressbar below)
        warnings.filterwarnings("ignore", message="IProgress not found")
        import pooch
    info = dataset_info(name)
    folder = Path(cache_dir(info.name) if folder is None else folder)
    mirrors = info.mirrors if mirrors is None else mirrors
    folder.mkdir(parents=True, exist_ok=True)
    if progressbar is None:
        progressbar = sys.stderr.isatty()
    downloader = pooch.HTTPDownloader(progressbar=progressbar, timeout=60)
    for file in FILE_NAMES:
        if find_file(folder, file) is not None:
            continue
        failures = []
        for mirror in mirrors:
            url = f"{mirror}{file}.gz"
            fd, tmp = temp_file(folder, f".tmp-{file}-", ".part")   # a killed run's stale ones go
            os.close(fd)
            try:
                print(f"Downloading {url}", flush=True)
                downloader(url, tmp, None)
                check_sha256(read_bytes(tmp), file, where=url, name=info)
                with open(tmp, "rb") as f:  # a server may have decompressed it on the way
                    final = folder / (f"{file}.gz" if f.read(2) == GZIP_MAGIC else file)
                os.replace(tmp, final)
                break
            except Exception as e:  # a dead mirror, a broken connection, a corrupted copy
                failures.append(f"  {url}: {e}")
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
        else:
            raise DataError(
                f"could not download {info.title} file {file} into {folder}; every mirror "
                "failed:\n" + "\n".join(failures)
                + f"\nIf you have the files, pass data_dir=... or set ${ENV_VAR}; "
                "sample=True works offline.")
    return folder


def download_mnist(folder=None, *, mirrors=None, progressbar=None) -> Path:
    """Download the MNIST files missing from ``folder``: :func:`download_dataset`."""
    return download_dataset("mnist", folder, mirrors=mirrors, progressbar=progressbar)


# -- loading ------------------------------------------------------------------------------

def read_dataset(folder, name="mnist") -> dict[str, np.ndarray]:
    """The full arrays of dataset ``name`` from ``folder``, as stored: ``x_train``
    ``(60000, 28, 28)`` uint8, ``y_train`` ``(60000,)`` uint8, ``x_test`` ``(10000, 28, 28)``,
    ``y_test`` ``(10000,)``. Every file is checked against its SHA-256 first."""
    info = dataset_info(name)
    files = dataset_files(folder, info)
    arrays = {}
    for key, file in zip(("x_train", "y_train", "x_test", "y_test"), FILE_NAMES):
        data = read_bytes(files[file])
        check_sha256(data, file, where=files[file], name=info)
        arrays[key] = parse_idx(data, name=str(files[file]), ndim=3 if key[0] == "x" else 1)
    for part in ("train", "test"):
        x, y = arrays[f"x_{part}"], arrays[f"y_{part}"]
        if len(x) != len(y):
            raise DataError(f"{info.title} folder {folder}: {len(x)} {part} images but "
                            f"{len(y)} labels")
    return arrays


def read_mnist(folder) -> dict[str, np.ndarray]:
    """The full MNIST arrays from ``folder``: :func:`read_dataset` for ``"mnist"``."""
    return read_dataset(folder, "mnist")


def check_sample(arrays, path, title="MNIST") -> None:
    """Refuse a sample file without the expected arrays, shapes and types."""
    for part in ("train", "test"):
        x, y = arrays.get(f"x_{part}"), arrays.get(f"y_{part}")
        if x is None or y is None:
            raise DataError(f"{path}: not a {title} sample: no x_{part}/y_{part} arrays")
        if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (28, 28) or y.shape != x.shape[:1]:
            raise DataError(f"{path}: not a {title} sample: x_{part} {x.shape} {x.dtype} and "
                            f"y_{part} {y.shape}, expected (N, 28, 28) uint8 and (N,)")


def load_dataset(name="mnist", data_dir=None, *, sample=False, dtype=np.float32) -> MNIST:
    """Load dataset ``name`` (``"mnist"`` or ``"fashion-mnist"``), ready for a network: images
    ``(N, 1, 28, 28)`` scaled to [0, 1] in ``dtype`` and int64 labels ``(N,)``.

    ``sample=False`` (default): the full dataset (60,000 + 10,000 images), found as described
    in the module docstring. ``sample=True``: the sample shipped with the package; it needs no
    files and no network.
    """
    info = dataset_info(name)
    dtype = float_dtype("load_dataset", dtype)
    if sample:
        if data_dir is not None:
            raise ValueError("load_dataset: data_dir is for the full dataset; sample=True always "
                             f"reads the sample shipped with the package ({info.sample})")
        with np.load(info.sample, allow_pickle=False) as f:
            arrays = {key: f[key] for key in f.files}
        check_sample(arrays, info.sample, info.title)
        kind, source = "sample", info.sample
    else:
        source = find_dataset(info.name, data_dir)
        arrays = read_dataset(source, info)
        kind = "full"

    def images(x):  # (N, 28, 28) uint8 -> (N, 1, 28, 28) in [0, 1]
        return (x.astype(dtype) / dtype.type(255))[:, None, :, :]

    return MNIST(x_train=images(arrays["x_train"]), y_train=arrays["y_train"].astype(np.int64),
                 x_test=images(arrays["x_test"]), y_test=arrays["y_test"].astype(np.int64),
                 kind=kind, source=str(source), name=info.name, class_names=info.class_names)


def load_mnist(data_dir=None, *, sample=False, dtype=np.float32) -> MNIST:
    """Load MNIST: :func:`load_dataset` for ``"mnist"``. ``sample=True`` gives the 5,000 + 1,000
    digits (10% of each class) shipped with the package."""
    return load_dataset("mnist", data_dir, sample=sample, dtype=dtype)


# -- mini-batches -------------------------------------------------------------------------

def batches(x, y, batch_size: int, *, shuffle: bool = True, rng=None):
    """Yield mini-batches ``(xb, yb)``: ``xb = x[idx]``, ``yb = y[idx]`` for consecutive groups
    ``idx`` of ``batch_size`` indices, covering every example exactly once (one epoch).

    With ``shuffle=True`` the indices are a random permutation drawn from ``rng`` (a
    ``numpy.random.Generator`` or a seed; the same seed gives the same batches, ``None`` a fresh
    random order); with ``shuffle=False`` they are in order. The last batch is smaller when
    ``batch_size`` does not divide ``len(x)``: it holds the ``len(x) % batch_size`` rest.
    Bad arguments are refused at the call, before the first batch.
    """
    n = len(x)
    if len(y) != n:
        raise ValueError(f"batches: x has {n} examples but y has {len(y)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise ValueError(f"batches: batch_size must be a positive integer, got {batch_size!r}")
    order = np.random.default_rng(rng).permutation(n) if shuffle else np.arange(n)
    return ((x[order[i:i + batch_size]], y[order[i:i + batch_size]])
            for i in range(0, n, batch_size))
