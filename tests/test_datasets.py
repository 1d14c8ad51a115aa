"""The second dataset, Fashion-MNIST: its own checksums, cache, sample and class names; each
dataset refusing the other's files; one folder per dataset under CNN_LESSONS_DATA; the
``--dataset`` option of the command line and the dataset a saved model remembers.

Synthetic IDX files stand in for the real ones (their checksums are put in place of the
published ones for the test); the tests on the real files run only where the files are.
"""

import dataclasses
import gzip
import hashlib
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cnn_lessons import data, models
from cnn_lessons.data import DataError, load_dataset, load_mnist
from cnn_lessons.model import read_metadata

NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")


def idx_bytes(array) -> bytes:
    """The IDX encoding of a uint8 array: magic 0x000008DD, big-endian sizes, the bytes."""
    array = np.asarray(array, dtype=np.uint8)
    return (struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
            + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes())


def fake_dataset(folder, *, seed, n_train=30, n_test=20):
    """Four small IDX files (gzip) in ``folder``; their arrays and the SHA-256 of each file's
    uncompressed contents. Different seeds give different files."""
    rng = np.random.default_rng(seed)
    arrays = {"x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "y_train": rng.permutation(np.arange(n_train) % 10).astype(np.uint8),
              "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "y_test": rng.permutation(np.arange(n_test) % 10).astype(np.uint8)}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    hashes = {}
    for name, key in zip(NAMES, arrays):
        content = idx_bytes(arrays[key])
        (folder / f"{name}.gz").write_bytes(gzip.compress(content, mtime=0))
        hashes[name] = hashlib.sha256(content).hexdigest()
    return arrays, hashes


@pytest.fixture
def two(tmp_path, monkeypatch):
    """Fake MNIST files in tmp/mnist and fake Fashion-MNIST files in tmp/fashion, each dataset
    expecting its own; no env var, an empty cache, no system folder, and no download."""
    made = {}
    for name, folder, seed in (("mnist", "mnist", 1), ("fashion-mnist", "fashion", 2)):
        arrays, hashes = fake_dataset(tmp_path / folder, seed=seed)
        monkeypatch.setitem(data.DATASETS, name, dataclasses.replace(
            data.DATASETS[name], sha256=hashes, system_dirs=()))
        made[name] = (tmp_path / folder, arrays)
    monkeypatch.delenv("CNN_LESSONS_DATA", raising=False)
    monkeypatch.setattr(data, "cache_dir", lambda name="mnist": tmp_path / "cache" / name)

    def no_download(*args, **kwargs):
        raise AssertionError("nothing may be downloaded here")
    monkeypatch.setattr(data, "download_dataset", no_download)
    return made


# -- the registry ---------------------------------------------------------------------------

def test_each_dataset_has_its_own_checksums_mirrors_cache_and_class_names():
    mnist, fashion = data.DATASETS["mnist"], data.DATASETS["fashion-mnist"]
    assert tuple(mnist.sha256) == tuple(fashion.sha256) == NAMES
    for name in NAMES:
        assert mnist.sha256[name] != fashion.sha256[name]
        assert len(fashion.sha256[name]) == 64 and int(fashion.sha256[name], 16) >= 0
    assert not set(mnist.mirrors) & set(fashion.mirrors)
    assert mnist.class_names == tuple("0123456789")
    assert fashion.class_names == FASHION_CLASSES
    assert data.cache_dir("fashion-mnist").name == "fashion-mnist"
    assert data.cache_dir("fashion-mnist").parent == data.cache_dir("mnist").parent
    assert data.SHA256 is mnist.sha256 and data.SAMPLE_PATH == mnist.sample


def test_an_unknown_dataset_is_refused_with_the_known_names():
    with pytest.raises(ValueError, match="unknown dataset 'cifar10'.*'mnist', 'fashion-mnist'"):
        load_dataset("cifar10", sample=True)


# -- each dataset from its own folder, and never from the other's ----------------------------

def test_each_dataset_loads_from_its_folder_with_its_class_names(two):
    for name in ("mnist", "fashion-mnist"):
        folder, arrays = two[name]
        d = load_dataset(name, folder)
        assert (d.name, d.kind, d.source) == (name, "full", str(folder))
        assert d.class_names == data.DATASETS[name].class_names
        assert d.x_train.shape == (30, 1, 28, 28) and d.x_train.dtype == np.float32
        np.testing.assert_array_equal(d.x_test[:, 0], arrays["x_test"] / np.float32(255))
        np.testing.assert_array_equal(d.y_train, arrays["y_train"])
    assert repr(load_dataset("fashion-mnist", two["fashion-mnist"][0])).startswith(
        "Fashion-MNIST(kind='full'")


@pytest.mark.parametrize("asked, other", [("fashion-mnist", "mnist"), ("mnist", "fashion-mnist")])
def test_a_folder_of_the_other_datasets_files_is_refused_by_name(two, asked, other):
    folder, _ = two[other]
    with pytest.raises(DataError) as err:
        load_dataset(asked, folder)
    msg = str(err.value)
    titles = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}
    assert f"this is the {titles[other]} file train-images-idx3-ubyte, not the " \
           f"{titles[asked]} one" in msg
    assert str(folder / "train-images-idx3-ubyte.gz") in msg and f"{asked}/" in msg
    assert "checksum mismatch" not in msg and "\n" not in msg


