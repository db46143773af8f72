"""Liu et al.'s flows in a run: structured fine-tuning, Scratch-E / B, slimming, resume."""

import json
import math

import jax
import ml_collections
import numpy as np
import pytest
import tqdm

from configs import lenet5_mnist_rethinking, vgg19_cifar10_slimming
from jaxprune import training
from jaxprune.pruning import flops as flops_lib
from jaxprune.training import runner

DENSE_STEPS = 30  # the smoke config's training.steps


def _config(arg="l1_filter", **overrides) -> ml_collections.ConfigDict:
    config = lenet5_mnist_rethinking.get_config(f"{arg},smoke")
    config.model.name = "lenet300"  # hidden widths 300, 100 -> 150, 50 at ratio 0.5
    config.update_from_flattened_dict(overrides)
    training.validate_config(config)
    return config


def _lenet300_macs(h1, h2):
    return 784 * h1 + h1 * h2 + h2 * 10


@pytest.fixture(scope="module")
def pruned_pair(tmp_path_factory):
    """(run, trained dense state, first state after structured pruning) for 'scratch_b'."""
    config = _config(flow="scratch_b")
    run = runner.Runner(config, tmp_path_factory.mktemp("rethink"))
    bar = tqdm.tqdm(disable=True, total=run.ctx.phases[-1].end)
    dense = run.run_phase(0, run.start_phase(0, None), bar)
    dense = jax.device_get(dense)
    pruned = jax.device_get(run.start_phase(1, dense))
    run.ctx.ckpt.close()
    return run.ctx, dense, pruned


def test_l1_filter_keeps_the_largest_filters_of_the_trained_net(pruned_pair):
    run, dense, pruned = pruned_pair
    assert run.widths == (150, 50)
    wide = {n: np.asarray(dense.params[n]["kernel"]) for n in ("Dense_0", "Dense_1", "Dense_2")}
    keep0 = np.sort(np.argsort(-np.abs(wide["Dense_0"]).sum(0), kind="stable")[:150])
    keep1 = np.sort(np.argsort(-np.abs(wide["Dense_1"]).sum(0), kind="stable")[:50])
    # scratch_b starts from a fresh init of the narrow net: shapes of the narrow model.
    assert pruned.params["Dense_0"]["kernel"].shape == (784, 150)
    assert pruned.params["Dense_1"]["kernel"].shape == (150, 50)
    assert pruned.params["Dense_2"]["kernel"].shape == (50, 10)
    narrow_model, narrow_vars, _ = run.prune_structured({"params": dense.params})
    got = narrow_vars["params"]
    np.testing.assert_array_equal(got["Dense_0"]["kernel"], wide["Dense_0"][:, keep0])
    np.testing.assert_array_equal(got["Dense_1"]["kernel"], wide["Dense_1"][keep0][:, keep1])
    np.testing.assert_array_equal(got["Dense_2"]["kernel"], wide["Dense_2"][keep1])
    # The fresh init is not the copied weights.
    assert not np.allclose(pruned.params["Dense_0"]["kernel"], got["Dense_0"]["kernel"])
    assert narrow_model.module.widths == (150, 50)


def test_scratch_b_budget_is_the_capped_flops_ratio(pruned_pair):
    run, _, _ = pruned_pair
    dense_macs, narrow_macs = _lenet300_macs(300, 100), _lenet300_macs(150, 50)
    assert run.dense_flops().total_flops == dense_macs == 266_200
    ratio = dense_macs / narrow_macs  # 2.12 -> capped at 2
    assert ratio > 2
    assert run.phases[1].num_steps == 2 * DENSE_STEPS
    assert run.phases[1].start == DENSE_STEPS
    assert flops_lib.scratch_b_steps(DENSE_STEPS, dense_macs, narrow_macs, cap=1.5) == 45
    assert flops_lib.scratch_b_steps(DENSE_STEPS, dense_macs, narrow_macs, cap=5) == round(
        DENSE_STEPS * ratio
    )


def test_unstructured_scratch_init_is_fresh_and_scaled_by_surviving_fan_in(tmp_path):
    config = _config("magnitude", flow="scratch_e")
    run = runner.Runner(config, tmp_path).ctx
    rng = np.random.default_rng(0)
    params = jax.device_get(run.init_variables())["params"]
    masks = jax.tree.map(lambda p: np.ones(p.shape, bool), params)
    for name in ("Dense_0", "Dense_1", "Dense_2"):
        masks[name]["kernel"] = rng.random(params[name]["kernel"].shape) < 0.2
    fresh = jax.device_get(run.fresh_sparse_variables(masks))["params"]
    raw = jax.device_get(run._init(run.fresh_key))["params"]
    run.ckpt.close()
    for name in ("Dense_0", "Dense_1", "Dense_2"):
        mask = masks[name]["kernel"]
        fan_in = mask.shape[0]
        scale = np.sqrt(fan_in / np.maximum(mask.sum(0), 1))
        expected = np.where(mask, raw[name]["kernel"] * scale, 0.0)
        np.testing.assert_allclose(fresh[name]["kernel"], expected, rtol=1e-6)
        assert not np.allclose(raw[name]["kernel"], params[name]["kernel"])  # a new draw


