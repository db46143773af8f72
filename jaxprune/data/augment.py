"""Image augmentation and normalisation in numpy, vectorised over a batch and seeded.

All functions take images as ``uint8`` (or float) arrays in ``NHWC`` layout and a
``numpy.random.Generator``; the same generator state gives the same output, so a batch's
augmentation is a pure function of the key the caller derives the generator from (the data
pipeline uses ``(seed, step)``).

Normalisation constants (pixels first scaled to ``[0, 1]`` by ``/ 255``):

* MNIST: mean 0.1307, std 0.3081 (the usual PyTorch constants; they are the exact statistics of
  the 60k training images).
* Fashion-MNIST: mean 0.2860, std 0.3530.
* CIFAR-10 / CIFAR-100: the per-channel mean and std of the training set (std of the pixels, not
  the frequently copied ``(0.2023, 0.1994, 0.2010)``).
* ImageNet: the torchvision constants.

Example:
    >>> rng = np.random.default_rng(0)
    >>> x = np.zeros((8, 32, 32, 3), np.uint8)
    >>> y = normalize(random_flip(random_crop(x, rng, padding=4), rng), *CIFAR10_STATS)
    >>> y.shape, y.dtype
    ((8, 32, 32, 3), dtype('float32'))
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

MNIST_STATS = ((0.1307,), (0.3081,))
FASHION_MNIST_STATS = ((0.2860,), (0.3530,))
CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def normalize(images: np.ndarray, mean, std) -> np.ndarray:
    """Scales ``uint8`` pixels to ``[0, 1]`` and standardises each channel.

    Args:
        images: ``[..., C]`` array of pixel values in ``[0, 255]``.
        mean: per-channel means (length ``C`` or 1) in ``[0, 1]`` units.
        std: per-channel standard deviations (length ``C`` or 1), all positive.

    Returns:
        ``float32`` array ``(images / 255 - mean) / std``.

    Raises:
        ValueError: if a std is not positive.
    """
    mean = np.asarray(mean, np.float32)
    std = np.asarray(std, np.float32)
    if np.any(std <= 0):
        raise ValueError(f"normalisation std must be positive, got {std.tolist()}")
    scale = np.float32(1.0 / 255.0)
    out = np.array(images, dtype=np.float32)  # a fresh C-contiguous copy, normalised in place
    if out.ndim >= 1 and mean.size == 1 and std.size == 1 and mean.ndim <= 1 and std.ndim <= 1:
        out *= scale
        out -= mean.reshape(())
        out /= std.reshape(())
        return out
    channels = out.shape[-1] if out.ndim >= 2 else 0
    if channels > 1 and out.size and mean.shape == std.shape == (channels,):
        # Per-channel constants broadcast along the short last axis leave numpy an inner loop
        # of C elements (5x slower on CIFAR batches); repeated along a whole image they do not.
        # Every element gets the same float32 operations either way (bit-identical results).
        row = out[0].size
        flat = out.reshape(-1, row)
        flat *= scale
        flat -= np.tile(mean, row // channels)
        flat /= np.tile(std, row // channels)
        return out
    return (out * scale - mean) / std


def crop_with_offsets(images: np.ndarray, offsets: np.ndarray, padding: int) -> np.ndarray:
    """Zero-pads every image by ``padding`` pixels and crops it back at the given offsets.

    Args:
        images: ``[B, H, W, C]`` array.
        offsets: ``int[B, 2]`` top-left corners ``(row, col)`` in the padded image, each in
            ``[0, 2 * padding]``; ``(padding, padding)`` returns the image unchanged.
        padding: number of zero pixels added on every side.

    Returns:
        Array like ``images``; image ``b`` is shifted down by ``padding - offsets[b, 0]`` rows and
        right by ``padding - offsets[b, 1]`` columns, with zeros shifted in.

    Raises:
        ValueError: on a bad ``padding`` or offsets outside ``[0, 2 * padding]``.
    """
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    if images.ndim != 4:
        raise ValueError(f"images must be [B, H, W, C], got shape {images.shape}")
    offsets = np.asarray(offsets)
    batch, height, width = images.shape[:3]
    if offsets.shape != (batch, 2):
        raise ValueError(f"offsets must have shape {(batch, 2)}, got {offsets.shape}")
    if offsets.size and (offsets.min() < 0 or offsets.max() > 2 * padding):
        raise ValueError(f"offsets must lie in [0, {2 * padding}], got {offsets.tolist()}")
    padded = np.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    # [B, 2p+1, 2p+1, C, H, W] view of every crop; one strided gather picks each image's crop.
    windows = np.lib.stride_tricks.sliding_window_view(padded, (height, width), axis=(1, 2))
    crops = windows[np.arange(batch), offsets[:, 0], offsets[:, 1]]  # [B, C, H, W]
    return np.ascontiguousarray(np.moveaxis(crops, 1, -1))


def random_crop(images: np.ndarray, rng: np.random.Generator, padding: int = 4) -> np.ndarray:
    """Random translation by up to ``padding`` pixels (zero padding, then a random crop).

    Args:
        images: ``[B, H, W, C]`` array.
        rng: source of randomness.
        padding: the largest shift in each direction.

    Returns:
        The shifted images, same shape and dtype.
    """
    offsets = rng.integers(0, 2 * padding + 1, size=(images.shape[0], 2))
    return crop_with_offsets(images, offsets, padding)


def random_flip(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Flips each image left-right with probability 1/2.

    Args:
        images: ``[B, H, W, C]`` array.
        rng: source of randomness.

    Returns:
        The images, each either unchanged or mirrored along the width axis.
    """
    flip = rng.random(images.shape[0]) < 0.5
    out = images.copy()
    out[flip] = images[flip, :, ::-1]
    return out


