"""The common ``Dataset`` interface, the in-memory implementation and ``get_dataset``.

Every dataset, whatever its source, answers the same small API that the training loop uses::

    ds = get_dataset("cifar10", data_dir="~/tensorflow_datasets")
    ds.name, ds.num_classes, ds.input_shape, ds.num_train, ds.num_test
    for batch in ds.train_batches(batch_size=128, seed=0, start_step=0): ...  # infinite
    for batch in ds.eval_batches(batch_size=1000, split="test"): ...          # finite, padded
    ds.sample(n=100, seed=0)                                                  # e.g. for SNIP

Determinism contract (what makes resumption exact):

* ``steps_per_epoch = num_train // batch_size`` (the remainder of each epoch is dropped).
* Global step ``t`` lies in epoch ``e = t // steps_per_epoch``. Epoch ``e`` visits the training
  set in the order ``epoch_permutation(seed, e, num_train)``; step ``t`` takes the
  ``t % steps_per_epoch``-th slice of ``batch_size`` indices of it.
* Augmentation of step ``t`` draws from a generator seeded by ``(seed, t)``.

So the batch at step ``t`` is a pure function of ``(seed, t)`` (``Dataset.train_batch``) and
``train_batches(..., start_step=t)`` yields exactly what an uninterrupted run yields from step
``t`` on.

Multi-process runs: ``shard=(i, P)`` gives process ``i`` of ``P`` only its rows
``[i * B / P, (i + 1) * B / P)`` of every global batch of size ``B`` (the same examples, in
the same order, as those rows of the one-process batch).

Batches are dicts of numpy arrays: ``image`` ``float32[B, H, W, C]`` (normalised), ``label``
``int32[B]``; evaluation batches add ``weight`` ``float32[B]`` (1 real, 0 padding).

Dataset names (``dataset_names()``): ``mnist`` is the embedded MNIST (no TFDS needed, see
``mnist_embedded``); ``fashion_mnist``, ``cifar10``, ``cifar100``, ``imagenet2012`` read a TFDS
dataset prepared in ``data_dir`` (``tfds_source``); ``tfds:<name>`` spells any of these explicitly
(``tfds:mnist`` is the TFDS copy of MNIST); ``synthetic`` makes learnable random data shaped like
any of them (``synthetic``); ``har2`` reads the UCI HAR sequences and ``har2_synthetic`` makes
HAR-shaped ones (``har``).
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Callable, Iterator

import numpy as np

from jaxprune.data import augment as augment_lib

Batch = dict[str, np.ndarray]
AugmentFn = Callable[[np.ndarray, np.random.Generator], np.ndarray]

# Stream tags keep the random streams of one seed apart.
_PERMUTATION_STREAM = 0
_AUGMENT_STREAM = 1
_SAMPLE_STREAM = 2


def check_seed(seed: int) -> int:
    """Returns ``seed`` as an ``int``; raises ``ValueError`` unless it is a non-negative int."""
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return int(seed)


@functools.lru_cache(maxsize=4)
def _cached_permutation(seed: int, epoch: int, num: int) -> np.ndarray:
    rng = np.random.default_rng([seed, _PERMUTATION_STREAM, epoch])
    perm = rng.permutation(num)
    perm.flags.writeable = False
    return perm


def epoch_permutation(seed: int, epoch: int, num: int) -> np.ndarray:
    """The order in which epoch ``epoch`` visits ``num`` training examples.

    Args:
        seed: data seed (non-negative).
        epoch: epoch number (non-negative).
        num: number of training examples.

    Returns:
        A read-only permutation of ``range(num)``; a pure function of the arguments.
    """
    check_seed(seed)
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    return _cached_permutation(int(seed), int(epoch), int(num))


def step_rng(seed: int, step: int) -> np.random.Generator:
    """The augmentation generator of global step ``step``: a pure function of ``(seed, step)``."""
    return np.random.default_rng([check_seed(seed), _AUGMENT_STREAM, int(step)])


def example_rng(seed: int, step: int, index: int) -> np.random.Generator:
    """The augmentation generator of example ``index`` of step ``step`` (streamed datasets)."""
    return np.random.default_rng([check_seed(seed), _AUGMENT_STREAM, int(step), int(index)])


def sample_indices(seed: int, n: int, size: int, split: str) -> np.ndarray:
    """``n`` distinct sorted indices into a split of ``size`` examples, a function of ``seed``."""
    if not 1 <= n <= size:
        raise ValueError(f"n must be in [1, {size}] (the {split} split size), got {n}")
    rng = np.random.default_rng([check_seed(seed), _SAMPLE_STREAM])
    return np.sort(rng.choice(size, size=n, replace=False))


def batch_indices(seed: int, step: int, batch_size: int, num: int) -> np.ndarray:
    """Indices of the training examples in the batch of global step ``step``.

    Args:
        seed: data seed.
        step: global step (non-negative).
        batch_size: examples per batch, in ``[1, num]``.
        num: number of training examples.

    Returns:
        ``int64[batch_size]``, distinct within an epoch; see the module docstring.
    """
    if not 1 <= batch_size <= num:
        raise ValueError(
            f"batch_size must be in [1, {num}] (the training set size), got {batch_size}"
        )
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    steps_per_epoch = num // batch_size
    epoch, position = divmod(int(step), steps_per_epoch)
    start = position * batch_size
    return epoch_permutation(seed, epoch, num)[start : start + batch_size]


def check_shard(shard: tuple[int, int], batch_size: int) -> tuple[int, int]:
    """Validates ``shard=(index, count)`` for global batches of ``batch_size``; the rows' span.

    Returns:
        ``(first_row, num_rows)`` of the shard in every global batch.
    """
    index, count = (int(v) for v in shard)
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard must be (index, count) with 0 <= index < count, got {shard}")
    if batch_size % count:
        raise ValueError(
            f"batch_size ({batch_size}) must be divisible by the number of processes ({count})"
        )
    rows = batch_size // count
    return index * rows, rows


def shard_rows(batch: Batch, shard: tuple[int, int]) -> Batch:
    """Rows of ``shard=(index, count)`` of a global batch (see ``check_shard``)."""
    first, rows = check_shard(shard, len(batch["label"]))
    return {k: v[first : first + rows] for k, v in batch.items()}


def in_memory_eval_batches(
    dataset: Dataset,
    inputs: np.ndarray | None,
    labels: np.ndarray | None,
    batch_size: int,
    split: str,
    shard: tuple[int, int],
    prepare: Callable[[np.ndarray], np.ndarray],
) -> Iterator[Batch]:
    """``Dataset.eval_batches`` of a split held in memory as ``(inputs, labels)``.

    Arguments are checked now (``split`` by ``dataset.split_size``); batches are made lazily:
    this shard's rows of each padded global batch, ``prepare`` applied to the inputs.
    """
    size = dataset.split_size(split)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    first, rows = check_shard(shard, batch_size)

    def batches() -> Iterator[Batch]:
        for start in range(0, size, batch_size):
            # This shard's rows of the padded global batch [start, start + batch_size).
            lo = min(start + first, size)
            hi = min(start + first + rows, size)
            yield pad_batch({"image": prepare(inputs[lo:hi]), "label": labels[lo:hi]}, rows)

    return batches()


def pad_batch(batch: Batch, batch_size: int) -> Batch:
    """Pads a short evaluation batch with zeros up to ``batch_size`` and adds ``weight``.

    Args:
        batch: dict of arrays sharing the leading dimension ``n <= batch_size``.
        batch_size: the padded size.

    Returns:
        The padded dict with ``weight`` ``float32[batch_size]``: 1 for the ``n`` real rows.
    """
    num_real = len(batch["label"])
    out = {}
    for key, value in batch.items():
        padded = np.zeros((batch_size,) + value.shape[1:], value.dtype)
        padded[:num_real] = value
        out[key] = padded
    weight = np.zeros(batch_size, np.float32)
    weight[:num_real] = 1.0
    out["weight"] = weight
    return out


class Dataset(abc.ABC):
    """An image-classification dataset with deterministic, resumable batching.

    Attributes:
        name: dataset name as passed to ``get_dataset``.
        num_classes: number of labels.
        input_shape: ``(H, W, C)`` of the batches' images.
        num_train: training-set size.
        num_test: test-set size.
    """

    name: str
    num_classes: int
    input_shape: tuple[int, int, int]
    num_train: int
    num_test: int

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, num_classes={self.num_classes}, "
            f"input_shape={self.input_shape}, num_train={self.num_train}, "
            f"num_test={self.num_test})"
        )

    def split_size(self, split: str) -> int:
        """Number of examples in ``split`` (``'train'`` or ``'test'``)."""
        if split == "train":
            return self.num_train
        if split == "test":
            return self.num_test
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")

    def steps_per_epoch(self, batch_size: int) -> int:
        """``num_train // batch_size``: the number of full batches in one epoch."""
        if not 1 <= batch_size <= self.num_train:
            raise ValueError(
                f"batch_size must be in [1, {self.num_train}] (the training set size), "
                f"got {batch_size}"
            )
        return self.num_train // batch_size

    @abc.abstractmethod
    def train_batch(self, batch_size: int, seed: int, step: int) -> Batch:
        """The (augmented, normalised) training batch of global step ``step``.

        A pure function of ``(batch_size, seed, step)``; see the module docstring.
        """

    def train_batches(
        self,
        batch_size: int,
        seed: int,
        start_step: int = 0,
        *,
        shard: tuple[int, int] = (0, 1),
    ) -> Iterator[Batch]:
        """Infinite iterator over training batches from global step ``start_step`` on.

        Args:
            batch_size: examples per (global) batch.
            seed: data seed (shuffling and augmentation).
            start_step: the global step of the first batch; resuming at ``t`` yields what an
                uninterrupted iteration yields from its ``t``-th batch on.
            shard: ``(process index, process count)``: yield only that process's rows of
                each batch (see the module docstring).

        Yields:
            ``dict(image=float32[B, H, W, C], label=int32[B])`` (``B / count`` rows).
        """
        self.steps_per_epoch(batch_size)
        check_seed(seed)
        check_shard(shard, batch_size)
        if start_step < 0:
            raise ValueError(f"start_step must be >= 0, got {start_step}")
        return self._train_iterator(batch_size, seed, start_step, tuple(shard))

    def _train_iterator(
        self, batch_size: int, seed: int, start_step: int, shard: tuple[int, int]
    ) -> Iterator[Batch]:
        step = start_step
        while True:
            batch = self.train_batch(batch_size, seed, step)
            yield batch if shard == (0, 1) else shard_rows(batch, shard)
            step += 1

    @abc.abstractmethod
    def eval_batches(
        self, batch_size: int, split: str = "test", *, shard: tuple[int, int] = (0, 1)
    ) -> Iterator[Batch]:
        """Finite iterator over ``split`` in order, without augmentation.

        The last batch is padded to ``batch_size``; every batch has ``weight`` (1 for real
        examples, 0 for padding), so weighted means over all batches are exact. With
        ``shard=(i, P)``, only process ``i``'s rows of each batch (see the module docstring).

        Yields:
            ``dict(image=float32[B, H, W, C], label=int32[B], weight=float32[B])``.
        """

    @abc.abstractmethod
    def sample(self, n: int, seed: int, split: str = "train") -> Batch:
        """``n`` distinct examples of ``split`` drawn with ``seed``, not augmented.

        Meant for data-dependent mask scoring (SNIP, GraSP, ...).

        Returns:
            ``dict(image=float32[n, H, W, C], label=int32[n])``.
        """


