"""Placement rules of ``training/sharding.py`` (the layouts themselves run in tests/multidevice)."""

import itertools

import jax
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax.sharding import AbstractMesh, PartitionSpec

from configs import lenet300_mnist_gmp
from jaxprune import training
from jaxprune.training import sharding

MESH_2x4 = AbstractMesh((2, 4), ("data", "model"))


@pytest.mark.parametrize(
    "shape, spec",
    [
        ((784, 300), PartitionSpec("model")),
        ((300, 784), PartitionSpec(None, "model")),
        ((3, 3, 16, 32), PartitionSpec(None, None, None, "model")),
        ((3, 3, 3, 64), PartitionSpec(None, None, None, "model")),
        ((96, 10), PartitionSpec("model")),
        ((64, 64), PartitionSpec("model")),  # a tie: the first axis
        ((10,), PartitionSpec()),  # 4 does not divide 10
        ((2, 3), PartitionSpec()),  # nothing as large as the axis
        ((), PartitionSpec()),
    ],
)
def test_fsdp_splits_the_largest_dimension_the_model_axis_divides(shape, spec):
    assert sharding.fsdp_spec(shape, MESH_2x4) == spec


@given(st.lists(st.integers(1, 40), min_size=0, max_size=4), st.sampled_from([2, 3, 4, 8]))
def test_fsdp_spec_against_a_brute_force_choice(shape, size):
    mesh = AbstractMesh((1, size), ("data", "model"))
    spec = sharding.fsdp_spec(tuple(shape), mesh)
    candidates = [a for a, d in enumerate(shape) if d % size == 0 and d >= size]
    if not candidates:
        assert spec == PartitionSpec()
        return
    best = max(candidates, key=lambda a: (shape[a], -a))
    assert spec == PartitionSpec(*([None] * best + ["model"]))


def test_a_data_only_mesh_replicates_every_leaf():
    mesh = AbstractMesh((8,), ("data",))
    for shape in itertools.product([1, 8, 16], repeat=2):
        assert sharding.fsdp_spec(shape, mesh) == PartitionSpec()


@pytest.mark.parametrize(
    "data, model, message",
    [
        (0, 3, "mesh.model must be >= 1 and divide the 1 devices, got 3"),
        (2, 1, "mesh.data x mesh.model must be at most the 1 devices"),
    ],
)
def test_impossible_meshes_are_refused_naming_the_field(data, model, message, tmp_path):
    assert jax.device_count() == 1
    config = lenet300_mnist_gmp.get_config("smoke")
    config.mesh.data, config.mesh.model = data, model
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        training.train_and_evaluate(config, tmp_path / "run")


@pytest.mark.parametrize("field, value", [("mesh.model", 0), ("mesh.data", -1)])
def test_bad_mesh_values_are_refused_before_anything_runs(field, value, tmp_path):
    config = lenet300_mnist_gmp.get_config("smoke")
    setattr(config.mesh, field.split(".")[1], value)
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        training.train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()
