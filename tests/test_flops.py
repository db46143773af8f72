"""FLOPs (MACs per example) and parameter counts against hand counts, and the Scratch-B budget."""

import json
import math
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxprune.models import get_model
from jaxprune.models.vgg import VGG_CFGS
from jaxprune.pruning.flops import FlopsReport, flops_ratio, flops_report, scratch_b_steps

KEY = jax.random.key(0, impl="rbg")


def abstract(name, shape, **kwargs):
    """Returns ``(apply_fn, abstract params, sample input)`` of a zoo model (shapes only)."""
    model = get_model(name, 10, **kwargs)
    x = jnp.zeros((1, *shape), jnp.float32)
    variables = jax.eval_shape(model.init, KEY, x)
    others = {
        k: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), v)
        for k, v in variables.items()
        if k != "params"
    }

    def apply_fn(params, inputs):
        return model.apply({"params": params, **others}, inputs)

    return apply_fn, variables["params"], x


@pytest.fixture(scope="module")
def lenet5():
    return abstract("lenet5", (28, 28, 1))


def by_name(report):
    return {layer.name: layer for layer in report.layers}


def conv(h, w, k, cin, cout):
    """Hand formula: output positions x taps x input channels x output channels."""
    return h * w * k * k * cin * cout


def vgg_hand_count(widths, size=32):
    """Per-conv MACs of a CIFAR VGG-16 with conv widths ``widths`` on ``size x size`` inputs."""
    counts, cin, side, it = [], 3, size, iter(widths)
    for item in VGG_CFGS["D"]:
        if item == "M":
            side //= 2
            continue
        cout = next(it)
        counts.append(conv(side, side, 3, cin, cout))  # SAME padding: output side = input side
        cin = cout
    return counts, cin


# ---------------------------------------------------------------------------------------------
# Dense FLOPs of zoo models: hand counts.


def test_lenet5_hand_count(lenet5):
    apply_fn, params, x = lenet5
    report = flops_report(apply_fn, params, x)
    expected = {
        "Conv_0/kernel": 24 * 24 * 25 * 1 * 20,  # 28 - 5 + 1 = 24, VALID
        "Conv_1/kernel": 8 * 8 * 25 * 20 * 50,  # pool -> 12, 12 - 5 + 1 = 8
        "Dense_0/kernel": 800 * 500,  # pool -> 4 x 4 x 50 = 800
        "Dense_1/kernel": 500 * 10,
    }
    assert [layer.name for layer in report.layers] == list(expected)  # forward order
    assert {n: layer.flops for n, layer in by_name(report).items()} == expected
    assert report.total_flops == sum(expected.values()) == 2_293_000
    assert report.total_sparse_flops == report.total_flops  # no mask: everything kept
    assert [layer.params for layer in report.layers] == [500, 25_000, 400_000, 5_000]


def test_batch_size_and_concrete_params_do_not_matter(lenet5):
    apply_fn, params, x = lenet5
    concrete = jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype), params)
    one = flops_report(apply_fn, params, x)
    many = flops_report(apply_fn, concrete, jnp.zeros((7, 28, 28, 1)))
    shaped = flops_report(apply_fn, params, jax.ShapeDtypeStruct((3, 28, 28, 1), jnp.float32))
    assert one == many == shaped


def test_vgg16_hand_count_and_paper_value():
    apply_fn, params, x = abstract("vgg16", (32, 32, 3))
    report = flops_report(apply_fn, params, x)
    widths = [v for v in VGG_CFGS["D"] if v != "M"]
    counts, last = vgg_hand_count(widths)
    # spot-check the hand formula itself on two layers
    assert counts[0] == 32 * 32 * 9 * 3 * 64 and counts[-1] == 2 * 2 * 9 * 512 * 512
    layers = by_name(report)
    assert [layers[f"Conv_{i}/kernel"].flops for i in range(13)] == counts
    assert layers["Dense_0/kernel"].flops == last * 10 == 5120
    conv_total = sum(counts)
    assert conv_total == 313_196_544
    assert abs(conv_total - 3.13e8) / 3.13e8 < 1e-3  # Li et al. / Liu et al.: 3.13e8
    assert report.total_flops == conv_total + 5120
    assert report.total_params == 14_724_042  # convs (no bias) + BN scale/bias + head


