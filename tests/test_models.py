"""Tests for the model zoo: shapes, exact parameter counts, width, BatchNorm, linear mode."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune.models import (
    VGG,
    LeNet5,
    LeNet300,
    ResNet,
    WideResNet,
    count_params,
    get_model,
    layers,
    matching_width,
    model_names,
)
from jaxprune.models.vgg import VGG_CFGS

# An "rbg" key: compiling Flax's initialisers with the default threefry PRNG takes ~20 s per
# model on a busy 2-core CPU, with rbg ~2 s. The models do not depend on the PRNG implementation.
KEY = jax.random.key(0, impl="rbg")
MNIST = (2, 28, 28, 1)


def _shapes(variables):
    return jax.tree.map(lambda leaf: tuple(leaf.shape), variables)


def _param_shapes(model, input_shape):
    """Parameter shapes without running the model (``jax.eval_shape``)."""
    variables = jax.eval_shape(lambda: model.init(KEY, jnp.zeros(input_shape, jnp.float32)))
    return _shapes(variables["params"])


def _init(model, x):
    return jax.jit(model.init)(KEY, x)


def _input(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _zero_biases(params):
    """Zeroes the biases of Dense / Conv layers (norm offsets are left alone)."""
    if "kernel" in params:
        return {**params, **({"bias": jnp.zeros_like(params["bias"])} if "bias" in params else {})}
    return {
        name: _zero_biases(value) if isinstance(value, dict) else value
        for name, value in params.items()
    }


def _kernel_names(params):
    flat, _ = jax.tree_util.tree_flatten_with_path(params)
    return ["/".join(k.key for k in path) for path, leaf in flat if leaf.ndim >= 2]


# ---------------------------------------------------------------- shapes


@pytest.mark.parametrize(
    "name, kwargs, input_shape",
    [
        ("lenet300", {}, MNIST),
        ("lenet5", {}, MNIST),
        ("vgg16", {"width": 1 / 16}, (2, 16, 16, 3)),
        ("vgg19", {"width": 1 / 16}, (2, 16, 16, 3)),
        ("resnet20", {"width": 0.25}, (2, 8, 8, 3)),
        ("resnet32", {"width": 0.25}, (2, 8, 8, 3)),
        ("resnet56", {"width": 0.125}, (2, 8, 8, 3)),
        ("wrn16_2", {"width": 0.25}, (2, 8, 8, 3)),
        ("wrn28_10", {"width": 0.02}, (2, 8, 8, 3)),
    ],
)
def test_output_shape_train_and_eval(name, kwargs, input_shape):
    model = get_model(name, num_classes=7, **kwargs)
    x = _input(input_shape)
    variables = jax.eval_shape(model.init, KEY, x)  # shapes only: no compilation
    logits = jax.eval_shape(model.apply, variables, x)
    assert (logits.shape, logits.dtype) == ((2, 7), jnp.float32)
    train_logits, updates = jax.eval_shape(
        lambda v: model.apply(v, x, train=True, mutable=["batch_stats"]), variables
    )
    assert train_logits.shape == (2, 7)
    assert _shapes(updates.get("batch_stats", {})) == _shapes(variables.get("batch_stats", {}))


# ---------------------------------------------------------------- exact counts


def test_lenet300_counts():
    model = LeNet300(num_classes=10)
    kernels = 784 * 300 + 300 * 100 + 100 * 10
    assert kernels == 266_200
    assert count_params(model, MNIST) == 266_200
    assert count_params(model, MNIST, prunable_only=False) == kernels + 300 + 100 + 10
    shapes = _param_shapes(model, MNIST)
    assert shapes["Dense_0"]["kernel"] == (784, 300)
    assert shapes["Dense_2"]["kernel"] == (100, 10)


def test_lenet5_counts():
    # 28 -conv5-> 24 -pool-> 12 -conv5-> 8 -pool-> 4: the flattened map is 4 * 4 * 50 = 800.
    kernels = 5 * 5 * 1 * 20 + 5 * 5 * 20 * 50 + 800 * 500 + 500 * 10
    biases = 20 + 50 + 500 + 10
    assert (kernels, kernels + biases) == (430_500, 431_080)
    model = LeNet5(num_classes=10)
    assert count_params(model, MNIST) == kernels
    assert count_params(model, MNIST, prunable_only=False) == kernels + biases
    shapes = _param_shapes(model, MNIST)
    assert shapes["Conv_1"]["kernel"] == (5, 5, 20, 50)
    assert shapes["Dense_0"]["kernel"] == (800, 500)


@pytest.mark.parametrize("cfg, name", [("D", "vgg16"), ("E", "vgg19")])
def test_vgg_counts(cfg, name):
    channels = [v for v in VGG_CFGS[cfg] if v != "M"]
    assert len(channels) == {"D": 13, "E": 16}[cfg]
    conv_kernels = sum(
        9 * c_in * c_out for c_in, c_out in zip([3, *channels[:-1]], channels, strict=True)
    )
    head = 512 * 10
    batch_norm = 2 * sum(channels)
    model = get_model(name, 10)
    assert count_params(model, (1, 32, 32, 3)) == conv_kernels + head
    assert count_params(model, (1, 32, 32, 3), prunable_only=False) == (
        conv_kernels + head + 10 + batch_norm
    )
    if cfg == "D":
        assert conv_kernels == 14_710_464
    shapes = jax.eval_shape(lambda: model.init(KEY, jnp.zeros((1, 32, 32, 3))))
    assert shapes["params"]["Dense_0"]["kernel"].shape == (512, 10)
    assert shapes["params"][f"Conv_{len(channels) - 1}"]["kernel"].shape == (3, 3, 512, 512)


def test_resnet20_counts():
    # Option-A ResNet-20 (paper's 0.27M): convs + BN scale/bias + Dense.
    stem = 9 * 3 * 16 + 2 * 16
    stage1 = 6 * 9 * 16 * 16 + 6 * 2 * 16
    stage2 = 9 * 16 * 32 + 5 * 9 * 32 * 32 + 6 * 2 * 32
    stage3 = 9 * 32 * 64 + 5 * 9 * 64 * 64 + 6 * 2 * 64
    dense = 64 * 10 + 10
    option_a = stem + stage1 + stage2 + stage3 + dense
    assert option_a == 269_722
    # Option B adds a 1x1 conv + BN projection at the two stage transitions.
    projections = (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)
    model = ResNet(depth=20, num_classes=10)
    assert count_params(model, (1, 32, 32, 3), prunable_only=False) == option_a + projections
    assert count_params(model, (1, 32, 32, 3), prunable_only=False) == 272_474
    variables = _shapes(jax.eval_shape(lambda: model.init(KEY, jnp.zeros((1, 32, 32, 3)))))
    params = variables["params"]
    assert [k for k in params if k.startswith("BasicBlock_")] == [
        f"BasicBlock_{i}" for i in range(9)
    ]
    assert params["BasicBlock_3"]["shortcut_conv"]["kernel"] == (1, 1, 16, 32)
    assert params["BasicBlock_6"]["shortcut_conv"]["kernel"] == (1, 1, 32, 64)
    assert "shortcut_conv" not in params["BasicBlock_4"]
    stats = variables["batch_stats"]
    assert stats["BasicBlock_3"]["shortcut_norm"]["mean"] == (32,)


def test_wrn28_10_counts_without_allocating():
    def stage(c_in, c_out, n):
        first = 2 * c_in + 9 * c_in * c_out + 2 * c_out + 9 * c_out * c_out + c_in * c_out
        rest = (n - 1) * (2 * c_out + 9 * c_out * c_out + 2 * c_out + 9 * c_out * c_out)
        return first + rest

    n = (28 - 4) // 6
    total = 9 * 3 * 16 + stage(16, 160, n) + stage(160, 320, n) + stage(320, 640, n)
    total += 2 * 640 + 640 * 10 + 10
    assert total == 36_479_194  # The reference WRN-28-10 count.
    model = get_model("wrn28_10", 10)
    assert isinstance(model, WideResNet)
    assert count_params(model, (1, 32, 32, 3), prunable_only=False) == total


# ---------------------------------------------------------------- width


def test_width_multiplier_lenet300():
    model = LeNet300(num_classes=10, width=0.5)
    assert count_params(model, MNIST) == 784 * 150 + 150 * 50 + 50 * 10


def test_width_keeps_output_layer_and_rounds_half_up():
    shapes = _param_shapes(LeNet5(num_classes=10, width=0.05), MNIST)
    # 20 * 0.05 = 1, 50 * 0.05 = 2.5 -> 3, 500 * 0.05 = 25; output stays 10.
    assert shapes["Conv_0"]["kernel"] == (5, 5, 1, 1)
    assert shapes["Conv_1"]["kernel"] == (5, 5, 1, 3)
    assert shapes["Dense_0"]["kernel"] == (4 * 4 * 3, 25)
    assert shapes["Dense_1"]["kernel"] == (25, 10)
    tiny = _param_shapes(LeNet300(width=1e-6), MNIST)
    assert tiny["Dense_0"]["kernel"] == (784, 1)


def test_resnet32_double_width():
    model = get_model("resnet32", 10, width=2)
    shapes = jax.eval_shape(lambda: model.init(KEY, jnp.zeros((1, 32, 32, 3))))["params"]
    assert shapes["Conv_0"]["kernel"].shape == (3, 3, 3, 32)
    assert shapes["BasicBlock_0"]["Conv_0"]["kernel"].shape == (3, 3, 32, 32)
    assert shapes["BasicBlock_5"]["shortcut_conv"]["kernel"].shape == (1, 1, 32, 64)
    assert shapes["BasicBlock_14"]["Conv_1"]["kernel"].shape == (3, 3, 128, 128)
    assert shapes["Dense_0"]["kernel"].shape == (128, 10)


def test_explicit_widths():
    lenet = _param_shapes(LeNet300(widths=(7, 5)), MNIST)
    assert [lenet[f"Dense_{i}"]["kernel"] for i in range(3)] == [(784, 7), (7, 5), (5, 10)]
    vgg_widths = tuple(range(1, 14))
    vgg = _param_shapes(VGG(cfg="D", widths=vgg_widths), (1, 16, 16, 3))
    assert [vgg[f"Conv_{i}"]["kernel"][-1] for i in range(13)] == list(vgg_widths)
    assert vgg["Dense_0"]["kernel"] == (13, 10)
    resnet = ResNet(depth=20, width=0.25, widths=(1, 2, 3, 4, 5, 6, 7, 8, 9))
    shapes = _param_shapes(resnet, (1, 8, 8, 3))
    assert shapes["BasicBlock_4"]["Conv_0"]["kernel"] == (3, 3, 8, 5)
    assert shapes["BasicBlock_4"]["Conv_1"]["kernel"] == (3, 3, 5, 8)


@pytest.mark.parametrize(
    "model, match",
    [
        (VGG(widths=(4,) * 12), "widths must have 13 entries"),
        (LeNet300(widths=(3, 0)), "widths entries must be >= 1"),
        (LeNet300(width=0.0), "width must be > 0, got 0.0"),
        (ResNet(depth=21), "6n \\+ 2.*got 21"),
        (WideResNet(depth=27), "6n \\+ 4.*got 27"),
    ],
)
def test_bad_fields_raise(model, match):
    with pytest.raises(ValueError, match=match):
        _param_shapes(model, (1, 16, 16, 3))


def test_count_params_lenet300_matches_formula_and_matching_width():
    def lenet300_count(width):
        h1, h2 = layers.scaled(300, width), layers.scaled(100, width)
        return 784 * h1 + h1 * h2 + h2 * 10

    # A target that a width hits exactly.
    width = matching_width("lenet300", 10, MNIST, 784 * 150 + 150 * 50 + 50 * 10)
    assert count_params(LeNet300(width=width), MNIST) == 125_600
    # 1% of the weights: no width hits it; the result must be as close as the best on a fine grid.
    target = 2_662
    width = matching_width("lenet300", 10, MNIST, target)
    achieved = count_params(LeNet300(width=width), MNIST)
    assert achieved == lenet300_count(width)
    grid = np.linspace(1 / 4096, 0.1, 20_001)
    best = min(abs(lenet300_count(w) - target) for w in grid)
    assert abs(achieved - target) == best
    assert abs(achieved - target) < 784  # within one first-layer unit
    with pytest.raises(ValueError, match="target_nonzeros must be >= 1"):
        matching_width("lenet300", 10, MNIST, 0)


# ---------------------------------------------------------------- BatchNorm


def test_batchnorm_train_updates_running_stats_eval_uses_them():
    model = ResNet(depth=8, width=0.25, num_classes=5)
    x = _input((4, 8, 8, 3)) * 3.0 + 1.0
    variables = _init(model, x)
    train_logits, updates = model.apply(
        variables,
        x,
        train=True,
        mutable=["batch_stats", "intermediates"],
        capture_intermediates=lambda mdl, _: isinstance(mdl, nn.Conv) and mdl.name == "Conv_0",
    )
    stem_out = np.asarray(updates["intermediates"]["Conv_0"]["__call__"][0], np.float64)
    new_stats = updates["batch_stats"]["BatchNorm_0"]
    # Running average with momentum 0.9 from the initial mean 0 / var 1 (biased batch variance).
    np.testing.assert_allclose(new_stats["mean"], 0.1 * stem_out.mean(axis=(0, 1, 2)), rtol=1e-4)
    np.testing.assert_allclose(
        new_stats["var"], 0.9 + 0.1 * stem_out.var(axis=(0, 1, 2)), rtol=1e-4
    )
    # Eval mode does not mutate (mutable allowed, nothing changes) and differs from train output.
    eval_logits, eval_updates = model.apply(variables, x, mutable=["batch_stats"])
    jax.tree.map(
        np.testing.assert_array_equal, eval_updates["batch_stats"], variables["batch_stats"]
    )
    assert not np.allclose(eval_logits, train_logits, atol=1e-3)
    # Eval output depends on the running averages; train output does not.
    shifted = {
        "params": variables["params"],
        "batch_stats": jax.tree.map(lambda s: s + 0.5, variables["batch_stats"]),
    }
    assert not np.allclose(model.apply(shifted, x), eval_logits, atol=1e-3)
    shifted_train, _ = model.apply(shifted, x, train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(shifted_train, train_logits, rtol=1e-5, atol=1e-5)


def test_wrn_dropout_only_in_train_mode():
    model = WideResNet(depth=10, widen_factor=1, width=0.5, dropout_rate=0.5)
    x = _input((2, 8, 8, 3))
    variables = _init(model, x)
    np.testing.assert_array_equal(model.apply(variables, x), model.apply(variables, x))

    @jax.jit
    def train(seed):
        out, _ = model.apply(
            variables,
            x,
            train=True,
            mutable=["batch_stats"],
            rngs={"dropout": jax.random.key(seed, impl="rbg")},
        )
        return out

    assert not np.allclose(train(1), train(2))


# ---------------------------------------------------------------- linear mode


def test_pool_helper_max_and_average():
    x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    blocks = np.arange(16.0).reshape(2, 2, 2, 2).transpose(0, 2, 1, 3).reshape(2, 2, 4)
    np.testing.assert_array_equal(layers.pool(x, 2, linear=False)[0, ..., 0], blocks.max(-1))
    np.testing.assert_array_equal(layers.pool(x, 2, linear=True)[0, ..., 0], blocks.mean(-1))


def _is_linear(model, variables, input_shape):
    x, y = _input(input_shape, 1), _input(input_shape, 2)
    f = jax.jit(lambda v: model.apply(variables, v))
    fx, fy = np.asarray(f(x), np.float64), np.asarray(f(y), np.float64)
    scale = max(np.abs(fx).max(), np.abs(fy).max())
    assert scale > 0  # a dead network would be trivially "linear"
    additive = np.abs(f(x + y) - (fx + fy)).max() <= 1e-4 * scale
    homogeneous = np.abs(f(2.0 * x) - 2.0 * fx).max() <= 1e-4 * scale
    return bool(additive and homogeneous)


def test_lenet5_linear_mode_is_linear():
    params = _zero_biases(_init(LeNet5(), _input(MNIST))["params"])
    assert _is_linear(LeNet5(linear=True), {"params": params}, MNIST)
    assert not _is_linear(LeNet5(), {"params": params}, MNIST)  # relu / max pool make it nonlinear


@pytest.mark.parametrize(
    "model, input_shape",
    [
        (LeNet300(width=0.1), MNIST),
        (VGG(cfg="D", width=1 / 16), (2, 16, 16, 3)),
        (ResNet(depth=8, width=0.25), (2, 8, 8, 3)),
        (WideResNet(depth=10, widen_factor=2, width=0.5, dropout_rate=0.3), (2, 8, 8, 3)),
    ],
)
def test_linear_mode_skips_batchnorm_and_is_linear(model, input_shape):
    x = _input(input_shape)
    variables = _init(model, x)
    # Norms far from identity (scale 2, offset 0.5): applying them would break linearity.
    variables = jax.tree_util.tree_map_with_path(
        lambda path, leaf: (
            jnp.full_like(leaf, {"scale": 2.0, "bias": 0.5}[path[-1].key])
            if leaf.ndim == 1 and path[-1].key in ("scale", "bias")
            else leaf
        ),
        variables,
    )
    linear_model = model.clone(linear=True)
    linear_variables = jax.eval_shape(linear_model.init, KEY, x)
    assert set(linear_variables) == {"params"}  # no norms -> no batch_stats
    assert _kernel_names(linear_variables["params"]) == _kernel_names(variables["params"])
    params = _zero_biases(variables["params"])
    assert _is_linear(linear_model, {"params": params}, input_shape)
    assert not _is_linear(model, {**variables, "params": params}, input_shape)
    # Extra norm variables are ignored, train mode changes nothing (no norm, no dropout).
    expected = linear_model.apply({"params": params}, x)
    np.testing.assert_array_equal(
        linear_model.apply({**variables, "params": params}, x, train=True), expected
    )


# ---------------------------------------------------------------- registry


def test_registry_names_and_kwargs():
    names = model_names()
    for required in ["lenet300", "lenet5", "vgg16", "vgg19", "resnet20", "resnet32", "resnet56"]:
        assert required in names
    assert "wrn28_10" in names
    classes = {name: type(get_model(name, 10)) for name in names}
    assert classes["lenet300"] is LeNet300 and classes["lenet5"] is LeNet5
    assert classes["vgg19"] is VGG and get_model("vgg19", 10).cfg == "E"
    assert get_model("vgg16", 10).cfg == "D"
    resnet = get_model("ResNet110", 100, width=0.5, linear=True)
    assert (resnet.depth, resnet.num_classes, resnet.width, resnet.linear) == (110, 100, 0.5, True)
    wrn = get_model("wrn40_4", 10, dropout_rate=0.3)
    assert (wrn.depth, wrn.widen_factor, wrn.dropout_rate) == (40, 4, 0.3)
    bf16 = get_model("lenet300", 10, dtype=jnp.bfloat16)
    assert (
        jax.eval_shape(bf16.apply, _init(bf16, _input(MNIST)), _input(MNIST)).dtype == jnp.bfloat16
    )


@pytest.mark.parametrize("name", ["resnet9000x", "alexnet", "resnet21", "wrn27_10"])
def test_unknown_model_name(name):
    with pytest.raises(KeyError) as info:
        get_model(name, 10)
    message = str(info.value)
    assert repr(name) in message
    assert "lenet300" in message and "resnet20" in message and "wrn28_10" in message


def test_bad_num_classes():
    with pytest.raises(ValueError, match="num_classes must be a positive int, got 0"):
        get_model("lenet300", 0)
