"""Quota values against hand-computed figures, weighted-mean and range invariants."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxprune as jp

LENET300 = {
    "Dense_0": {"kernel": jnp.zeros((784, 300)), "bias": jnp.zeros(300)},
    "Dense_1": {"kernel": jnp.zeros((300, 100)), "bias": jnp.zeros(100)},
    "Dense_2": {"kernel": jnp.zeros((100, 10)), "bias": jnp.zeros(10)},
}
NAMES = ["Dense_0/kernel", "Dense_1/kernel", "Dense_2/kernel"]
SIZES = np.array([235200, 30000, 1000])


def weighted_mean(quota, sizes=SIZES, names=NAMES):
    return sum(quota[n] * s for n, s in zip(names, sizes, strict=True)) / sizes.sum()


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        # s_l = F n_l / (1 + F n_l); F solved by hand with a root finder on
        # sum_l n_l * F n_l / (1 + F n_l) = s * 266200.
        (0.9, [0.93555350, 0.64932284, 0.05813285]),
        (0.99, [0.99537975, 0.96488693, 0.47807409]),
    ],
)
def test_igq_lenet300_hand_values(target, expected):
    quota = jp.quotas.igq(LENET300, target)
    assert list(quota) == NAMES
    np.testing.assert_allclose([quota[n] for n in NAMES], expected, rtol=2e-5)
    assert abs(weighted_mean(quota) - target) <= 1 / SIZES.sum()
    # The defining rule: every layer has the same F = s / ((1 - s) n).
    f = [quota[n] / ((1 - quota[n]) * s) for n, s in zip(NAMES, SIZES, strict=True)]
    np.testing.assert_allclose(f, f[0], rtol=1e-6)


def test_uniform_plus_lenet300():
    # First layer dense leaves at most 30000 + 0.8 * 1000 prunable: 0.5 is out of reach.
    with pytest.raises(ValueError, match="uniform_plus cannot reach sparsity 0.5"):
        jp.quotas.uniform_plus(LENET300, 0.5, order=NAMES)
    params = {f"Dense_{i}": {"kernel": jnp.zeros((100, 100))} for i in range(4)}
    # Dense_0..Dense_3 are numbered in forward order: the natural sort of the names is it.
    quota = jp.quotas.uniform_plus(params, 0.6, order="natural")  # 3 layers share: 0.8 each
    assert quota == {
        "Dense_0/kernel": 0.0,
        "Dense_1/kernel": 0.8,
        "Dense_2/kernel": 0.8,
        "Dense_3/kernel": 0.8,
    }
    quota = jp.quotas.uniform_plus(
        params, 0.7, order="natural"
    )  # last capped at 0.8, middle (28000-8000)/20000
    assert quota["Dense_3/kernel"] == 0.8
    assert quota["Dense_1/kernel"] == pytest.approx(1.0)
    assert quota["Dense_0/kernel"] == 0.0


def test_uniform_plus_uses_order_not_dict_keys():
    params = {
        "Conv_10": {"kernel": jnp.zeros((10, 10))},
        "Conv_2": {"kernel": jnp.zeros((10, 10))},
        "Conv_1": {"kernel": jnp.zeros((10, 10))},
    }
    natural = jp.quotas.uniform_plus(params, 0.5, order="natural")
    assert natural["Conv_1/kernel"] == 0.0 and natural["Conv_10/kernel"] <= 0.8
    given_order = jp.quotas.uniform_plus(
        params, 0.5, order=["Conv_10/kernel", "Conv_2/kernel", "Conv_1/kernel"]
    )
    assert given_order["Conv_10/kernel"] == 0.0


def test_erk_hand_values_with_dense_cap():
    # densities eps * (in+out)/(in*out): raw = 1084/235200, 400/30000, 110/1000
    quota = jp.quotas.erk(LENET300, 0.98)
    raw = np.array([1084 / 235200, 400 / 30000, 110 / 1000])
    eps = 0.02 * SIZES.sum() / (raw * SIZES).sum()
    assert (eps * raw <= 1).all()
    np.testing.assert_allclose([quota[n] for n in NAMES], 1 - eps * raw, rtol=1e-9)
    # At 0.9 the last layer would exceed density 1: it becomes dense, eps is re-solved.
    quota = jp.quotas.erk(LENET300, 0.9)
    assert quota["Dense_2/kernel"] == 0.0
    eps = (0.1 * SIZES.sum() - 1000) / (raw[:2] * SIZES[:2]).sum()
    np.testing.assert_allclose([quota[n] for n in NAMES[:2]], 1 - eps * raw[:2], rtol=1e-9)
    assert abs(weighted_mean(quota) - 0.9) <= 1 / SIZES.sum()


def test_smart_ratio_vgg19_hand_values():
    cfg = [64, 64, 128, 128, 256, 256, 256, 256, 512, 512, 512, 512, 512, 512, 512, 512]
    params, c_in = {}, 3
    for i, c in enumerate(cfg):
        params[f"Conv_{i}"] = {"kernel": jnp.zeros((3, 3, c_in, c))}
        c_in = c
    params["Dense_0"] = {"kernel": jnp.zeros((512, 10))}
    names = [f"Conv_{i}/kernel" for i in range(16)] + ["Dense_0/kernel"]
    quota = jp.quotas.smart_ratio(params, 0.98, order=names)
    assert jp.quotas.smart_ratio(params, 0.98, order="natural") == quota
    sizes = np.array([math.prod(params[n.split("/")[0]]["kernel"].shape) for n in names])
    big_l = 17
    raw = np.array([((big_l - l + 1) ** 2 + (big_l - l + 1)) / l**2 for l in range(1, 17)])  # noqa: E741
    # By hand, as in Su et al.'s code: one scale for the budget, then walk the layers in order;
    # a keep ratio above 1 is clipped and its excess weights fill the next layers up to dense.
    budget = 0.02 * sizes.sum() - 0.3 * sizes[-1]
    keep = raw * budget / (raw * sizes[:16]).sum()
    excess = 0.0
    for i in range(16):
        if keep[i] > 1:
            excess += (keep[i] - 1) * sizes[i]
            keep[i] = 1.0
        else:
            take = min(excess, (1 - keep[i]) * sizes[i])
            keep[i] += take / sizes[i]
            excess -= take
    assert excess == 0
    dense = keep == 1.0
    scaled = raw * budget / (raw * sizes[:16]).sum()
    assert dense[:2].all() and not dense[2:].any()
    assert keep[2] > scaled[2]  # the first two layers' excess landed in the third
    np.testing.assert_allclose(keep[3:], scaled[3:])  # later layers keep the common scale
    np.testing.assert_allclose([1 - quota[n] for n in names[:16]], keep, rtol=1e-9)
    assert quota["Dense_0/kernel"] == pytest.approx(0.7)
    assert quota["Conv_0/kernel"] == 0.0  # the first layers are dense
    assert dense[:2].all()
    assert (
        abs(sum(quota[n] * s for n, s in zip(names, sizes, strict=True)) / sizes.sum() - 0.98)
        <= 1 / sizes.sum()
    )


def test_smart_ratio_options_and_errors():
    params = {f"Dense_{i}": {"kernel": jnp.zeros((50, 50))} for i in range(4)}
    order = [f"Dense_{i}/kernel" for i in range(4)]
    lin = jp.quotas.smart_ratio(params, 0.8, order=order, ratio="linear", residual=True)
    # keep ∝ 4, 3, 2 for the first three, last fixed at 0.3: 0.3*2500 + c*(4+3+2)*2500 = 2000
    c = (2000 - 750) / (9 * 2500)
    np.testing.assert_allclose(
        [1 - lin[f"Dense_{i}/kernel"] for i in range(3)], [4 * c, 3 * c, 2 * c]
    )
    with pytest.raises(ValueError, match="ratio must be one of"):
        jp.quotas.smart_ratio(params, 0.8, order=order, ratio="quartic")
    with pytest.raises(ValueError, match="cannot reach sparsity 0.99"):
        jp.quotas.smart_ratio(params, 0.99, order=order)  # last layer alone keeps 750 > 100


@settings(max_examples=40, deadline=None)
@given(
    shapes=st.lists(st.tuples(st.integers(1, 40), st.integers(1, 40)), min_size=1, max_size=6),
    target=st.floats(0, 1),
    name=st.sampled_from(["uniform", "erk", "igq"]),
)
def test_weighted_mean_equals_target(shapes, target, name):
    params = {f"Dense_{i}": {"kernel": jnp.zeros(s)} for i, s in enumerate(shapes)}
    quota = jp.quotas.get(name)(params, target)
    sizes = [a * b for a, b in shapes]
    values = [quota[f"Dense_{i}/kernel"] for i in range(len(shapes))]
    assert all(0.0 <= v <= 1.0 for v in values)
    mean = sum(v * n for v, n in zip(values, sizes, strict=True)) / sum(sizes)
    assert abs(mean - target) <= 1 / sum(sizes) + 1e-12


def test_custom_and_registry_errors():
    quota = jp.quotas.get("custom")(
        LENET300, sparsities=dict(zip(NAMES, [0.9, 0.5, 0.0], strict=True))
    )
    assert quota == dict(zip(NAMES, [0.9, 0.5, 0.0], strict=True))
    with pytest.raises(ValueError, match=r"missing layers \['Dense_2/kernel'\]"):
        jp.quotas.custom(LENET300, sparsities={NAMES[0]: 0.1, NAMES[1]: 0.1})
    with pytest.raises(KeyError, match=r"unknown quota 'igqq'; known quotas: \['custom', 'erk'"):
        jp.quotas.get("igqq")
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\], got 1.2"):
        jp.quotas.igq(LENET300, 1.2)


def test_quota_feeds_layerwise_mask_exactly():
    params = {"a": jnp.arange(1000.0).reshape(40, 25), "b": jnp.arange(100.0).reshape(10, 10)}
    prunable = r"^(a|b)$"  # not named 'kernel'
    quota = jp.quotas.igq(params, 0.9, prunable=prunable)
    mask = jp.layerwise_mask(jp.scores.magnitude(params), quota, prunable=prunable)
    for name, key in [("a", "a"), ("b", "b")]:
        n = params[key].size
        assert int(mask[key].sum()) == jp.n_keep_for(quota[name], n)


# A ResNet-like tree whose stem 'Conv_0' sorts after the blocks: next to last by name.
RESNET_LIKE = {
    "BasicBlock_0": {
        "Conv_0": {"kernel": jnp.zeros((3, 3, 16, 16))},
        "Conv_1": {"kernel": jnp.zeros((3, 3, 16, 16))},
    },
    "BasicBlock_1": {
        "Conv_0": {"kernel": jnp.zeros((3, 3, 16, 32))},
        "Conv_1": {"kernel": jnp.zeros((3, 3, 32, 32))},
    },
    "Conv_0": {"kernel": jnp.zeros((3, 3, 3, 16))},
    "Dense_0": {"kernel": jnp.zeros((32, 10))},
}
RESNET_LIKE_ORDER = [
    "Conv_0/kernel",
    "BasicBlock_0/Conv_0/kernel",
    "BasicBlock_0/Conv_1/kernel",
    "BasicBlock_1/Conv_0/kernel",
    "BasicBlock_1/Conv_1/kernel",
    "Dense_0/kernel",
]


@pytest.mark.parametrize("quota", ["uniform_plus", "smart_ratio"])
def test_order_dependent_quotas_need_an_order(quota):
    fn = jp.quotas.get(quota)
    with pytest.raises(ValueError, match=r"order=jp\.layer_order\(apply_fn, params, x\)"):
        fn(RESNET_LIKE, 0.5)
    with pytest.raises(ValueError, match="order must be a list of layer names or 'natural'"):
        fn(RESNET_LIKE, 0.5, order="forward")
    forward = fn(RESNET_LIKE, 0.5, order=RESNET_LIKE_ORDER)
    natural = fn(RESNET_LIKE, 0.5, order="natural")  # on purpose: the stem is not first here
    assert forward != natural
    if quota == "uniform_plus":
        assert forward["Conv_0/kernel"] == 0.0 and natural["Conv_0/kernel"] > 0.0
        assert natural["BasicBlock_0/Conv_0/kernel"] == 0.0
    sizes = {n: math.prod(s.shape) for n, s in jp.pruning.tree.named_leaves(RESNET_LIKE)}
    for quota_values in (forward, natural):
        mean = sum(quota_values[n] * sizes[n] for n in sizes) / sum(sizes.values())
        assert abs(mean - 0.5) <= 1 / sum(sizes.values())


@pytest.mark.parametrize("quota", ["uniform", "erk", "igq"])
def test_order_free_quotas_still_work_without_order(quota):
    values = jp.quotas.get(quota)(RESNET_LIKE, 0.5)
    assert list(values) == jp.prunable_names(RESNET_LIKE)


def test_layer_order_of_a_zoo_resnet_puts_the_stem_first():
    import jax

    from jaxprune.models import get_model

    model = get_model("resnet20", 10, width=0.25, linear=True)
    x = jnp.zeros((1, 32, 32, 3))
    params = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
    names = jp.prunable_names(params)
    # By name the stem is next to last, after every BasicBlock and before Dense_0.
    assert jp.pruning.tree.ordered_names(names)[-2:] == ["Conv_0/kernel", "Dense_0/kernel"]
    order = jp.layer_order(lambda p, x: model.apply({"params": p}, x), params, x)
    assert order[0] == "Conv_0/kernel" and order[-1] == "Dense_0/kernel"
    assert order[1] == "BasicBlock_0/Conv_0/kernel"
    quota = jp.quotas.uniform_plus(params, 0.5, order=order)
    assert quota["Conv_0/kernel"] == 0.0
    assert quota["Dense_0/kernel"] <= 0.8
    smart = jp.quotas.smart_ratio(params, 0.9, order=order, residual=True)
    assert smart["Dense_0/kernel"] == pytest.approx(0.7)  # the last layer keeps 30%
    # keep ratio ∝ (L - l + 1)^2 + (L - l + 1): the stem (l = 1) keeps the largest fraction.
    assert smart["Conv_0/kernel"] == min(smart.values())
    natural = jp.quotas.smart_ratio(params, 0.9, order="natural", residual=True)
    assert natural["Conv_0/kernel"] > smart["Conv_0/kernel"]
