"""Gradual pruning inside the jitted train step, and the 'gradual' experiment flow."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

import jaxprune as jp
from configs import lenet300_mnist_gradual
from jaxprune import training
from jaxprune.configs import default
from jaxprune.pruning import schedules
from jaxprune.training import config_check, prune, steps
from jaxprune.training import state as state_lib

N_PRUNABLE = 784 * 300 + 300 * 100 + 100 * 10  # LeNet-300-100 kernels


class _MLP(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(24)(x))
        x = nn.relu(nn.Dense(16)(x))
        return nn.Dense(3)(x)


def _pruning_block(**overrides) -> ml_collections.ConfigDict:
    pruning = default.get_config().pruning
    for key, value in overrides.items():
        pruning[key] = value
    return pruning


def _kernels(tree):
    return {k: np.asarray(v["kernel"]) for k, v in tree.items()}


def _run_gradual(tx, pruning, schedule, num_steps=13):
    """Runs the jitted gradual step on synthetic data; returns per-step snapshots and traces."""
    model = _MLP()
    x = jax.random.normal(jax.random.PRNGKey(1), (16, 4, 4, 2))
    batch = {"image": x, "label": jnp.arange(16, dtype=jnp.int32) % 3}
    variables = model.init(jax.random.key(0, impl="rbg"), x[:1])
    state = state_lib.create_train_state(variables, tx, jax.random.PRNGKey(2))
    mask_fn = prune.traced_mask_fn(pruning, schedule, state.params, num_steps=num_steps)
    traces = []

    def step_fn(state, batch):
        traces.append(1)
        return steps.gradual_train_step_fn(model.apply, tx, schedule, mask_fn)(state, batch)

    train_step = jax.jit(step_fn, donate_argnums=0)
    snapshots = []
    for _ in range(num_steps):
        t = int(state.step)
        state, metrics = train_step(state, batch)
        snapshots.append((t, jax.device_get(state), jax.device_get(metrics)))
    return snapshots, traces, train_step


def _momentum_leaves(opt_state, params):
    """Param-shaped subtrees of the optimizer state (SGD trace, Adam mu/nu)."""
    shapes = [p.shape for p in jax.tree.leaves(params)]
    structure = jax.tree.structure(params)
    found = []

    def visit(node):
        leaves, treedef = jax.tree.flatten(node)
        if treedef == structure and [np.shape(x) for x in leaves] == shapes:
            found.append(node)
            return True
        return False

    jax.tree.map(lambda x: x, opt_state, is_leaf=visit)
    return found


@pytest.mark.parametrize(
    "tx_name, tx",
    [("sgd_momentum", optax.sgd(0.1, momentum=0.9)), ("adam", optax.adam(1e-2))],
)
def test_global_gradual_follows_schedule_compiles_once_and_zeroes_momentum(tx_name, tx):
    schedule = schedules.polynomial(0.0, 0.9, begin_step=2, end_step=10, frequency=4)
    snapshots, traces, train_step = _run_gradual(tx, _pruning_block(), schedule)
    total = 32 * 24 + 24 * 16 + 16 * 3
    assert len(traces) == 1 and train_step._cache_size() == 1

    updates = [t for t, _, m in snapshots if m["mask_updated"] == 1.0]
    assert updates == [2, 6, 10]
    previous_kernels = None
    for t, state, metrics in snapshots:
        masks, params = _kernels(state.masks), _kernels(state.params)
        kept = sum(int(m.sum()) for m in masks.values())
        expected_sparsity = schedule.sparsity_at(max(u for u in [0, *updates] if u <= t))
        assert kept == jp.n_keep_for(expected_sparsity, total), t
        assert float(metrics["target_sparsity"]) == pytest.approx(schedule.sparsity_at(t), abs=1e-6)
        # Biases are not prunable: all kept.
        assert int(metrics["kept"]) == kept + 24 + 16 + 3
        for name, mask in masks.items():
            assert np.all(params[name][~mask] == 0), (t, name)
        trees = _momentum_leaves(state.opt_state.inner_state, state.params)
        assert len(trees) == (2 if tx_name == "adam" else 1)
        for tree in trees:
            for name, values in _kernels(tree).items():
                assert np.all(values[~masks[name]] == 0), (t, name)
        if t in updates and previous_kernels is not None:
            # The new mask keeps the top-|w| entries of the weights it was computed from.
            scores = np.concatenate([np.abs(w).ravel() for w in previous_kernels.values()])
            kept_scores = np.concatenate([np.abs(previous_kernels[n])[masks[n]] for n in masks])
            assert kept_scores.min() >= np.sort(scores)[::-1][kept - 1]
        previous_kernels = params
    # Momentum was alive before pruning, so zeroing it was needed (not vacuous).
    dense_state = snapshots[1][1]
    assert any(
        np.any(v != 0)
        for tree in _momentum_leaves(dense_state.opt_state, dense_state.params)
        for v in _kernels(tree).values()
    )
    final_kept = sum(int(m.sum()) for m in _kernels(snapshots[-1][1].masks).values())
    assert final_kept == jp.n_keep_for(0.9, total)


@pytest.mark.parametrize("quota", ["uniform", "erk"])
def test_layerwise_gradual_prunes_every_layer_to_its_quota(quota):
    schedule = schedules.polynomial(0.2, 0.75, begin_step=0, end_step=6, frequency=3, power=1)
    pruning = _pruning_block(selection="layerwise", quota=quota)
    snapshots, traces, _ = _run_gradual(optax.sgd(0.1, momentum=0.9), pruning, schedule, 8)
    assert len(traces) == 1
    sizes = {"Dense_0": 32 * 24, "Dense_1": 24 * 16, "Dense_2": 16 * 3}
    shapes = {"Dense_0": (32, 24), "Dense_1": (24, 16), "Dense_2": (16, 3)}
    params = {n: {"kernel": np.zeros(shapes[n]), "bias": np.zeros(shapes[n][1])} for n in sizes}
    for t, state, _ in snapshots:
        sparsity = schedule.sparsity_at(t - t % 3 if t <= 6 else 6)
        if quota == "uniform":
            per_layer = {f"{n}/kernel": sparsity for n in sizes}
        else:
            per_layer = jp.quotas.get(quota)(params, sparsity)
            assert len({round(v, 6) for v in per_layer.values()}) > 1  # really non-uniform
        for name, mask in _kernels(state.masks).items():
            expected = jp.n_keep_for(per_layer[f"{name}/kernel"], sizes[name])
            assert int(mask.sum()) == expected, (t, name)


def test_mask_opt_state_masks_only_param_shaped_subtrees():
    params = {"a": jnp.ones((2, 3)), "b": jnp.ones((3,))}
    masks = {"a": jnp.array([[True, False, True], [False, True, True]]), "b": jnp.ones(3, bool)}
    tx = optax.chain(optax.add_decayed_weights(1e-4), optax.adam(1e-3))
    opt_state = tx.init(params)
    opt_state = jax.tree.map(lambda x: x + 5 if x.dtype == jnp.float32 else x + 7, opt_state)
    out = steps.mask_opt_state(opt_state, masks)
    adam = out[1][0]
    for moment in (adam.mu, adam.nu):
        np.testing.assert_array_equal(moment["a"], np.where(masks["a"], 5.0, 0.0))
        np.testing.assert_array_equal(moment["b"], [5.0, 5.0, 5.0])
    assert int(adam.count) == 7  # counters untouched


def _restore_latest(workdir):
    manager = ocp.CheckpointManager(workdir / "checkpoints", item_names=("state", "meta"))
    restored = manager.restore(
        manager.latest_step(),
        args=ocp.args.Composite(state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()),
    )
    manager.close()
    return restored["state"]


@pytest.fixture(scope="module")
def gradual_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("gradual")
    config = lenet300_mnist_gradual.get_config("smoke")
    config_check.validate_config(config)
    return workdir, training.train_and_evaluate(config, workdir).summary


def test_gradual_flow_end_to_end_logs_target_and_achieved_sparsity(gradual_run):
    tmp_path, summary = gradual_run
    config = lenet300_mnist_gradual.get_config("smoke")
    schedule = prune.make_schedule(config.pruning.schedule)

    assert summary["flow"] == "gradual" and summary["steps"] == 60
    assert summary["target_sparsity"] == 0.98
    assert summary["sparsity"]["kept"] == jp.n_keep_for(0.98, N_PRUNABLE) == 5324
    records = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    updates = [r for r in records if "achieved_sparsity" in r]
    assert [r["step"] for r in updates] == [11, 21, 31, 41]  # updates in steps 10, 20, 30, 40
    for record in updates:
        target = schedule.sparsity_at(record["step"] - 1)
        assert record["target_sparsity"] == target
        assert record["kept"] == jp.n_keep_for(target, N_PRUNABLE)
        assert record["achieved_sparsity"] == pytest.approx(1 - record["kept"] / N_PRUNABLE)
    # MT: every layer keeps at least 0.2% of all prunable weights at the end.
    layers = summary["sparsity"]["layers"]
    assert min(v["kept"] for v in layers.values()) >= round(0.002 * N_PRUNABLE)


def test_gradual_run_resumes_mid_window_identically(gradual_run, tmp_path):
    clean_dir, clean_summary = gradual_run
    config = lenet300_mnist_gradual.get_config("smoke")
    config.debug.stop_at_step = 25  # killed after step 25; last checkpoint at 20, before update 20
    assert training.train_and_evaluate(config, tmp_path).stopped_at_step == 25
    config.debug.stop_at_step = 0
    training.train_and_evaluate(config, tmp_path)
    clean, resumed = _restore_latest(clean_dir), _restore_latest(tmp_path)
    for field in ("params", "opt_state", "step"):  # the masks are in opt_state
        jax.tree.map(np.testing.assert_array_equal, clean[field], resumed[field])
    assert (tmp_path / "metrics.jsonl").read_text() == (clean_dir / "metrics.jsonl").read_text()


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("type", "cubic", r"pruning\.schedule\.type must be one of .* got 'cubic'"),
        ("end_step", 5, r"pruning\.schedule\.end_step must be >= begin_step \(10\), got 5"),
        ("frequency", 0, r"pruning\.schedule\.frequency must be >= 1, got 0"),
        ("final_sparsity", 1.2, r"pruning\.schedule\.final_sparsity must be in \[0, 1\], got 1.2"),
        ("power", 0.0, r"pruning\.schedule\.power must be in \(0, inf\], got 0.0"),
    ],
)
def test_bad_schedule_fields_are_rejected(field, value, message):
    config = lenet300_mnist_gradual.get_config("smoke")
    config.pruning.schedule[field] = value
    with pytest.raises(ValueError, match=message):
        config_check.validate_config(config)


def test_schedule_types_from_config():
    block = default.get_config().pruning.schedule
    block.type = "one_shot"
    block.begin_step, block.final_sparsity = 7, 0.5
    once = prune.make_schedule(block)
    assert [t for t in range(50) if once.should_update(t)] == [7] and once.sparsity_at(0) == 0.5
    block.type, block.end_step, block.frequency = "constant", 30, 10
    const = prune.make_schedule(block)
    assert [t for t in range(50) if const.should_update(t)] == [7, 17, 27]


def test_layerwise_gradual_on_a_batchnorm_model_meets_every_layer_quota(tmp_path, monkeypatch):
    # The layer order and the precheck apply the model in eval mode: with BatchNorm that needs
    # its statistics (the run failed with ScopeCollectionNotFound 'batch_stats' before).
    # Those statistics are fetched before the precheck traces the score, not inside the trace:
    # a device_get of tracers re-traced the init and built JAX's long error text for every
    # leaf (16 s of a MobileNet smoke run).
    device_get = jax.device_get

    def host_only(tree):
        assert not any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(tree))
        return device_get(tree)

    monkeypatch.setattr(jax, "device_get", host_only)
    config = lenet300_mnist_gradual.get_config("smoke")
    config.model.name = "resnet8"
    config.model.width = 0.5
    config.dataset.name = "synthetic"
    config.dataset.shape_like = "cifar10"
    config.dataset.num_train, config.dataset.num_test = 256, 64
    config.training.batch_size = 32
    config.pruning.selection = "layerwise"
    config.pruning.quota = "uniform"
    config.pruning.min_keep_fraction = 0.0
    summary = training.train_and_evaluate(config, tmp_path).summary
    layers = summary["sparsity"]["layers"]
    assert len(layers) == 10  # ResNet-8: stem, 3 blocks x 2 convs, 2 projections, classifier
    for name, layer in layers.items():
        assert layer["kept"] == jp.n_keep_for(0.98, layer["total"]), name
