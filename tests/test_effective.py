"""Effective masks and layer order against explicit graph algorithms on tiny networks."""

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune.models.registry import get_model
from jaxprune.pruning.effective import effective_mask
from jaxprune.pruning.layer_order import layer_order
from jaxprune.pruning.stats import sparsity_report
from jaxprune.pruning.tree import named_leaves

KEY = jax.random.key(0, impl="rbg")


class MLP(nn.Module):
    widths: tuple[int, ...]

    @nn.compact
    def __call__(self, x):
        for width in self.widths:
            x = nn.Dense(width)(x)
        return x


class ConvChain(nn.Module):
    channels: tuple[int, ...]

    @nn.compact
    def __call__(self, x):
        for c in self.channels:
            x = nn.Conv(c, kernel_size=(3,), padding="SAME")(x)
        return x


class Residual(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.Dense(4, name="stem")(x)
        y = nn.Dense(4, name="branch_a")(h)
        y = nn.Dense(4, name="branch_b")(y)
        return nn.Dense(2, name="head")(h + y)


def apply_of(module):
    return lambda p, x: module.apply({"params": p}, x)


def random_masks(params, density, seed):
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda w: rng.random(w.shape) < density if w.ndim >= 2 else np.ones(w.shape, bool), params
    )


def mlp_walk(kernel_masks):
    """Forward reachability from the inputs and backward from the outputs, on booleans."""
    forward = [np.ones(kernel_masks[0].shape[0], bool)]
    for m in kernel_masks:
        forward.append((m & forward[-1][:, None]).any(0))
    backward = [np.ones(kernel_masks[-1].shape[1], bool)]
    for m in reversed(kernel_masks):
        backward.insert(0, (m & backward[0][None, :]).any(1))
    return [m & forward[i][:, None] & backward[i + 1][None, :] for i, m in enumerate(kernel_masks)]


def mlp_setup(widths, n_in, density, seed):
    model = MLP(widths)
    params = model.init(KEY, jnp.ones((1, n_in)))["params"]
    mask = random_masks(params, density, seed)
    return model, params, mask


def kernels(tree, n):
    return [np.asarray(tree[f"Dense_{i}"]["kernel"]) for i in range(n)]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("density", [0.15, 0.5])
def test_mlp_equals_graph_walk(seed, density):
    widths = (7, 6, 5, 3)
    model, params, mask = mlp_setup(widths, 8, density, seed)
    emask = effective_mask(apply_of(model), params, mask, jnp.ones((1, 8)))
    expected = mlp_walk(kernels(mask, 4))
    for got, want in zip(kernels(emask, 4), expected, strict=True):
        np.testing.assert_array_equal(got, want)
    for i in range(4):  # biases are not prunable and keep their (all-True) mask
        assert np.asarray(emask[f"Dense_{i}"]["bias"]).all()


def test_mlp_equals_brute_force_paths():
    widths = (3, 3, 2)
    model, params, mask = mlp_setup(widths, 3, 0.5, 7)
    ms = kernels(mask, 3)
    on_path = [np.zeros_like(m) for m in ms]
    for path in itertools.product(range(3), range(3), range(3), range(2)):
        hops = list(zip(path[:-1], path[1:], strict=True))
        if all(m[i, j] for m, (i, j) in zip(ms, hops, strict=True)):
            for target, (i, j) in zip(on_path, hops, strict=True):
                target[i, j] = True
    emask = effective_mask(apply_of(model), params, mask, jnp.ones((1, 3)))
    assert 0 < sum(int(m.sum()) for m in on_path) < sum(int(m.sum()) for m in ms)
    for got, want in zip(kernels(emask, 3), on_path, strict=True):
        np.testing.assert_array_equal(got, want)


def test_idempotent_and_never_adds():
    model, params, mask = mlp_setup((6, 6, 6, 3), 5, 0.25, 3)
    fn = apply_of(model)
    once = effective_mask(fn, params, mask, jnp.ones((2, 5)))
    twice = effective_mask(fn, params, once, jnp.ones((2, 5)))
    leaves = [jax.tree.leaves(t) for t in (once, twice, mask)]
    for a, b, m in zip(*leaves, strict=True):
        np.testing.assert_array_equal(a, b)
        assert not (np.asarray(a) & ~np.asarray(m)).any()
    report = sparsity_report(params, mask, effective_mask=once)
    assert report.effective_kept == sum(int(np.asarray(k).sum()) for k in kernels(once, 4))
    assert report.effective_kept < report.kept


