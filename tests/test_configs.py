"""Tests of configs/ and of config validation (every bad field gets its own message)."""

import importlib
import math
import re
from pathlib import Path

import ml_collections
import pytest

from jaxprune.configs import default
from jaxprune.training import validate_config

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(
    p.stem for p in (REPO / "configs").glob("*.py") if p.stem != "default" and p.stem[0] != "_"
)


def _load(name):
    return importlib.import_module(f"configs.{name}")


def _flat_keys(config, prefix=""):
    keys = set()
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            keys |= _flat_keys(value, f"{prefix}{key}.")
        else:
            keys.add(f"{prefix}{key}")
    return keys


def test_required_experiment_configs_exist():
    assert {
        "lenet300_mnist_gmp",
        "lenet5_mnist_gmp_mt",
        "resnet20_cifar10_gmp",
        "vgg16_cifar10_gmp",
    } <= set(EXPERIMENTS)


@pytest.mark.parametrize("name", ["default", *EXPERIMENTS])
@pytest.mark.parametrize("arg", [None, "smoke"])
def test_configs_validate(name, arg):
    if name == "default" and arg == "smoke":
        pytest.skip("default takes no argument")
    config = _load(name).get_config(arg)
    validate_config(config)
    assert _flat_keys(config) == _flat_keys(default.get_config())  # overrides only


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_configs_document_command_and_smoke(name):
    module = _load(name)
    assert f"python -m jaxprune.main --config configs/{name}.py" in module.__doc__
    assert "Expected" in module.__doc__
    full, smoke = module.get_config(), module.get_config("smoke")
    full_steps = full.training.steps or full.training.epochs * 400
    assert 0 < smoke.training.steps <= 100 < full_steps
    with pytest.raises(ValueError, match="unknown config argument 'huge'"):
        module.get_config("huge")


def test_every_default_field_has_a_comment():
    lines = Path(default.__file__).read_text().splitlines()  # jaxprune/configs/default.py
    assignment = re.compile(r"^\s+config(\.\w+)+ = (?!ml_collections\.ConfigDict\(\))")
    fields = 0
    for i, line in enumerate(lines):
        if assignment.match(line):
            fields += 1
            j = i - 1
            while assignment.match(lines[j]) and j > 0:  # a comment may cover a group
                j -= 1
            assert lines[j].strip().startswith("#"), f"no comment above: {line.strip()}"
    assert fields == len(_flat_keys(default.get_config()))


BAD_FIELDS = [
    ("pruning.sparsity", 1.5, r"pruning\.sparsity must be in \[0, 1\], got 1\.5"),
    ("pruning.sparsity", -0.1, r"pruning\.sparsity must be in \[0, 1\], got -0\.1"),
    ("pruning.sparsity", math.nan, r"pruning\.sparsity must be finite, got nan"),
    ("flow", "prune_later", r"flow must be one of \[.*'prune_finetune'.*\], got 'prune_later'"),
    (
        "model.name",
        "resnet9000",
        r"model\.name must be one of \[.*'lenet300'.*\], got 'resnet9000'",
    ),
    ("model.width", 0.0, r"model\.width must be in \(0, inf\], got 0\.0"),
    ("dataset.name", "imagenet9", r"dataset\.name must be one of \[.*'mnist'.*\], got 'imagenet9'"),
    ("dataset.eval_limit", -1, r"dataset\.eval_limit must be in \[0, inf\], got -1"),
    ("pruning.score", "oracle", r"pruning\.score must be one of \[.*'magnitude'.*\], got 'oracle'"),
    ("pruning.selection", "local", r"pruning\.selection must be one of .*, got 'local'"),
    ("pruning.quota", "fancy", r"pruning\.quota must be one of \[.*'uniform'.*\], got 'fancy'"),
    ("pruning.min_keep_fraction", 1.0, r"pruning\.min_keep_fraction must be in \[0, 1\), got 1\.0"),
    ("pruning.prunable", ("Dense_[",), r"pruning\.prunable has an invalid regex 'Dense_\['"),
    ("pruning.score_batch_size", 0, r"pruning\.score_batch_size must be in \[1, inf\], got 0"),
    ("training.optimizer", "lion", r"training\.optimizer must be one of .*, got 'lion'"),
    ("training.lr_schedule", "linear", r"training\.lr_schedule must be one of .*, got 'linear'"),
    ("training.batch_size", 0, r"training\.batch_size must be in \[1, inf\], got 0"),
    ("training.learning_rate", 0.0, r"training\.learning_rate must be in \(0, inf\], got 0\.0"),
    ("training.learning_rate", math.inf, r"training\.learning_rate must be finite, got inf"),
    ("training.momentum", 1.0, r"training\.momentum must be in \[0, 1\), got 1\.0"),
    ("training.weight_decay", -1e-4, r"training\.weight_decay must be in \[0, inf\], got -0\.0001"),
    ("training.epochs", -1.0, r"training\.epochs must be in \[0, inf\], got -1\.0"),
    ("training.log_every", 0, r"training\.log_every must be in \[1, inf\], got 0"),
    ("training.warmup_steps", -5, r"training\.warmup_steps must be in \[0, inf\], got -5"),
    ("finetune.learning_rate", -0.1, r"finetune\.learning_rate must be in \(0, inf\], got -0\.1"),
    ("finetune.lr_schedule", "linear", r"finetune\.lr_schedule must be one of .*, got 'linear'"),
    ("seed", -1, r"seed must be in \[0, inf\], got -1"),
    ("debug.stop_at_step", -1, r"debug\.stop_at_step must be in \[0, inf\], got -1"),
]


@pytest.mark.parametrize(("field", "value", "message"), BAD_FIELDS, ids=lambda v: str(v))
def test_bad_field_is_rejected_naming_field_and_value(field, value, message):
    config = _load("lenet300_mnist_gmp").get_config("smoke")
    config.update_from_flattened_dict({field: value})
    with pytest.raises(ValueError, match=message):
        validate_config(config)


def test_cross_field_errors():
    config = _load("lenet300_mnist_gmp").get_config("smoke")
    config.training.steps, config.training.epochs = 0, 0.0
    with pytest.raises(ValueError, match="training.epochs and training.steps are both 0"):
        validate_config(config)

    config = _load("lenet300_mnist_gmp").get_config("smoke")
    config.pruning.selection = "layerwise"
    with pytest.raises(ValueError, match=r"min_keep_fraction \(MT\) needs .*'layerwise'"):
        validate_config(config)

    config = _load("lenet300_mnist_gmp").get_config("smoke")
    config.pruning.quota = "custom"
    with pytest.raises(ValueError, match=r"pruning\.quota 'custom' .* only available from Python"):
        validate_config(config)

    config = _load("resnet20_cifar10_gmp").get_config("smoke")
    config.dataset.shape_like = "svhn"
    with pytest.raises(ValueError, match=r"dataset\.shape_like must be one of .*, got 'svhn'"):
        validate_config(config)


def test_locked_config_rejects_unknown_fields():
    config = _load("lenet300_mnist_gmp").get_config()
    config.lock()
    with pytest.raises(AttributeError, match="sparsity"):
        config.pruning.sparsty = 0.5
