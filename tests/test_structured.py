"""Tests for structured (filter / channel) pruning: selection, slimming, masks and shrinking.

The end-to-end tests pin down the central claim: the narrow model built from ``shrink`` computes
exactly the function of the wide model with ``channel_masks`` applied (eval mode, non-trivial
BatchNorm statistics), for LeNet-5, VGG and ResNet.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxprune.models import channels, get_model
from jaxprune.pruning import structured as sp
from jaxprune.pruning.structured import ChannelGroup

KEY = jax.random.key(0, impl="rbg")
MNIST = (2, 28, 28, 1)
CIFAR = (2, 32, 32, 3)


def _input(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _shapes(tree):
    return jax.tree.map(lambda leaf: tuple(np.shape(leaf)), tree)


def _abstract_variables(model, shape):
    """Zero variables with the model's shapes, without compiling ``init``."""
    abstract = jax.eval_shape(lambda: model.init(KEY, jnp.zeros(shape, jnp.float32)))
    return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), abstract)


def _random_variables(model, shape, seed=1):
    """Random variables with the model's shapes, without compiling ``init``.

    Kernels are N(0, 1/fan_in) so activations stay O(1); everything else (biases, BatchNorm
    scale / bias / running mean) is random too and running variances lie in [0.5, 2], so no
    BatchNorm is the identity.
    """
    rng = np.random.default_rng(seed)

    def leaf(path, s):
        name = path[-1].key
        if name == "kernel":
            fan_in = int(np.prod(s.shape[:-1]))
            return rng.standard_normal(s.shape).astype(s.dtype) / np.sqrt(fan_in)
        if name == "var":
            return rng.uniform(0.5, 2.0, s.shape).astype(s.dtype)
        return (0.5 * rng.standard_normal(s.shape)).astype(s.dtype)

    abstract = jax.eval_shape(lambda: model.init(KEY, jnp.zeros(shape, jnp.float32)))
    return jax.tree_util.tree_map_with_path(leaf, abstract)


def _random_kept(groups, seed):
    rng = np.random.default_rng(seed)
    kept = {}
    for g in groups:
        k = int(rng.integers(1, g.size)) if g.size > 1 else 1
        kept[g.name] = np.sort(rng.choice(g.size, k, replace=False))
    return kept


# --------------------------------------------------------------------------- filter_l1_norms


def test_filter_l1_norms_hand_made():
    kernel = np.array([[1.0, -2.0, 0.0], [-3.0, 0.5, 0.0]])  # Dense (in=2, out=3)
    group = ChannelGroup("Dense_0", 3, (("params/Dense_0/kernel", 1),), (), "params/Dense_0/kernel")
    norms = sp.filter_l1_norms({"params": {"Dense_0": {"kernel": kernel}}}, [group])
    np.testing.assert_array_equal(norms["Dense_0"], [4.0, 2.5, 0.0])


@pytest.mark.parametrize(
    "name, kwargs, shape",
    [("lenet5", {}, MNIST), ("vgg11", {"width": 0.125}, CIFAR)],
)
def test_filter_l1_norms_match_numpy(name, kwargs, shape):
    model = get_model(name, 10, **kwargs)
    # LeNet-5: a real init; VGG: random variables of the right shapes (no init compile).
    variables = (
        jax.jit(model.init)(KEY, _input(shape))
        if name == "lenet5"
        else _random_variables(model, shape)
    )
    groups = channels.channel_groups(model, variables)
    norms = sp.filter_l1_norms(variables, groups)
    assert list(norms) == [g.name for g in groups]
    for g in groups:
        kernel = np.asarray(variables["params"][g.name]["kernel"], np.float64)
        axes = (0, 1, 2) if kernel.ndim == 4 else (0,)
        assert norms[g.name].shape == (kernel.shape[-1],)
        np.testing.assert_allclose(norms[g.name], np.abs(kernel).sum(axis=axes), rtol=1e-12)


# --------------------------------------------------------------------------- select_top