def test_a_file_of_neither_dataset_is_a_checksum_mismatch(two):
    folder, arrays = two["fashion-mnist"]
    (folder / f"{NAMES[3]}.gz").write_bytes(gzip.compress(idx_bytes(arrays["y_test"][::-1])))
    with pytest.raises(DataError, match="checksum mismatch for t10k-labels-idx1-ubyte.*"
                                        "not the Fashion-MNIST file"):
        load_dataset("fashion-mnist", folder)


def test_one_folder_per_dataset_under_the_env_var(two, tmp_path, monkeypatch):
    root = tmp_path / "datasets"
    root.mkdir()
    (root / "mnist").symlink_to(two["mnist"][0])
    (root / "fashion-mnist").symlink_to(two["fashion-mnist"][0])
    monkeypatch.setenv("CNN_LESSONS_DATA", str(root))
    assert load_dataset("fashion-mnist").source == str(root / "fashion-mnist")
    assert load_mnist().source == str(root / "mnist")
    np.testing.assert_array_equal(load_dataset("fashion-mnist").y_test,
                                  two["fashion-mnist"][1]["y_test"])
    # the same layout given as data_dir
    assert load_dataset("fashion-mnist", root).source == str(root / "fashion-mnist")


def test_env_var_holding_one_datasets_files_is_not_used_for_the_other(two, tmp_path,
                                                                      monkeypatch):
    # The README's set-up points CNN_LESSONS_DATA at the MNIST files; Fashion-MNIST then
    # comes from the next place (here a system folder), never from the MNIST files.
    monkeypatch.setenv("CNN_LESSONS_DATA", str(two["mnist"][0]))
    system = tmp_path / "usr-share-fashion"
    fake_dataset(system, seed=2)                     # the same files as two["fashion-mnist"]
    monkeypatch.setitem(data.DATASETS, "fashion-mnist",
                        dataclasses.replace(data.DATASETS["fashion-mnist"],
                                            system_dirs=(str(system),)))
    monkeypatch.setattr(data, "cache_dir", lambda name="mnist": tmp_path / "empty-cache")
    assert load_mnist().source == str(two["mnist"][0])
    fashion = load_dataset("fashion-mnist")
    assert fashion.source == str(system)
    np.testing.assert_array_equal(fashion.y_test, two["fashion-mnist"][1]["y_test"])
    # given explicitly, the other dataset's folder is still refused
    with pytest.raises(DataError, match="this is the MNIST file .* not the Fashion-MNIST one"):
        load_dataset("fashion-mnist", two["mnist"][0])


def test_env_var_with_a_subfolder_for_one_dataset_only(two, tmp_path, monkeypatch):
    root = tmp_path / "only-fashion"
    root.mkdir()
    (root / "fashion-mnist").symlink_to(two["fashion-mnist"][0])
    monkeypatch.setenv("CNN_LESSONS_DATA", str(root))
    assert load_dataset("fashion-mnist").source == str(root / "fashion-mnist")
    with pytest.raises(DataError, match=r"MNIST data folder \(\$CNN_LESSONS_DATA\) .* is missing "
                                        r".* or a subfolder mnist/ holding them"):
        load_mnist()