def cifar_augment(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The standard CIFAR augmentation: 4-pixel zero-padded random crop, then random flip."""
    return random_flip(random_crop(images, rng, padding=4), rng)


def shift_augment(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A mild augmentation for digits: random translation by up to 2 pixels, no flip."""
    return random_crop(images, rng, padding=2)


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of one ``uint8`` ``[H, W, C]`` image with PIL."""
    channels = image.shape[-1]
    pil = Image.fromarray(image[..., 0] if channels == 1 else image)
    out = np.asarray(pil.resize((width, height), Image.Resampling.BILINEAR))
    return out[..., None] if channels == 1 else out


def random_resized_crop(
    image: np.ndarray,
    rng: np.random.Generator,
    size: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> np.ndarray:
    """Inception-style crop of a random area and aspect ratio, resized to ``size x size``.

    Follows torchvision's ``RandomResizedCrop``: ten attempts to draw a box with area fraction in
    ``scale`` and log-uniform aspect ratio in ``ratio`` that fits, else a central crop with the
    aspect ratio clamped to ``ratio``.

    Args:
        image: one ``uint8`` image ``[H, W, C]``.
        rng: source of randomness.
        size: output height and width.
        scale: range of the crop's area as a fraction of the image area.
        ratio: range of the crop's aspect ratio (width / height).

    Returns:
        ``uint8[size, size, C]``.
    """
    height, width = image.shape[:2]
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        crop_w = int(round(math.sqrt(target_area * aspect)))
        crop_h = int(round(math.sqrt(target_area / aspect)))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            top = int(rng.integers(0, height - crop_h + 1))
            left = int(rng.integers(0, width - crop_w + 1))
            return _resize(image[top : top + crop_h, left : left + crop_w], size, size)
    in_ratio = width / height
    if in_ratio < ratio[0]:
        crop_w, crop_h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        crop_h, crop_w = height, int(round(height * ratio[1]))
    else:
        crop_w, crop_h = width, height
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    return _resize(image[top : top + crop_h, left : left + crop_w], size, size)


def center_crop_resize(image: np.ndarray, size: int, crop_fraction: float = 0.875) -> np.ndarray:
    """Evaluation transform: resize the shorter side to ``size / crop_fraction``, centre-crop.

    Args:
        image: one ``uint8`` image ``[H, W, C]``.
        size: output height and width.
        crop_fraction: fraction of the resized shorter side that the crop keeps (224/256).

    Returns:
        ``uint8[size, size, C]``.
    """
    height, width = image.shape[:2]
    short = int(round(size / crop_fraction))
    if height <= width:
        new_h, new_w = short, max(short, int(round(width * short / height)))
    else:
        new_w, new_h = short, max(short, int(round(height * short / width)))
    resized = _resize(image, new_h, new_w)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return resized[top : top + size, left : left + size]
