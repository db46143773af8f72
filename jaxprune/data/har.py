"""HAR-2 (binarised UCI HAR, as in FastGRNN) and a synthetic HAR-shaped set; numpy only.

**Source.** The UCI "Human Activity Recognition Using Smartphones" dataset
(https://archive.ics.uci.edu/ml/datasets/human+activity+recognition+using+smartphones; the
archive ``UCI HAR Dataset.zip``): 30 subjects, a waist-mounted smartphone, 2.56 s windows at
50 Hz. HAR-2 reads the raw ``Inertial Signals``, 9 signals of 128 steps per window, in the order
of EdgeML's HAR reader::

    body_acc_x, body_acc_y, body_acc_z, body_gyro_x, body_gyro_y, body_gyro_z,
    total_acc_x, total_acc_y, total_acc_z

from ``<root>/{train,test}/Inertial Signals/<signal>_{train,test}.txt`` (one window per line,
128 values) with labels ``<root>/{train,test}/y_{train,test}.txt`` (1..6). That is 7,352 training
and 2,947 test windows with ``128 * 9 = 1,152`` features, Table 1 of Kusupati et al. (2018).

**Binarisation.** Kusupati et al. (FastGRNN, Appendix B) merge the six activities into the
classes {Sitting, Laying, Walking_Upstairs} and {Standing, Walking, Walking_Downstairs}. With the
UCI labels 1 WALKING, 2 WALKING_UPSTAIRS, 3 WALKING_DOWNSTAIRS, 4 SITTING, 5 STANDING, 6 LAYING
that is the parity of the label: class 0 = {2, 4, 6}, class 1 = {1, 3, 5} (``HAR2_CLASS``). (It
is *not* moving vs static.) The paper does not say which set is class 0; this order is ours.

**Layout and normalisation** (EdgeML ``examples/pytorch/FastCells``: ``helpermethods.
preProcessData`` and ``fastTrainer``): each window is time-major, ``x[t, signal]``, i.e. batches
of shape ``(batch, 128, 9)`` (time, features), the input of ``models.fastgrnn.FastGRNN``. Every
one of the 1,152 ``(t, signal)`` features is standardised with the mean and (population) standard
deviation of the training set over windows; a standard deviation below ``1e-6`` is replaced by 1.
The test set uses the training statistics. No augmentation.

Nothing is downloaded. ``data_dir`` (default ``$JAXPRUNE_CACHE/har`` or ``~/.cache/jaxprune/har``)
is either the ``UCI HAR Dataset`` folder itself or a folder that contains it; if files are
missing, :class:`HarNotFoundError` (a ``DatasetNotPreparedError``) lists every expected path and
where to download the archive.

Batches use the engine's keys: ``image`` holds the ``float32[B, 128, 9]`` sequences, ``label``
the ``int32[B]`` labels (``weight`` on evaluation batches), so the training loop, SNIP-style
scoring and evaluation work unchanged. ``input_shape`` is ``(128, 9)``.

``har2_synthetic`` (:func:`load_synthetic`) makes a learnable HAR-shaped stand-in (no download)
for tests and smoke runs: each class has a fixed random smooth prototype signal ``(128, 9)``
(a few sinusoids per channel), each window is its class prototype plus Gaussian noise, a pure
function of ``seed``.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterator

import numpy as np

from jaxprune.data.dataset import (
    Batch,
    Dataset,
    batch_indices,
    in_memory_eval_batches,
    sample_indices,
)
from jaxprune.data.tfds_source import DatasetNotPreparedError

DOWNLOAD_URL = (
    "https://archive.ics.uci.edu/ml/datasets/human+activity+recognition+using+smartphones"
)
FOLDER = "UCI HAR Dataset"
SIGNALS = (
    "body_acc_x",
    "body_acc_y",
    "body_acc_z",
    "body_gyro_x",
    "body_gyro_y",
    "body_gyro_z",
    "total_acc_x",
    "total_acc_y",
    "total_acc_z",
)
TIME_STEPS = 128
ACTIVITIES = (
    "WALKING",
    "WALKING_UPSTAIRS",
    "WALKING_DOWNSTAIRS",
    "SITTING",
    "STANDING",
    "LAYING",
)
# UCI label (1..6) -> HAR-2 class: 0 = {Sitting, Laying, Walking_Upstairs},
# 1 = {Standing, Walking, Walking_Downstairs} (Kusupati et al. 2018, Appendix B).
HAR2_CLASS = {1: 1, 2: 0, 3: 1, 4: 0, 5: 1, 6: 0}
STD_FLOOR = 1e-6  # EdgeML: std < 1e-6 -> 1
CACHE_SUBDIR = "har"


class HarNotFoundError(DatasetNotPreparedError):
    """The UCI HAR Dataset files are not in the data dir (the message lists the paths)."""


def default_dir() -> pathlib.Path:
    """``$JAXPRUNE_CACHE/har`` or ``~/.cache/jaxprune/har``: where HAR-2 looks by default."""
    root = os.environ.get("JAXPRUNE_CACHE") or "~/.cache/jaxprune"
    return pathlib.Path(root).expanduser() / CACHE_SUBDIR


def expected_files(root: str | os.PathLike) -> dict[str, list[pathlib.Path]]:
    """The files HAR-2 reads under the ``UCI HAR Dataset`` folder ``root``, per split.

    Returns:
      ``{split: [9 signal files in SIGNALS order..., label file]}`` for ``train`` and ``test``.
    """
    root = pathlib.Path(root)
    files = {}
    for split in ("train", "test"):
        signals = [root / split / "Inertial Signals" / f"{s}_{split}.txt" for s in SIGNALS]
        files[split] = [*signals, root / split / f"y_{split}.txt"]
    return files


def find_root(data_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """The ``UCI HAR Dataset`` folder in (or at) ``data_dir``.

    Args:
      data_dir: a folder containing ``UCI HAR Dataset/``, or that folder itself; default
        :func:`default_dir`.

    Returns:
      The folder holding ``train/`` and ``test/`` with every file of :func:`expected_files`.

    Raises:
      HarNotFoundError: a file is missing; the message names every expected path, the missing
        ones, and where to download the archive.
    """
    base = pathlib.Path(data_dir).expanduser() if data_dir else default_dir()
    candidates = [base / FOLDER, base]
    for root in candidates:
        if all(p.is_file() for paths in expected_files(root).values() for p in paths):
            return root
    # Report against the folder that looks closest (the nested one unless `base` is it).
    root = base if (base / "train").is_dir() or base.name == FOLDER else base / FOLDER
    expected = [p for paths in expected_files(root).values() for p in paths]
    missing = [p for p in expected if not p.is_file()]
    listing = "\n".join(f"  {'MISSING ' if p in missing else 'found   '}{p}" for p in expected)
    # The first line is complete on its own (the command line prints only that line).
    raise HarNotFoundError(
        f"HAR-2 needs the UCI HAR Dataset in {base} (as {base / FOLDER} or {base} itself): "
        f"{len(missing)} of the {len(expected)} files it reads are missing (first: {missing[0]}); "
        f"download 'UCI HAR Dataset.zip' from {DOWNLOAD_URL} and unzip it into {base}, or set "
        f"dataset.data_dir (data_dir=) to the folder it is unzipped in.\nExpected files:\n{listing}"
    )


def _read_split(root: pathlib.Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(float32[N, 128, 9] time-major windows, int32[N] UCI labels 1..6)`` of ``split``."""
    *signal_paths, label_path = expected_files(root)[split]
    columns = []
    for path in signal_paths:
        values = np.loadtxt(path, dtype=np.float32, ndmin=2)
        if values.shape[1] != TIME_STEPS:
            raise ValueError(f"{path}: expected {TIME_STEPS} values per line, got {values.shape}")
        columns.append(values)
    sizes = {len(c) for c in columns}
    labels = np.loadtxt(label_path, dtype=np.int64, ndmin=1).reshape(-1)
    if len(sizes) != 1 or sizes != {len(labels)}:
        counts = [len(c) for c in columns]
        raise ValueError(
            f"HAR {split}: the signal files and {label_path.name} disagree on the number of "
            f"windows: signals {counts}, labels {len(labels)}"
        )
    bad = sorted(set(np.unique(labels).tolist()) - set(HAR2_CLASS))
    if bad:
        raise ValueError(f"{label_path}: labels must be in 1..6, got {bad}")
    return np.stack(columns, axis=-1), labels.astype(np.int32)


