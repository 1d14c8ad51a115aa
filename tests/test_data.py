"""MNIST loading (cnn_lessons.data): IDX parsing, checksums, where the files are looked for,
downloads from mirrors (served locally, never the network), the shipped sample, mini-batches.
(Fashion-MNIST, the second dataset, is tested in test_datasets.py.)

Tests that need the full MNIST files run only when CNN_LESSONS_DATA points at them.
"""

import gzip
import hashlib
import http.server
import importlib.util
import dataclasses
import os
import socket
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnn_lessons import data
from cnn_lessons.data import DataError, batches, load_mnist, read_idx

ROOT = Path(__file__).resolve().parent.parent
NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
FULL = os.environ.get("CNN_LESSONS_DATA", "")
needs_full = pytest.mark.skipif(not FULL, reason="CNN_LESSONS_DATA (full MNIST) not set")



def use_hashes(monkeypatch, hashes, name="mnist", **changes):
    """Make dataset ``name`` expect the SHA-256 values ``hashes`` (and other ``changes`` to
    its :class:`~cnn_lessons.data.DatasetInfo`, e.g. ``mirrors``) for this test."""
    info = data.DATASETS[name]
    monkeypatch.setitem(data.DATASETS, name, dataclasses.replace(
        info, sha256=info.sha256 if hashes is None else hashes, **changes))


def cache_in(folder):
    """A stand-in for :func:`cnn_lessons.data.cache_dir`: every dataset's cache is ``folder``."""
    return lambda name="mnist": folder


# -- writing IDX files, independently of the reader ------------------------------------------

CODES = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype("i2"): 0x0B,
         np.dtype("i4"): 0x0C, np.dtype("f4"): 0x0D, np.dtype("f8"): 0x0E}


