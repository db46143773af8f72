"""Datasets read from TFDS data prepared on disk, without TensorFlow.

``tfds.data_source(name, split=..., data_dir=..., download=False)`` gives random access to a
dataset prepared in the ``array_record`` file format; images are decoded with PIL, so TensorFlow is
not needed at run time. Nothing is downloaded: a dataset that is not prepared in ``data_dir``
(default ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``) raises ``DatasetNotPreparedError`` saying
how to prepare it, e.g. on a machine with internet and TensorFlow::

    tfds build cifar10 --data_dir ~/tensorflow_datasets --file_format array_record

then copy ``~/tensorflow_datasets/cifar10`` to the same place under ``data_dir`` here.
(ImageNet additionally needs the manually downloaded archives; see the TFDS catalogue.)

* ``mnist`` (as ``tfds:mnist``; plain ``mnist`` is the embedded copy), ``fashion_mnist``,
  ``cifar10``, ``cifar100`` are small: both splits are decoded once into memory (``uint8``) and
  served by ``ArrayDataset``.
* ``imagenet2012`` streams through grain: a ``MapDataset`` over global example positions, mapped
  through decode + random-resized crop + flip (train) or resize + centre crop (eval) in
  ``num_threads`` threads, then batched. Its ``test`` split is TFDS ``validation``.

The determinism contract of ``jaxprune.data.dataset`` holds for both: the streamed element at
position ``t * batch_size + k`` is a pure function of ``(seed, t, k)``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from jaxprune.data import augment as augment_lib
from jaxprune.data.dataset import (
    ArrayDataset,
    Batch,
    Dataset,
    batch_indices,
    check_seed,
    check_shard,
    example_rng,
    sample_indices,
)


@dataclasses.dataclass(frozen=True)
class TfdsSpec:
    """How one TFDS dataset is read.

    Attributes:
        stats: ``(mean, std)`` per channel for normalisation.
        augment_fn: training augmentation of the in-memory datasets.
        augment_default: whether augmentation is on when ``augment=None``.
        streaming: stream through grain instead of loading into memory.
        test_split: the TFDS split served as ``test``.
    """

    stats: tuple[tuple[float, ...], tuple[float, ...]]
    augment_fn: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None
    augment_default: bool
    streaming: bool = False
    test_split: str = "test"


TFDS_DATASETS: dict[str, TfdsSpec] = {
    "mnist": TfdsSpec(augment_lib.MNIST_STATS, augment_lib.shift_augment, False),
    "fashion_mnist": TfdsSpec(augment_lib.FASHION_MNIST_STATS, augment_lib.shift_augment, False),
    "cifar10": TfdsSpec(augment_lib.CIFAR10_STATS, augment_lib.cifar_augment, True),
    "cifar100": TfdsSpec(augment_lib.CIFAR100_STATS, augment_lib.cifar_augment, True),
    "imagenet2012": TfdsSpec(augment_lib.IMAGENET_STATS, None, True, True, "validation"),
}


class DatasetNotPreparedError(FileNotFoundError):
    """A TFDS dataset is not prepared (in ``array_record`` format) in the data dir."""


def _prepare_hint(tfds_name: str, data_dir: str) -> str:
    hint = (
        f"TFDS dataset {tfds_name!r} is not prepared in the array_record format in {data_dir}. "
        f"Prepare it on a machine with internet access and TensorFlow installed:\n"
        f"    pip install tensorflow tensorflow-datasets\n"
        f"    tfds build {tfds_name} --data_dir {data_dir} --file_format array_record\n"
        f"or copy an already prepared folder {tfds_name}/ (with its version subfolder) into "
        f"{data_dir}, and pass data_dir= (or set TFDS_DATA_DIR)."
    )
    if tfds_name == "imagenet2012":
        hint += (
            " ImageNet also needs ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in "
            f"{data_dir}/downloads/manual/ before building."
        )
    return hint


def open_source(tfds_name: str, split: str, data_dir: str | None = None) -> Any:
    """``tfds.data_source`` for a prepared dataset; never downloads.

    Args:
        tfds_name: TFDS dataset name, e.g. ``cifar10``.
        split: TFDS split name, e.g. ``train``.
        data_dir: TFDS data dir (default ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).

    Returns:
        A random-access sequence of example dicts.

    Raises:
        DatasetNotPreparedError: the dataset is not prepared there, with instructions.
    """
    import tensorflow_datasets as tfds

    if data_dir is not None:
        data_dir = os.path.expanduser(os.fspath(data_dir))
    shown_dir = data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
    try:
        return tfds.data_source(tfds_name, split=split, data_dir=data_dir, download=False)
    except (NotImplementedError, FileNotFoundError, AssertionError) as e:
        raise DatasetNotPreparedError(_prepare_hint(tfds_name, shown_dir)) from e
    except KeyError as e:  # tfds: "Trying to access `splits['train']` but `splits` is empty"
        if "splits" not in str(e):
            raise
        raise DatasetNotPreparedError(_prepare_hint(tfds_name, shown_dir)) from e


def _num_classes(source: Any) -> int:
    return int(source.dataset_info.features["label"].num_classes)


def read_all(source: Any) -> tuple[np.ndarray, np.ndarray]:
    """Decodes every example of a data source into ``(uint8 images, int32 labels)``."""
    num = len(source)
    if num == 0:
        raise ValueError(f"data source {source!r} is empty")
    first = source[0]
    images = np.empty((num,) + np.shape(first["image"]), np.uint8)
    labels = np.empty(num, np.int32)
    for i in range(num):
        example = first if i == 0 else source[i]
        images[i] = example["image"]
        labels[i] = example["label"]
    return images, labels


def load(
    tfds_name: str,
    *,
    name: str | None = None,
    data_dir: str | None = None,
    augment: bool | None = None,
    **options,
) -> Dataset:
    """A TFDS dataset as a ``Dataset`` (``get_dataset("cifar10")``, ``get_dataset("tfds:mnist")``).

    Args:
        tfds_name: a key of ``TFDS_DATASETS``.
        name: the ``Dataset.name`` (default ``tfds_name``).
        data_dir: TFDS data dir.
        augment: training augmentation; ``None`` uses the dataset's default.
        **options: for ``imagenet2012`` only: ``image_size`` (224), ``num_threads`` (16),
            ``prefetch_batches`` (2); see ``StreamingDataset``.

    Returns:
        An ``ArrayDataset`` (small datasets) or a ``StreamingDataset`` (``imagenet2012``).

    Raises:
        ValueError: unknown dataset or options.
        DatasetNotPreparedError: the data is not prepared in ``data_dir``.
    """
    if tfds_name not in TFDS_DATASETS:
        raise ValueError(f"unknown TFDS dataset {tfds_name!r}; known: {sorted(TFDS_DATASETS)}")
    spec = TFDS_DATASETS[tfds_name]
    name = name or tfds_name
    use_augment = spec.augment_default if augment is None else bool(augment)
    train_source = open_source(tfds_name, "train", data_dir)
    test_source = open_source(tfds_name, spec.test_split, data_dir)
    if spec.streaming:
        return StreamingDataset(
            name,
            train_source,
            test_source,
            num_classes=_num_classes(train_source),
            mean=spec.stats[0],
            std=spec.stats[1],
            augment=use_augment,
            **options,
        )
    if options:
        raise ValueError(f"dataset {name!r} takes no options, got {sorted(options)}")
    return ArrayDataset(
        name,
        train=read_all(train_source),
        test=read_all(test_source),
        num_classes=_num_classes(train_source),
        mean=spec.stats[0],
        std=spec.stats[1],
        augment_fn=spec.augment_fn if use_augment else None,
    )


class StreamingDataset(Dataset):
    """A dataset decoded on the fly from random-access sources, batched with grain.

    Args:
        name: dataset name.
        train_source: random-access sequence of ``{"image": uint8[H, W, C], "label": int}``.
        test_source: the same for the test split.
        num_classes: number of labels.
        mean: per-channel mean for normalisation.
        std: per-channel std for normalisation.
        augment: random-resized crop + flip on training examples (else the eval transform).
        image_size: output height and width.
        num_threads: grain reader threads.
        prefetch_batches: batches buffered ahead by grain.
    """

    _END_OF_STREAM = 2**50  # grain ranges need a stop; no run gets this far

    def __init__(
        self,
        name: str,
        train_source: Any,
        test_source: Any,
        num_classes: int,
        mean,
        std,
        augment: bool = True,
        image_size: int = 224,
        num_threads: int = 16,
        prefetch_batches: int = 2,
    ):
        if image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {image_size}")
        if num_threads < 0:
            raise ValueError(f"num_threads must be >= 0, got {num_threads}")
        self.name = name
        self._sources = {"train": train_source, "test": test_source}
        self.num_classes = int(num_classes)
        self.num_train = len(train_source)
        self.num_test = len(test_source)
        self.image_size = int(image_size)
        channels = np.shape(train_source[0]["image"])[-1]
        self.input_shape = (self.image_size, self.image_size, int(channels))
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.augment = bool(augment)
        self.num_threads = int(num_threads)
        self.prefetch_batches = int(prefetch_batches)

    def _finish(self, image: np.ndarray, label) -> Batch:
        return {
            "image": augment_lib.normalize(image, self.mean, self.std),
            "label": np.int32(label),
        }

    def eval_example(self, split: str, index: int) -> Batch:
        """Example ``index`` of ``split`` with the evaluation transform."""
        example = self._sources[split][int(index)]
        image = augment_lib.center_crop_resize(np.asarray(example["image"]), self.image_size)
        return self._finish(image, example["label"])

    def train_example(self, batch_size: int, seed: int, position: int) -> Batch:
        """Element ``k`` of the batch of step ``t``, where ``position = t * batch_size + k``."""
        step, k = divmod(int(position), batch_size)
        record = batch_indices(seed, step, batch_size, self.num_train)[k]
        if not self.augment:
            return self.eval_example("train", record)
        example = self._sources["train"][int(record)]
        rng = example_rng(seed, step, k)
        image = augment_lib.random_resized_crop(np.asarray(example["image"]), rng, self.image_size)
        if rng.random() < 0.5:
            image = image[:, ::-1]
        return self._finish(image, example["label"])

    def train_batch(self, batch_size: int, seed: int, step: int) -> Batch:
        """See ``Dataset.train_batch`` (computed here without grain)."""
        self.steps_per_epoch(batch_size)
        check_seed(seed)
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        examples = [
            self.train_example(batch_size, seed, step * batch_size + k) for k in range(batch_size)
        ]
        return _stack(examples)

    def _read_options(self, batch_size: int):
        import grain

        return grain.ReadOptions(
            num_threads=self.num_threads,
            prefetch_buffer_size=max(1, self.prefetch_batches * batch_size),
        )

    def _train_iterator(
        self, batch_size: int, seed: int, start_step: int, shard: tuple[int, int]
    ) -> Iterator[Batch]:
        import grain

        first, rows = check_shard(shard, batch_size)

        def position(local: int) -> int:
            # Element `local` of this shard's stream: row `first + local % rows` of batch
            # `start_step + local // rows`; only this process's rows are ever read.
            step, k = divmod(local, rows)
            return (start_step + step) * batch_size + first + k

        dataset = grain.MapDataset.range(self._END_OF_STREAM * rows).map(
            lambda local: self.train_example(batch_size, seed, position(local))
        )
        dataset = dataset.to_iter_dataset(self._read_options(rows))
        return iter(dataset.batch(rows, drop_remainder=True))

    def eval_batches(
        self, batch_size: int, split: str = "test", *, shard: tuple[int, int] = (0, 1)
    ) -> Iterator[Batch]:
        """See ``Dataset.eval_batches``."""
        import grain

        size = self.split_size(split)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        first, rows = check_shard(shard, batch_size)
        num_batches = -(-size // batch_size)
        dataset = grain.MapDataset.range(num_batches * rows).map(
            lambda local: self._eval_element(
                split, size, (local // rows) * batch_size + first + local % rows
            )
        )
        dataset = dataset.to_iter_dataset(self._read_options(rows))
        return iter(dataset.batch(rows, drop_remainder=True))

    def _eval_element(self, split: str, size: int, index: int) -> Batch:
        if index < size:
            return {**self.eval_example(split, index), "weight": np.float32(1.0)}
        return {
            "image": np.zeros(self.input_shape, np.float32),
            "label": np.int32(0),
            "weight": np.float32(0.0),
        }

    def sample(self, n: int, seed: int, split: str = "train") -> Batch:
        """See ``Dataset.sample`` (evaluation transform, no augmentation)."""
        idx = sample_indices(seed, n, self.split_size(split), split)
        return _stack([self.eval_example(split, i) for i in idx])


def _stack(examples: list[Batch]) -> Batch:
    return {key: np.stack([ex[key] for ex in examples]) for key in examples[0]}