def binarize(labels: np.ndarray) -> np.ndarray:
    """UCI labels 1..6 -> HAR-2 classes (``HAR2_CLASS``: the label's parity), ``int32``."""
    table = np.zeros(7, np.int32)
    for label, cls in HAR2_CLASS.items():
        table[label] = cls
    return table[np.asarray(labels)]


def standardize(
    train: np.ndarray, test: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """EdgeML's normalisation: every ``(t, feature)`` position by the training mean and std.

    Returns:
      ``(train, test, mean, std)``; ``std`` has the values below ``STD_FLOOR`` replaced by 1.
    """
    train64 = train.astype(np.float64)
    mean = train64.mean(axis=0)
    std = train64.std(axis=0)
    std[std < STD_FLOOR] = 1.0
    out_train = ((train64 - mean) / std).astype(np.float32)
    out_test = ((test.astype(np.float64) - mean) / std).astype(np.float32)
    return out_train, out_test, mean.astype(np.float32), std.astype(np.float32)


class SequenceDataset(Dataset):
    """Normalised float sequences ``(N, T, F)`` held in memory, batched like ``ArrayDataset``.

    Same determinism contract as every ``Dataset`` (``jaxprune.data.dataset``): the batch of
    step ``t`` is a pure function of ``(seed, t)``. No augmentation.

    Args:
      name: dataset name.
      train: ``(float32[N, T, F], int[N])``, already normalised.
      test: the test split, same layout.
      num_classes: number of labels.
    """

    def __init__(
        self,
        name: str,
        train: tuple[np.ndarray, np.ndarray],
        test: tuple[np.ndarray, np.ndarray],
        num_classes: int,
    ):
        self._splits = {}
        for split, (x, y) in (("train", train), ("test", test)):
            if x.ndim != 3 or len(x) != len(y):
                raise ValueError(
                    f"{name} {split}: need sequences [N, T, F] and labels [N], got {x.shape} "
                    f"and {np.shape(y)}"
                )
            self._splits[split] = (np.asarray(x, np.float32), np.asarray(y, np.int32))
        if train[0].shape[1:] != test[0].shape[1:]:
            raise ValueError(
                f"{name}: train and test shapes differ: {train[0].shape[1:]} vs {test[0].shape[1:]}"
            )
        self.name = name
        self.num_classes = int(num_classes)
        self.input_shape = tuple(int(d) for d in train[0].shape[1:])
        self.num_train = len(train[0])
        self.num_test = len(test[0])

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """The normalised ``(float32 sequences, int32 labels)`` of ``split``."""
        self.split_size(split)
        return self._splits[split]

    def train_batch(self, batch_size: int, seed: int, step: int) -> Batch:
        """See ``Dataset.train_batch``."""
        x, y = self._splits["train"]
        idx = batch_indices(seed, step, batch_size, self.num_train)
        return {"image": x[idx], "label": y[idx]}

    def eval_batches(
        self, batch_size: int, split: str = "test", *, shard: tuple[int, int] = (0, 1)
    ) -> Iterator[Batch]:
        """See ``Dataset.eval_batches``."""
        x, y = self._splits[split] if split in self._splits else (None, None)
        return in_memory_eval_batches(self, x, y, batch_size, split, shard, prepare=lambda v: v)

    def sample(self, n: int, seed: int, split: str = "train") -> Batch:
        """See ``Dataset.sample``."""
        idx = sample_indices(seed, n, self.split_size(split), split)
        x, y = self._splits[split]
        return {"image": x[idx], "label": y[idx]}


def _no_augment(name: str, augment: bool | None) -> None:
    if augment:
        raise ValueError(f"{name} has no training augmentation; got augment={augment!r}")


def load(*, data_dir: str | None = None, augment: bool | None = None) -> SequenceDataset:
    """HAR-2 as a ``Dataset`` (``get_dataset("har2", data_dir=...)``).

    Args:
      data_dir: see :func:`find_root`.
      augment: must be None or False (HAR-2 has no augmentation).

    Returns:
      A ``SequenceDataset`` named ``har2``: 7,352 / 2,947 windows of shape ``(128, 9)``, 2
      classes, standardised as EdgeML does.

    Raises:
      HarNotFoundError: the files are not there (the message lists them).
      ValueError: for malformed files or ``augment=True``.
    """
    _no_augment("har2", augment)
    root = find_root(data_dir)
    train_x, train_y = _read_split(root, "train")
    test_x, test_y = _read_split(root, "test")
    train_x, test_x, _, _ = standardize(train_x, test_x)
    return SequenceDataset(
        "har2", (train_x, binarize(train_y)), (test_x, binarize(test_y)), num_classes=2
    )


def synthetic_arrays(
    num_train: int = 512,
    num_test: int = 256,
    *,
    time_steps: int = TIME_STEPS,
    features: int = len(SIGNALS),
    num_classes: int = 2,
    seed: int = 0,
    noise_std: float = 1.0,
) -> dict[str, np.ndarray]:
    """Learnable HAR-shaped arrays (see the module docstring); a pure function of the arguments.

    Returns:
      ``{train_x, train_y, test_x, test_y}``: ``float32[N, time_steps, features]`` (not yet
      standardised) and ``int32[N]`` labels.

    Raises:
      ValueError: on a non-positive size.
    """
    sizes = {
        "num_train": num_train,
        "num_test": num_test,
        "time_steps": time_steps,
        "features": features,
        "num_classes": num_classes,
    }
    for field, value in sizes.items():
        if value < 1:
            raise ValueError(f"{field} must be >= 1, got {value}")
    rng = np.random.default_rng([seed, 0])
    t = np.arange(time_steps)[:, None] / TIME_STEPS  # 2.56 s windows: t in [0, 1)
    prototypes = []
    for _ in range(num_classes):
        freq = rng.uniform(1.0, 6.0, size=(3, features))
        phase = rng.uniform(0.0, 2 * np.pi, size=(3, features))
        amp = rng.normal(0.0, 0.5, size=(3, features))
        waves = amp[:, None] * np.sin(2 * np.pi * freq[:, None] * t[None] + phase[:, None])
        prototypes.append(waves.sum(axis=0) + rng.normal(0.0, 0.3, size=features))
    prototypes = np.stack(prototypes).astype(np.float32)

    def split(stream: int, num: int) -> tuple[np.ndarray, np.ndarray]:
        split_rng = np.random.default_rng([seed, stream])
        y = split_rng.integers(0, num_classes, size=num).astype(np.int32)
        noise = split_rng.standard_normal(size=(num, time_steps, features), dtype=np.float32)
        return prototypes[y] + np.float32(noise_std) * noise, y

    train_x, train_y = split(1, num_train)
    test_x, test_y = split(2, num_test)
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}


