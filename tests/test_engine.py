"""The training engine with user code: models, scores and flows from outside the package.

A model and a score defined in the user's own module (written to a temporary directory and
imported by path), ``init_from`` (prune one trained dense net), ``jp.load_run``, ``jp.evaluate``,
an NNX model, and a flow registered from a notebook.
"""

import json
import textwrap

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

import jaxprune as jp
from configs import lenet300_mnist_gmp
from jaxprune import data, training
from jaxprune.training import flows, model_fns

USER_MODULE = textwrap.dedent(
    '''
    """A user's lab code: a model without `train=` or a linear mode, a movement score."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    from flax import nnx


    class MLP(nn.Module):
        hidden: tuple
        num_classes: int

        @nn.compact
        def __call__(self, x):  # no `train` argument
            x = x.reshape((x.shape[0], -1))
            for h in self.hidden:
                x = nn.gelu(nn.Dense(h)(x))
            return nn.Dense(self.num_classes)(x)


    def mlp(num_classes, hidden=(64,)):
        return MLP(tuple(hidden), num_classes)


    def movement(params, *, init_params):
        """|w| - |w0|: weights that grew keep their place (no **ctx: only what it names)."""
        return jax.tree.map(lambda w, w0: jnp.abs(w) - jnp.abs(w0), params, init_params)


    def needs_teacher(params, *, teacher):
        return params


    class NnxMLP(nnx.Module):
        def __init__(self, num_classes, hidden, *, rngs):
            self.fc1 = nnx.Linear(784, hidden, rngs=rngs)
            self.fc2 = nnx.Linear(hidden, num_classes, rngs=rngs)

        def __call__(self, x):
            return self.fc2(nnx.relu(self.fc1(x.reshape((x.shape[0], -1)))))


    def nnx_mlp(num_classes, hidden=32, *, rngs):
        return NnxMLP(num_classes, hidden, rngs=rngs)


    def mlp_from_kwargs(num_classes, **kwargs):  # Linen: **kwargs must not be read as NNX
        return MLP(tuple(kwargs.get("hidden", (16,))), num_classes)
    '''
)


@pytest.fixture(scope="module")
def user_module(tmp_path_factory):
    root = tmp_path_factory.mktemp("userlab")
    (root / "userlab_nets.py").write_text(USER_MODULE)
    mp = pytest.MonkeyPatch()
    mp.syspath_prepend(str(root))
    yield "userlab_nets"
    mp.undo()


def _config(**overrides):
    config = lenet300_mnist_gmp.get_config("smoke")
    config.training.steps, config.finetune.steps = 30, 10
    config.training.log_every = 10
    config.training.checkpoint_every = 10
    config.update_from_flattened_dict(overrides)
    return config


def _initial_params(module, seed=0):
    key = jax.random.key(seed, impl="rbg")
    return jax.device_get(module.init({"params": key}, jnp.zeros((1, 28, 28, 1))))["params"]


@pytest.fixture(scope="module")
def dense_run(user_module, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("dense")
    config = _config(flow="dense")
    config.model.name = f"{user_module}:mlp"
    config.model.kwargs = {"hidden": (64,)}
    result = training.train_and_evaluate(config, workdir)
    return workdir, result


def test_user_model_trains_and_returns_its_variables(dense_run):
    workdir, result = dense_run
    assert result.finished and result.step == 30 == result.summary["steps"]
    params = result.variables["params"]
    assert params["Dense_0"]["kernel"].shape == (784, 64)  # model.kwargs reached the factory
    assert result.summary["model"] == "userlab_nets:mlp"
    assert 0.5 < result.summary["test_accuracy"] <= 1.0  # 30 steps on MNIST; chance is 0.1
    # The result's apply_fn and jp.evaluate agree with a hand computation on the test set.
    ds = data.get_dataset("mnist")
    limit = result.config.dataset.eval_limit  # the smoke config scores the first examples
    images, labels = (a[:limit] for a in ds.arrays("test"))
    logits = np.asarray(result.apply_fn(result.variables, jnp.asarray(ds._normalize(images))))
    accuracy = float(np.mean(logits.argmax(-1) == labels))
    assert accuracy == pytest.approx(result.summary["test_accuracy"], abs=1e-9)
    evaluated = jp.evaluate(result.apply_fn, result.variables, ds, batch_size=100, limit=limit)
    assert evaluated["test_accuracy"] == pytest.approx(accuracy, abs=1e-9)
    logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True))
    logp -= logits.max(-1, keepdims=True)
    loss = -np.mean(logp[np.arange(labels.size), labels])
    assert evaluated["test_loss"] == pytest.approx(loss, rel=1e-5)


