"""Paper-scale zoo models: ImageNet ResNets, MobileNet-V1, WRN-28-8 (counts, shapes, names)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxprune as jp
from jaxprune.models import get_model, model_names
from jaxprune.models.mobilenet import MobileNetV1
from jaxprune.models.resnet_cifar import ResNet
from jaxprune.models.resnet_imagenet import ResNetImageNet

# rbg keys compile Flax's initialisers much faster on CPU (see tests/test_models.py).
KEY = jax.random.key(0, impl="rbg")
IMAGENET = (1, 224, 224, 3)
CIFAR = (1, 32, 32, 3)


def _variable_shapes(model, input_shape):
    """Variable shapes without allocating anything (``jax.eval_shape`` of ``model.init``)."""
    return jax.eval_shape(lambda: model.init(KEY, jnp.zeros(input_shape, jnp.float32)))


def _count(model, input_shape):
    """Number of ``params`` entries (BatchNorm running statistics are not counted)."""
    params = _variable_shapes(model, input_shape)["params"]
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params))


def _input(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _mobilenet_count(alpha, classes=1000):
    """MobileNet-V1 ``params`` by hand: stem 3x3x3xC conv + BN (scale, offset); per block a 3x3
    depthwise conv (9c) + BN (2c), a 1x1 conv (c*d) + BN (2d); classifier 1024*alpha*classes
    weights + classes biases. Channels are ``int(c * alpha)`` (exact for alpha = 1, 0.5)."""
    outs = [64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024]
    c = int(32 * alpha)
    total = 27 * c + 2 * c
    for d in outs:
        d = int(d * alpha)
        total += 9 * c + 2 * c + c * d + 2 * d
        c = d
    return total + c * classes + classes


# ---------------------------------------------------------------- parameter counts


@pytest.mark.parametrize(
    "name, kwargs, input_shape, expected",
    [
        # torchvision.models.resnet{18,34,50}(): sum(p.numel() for p in m.parameters()).
        ("resnet18", {}, IMAGENET, 11_689_512),
        ("resnet34", {}, IMAGENET, 21_797_672),
        ("resnet50", {}, IMAGENET, 25_557_032),
        ("resnet101", {}, IMAGENET, 44_549_160),
        ("resnet152", {}, IMAGENET, 60_192_808),
        # Howard et al. 2017 / Keras MobileNet(alpha=1.0) trainable params: 928 (stem) +
        # 3,206,048 (13 blocks) + 1,025,000 (classifier) = 4,231,976.
        ("mobilenet_v1", {}, IMAGENET, 4_231_976),
        # alpha = 0.5: 16*27 + 32 = 464 (stem) + 842,128 (blocks) + 512*1000 + 1000 = 1,331,592
        # (Keras' 1.34M total adds 10,944 BatchNorm running means / variances).
        ("mobilenet_v1", {"width": 0.5}, IMAGENET, 1_331_592),
        # WRN-28-8, 10 classes: stem 3*3*3*16 = 432; stage widths 128/256/512, 4 blocks each
        # (two 3x3 convs + 2 pre-activation BNs, 1x1 shortcut in each stage's first block),
        # final BN 2*512, Dense 512*10 + 10: 23,354,842 (paper: 23.4M).
        ("wrn28_8", {}, CIFAR, 23_354_842),
    ],
)
def test_parameter_counts(name, kwargs, input_shape, expected):
    num_classes = 1000 if input_shape == IMAGENET else 10
    assert _count(get_model(name, num_classes, **kwargs), input_shape) == expected


def test_mobilenet_count_formula_and_wrn28_8_near_paper():
    assert _mobilenet_count(1.0) == 4_231_976
    assert _mobilenet_count(0.5) == 1_331_592
    assert abs(23_354_842 - 23.4e6) / 23.4e6 < 0.005


def test_mobilenet_width_truncates_like_keras():
    # 32 * 0.3 = 9.6 -> 9 channels in the stem, 64 * 0.3 = 19.2 -> 19 (int(), not rounding).
    shapes = _variable_shapes(MobileNetV1(width=0.3, num_classes=5), (1, 32, 32, 3))["params"]
    assert shapes["Conv_0"]["kernel"].shape == (3, 3, 3, 9)
    block = shapes["DepthwiseSeparable_0"]
    assert block["depthwise"]["kernel"].shape == (3, 3, 1, 9)
    assert block["pointwise"]["kernel"].shape == (1, 1, 9, 19)


# ---------------------------------------------------------------- registry


def test_resnet50_is_imagenet_and_cifar_depth50_has_explicit_name():
    imagenet = get_model("resnet50", 10)
    assert isinstance(imagenet, ResNetImageNet) and imagenet.depth == 50
    for spelling in ("ResNet-50", "resnet_50"):
        assert isinstance(get_model(spelling, 10), ResNetImageNet)
    cifar = get_model("resnet50_cifar", 10)
    assert isinstance(cifar, ResNet) and cifar.depth == 50
    assert _count(cifar, CIFAR) == 758_554
    assert _count(imagenet, CIFAR) != _count(cifar, CIFAR)
    for name in ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet20_cifar"):
        model = get_model(name, 10)
        assert isinstance(model, ResNet), name
    assert get_model("resnet110", 10).depth == 110
    for name in ("resnet18", "resnet34"):
        assert isinstance(get_model(name, 10), ResNetImageNet)
    assert isinstance(get_model("MobileNet-V1", 10, width=0.5), MobileNetV1)
    names = model_names()
    for name in ("resnet18", "resnet34", "resnet50", "resnet50_cifar", "mobilenet_v1", "wrn28_8"):
        assert name in names
    with pytest.raises(KeyError, match="resnet18_cifar"):
        get_model("resnet18_cifar", 10)  # 18 is not 6n + 2


# ---------------------------------------------------------------- forward passes


@pytest.mark.parametrize(
    "name",
    ["resnet18", "mobilenet_v1"],
)
def test_output_shape_train_and_eval(name):
    model = get_model(name, num_classes=7, width=0.25)
    x = _input((2, 64, 64, 3))
    variables = jax.jit(model.init)(KEY, x)
    assert set(variables) == {"params", "batch_stats"}
    logits = jax.jit(model.apply)(variables, x)
    assert logits.shape == (2, 7) and bool(jnp.all(jnp.isfinite(logits)))
    train_logits, updates = jax.jit(
        lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"])
    )(variables, x)
    assert train_logits.shape == (2, 7)
    assert jax.tree.structure(updates["batch_stats"]) == jax.tree.structure(
        variables["batch_stats"]
    )


def test_resnet18_prunable_kernels():
    params = _variable_shapes(get_model("resnet18", 1000), IMAGENET)["params"]
    names = jp.prunable_names(params)
    # 1 stem conv + 8 blocks x 2 convs + 3 downsample 1x1 convs (stages 2-4) + fc = 21.
    assert len(names) == 21
    assert names.count("Dense_0/kernel") == 1 and "Conv_0/kernel" in names
    assert sum("shortcut_conv" in n for n in names) == 3
    assert all(n.endswith("/kernel") for n in names)
    table = jp.describe(params)
    assert "BasicBlock_7/Conv_1/kernel" in table and "Dense_0/kernel" in table


def test_resnet50_and_mobilenet_prunable_kernels():
    resnet = jp.prunable_names(_variable_shapes(get_model("resnet50", 1000), IMAGENET)["params"])
    # 1 stem + 16 bottlenecks x 3 convs + 4 downsample convs + fc = 54.
    assert len(resnet) == 54
    mobilenet = jp.prunable_names(
        _variable_shapes(get_model("mobilenet_v1", 1000), IMAGENET)["params"]
    )
    # stem + 13 x (depthwise + pointwise) + fc = 28.
    assert len(mobilenet) == 28
    assert "DepthwiseSeparable_12/depthwise/kernel" in mobilenet


# ---------------------------------------------------------------- linear mode


def _with_norms_far_from_identity_and_zero_biases(variables):
    def leaf_fn(path, leaf):
        key = path[-1].key
        if path[0].key == "params" and key == "bias" and "Dense" in str(path):
            return jnp.zeros_like(leaf)  # the classifier bias
        if path[0].key == "params" and key in ("scale", "bias"):
            return jnp.full_like(leaf, {"scale": 2.0, "bias": 0.5}[key])
        return leaf

    return jax.tree_util.tree_map_with_path(leaf_fn, variables)


def _is_linear(model, variables, x):
    f = jax.jit(lambda v: model.apply(variables, v))
    fx = np.asarray(f(x), np.float64)
    scale = np.abs(fx).max()
    assert scale > 0
    return bool(np.abs(np.asarray(f(2.0 * x)) - 2.0 * fx).max() <= 1e-4 * scale)


@pytest.mark.parametrize(
    "model",
    [ResNetImageNet(depth=18, width=0.125, num_classes=5), MobileNetV1(width=0.25, num_classes=5)],
)
def test_linear_mode_is_linear(model):
    x = _input((2, 32, 32, 3))
    variables = _with_norms_far_from_identity_and_zero_biases(jax.jit(model.init)(KEY, x))
    linear_model = model.clone(linear=True)
    linear_shapes = jax.eval_shape(linear_model.init, KEY, x)
    assert set(linear_shapes) == {"params"}  # no BatchNorm at all
    assert jp.prunable_names(linear_shapes["params"]) == jp.prunable_names(variables["params"])
    assert _is_linear(linear_model, {"params": variables["params"]}, x)
    assert not _is_linear(model, variables, x)


@pytest.mark.parametrize(
    "name, published",
    [("resnet50", 4.1e9), ("mobilenet_v1", 569e6)],  # Gupta et al. / Howard et al. MACs
)
def test_flops_at_224px_match_the_published_macs(name, published):
    model = get_model(name, 1000)
    x = jnp.zeros((1, 224, 224, 3))
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
    params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes["params"])
    stats = jax.tree.map(lambda s: np.ones(s.shape, s.dtype), shapes["batch_stats"])
    report = jp.flops_report(
        lambda p, x: model.apply({"params": p, "batch_stats": stats}, x, train=False), params, x
    )
    assert abs(report.total_flops / published - 1) < 0.02, report.total_flops
    assert report.total_flops == {"resnet50": 4_089_184_256, "mobilenet_v1": 568_740_352}[name]


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v1"])
def test_effective_mask_on_the_imagenet_models(name):
    model = get_model(name, 10, width=0.125)
    # 64px leaves 2x2 maps at the last stage, where every 3x3 tap still sees a real pixel (on a
    # 1x1 map only the centre tap would: the others are rightly not effective).
    x = jnp.zeros((1, 64, 64, 3))
    variables = jax.jit(lambda k: model.init(k, x, train=False))(jax.random.key(0))
    params = variables["params"]

    def apply_fn(p, x):
        return model.apply({"params": p, "batch_stats": variables["batch_stats"]}, x, train=False)

    def effective(mask):
        emask = jp.effective_mask(apply_fn, params, mask, x)
        for e, m in zip(jax.tree.leaves(emask), jax.tree.leaves(mask), strict=True):
            assert not np.any(np.asarray(e) & ~np.asarray(m))  # a subset of the kept weights
        return jp.sparsity_report(params, mask, effective_mask=emask)

    dense = jax.tree.map(lambda p: np.ones(p.shape, bool), params)
    full = effective(dense)
    assert full.effective_kept == full.kept == full.total  # every weight on a path
    # Every path ends in the classifier: without it no weight is effective.
    cut = jax.tree.map(np.array, dense)
    cut["Dense_0"]["kernel"][:] = False
    assert effective(cut).effective_kept == 0
