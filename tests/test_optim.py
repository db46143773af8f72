"""The phase optimizer: schedule numbers as state, bit-identical to optax's baked-in form."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from configs import lenet300_mnist_gmp
from jaxprune import models, training
from jaxprune.training import context, optim, steps
from jaxprune.training import state as state_lib


def _grads():
    """Gradients with values across many binades (positive, negative, zero, tiny)."""
    rng = np.random.default_rng(0)
    g = rng.standard_normal(64).astype(np.float32) * np.float32(10.0) ** rng.integers(-30, 30, 64)
    g[:3] = [0.0, -0.0, 1e-40]
    return {"w": jnp.asarray(g)}


def _updates_at(tx, state_at, counts):
    """Updates of ``tx`` at each step count, each computed by a scalar step in one program."""
    grads = _grads()

    @jax.jit
    def run(counts):
        return jax.lax.map(lambda c: tx.update(grads, state_at(c))[0]["w"], counts)

    return np.asarray(run(jnp.asarray(counts, jnp.int32)))


def _counts(total: int) -> list[int]:
    """Every step of a short phase; else the ends and 200 steps spread over the phase."""
    if total <= 300:
        return list(range(total + 3))
    near = [0, 1, 2, total - 2, total - 1, total, total + 1, total + 7]
    return sorted({*near, *np.linspace(0, total, 200).astype(int).tolist()})


@settings(max_examples=20, deadline=None)
@given(
    name=st.sampled_from(["cosine", "constant"]),
    total=st.integers(1, 2_000_000),
    lr=st.floats(1e-6, 10.0, allow_nan=False, allow_infinity=False),
)
@example(name="cosine", total=936, lr=1e-3)  # the README run: fl(pi / T) would be off here
@example(name="cosine", total=1, lr=0.1)
def test_phase_lr_updates_are_bit_identical_to_optax_schedules(name, total, lr):
    """Oracle: optax.scale_by_learning_rate(make_schedule(...)), its constants folded by XLA."""
    baked = optax.scale_by_learning_rate(optim.make_schedule(name, lr, total))
    ours = optim.scale_by_phase_lr(name, lr, total)
    ours_state = ours.init({})
    assert isinstance(ours_state, optim.PhaseLrState)
    counts = _counts(total)
    expected = _updates_at(baked, lambda c: optax.ScaleByScheduleState(count=c), counts)
    got = _updates_at(ours, lambda c: ours_state._replace(count=c), counts)
    np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))


@pytest.mark.parametrize(("name", "warmup"), [("step", 0), ("cosine", 5), ("constant", 3)])
def test_step_schedule_and_warmup_keep_optax_form(name, warmup):
    """Schedules without a state form use optax's transformation itself (same updates)."""
    tx = optim.scale_by_phase_lr(name, 0.1, 40, warmup)
    state = tx.init({})
    assert isinstance(state, optax.ScaleByScheduleState)
    schedule = optim.make_schedule(name, 0.1, 40, warmup)
    for count in (0, warmup, 20, 31, 39):
        updates, _ = tx.update({"w": jnp.ones(2)}, optax.ScaleByScheduleState(jnp.int32(count)))
        np.testing.assert_array_equal(updates["w"], -schedule(count) * np.ones(2, np.float32))


def _training(optimizer: str, weight_decay: float) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {"optimizer": optimizer, "momentum": 0.9, "weight_decay": weight_decay, "warmup_steps": 0}
    )