def idx_bytes(array) -> bytes:
    """The IDX encoding of ``array``: magic, big-endian sizes, big-endian values."""
    array = np.asarray(array)
    header = struct.pack(">BBBB", 0, 0, CODES[array.dtype], array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write(path, content: bytes, gz: bool) -> Path:
    path = Path(f"{path}.gz" if gz else path)
    path.write_bytes(gzip.compress(content, mtime=0) if gz else content)
    return path


def fake_mnist(folder, *, n_train=30, n_test=20, gz=True, seed=0):
    """Write four small MNIST-like files into ``folder``; return their arrays and the SHA-256
    of each file's uncompressed contents."""
    rng = np.random.default_rng(seed)
    arrays = {"x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "y_train": (np.arange(n_train) % 10).astype(np.uint8),
              "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "y_test": (np.arange(n_test) % 10).astype(np.uint8)}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    hashes = {}
    for name, key in zip(NAMES, arrays):
        content = idx_bytes(arrays[key])
        write(folder / name, content, gz)
        hashes[name] = hashlib.sha256(content).hexdigest()
    return arrays, hashes


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A fake MNIST folder whose checksums are the ones expected; no env var, no cache."""
    arrays, hashes = fake_mnist(tmp_path / "mnist")
    use_hashes(monkeypatch, hashes)
    monkeypatch.delenv("CNN_LESSONS_DATA", raising=False)
    monkeypatch.setattr(data, "cache_dir", cache_in(tmp_path / "cache"))
    return tmp_path / "mnist", arrays


# -- read_idx -------------------------------------------------------------------------------

@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trip_images_and_labels(tmp_path, gz):
    images = np.arange(3 * 28 * 28, dtype=np.uint64).reshape(3, 28, 28) % 251
    labels = np.array([7, 2, 1], dtype=np.uint8)
    p_img = write(tmp_path / "img-idx3-ubyte", idx_bytes(images.astype(np.uint8)), gz)
    p_lab = write(tmp_path / "lab-idx1-ubyte", idx_bytes(labels), gz)
    got_img, got_lab = read_idx(p_img, ndim=3), read_idx(p_lab, ndim=1)
    assert got_img.dtype == np.uint8 and got_img.shape == (3, 28, 28)
    np.testing.assert_array_equal(got_img, images)
    np.testing.assert_array_equal(got_lab, labels)


def test_idx_header_is_read_big_endian(tmp_path):
    # Written by hand: 2 x 3 unsigned bytes, magic 0x00000802.
    content = bytes([0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6])
    (tmp_path / "f").write_bytes(content)
    np.testing.assert_array_equal(read_idx(tmp_path / "f"), [[1, 2, 3], [4, 5, 6]])


def test_gzip_is_recognised_by_content_not_name(tmp_path):
    labels = np.array([1, 2, 3], dtype=np.uint8)
    path = tmp_path / "labels-no-suffix"
    path.write_bytes(gzip.compress(idx_bytes(labels)))
    np.testing.assert_array_equal(read_idx(path), labels)


@settings(max_examples=40, deadline=None)
@given(dtype=st.sampled_from(list(CODES)),
       shape=st.lists(st.integers(0, 5), min_size=1, max_size=4),
       gz=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_read_idx_round_trip_any_type_and_shape(tmp_path_factory, dtype, shape, gz, seed):
    rng = np.random.default_rng(seed)
    array = (rng.standard_normal(shape) * 100).astype(dtype)
    path = write(tmp_path_factory.mktemp("idx") / "a", idx_bytes(array), gz)
    got = read_idx(path)
    assert got.shape == tuple(shape) and got.dtype == dtype
    np.testing.assert_array_equal(got, array)


@settings(max_examples=30, deadline=None)
@given(cut=st.integers(0, 4 + 4 + 40 - 1))
def test_every_truncation_is_refused(tmp_path_factory, cut):
    content = idx_bytes(np.arange(40, dtype=np.uint8))
    path = tmp_path_factory.mktemp("cut") / "labels"
    path.write_bytes(content[:cut])
    with pytest.raises(DataError, match="truncated|not an IDX file") as err:
        read_idx(path)
    assert str(path) in str(err.value)


def test_truncated_data_message_says_expected_and_got(tmp_path):
    content = idx_bytes(np.zeros((2, 28, 28), np.uint8))
    path = write(tmp_path / "train-images-idx3-ubyte", content[:-10], gz=True)
    with pytest.raises(DataError) as err:
        read_idx(path)
    msg = str(err.value)
    assert str(path) in msg and "truncated" in msg
    assert str(16 + 2 * 784) in msg and str(16 + 2 * 784 - 10) in msg


def test_too_long_file_is_refused(tmp_path):
    path = write(tmp_path / "labels", idx_bytes(np.arange(5, dtype=np.uint8)) + b"\0", gz=False)
    with pytest.raises(DataError, match="too long"):
        read_idx(path)


def test_truncated_header_is_refused(tmp_path):
    path = write(tmp_path / "images", bytes([0, 0, 8, 3, 0, 0, 0, 1]), gz=False)
    with pytest.raises(DataError, match="truncated IDX header") as err:
        read_idx(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\n....", b"hello world",
                                     bytes([0, 0, 0x0A, 1, 0, 0, 0, 1, 0])])
def test_not_an_idx_file_is_refused(tmp_path, content):
    path = write(tmp_path / "bogus", content, gz=False)
    with pytest.raises(DataError, match="not an IDX file") as err:
        read_idx(path)
    assert str(path) in str(err.value)


def test_wrong_magic_number_is_refused(tmp_path):
    path = write(tmp_path / "train-images-idx3-ubyte", idx_bytes(np.zeros(5, np.uint8)), gz=True)
    with pytest.raises(DataError) as err:
        read_idx(path, ndim=3)
    msg = str(err.value)
    assert str(path) in msg and "0x00000801" in msg and "0x00000803" in msg


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_broken_gzip_is_refused(tmp_path, damage):
    compressed = bytearray(gzip.compress(idx_bytes(np.arange(2000, dtype=np.uint8) % 7)))
    if damage == "truncate":
        compressed = compressed[:len(compressed) // 2]
    else:
        compressed[-6] ^= 0xFF  # inside the CRC-32 / size trailer
    path = tmp_path / "labels.gz"
    path.write_bytes(bytes(compressed))
    with pytest.raises(DataError, match="broken gzip") as err:
        read_idx(path)
    assert str(path) in str(err.value)


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no such file") as err:
        read_idx(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(err.value)


# -- load_mnist from a folder -----------------------------------------------------------------

@pytest.mark.parametrize("gz", [True, False])
def test_load_full_from_folder(tmp_path, monkeypatch, gz):
    arrays, hashes = fake_mnist(tmp_path, gz=gz)
    use_hashes(monkeypatch, hashes)
    d = load_mnist(tmp_path)
    assert d.kind == "full" and d.source == str(tmp_path)
    assert d.x_train.shape == (30, 1, 28, 28) and d.x_test.shape == (20, 1, 28, 28)
    assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int64
    np.testing.assert_allclose(d.x_train[:, 0] * 255, arrays["x_train"], atol=1e-4)
    np.testing.assert_array_equal(d.x_test[:, 0] * 255 == 255, arrays["x_test"] == 255)
    np.testing.assert_array_equal(d.y_test, arrays["y_test"])
    d64 = load_mnist(tmp_path, dtype=np.float64)
    assert d64.x_train.dtype == np.float64
    np.testing.assert_array_equal(d64.x_train[:, 0], arrays["x_train"] / 255.0)


def test_checksum_mismatch_is_refused(tmp_path):
    fake_mnist(tmp_path)  # not the real MNIST: the published hashes do not match
    with pytest.raises(DataError, match="checksum mismatch") as err:
        load_mnist(tmp_path)
    msg = str(err.value)
    got = hashlib.sha256(gzip.decompress((tmp_path / f"{NAMES[0]}.gz").read_bytes())).hexdigest()
    assert str(tmp_path / f"{NAMES[0]}.gz") in msg
    assert data.SHA256[NAMES[0]] in msg and got in msg


def test_one_corrupted_file_is_refused_even_if_the_others_are_fine(fake):
    folder, _ = fake
    path = folder / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.full(20, 3, np.uint8))))
    with pytest.raises(DataError, match="checksum mismatch") as err:
        load_mnist(folder)
    assert str(path) in str(err.value)


def test_recompressed_and_uncompressed_copies_are_accepted(fake):
    folder, arrays = fake
    for name in NAMES[:2]:  # re-compress one, decompress another
        content = gzip.decompress((folder / f"{name}.gz").read_bytes())
        (folder / f"{name}.gz").unlink()
        if name == NAMES[0]:
            write(folder / name, content, gz=False)
        else:
            (folder / f"{name}.gz").write_bytes(gzip.compress(content, compresslevel=1, mtime=7))
    d = load_mnist(folder)
    np.testing.assert_array_equal(d.y_train, arrays["y_train"])


def test_images_and_labels_of_different_lengths_are_refused(tmp_path, monkeypatch):
    arrays, hashes = fake_mnist(tmp_path)
    content = idx_bytes(arrays["y_train"][:-1])
    write(tmp_path / NAMES[1], content, gz=True)
    use_hashes(monkeypatch, {**hashes, NAMES[1]: hashlib.sha256(content).hexdigest()})
    with pytest.raises(DataError, match="30 train images but 29 labels"):
        load_mnist(tmp_path)


def test_labels_in_place_of_images_are_refused(tmp_path, monkeypatch):
    arrays, hashes = fake_mnist(tmp_path)
    content = idx_bytes(arrays["y_test"])  # 1-D where 3-D images are expected
    path = write(tmp_path / NAMES[2], content, gz=True)
    use_hashes(monkeypatch, {**hashes, NAMES[2]: hashlib.sha256(content).hexdigest()})
    with pytest.raises(DataError, match="wrong magic number") as err:
        load_mnist(tmp_path)
    assert str(path) in str(err.value)


def test_data_dir_that_does_not_exist(tmp_path):
    with pytest.raises(DataError, match="does not exist") as err:
        load_mnist(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(err.value)


def test_data_dir_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(DataError, match="is not a folder"):
        load_mnist(tmp_path / "f")


def test_data_dir_missing_a_file_names_folder_and_the_four_files(fake):
    folder, _ = fake
    (folder / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError) as err:
        load_mnist(folder)
    msg = str(err.value)
    assert str(folder) in msg and "missing t10k-images-idx3-ubyte." in msg
    assert all(name in msg for name in NAMES)


def test_bad_dtype_and_sample_with_data_dir_are_refused(tmp_path):
    with pytest.raises(ValueError, match="floating"):
        load_mnist(sample=True, dtype=np.uint8)
    with pytest.raises(ValueError, match="data_dir"):
        load_mnist(tmp_path, sample=True)


# -- where the files are looked for -------------------------------------------------------------

@pytest.fixture
def places(tmp_path, monkeypatch):
    """Three valid fake MNIST folders (argument, env var, cache), told apart by ``source``.
    Downloading fails the test."""
    for where in ("arg", "env", "cache"):
        _, hashes = fake_mnist(tmp_path / where)
    use_hashes(monkeypatch, hashes)
    monkeypatch.setattr(data, "cache_dir", cache_in(tmp_path / "cache"))

    def no_download(*args, **kwargs):
        raise AssertionError("download_dataset must not be called")
    monkeypatch.setattr(data, "download_dataset", no_download)
    monkeypatch.delenv("CNN_LESSONS_DATA", raising=False)
    return tmp_path


def test_argument_beats_env_var(places, monkeypatch):
    monkeypatch.setenv("CNN_LESSONS_DATA", str(places / "env"))
    assert load_mnist(places / "arg").source == str(places / "arg")


def test_env_var_beats_cache(places, monkeypatch):
    monkeypatch.setenv("CNN_LESSONS_DATA", str(places / "env"))
    assert load_mnist().source == str(places / "env")


def test_cache_is_used_without_argument_or_env_var(places, monkeypatch):
    assert load_mnist().source == str(places / "cache")
    monkeypatch.setenv("CNN_LESSONS_DATA", "")  # empty counts as unset
    assert load_mnist().source == str(places / "cache")


def test_explicit_folders_never_fall_back(places, monkeypatch):
    (places / "env" / f"{NAMES[3]}.gz").unlink()
    monkeypatch.setenv("CNN_LESSONS_DATA", str(places / "env"))
    with pytest.raises(DataError, match=r"\$CNN_LESSONS_DATA") as err:
        load_mnist()  # the cache is complete, but the env var was given
    assert str(places / "env") in str(err.value)
    monkeypatch.setenv("CNN_LESSONS_DATA", str(places / "nowhere"))
    with pytest.raises(DataError, match="does not exist"):
        load_mnist()
    with pytest.raises(DataError, match="does not exist"):
        load_mnist(places / "nowhere")


# -- downloading (from a local server: never the network) -------------------------------------

class Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the test's folder; under /short/ it promises the whole file but sends half."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path.startswith("/short/"):
            body = (Path(self.directory) / "good" / Path(self.path).name).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[:len(body) // 2])
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A local HTTP server with mirrors good/ (the fake files), recompressed/ (same contents,
    other gzip bytes), corrupt/ (wrong contents), broken/ (truncated gzip), missing/ (404),
    short/ (connection cut mid-file); plus a URL where nothing listens."""
    root = tmp_path / "www"
    arrays, hashes = fake_mnist(root / "good")
    use_hashes(monkeypatch, hashes)
    for name in NAMES:
        content = gzip.decompress((root / "good" / f"{name}.gz").read_bytes())
        (root / "recompressed").mkdir(exist_ok=True)
        (root / "recompressed" / f"{name}.gz").write_bytes(gzip.compress(content, 1, mtime=9))
        (root / "corrupt").mkdir(exist_ok=True)
        (root / "corrupt" / f"{name}.gz").write_bytes(gzip.compress(content[:-1] + b"\x01"))
        (root / "broken").mkdir(exist_ok=True)
        (root / "broken" / f"{name}.gz").write_bytes(gzip.compress(content)[:-20])
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a: Handler(*a, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01},
                              daemon=True)
    thread.start()
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    base = f"http://127.0.0.1:{httpd.server_address[1]}/"
    yield {"url": {m: f"{base}{m}/" for m in
                   ("good", "recompressed", "corrupt", "broken", "missing", "short")}
           | {"dead": f"http://127.0.0.1:{dead_port}/"},
           "arrays": arrays, "root": root}
    httpd.shutdown()
    httpd.server_close()


def test_download_tries_mirrors_in_turn(server, tmp_path):
    url = server["url"]
    cache = tmp_path / "cache"
    mirrors = [url["dead"], url["missing"], url["short"], url["good"]]
    assert data.download_mnist(cache, mirrors=mirrors, progressbar=False) == cache
    assert sorted(os.listdir(cache)) == sorted(f"{name}.gz" for name in NAMES)
    for name in NAMES:
        assert (cache / f"{name}.gz").read_bytes() == \
            (server["root"] / "good" / f"{name}.gz").read_bytes()


def test_downloading_in_a_notebook_writes_nothing_to_stderr(server, tmp_path):
    """In a kernel without ipywidgets (a student's JupyterLab), importing pooch used to print
    tqdm's "IProgress not found" warning in a red box above the download's messages."""
    import nbformat
    from nbclient import NotebookClient

    code = (f"import sys\n"
            f"sys.modules['ipywidgets'] = None     # as where it is not installed\n"
            f"from cnn_lessons import data\n"
            f"data.download_mnist({str(tmp_path / 'cache')!r}, mirrors=[{server['url']['dead']!r}])")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True).execute()
    outputs = nb.cells[0].outputs
    assert [o for o in outputs if o.get("name") == "stderr"] == [], outputs
    assert [o.get("ename") for o in outputs if o.output_type == "error"] == ["DataError"]


