"""Score registry, magnitude/random scores, sparsity reports and tree helpers."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxprune as jp
from jaxprune.pruning import tree


def test_magnitude_and_random_scores():
    params = {"w": jnp.array([[-2.0, 1.0]]), "b": jnp.array([-3.0])}
    assert jp.scores.magnitude(params)["w"].tolist() == [[2.0, 1.0]]
    assert jp.scores.get("magnitude")(params, batch=None, key=None)["b"].tolist() == [3.0]
    r1 = jp.scores.get("random")(params, key=jax.random.key(0))
    r2 = jp.scores.random(params, key=jax.random.key(0))
    np.testing.assert_array_equal(r1["w"], r2["w"])
    assert r1["w"].shape == (1, 2) and bool(((r1["w"] >= 0) & (r1["w"] < 1)).all())
    with pytest.raises(ValueError, match="needs key="):
        jp.scores.random(params)


def test_register_in_three_lines_and_unknown_names():
    @jp.scores.register("squared_test_score")
    def squared(params, **ctx):
        return jax.tree.map(jnp.square, params)

    assert jp.scores.get("squared_test_score")({"w": jnp.array([[3.0]])})["w"].tolist() == [[9.0]]
    assert "squared_test_score" in jp.scores.names()
    with pytest.raises(ValueError, match="already registered"):
        jp.scores.register("squared_test_score")(lambda params, **ctx: params)
    with pytest.raises(KeyError, match=r"unknown score 'magnitud'; known scores: \["):
        jp.scores.get("magnitud")


def test_sparsity_report_counts_and_table():
    params = {
        "Dense_0": {"kernel": jnp.ones((4, 5)), "bias": jnp.ones(5)},
        "Dense_1": {"kernel": jnp.ones((5, 2))},
    }
    mask = jax.tree.map(lambda p: jnp.ones(p.shape, bool), params)
    mask["Dense_0"]["kernel"] = mask["Dense_0"]["kernel"].at[:3].set(False)  # 5 of 20 kept
    mask["Dense_1"]["kernel"] = mask["Dense_1"]["kernel"].at[0].set(False)  # 8 of 10 kept
    report = jp.sparsity_report(params, mask)
    assert report.layers == {
        "Dense_0/kernel": {"kept": 5, "total": 20, "sparsity": 0.75},
        "Dense_1/kernel": {"kept": 8, "total": 10, "sparsity": pytest.approx(0.2)},
    }
    assert (report.kept, report.total) == (13, 30)
    assert report.sparsity == pytest.approx(17 / 30)
    assert report.compression == pytest.approx(30 / 13)
    json.dumps(report.as_dict())
    table = report.table()
    assert "Dense_0/kernel" in table and "TOTAL" in table and "56.6667%" in table
    emask = jax.tree.map(lambda m: m, mask)
    emask["Dense_1"]["kernel"] = jnp.zeros((5, 2), bool)
    full = jp.sparsity_report(params, mask, effective_mask=emask)
    assert full.effective_kept == 5
    assert full.layers["Dense_1/kernel"]["effective_sparsity"] == 1.0
    assert full.effective_compression == pytest.approx(6.0)
    assert "eff. sparsity" in str(full)


def test_report_rejects_mismatched_mask():
    params = {"a": jnp.ones((2, 2))}
    with pytest.raises(ValueError, match="mask does not have the structure of params"):
        jp.sparsity_report(params, {"b": jnp.ones((2, 2), bool)})


def test_layer_names_and_natural_order():
    params = {
        "Conv_10": {"kernel": jnp.ones((1, 1))},
        "Conv_2": {"kernel": jnp.ones((1, 1))},
        "BasicBlock_0": {"Conv_0": {"kernel": jnp.ones((1, 1)), "bias": jnp.ones(1)}},
    }
    names = tree.layer_names(params)
    assert names == [
        "BasicBlock_0/Conv_0/bias",
        "BasicBlock_0/Conv_0/kernel",
        "Conv_10/kernel",
        "Conv_2/kernel",
    ]
    assert jp.prunable_names(params) == [
        "BasicBlock_0/Conv_0/kernel",
        "Conv_10/kernel",
        "Conv_2/kernel",
    ]
    assert tree.ordered_names(["Conv_10/kernel", "Conv_2/kernel"]) == [
        "Conv_2/kernel",
        "Conv_10/kernel",
    ]
    with pytest.raises(ValueError, match="order is missing layers"):
        tree.ordered_names(["Conv_10/kernel"], order=["Conv_2/kernel"])
    with pytest.raises(TypeError, match="prunable must be"):
        tree.prunable_predicate(3)