def test_cache_then_system_folder_then_download(two, tmp_path, monkeypatch):
    system = tmp_path / "usr-share-fashion"
    fake_dataset(system, seed=2)                     # the same files as two["fashion-mnist"]
    info = data.DATASETS["fashion-mnist"]
    monkeypatch.setitem(data.DATASETS, "fashion-mnist",
                        dataclasses.replace(info, system_dirs=(str(system),)))
    assert load_dataset("fashion-mnist").source == str(system)
    cache = tmp_path / "cache" / "fashion-mnist"
    fake_dataset(cache, seed=2)
    assert load_dataset("fashion-mnist").source == str(cache)   # a complete cache comes first
    (cache / f"{NAMES[0]}.gz").unlink()
    (system / f"{NAMES[0]}.gz").unlink()
    calls = []
    monkeypatch.setattr(data, "download_dataset", lambda *a, **k: calls.append(a) or cache)
    with pytest.raises(DataError):          # the stand-in download leaves the file missing
        load_dataset("fashion-mnist")
    assert calls == [("fashion-mnist", cache)]


def test_download_uses_the_datasets_own_mirrors(tmp_path, monkeypatch):
    import pooch
    tried = []

    class Offline:
        def __init__(self, **kwargs):
            pass

        def __call__(self, url, path, known_hash):
            tried.append(url)
            raise OSError("offline")
    monkeypatch.setattr(pooch, "HTTPDownloader", Offline)
    with pytest.raises(DataError, match="could not download Fashion-MNIST file "
                                        "train-images-idx3-ubyte") as err:
        data.download_dataset("fashion-mnist", tmp_path / "c", progressbar=False)
    mirrors = data.DATASETS["fashion-mnist"].mirrors
    assert tried == [f"{m}train-images-idx3-ubyte.gz" for m in mirrors]
    assert all(m in str(err.value) for m in mirrors)
    assert os.listdir(tmp_path / "c") == []


# -- the shipped sample -----------------------------------------------------------------------

def test_fashion_sample_is_small_stratified_and_named():
    info = data.DATASETS["fashion-mnist"]
    assert info.sample.stat().st_size <= 1_000_000
    d = load_dataset("fashion-mnist", sample=True)
    assert (d.name, d.kind, d.source) == ("fashion-mnist", "sample", str(info.sample))
    assert d.class_names == FASHION_CLASSES
    assert d.x_train.shape == (1700, 1, 28, 28) and d.x_test.shape == (500, 1, 28, 28)
    np.testing.assert_array_equal(np.bincount(d.y_train, minlength=10), [170] * 10)
    np.testing.assert_array_equal(np.bincount(d.y_test, minlength=10), [50] * 10)
    with np.load(info.sample, allow_pickle=False) as f:
        assert f["x_train"].dtype == np.uint8
        for part, n in (("train", 60000), ("test", 10000)):
            idx = f[f"{part}_index"]
            assert len(np.unique(idx)) == len(idx) and 0 <= idx.min() and idx.max() < n


def test_fashion_sample_is_not_mnist():
    """Clothes fill the frame where digits leave it blank: the ink in the 3-pixel border."""
    frame = np.ones((28, 28), bool)
    frame[3:25, 3:25] = False
    fashion = load_dataset("fashion-mnist", sample=True).x_train[:, 0]
    digits = load_mnist(sample=True).x_train[:, 0]
    assert (digits[:, frame] > 0).mean() < 0.02 < 0.1 < (fashion[:, frame] > 0).mean()


# -- the real files, where they are --------------------------------------------------------------

def real_folder(name):
    """A folder with the real files of ``name``, from CNN_LESSONS_DATA or the system folder."""
    env = os.environ.get("CNN_LESSONS_DATA", "")
    candidates = [data.dataset_folder(env, name)] if env else []
    candidates += [Path(p) for p in data.DATASETS[name].system_dirs]
    for folder in candidates:
        if all(data.find_file(folder, f) for f in NAMES) and _holds(folder, name):
            return folder
    return None


def _holds(folder, name) -> bool:
    """True when the (small) test-label file in ``folder`` is ``name``'s: both datasets use
    the same file names, so a folder of MNIST files must not stand in for Fashion-MNIST."""
    labels = "t10k-labels-idx1-ubyte"
    raw = data.read_bytes(data.find_file(folder, labels))
    return hashlib.sha256(raw).hexdigest() == data.DATASETS[name].sha256[labels]


@pytest.mark.skipif(real_folder("fashion-mnist") is None,
                    reason="the Fashion-MNIST files are not here (apt-get install "
                           "dataset-fashion-mnist, or CNN_LESSONS_DATA/fashion-mnist/)")
