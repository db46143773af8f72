"""Datasets: embedded MNIST, TFDS-backed sources and synthetic data, with one batching API.

See ``jaxprune.data.dataset`` for the ``Dataset`` interface and its determinism contract::

    ds = jaxprune.data.get_dataset("mnist")
    batch = next(ds.train_batches(batch_size=128, seed=0))

``jaxprune.data.prefetch.prefetch`` builds (and places) the next batches on a background thread.
"""

from jaxprune.data import augment, corrupt, prefetch
from jaxprune.data.dataset import (
    ArrayDataset,
    Batch,
    Dataset,
    batch_indices,
    dataset_names,
    epoch_permutation,
    get_dataset,
)

__all__ = [
    "ArrayDataset",
    "Batch",
    "Dataset",
    "augment",
    "batch_indices",
    "corrupt",
    "dataset_names",
    "epoch_permutation",
    "get_dataset",
    "prefetch",
]