def test_vgg16_narrow_widths():
    widths = (32, 32, 64, 64, 128, 128, 128, 256, 256, 256, 256, 256, 256)
    apply_fn, params, x = abstract("vgg16", (32, 32, 3), widths=widths)
    report = flops_report(apply_fn, params, x)
    counts, last = vgg_hand_count(widths)
    assert counts[1] == 32 * 32 * 9 * 32 * 32
    assert [layer.flops for layer in report.layers] == [*counts, last * 10]
    assert report.total_flops == sum(counts) + 256 * 10


def test_resnet56_hand_count():
    apply_fn, params, x = abstract("resnet56", (32, 32, 3))
    report = flops_report(apply_fn, params, x)
    layers = by_name(report)
    n = 9
    expected = {"Conv_0/kernel": conv(32, 32, 3, 3, 16)}
    cin = 16
    for stage, (side, cout) in enumerate([(32, 16), (16, 32), (8, 64)]):
        for i in range(n):
            block = f"BasicBlock_{stage * n + i}"
            expected[f"{block}/Conv_0/kernel"] = conv(side, side, 3, cin, cout)  # strided: out side
            expected[f"{block}/Conv_1/kernel"] = conv(side, side, 3, cout, cout)
            if cin != cout:  # option-B projection, 1x1 with the block's stride
                expected[f"{block}/shortcut_conv/kernel"] = conv(side, side, 1, cin, cout)
            cin = cout
    expected["Dense_0/kernel"] = 64 * 10
    assert {name: layer.flops for name, layer in layers.items()} == expected
    assert expected["BasicBlock_9/Conv_0/kernel"] == 16 * 16 * 9 * 16 * 32
    assert expected["BasicBlock_9/shortcut_conv/kernel"] == 16 * 16 * 1 * 16 * 32
    assert report.total_flops == 125_747_840
    assert abs(report.total_flops - 1.25e8) / 1.25e8 < 0.02  # Li et al. (option A): 1.25e8
    assert report.layers[0].name == "Conv_0/kernel"
    assert report.layers[-1].name == "Dense_0/kernel"


# ---------------------------------------------------------------------------------------------
# Masks: sparse FLOPs and parameter counts.


def lenet_mask(params, kept):
    """Keeps the first ``kept[name]`` entries (flat order) of each kernel, all of the rest."""
    mask = {}
    for layer, leaves in params.items():
        mask[layer] = {}
        for leaf_name, leaf in leaves.items():
            flat = np.ones(math.prod(leaf.shape), bool)
            if f"{layer}/{leaf_name}" in kept:
                flat[kept[f"{layer}/{leaf_name}"] :] = False
            mask[layer][leaf_name] = flat.reshape(leaf.shape)
    return mask