class ArrayDataset(Dataset):
    """A dataset held in memory as ``uint8`` images and ``int32`` labels.

    Args:
        name: dataset name.
        train: ``(images uint8[N, H, W, C], labels int[N])``.
        test: ``(images, labels)`` of the test split.
        num_classes: number of labels.
        mean: per-channel mean for ``augment.normalize``.
        std: per-channel std for ``augment.normalize``.
        augment_fn: ``fn(images, rng) -> images`` applied to training batches, or ``None``.
    """

    def __init__(
        self,
        name: str,
        train: tuple[np.ndarray, np.ndarray],
        test: tuple[np.ndarray, np.ndarray],
        num_classes: int,
        mean,
        std,
        augment_fn: AugmentFn | None = None,
    ):
        self._splits = {}
        for split, (images, labels) in (("train", train), ("test", test)):
            if images.ndim != 4 or len(images) != len(labels):
                raise ValueError(
                    f"{name} {split}: need images [N, H, W, C] and labels [N], got "
                    f"{images.shape} and {labels.shape}"
                )
            self._splits[split] = (images, np.asarray(labels, np.int32))
        if train[0].shape[1:] != test[0].shape[1:]:
            raise ValueError(
                f"{name}: train and test image shapes differ: {train[0].shape[1:]} vs "
                f"{test[0].shape[1:]}"
            )
        self.name = name
        self.num_classes = int(num_classes)
        self.input_shape = tuple(int(d) for d in train[0].shape[1:])
        self.num_train = len(train[0])
        self.num_test = len(test[0])
        self.mean = tuple(float(m) for m in np.atleast_1d(mean))
        self.std = tuple(float(s) for s in np.atleast_1d(std))
        self.augment_fn = augment_fn

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """The raw ``(uint8 images, int32 labels)`` of ``split``."""
        self.split_size(split)
        return self._splits[split]

    def _normalize(self, images: np.ndarray) -> np.ndarray:
        return augment_lib.normalize(images, self.mean, self.std)

    def train_batch(self, batch_size: int, seed: int, step: int) -> Batch:
        """See ``Dataset.train_batch``."""
        images, labels = self._splits["train"]
        idx = batch_indices(seed, step, batch_size, self.num_train)
        batch_images = images[idx]
        if self.augment_fn is not None:
            batch_images = self.augment_fn(batch_images, step_rng(seed, step))
        return {"image": self._normalize(batch_images), "label": labels[idx]}

    def eval_batches(
        self, batch_size: int, split: str = "test", *, shard: tuple[int, int] = (0, 1)
    ) -> Iterator[Batch]:
        """See ``Dataset.eval_batches``."""
        images, labels = self._splits[split] if split in self._splits else (None, None)
        return in_memory_eval_batches(
            self, images, labels, batch_size, split, shard, prepare=self._normalize
        )

    def sample(self, n: int, seed: int, split: str = "train") -> Batch:
        """See ``Dataset.sample``."""
        idx = sample_indices(seed, n, self.split_size(split), split)
        images, labels = self._splits[split]
        return {"image": self._normalize(images[idx]), "label": labels[idx]}