def test_user_score_by_import_path_prunes_a_trained_dense_net_from_init_from(
    dense_run, user_module, tmp_path
):
    dense_dir, dense = dense_run
    config = _config(flow="prune_finetune", init_from=str(dense_dir))
    config.model.name = f"{user_module}:mlp"
    config.model.kwargs = {"hidden": (64,)}
    config.pruning.score = f"{user_module}:movement"
    config.pruning.min_keep_fraction = 0.0
    config.pruning.sparsity = 0.9
    result = training.train_and_evaluate(config, tmp_path)
    # Oracle: global top-k of |w_T| - |w_0| over the kernels, ties to the earlier entry.
    module = __import__(user_module).mlp(10, hidden=(64,))
    w0, wt = _initial_params(module), dense.variables["params"]
    names = ["Dense_0", "Dense_1"]
    flat = np.concatenate(
        [(np.abs(wt[n]["kernel"]) - np.abs(w0[n]["kernel"])).ravel() for n in names]
    )
    k = jp.n_keep_for(0.9, flat.size)
    keep = np.zeros(flat.size, bool)
    keep[np.argsort(-flat, kind="stable")[:k]] = True
    got = np.concatenate([np.asarray(result.masks[n]["kernel"]).ravel() for n in names])
    np.testing.assert_array_equal(got, keep)
    # The dense phase came from the source run: no dense training here, its eval recorded.
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert not any(r.get("phase") == "dense" and "train_loss" in r for r in records)
    dense_eval = [r for r in records if r["phase"] == "dense"]
    assert dense_eval[0]["test_accuracy"] == dense.summary["test_accuracy"]
    assert dense_eval[0]["init_from"] == str(dense_dir)
    assert result.summary["init_from"] == str(dense_dir)
    assert result.step == 40 and result.summary["sparsity"]["kept"] == k
    # Resuming the finished run changes nothing.
    again = training.train_and_evaluate(config, tmp_path)
    assert again.summary["test_accuracy"] == result.summary["test_accuracy"]
    jax.tree.map(np.testing.assert_array_equal, again.variables, result.variables)


def test_load_run_of_finished_and_interrupted_runs(dense_run, user_module, tmp_path):
    dense_dir, dense = dense_run
    loaded = jp.load_run(dense_dir)
    assert loaded.finished and loaded.summary == json.loads(
        (dense_dir / "summary.json").read_text()
    )
    jax.tree.map(np.testing.assert_array_equal, loaded.variables, dense.variables)
    jax.tree.map(np.testing.assert_array_equal, loaded.masks, dense.masks)

    config = _config(flow="prune_finetune", **{"debug.stop_at_step": 25})
    stopped = training.train_and_evaluate(config, tmp_path)
    assert stopped.stopped_at_step == 25 and not stopped.finished
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    partial = jp.load_run(tmp_path)
    assert partial.summary is None and partial.step == 20  # the newest checkpoint
    assert partial.variables["params"]["Dense_0"]["kernel"].shape == (784, 300)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
    with pytest.raises(FileNotFoundError, match="no config.json"):
        jp.load_run(tmp_path / "nothing")


def test_init_from_errors_name_the_field(dense_run, user_module, tmp_path):
    dense_dir, _ = dense_run
    config = _config(flow="prune_finetune", init_from=str(dense_dir))  # zoo lenet300 here
    with pytest.raises(ValueError, match=r"init_from=.*model\.name='userlab_nets:mlp'"):
        training.train_and_evaluate(config, tmp_path / "a")
    config.init_from = str(tmp_path / "missing")
    with pytest.raises(ValueError, match=r"init_from=.*no jaxprune run"):
        training.train_and_evaluate(config, tmp_path / "b")
    config = _config(flow="prune_finetune", init_from=f"{dense_dir}:finetune")
    config.model.name = f"{user_module}:mlp"
    config.model.kwargs = {"hidden": (64,)}
    with pytest.raises(ValueError, match=r"no kept checkpoint ends phase 'finetune'"):
        training.train_and_evaluate(config, tmp_path / "c")