def load_synthetic(
    *,
    data_dir: str | None = None,
    augment: bool | None = None,
    num_train: int = 512,
    num_test: int = 256,
    time_steps: int = TIME_STEPS,
    seed: int = 0,
    noise_std: float = 1.0,
) -> SequenceDataset:
    """A synthetic HAR-2-shaped ``Dataset`` (``get_dataset("har2_synthetic")``); no files.

    Args:
      data_dir: ignored (nothing is read).
      augment: must be None or False.
      num_train: training-set size.
      num_test: test-set size.
      time_steps: sequence length (128 like HAR).
      seed: data seed.
      noise_std: per-value Gaussian noise around the class prototype (larger is harder).

    Returns:
      A ``SequenceDataset`` named ``har2_synthetic``: windows ``(time_steps, 9)``, 2 classes,
      standardised like HAR-2.
    """
    del data_dir
    _no_augment("har2_synthetic", augment)
    arrays = synthetic_arrays(
        num_train, num_test, time_steps=time_steps, seed=seed, noise_std=noise_std
    )
    train_x, test_x, _, _ = standardize(arrays["train_x"], arrays["test_x"])
    return SequenceDataset(
        "har2_synthetic",
        (train_x, arrays["train_y"]),
        (test_x, arrays["test_y"]),
        num_classes=2,
    )
