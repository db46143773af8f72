"""Tests for jaxprune.training.evaluation: on-device sums, exact means, limit, cache, any model."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxprune.data as jd
from jaxprune import models
from jaxprune.training import evaluation, sharding, steps
from jaxprune.training import state as state_lib

NUM_TEST = 100


class Linear(nn.Module):
    """Logits = flatten(x) @ W + b; no ``train`` argument."""

    @nn.compact
    def __call__(self, x):
        return nn.Dense(10)(x.reshape(x.shape[0], -1))


class LinearWithTrain(nn.Module):
    """Same, with a ``train`` flag that must be False in evaluation."""

    @nn.compact
    def __call__(self, x, train: bool = True):
        if train:
            raise AssertionError("evaluation must call the model with train=False")
        return nn.Dense(10)(x.reshape(x.shape[0], -1))


class Counting:
    """A dataset wrapper that counts ``eval_batches`` calls."""

    def __init__(self, ds):
        self.ds = ds
        self.calls = 0
        self.input_shape = ds.input_shape

    def split_size(self, split):
        return self.ds.split_size(split)

    def eval_batches(self, batch_size, split="test"):
        self.calls += 1
        return self.ds.eval_batches(batch_size, split=split)


@pytest.fixture(scope="module")
def ds():
    return jd.get_dataset("synthetic", shape_like="mnist", num_train=256, num_test=NUM_TEST)


@pytest.fixture(scope="module")
def mesh():
    return sharding.make_mesh()


def _variables(module, ds, seed=0):
    kwargs = {"train": False} if isinstance(module, LinearWithTrain) else {}
    return module.init(jax.random.PRNGKey(seed), jnp.zeros((1, *ds.input_shape)), **kwargs)


def _numpy_means(variables, ds, count=None):
    """Hand computation in float64: softmax cross-entropy and accuracy of the linear model."""
    images, labels = ds.arrays("test")
    images, labels = images[:count], labels[:count]
    x = jd.augment.normalize(images, ds.mean, ds.std).reshape(len(labels), -1).astype(np.float64)
    dense = variables["params"]["Dense_0"]
    logits = x @ np.asarray(dense["kernel"], np.float64) + np.asarray(dense["bias"], np.float64)
    logits -= logits.max(1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    loss = -log_probs[np.arange(len(labels)), labels].mean()
    accuracy = (logits.argmax(1) == labels).mean()
    return {"test_loss": loss, "test_accuracy": accuracy}


def _per_batch_reference(eval_step, state, dataset, batch_size, mesh, limit=0):
    """The loop evaluation replaced (fetch and add each batch's sums in turn)."""
    limit = limit or None
    loss_sum = correct = count = 0.0
    seen = 0
    for batch in dataset.eval_batches(batch_size, split="test"):
        if limit is not None:
            if seen >= limit:
                break
            keep = np.arange(seen, seen + batch_size) < limit
            batch = dict(batch, weight=batch["weight"] * keep)
        seen += batch_size
        out = jax.device_get(eval_step(state, sharding.shard_batch(batch, mesh)))
        loss_sum += float(out["loss_sum"])
        correct += float(out["correct"])
        count += float(out["count"])
    return {"test_loss": loss_sum / count, "test_accuracy": correct / count}


def _train_state(module, ds, mesh, seed=0):
    variables = _variables(module, ds, seed)
    state = state_lib.create_train_state(variables, optax.sgd(0.1), jax.random.PRNGKey(0))
    return sharding.replicate(state, mesh), variables


@pytest.mark.parametrize("batch_size, limit", [(32, 0), (32, 50), (16, 64), (64, 1000), (24, 0)])
def test_evaluate_equals_the_per_batch_loop_exactly(ds, mesh, batch_size, limit):
    evaluation.clear_cache()
    model = models.get_model("lenet300", ds.num_classes)
    state, _ = _train_state(model, ds, mesh)
    eval_step = sharding.jit_eval_step(steps.eval_step_fn(model.apply), mesh)
    got = evaluation.evaluate(eval_step, state, ds, batch_size, mesh, limit=limit)
    want = _per_batch_reference(eval_step, state, ds, batch_size, mesh, limit=limit)
    assert got == want  # bit for bit: same sums, same float64 order
    again = evaluation.evaluate(eval_step, state, ds, batch_size, mesh, limit=limit)
    assert again == want  # from the device-resident copy


def test_evaluate_matches_a_numpy_computation(ds, mesh):
    state, variables = _train_state(LinearWithTrain(), ds, mesh, seed=3)
    eval_step = sharding.jit_eval_step(steps.eval_step_fn(LinearWithTrain().apply), mesh)
    for limit, count in [(0, NUM_TEST), (37, 37)]:
        got = evaluation.evaluate(eval_step, state, ds, 16, mesh, limit=limit)
        want = _numpy_means(jax.device_get(variables), ds, count)
        assert got.keys() == {"test_loss", "test_accuracy"}
        assert got["test_accuracy"] == pytest.approx(want["test_accuracy"], abs=1e-12)
        assert got["test_loss"] == pytest.approx(want["test_loss"], rel=1e-5)


def test_split_is_placed_on_device_once_and_streamed_when_large(ds, mesh, monkeypatch):
    evaluation.clear_cache()
    state, _ = _train_state(LinearWithTrain(), ds, mesh)
    eval_step = sharding.jit_eval_step(steps.eval_step_fn(LinearWithTrain().apply), mesh)
    counting = Counting(ds)
    first = evaluation.evaluate(eval_step, state, counting, 32, mesh)
    second = evaluation.evaluate(eval_step, state, counting, 32, mesh)
    assert first == second and counting.calls == 1
    evaluation.evaluate(eval_step, state, counting, 16, mesh)  # another batch size: new copy
    assert counting.calls == 2
    evaluation.clear_cache()
    monkeypatch.setattr(evaluation, "DEVICE_CACHE_BYTES", 0)  # too large: streamed every time
    streamed = [evaluation.evaluate(eval_step, state, counting, 32, mesh) for _ in range(2)]
    assert streamed == [first, first] and counting.calls == 4


def test_evaluate_params_any_model(ds, mesh):
    variables = _variables(Linear(), ds, seed=1)
    want = _numpy_means(jax.device_get(variables), ds)
    for apply_fn in (
        Linear().apply,  # Linen, no train argument
        LinearWithTrain().apply,  # Linen with train: called with train=False
        lambda v, x: Linear().apply(v, x),  # a plain function
        lambda v, x, train: LinearWithTrain().apply(v, x, train=train),
        lambda v, x, **kw: Linear().apply(v, x, **kw),  # **kwargs that reject train
    ):
        got = evaluation.evaluate_params(apply_fn, variables, ds, batch_size=32)
        assert got["test_accuracy"] == pytest.approx(want["test_accuracy"], abs=1e-12)
        assert got["test_loss"] == pytest.approx(want["test_loss"], rel=1e-5)


def test_evaluate_params_equals_the_run_evaluation(ds, mesh):
    model = models.get_model("lenet300", ds.num_classes)
    state, variables = _train_state(model, ds, mesh)
    eval_step = sharding.jit_eval_step(steps.eval_step_fn(model.apply), mesh)
    run = evaluation.evaluate(eval_step, state, ds, 40, mesh)
    params = evaluation.evaluate_params(model.apply, variables, ds, batch_size=40, mesh=mesh)
    assert params == run
    train = evaluation.evaluate_params(model.apply, variables, ds, batch_size=32, split="train")
    assert 0.0 <= train["test_accuracy"] <= 1.0


def test_evaluate_params_rejects_a_batch_size_that_does_not_split(ds):
    mesh = sharding.make_mesh()
    if mesh.devices.size == 1:
        pytest.skip("needs several devices")
    with pytest.raises(ValueError, match="batch_size"):
        evaluation.evaluate_params(Linear().apply, {}, ds, batch_size=mesh.devices.size + 1)


def test_batch_put_feeds_numpy_batches_on_cpu(ds, mesh):
    put = sharding.batch_put(mesh)
    if any(d.platform != "cpu" for d in mesh.devices.flat):
        assert put is not None
        return
    assert put is None  # the jitted step places numpy batches itself
    model = models.get_model("lenet300", ds.num_classes)
    state, _ = _train_state(model, ds, mesh)
    eval_step = sharding.jit_eval_step(steps.eval_step_fn(model.apply), mesh)
    batch = next(ds.eval_batches(32))
    direct = jax.device_get(eval_step(state, batch))
    placed = jax.device_get(eval_step(state, sharding.shard_batch(batch, mesh)))
    assert direct == placed