def test_layer_pruned_to_zero_disconnects_everything():
    model, params, mask = mlp_setup((5, 5, 3), 4, 1.0, 0)
    mask["Dense_1"]["kernel"] = np.zeros((5, 5), bool)
    emask = effective_mask(apply_of(model), params, mask, jnp.ones((1, 4)))
    assert all(not np.asarray(k).any() for k in kernels(emask, 3))
    assert sparsity_report(params, mask, effective_mask=emask).effective_compression == np.inf


def test_residual_skip_bypasses_pruned_branch():
    model = Residual()
    params = model.init(KEY, jnp.ones((1, 3)))["params"]
    mask = jax.tree.map(lambda w: np.ones(w.shape, bool), params)
    mask["branch_a"]["kernel"] = np.zeros((4, 4), bool)
    emask = effective_mask(apply_of(model), params, mask, jnp.ones((1, 3)))
    assert np.asarray(emask["stem"]["kernel"]).all()
    assert np.asarray(emask["head"]["kernel"]).all()
    assert not np.asarray(emask["branch_b"]["kernel"]).any()
    # Only unit 0 of the branch is fed: branch_b keeps exactly row 0.
    mask["branch_a"]["kernel"][:, 0] = True
    emask = effective_mask(apply_of(model), params, mask, jnp.ones((1, 3)))
    expected = np.zeros((4, 4), bool)
    expected[0] = True
    np.testing.assert_array_equal(emask["branch_b"]["kernel"], expected)


def conv_walk(kernel_masks, length):
    """Explicit graph over (position, channel) units of a SAME-padded 1-D conv chain."""
    forward = [np.ones((length, kernel_masks[0].shape[1]), bool)]
    for m in kernel_masks:
        k, _, c_out = m.shape
        out = np.zeros((length, c_out), bool)
        for p, t in itertools.product(range(length), range(k)):
            q = p + t - k // 2
            if 0 <= q < length:
                out[p] |= (m[t] & forward[-1][q][:, None]).any(0)
        forward.append(out)
    backward = [np.ones((length, kernel_masks[-1].shape[2]), bool)]
    for m in reversed(kernel_masks):
        k, c_in, _ = m.shape
        inp = np.zeros((length, c_in), bool)
        for p, t in itertools.product(range(length), range(k)):
            q = p + t - k // 2
            if 0 <= q < length:
                inp[q] |= (m[t] & backward[0][p][None, :]).any(1)
        backward.insert(0, inp)
    result = []
    for i, m in enumerate(kernel_masks):
        k = m.shape[0]
        eff = np.zeros_like(m)
        for p, t in itertools.product(range(length), range(k)):
            q = p + t - k // 2
            if 0 <= q < length:
                eff[t] |= m[t] & forward[i][q][:, None] & backward[i + 1][p][None, :]
        result.append(eff)
    return result


@pytest.mark.parametrize("seed", [0, 1])
def test_conv_chain_equals_graph_walk(seed):
    length, model = 4, ConvChain((3, 4, 2))
    params = model.init(KEY, jnp.ones((1, length, 2)))["params"]
    mask = random_masks(params, 0.25, seed)
    emask = effective_mask(apply_of(model), params, mask, jnp.ones((1, length, 2)))
    names = [f"Conv_{i}" for i in range(3)]
    expected = conv_walk([np.asarray(mask[n]["kernel"]) for n in names], length)
    assert sum(int(e.sum()) for e in expected) < sum(int(mask[n]["kernel"].sum()) for n in names)
    for name, want in zip(names, expected, strict=True):
        np.testing.assert_array_equal(emask[name]["kernel"], want)