def test_recompressed_download_is_accepted(server, tmp_path):
    cache = tmp_path / "cache"
    data.download_mnist(cache, mirrors=[server["url"]["recompressed"]], progressbar=False)
    np.testing.assert_array_equal(read_idx(cache / f"{NAMES[0]}.gz"), server["arrays"]["x_train"])


@pytest.mark.parametrize("bad", ["corrupt", "broken"])
def test_corrupted_download_is_refused_and_not_kept(server, tmp_path, bad):
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as err:
        data.download_mnist(cache, mirrors=[server["url"][bad], server["url"]["missing"]],
                            progressbar=False)
    msg = str(err.value)
    assert "checksum mismatch" in msg if bad == "corrupt" else "broken gzip" in msg
    assert "404" in msg and server["url"]["missing"] in msg and str(cache) in msg
    assert os.listdir(cache) == []  # nothing kept, not even a temporary file


def test_corrupted_mirror_is_skipped_for_the_next(server, tmp_path):
    cache = tmp_path / "cache"
    data.download_mnist(cache, mirrors=[server["url"]["corrupt"], server["url"]["good"]],
                        progressbar=False)
    for name in NAMES:
        assert (cache / f"{name}.gz").read_bytes() == \
            (server["root"] / "good" / f"{name}.gz").read_bytes()