def test_select_top_exact_ties_and_extremes():
    scores = {
        "a": np.array([3.0, 1.0, 3.0, 2.0]),  # ratio 0.5 -> keep 2: the two 3.0s
        "b": np.array([1.0, 1.0, 1.0, 1.0, 1.0]),  # ties -> lower indices; round(0.5*5)=3 pruned
        "c": np.array([0.1, 0.9, 0.5]),  # ratio 0 -> everything
        "d": np.array([0.1, 0.9, 0.5]),  # ratio 1 -> keeps exactly 1 (the best)
        "e": np.array([5.0, 4.0]),  # missing from ratios -> everything
        "f": np.array([0.2, 0.1, 0.7]),  # ratio 0.9: round(2.7)=3 pruned -> clamped to keep 1
    }
    ratios = {"a": 0.5, "b": 0.5, "c": 0.0, "d": 1.0, "f": 0.9}
    kept = sp.select_top(scores, ratios)
    expected = {"a": [0, 2], "b": [0, 1], "c": [0, 1, 2], "d": [1], "e": [0, 1], "f": [2]}
    assert set(kept) == set(expected)
    for name, idx in expected.items():
        np.testing.assert_array_equal(kept[name], idx)
        assert kept[name].dtype == np.int64


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.integers(-5, 5), min_size=1, max_size=12),
    st.floats(0.0, 1.0),
)
def test_select_top_property(values, ratio):
    scores = np.array(values, np.float64)
    kept = sp.select_top({"g": scores}, {"g": ratio})["g"]
    n = scores.size
    assert kept.size == max(1, n - math.floor(ratio * n + 0.5)) or abs(ratio * n % 1 - 0.5) < 1e-9
    assert np.all(np.diff(kept) > 0)
    dropped = np.setdiff1d(np.arange(n), kept)
    if dropped.size:
        # every kept score beats every dropped one, ties resolved towards lower indices
        for i in kept:
            for j in dropped:
                assert scores[i] > scores[j] or (scores[i] == scores[j] and i < j)


@pytest.mark.parametrize("ratio", [1.5, -0.1, float("nan"), "x"])
def test_select_top_bad_ratio(ratio):
    with pytest.raises(ValueError, match=r"group 'a'"):
        sp.select_top({"a": np.ones(3)}, {"a": ratio})


def test_select_top_bad_input():
    with pytest.raises(ValueError, match=r"\['zz'\]"):
        sp.select_top({"a": np.ones(3)}, {"zz": 0.5})
    with pytest.raises(ValueError, match=r"scores\['a'\] contains NaN"):
        sp.select_top({"a": np.array([1.0, np.nan])}, {"a": 0.5})
    with pytest.raises(ValueError, match=r"rounding must be one of \['round', 'floor'\]"):
        sp.select_top({"a": np.ones(3)}, {"a": 0.5}, rounding="ceil")


@pytest.mark.parametrize(
    ("ratio", "n", "rounded", "floored"),
    [
        (0.1, 32, 29, 28),  # ResNet-56-A/B stage 2: Li et al. keep int(0.9 * 32) = 28
        (0.1, 64, 58, 57),  # stage 3: int(0.9 * 64) = 57
        (0.1, 16, 14, 14),
        (0.6, 16, 6, 6),  # ResNet-56-B stage 1
        (0.3, 32, 22, 22),  # ResNet-56-B stage 2
        (0.5, 64, 32, 32),
        (0.25, 2, 1, 1),  # half a channel: round prunes it (half up), floor keeps 1.5 -> 1
        (0.9, 10, 1, 1),  # exact decimal: float int(10 * (1 - 0.9)) would give 0
        (1.0, 8, 1, 1),  # never empty
        (0.0, 8, 8, 8),
    ],
)
def test_n_kept_round_and_floor(ratio, n, rounded, floored):
    assert sp.n_kept(ratio, n) == rounded
    assert sp.n_kept(ratio, n, "floor") == floored
    assert floored == max(1, math.floor(round((1 - ratio) * n, 9)))