def test_structured_finetune_end_to_end_and_resume(tmp_path):
    config = _config(flow="prune_finetune")
    summary = training.train_and_evaluate(config, tmp_path / "full").summary
    assert summary["structured"]["widths"] == [150, 50]
    assert summary["flops"]["flops"] == _lenet300_macs(150, 50)
    assert summary["flops"]["flops_dense"] == 266_200
    narrow_params = 784 * 150 + 150 + 150 * 50 + 50 + 50 * 10 + 10
    assert summary["flops"]["params"] == narrow_params
    assert summary["sparsity"]["total"] == 784 * 150 + 150 * 50 + 50 * 10
    records = [
        json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().split("\n") if x
    ]
    pruned = [r for r in records if r["phase"] == "pruned"]
    assert len(pruned) == 1 and pruned[0]["structured"]["widths_dense"] == [300, 100]
    assert 0.0 <= pruned[0]["test_accuracy"] <= 1.0
    # A crash inside the narrow fine-tuning phase resumes into the narrow model and ends
    # exactly where the uninterrupted run ends.
    stopped = _config(flow="prune_finetune", **{"debug.stop_at_step": 35})
    assert training.train_and_evaluate(stopped, tmp_path / "resumed").stopped_at_step == 35
    stopped.debug.stop_at_step = 0
    resumed = training.train_and_evaluate(stopped, tmp_path / "resumed").summary
    assert resumed["structured"]["widths"] == [150, 50]
    assert resumed["steps"] == summary["steps"] == DENSE_STEPS + 10
    assert resumed["test_accuracy"] == summary["test_accuracy"]
    assert resumed["test_loss"] == pytest.approx(summary["test_loss"], rel=1e-6)


def test_slimming_penalty_and_threshold_on_vgg(tmp_path):
    config = vgg19_cifar10_slimming.get_config("smoke")
    config.training.steps = 8
    config.finetune.steps = 4
    config.structured.slimming_l1 = 1e-2
    config.model.name = "vgg11"  # the same code path as VGG-19, half the layers to compile
    run = runner.Runner(config, tmp_path / "unit").ctx
    variables = jax.device_get(run.init_variables())
    active, groups = run.channel_groups(variables)
    assert len(groups) == 8 and active == groups
    scales = [np.asarray(variables["params"][f"BatchNorm_{i}"]["scale"]) for i in range(8)]
    penalty = run.regularizer(0)
    assert float(penalty(variables["params"])) == pytest.approx(
        1e-2 * sum(np.abs(s).sum() for s in scales), rel=1e-6
    )
    assert run.regularizer(1) is None  # fine-tuning has no penalty
    run.ckpt.close()

    summary = training.train_and_evaluate(config, tmp_path / "run").summary
    widths = summary["structured"]["widths"]
    dense_widths = [max(1, round(c * 0.125)) for c in (64, 128, 256, 256, 512, 512, 512, 512)]
    assert len(widths) == 8 and all(1 <= w <= d for w, d in zip(widths, dense_widths, strict=True))
    total = sum(dense_widths)
    # One global threshold prunes round(0.7 N) channels; rescued layers add at most one each.
    assert total - round(0.7 * total) <= sum(widths) <= total - round(0.7 * total) + 8
    records = [
        json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().split("\n") if x
    ]
    penalties = [r["train_penalty"] for r in records if "train_penalty" in r]
    assert penalties and all(p > 0 for p in penalties)
    assert all("train_penalty" not in r for r in records if r["phase"] == "finetune")
    assert summary["flops"]["flops"] < summary["flops"]["flops_dense"]
    assert math.isfinite(summary["test_loss"])


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "mobilenet_v1", "resnet56", "wrn16_2"])
@pytest.mark.parametrize("method", ["l1_filter", "slimming"])
def test_structured_pruning_accepts_every_model_with_channel_groups(name, method):
    config = lenet5_mnist_rethinking.get_config("smoke")
    config.model.name, config.structured.method = name, method
    config.dataset.name, config.dataset.shape_like = "synthetic", "imagenet2012_32"
    training.validate_config(config)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"structured.method": "prune"}, r"structured\.method must be one of .*got 'prune'"),
        ({"flow": "prune_at_init"}, r"structured\.method='l1_filter' needs flow one of"),
        ({"structured.method": "slimming"}, r"needs a model with BatchNorm scales .*'lenet300'"),
        ({"structured.ratio": 1.5}, r"structured\.ratio must be in \[0, 1\], got 1\.5"),
        ({"structured.skip": ("Conv_(",)}, r"structured\.skip has an invalid regex 'Conv_\('"),
        ({"structured.ratios": (("Conv", 2.0),)}, r"structured\.ratios\['Conv'\] must be in"),
        ({"scratch.budget_cap": 0.5}, r"scratch\.budget_cap must be in \[1, inf\], got 0\.5"),
        ({"model.name": "jaxprune.models.lenet:LeNet300"}, r"needs a zoo model with channel"),
        (
            {"structured.method": "none", "flow": "scratch_b", "pruning.sparsity": 1.0},
            r"undefined at pruning\.sparsity=1",
        ),
    ],
)
def test_structured_config_errors(overrides, message):
    config = lenet5_mnist_rethinking.get_config("smoke")
    config.model.name = "lenet300"
    config.update_from_flattened_dict(overrides)
    with pytest.raises(ValueError, match=message):
        training.validate_config(config)
