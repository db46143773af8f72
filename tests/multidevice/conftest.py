"""Fixtures for the 8-device tests (run by tests/test_multidevice.py)."""

import jax
import numpy as np
import pytest
from jax.sharding import Mesh


def pytest_configure(config):
    del config
    if jax.device_count() != 8:
        raise pytest.UsageError(
            "tests/multidevice needs XLA_FLAGS=--xla_force_host_platform_device_count=8 "
            f"(found {jax.device_count()} devices); run it through tests/test_multidevice.py"
        )


@pytest.fixture(scope="session")
def mesh_1d():
    return Mesh(np.asarray(jax.devices()), ("x",))


@pytest.fixture(scope="session")
def mesh_2d():
    return Mesh(np.asarray(jax.devices()).reshape(2, 4), ("a", "b"))