def test_select_top_floor_keeps_li_et_al_count():
    scores = np.random.default_rng(0).permutation(64).astype(np.float64)
    kept = sp.select_top({"g": scores}, {"g": 0.1}, rounding="floor")["g"]
    np.testing.assert_array_equal(kept, np.flatnonzero(scores >= 64 - 57))
    assert sp.select_top({"g": scores}, {"g": 0.1})["g"].size == 58
    with pytest.raises(ValueError, match="rounding must be one of"):
        sp.n_kept(0.1, 4, "nearest")


# --------------------------------------------------------------------------- Li et al. ResNet-56

# Li et al. (2017), Table 1: FLOPs of ResNet-56 on CIFAR-10 and its pruned versions A and B.
# They count conv + fc multiply-accumulates per example (BatchNorm, ReLU and residual adds not
# counted) with zero-padding (option A) shortcuts, which cost nothing: the dense ResNet-56 is
# 125,485,696 MACs (1.25e8). Our option-B projections add 2 x 131,072 MACs, left out below.
LI_FLOPS = {"dense": 1.25e8, "A": 1.12e8, "B": 9.09e7}
LI_WIDTHS = {  # kept filters of each block's first conv: int((1 - r) * n), skipped blocks intact
    "A": [14] * 7 + [16, 14] + [32] + [28] * 8 + [64] + [57] * 7 + [64],
    "B": [6] * 7 + [16, 16] + [32] + [22] * 6 + [32, 22] + [64] + [57] * 7 + [64],
}


def _option_a_macs(model):
    """Conv + fc MACs per example of ``model`` without its 1x1 projection shortcuts."""
    import jaxprune as jp

    linear = model.clone(linear=True)
    x = jnp.zeros((1, 32, 32, 3), jnp.float32)
    params = jax.eval_shape(lambda: linear.init(KEY, x))["params"]
    report = jp.flops_report(lambda p, x: linear.apply({"params": p}, x), params, x)
    projections = sum(layer.flops for layer in report.layers if "shortcut" in layer.name)
    return report.total_flops - projections, projections


@pytest.fixture(scope="module")
def resnet56():
    model = get_model("resnet56", 10)
    return model, _random_variables(model, (1, 32, 32, 3))


def test_resnet56_dense_flops_and_projection_share(resnet56):
    macs, projections = _option_a_macs(resnet56[0])
    assert macs == 125_485_696
    assert abs(macs / LI_FLOPS["dense"] - 1) < 0.01
    assert projections == 2 * 131_072
    assert round(100 * projections / macs, 2) == 0.21  # the config docstring's figure


@pytest.mark.parametrize("variant", ["A", "B"])
def test_resnet56_li_et_al_widths_and_flops_from_config(resnet56, variant):
    from configs import resnet56_cifar10_l1_filter
    from jaxprune.training import channel_pruning

    model, variables = resnet56
    config = resnet56_cifar10_l1_filter.get_config(variant)
    assert config.model.name == "resnet56"
    narrow, _, record = channel_pruning.prune_structured(config.structured, model, variables)
    assert record["widths"] == LI_WIDTHS[variant]
    assert narrow.widths == tuple(LI_WIDTHS[variant])
    macs, _ = _option_a_macs(narrow)
    assert abs(macs / LI_FLOPS[variant] - 1) < 0.01, macs


def test_resnet56_a_rounded_widths_miss_the_published_flops(resnet56):
    """Rounding the pruned count (29 of 32, 58 of 64) is 1.9% off Li et al.'s 1.12e8."""
    from configs import resnet56_cifar10_l1_filter
    from jaxprune.training import channel_pruning, config_check

    assert set(config_check.STRUCTURED_ROUNDINGS) == set(sp.ROUNDINGS)
    model, variables = resnet56
    block = resnet56_cifar10_l1_filter.get_config("A").structured
    block.rounding = "round"
    narrow, _, record = channel_pruning.prune_structured(block, model, variables)
    assert record["widths"][10:18] == [29] * 8 and record["widths"][19:26] == [58] * 7
    macs, _ = _option_a_macs(narrow)
    assert abs(macs / LI_FLOPS["A"] - 1) > 0.01


