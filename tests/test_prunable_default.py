"""The default prunable rule (kernels with ndim >= 2 only) on a small transformer encoder."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxprune as jp
from jaxprune.pruning import tree

SEQ, DIM, HEADS, VOCAB, CLASSES = 8, 16, 2, 50, 5
ATTENTION = "MultiHeadDotProductAttention_0"
KERNELS = [
    "Dense_0/kernel",
    "Dense_1/kernel",
    "Dense_2/kernel",
    f"{ATTENTION}/key/kernel",
    f"{ATTENTION}/out/kernel",
    f"{ATTENTION}/query/kernel",
    f"{ATTENTION}/value/kernel",
]


class Encoder(nn.Module):
    """One pre-norm transformer encoder block with token and learned positional embeddings."""

    @nn.compact
    def __call__(self, tokens):
        x = nn.Embed(VOCAB, DIM)(tokens)
        position = self.param("pos_embedding", nn.initializers.normal(0.02), (SEQ, DIM))
        x = x + position
        h = nn.LayerNorm()(x)
        x = x + nn.MultiHeadDotProductAttention(num_heads=HEADS)(h, h)
        h = nn.LayerNorm()(x)
        x = x + nn.Dense(DIM)(nn.gelu(nn.Dense(4 * DIM)(h)))
        return nn.Dense(CLASSES)(jnp.mean(x, axis=1))


def encoder_params():
    tokens = jnp.zeros((1, SEQ), jnp.int32)
    params = Encoder().init(jax.random.key(0), tokens)["params"]
    # Non-zero biases so that a rule pruning them would have to choose among them by magnitude.
    rng = np.random.default_rng(0)
    return jax.tree_util.tree_map_with_path(
        lambda path, w: (
            w + 0.01 * rng.normal(size=w.shape).astype(w.dtype)
            if tree.path_name(path).endswith("bias")
            else w
        ),
        params,
    )


def kernel_leaves(params):
    """Kernels found by walking the nested dict by hand (an oracle independent of tree.py)."""
    found = {}

    def walk(node, prefix):
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(value, name + "/")
            elif key == "kernel":
                found[name] = np.asarray(value)

    walk(jax.device_get(params), "")
    return found


def test_encoder_has_the_leaves_the_old_rule_pruned():
    params = encoder_params()
    shapes = {name: np.shape(leaf) for name, leaf in tree.named_leaves(params)}
    assert shapes["pos_embedding"] == (SEQ, DIM)
    assert shapes["Embed_0/embedding"] == (VOCAB, DIM)
    assert shapes[f"{ATTENTION}/query/bias"] == (HEADS, DIM // HEADS)  # 2-D DenseGeneral bias
    assert shapes[f"{ATTENTION}/query/kernel"] == (DIM, HEADS, DIM // HEADS)


def test_default_prunable_leaves_are_exactly_the_kernels():
    params = encoder_params()
    assert sorted(jp.prunable_names(params)) == sorted(KERNELS) == sorted(kernel_leaves(params))


def test_global_mp_90_keeps_non_kernels_dense_and_exact_kernel_count():
    params = encoder_params()
    mask = jp.global_mask(jp.scores.magnitude(params), 0.9)
    kernels = kernel_leaves(params)
    n_total = sum(w.size for w in kernels.values())
    n_keep = round(0.1 * n_total)
    for name, leaf in tree.named_leaves(mask):
        if name not in kernels:
            assert np.asarray(leaf).all(), f"{name} was pruned"
    kept = {name: np.asarray(leaf) for name, leaf in tree.named_leaves(mask) if name in kernels}
    assert sum(int(m.sum()) for m in kept.values()) == n_keep
    # Oracle: the n_keep largest |w| over the concatenated kernels (distinct random values).
    flat = np.concatenate([np.abs(kernels[n]).ravel() for n in sorted(kernels)])
    threshold = np.sort(flat)[::-1][n_keep - 1]
    for name in kernels:
        np.testing.assert_array_equal(kept[name], np.abs(kernels[name]) >= threshold)


def test_prunable_override_still_selects_other_leaves():
    params = encoder_params()
    with_embeddings = jp.prunable_names(params, prunable=[r"kernel$", r"embedding$"])
    assert sorted(with_embeddings) == sorted([*KERNELS, "Embed_0/embedding", "pos_embedding"])
    by_rank = jp.prunable_names(params, prunable=lambda name, leaf: leaf.ndim >= 2)
    assert f"{ATTENTION}/query/bias" in by_rank
    mask = jp.global_mask(jp.scores.magnitude(params), 0.9, prunable=r"embedding$")
    assert not np.asarray(mask["pos_embedding"]).all()
    assert np.asarray(mask["Dense_0"]["kernel"]).all()


def test_default_rule_needs_the_kernel_name_and_two_axes():
    assert tree.is_kernel("Conv_0/kernel", np.zeros((3, 3, 1, 2)))
    assert tree.is_kernel("layers/0/kernel", jax.ShapeDtypeStruct((4, 4), jnp.float32))
    assert not tree.is_kernel("Dense_0/kernel_scale", np.zeros((4, 4)))
    assert not tree.is_kernel("kernel/bias", np.zeros((4, 4)))
    assert not tree.is_kernel("Dense_0/kernel", np.zeros(4))  # 1-D "kernel": not a weight matrix
    assert not tree.is_kernel("w", np.zeros((4, 4)))


def test_describe_table():
    params = encoder_params()
    text = jp.describe(params)
    assert jp.pruning.describe is jp.describe
    lines = text.splitlines()
    assert lines[0].split() == ["name", "shape", "dtype", "size", "prunable"]
    rows = {line.split()[0]: line for line in lines[1:-1]}
    assert list(rows) == tree.layer_names(params)
    query_bias = rows[f"{ATTENTION}/query/bias"]
    assert "(2, 8)" in query_bias and "float32" in query_bias
    assert query_bias.split()[-2:] == ["16", "no"]
    assert rows["Embed_0/embedding"].split()[-2:] == ["800", "no"]
    assert rows["pos_embedding"].split()[-1] == "no"
    assert rows["LayerNorm_0/scale"].split()[-1] == "no"
    assert rows[f"{ATTENTION}/query/kernel"].split()[-2:] == ["256", "yes"]
    kernels = kernel_leaves(params)
    n_kernel = sum(w.size for w in kernels.values())
    n_all = sum(int(np.size(w)) for w in jax.tree.leaves(params))
    n_leaves = len(jax.tree.leaves(params))
    assert lines[-1] == (
        f"prunable: {len(kernels)} of {n_leaves} leaves, {n_kernel:,} of {n_all:,} entries "
        f"({100 * n_kernel / n_all:.2f}%)"
    )
    regex = jp.describe(params, prunable=r"embedding$").splitlines()
    assert regex[-1].startswith(f"prunable: 2 of {n_leaves} leaves, {VOCAB * DIM + SEQ * DIM:,}")


def test_describe_empty_and_scalar_leaves():
    text = jp.describe({"scale": jnp.float32(2.0), "Dense_0": {"kernel": np.ones((2, 3))}})
    assert "()" in text.splitlines()[2] and text.splitlines()[2].split()[-1] == "no"
    assert text.splitlines()[-1] == "prunable: 1 of 2 leaves, 6 of 7 entries (85.71%)"
    assert jp.describe({}).splitlines()[-1] == "prunable: 0 of 0 leaves, 0 of 0 entries (0.00%)"


@pytest.mark.parametrize("bad", [3, [1, 2]])
def test_bad_prunable_argument_still_raises(bad):
    with pytest.raises(TypeError, match="prunable must be"):
        jp.describe({"a": np.ones((2, 2))}, prunable=bad)