@pytest.mark.parametrize(
    ("optimizer", "weight_decay"), [("adam", 0.0), ("sgd", 5e-4), ("adamw", 1e-2), ("adam", 1e-4)]
)
def test_make_optimizer_matches_optax_aliases(optimizer, weight_decay):
    """Ten steps of our chain and of optax's alias with the schedule give the same params."""
    training = _training(optimizer, weight_decay)
    tx, schedule = optim.make_optimizer(
        training, learning_rate=0.05, lr_schedule="cosine", total_steps=7
    )
    wd_mask = optim._kernel_mask
    if optimizer == "sgd":
        alias = optax.chain(
            optax.add_decayed_weights(weight_decay, mask=wd_mask),
            optax.sgd(schedule, momentum=0.9, nesterov=True),
        )
    elif optimizer == "adam":
        adam = optax.adam(schedule, b1=0.9)
        alias = (
            optax.chain(optax.add_decayed_weights(weight_decay, mask=wd_mask), adam)
            if weight_decay
            else adam
        )
    else:
        alias = optax.adamw(schedule, b1=0.9, weight_decay=weight_decay, mask=wd_mask)
    rng = np.random.default_rng(1)
    params = {"kernel": jnp.asarray(rng.standard_normal((5, 3)), jnp.float32), "bias": jnp.ones(3)}

    def train(tx):
        @jax.jit
        def step(p, s, g):
            u, s = tx.update(g, s, p)
            return optax.apply_updates(p, u), s

        p, s = params, tx.init(params)
        for i in range(10):  # past the end of the 7-step cosine
            g = jax.tree.map(lambda x, i=i: jnp.sin(x * (i + 1)), p)
            p, s = step(p, s, g)
        return p

    ours, theirs = train(tx), train(alias)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
        np.testing.assert_array_equal(np.asarray(a).view(np.uint32), np.asarray(b).view(np.uint32))


def test_phases_with_other_rates_and_lengths_share_one_program():
    """The dense and the fine-tuning phase (other lr, other length) lower to the same module."""
    model = models.get_model("lenet300", 10)
    variables = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))
    batch = {"image": jnp.zeros((8, 28, 28, 1)), "label": jnp.zeros(8, jnp.int32)}
    texts = []
    for lr, total in ((1e-3, 936), (2e-3, 50)):
        tx, _ = optim.make_optimizer(
            _training("adam", 0.0), learning_rate=lr, lr_schedule="cosine", total_steps=total
        )
        state = state_lib.create_train_state(variables, tx, jax.random.PRNGKey(1))
        step = jax.jit(steps.train_step_fn(model.apply, tx))
        texts.append(step.lower(state, batch).as_text(debug_info=False))
    assert texts[0] == texts[1]
    # ... whereas optax's form bakes the numbers in: the check can fail.
    baked = []
    for lr, total in ((1e-3, 936), (2e-3, 50)):
        tx = optax.adam(optim.make_schedule("cosine", lr, total), b1=0.9)
        state = state_lib.create_train_state(variables, tx, jax.random.PRNGKey(1))
        baked.append(jax.jit(steps.train_step_fn(model.apply, tx)).lower(state, batch).as_text())
    assert baked[0] != baked[1]


def _smoke_run(tmp_path, name, monkeypatch, *, share=True, finetune_schedule="cosine"):
    """A LeNet-300-100 prune_finetune smoke run; returns (train steps built, result)."""
    built = []
    original = context.RunContext.train_step_fn
    monkeypatch.setattr(
        context.RunContext,
        "train_step_fn",
        lambda self, index, tx: (built.append(index), original(self, index, tx))[1],
    )
    if not share:
        monkeypatch.setattr(context.RunContext, "train_step_key", lambda self, i, s: None)
    config = lenet300_mnist_gmp.get_config("smoke")
    config.finetune.lr_schedule = finetune_schedule
    result = training.train_and_evaluate(config, tmp_path / name)
    monkeypatch.undo()
    return built, result


def _leaves_bits(result):
    return [np.asarray(x).tobytes() for x in jax.tree.leaves((result.variables, result.masks))]


def test_dense_and_finetune_phases_share_one_jitted_step_bit_identically(tmp_path, monkeypatch):
    """The fine-tuning phase reuses the dense phase's step; the run equals one that does not."""
    built, shared = _smoke_run(tmp_path, "shared", monkeypatch)
    assert built == [0]  # phase 1 (finetune: other lr, other length) built no step of its own
    built, separate = _smoke_run(tmp_path, "separate", monkeypatch, share=False)
    assert built == [0, 1]
    assert _leaves_bits(shared) == _leaves_bits(separate)
    assert shared.summary["test_accuracy"] == separate.summary["test_accuracy"]
    # A 'step' schedule bakes its numbers into the program: that phase builds its own.
    built, _ = _smoke_run(tmp_path, "step_schedule", monkeypatch, finetune_schedule="step")
    assert built == [0, 1]