def test_download_is_verified_before_it_is_renamed_into_place(server, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    moves = []
    real_replace = os.replace

    def spy(src, dst):
        src, dst = Path(src), Path(dst)
        assert src.parent == dst.parent == cache and src.name.startswith(".tmp-")
        assert not dst.exists()  # the final name appears only now, in one step
        name = dst.name.removesuffix(".gz")
        assert hashlib.sha256(data.read_bytes(src)).hexdigest() == \
            data.DATASETS["mnist"].sha256[name]
        moves.append(dst.name)
        real_replace(src, dst)
    monkeypatch.setattr(os, "replace", spy)
    data.download_mnist(cache, mirrors=[server["url"]["corrupt"], server["url"]["good"]],
                        progressbar=False)
    assert sorted(moves) == sorted(f"{name}.gz" for name in NAMES)


def test_only_missing_files_are_downloaded(server, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    kept = cache / f"{NAMES[0]}.gz"
    kept.write_bytes((server["root"] / "recompressed" / f"{NAMES[0]}.gz").read_bytes())
    data.download_mnist(cache, mirrors=[server["url"]["good"]], progressbar=False)
    assert kept.read_bytes() == (server["root"] / "recompressed" / f"{NAMES[0]}.gz").read_bytes()
    assert all((cache / f"{name}.gz").exists() for name in NAMES)


def test_load_mnist_downloads_into_the_cache(server, tmp_path, monkeypatch):
    monkeypatch.delenv("CNN_LESSONS_DATA", raising=False)
    monkeypatch.setattr(data, "cache_dir", cache_in(tmp_path / "cache"))
    use_hashes(monkeypatch, None, mirrors=(server["url"]["dead"], server["url"]["good"]))
    d = load_mnist()
    assert d.kind == "full" and d.source == str(tmp_path / "cache")
    np.testing.assert_array_equal(d.y_train, server["arrays"]["y_train"])


def test_explicit_folder_is_never_downloaded_into(server, tmp_path, monkeypatch):
    use_hashes(monkeypatch, None, mirrors=(server["url"]["good"],))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="missing"):
        load_mnist(tmp_path / "empty")
    assert os.listdir(tmp_path / "empty") == []


# -- the shipped sample ---------------------------------------------------------------------

def test_sample_file_is_small_and_loads_without_pickle():
    assert data.SAMPLE_PATH.stat().st_size < 5_000_000
    with np.load(data.SAMPLE_PATH, allow_pickle=False) as f:
        assert sorted(f.files) == ["test_index", "train_index", "x_test", "x_train",
                                   "y_test", "y_train"]
        assert f["x_train"].dtype == np.uint8 and f["y_train"].dtype == np.uint8


def test_sample_shapes_types_balance_and_range():
    d = load_mnist(sample=True)
    assert d.kind == "sample" and d.source == str(data.SAMPLE_PATH)
    assert d.x_train.shape == (5000, 1, 28, 28) and d.x_test.shape == (1000, 1, 28, 28)
    assert d.x_train.dtype == np.float32 and d.y_train.dtype == d.y_test.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(d.y_train, minlength=10), [500] * 10)
    np.testing.assert_array_equal(np.bincount(d.y_test, minlength=10), [100] * 10)
    for x in (d.x_train, d.x_test):
        assert x.min() == 0.0 and x.max() == 1.0
        np.testing.assert_array_equal(np.round(x * 255) / 255, x)  # 256 grey levels
    assert load_mnist(sample=True, dtype=np.float64).x_test.dtype == np.float64