def test_deep_narrow_net_where_float32_path_counts_overflow():
    depth, width = 50, 10
    model, params, mask = mlp_setup((width,) * depth, width, 0.7, 11)
    mask["Dense_20"]["kernel"][:, 0] = False  # unit 0 after layer 20 is fed by nothing
    ms = kernels(mask, depth)
    counts = np.ones(width, np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        for m in ms:
            counts = counts @ m.astype(np.float32)
    assert not np.isfinite(counts).any()  # naive float32 path counting overflows here
    emask = effective_mask(apply_of(model), params, mask, jnp.ones((1, width)))
    expected = mlp_walk(ms)
    assert sum(int(e.sum()) for e in expected) < sum(int(m.sum()) for m in ms)
    for got, want in zip(kernels(emask, depth), expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_zoo_resnet_dense_mask_is_fully_effective_and_pruned_stem_kills_all():
    model = get_model("resnet8", num_classes=3, width=0.25)
    x = jnp.ones((1, 8, 8, 3))
    linear = model.clone(linear=True)
    shapes = jax.eval_shape(linear.init, KEY, x)["params"]  # values are not used
    params = jax.tree.map(lambda s: np.zeros(s.shape, np.float32), shapes)
    fn = lambda p, inp: linear.apply({"params": p}, inp)  # noqa: E731
    dense = jax.tree.map(lambda w: np.ones(w.shape, bool), params)
    emask = effective_mask(fn, params, dense, x)
    assert all(np.asarray(m).all() for m in jax.tree.leaves(emask))
    order = layer_order(fn, params, x)
    cut = jax.tree.map(np.copy, dense)
    first = cut
    for part in order[0].split("/")[:-1]:
        first = first[part]
    first["kernel"] = np.zeros_like(first["kernel"])
    report = sparsity_report(params, cut, effective_mask=effective_mask(fn, params, cut, x))
    assert report.effective_kept == 0


@pytest.mark.parametrize(
    ("name", "kwargs", "shape"),
    [
        ("lenet300", {}, (1, 28, 28, 1)),
        ("lenet5", {"width": 0.1}, (1, 28, 28, 1)),
        ("vgg11", {"width": 0.0625}, (1, 32, 32, 3)),
        ("wrn10_1", {"width": 0.25}, (1, 8, 8, 3)),
    ],
)
def test_every_zoo_family_dense_is_effective_and_empty_head_disconnects(name, kwargs, shape):
    linear = get_model(name, num_classes=3, linear=True, **kwargs)
    x = jnp.ones(shape)
    shapes = jax.eval_shape(linear.init, KEY, x)["params"]
    params = jax.tree.map(lambda s: np.zeros(s.shape, np.float32), shapes)
    fn = lambda p, inp: linear.apply({"params": p}, inp)  # noqa: E731
    dense = jax.tree.map(lambda w: np.ones(w.shape, bool), params)
    assert all(np.asarray(m).all() for m in jax.tree.leaves(effective_mask(fn, params, dense, x)))
    order = layer_order(fn, params, x)
    cut, head = jax.tree.map(np.copy, dense), None
    for part in order[-1].split("/")[:-1]:
        head = (cut if head is None else head)[part]
    head["kernel"] = np.zeros_like(head["kernel"])
    report = sparsity_report(params, cut, effective_mask=effective_mask(fn, params, cut, x))
    assert report.effective_kept == 0


class Permuted(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Dense(4, name="Dense_2")(x)
        x = nn.Dense(4, name="Dense_10")(x)
        x = nn.Dense(4, name="Dense_1")(x)
        return nn.Dense(2, name="a_head")(jax.nn.relu(x))


def test_layer_order_follows_the_forward_pass():
    model = Permuted()
    params = model.init(KEY, jnp.ones((1, 3)))["params"]
    fn = apply_of(model)
    flat = [n for n, _ in named_leaves(params) if n.endswith("kernel")]
    assert flat == ["Dense_1/kernel", "Dense_10/kernel", "Dense_2/kernel", "a_head/kernel"]
    order = layer_order(fn, params, jnp.ones((1, 3)))
    assert order == ["Dense_2/kernel", "Dense_10/kernel", "Dense_1/kernel", "a_head/kernel"]
    assert layer_order(fn, params, jnp.ones((1, 3)), prunable=r"bias") == [
        "Dense_2/bias",
        "Dense_10/bias",
        "Dense_1/bias",
        "a_head/bias",
    ]