def test_real_fashion_files_match_their_checksums_sizes_and_the_sample():
    folder = real_folder("fashion-mnist")
    full = data.read_dataset(folder, "fashion-mnist")       # every checksum verified
    assert full["x_train"].shape == (60000, 28, 28) and full["x_test"].shape == (10000, 28, 28)
    np.testing.assert_array_equal(np.bincount(full["y_train"]), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(full["y_test"]), [1000] * 10)
    with np.load(data.DATASETS["fashion-mnist"].sample) as f:
        for part in ("train", "test"):
            idx = f[f"{part}_index"]
            np.testing.assert_array_equal(f[f"x_{part}"], full[f"x_{part}"][idx])
            np.testing.assert_array_equal(f[f"y_{part}"], full[f"y_{part}"][idx])


@pytest.mark.skipif(real_folder("fashion-mnist") is None or real_folder("mnist") is None,
                    reason="needs both the real MNIST and Fashion-MNIST files")
@pytest.mark.parametrize("asked, other", [("fashion-mnist", "mnist"), ("mnist", "fashion-mnist")])
def test_real_files_of_one_dataset_are_refused_for_the_other(asked, other):
    with pytest.raises(DataError, match=f"this is the {data.DATASETS[other].title} file "
                                        "train-images-idx3-ubyte"):
        load_dataset(asked, real_folder(other))


# -- the command line -----------------------------------------------------------------------------

def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "cnn_lessons", *args], capture_output=True,
                          text=True, timeout=300, env=env)


def test_cli_trains_on_fashion_and_evaluate_remembers_it(tmp_path):
    out = tmp_path / "mlp.npz"
    r = run_cli("train", "--dataset", "fashion-mnist", "--sample", "--model", "mlp",
                "--epochs", "1", "--limit", "300", "--no-progress", "--out", str(out),
                "--metrics-json", str(tmp_path / "m.json"))
    assert r.returncode == 0, r.stderr
    assert "on 300 sample Fashion-MNIST images" in r.stdout
    assert read_metadata(out)["dataset"] == "fashion-mnist"
    assert json.loads((tmp_path / "m.json").read_text())["dataset"] == "fashion-mnist"

    r = run_cli("evaluate", str(out), "--sample", "--plots", str(tmp_path / "p"))
    assert r.returncode == 0, r.stderr
    assert "on 500 sample Fashion-MNIST test images" in r.stdout
    rows = [line.split() for line in r.stdout.splitlines()]
    assert ["Ankle", "boot"] in [row[:2] for row in rows]        # the report names the classes
    d = load_dataset("fashion-mnist", sample=True)
    from cnn_lessons.model import Sequential
    accuracy = np.mean(Sequential.load(out).predict(d.x_test) == d.y_test)
    assert f"test accuracy: {100 * accuracy:.2f}%" in r.stdout
    assert (tmp_path / "p" / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"

    r = run_cli("evaluate", str(out), "--sample", "--dataset", "mnist")   # asked for: obeyed
    assert r.returncode == 0, r.stderr
    assert "on 1,000 sample MNIST test images" in r.stdout


def test_cli_evaluate_of_a_model_without_a_dataset_uses_mnist(tmp_path):
    model = models.mlp(seed=0)
    model.save(tmp_path / "old.npz", model="mlp")
    r = run_cli("evaluate", str(tmp_path / "old.npz"), "--sample")
    assert r.returncode == 0, r.stderr
    assert "sample MNIST test images" in r.stdout


@pytest.mark.skipif(real_folder("fashion-mnist") is None or real_folder("mnist") is None,
                    reason="needs both the real MNIST and Fashion-MNIST files")
def test_cli_refuses_the_other_datasets_folder_in_one_line():
    env = {**os.environ, "CNN_LESSONS_DATA": ""}
    for asked, other in (("fashion-mnist", "mnist"), ("mnist", "fashion-mnist")):
        r = run_cli("train", "--dataset", asked, "--data-dir", str(real_folder(other)),
                    "--epochs", "1", env=env)
        assert r.returncode == 2
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1, r.stderr
        assert f"this is the {data.DATASETS[other].title} file" in lines[0]


def test_cli_refuses_an_unknown_dataset():
    r = run_cli("train", "--dataset", "kmnist")
    assert r.returncode == 2 and "invalid choice: 'kmnist'" in r.stderr


def test_cli_refuses_a_model_trained_on_an_unknown_dataset(tmp_path):
    models.mlp(seed=0).save(tmp_path / "m.npz", model="mlp", dataset="cifar10")
    r = run_cli("evaluate", str(tmp_path / "m.npz"), "--sample")
    assert r.returncode == 2
    assert "unknown dataset 'cifar10'" in r.stderr and "--dataset" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