# --------------------------------------------------------------------------- layer_ratios


def test_layer_ratios_vgg16_a():
    names = [f"Conv_{i}" for i in range(13)]
    ratios = sp.layer_ratios(names, 0.0, overrides=[(r"^Conv_(0|7|8|9|10|11|12)$", 0.5)])
    assert ratios == {
        n: (0.5 if n in {"Conv_0", *(f"Conv_{i}" for i in range(7, 13))} else 0.0) for n in names
    }


def test_layer_ratios_priority_and_skip():
    groups = [
        ChannelGroup(n, 2, ((f"params/{n}/kernel", 1),), (), f"params/{n}/kernel")
        for n in ["Conv_0", "Conv_1", "Conv_10", "Conv_12", "Dense_0"]
    ]
    ratios = sp.layer_ratios(
        groups, 0.3, overrides=[("Conv_1", 0.9), ("Conv_", 0.2)], skip=[r"_12$"]
    )
    # 'Conv_1' re.search-es 'Conv_10' too; first matching override wins; skip beats overrides.
    assert ratios == {"Conv_0": 0.2, "Conv_1": 0.9, "Conv_10": 0.9, "Conv_12": 0.0, "Dense_0": 0.3}
    assert list(ratios) == [g.name for g in groups]


def test_layer_ratios_errors():
    with pytest.raises(ValueError, match=r"'Conv_\(' is not a valid regex"):
        sp.layer_ratios(["Conv_0"], 0.5, overrides=[("Conv_(", 0.1)])
    with pytest.raises(ValueError, match=r"skip regex '\['"):
        sp.layer_ratios(["Conv_0"], 0.5, skip=["["])
    with pytest.raises(ValueError, match=r"override ratio for 'Conv'.*got 2"):
        sp.layer_ratios(["Conv_0"], 0.5, overrides=[("Conv", 2)])
    with pytest.raises(ValueError, match=r"default ratio.*got -1"):
        sp.layer_ratios(["Conv_0"], -1)


# --------------------------------------------------------------------------- slimming_select


def _bn_groups(gammas):
    groups, params = [], {}
    for name, gamma in gammas.items():
        gamma = np.asarray(gamma, np.float32)
        params[name] = {"scale": gamma}
        scale = f"params/{name}/scale"
        groups.append(ChannelGroup(name, gamma.size, ((scale, 0),), (), scale, scale))
    return {"params": params}, groups