def test_hand_made_mask_on_lenet5(lenet5):
    apply_fn, params, x = lenet5
    kept = {"Conv_0/kernel": 100, "Conv_1/kernel": 2_500, "Dense_0/kernel": 40_000}
    mask = lenet_mask(params, kept)
    report = flops_report(apply_fn, params, x, mask=mask)
    layers = by_name(report)
    assert layers["Conv_0/kernel"].sparse_flops == 24 * 24 * 100
    assert layers["Conv_1/kernel"].sparse_flops == 8 * 8 * 2_500
    assert layers["Dense_0/kernel"].sparse_flops == 40_000
    assert layers["Dense_1/kernel"].sparse_flops == 5_000  # unmasked
    assert [layers[n].nonzero for n in kept] == list(kept.values())
    assert report.total_sparse_flops == 24 * 24 * 100 + 8 * 8 * 2_500 + 40_000 + 5_000
    assert report.total_flops == 2_293_000  # dense FLOPs ignore the mask
    # biases (20 + 50 + 500 + 10 = 580) stay, Dense_1 stays
    assert report.total_params == 431_080
    assert report.total_nonzero == 100 + 2_500 + 40_000 + 5_000 + 580


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), density=st.floats(0.0, 1.0))
def test_random_mask_matches_a_masked_forward_count(lenet5, seed, density):
    """Oracle: sum over all output units of the kept taps feeding them (ones input, VALID)."""
    apply_fn, params, x = lenet5
    rng = np.random.default_rng(seed)
    mask = jax.tree.map(lambda s: rng.random(s.shape) < density, params)
    report = flops_report(apply_fn, params, x, mask=mask)
    layers = by_name(report)
    for name, side, cin in [("Conv_0", 28, 1), ("Conv_1", 12, 20)]:
        kernel = mask[name]["kernel"].astype(np.float32)
        ones = np.ones((1, side, side, cin), np.float32)
        taps = jax.lax.conv_general_dilated(
            ones, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        assert layers[f"{name}/kernel"].sparse_flops == int(np.asarray(taps).sum())
    for name, fan_in in [("Dense_0", 800), ("Dense_1", 500)]:
        kernel = mask[name]["kernel"].astype(np.int64)
        assert layers[f"{name}/kernel"].sparse_flops == int(
            (np.ones(fan_in, np.int64) @ kernel).sum()
        )
    assert report.total_nonzero == sum(int(m.sum()) for m in jax.tree.leaves(mask))
    assert report.total_params == sum(math.prod(s.shape) for s in jax.tree.leaves(params))


def test_mask_structure_mismatch_raises(lenet5):
    apply_fn, params, x = lenet5
    mask = jax.tree.map(lambda s: np.ones(s.shape, bool), params)
    del mask["Dense_1"]
    with pytest.raises(ValueError, match="mask"):
        flops_report(apply_fn, params, x, mask=mask)
    bad_shape = jax.tree.map(lambda s: np.ones(s.shape, bool), params)
    bad_shape["Conv_0"]["kernel"] = np.ones((5, 5, 1, 21), bool)
    with pytest.raises(ValueError, match="Conv_0/kernel"):
        flops_report(apply_fn, params, x, mask=bad_shape)


def test_scalar_sample_input_raises(lenet5):
    apply_fn, params, _ = lenet5
    with pytest.raises(ValueError, match="sample_input"):
        flops_report(apply_fn, params, jnp.zeros(()))


def test_as_dict_and_table(lenet5):
    apply_fn, params, x = lenet5
    mask = lenet_mask(params, {"Dense_0/kernel": 4_000})
    report = flops_report(apply_fn, params, x, mask=mask)
    data = json.loads(json.dumps(report.as_dict()))
    assert data["total_flops"] == 2_293_000
    assert data["total_sparse_flops"] == 2_293_000 - 400_000 + 4_000
    assert data["layers"][2] == {
        "name": "Dense_0/kernel",
        "flops": 400_000,
        "sparse_flops": 4_000,
        "params": 400_000,
        "nonzero": 4_000,
    }
    table = report.table()
    assert "Dense_0/kernel" in table and "400,000" in table and "4,000" in table
    assert "2,293,000" in table and "1,897,000" in table
    assert str(report) == table


# ---------------------------------------------------------------------------------------------
# Operands reached through views, sub-jaxprs and control flow (plain JAX functions).


def test_views_tied_weights_and_jit():
    params = {"w": jnp.zeros((4, 3)), "v": jnp.zeros((2, 6, 5)), "b": jnp.zeros(5)}

    @jax.jit
    def inner(w, h):
        return h @ w.astype(jnp.bfloat16).astype(jnp.float32).T  # convert + transpose: (1,4)

    def apply_fn(p, x):
        h = inner(p["w"], x)  # 3 -> 4, 12 MACs
        h = h @ p["w"]  # tied: 4 -> 3, 12 MACs more
        v = p["v"].reshape(12, 5)[4:7]  # reshape + slice: rows 4..6 of the flat (12, 5) view
        return h @ v + p["b"]  # 3 -> 5, 15 MACs

    mask = {
        "w": np.arange(12).reshape(4, 3) % 2 == 0,  # 6 kept
        "v": np.zeros((2, 6, 5), bool),
        "b": np.ones(5, bool),
    }
    mask["v"].reshape(12, 5)[5, :2] = True  # inside the slice: 2 kept
    mask["v"].reshape(12, 5)[0, :] = True  # outside the slice: not used by any product
    report = flops_report(apply_fn, params, jnp.zeros((1, 3)), mask=mask)
    layers = by_name(report)
    assert [layer.name for layer in report.layers] == ["w", "v"]
    assert (layers["w"].flops, layers["w"].sparse_flops) == (24, 12)
    assert (layers["v"].flops, layers["v"].sparse_flops) == (15, 2)
    assert (layers["v"].params, layers["v"].nonzero) == (60, 7)
    assert report.total_params == 12 + 60 + 5
    assert report.total_nonzero == 6 + 7 + 5


def test_scan_consts_count_per_step_xs_once():
    params = {"shared": jnp.zeros((4, 4)), "stacked": jnp.zeros((3, 4, 4))}
    mask = {"shared": np.eye(4, dtype=bool), "stacked": np.zeros((3, 4, 4), bool)}
    mask["stacked"][2, 0, :3] = True  # 3 kept, only in the last step's slice

    def apply_fn(p, x):
        def body(h, w_t):
            return (h @ p["shared"]) @ w_t, None

        h, _ = jax.lax.scan(body, x, p["stacked"])
        return h

    report = flops_report(apply_fn, params, jnp.zeros((5, 4)), mask=mask)
    layers = by_name(report)
    assert (layers["shared"].flops, layers["shared"].sparse_flops) == (3 * 16, 3 * 4)
    assert (layers["stacked"].flops, layers["stacked"].sparse_flops) == (48, 3)


def test_cond_counts_the_costliest_branch_and_while_warns():
    params = {"a": jnp.zeros((4, 2)), "b": jnp.zeros((4, 8))}

    def apply_fn(p, x):
        small = lambda h: (h @ p["a"]).sum()  # noqa: E731
        large = lambda h: (h @ p["b"]).sum()  # noqa: E731
        return jax.lax.cond(x.sum() > 0, small, large, x)

    report = flops_report(apply_fn, params, jnp.zeros((1, 4)))
    assert [(layer.name, layer.flops) for layer in report.layers] == [("b", 32)]

    def looped(p, x):
        return jax.lax.while_loop(lambda h: h.sum() < 1, lambda h: h @ p["c"], x)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = flops_report(looped, {"c": jnp.zeros((4, 4))}, jnp.zeros((1, 4)))
    assert report.total_flops == 16
    assert any("while_loop" in str(w.message) for w in caught)


def test_grouped_and_strided_conv():
    params = {"k": jnp.zeros((3, 3, 2, 8))}  # 8 input channels in 4 groups of 2

    def apply_fn(p, x):
        return jax.lax.conv_general_dilated(
            x,
            p["k"],
            (2, 2),
            "SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=4,
        )

    report = flops_report(apply_fn, params, jnp.zeros((1, 9, 9, 8)))
    assert report.total_flops == 5 * 5 * 9 * (8 // 4) * 8  # ceil(9 / 2) = 5


# ---------------------------------------------------------------------------------------------
# Models outside the zoo, as they are (norms, attention, nn.scan, nn.remat, embeddings).


class NormMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.LayerNorm()(nn.Dense(7)(x))
        x = nn.RMSNorm()(nn.gelu(nn.Dense(6)(x)))
        return nn.Dense(3)(nn.remat(nn.Dense)(5)(x))


class Encoder(nn.Module):
    @nn.compact
    def __call__(self, tokens):
        x = nn.Embed(11, 4)(tokens)  # a lookup: no MACs
        h = nn.LayerNorm()(x)
        x = x + nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=6, name="attn")(h, h)
        h = nn.LayerNorm()(x)
        return x + nn.Dense(4, name="mlp_out")(nn.relu(nn.Dense(8, name="mlp_in")(h)))


class ScanBlock(nn.Module):
    @nn.compact
    def __call__(self, h, _):
        return nn.relu(nn.LayerNorm()(nn.Dense(8)(h))), None


class ScanMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        blocks = nn.scan(
            ScanBlock, variable_axes={"params": 0}, split_rngs={"params": True}, length=5
        )(name="blocks")
        h, _ = blocks(nn.Dense(8, name="inp")(x), None)
        return nn.Dense(3, name="head")(h)


def shapes_of(model, x):
    params = jax.eval_shape(model.init, KEY, x)["params"]
    return (lambda p, inputs: model.apply({"params": p}, inputs)), params


def test_norm_mlp_with_remat_counts_every_dense():
    apply_fn, params = shapes_of(NormMLP(), jnp.zeros((1, 9)))
    report = flops_report(apply_fn, params, jnp.zeros((4, 9)))
    assert [(layer.name, layer.flops) for layer in report.layers] == [
        ("Dense_0/kernel", 9 * 7),
        ("Dense_1/kernel", 7 * 6),
        ("CheckpointDense_0/kernel", 6 * 5),  # inside remat
        ("Dense_2/kernel", 5 * 3),
    ]


def test_attention_encoder_counts_projections_not_scores():
    apply_fn, params = shapes_of(Encoder(), jnp.zeros((1, 5), jnp.int32))
    report = flops_report(apply_fn, params, jnp.zeros((2, 5), jnp.int32))
    tokens = 5
    assert {layer.name: layer.flops for layer in report.layers} == {
        "attn/query/kernel": tokens * 4 * 6,
        "attn/key/kernel": tokens * 4 * 6,
        "attn/value/kernel": tokens * 4 * 6,
        "attn/out/kernel": tokens * 6 * 4,
        "mlp_in/kernel": tokens * 4 * 8,
        "mlp_out/kernel": tokens * 8 * 4,
    }


def test_scanned_mlp_counts_each_slice_once():
    apply_fn, params = shapes_of(ScanMLP(), jnp.zeros((1, 6)))
    rng = np.random.default_rng(0)
    mask = jax.tree.map(lambda s: rng.random(s.shape) < 0.3, params)
    report = flops_report(apply_fn, params, jnp.zeros((1, 6)), mask=mask)
    layers = by_name(report)
    assert [layer.name for layer in report.layers] == [
        "inp/kernel",
        "blocks/Dense_0/kernel",
        "head/kernel",
    ]
    stacked = layers["blocks/Dense_0/kernel"]
    assert (stacked.flops, stacked.params) == (5 * 8 * 8, 5 * 8 * 8)
    assert stacked.sparse_flops == int(mask["blocks"]["Dense_0"]["kernel"].sum())
    assert layers["head/kernel"].sparse_flops == int(mask["head"]["kernel"].sum())


# ---------------------------------------------------------------------------------------------
# Ratios and Scratch-B.


def test_flops_ratio():
    dense = FlopsReport((), 300, 100, 10, 5)
    assert flops_ratio(dense, 100) == 3.0
    assert flops_ratio(dense, dense, sparse=True) == 1.0
    assert flops_ratio(600, dense, sparse=True) == 6.0
    with pytest.raises(ValueError, match="small"):
        flops_ratio(dense, 0)
    with pytest.raises(ValueError, match="large"):
        flops_ratio(-1, 5)
    with pytest.raises(ValueError, match="small"):
        flops_ratio(dense, FlopsReport((), 0, 0, 0, 0))


def test_scratch_b_steps():
    assert scratch_b_steps(1000, 300, 200) == 1500  # ratio 1.5
    assert scratch_b_steps(1000, 300, 100) == 2000  # ratio 3, capped at 2
    assert scratch_b_steps(1000, 300, 100, cap=4.0) == 3000
    assert scratch_b_steps(1000, 300, 300) == 1000  # ratio 1
    assert scratch_b_steps(1000, 100, 300) == 1000  # costlier pruned model: never fewer steps
    assert scratch_b_steps(3, 5, 4) == 4  # 3.75 -> 4
    assert scratch_b_steps(2, 5, 4) == 3  # 2.5 rounds half up
    assert scratch_b_steps(7, 1_000_001, 1_000_000) == 7  # 7.000007 -> 7
    assert scratch_b_steps(0, 3, 1) == 0
    assert scratch_b_steps(10, 3.13e8, 1.0e8, cap=1.0) == 10
    for kwargs, field in [
        ({"cap": 0.5}, "cap"),
        ({"cap": math.nan}, "cap"),
        ({"flops_pruned": 0}, "flops_pruned"),
        ({"flops_large": -5}, "flops_large"),
        ({"base_steps": -1}, "base_steps"),
        ({"base_steps": 1.5}, "base_steps"),
    ]:
        args = {"base_steps": 10, "flops_large": 3, "flops_pruned": 2, **kwargs}
        with pytest.raises(ValueError, match=field):
            scratch_b_steps(**args)
