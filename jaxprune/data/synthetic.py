"""Synthetic, learnable image data shaped like a real dataset; a pure function of a seed.

Each class ``k`` gets a fixed smooth random prototype ``P_k`` (low-resolution Gaussian noise
upsampled to the image size). Example ``i`` has a uniformly random label ``y_i`` and the image
``clip(128 + contrast * P_{y_i} + noise_std * N(0, 1))`` as ``uint8``. With the default contrast
the classes are easy to separate (a linear model or a small net beats chance within a few dozen
steps) yet not trivially so, which is what smoke runs and pruning sanity tests need. Batches are
normalised with the training set's own per-channel mean and std.

``get_dataset("synthetic", shape_like="cifar10", num_train=512, seed=3)``; train and test come
from disjoint random streams of the same prototypes.
"""

from __future__ import annotations

import numpy as np

from jaxprune.data import augment as augment_lib
from jaxprune.data.dataset import ArrayDataset

# name -> (input_shape, num_classes, default num_train, default num_test)
SHAPES: dict[str, tuple[tuple[int, int, int], int, int, int]] = {
    "mnist": ((28, 28, 1), 10, 2048, 512),
    "fashion_mnist": ((28, 28, 1), 10, 2048, 512),
    "cifar10": ((32, 32, 3), 10, 2048, 512),
    "cifar100": ((32, 32, 3), 100, 4096, 1024),
    "imagenet2012": ((224, 224, 3), 1000, 512, 256),
    # ImageNet's 1000 classes at 32x32: smoke runs of the ImageNet models (ResNet-50,
    # MobileNet-V1; global average pooling makes them resolution-agnostic) at 1/49 of the pixels.
    "imagenet2012_32": ((32, 32, 3), 1000, 512, 256),
}
_PROTOTYPE_RESOLUTION = 7


def _prototypes(rng: np.random.Generator, num_classes: int, shape: tuple[int, int, int]):
    height, width, channels = shape
    low = rng.normal(size=(num_classes, _PROTOTYPE_RESOLUTION, _PROTOTYPE_RESOLUTION, channels))
    rep_h = -(-height // _PROTOTYPE_RESOLUTION)
    rep_w = -(-width // _PROTOTYPE_RESOLUTION)
    up = np.repeat(np.repeat(low, rep_h, axis=1), rep_w, axis=2)
    return up[:, :height, :width].astype(np.float32)


def _split(rng, prototypes, num, contrast, noise_std, chunk=256):
    labels = rng.integers(0, len(prototypes), size=num).astype(np.int32)
    images = np.empty((num,) + prototypes.shape[1:], np.uint8)
    for start in range(0, num, chunk):  # bounded float32 memory for large images
        stop = min(start + chunk, num)
        noise = rng.standard_normal(size=(stop - start,) + prototypes.shape[1:], dtype=np.float32)
        values = 128.0 + contrast * prototypes[labels[start:stop]] + noise_std * noise
        images[start:stop] = np.clip(np.round(values), 0, 255)
    return images, labels


def make_arrays(
    input_shape: tuple[int, int, int],
    num_classes: int,
    num_train: int,
    num_test: int,
    seed: int = 0,
    contrast: float = 24.0,
    noise_std: float = 48.0,
) -> dict[str, np.ndarray]:
    """Generates the synthetic arrays.

    Args:
        input_shape: ``(H, W, C)``.
        num_classes: number of labels (and prototypes).
        num_train: training-set size.
        num_test: test-set size.
        seed: everything is a pure function of it.
        contrast: prototype amplitude in pixel units (larger is easier).
        noise_std: per-pixel Gaussian noise in pixel units (larger is harder).

    Returns:
        ``{train_images, train_labels, test_images, test_labels}`` as ``uint8`` / ``int32``.

    Raises:
        ValueError: on non-positive sizes or a bad shape.
    """
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ValueError(f"input_shape must be (H, W, C) with positive sizes, got {input_shape}")
    for field, value in (("num_classes", num_classes), ("num_train", num_train)):
        if value < 1:
            raise ValueError(f"{field} must be >= 1, got {value}")
    if num_test < 1:
        raise ValueError(f"num_test must be >= 1, got {num_test}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    prototypes = _prototypes(np.random.default_rng([seed, 0]), num_classes, input_shape)
    train_images, train_labels = _split(
        np.random.default_rng([seed, 1]), prototypes, num_train, contrast, noise_std
    )
    test_images, test_labels = _split(
        np.random.default_rng([seed, 2]), prototypes, num_test, contrast, noise_std
    )
    return {
        "train_images": train_images,
        "train_labels": train_labels,
        "test_images": test_images,
        "test_labels": test_labels,
    }


def load(
    *,
    data_dir: str | None = None,
    augment: bool | None = None,
    shape_like: str = "mnist",
    num_train: int | None = None,
    num_test: int | None = None,
    num_classes: int | None = None,
    input_shape: tuple[int, int, int] | None = None,
    seed: int = 0,
    contrast: float = 24.0,
    noise_std: float = 48.0,
) -> ArrayDataset:
    """Synthetic data as a ``Dataset`` (``get_dataset("synthetic", ...)``).

    Args:
        data_dir: ignored (nothing is read).
        augment: training augmentation (CIFAR-style for 3 channels, 2-pixel shifts otherwise);
            default off.
        shape_like: a key of ``SHAPES`` giving the default shape, class count and sizes.
        num_train: training-set size (default from ``SHAPES``).
        num_test: test-set size (default from ``SHAPES``).
        num_classes: overrides the class count.
        input_shape: overrides ``(H, W, C)``.
        seed: data seed.
        contrast: see ``make_arrays``.
        noise_std: see ``make_arrays``.

    Returns:
        An ``ArrayDataset`` named ``synthetic``.
    """
    del data_dir
    if shape_like not in SHAPES:
        raise ValueError(f"shape_like must be one of {sorted(SHAPES)}, got {shape_like!r}")
    like_shape, like_classes, like_train, like_test = SHAPES[shape_like]
    shape = tuple(input_shape) if input_shape is not None else like_shape
    arrays = make_arrays(
        shape,
        num_classes or like_classes,
        num_train or like_train,
        num_test or like_test,
        seed=seed,
        contrast=contrast,
        noise_std=noise_std,
    )
    # Normalisation statistics from (at most) the first 256 training images.
    head = arrays["train_images"][:256].astype(np.float64) / 255.0
    axes = (0, 1, 2)
    augment_fn = None
    if augment:
        augment_fn = augment_lib.cifar_augment if shape[-1] == 3 else augment_lib.shift_augment
    return ArrayDataset(
        "synthetic",
        train=(arrays["train_images"], arrays["train_labels"]),
        test=(arrays["test_images"], arrays["test_labels"]),
        num_classes=num_classes or like_classes,
        mean=head.mean(axis=axes),
        std=np.maximum(head.std(axis=axes), 1e-3),
        augment_fn=augment_fn,
    )
