"""GraSP score (theta * Hg over the prunable kernels) against finite differences and an explicit
Hessian of the loss as a function of the kernels only (biases and norm parameters held fixed)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import jaxprune as jp
from jaxprune.pruning import scores, tree

KERNELS = ("l1/kernel", "l2/kernel")


def mlp_apply(p, x):
    h = jnp.tanh(x @ p["l1"]["kernel"] + p["l1"]["bias"])
    return h @ p["l2"]["kernel"] + p["l2"]["bias"]


def make_problem(dtype):
    rng = np.random.default_rng(0)
    params = {
        "l1": {"kernel": rng.normal(size=(4, 5)), "bias": rng.normal(size=5) * 0.1},
        "l2": {"kernel": rng.normal(size=(5, 3)), "bias": rng.normal(size=3) * 0.1},
    }
    params = jax.tree.map(lambda a: jnp.asarray(a, dtype), params)
    batch = {
        "image": jnp.asarray(rng.normal(size=(8, 4)), dtype),
        "label": jnp.asarray(rng.integers(0, 3, 8), jnp.int32),
    }
    return params, batch


def theta_hg_oracles(apply_fn, temperature, params, batch, eps, names=KERNELS):
    """``theta * Hg`` over the leaves ``names`` by an explicit Hessian and by central differences.

    The loss is a function of the flat vector of the ``names`` leaves only; every other leaf is a
    constant closed over. Returns two ``{name: array}`` dicts. Everything is jitted: eager
    second-order JAX compiles op by op and takes seconds.
    """
    named = tree.named_leaves(params)
    chosen = [leaf for name, leaf in named if name in names]
    assert len(chosen) == len(names)
    treedef = jax.tree.structure(params)

    def loss(chosen_leaves):
        it = iter(chosen_leaves)
        full = [next(it) if name in names else leaf for name, leaf in named]
        logits = apply_fn(jax.tree.unflatten(treedef, full), batch["image"]) / temperature
        log_probs = logits - jax.scipy.special.logsumexp(logits, axis=-1, keepdims=True)
        return -jnp.mean(log_probs[jnp.arange(len(batch["label"])), batch["label"]])

    @jax.jit
    def oracles(chosen_leaves):
        flat, unravel = ravel_pytree(chosen_leaves)
        loss_flat = lambda v: loss(unravel(v))  # noqa: E731
        g = jax.grad(loss_flat)(flat)
        hessian = jax.hessian(loss_flat)(flat)
        grad_flat = jax.grad(loss_flat)
        hg_fd = (grad_flat(flat + eps * g) - grad_flat(flat - eps * g)) / (2 * eps)
        return unravel(flat * (hessian @ g)), unravel(flat * hg_fd)

    exact, fd = oracles(chosen)
    chosen_names = [name for name, _ in named if name in names]
    return dict(zip(chosen_names, exact, strict=True)), dict(zip(chosen_names, fd, strict=True))


def by_name(score_tree):
    return {name: np.asarray(leaf) for name, leaf in tree.named_leaves(score_tree)}


def assert_scores(got, expected, rtol, atol_scale):
    """``got`` matches ``expected`` on its leaves and is exactly 0 on every other leaf."""
    got = by_name(got)
    scale = max(float(np.max(np.abs(v))) for v in expected.values())
    assert scale > 0
    for name, value in got.items():
        if name in expected:
            np.testing.assert_allclose(value, expected[name], rtol=rtol, atol=atol_scale * scale)
        else:
            assert (value == 0).all(), name


@pytest.mark.parametrize("temperature", [1.0, 200.0])
def test_grasp_matches_finite_differences_and_explicit_hessian(temperature):
    with jax.enable_x64(True):
        params, batch = make_problem(jnp.float64)
        expected_h, expected_fd = theta_hg_oracles(mlp_apply, temperature, params, batch, 1e-5)
        got = jp.scores.get("grasp")(
            params, batch=batch, apply_fn=mlp_apply, temperature=temperature
        )
        assert all(leaf.dtype == jnp.float64 for leaf in jax.tree.leaves(got))
        assert_scores(got, expected_h, rtol=1e-9, atol_scale=1e-12)
        assert_scores(got, expected_fd, rtol=1e-5, atol_scale=1e-7)
        # Sign convention: the score is +theta * Hg (GraSP's S = -theta * Hg), not its negation.
        got_flat = np.concatenate([by_name(got)[n].ravel() for n in KERNELS])
        expected_flat = np.concatenate([np.ravel(expected_h[n]) for n in KERNELS])
        assert float(np.vdot(got_flat, expected_flat)) > 0


def test_grasp_with_mask_scores_masked_params():
    with jax.enable_x64(True):
        params, batch = make_problem(jnp.float64)
        rng = np.random.default_rng(1)
        mask = jax.tree.map(lambda w: rng.random(w.shape) < 0.6, params)
        masked = jax.tree.map(lambda w, m: jnp.where(m, w, 0.0), params, mask)
        expected, _ = theta_hg_oracles(mlp_apply, 200.0, masked, batch, 1e-5)
        got = scores.grasp(params, batch=batch, apply_fn=mlp_apply, mask=mask)
        assert_scores(got, expected, rtol=1e-9, atol_scale=1e-12)
        mask_flat = np.concatenate([np.ravel(m) for m in jax.tree.leaves(mask)])
        got_flat = np.concatenate([np.ravel(s) for s in jax.tree.leaves(got)])
        assert not mask_flat.all()
        assert (got_flat[~mask_flat] == 0).all()


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3)(jnp.tanh(nn.Dense(5)(x)))


def test_grasp_flax_float32_and_one_hot_labels():
    model = MLP()
    params = model.init(jax.random.key(0, impl="rbg"), jnp.ones((1, 4)))["params"]
    apply_fn = lambda p, x: model.apply({"params": p}, x)  # noqa: E731
    rng = np.random.default_rng(2)
    batch = {"image": rng.normal(size=(8, 4)).astype(np.float32), "label": rng.integers(0, 3, 8)}
    got = scores.grasp(params, batch=batch, apply_fn=apply_fn, temperature=1.0, key=None)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(got))

    names = ("Dense_0/kernel", "Dense_1/kernel")
    expected, _ = theta_hg_oracles(apply_fn, 1.0, params, batch, 1e-3, names)
    assert_scores(got, expected, rtol=1e-3, atol_scale=1e-4)
    one_hot = dict(batch, label=np.eye(3, dtype=np.float32)[batch["label"]])
    same = scores.grasp(params, batch=one_hot, apply_fn=apply_fn, temperature=1.0)
    assert_scores(same, by_name(got), rtol=1e-5, atol_scale=1e-6)


class NormNet(nn.Module):
    """Dense -> LayerNorm -> tanh -> Dense: biases and a norm scale/offset beside two kernels."""

    dtype: jnp.dtype = jnp.float64

    @nn.compact
    def __call__(self, x):
        h = nn.LayerNorm(param_dtype=self.dtype)(nn.Dense(6, param_dtype=self.dtype)(x))
        return nn.Dense(3, param_dtype=self.dtype)(jnp.tanh(h))


def norm_net_problem(dtype=jnp.float64):
    model = NormNet(dtype)
    x = jnp.asarray(np.random.default_rng(3).normal(size=(16, 5)), dtype)
    params = model.init(jax.random.key(1), x)["params"]
    # Non-trivial biases and norm parameters, so that they would matter in the tangent.
    rng = np.random.default_rng(4)
    params = jax.tree_util.tree_map_with_path(
        lambda path, w: (
            w
            if tree.path_name(path).endswith("kernel")
            else w + 0.3 * jnp.asarray(rng.normal(size=w.shape), dtype)
        ),
        params,
    )
    batch = {"image": x, "label": jnp.asarray(np.arange(16) % 3, jnp.int32)}
    return model, params, batch


def test_grasp_float64_uses_kernels_only_and_differs_from_all_leaf_tangent():
    with jax.enable_x64(True):
        model, params, batch = norm_net_problem()
        apply_fn = lambda p, x: model.apply({"params": p}, x)  # noqa: E731
        kernels = ("Dense_0/kernel", "Dense_1/kernel")
        assert sorted(jp.prunable_names(params)) == list(kernels)
        got = scores.grasp(params, batch=batch, apply_fn=apply_fn, temperature=1.0)
        kernels_only, _ = theta_hg_oracles(apply_fn, 1.0, params, batch, 1e-5, kernels)
        assert_scores(got, kernels_only, rtol=1e-6, atol_scale=1e-12)
        # The old semantics (every leaf in the tangent) give different kernel scores: the test
        # above could fail.
        every_leaf = tuple(tree.layer_names(params))
        all_leaves, _ = theta_hg_oracles(apply_fn, 1.0, params, batch, 1e-5, every_leaf)
        for name in kernels:
            difference = np.abs(all_leaves[name] - kernels_only[name]).max()
            assert difference > 1e-2 * np.abs(kernels_only[name]).max(), name
            with pytest.raises(AssertionError):
                np.testing.assert_allclose(by_name(got)[name], all_leaves[name], rtol=1e-6)


def test_grasp_respects_prunable_argument():
    with jax.enable_x64(True):
        model, params, batch = norm_net_problem()
        apply_fn = lambda p, x: model.apply({"params": p}, x)  # noqa: E731
        only = ("Dense_1/kernel",)
        got = scores.grasp(
            params, batch=batch, apply_fn=apply_fn, temperature=1.0, prunable=r"^Dense_1/kernel$"
        )
        expected, _ = theta_hg_oracles(apply_fn, 1.0, params, batch, 1e-5, only)
        assert_scores(got, expected, rtol=1e-6, atol_scale=1e-12)
        assert not (by_name(got)["Dense_1/kernel"] == 0).all()
        assert (by_name(got)["Dense_0/kernel"] == 0).all()


def test_grasp_registry_and_errors():
    assert "grasp" in jp.scores.names()
    assert jp.scores.get("grasp") is scores.grasp
    params, batch = make_problem(jnp.float32)
    with pytest.raises(ValueError, match=r"score 'grasp' needs batch=.*got None"):
        scores.grasp(params, apply_fn=mlp_apply)
    with pytest.raises(ValueError, match=r"needs batch=.*got \['image'\]"):
        scores.grasp(params, batch={"image": batch["image"]}, apply_fn=mlp_apply)
    with pytest.raises(ValueError, match="score 'grasp' needs apply_fn"):
        scores.grasp(params, batch=batch)
    with pytest.raises(ValueError, match="temperature > 0, got 0"):
        scores.grasp(params, batch=batch, apply_fn=mlp_apply, temperature=0)
    renamed = {"l1": {"w": params["l1"]["kernel"]}}
    with pytest.raises(ValueError, match="no prunable leaves.*prunable="):
        scores.grasp(renamed, batch=batch, apply_fn=lambda p, x: x @ p["l1"]["w"])


def test_training_passes_pruning_prunable_to_grasp():
    """``config.pruning.prunable`` reaches the scorer in every masking entry point."""
    from jaxprune.configs import default
    from jaxprune.training import prune

    model, params, batch = norm_net_problem(jnp.float32)
    apply_fn = lambda p, x: model.apply({"params": p}, x)  # noqa: E731
    only = r"^Dense_1/kernel$"
    pruning = default.get_config().pruning
    pruning.score, pruning.sparsity, pruning.prunable = "grasp", 0.5, (only,)
    direct = scores.grasp(params, batch=batch, apply_fn=apply_fn, prunable=only)
    expected = by_name(jp.global_mask(direct, 0.5, prunable=only))
    assert expected["Dense_0/kernel"].all() and not expected["Dense_1/kernel"].all()
    # The default prunable set (both kernels in the tangent) gives other Dense_1 scores.
    default_scores = by_name(scores.grasp(params, batch=batch, apply_fn=apply_fn))
    assert not np.allclose(default_scores["Dense_1/kernel"], by_name(direct)["Dense_1/kernel"])
    kwargs = {"key": jax.random.key(0), "batch": batch, "apply_fn": apply_fn}
    masks = prune.compute_masks(pruning, params, **kwargs)
    ones = jax.tree.map(lambda w: np.ones(np.shape(w), bool), params)
    nested = prune.nested_masks(pruning, params, ones, 0.5, **kwargs)
    pruning.schedule.type, pruning.schedule.final_sparsity = "one_shot", 0.5
    schedule = prune.make_schedule(pruning.schedule)
    traced = prune.traced_mask_fn(pruning, schedule, params, num_steps=1)
    step = traced(params, schedule.begin_step, **kwargs)
    for got in (masks, nested, step):
        for name, leaf in expected.items():
            np.testing.assert_array_equal(by_name(got)[name], leaf, err_msg=name)
