"""End-to-end and unit tests of jaxprune.training (train state, steps, loop, checkpoints)."""

import gc
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib.image
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

import jaxprune as jp
from configs import lenet300_mnist_gmp
from jaxprune import data, models, training
from jaxprune.training import checkpoint, flows, run_config, sharding, steps
from jaxprune.training import state as state_lib

REPO = Path(__file__).resolve().parents[1]
N_PRUNABLE = 784 * 300 + 300 * 100 + 100 * 10  # LeNet-300-100 kernels: 266,200


def _smoke_config(**overrides):
    config = lenet300_mnist_gmp.get_config("smoke")
    config.training.keep_checkpoints = 10
    for dotted, value in overrides.items():
        block, field = dotted.split(".")
        config[block][field] = value
    return config


def _restore(workdir: Path, step: int | None = None):
    manager = ocp.CheckpointManager(workdir / "checkpoints", item_names=("state", "meta"))
    step = manager.latest_step() if step is None else step
    restored = manager.restore(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()),
    )
    manager.close()
    return restored["state"], restored["meta"]


def _masks(state):
    """The masks of a restored raw state: the ``jp.masked`` part of its optimizer state."""
    opt_state = state["opt_state"]
    return opt_state["masks"] if isinstance(opt_state, dict) else opt_state[1]


def _kernels(tree):
    return {
        "/".join(str(k.key) for k in path): np.asarray(leaf)
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
        if np.ndim(leaf) >= 2
    }


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("smoke")
    config = _smoke_config(**{"training.plots": True})  # smoke configs draw no figures
    summary = training.train_and_evaluate(config, workdir).summary
    return workdir, summary


def test_smoke_run_prunes_exactly_and_keeps_pruned_weights_zero(smoke_run):
    workdir, summary = smoke_run
    n_keep = round(0.02 * N_PRUNABLE)  # 5324
    assert summary["sparsity"]["kept"] == n_keep
    assert summary["sparsity"]["total"] == N_PRUNABLE
    assert summary["steps"] == 100

    pruned_state, pruned_meta = _restore(workdir, 60)  # the state right after pruning
    final_state, final_meta = _restore(workdir, 100)
    assert (pruned_meta["phase"], final_meta["phase"]) == ("finetune", "finetune")
    masks0, masks1 = _kernels(_masks(pruned_state)), _kernels(_masks(final_state))
    params0, params1 = _kernels(pruned_state["params"]), _kernels(final_state["params"])
    assert sum(int(m.sum()) for m in masks0.values()) == n_keep
    floor = round(0.002 * N_PRUNABLE)  # MT: each layer keeps >= 0.2% of all weights
    for name, mask in masks0.items():
        assert int(mask.sum()) >= floor, name
        np.testing.assert_array_equal(mask, masks1[name])  # fine-tuning keeps the mask
        assert np.all(params0[name][~mask] == 0)
        assert np.all(params1[name][~mask] == 0)
        assert np.count_nonzero(params1[name]) == int(mask.sum())  # kept weights trained
        assert not np.array_equal(params0[name][mask], params1[name][mask])
    per_layer = summary["sparsity"]["layers"]
    assert {k: v["kept"] for k, v in per_layer.items()} == {
        k: int(m.sum()) for k, m in masks1.items()
    }


def test_smoke_run_accuracy_and_outputs(smoke_run):
    workdir, summary = smoke_run
    phases = summary["phases"]
    assert list(phases) == ["dense", "pruned", "finetune"]
    assert phases["dense"]["test_accuracy"] > 0.75  # chance is 0.1
    assert summary["test_accuracy"] == phases["finetune"]["test_accuracy"] > 0.3
    assert summary["test_accuracy"] > phases["pruned"]["test_accuracy"] - 0.05

    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in records if "train_loss" in r]
    assert train_steps == list(range(10, 101, 10))
    evals = [(r["step"], r["phase"]) for r in records if "test_accuracy" in r]
    assert evals == [(60, "dense"), (60, "pruned"), (100, "finetune")]
    assert json.loads((workdir / "summary.json").read_text()) == json.loads(json.dumps(summary))
    stored_config = json.loads((workdir / "config.json").read_text())
    assert stored_config["pruning"]["sparsity"] == 0.98
    assert stored_config["model"]["name"] == "lenet300"
    assert matplotlib.image.imread(workdir / "plots" / "learning_curve.png").shape == (400, 1100, 4)
    assert matplotlib.image.imread(workdir / "plots" / "layer_sparsity.png").shape[:2] == (400, 600)


