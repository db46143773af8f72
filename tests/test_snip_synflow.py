"""SNIP and SynFlow scores against hand computations on tiny MLPs."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxprune.pruning import scores
from jaxprune.pruning.select import global_mask

KEY = jax.random.key(0, impl="rbg")


class MLP(nn.Module):
    widths: tuple[int, ...]
    use_bias: bool = True

    @nn.compact
    def __call__(self, x):
        for i, width in enumerate(self.widths):
            x = nn.Dense(width, use_bias=self.use_bias)(x)
            if i < len(self.widths) - 1:
                x = jax.nn.relu(x)
        return x


def setup(widths=(6, 5, 3), n_in=4, use_bias=True):
    model = MLP(widths, use_bias)
    params = model.init(KEY, jnp.ones((1, n_in)))["params"]
    return model, params, lambda p, x: model.apply({"params": p}, x)


def test_snip_equals_abs_grad_times_weight():
    _, params, fn = setup()
    rng = np.random.default_rng(0)
    batch = {"image": rng.normal(size=(8, 4)).astype(np.float32), "label": rng.integers(0, 3, 8)}
    rng_mask = np.random.default_rng(1)
    mask = jax.tree.map(lambda w: rng_mask.random(w.shape) < 0.6, params)
    masked = jax.tree.map(lambda w, m: w * m, params, mask)

    def loss(p):
        logits = fn(p, batch["image"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()

    grads = jax.grad(loss)(masked)
    got = scores.get("snip")(params, batch=batch, apply_fn=fn, mask=mask, key=KEY)
    for g, w, s, m in zip(*(jax.tree.leaves(t) for t in (grads, masked, got, mask)), strict=True):
        np.testing.assert_allclose(s, np.abs(g * w), rtol=1e-5, atol=1e-7)
        assert not np.asarray(s)[~np.asarray(m)].any()
    one_hot = dict(batch, label=jax.nn.one_hot(batch["label"], 3))
    same = scores.snip(params, batch=one_hot, apply_fn=fn, mask=mask)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(same), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_snip_needs_batch_and_apply_fn():
    _, params, fn = setup()
    with pytest.raises(ValueError, match="batch"):
        scores.snip(params, apply_fn=fn, batch={"image": np.ones((1, 4))})
    with pytest.raises(ValueError, match="apply_fn"):
        scores.snip(params, batch={"image": np.ones((1, 4)), "label": np.zeros(1)})


def chain_synflow(kernels):
    """|w_ij| * (paths into i) * (paths out of j) for a bias-free chain, in float64 numpy."""
    abs_k = [np.abs(np.asarray(k, np.float64)) for k in kernels]
    forward = [np.ones(abs_k[0].shape[0])]
    for k in abs_k:
        forward.append(forward[-1] @ k)
    backward = [np.ones(abs_k[-1].shape[1])]
    for k in reversed(abs_k):
        backward.insert(0, k @ backward[0])
    return [forward[i][:, None] * k * backward[i + 1][None, :] for i, k in enumerate(abs_k)]


def test_synflow_positive_on_dense_net():
    _, params, fn = setup((12, 10, 3), n_in=8)
    got = scores.get("synflow")(params, apply_fn=fn, sample_input=np.zeros((5, 8)))
    for name in ("Dense_0", "Dense_1", "Dense_2"):
        kernel = np.asarray(got[name]["kernel"])
        assert kernel.dtype == np.float32 and (kernel > 0).all()
    assert max(float(np.max(leaf)) for leaf in jax.tree.leaves(got)) == 1.0


def test_synflow_matches_path_products_in_a_deep_net_that_overflows_float32():
    depth, width = 40, 16
    _, params, fn = setup((width,) * depth, n_in=width, use_bias=False)
    params = jax.tree.map(lambda w: w * 6.0, params)  # |w| ~ 1: path sums ~ 16^40 > float32 max
    kernels = [params[f"Dense_{i}"]["kernel"] for i in range(depth)]
    expected = chain_synflow(kernels)
    assert np.max([e.max() for e in expected]) > np.finfo(np.float32).max
    top = max(e.max() for e in expected)
    got = scores.synflow(params, apply_fn=fn, sample_input=np.zeros((1, width)))
    for i in (0, depth // 2, depth - 1):
        np.testing.assert_allclose(got[f"Dense_{i}"]["kernel"], expected[i] / top, rtol=1e-4)


def test_synflow_mask_counts_rounds_and_nesting():
    _, params, fn = setup((12, 10, 3), n_in=8)
    x = np.zeros((1, 8))
    mask = scores.synflow_mask(params, 0.9, apply_fn=fn, sample_input=x, rounds=3)
    kept = sum(int(np.asarray(m).sum()) for m in jax.tree.leaves(mask) if np.ndim(m) >= 2)
    assert kept == round(0.1 * (8 * 12 + 12 * 10 + 10 * 3))
    assert all(np.asarray(m).all() for m in jax.tree.leaves(mask) if np.ndim(m) < 2)
    one_round = scores.synflow_mask(params, 0.9, apply_fn=fn, sample_input=x, rounds=1)
    direct = global_mask(scores.synflow(params, apply_fn=fn, sample_input=x), 0.9)
    for a, b in zip(jax.tree.leaves(one_round), jax.tree.leaves(direct), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="rounds"):
        scores.synflow_mask(params, 0.5, apply_fn=fn, sample_input=x, rounds=0)
    assert {"snip", "synflow"} <= set(scores.names())


def test_synflow_mask_two_rounds_by_hand_is_nested():
    _, params, fn = setup((12, 10, 3), n_in=8)
    x = np.zeros((1, 8))
    first = global_mask(scores.synflow(params, apply_fn=fn, sample_input=x), 1 - 0.2**0.5)
    second_scores = scores.synflow(params, apply_fn=fn, sample_input=x, mask=first)
    second_scores = jax.tree.map(lambda s, m: np.where(m, s, -1.0), second_scores, first)
    second = global_mask(second_scores, 0.8)
    got = scores.synflow_mask(params, 0.8, apply_fn=fn, sample_input=x, rounds=2)
    for g, s, f in zip(*(jax.tree.leaves(t) for t in (got, second, first)), strict=True):
        np.testing.assert_array_equal(g, s)
        assert not (np.asarray(g) & ~np.asarray(f)).any()