def test_slimming_hand_example():
    variables, groups = _bn_groups(
        {"a": [0.1, -0.5, 0.3], "b": [0.01, 0.02], "c": [1.0, -0.2], "d": [0.01, -0.01]}
    )
    # N = 9, round(0.5 * 9) = 5 pruned: sorted |g| = .01 .01 .01 .02 .1 | .2 .3 .5 1 -> t = 0.1
    kept, t = sp.slimming_select(variables, groups, 0.5)
    assert t == pytest.approx(0.1)
    np.testing.assert_array_equal(kept["a"], [1, 2])
    np.testing.assert_array_equal(kept["b"], [1])  # all <= t: rescued with its largest |gamma|
    np.testing.assert_array_equal(kept["c"], [0, 1])
    np.testing.assert_array_equal(kept["d"], [0])  # rescued; |gamma| tie -> lower index
    kept0, t0 = sp.slimming_select(variables, groups, 0.0)
    assert t0 == -math.inf and all(kept0[g.name].size == g.size for g in groups)
    kept1, _ = sp.slimming_select(variables, groups, 1.0)
    assert [kept1[n].tolist() for n in "abcd"] == [[1], [1], [0], [0]]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(1, 6), min_size=1, max_size=4),
    st.data(),
    st.floats(0.0, 1.0),
)
def test_slimming_property(sizes, data, ratio):
    n = sum(sizes)
    magnitudes = data.draw(
        st.lists(st.floats(1 / 1024, 10.0, width=32), min_size=n, max_size=n, unique=True)
    )
    signs = data.draw(st.lists(st.sampled_from([-1.0, 1.0]), min_size=n, max_size=n))
    values = np.array(magnitudes, np.float32) * np.array(signs, np.float32)
    splits = np.split(values, np.cumsum(sizes)[:-1])
    variables, groups = _bn_groups({f"g{i}": v for i, v in enumerate(splits)})
    kept, t = sp.slimming_select(variables, groups, ratio)
    absolute = np.abs(values).astype(np.float64)
    n_below = int((absolute <= t).sum())
    assert abs(n_below - ratio * n) <= 0.5 + 1e-6  # round(ratio * N) pruned by the threshold
    rescued = 0
    for g, gamma in zip(groups, splits, strict=True):
        a = np.abs(gamma).astype(np.float64)
        k = kept[g.name]
        assert k.size >= 1
        if np.all(a <= t):
            rescued += 1
            assert k.tolist() == [int(np.argmax(a))]
        else:
            assert np.all(a[k] > t)
            assert np.all(a[np.setdiff1d(np.arange(g.size), k)] <= t)
    assert sum(kept[g.name].size for g in groups) == n - n_below + rescued


def test_slimming_errors():
    variables, groups = _bn_groups({"a": [1.0, 2.0]})
    with pytest.raises(ValueError, match=r"slimming ratio.*got 1.5"):
        sp.slimming_select(variables, groups, 1.5)
    model = get_model("vgg11", 10, width=0.125, linear=True)  # no BatchNorm at all
    linear_groups = channels.channel_groups(model, _abstract_variables(model, CIFAR))
    assert all(g.bn_scale is None for g in linear_groups)
    with pytest.raises(ValueError, match=r"groups without: \['Conv_0', 'Conv_1',"):
        sp.slimming_select({"params": {}}, linear_groups, 0.5)


# --------------------------------------------------------------------------- shrink / masks


def test_shrink_repeat_and_two_consumer_axes():
    size = 3
    producer = np.arange(2 * size, dtype=np.float32).reshape(2, size)  # Dense in=2, out=3
    consumer = np.arange(6 * 4, dtype=np.float32).reshape(6, 4)  # rows = 2 positions x 3 channels
    variables = {"params": {"P": {"kernel": jnp.asarray(producer)}, "C": {"kernel": consumer}}}
    groups = [
        ChannelGroup(
            "P", size, (("params/P/kernel", 1),), (("params/C/kernel", 0, 2),), "params/P/kernel"
        ),
        ChannelGroup("C", 4, (("params/C/kernel", 1),), (), "params/C/kernel"),
    ]
    kept = {"P": [2, 0], "C": np.array([3, 1])}  # unsorted input is sorted
    out = sp.shrink(variables, groups, kept)
    assert isinstance(out["params"]["P"]["kernel"], np.ndarray)
    np.testing.assert_array_equal(out["params"]["P"]["kernel"], producer[:, [0, 2]])
    # rows p * 3 + c for p in (0, 1), c in (0, 2) -> 0, 2, 3, 5; columns 1, 3
    np.testing.assert_array_equal(
        out["params"]["C"]["kernel"], consumer[np.ix_([0, 2, 3, 5], [1, 3])]
    )
    assert sp.kept_widths(groups, kept) == (2, 2)
    # the input was not modified
    assert variables["params"]["C"]["kernel"].shape == (6, 4)
    # the mask marks only the producer slices of the dropped channels
    mask = sp.channel_masks(variables, groups, kept)
    np.testing.assert_array_equal(mask["P"]["kernel"], np.tile([True, False, True], (2, 1)))
    np.testing.assert_array_equal(mask["C"]["kernel"], np.tile([False, True, False, True], (6, 1)))