def _lenet300_effective(masks):
    linear = models.get_model("lenet300", 10, width=1.0).clone(linear=True)
    params = jax.tree.map(lambda m: np.zeros(np.shape(m), np.float32), masks)
    return jp.effective_mask(
        lambda p, x: linear.apply({"params": p}, x), params, masks, jnp.zeros((1, 28, 28, 1))
    )


def test_smoke_run_logs_effective_sparsity(smoke_run):
    workdir, summary = smoke_run
    final_state, _ = _restore(workdir, 100)
    masks = jax.tree.map(lambda m: np.asarray(m, bool), _masks(final_state))
    effective = _kernels(_lenet300_effective(masks))
    direct = _kernels(masks)
    eff_kept = sum(int(m.sum()) for m in effective.values())
    assert eff_kept <= sum(int(m.sum()) for m in direct.values())
    report = summary["sparsity"]
    assert report["effective_kept"] == eff_kept
    assert report["effective_sparsity"] == pytest.approx(1 - eff_kept / N_PRUNABLE, abs=1e-12)
    assert report["effective_sparsity"] >= report["sparsity"]
    assert report["effective_compression"] == pytest.approx(N_PRUNABLE / eff_kept)
    for name, row in report["layers"].items():
        assert row["effective_kept"] == int(effective[name].sum()), name
        assert row["effective_sparsity"] >= row["sparsity"], name

    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    (pruned,) = [r for r in records if r["phase"] == "pruned"]
    assert pruned["step"] == 60 and "test_accuracy" in pruned
    assert pruned["effective_kept"] == eff_kept  # fine-tuning keeps the mask
    assert pruned["layers"] == report["layers"]
    image = matplotlib.image.imread(workdir / "plots" / "effective_sparsity.png")
    assert image.shape[:2] == (400, 600)


def test_effective_target_prune_at_init_stays_at_or_below_target(tmp_path):
    config = _smoke_config(
        **{
            "training.steps": 4,
            "pruning.score": "random",
            "pruning.selection": "layerwise",
            "pruning.quota": "uniform",
            "pruning.sparsity": 0.99,
            "pruning.min_keep_fraction": 0.0,
            "pruning.target": "effective",
        }
    )
    config.flow = "prune_at_init"
    summary = training.train_and_evaluate(config, tmp_path).summary
    report = summary["sparsity"]
    # Uniform random pruning disconnects weights, so the direct sparsity must be lower.
    assert report["sparsity"] < report["effective_sparsity"] <= 0.99
    assert report["effective_sparsity"] > 0.99 - 1e-3
    state, _ = _restore(tmp_path, 0)
    masks = jax.tree.map(lambda m: np.asarray(m, bool), _masks(state))
    eff_kept = sum(int(m.sum()) for m in _kernels(_lenet300_effective(masks)).values())
    assert eff_kept == report["effective_kept"] >= round(0.01 * N_PRUNABLE)


def test_effective_target_is_validated():
    with pytest.raises(ValueError, match="pruning.target"):
        training.train_and_evaluate(_smoke_config(**{"pruning.target": "both"}), "/nonexistent")
    with pytest.raises(ValueError, match="pruning.target='effective'"):
        config = _smoke_config(**{"pruning.target": "effective"})
        config.flow = "gradual"
        training.train_and_evaluate(config, "/nonexistent")


def test_resume_after_interruption_gives_identical_run(smoke_run, tmp_path):
    clean_dir, clean_summary = smoke_run
    stopped = training.train_and_evaluate(_smoke_config(**{"debug.stop_at_step": 70}), tmp_path)
    assert stopped.stopped_at_step == 70 and stopped.summary is None
    assert _restore(tmp_path)[0]["step"] == 60  # killed after step 70, last checkpoint at 60
    resumed_summary = training.train_and_evaluate(_smoke_config(), tmp_path).summary

    clean_state, _ = _restore(clean_dir)
    resumed_state, _ = _restore(tmp_path)
    for field in ("params", "opt_state", "batch_stats", "step", "rng"):  # masks: in opt_state
        jax.tree.map(np.testing.assert_array_equal, clean_state[field], resumed_state[field])
    assert (tmp_path / "metrics.jsonl").read_text() == (clean_dir / "metrics.jsonl").read_text()
    assert resumed_summary["phases"] == clean_summary["phases"]
    assert resumed_summary["sparsity"] == clean_summary["sparsity"]