def test_user_code_errors_are_clear(user_module, tmp_path):
    config = _config()
    config.model.name = "no_such_lab.nets:mlp"
    with pytest.raises(ValueError, match=r"model\.name='no_such_lab\.nets:mlp': cannot import"):
        training.validate_config(config)
    config = _config()
    config.pruning.score = f"{user_module}:not_there"
    with pytest.raises(ValueError, match=r"score='userlab_nets:not_there'.*has no 'not_there'"):
        training.validate_config(config)
    config = _config()
    config.pruning.score = f"{user_module}:needs_teacher"
    with pytest.raises(TypeError, match=r"needs \['teacher'\]"):
        training.train_and_evaluate(config, tmp_path)
    config = _config()
    config.model.name = f"{user_module}:mlp"
    config.model.width = 0.5
    with pytest.raises(ValueError, match=r"model\.width scales zoo models only"):
        training.train_and_evaluate(config, tmp_path / "w")


def test_factory_kinds_linen_with_kwargs_nnx_by_rngs_or_class(user_module):
    def module_for(factory, **kwargs):
        block = ml_collections.ConfigDict(
            {"name": f"{user_module}:{factory}", "kwargs": kwargs, "width": 1.0}
        )
        return model_fns.build_module(block, 10)

    linen = module_for("mlp_from_kwargs", hidden=(8,))
    assert type(linen).__name__ == "MLP" and linen.hidden == (8,)
    for name in ("nnx_mlp", "NnxMLP"):
        assert isinstance(module_for(name, hidden=8), nnx.bridge.ToLinen)


def test_nnx_model_from_a_factory_taking_rngs(user_module, tmp_path):
    config = _config(flow="prune_at_init")
    config.model.name = f"{user_module}:nnx_mlp"
    config.model.kwargs = {"hidden": 32}
    config.pruning.sparsity = 0.8
    result = training.train_and_evaluate(config, tmp_path)
    kernels = [result.masks[layer]["kernel"] for layer in ("fc1", "fc2")]  # NNX attribute names
    total = 784 * 32 + 32 * 10
    assert [m.shape for m in kernels] == [(784, 32), (32, 10)]
    assert sum(int(m.sum()) for m in kernels) == jp.n_keep_for(0.8, total)
    assert result.summary["sparsity"]["total"] == total
    assert result.summary["test_accuracy"] > 0.15  # trained (chance: 0.1)


def test_a_flow_registered_from_a_notebook_runs_and_can_be_redefined(tmp_path):
    @flows.register
    class TwoStage(flows.Flow):
        name = "two_stage_dense"

        def phases(self, config, steps_per_epoch):
            first = flows.training_phase("warm", config, 0, steps_per_epoch, prune=False)
            return [first, flows.Phase("cool", first.end, 5, 1e-4, "constant", False)]

    @flows.register  # re-running the notebook cell replaces it
    class TwoStageAgain(TwoStage):
        name = "two_stage_dense"

        def target_sparsity(self, config):
            return 0.0

    try:
        config = _config(flow="two_stage_dense")
        config.training.steps = 10
        result = training.train_and_evaluate(config, tmp_path)
        assert list(result.summary["phases"]) == ["warm", "cool"]
        assert result.step == 15 and result.summary["target_sparsity"] == 0.0
        records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
        cool = [r["learning_rate"] for r in records if r["phase"] == "cool" and "train_loss" in r]
        assert cool == [pytest.approx(1e-4)]
        with pytest.raises(ValueError, match="already registered"):
            flows.register(TwoStage, overwrite=False)
    finally:
        flows._REGISTRY.pop("two_stage_dense", None)
    with pytest.raises(ValueError, match=r"flow must be one of \[.*'gradual'.*\], got 'nope'"):
        flows.get("nope")