def test_sample_looks_like_handwritten_digits():
    d = load_mnist(sample=True)
    x = np.concatenate([d.x_train, d.x_test])[:, 0]
    ink = (x > 0).mean(axis=(1, 2))
    assert ink.min() > 0.02 and ink.max() < 0.6  # a stroke on a blank page
    frame = np.ones((28, 28), bool)
    frame[3:25, 3:25] = False  # the digits are centred: a 3-pixel frame is (nearly) blank
    assert (x[:, frame] > 0).mean() < 0.02 and (x[:, ~frame] > 0).mean() > 0.1
    mean = x.mean(axis=0)
    assert mean[10:18, 10:18].mean() > 5 * mean[:4].mean()  # ink in the centre
    assert len(np.unique(x.reshape(len(x), -1), axis=0)) == len(x)  # no duplicates
    with np.load(data.SAMPLE_PATH) as f:
        for part, n in (("train", 60000), ("test", 10000)):
            idx = f[f"{part}_index"]
            assert len(np.unique(idx)) == len(idx) and idx.min() >= 0 and idx.max() < n


@needs_full
def test_sample_digits_are_the_full_mnist_digits_at_their_indices():
    full = data.read_mnist(data.dataset_folder(FULL))
    with np.load(data.SAMPLE_PATH) as f:
        for part in ("train", "test"):
            idx = f[f"{part}_index"]
            np.testing.assert_array_equal(f[f"x_{part}"], full[f"x_{part}"][idx])
            np.testing.assert_array_equal(f[f"y_{part}"], full[f"y_{part}"][idx])


