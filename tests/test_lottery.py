"""The 'iterative' (lottery ticket) flow: nested masks, exact counts, rewinding, resume."""

import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from configs import lenet300_mnist_lottery
from jaxprune import models, training
from jaxprune.configs import default
from jaxprune.training import config_check, flows, prune

N_PRUNABLE = 784 * 300 + 300 * 100 + 100 * 10  # LeNet-300-100 kernels: 266,200
STEPS = 12  # per round in the smoke config


def _config(**overrides):
    config = lenet300_mnist_lottery.get_config("smoke")
    config.training.keep_checkpoints = 20
    config.training.checkpoint_every = 4
    config.update_from_flattened_dict(overrides)
    return config


def _restore(workdir: Path, step: int | None = None):
    manager = ocp.CheckpointManager(workdir / "checkpoints", item_names=("state", "meta"))
    step = manager.latest_step() if step is None else step
    restored = manager.restore(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()),
    )
    manager.close()
    return restored["state"]


def _masks(state):
    """The masks of a restored raw state: the ``jp.masked`` part of its optimizer state."""
    opt_state = state["opt_state"]
    return opt_state["masks"] if isinstance(opt_state, dict) else opt_state[1]


def _kernels(tree):
    return {k: np.asarray(v["kernel"]) for k, v in tree.items()}


def _initial_params(seed=0):
    model = models.get_model("lenet300", 10, width=1.0)
    init = jax.jit(lambda key: model.init({"params": key}, jnp.zeros((1, 28, 28, 1)), train=False))
    return jax.device_get(init(jax.random.key(seed, impl="rbg")))["params"]


@pytest.fixture(scope="module")
def rewind0_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("lottery0")
    return workdir, training.train_and_evaluate(_config(), workdir).summary


@pytest.fixture(scope="module")
def rewind4_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("lottery4")
    config = _config(**{"pruning.iterative.rewind_step": 4, "pruning.iterative.rounds": 1})
    return workdir, training.train_and_evaluate(config, workdir).summary


def test_rounds_have_exact_counts_nested_masks_and_rewound_survivors(rewind0_run):
    workdir, summary = rewind0_run
    initial = _kernels(_initial_params())
    previous = {k: np.ones_like(v, bool) for k, v in initial.items()}
    for r in (1, 2):
        state = _restore(workdir, r * STEPS)  # saved right after pruning + rewinding
        masks, params = _kernels(_masks(state)), _kernels(state["params"])
        kept = sum(int(m.sum()) for m in masks.values())
        assert kept == math.floor(0.8**r * N_PRUNABLE + 0.5) == [212960, 170368][r - 1]
        for name, mask in masks.items():
            assert not np.any(mask & ~previous[name]), f"round {r}: {name} not nested"
            np.testing.assert_array_equal(params[name], np.where(mask, initial[name], 0.0))
        previous = masks
    assert [(x["round"], x["kept"]) for x in summary["rounds"]] == [
        (0, N_PRUNABLE),
        (1, 212960),
        (2, 170368),
    ]
    assert summary["rounds"][2]["sparsity"] == pytest.approx(0.36)
    assert summary["target_sparsity"] == pytest.approx(1 - 0.8**2)
    assert summary["steps"] == 3 * STEPS and summary["sparsity"]["kept"] == 170368
    assert all(0.0 < x["test_accuracy"] <= 1.0 for x in summary["rounds"])
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    ends = [r for r in records if "test_accuracy" in r]
    assert [(r["step"], r["phase"]) for r in ends] == [
        (12, "round_0"),
        (24, "round_1"),
        (36, "round_2"),
    ]
    assert [r["test_accuracy"] for r in ends] == [x["test_accuracy"] for x in summary["rounds"]]


def test_round_1_mask_is_global_magnitude_of_trained_round_0(rewind0_run, tmp_path):
    workdir, _ = rewind0_run
    # Round 0 is exactly a dense run of the same length (same seed, batches and optimizer).
    dense = _config(flow="dense")
    training.train_and_evaluate(dense, tmp_path)
    trained = _kernels(_restore(tmp_path)["params"])
    masks = _kernels(_masks(_restore(workdir, STEPS)))
    n_keep = 212960
    magnitudes = np.concatenate([np.abs(trained[k]).ravel() for k in sorted(trained)])
    threshold = np.sort(magnitudes)[::-1][n_keep - 1]
    assert np.sum(magnitudes >= threshold) == n_keep  # no ties at the threshold
    for name, mask in masks.items():
        np.testing.assert_array_equal(mask, np.abs(trained[name]) >= threshold)


