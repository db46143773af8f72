"""Corrupted copies of a batch, for the data sanity checks of Su et al. (2020).

Su et al. ask whether a pruning-at-init method uses the data at all by computing the mask from
corrupted data: random labels, random pixels (each image's pixel positions shuffled, labels random
too) or half of the data. If the mask, and the accuracy after training, do not change, the method
did not need the data. The config field selecting the corruption is ``sanity.mask_data``.

Decisions:

* numpy in, numpy out, deterministic in ``seed``: each corruption draws from
  ``np.random.default_rng([seed, stream])`` with a fixed stream per purpose, so
  ``random_pixels(batch, s)`` has exactly the labels of ``random_labels(batch, s)``.
* A batch is a dict (``image`` ``float32[N, H, W, C]``, ``label`` ``int32[N]``, maybe more keys);
  the result is a new dict and the input is never modified. Keys a corruption does not touch are
  passed through as the same objects.
* Random labels are uniform over ``range(num_classes)`` and independent of the true labels, so
  they agree with them at chance rate ``1 / num_classes``.
* Random pixels permute the ``H * W`` pixel positions of each image with its own permutation; the
  ``C`` channels of a pixel move together.
* Half data keeps the first ``max(1, N // 2)`` examples (the batch is already a random sample),
  slicing every value whose leading axis has length ``N``.
"""

from __future__ import annotations

import numpy as np

from jaxprune.data.dataset import Batch, check_seed

CORRUPTIONS = ("none", "random_labels", "random_pixels", "half_data")

_LABEL_STREAM = 0
_PIXEL_STREAM = 1


def _check_num_classes(num_classes: int) -> int:
    if (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, int | np.integer)
        or num_classes < 1
    ):
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    return int(num_classes)


def _check_key(batch: Batch, key: str) -> np.ndarray:
    if key not in batch:
        raise ValueError(f"batch has no {key!r} entry; it has {sorted(batch)}")
    return np.asarray(batch[key])


def random_labels(batch: Batch, seed: int, num_classes: int) -> Batch:
    """Replaces the labels by uniform random classes; images unchanged.

    Args:
      batch: a dict with ``"label"`` (``int[N]``).
      seed: non-negative int; the result is a pure function of ``(batch, seed, num_classes)``.
      num_classes: labels are drawn from ``range(num_classes)``.

    Returns:
      A new batch dict with ``label`` ``int32[N]`` replaced.

    Raises:
      ValueError: bad ``seed`` / ``num_classes``, or no ``"label"`` in ``batch``.
    """
    seed = check_seed(seed)
    num_classes = _check_num_classes(num_classes)
    labels = _check_key(batch, "label")
    rng = np.random.default_rng([seed, _LABEL_STREAM])
    new = rng.integers(0, num_classes, size=labels.shape[:1], dtype=np.int32)
    return {**batch, "label": new}


def random_pixels(batch: Batch, seed: int, num_classes: int) -> Batch:
    """Shuffles each image's pixel positions with its own permutation; labels as ``random_labels``.

    Args:
      batch: a dict with ``"image"`` (``[N, H, W, C]``) and ``"label"`` (``int[N]``).
      seed: non-negative int.
      num_classes: labels are drawn from ``range(num_classes)``.

    Returns:
      A new batch dict: ``image[n]`` holds the pixels (channel vectors) of the original image
      ``n`` in a random order, ``label`` is ``random_labels(batch, seed, num_classes)["label"]``.

    Raises:
      ValueError: bad ``seed`` / ``num_classes``, missing keys, or an image that is not 4-D.
    """
    out = random_labels(batch, seed, num_classes)
    images = _check_key(batch, "image")
    if images.ndim != 4:
        raise ValueError(f"batch['image'] must be [N, H, W, C], got shape {images.shape}")
    n, h, w, c = images.shape
    rng = np.random.default_rng([seed, _PIXEL_STREAM])
    perms = rng.permuted(np.broadcast_to(np.arange(h * w), (n, h * w)), axis=1)
    pixels = images.reshape(n, h * w, c)
    out["image"] = pixels[np.arange(n)[:, None], perms].reshape(images.shape)
    return out


def half_data(batch: Batch, seed: int, num_classes: int | None = None) -> Batch:
    """The first ``max(1, N // 2)`` examples of ``batch`` (the mask sees half as much data).

    Args:
      batch: a dict whose per-example values have leading axis ``N`` (taken from ``"label"``, or
        ``"image"`` if there are no labels).
      seed: non-negative int (validated; the result does not depend on it).
      num_classes: unused; accepted so every corruption has the same signature.

    Returns:
      A new batch dict; values whose leading axis has length ``N`` are sliced, others kept.

    Raises:
      ValueError: bad ``seed``, or neither ``"label"`` nor ``"image"`` in ``batch``.
    """
    del num_classes
    check_seed(seed)
    key = "label" if "label" in batch else "image"
    n = len(_check_key(batch, key))
    keep = max(1, n // 2) if n else 0
    return {k: v[:keep] if np.ndim(v) >= 1 and np.shape(v)[0] == n else v for k, v in batch.items()}


def corrupt(batch: Batch, kind: str, seed: int, num_classes: int) -> Batch:
    """Applies the corruption ``kind`` (one of ``CORRUPTIONS``); ``"none"`` returns a copy.

    Args:
      batch: the batch to corrupt.
      kind: ``"none"``, ``"random_labels"``, ``"random_pixels"`` or ``"half_data"``.
      seed: non-negative int.
      num_classes: number of classes (for random labels).

    Returns:
      A new batch dict.

    Raises:
      ValueError: if ``kind`` is unknown (the message names ``sanity.mask_data``), or as the
        chosen corruption raises.
    """
    if kind == "none":
        check_seed(seed)
        return dict(batch)
    if kind == "random_labels":
        return random_labels(batch, seed, num_classes)
    if kind == "random_pixels":
        return random_pixels(batch, seed, num_classes)
    if kind == "half_data":
        return half_data(batch, seed, num_classes)
    raise ValueError(f"sanity.mask_data must be one of {list(CORRUPTIONS)}, got {kind!r}")