def load_script():
    spec = importlib.util.spec_from_file_location("make_sample", ROOT / "scripts/make_sample.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_make_sample_is_stratified_and_reproducible(fake, tmp_path):
    folder, arrays = fake
    script = load_script()
    a = script.make_sample(folder, tmp_path / "a.npz", train_per_class=2, test_per_class=1, seed=3)
    b = script.make_sample(folder, tmp_path / "b.npz", train_per_class=2, test_per_class=1, seed=3)
    c = script.make_sample(folder, tmp_path / "c.npz", train_per_class=2, test_per_class=1, seed=4)
    with np.load(a) as fa, np.load(b) as fb, np.load(c) as fc:
        for key in fa.files:
            np.testing.assert_array_equal(fa[key], fb[key])
        assert not np.array_equal(fa["train_index"], fc["train_index"])
        np.testing.assert_array_equal(np.bincount(fa["y_train"]), [2] * 10)
        np.testing.assert_array_equal(np.bincount(fa["y_test"]), [1] * 10)
        np.testing.assert_array_equal(fa["x_train"], arrays["x_train"][fa["train_index"]])
        np.testing.assert_array_equal(fa["y_test"], arrays["y_test"][fa["test_index"]])
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".npz") == \
        ["a.npz", "b.npz", "c.npz"]  # no temporary files left
    with pytest.raises(ValueError, match="only 3 examples of class 0"):
        script.make_sample(folder, tmp_path / "d.npz", train_per_class=4)