def test_nested_masks_against_numpy_oracle():
    rng = np.random.default_rng(0)
    params = {"a": {"kernel": rng.normal(size=(6, 5))}, "b": {"kernel": rng.normal(size=(5, 4))}}
    previous = {k: {"kernel": rng.random(v["kernel"].shape) < 0.6} for k, v in params.items()}
    # A pruned weight with the largest magnitude must stay pruned.
    params["a"]["kernel"][~previous["a"]["kernel"]] = 100.0
    pruning = default.get_config().pruning
    kept_before = sum(int(v["kernel"].sum()) for v in previous.values())
    sparsity = 0.5
    masks = prune.nested_masks(pruning, params, previous, sparsity, key=jax.random.PRNGKey(0))
    n_keep = math.floor((1 - sparsity) * 50 + 0.5)
    assert n_keep <= kept_before
    flat = np.concatenate(
        [np.where(previous[k]["kernel"], np.abs(params[k]["kernel"]), -1).ravel() for k in "ab"]
    )
    threshold = np.sort(flat)[::-1][n_keep - 1]
    got = np.concatenate([masks[k]["kernel"].ravel() for k in "ab"])
    np.testing.assert_array_equal(got, flat >= threshold)
    assert got.sum() == n_keep
    for k in "ab":
        assert not np.any(masks[k]["kernel"] & ~previous[k]["kernel"])


def test_rewind_to_step_k_restores_saved_weights(rewind4_run):
    workdir, summary = rewind4_run
    at_k = _kernels(_restore(workdir, 4)["params"])  # periodic checkpoint of round 0 at step 4
    # The rewind weights are one more item ('carry') of every later Orbax checkpoint.
    manager = ocp.CheckpointManager(workdir / "checkpoints", item_names=("carry",))
    carry = manager.restore(STEPS, args=ocp.args.Composite(carry=ocp.args.StandardRestore()))
    manager.close()
    saved = carry["carry"]["rewind"]["params"]
    state = jax.device_get(_restore(workdir, 4)["params"])
    jax.tree.map(np.testing.assert_array_equal, state, jax.device_get(saved))
    assert not (workdir / "rewind").exists()  # no second format beside Orbax
    start = _restore(workdir, STEPS)
    masks, params = _kernels(_masks(start)), _kernels(start["params"])
    initial = _kernels(_initial_params())
    for name, mask in masks.items():
        np.testing.assert_array_equal(params[name], np.where(mask, at_k[name], 0.0))
        assert not np.array_equal(at_k[name], initial[name])  # really rewound to step 4
    assert summary["rounds"][1]["kept"] == 212960


@pytest.mark.parametrize(
    "overrides, stop",
    [
        ({}, 18),  # killed mid round 1: resumes from its checkpoint at 16 (masks included)
        # killed in round 0 after the rewind point: round 1 rewinds to the saved step-4 weights
        ({"pruning.iterative.rewind_step": 4, "pruning.iterative.rounds": 1}, 10),
    ],
)
def test_killed_run_resumes_mid_round_identically(overrides, stop, request, tmp_path):
    fixture = "rewind4_run" if overrides else "rewind0_run"
    clean_dir, clean_summary = request.getfixturevalue(fixture)
    config = _config(**overrides, **{"debug.stop_at_step": stop})
    assert training.train_and_evaluate(config, tmp_path).stopped_at_step == stop
    config.debug.stop_at_step = 0
    summary = training.train_and_evaluate(config, tmp_path).summary
    clean, resumed = _restore(clean_dir), _restore(tmp_path)
    for field in ("params", "opt_state", "step"):  # the masks are in opt_state
        jax.tree.map(np.testing.assert_array_equal, clean[field], resumed[field])
    assert (tmp_path / "metrics.jsonl").read_text() == (clean_dir / "metrics.jsonl").read_text()
    assert summary["rounds"] == clean_summary["rounds"]


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("rate", 0.0, r"pruning\.iterative\.rate must be in \(0, 1\), got 0.0"),
        ("rate", 1.0, r"pruning\.iterative\.rate must be in \(0, 1\), got 1.0"),
        ("rounds", 0, r"pruning\.iterative\.rounds must be in \[1, inf\], got 0"),
        (
            "rewind_step",
            12,
            r"pruning\.iterative\.rewind_step must be < training\.steps \(12, .*got 12",
        ),
        ("rewind_step", -1, r"pruning\.iterative\.rewind_step must be in \[0, inf\], got -1"),
    ],
)
def test_bad_iterative_fields_are_rejected(field, value, message):
    config = _config()
    config.pruning.iterative[field] = value
    with pytest.raises(ValueError, match=message):
        config_check.validate_config(config)


def test_effective_target_is_rejected_and_rounds_are_phases():
    config = _config(**{"pruning.target": "effective"})
    with pytest.raises(ValueError, match=r"flow='iterative'"):
        config_check.validate_config(config)
    phases = flows.get("iterative").phases(_config(), steps_per_epoch=100)
    assert [(p.name, p.start, p.end, p.prune_first) for p in phases] == [
        ("round_0", 0, 12, False),
        ("round_1", 12, 24, True),
        ("round_2", 24, 36, True),
    ]
    epochs = _config(**{"training.steps": 0, "training.epochs": 0.05})
    epochs.pruning.iterative.rewind_step = 5
    with pytest.raises(
        ValueError, match=r"rewind_step must be < the length of round 0 \(5 steps\)"
    ):
        flows.get("iterative").phases(epochs, steps_per_epoch=100)