def test_shrink_errors():
    variables = {"params": {"P": {"kernel": np.zeros((2, 3))}, "C": {"kernel": np.zeros((3, 4))}}}
    group = ChannelGroup(
        "P", 3, (("params/P/kernel", 1),), (("params/C/kernel", 0, 1),), "params/P/kernel"
    )
    with pytest.raises(ValueError, match=r"kept is missing channel group 'P'"):
        sp.shrink(variables, [group], {})
    with pytest.raises(ValueError, match=r"unknown channel groups \['Q'\]"):
        sp.shrink(variables, [group], {"P": [0], "Q": [0]})
    with pytest.raises(ValueError, match=r"kept\['P'\] has indices out of range \[0, 3\): \[3\]"):
        sp.shrink(variables, [group], {"P": [0, 3]})
    with pytest.raises(ValueError, match=r"kept\['P'\] has duplicate indices"):
        sp.channel_masks(variables, [group], {"P": [1, 1]})
    with pytest.raises(ValueError, match=r"kept\['P'\] is empty"):
        sp.kept_widths([group], {"P": []})
    bad = {"params": {"P": {"kernel": np.zeros((2, 3))}, "C": {"kernel": np.zeros((5, 4))}}}
    with pytest.raises(ValueError, match=r"'P': consumer 'params/C/kernel' has shape \(5, 4\)"):
        sp.shrink(bad, [group], {"P": [0]})
    with pytest.raises(ValueError, match=r"path 'params/C/kernel' not found"):
        sp.shrink({"params": {"P": {"kernel": np.zeros((2, 3))}}}, [group], {"P": [0]})
    twice = ChannelGroup("R", 3, (("params/P/kernel", 1),), (), "params/P/kernel")
    with pytest.raises(ValueError, match=r"sliced by two channel groups: 'P' and 'R'"):
        sp.shrink(variables, [group, twice], {"P": [0], "R": [0]})


# Small inputs keep the forward passes cheap: VGG-11 has 4 max pools (16 -> 1), the ResNet
# global-average-pools whatever is left.
CASES = [
    ("lenet5", {}, MNIST),
    ("vgg11", {"width": 0.125}, (2, 16, 16, 3)),
    ("resnet20", {"width": 0.5}, (2, 8, 8, 3)),
    # ImageNet models at small width and 32x32 inputs: the topology is what is tested.
    ("resnet18", {"width": 0.125}, (2, 32, 32, 3)),
    ("resnet50", {"width": 0.0625}, (2, 32, 32, 3)),
    ("mobilenet_v1", {"width": 0.25}, (2, 32, 32, 3)),
    ("wrn16_2", {"width": 0.5}, (2, 8, 8, 3)),
    ("fastgrnn", {"hidden_size": 12}, (2, 5, 9)),  # (batch, time, features): hidden units
    ("fastgrnn", {"hidden_size": 12, "w_rank": 3, "u_rank": 4}, (2, 5, 9)),
]


@pytest.mark.parametrize("name, kwargs, shape", CASES)
def test_narrow_model_equals_masked_wide_model(name, kwargs, shape):
    model = get_model(name, 10, **kwargs)
    x = _input(shape)
    variables = _random_variables(model, shape)
    groups = channels.channel_groups(model, variables)
    kept = _random_kept(groups, seed=len(groups))
    narrow_model, narrow_vars = channels.shrink_model(model, variables, kept)
    assert narrow_model.widths == sp.kept_widths(groups, kept)
    assert narrow_model.width == model.width
    # the narrow model's own init has exactly the shapes of the shrunk variables
    expected = jax.eval_shape(lambda: narrow_model.init(KEY, x))
    assert _shapes(narrow_vars) == _shapes(expected)

    mask = sp.channel_masks(variables, groups, kept)
    assert _shapes(mask) == _shapes(variables["params"])
    assert all(leaf.dtype == bool for leaf in jax.tree.leaves(mask))
    # params * mask in numpy (jp.apply_mask would compile one jnp.where per leaf shape)
    masked = {**variables, "params": jax.tree.map(np.multiply, variables["params"], mask)}
    # eval mode is the default (train=False); one compilation for the masked and the full model
    wide_apply = jax.jit(model.apply)
    wide_out = np.asarray(wide_apply(masked, x))
    narrow_out = np.asarray(jax.jit(narrow_model.apply)(narrow_vars, x))
    np.testing.assert_allclose(narrow_out, wide_out, rtol=1e-5, atol=1e-5)
    # the pruning changed the function (so the equality above is not vacuous)
    full_out = np.asarray(wide_apply(variables, x))
    assert np.abs(full_out - wide_out).max() > 1e-3