# -- the full dataset (only with CNN_LESSONS_DATA) --------------------------------------------

@needs_full
def test_full_mnist_loads_with_its_published_sizes_and_label_counts():
    d = load_mnist(FULL)
    assert d.kind == "full"
    assert d.x_train.shape == (60000, 1, 28, 28) and d.x_test.shape == (10000, 1, 28, 28)
    assert d.x_train.dtype == np.float32 and 0 <= d.x_train.min() and d.x_train.max() <= 1
    # The class counts published with the database.
    np.testing.assert_array_equal(np.bincount(d.y_train),
                                  [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])
    np.testing.assert_array_equal(np.bincount(d.y_test),
                                  [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])


# -- mini-batches -----------------------------------------------------------------------------

@settings(max_examples=50, deadline=None)
@given(n=st.integers(0, 60), batch_size=st.integers(1, 70), shuffle=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_batches_cover_every_example_once_with_the_rest_last(n, batch_size, shuffle, seed):
    x = np.arange(n * 2).reshape(n, 2)
    y = np.arange(n) * 10
    out = list(batches(x, y, batch_size, shuffle=shuffle, rng=seed))
    sizes = [len(xb) for xb, _ in out]
    expected = [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
    assert sizes == expected
    for xb, yb in out:
        np.testing.assert_array_equal(xb[:, 0] // 2 * 10, yb)  # pairs stay together
    seen = np.concatenate([yb for _, yb in out]) if out else np.array([], int)
    np.testing.assert_array_equal(np.sort(seen), y)
    if not shuffle:
        np.testing.assert_array_equal(seen, y)


def test_batches_are_reproducible_given_a_seed():
    x, y = np.arange(100), np.arange(100)
    first = [yb for _, yb in batches(x, y, 32, rng=7)]
    again = [yb for _, yb in batches(x, y, 32, rng=np.random.default_rng(7))]
    other = [yb for _, yb in batches(x, y, 32, rng=8)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(np.concatenate(first), np.concatenate(other))
    assert not np.array_equal(np.concatenate(first), y)  # really shuffled


def test_batches_with_a_generator_continue_its_stream():
    rng = np.random.default_rng(0)
    x = np.arange(50)
    epoch1 = np.concatenate([xb for xb, _ in batches(x, x, 10, rng=rng)])
    epoch2 = np.concatenate([xb for xb, _ in batches(x, x, 10, rng=rng)])
    assert not np.array_equal(epoch1, epoch2)


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True, "8"])
def test_batches_refuse_bad_batch_size_at_the_call(batch_size):
    with pytest.raises(ValueError, match="batch_size"):
        batches(np.zeros(4), np.zeros(4), batch_size)


def test_batches_refuse_mismatched_lengths():
    with pytest.raises(ValueError, match="x has 4 examples but y has 3"):
        batches(np.zeros(4), np.zeros(3), 2)