def test_rerun_refuses_a_different_config(smoke_run):
    workdir, _ = smoke_run
    with pytest.raises(ValueError, match=r"pruning\.sparsity: 0\.98 -> 0\.9\b"):
        training.train_and_evaluate(_smoke_config(**{"pruning.sparsity": 0.9}), workdir)
    with pytest.raises(ValueError, match=r"training\.learning_rate"):
        training.train_and_evaluate(_smoke_config(**{"training.learning_rate": 0.5}), workdir)


def test_checkpoint_of_another_config_is_refused(smoke_run, tmp_path):
    workdir, _ = smoke_run
    config = _smoke_config(**{"model.width": 0.5})
    os.symlink(workdir / "checkpoints", tmp_path / "checkpoints")
    with pytest.raises(ValueError, match=r"holds no jaxprune run .*contains checkpoints"):
        training.train_and_evaluate(config, tmp_path)  # checkpoints alone are not a run
    # Same checkpoints under a marker of this config, no config.json: the checkpoint still guards.
    config_hash = run_config.config_hash(run_config.config_to_dict(config))
    marker = {"run_id": "x", "config_hash": config_hash}
    (tmp_path / "jaxprune_run.json").write_text(json.dumps(marker))
    with pytest.raises(ValueError, match=r"checkpoint .*model\.width: 1\.0 -> 0\.5"):
        training.train_and_evaluate(config, tmp_path)


def test_checkpoint_with_other_shapes_is_refused(tmp_path):
    def make(shape):
        variables = {"params": {"Dense_0": {"kernel": jnp.ones(shape), "bias": jnp.zeros(4)}}}
        return state_lib.create_train_state(variables, optax.sgd(0.1), jax.random.PRNGKey(0))

    ckpt = checkpoint.Checkpointer(tmp_path)
    ckpt.save(5, make((3, 4)), {"phase": "dense", "phase_index": 0})
    ckpt.wait()
    abstract = jax.eval_shape(lambda: make((7, 4)))
    with pytest.raises(
        checkpoint.CheckpointError,
        match=r"params/Dense_0/kernel is float32\[3, 4\] .* float32\[7, 4\]",
    ):
        ckpt.restore_state(5, abstract)
    restored = ckpt.restore_state(5, jax.eval_shape(lambda: make((3, 4))))
    np.testing.assert_array_equal(restored.params["Dense_0"]["kernel"], np.ones((3, 4)))
    ckpt.close()


# Orbax leaves the failed reads' coroutines to the garbage collector; collect them here.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("damage", ["meta", "arrays", "state_metadata"])
def test_corrupt_checkpoint_is_an_error_not_a_restart(smoke_run, tmp_path, damage):
    import shutil

    workdir = tmp_path / "run"
    shutil.copytree(smoke_run[0], workdir)
    step_dir = workdir / "checkpoints" / "100"
    if damage == "meta":
        (step_dir / "meta" / "metadata").write_text("{not json")
    elif damage == "arrays":
        for f in (step_dir / "state" / "ocdbt.process_0" / "d").iterdir():
            f.write_bytes(b"garbage")
    else:
        (step_dir / "state" / "_METADATA").unlink()
    with pytest.raises(checkpoint.CheckpointError, match=r"checkpoints/100 .*(unreadable|corrupt)"):
        training.train_and_evaluate(_smoke_config(), workdir)
    gc.collect()


class _NaNAfter:
    """Dataset wrapper whose training images become NaN from a given step on."""

    def __init__(self, ds, step):
        self._ds, self._step = ds, step

    def __getattr__(self, name):
        return getattr(self._ds, name)

    def train_batches(self, batch_size, seed, start_step=0):
        for step, batch in enumerate(
            self._ds.train_batches(batch_size, seed, start_step), start_step
        ):
            if step >= self._step:
                batch = dict(batch, image=np.full_like(batch["image"], np.nan))
            yield batch


def test_nan_loss_stops_and_keeps_last_good_checkpoint(monkeypatch, tmp_path):
    real_get = data.get_dataset
    monkeypatch.setattr(data, "get_dataset", lambda *a, **k: _NaNAfter(real_get(*a, **k), 25))
    config = _smoke_config(**{"training.steps": 60})
    config.flow = "dense"
    with pytest.raises(FloatingPointError, match=r"step 30.*last good checkpoint \(step 20\)"):
        training.train_and_evaluate(config, tmp_path)
    state, _ = _restore(tmp_path)
    assert int(state["step"]) == 20
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state["params"]))


