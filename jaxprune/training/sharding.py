"""Data parallelism over all devices with ``jax.sharding``.

One 1-D mesh with axis ``'data'`` over ``jax.devices()``. Batches are sharded on their leading
axis, the train state is replicated. XLA inserts the gradient all-reduce (and the cross-device
BatchNorm statistics, which are therefore computed over the global batch). Written for a single
process; on several hosts each would need ``jax.make_array_from_process_local_data``.
"""

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

PyTree = Any
DATA_AXIS = "data"


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D data-parallel mesh over ``devices`` (default: all devices)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding that keeps a full copy on every device."""
    return NamedSharding(mesh, PartitionSpec())


def data_sharded(mesh: Mesh) -> NamedSharding:
    """Sharding that splits the leading (batch) axis across the mesh."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh, field: str = "training.batch_size") -> None:
    """Raises ValueError unless ``batch_size`` splits evenly over the mesh's devices."""
    n = mesh.devices.size
    if batch_size % n:
        raise ValueError(
            f"{field} must be divisible by the number of devices ({n}), got {batch_size}"
        )


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Places a host batch on the mesh, split along the leading axis."""
    return jax.device_put(batch, data_sharded(mesh))


def batch_put(mesh: Mesh) -> Callable[[dict[str, np.ndarray]], Any] | None:
    """How an input pipeline should hand host batches to the jitted steps on ``mesh``.

    For ``jaxprune.data.prefetch.prefetch(..., put=batch_put(mesh))``:

    * a mesh of CPU devices: ``None``. Numpy batches go straight into the jitted step, whose
      ``in_shardings`` place them on the C++ dispatch path (about 30 us a batch; with JAX 0.10
      ``jax.device_put`` of the same dict costs about 0.5 ms of Python, a sixth of a LeNet
      step). The values are the same bits either way.
    * accelerators: ``shard_batch``, so the host-to-device copy of the next batches runs on the
      prefetch thread, ahead of the step that needs them.
    """
    if all(d.platform == "cpu" for d in mesh.devices.flat):
        return None
    return functools.partial(shard_batch, mesh=mesh)


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """Places every leaf of ``tree`` on all devices of the mesh."""
    return jax.device_put(tree, replicated(mesh))


def jit_train_step(step: Callable, mesh: Mesh) -> Callable:
    """Jits ``step(state, batch) -> (state, metrics)`` with the state donated and replicated."""
    rep, data = replicated(mesh), data_sharded(mesh)
    return jax.jit(step, in_shardings=(rep, data), out_shardings=(rep, rep), donate_argnums=0)


def jit_eval_step(step: Callable, mesh: Mesh) -> Callable:
    """Jits ``step(state, batch) -> metrics`` with the batch sharded on the mesh."""
    rep, data = replicated(mesh), data_sharded(mesh)
    return jax.jit(step, in_shardings=(rep, data), out_shardings=rep)
