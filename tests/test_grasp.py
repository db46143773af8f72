"""GraSP score (theta * Hg) against finite differences and an explicit Hessian."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import jaxprune as jp
from jaxprune.pruning import scores


def mlp_apply(p, x):
    return jnp.tanh(x @ p["l1"]["w"] + p["l1"]["b"]) @ p["l2"]["w"] + p["l2"]["b"]


def make_problem(dtype):
    rng = np.random.default_rng(0)
    params = {
        "l1": {"w": rng.normal(size=(4, 5)), "b": rng.normal(size=5) * 0.1},
        "l2": {"w": rng.normal(size=(5, 3)), "b": rng.normal(size=3) * 0.1},
    }
    params = jax.tree.map(lambda a: jnp.asarray(a, dtype), params)
    batch = {
        "image": jnp.asarray(rng.normal(size=(8, 4)), dtype),
        "label": jnp.asarray(rng.integers(0, 3, 8), jnp.int32),
    }
    return params, batch


def theta_hg_oracles(apply_fn, temperature, params, batch, eps):
    """``theta * Hg`` by an explicit Hessian and by central differences of the gradient.

    Everything is jitted: eager second-order JAX compiles op by op and takes seconds.
    """

    def loss(p):
        logits = apply_fn(p, batch["image"]) / temperature
        log_probs = logits - jax.scipy.special.logsumexp(logits, axis=-1, keepdims=True)
        return -jnp.mean(log_probs[jnp.arange(len(batch["label"])), batch["label"]])

    @jax.jit
    def oracles(params):
        flat, unravel = ravel_pytree(params)
        g, _ = ravel_pytree(jax.grad(loss)(params))
        hessian = jax.hessian(lambda v: loss(unravel(v)))(flat)
        grad_flat = jax.grad(lambda v: loss(unravel(v)))
        hg_fd = (grad_flat(flat + eps * g) - grad_flat(flat - eps * g)) / (2 * eps)
        return flat * (hessian @ g), flat * hg_fd

    return oracles(params)


@pytest.mark.parametrize("temperature", [1.0, 200.0])
def test_grasp_matches_finite_differences_and_explicit_hessian(temperature):
    with jax.enable_x64(True):
        params, batch = make_problem(jnp.float64)
        expected_h, expected_fd = theta_hg_oracles(mlp_apply, temperature, params, batch, 1e-5)
        got = jp.scores.get("grasp")(
            params, batch=batch, apply_fn=mlp_apply, temperature=temperature
        )
        got_flat, _ = ravel_pytree(got)
        assert got_flat.dtype == jnp.float64
        scale = float(jnp.max(jnp.abs(expected_h)))
        assert scale > 0
        np.testing.assert_allclose(got_flat, expected_h, rtol=1e-9, atol=1e-12 * scale)
        np.testing.assert_allclose(got_flat, expected_fd, rtol=1e-5, atol=1e-7 * scale)
        # Sign convention: the score is +theta * Hg (GraSP's S = -theta * Hg), not its negation.
        assert float(jnp.vdot(got_flat, expected_h)) > 0


def test_grasp_with_mask_scores_masked_params():
    with jax.enable_x64(True):
        params, batch = make_problem(jnp.float64)
        rng = np.random.default_rng(1)
        mask = jax.tree.map(lambda w: rng.random(w.shape) < 0.6, params)
        masked = jax.tree.map(lambda w, m: jnp.where(m, w, 0.0), params, mask)
        expected, _ = theta_hg_oracles(mlp_apply, 200.0, masked, batch, 1e-5)
        got = scores.grasp(params, batch=batch, apply_fn=mlp_apply, mask=mask)
        got_flat, _ = ravel_pytree(got)
        scale = float(jnp.max(jnp.abs(expected)))
        np.testing.assert_allclose(got_flat, expected, rtol=1e-9, atol=1e-12 * scale)
        mask_flat = np.concatenate([np.ravel(m) for m in jax.tree.leaves(mask)])
        assert not mask_flat.all()
        assert (np.asarray(got_flat)[~mask_flat] == 0).all()


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

    expected, _ = theta_hg_oracles(apply_fn, 1.0, params, batch, 1e-3)
    got_flat, _ = ravel_pytree(got)
    scale = float(jnp.max(jnp.abs(expected)))
    np.testing.assert_allclose(got_flat, expected, rtol=1e-3, atol=1e-4 * scale)
    one_hot = dict(batch, label=np.eye(3, dtype=np.float32)[batch["label"]])
    same, _ = ravel_pytree(scores.grasp(params, batch=one_hot, apply_fn=apply_fn, temperature=1.0))
    np.testing.assert_allclose(same, got_flat, rtol=1e-5, atol=1e-6 * scale)


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