class _TinyNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(8)(x))
        return nn.Dense(3)(x)


def _tiny_setup(masks_seed=0):
    model = _TinyNet()
    x = jax.random.normal(jax.random.PRNGKey(1), (8, 2, 2, 1))
    batch = {"image": x, "label": jnp.arange(8, dtype=jnp.int32) % 3}
    variables = model.init(jax.random.PRNGKey(0), x)
    keys = iter(jax.random.split(jax.random.PRNGKey(masks_seed), 4))
    masks = jax.tree.map(
        lambda p: (
            jax.random.bernoulli(next(keys), 0.5, p.shape)
            if p.ndim >= 2
            else jnp.ones(p.shape, bool)
        ),
        variables["params"],
    )
    return model, variables, masks, batch


def test_train_step_masks_grads_updates_and_momentum_against_numpy():
    model, variables, masks, batch = _tiny_setup()
    lr, wd, momentum = 0.1, 0.01, 0.9
    tx = optax.chain(optax.add_decayed_weights(wd), optax.sgd(lr, momentum=momentum))
    state = state_lib.create_train_state(variables, tx, jax.random.PRNGKey(2), masks=masks)
    p0 = jax.tree.map(np.asarray, state.params)

    def loss_fn(params):
        logits = model.apply({"params": params}, batch["image"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()

    grads = jax.tree.map(np.asarray, jax.grad(loss_fn)(state.params))
    step = jax.jit(steps.train_step_fn(model.apply, tx), donate_argnums=0)
    state, _ = step(state, batch)
    state, metrics = step(state, batch)

    # Numpy oracle: two masked SGD-momentum steps with L2 decay, params re-masked.
    grads2 = jax.tree.map(
        np.asarray,
        jax.grad(loss_fn)(
            jax.tree.map(
                lambda p, g, m: np.where(m, p - lr * (g * m + wd * p), 0), p0, grads, masks
            )
        ),
    )
    for p, g, g2, m, new in zip(
        *map(jax.tree.leaves, (p0, grads, grads2, masks, state.params)), strict=True
    ):
        m = np.asarray(m)
        v1 = g * m + wd * p
        p1 = np.where(m, p - lr * v1, 0)
        v2 = momentum * v1 + (g2 * m + wd * p1)
        p2 = np.where(m, p1 - lr * v2, 0)
        np.testing.assert_allclose(new, p2, rtol=1e-5, atol=1e-6)
        assert np.all(np.asarray(new)[~m] == 0)
    trace = state.opt_state.inner_state[1][0].trace
    for t, m in zip(jax.tree.leaves(trace), jax.tree.leaves(masks), strict=True):
        assert np.all(np.asarray(t)[~np.asarray(m)] == 0)  # no momentum on pruned weights
    assert int(state.step) == 2 and np.isfinite(float(metrics["loss"]))


def test_changing_masks_never_recompiles():
    model, variables, masks, batch = _tiny_setup()
    tx = optax.adam(1e-2)
    traces = []

    def counted(state, batch):
        traces.append(1)
        return steps.train_step_fn(model.apply, tx)(state, batch)

    step = jax.jit(counted, donate_argnums=0)
    state = state_lib.create_train_state(variables, tx, jax.random.PRNGKey(0), masks=masks)
    for seed in range(4):
        new_masks = jax.tree.map(np.asarray, _tiny_setup(masks_seed=seed + 10)[2])
        state = state.replace(
            opt_state=jp.set_masks(state.opt_state, jax.tree.map(jnp.asarray, new_masks))
        )
        state, _ = step(state, batch)
        for p, m in zip(jax.tree.leaves(state.params), jax.tree.leaves(new_masks), strict=True):
            assert np.all(np.asarray(p)[~np.asarray(m)] == 0)
    assert len(traces) == 1


def test_eval_step_ignores_padding():
    model, variables, _, batch = _tiny_setup()
    state = state_lib.create_train_state(variables, optax.sgd(0.1), jax.random.PRNGKey(0))
    evaluate = jax.jit(steps.eval_step_fn(model.apply))
    weight = jnp.asarray([1, 1, 1, 1, 1, 0, 0, 0], jnp.float32)
    out = evaluate(state, dict(batch, weight=weight))
    logits = np.asarray(model.apply(variables, batch["image"]))[:5]
    labels = np.asarray(batch["label"])[:5]
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    np.testing.assert_allclose(out["loss_sum"], -logp[np.arange(5), labels].sum(), rtol=1e-5)
    assert float(out["correct"]) == float((logits.argmax(-1) == labels).sum())
    assert float(out["count"]) == 5.0


def test_plan_phases_per_flow():
    config = _smoke_config(**{"training.steps": 0, "training.epochs": 2.5, "finetune.steps": 7})
    phases = flows.get(config.flow).phases(config, steps_per_epoch=10)
    assert [(p.name, p.start, p.end, p.prune_first) for p in phases] == [
        ("dense", 0, 25, False),
        ("finetune", 25, 32, True),
    ]
    config.flow = "prune_at_init"
    phases = flows.get(config.flow).phases(config, 10)
    assert [(p.name, p.start, p.end, p.prune_first) for p in phases] == [("sparse", 0, 25, True)]
    config.flow = "dense"
    assert [(p.name, p.end) for p in flows.get(config.flow).phases(config, 10)] == [("dense", 25)]


def test_schedules():
    cosine = training.make_schedule("cosine", 0.1, 100)
    np.testing.assert_allclose([cosine(0), cosine(50), cosine(100)], [0.1, 0.05, 0.0], atol=1e-7)
    step = training.make_schedule("step", 0.1, 100)
    np.testing.assert_allclose([step(49), step(50), step(75)], [0.1, 0.01, 0.001], rtol=1e-6)
    warm = training.make_schedule("constant", 0.2, 100, warmup_steps=10)
    np.testing.assert_allclose([warm(0), warm(5), warm(10), warm(99)], [0, 0.1, 0.2, 0.2])
    with pytest.raises(ValueError, match="lr_schedule must be one of .* got 'linear'"):
        training.make_schedule("linear", 0.1, 100)


def test_batch_size_must_divide_device_count():
    mesh = sharding.make_mesh([jax.devices()[0]] * 1)
    sharding.check_batch_size(7, mesh)  # one device: anything goes
    with pytest.raises(ValueError, match=r"training.batch_size must be divisible .*\(4\), got 6"):
        sharding.check_batch_size(6, type("M", (), {"devices": np.zeros(4)})())


_SHARDED_SCRIPT = textwrap.dedent(
    """
    import json
    import jax, jax.numpy as jnp, numpy as np, optax
    import flax.linen as nn
    from jaxprune.training import sharding, steps, state as state_lib

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, train=False):
            x = nn.Conv(4, (3, 3))(x)
            x = nn.BatchNorm(use_running_average=not train)(x)
            return nn.Dense(3)(nn.relu(x).mean(axis=(1, 2)))

    model, tx = Net(), optax.sgd(0.1, momentum=0.9)
    x = jax.random.normal(jax.random.PRNGKey(1), (8, 4, 4, 2))
    batch = {"image": np.asarray(x), "label": np.arange(8, dtype=np.int32) % 3}
    variables = model.init(jax.random.PRNGKey(0), x)
    masks = jax.tree.map(lambda p: np.asarray(p) > 0 if p.ndim >= 2 else np.ones(p.shape, bool),
                         variables["params"])
    results = {}
    for n in (4, 1):
        mesh = sharding.make_mesh(jax.devices()[:n])
        step = sharding.jit_train_step(steps.train_step_fn(model.apply, tx), mesh)
        state = sharding.replicate(
            state_lib.create_train_state(variables, tx, jax.random.PRNGKey(2), masks=masks), mesh)
        for _ in range(3):
            state, metrics = step(state, sharding.shard_batch(batch, mesh))
        results[n] = state
    sharded, single = jax.device_get(results[4]), jax.device_get(results[1])
    kernel = results[4].params["Conv_0"]["kernel"]
    image = sharding.shard_batch(batch, sharding.make_mesh())["image"]
    diffs = [
        float(np.max(np.abs(a - b)))
        for a, b in zip(jax.tree.leaves(sharded), jax.tree.leaves(single))
        if a.dtype != bool
    ]
    print(json.dumps({
        "devices": len(jax.devices()),
        "batch_devices": len(image.sharding.device_set),
        "batch_shard_rows": image.addressable_shards[0].data.shape[0],
        "kernel_replicated": kernel.sharding.is_fully_replicated,
        "max_diff": max(diffs),
        "pruned_zero": bool(np.all(np.asarray(kernel)[~masks["Conv_0"]["kernel"]] == 0)),
    }))
    try:
        sharding.check_batch_size(6, sharding.make_mesh())
    except ValueError as e:
        print(json.dumps({"error": str(e)}))
    """
)


def test_data_parallel_step_on_4_fake_devices_matches_one_device():
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu"
    )
    out = subprocess.run(
        [sys.executable, "-c", _SHARDED_SCRIPT], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    result, error = lines
    assert result["devices"] == 4 and result["batch_devices"] == 4
    assert result["batch_shard_rows"] == 2  # 8 examples over 4 devices
    assert result["kernel_replicated"] is True
    assert result["max_diff"] < 1e-5
    assert result["pruned_zero"] is True
    assert error["error"] == (
        "training.batch_size must be divisible by the number of devices (4), got 6"
    )


def test_prune_at_init_resnet_layerwise_uniform(tmp_path):
    from configs import resnet20_cifar10_gmp

    config = resnet20_cifar10_gmp.get_config("smoke")
    config.flow = "prune_at_init"
    config.pruning.selection = "layerwise"
    config.pruning.quota = "uniform"
    config.pruning.sparsity = 0.8
    config.training.keep_checkpoints = 10
    summary = training.train_and_evaluate(config, tmp_path).summary

    assert list(summary["phases"]) == ["sparse"] and summary["steps"] == 12
    start_state, start_meta = _restore(tmp_path, 0)  # pruned initial weights, saved at once
    final_state, _ = _restore(tmp_path, 12)
    assert start_meta["phase"] == "sparse"
    masks0, masks1 = _kernels(_masks(start_state)), _kernels(_masks(final_state))
    params1 = _kernels(final_state["params"])
    assert len(masks0) >= 20  # 19 convs + the classifier (+ any projection shortcuts)
    for name, mask in masks0.items():
        assert abs(1 - mask.mean() - 0.8) <= 1 / mask.size, name  # uniform quota per layer
        np.testing.assert_array_equal(mask, masks1[name])
        assert np.all(params1[name][~mask] == 0)
    layers = summary["sparsity"]["layers"]
    assert sum(v["kept"] for v in layers.values()) == sum(int(m.sum()) for m in masks1.values())
    # BatchNorm running statistics were updated by training (they start at mean 0, var 1).
    means = [
        np.asarray(x)
        for p, x in jax.tree_util.tree_flatten_with_path(final_state["batch_stats"])[0]
        if p[-1].key == "mean"
    ]
    assert means and all(np.any(m != 0) for m in means)


def test_tfds_dataset_path_end_to_end(tmp_path):
    import tensorflow_datasets as tfds

    config = _smoke_config(**{"training.steps": 6, "training.batch_size": 4})
    config.flow = "dense"
    config.model.width = 0.25
    config.dataset.name = "cifar10"
    config.dataset.data_dir = str(tmp_path / "tfds")
    config.training.log_every = 3
    with tfds.testing.mock_data(num_examples=16, policy=tfds.testing.MockPolicy.USE_CODE):
        summary = training.train_and_evaluate(config, tmp_path / "run").summary
    assert summary["dataset"] == "cifar10" and summary["steps"] == 6
    assert summary["sparsity"]["total"] == 32 * 32 * 3 * 75 + 75 * 25 + 25 * 10
    assert summary["sparsity"]["kept"] == summary["sparsity"]["total"]
    records = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in records] == [3, 6, 6]


def test_prune_at_init_synflow_is_iterative_and_avoids_layer_collapse(tmp_path):
    """Single-round SynFlow at 98% empties LeNet-300-100's first layer; iterating does not."""
    config = lenet300_mnist_gmp.get_config("smoke")
    with config.unlocked():
        config.flow = "prune_at_init"
        config.pruning.score = "synflow"
        config.pruning.min_keep_fraction = 0.0
        config.pruning.synflow_rounds = 20
    summary = training.train_and_evaluate(config, str(tmp_path / "iterative")).summary
    layers = summary["sparsity"]["layers"]
    assert sum(row["kept"] for row in layers.values()) == jp.n_keep_for(0.98, 266200)
    assert all(row["kept"] > 0 for row in layers.values())
    with pytest.raises(ValueError, match="pruning.synflow_rounds must be"):
        with config.unlocked():
            config.pruning.synflow_rounds = 0
        training.train_and_evaluate(config, str(tmp_path / "bad"))
