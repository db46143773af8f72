"""Smoke runs of the paper-scale configs (Gupta et al. ImageNet / WRN, Zhu & Gupta MobileNets).

Each config's ``smoke`` variant trains the named model at full depth and a small width on tiny
synthetic data (32x32 ImageNet-shaped for the ImageNet models); the checks are on what the config
promises: the exact kept count of Global MP (``n_keep_for`` over the prunable kernels of the model
actually built), the MT floor in every layer, and the large-sparse / small-dense pairing.
Parameter counts of the full-size models are tested in ``test_zoo_imagenet.py``.
"""

import importlib

import pytest

import jaxprune as jp
from jaxprune.models import get_model
from jaxprune.models.width import count_params, matching_width
from jaxprune.training import train_and_evaluate

IMAGENET_32 = (1, 32, 32, 3)
MOBILENET_KERNELS = 4_209_088  # MobileNet-V1 1.0, 1000 classes: conv + dense kernels
PUBLISHED_ALPHAS = (0.25, 0.5, 0.75, 1.0)


def _config(name, arg="smoke"):
    return importlib.import_module(f"configs.{name}").get_config(arg)


def _kernels(config, num_classes, input_shape):
    model = get_model(config.model.name, num_classes, width=config.model.width)
    return count_params(model, input_shape)


def _run(config, tmp_path):
    return train_and_evaluate(config, tmp_path).summary


@pytest.mark.parametrize(
    ("name", "model", "num_classes", "input_shape"),
    [
        ("resnet50_imagenet_gmp_mt", "resnet50", 1000, IMAGENET_32),
        ("mobilenet_v1_imagenet_gmp_mt", "mobilenet_v1", 1000, IMAGENET_32),
        ("wrn28_8_cifar10_gmp", "wrn28_8", 10, (1, 32, 32, 3)),
    ],
)
def test_gupta_global_mp_smoke_keeps_exact_count_and_mt_floor(
    name, model, num_classes, input_shape, tmp_path
):
    full, config = _config(name, None), _config(name)
    assert (full.model.name, full.model.width, full.flow) == (model, 1.0, "prune_finetune")
    assert full.dataset.name == ("cifar10" if num_classes == 10 else "imagenet2012")
    assert config.model.name == model and config.dataset.name == "synthetic"

    summary = _run(config, tmp_path)
    report = summary["sparsity"]
    total = _kernels(config, num_classes, input_shape)
    assert report["total"] == total  # the summary counts the model the config names
    assert report["kept"] == jp.n_keep_for(config.pruning.sparsity, total)
    assert summary["steps"] == config.training.steps + config.finetune.steps
    assert list(summary["phases"]) == ["dense", "pruned", "finetune"]
    floor = round(config.pruning.min_keep_fraction * total)
    assert (floor > 0) == (config.pruning.min_keep_fraction > 0)
    for layer, row in report["layers"].items():
        assert row["kept"] >= min(floor, row["total"]), layer


def test_zhu_gupta_large_sparse_smoke_reaches_target(tmp_path):
    config = _config("mobilenet_v1_imagenet_gradual", "75,smoke")
    assert config.pruning.schedule.final_sparsity == 0.75 and config.flow == "gradual"
    assert _config("mobilenet_v1_imagenet_gradual", None).pruning.schedule.final_sparsity == 0.9
    summary = _run(config, tmp_path)
    total = _kernels(config, 1000, IMAGENET_32)
    assert summary["sparsity"]["total"] == total
    assert summary["sparsity"]["kept"] == jp.n_keep_for(0.75, total)
    assert summary["steps"] == config.training.steps


def test_zhu_gupta_small_dense_smoke_is_dense_at_its_width(tmp_path):
    config = _config("mobilenet_v1_imagenet_small_dense", "0.25,smoke")
    assert config.flow == "dense" and config.model.width == 0.25 / 4
    summary = _run(config, tmp_path)
    total = _kernels(config, 1000, IMAGENET_32)
    assert summary["sparsity"]["kept"] == summary["sparsity"]["total"] == total
    assert summary["steps"] == config.training.steps


@pytest.mark.parametrize(("sparsity", "alpha"), [(0.75, "0.5"), (0.9, "0.25")])
def test_small_dense_width_pairs_with_large_sparse_nonzeros(sparsity, alpha):
    sparse = _config("mobilenet_v1_imagenet_gradual", str(round(100 * sparsity)))
    dense = _config("mobilenet_v1_imagenet_small_dense", alpha)
    assert sparse.model.width == 1.0 and dense.model.width == float(alpha)
    assert sparse.training.to_dict() == dense.training.to_dict()  # same recipe and length
    assert _kernels(sparse, 1000, IMAGENET_32) == MOBILENET_KERNELS
    kept = jp.n_keep_for(sparse.pruning.schedule.final_sparsity, MOBILENET_KERNELS)
    matched = matching_width("mobilenet_v1", 1000, IMAGENET_32, kept, tolerance=1e-3)
    assert min(PUBLISHED_ALPHAS, key=lambda a: abs(a - matched)) == dense.model.width
    dense_kernels = _kernels(dense, 1000, IMAGENET_32)
    assert abs(dense_kernels - kept) < 0.3 * kept  # same memory footprint, roughly