def _loaders() -> dict[str, Callable[..., Dataset]]:
    # Imported lazily: TFDS and grain are only needed for the datasets that use them.
    from jaxprune.data import har, mnist_embedded, synthetic, tfds_source

    loaders: dict[str, Callable[..., Dataset]] = {
        "mnist": mnist_embedded.load,
        "synthetic": synthetic.load,
        "har2": har.load,  # binarised UCI HAR sequences (128, 9), see ``har``
        "har2_synthetic": har.load_synthetic,
    }
    for tfds_name in tfds_source.TFDS_DATASETS:
        for name in (f"tfds:{tfds_name}", tfds_name):
            loaders.setdefault(name, functools.partial(tfds_source.load, tfds_name, name=name))
    return loaders


def dataset_names() -> list[str]:
    """Every name ``get_dataset`` accepts, sorted."""
    return sorted(_loaders())


def get_dataset(
    name: str, *, data_dir: str | None = None, augment: bool | None = None, **kwargs
) -> Dataset:
    """Builds a dataset by name.

    Args:
        name: one of ``dataset_names()``.
        data_dir: where the data lives: the MNIST cache root for ``mnist`` (default
            ``$JAXPRUNE_CACHE`` or ``~/.cache/jaxprune``), the TFDS data dir for TFDS datasets
            (default ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``); ignored by ``synthetic``.
        augment: training augmentation on or off; ``None`` picks the dataset's default (on for
            CIFAR and ImageNet, off for MNIST-like and synthetic data).
        **kwargs: dataset-specific options (e.g. ``shape_like=`` for ``synthetic``,
            ``image_size=`` for ``imagenet2012``).

    Returns:
        A ``Dataset``.

    Raises:
        ValueError: for an unknown name (the message lists the known ones).
    """
    loaders = _loaders()
    if name not in loaders:
        raise ValueError(f"unknown dataset name {name!r}; known: {', '.join(sorted(loaders))}")
    return loaders[name](data_dir=data_dir, augment=augment, **kwargs)