def test_channel_groups_topology():
    lenet = get_model("lenet5", 10)
    groups = channels.channel_groups(lenet, _abstract_variables(lenet, MNIST))
    assert [(g.name, g.size) for g in groups] == [("Conv_0", 20), ("Conv_1", 50), ("Dense_0", 500)]
    assert groups[1].consumers == (("params/Dense_0/kernel", 0, 16),)  # 4x4 positions
    assert groups[1].producers == (("params/Conv_1/kernel", 3), ("params/Conv_1/bias", 0))
    mlp = get_model("lenet300", 10, width=0.1)
    groups = channels.channel_groups(mlp, _abstract_variables(mlp, MNIST))
    assert [(g.name, g.size, g.consumers[0][0]) for g in groups] == [
        ("Dense_0", 30, "params/Dense_1/kernel"),
        ("Dense_1", 10, "params/Dense_2/kernel"),
    ]
    vgg = get_model("vgg11", 10, width=0.125)
    groups = channels.channel_groups(vgg, _abstract_variables(vgg, CIFAR))
    assert [g.size for g in groups] == [8, 16, 32, 32, 64, 64, 64, 64]
    assert groups[-1].consumers == (("params/Dense_0/kernel", 0, 1),)  # global average pool
    assert groups[3].bn_scale == "params/BatchNorm_3/scale"
    assert ("batch_stats/BatchNorm_3/var", 0) in groups[3].producers


def test_resnet_width_2_shapes_params_only():
    model = get_model("resnet20", 10, width=2.0)
    variables = _abstract_variables(model, CIFAR)
    params_only = {"params": variables["params"]}
    groups = channels.channel_groups(model, params_only)
    assert [g.size for g in groups] == [32] * 3 + [64] * 3 + [128] * 3
    kept = _random_kept(groups, seed=3)
    narrow_model, narrow_vars = channels.shrink_model(model, variables, kept)
    expected = jax.eval_shape(lambda: narrow_model.init(KEY, jnp.zeros(CIFAR)))
    assert _shapes(narrow_vars) == _shapes(expected)
    # block outputs keep the width-2 stage widths; only the inner widths changed
    assert narrow_vars["params"]["BasicBlock_8"]["Conv_1"]["kernel"].shape == (
        3,
        3,
        len(kept["BasicBlock_8/Conv_0"]),
        128,
    )
    # params-only variables: batch_stats paths are skipped, params shrink the same way
    narrow_params = sp.shrink(params_only, groups, kept)
    assert set(narrow_params) == {"params"}
    assert _shapes(narrow_params["params"]) == _shapes(expected["params"])


def test_channel_groups_errors():
    class Mine(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(2)(x)

    with pytest.raises(NotImplementedError, match="Mine"):
        channels.channel_groups(Mine(), {"params": {}})
    with pytest.raises(NotImplementedError, match="Mine"):
        channels.narrow(Mine(), (1, 2))
    lenet = get_model("lenet5", 10)
    with pytest.raises(ValueError, match=r"\{'params': \.\.\.\}.*\['Conv_0'"):
        channels.channel_groups(lenet, {"Conv_0": {}})
    with pytest.raises(ValueError, match=r"no 'params/Conv_0/kernel'"):
        channels.channel_groups(lenet, {"params": {}})
