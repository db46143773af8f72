"""Data parallelism, and FSDP-style sharded params, over all devices with ``jax.sharding``.

The mesh has axis ``'data'`` and, with ``mesh.model > 1`` in the config, axis ``'model'``
(``make_mesh``). Batches are split on their leading axis over every device of the mesh. With
one axis the train state is replicated; with a ``'model'`` axis every leaf of the state
(params, masks, optimizer moments, batch statistics) is split along its largest dimension that
``mesh.model`` divides (FSDP: each device stores ``1 / model`` of a leaf, XLA gathers it where a
layer needs it). XLA inserts the gradient all-reduce (and the cross-device BatchNorm statistics,
which are therefore computed over the global batch). With several processes
(``distributed.py``) the mesh spans the devices of all of them; each process holds only its
rows of a batch (``data_shard``) and ``shard_batch`` assembles the global array with
``jax.make_array_from_process_local_data``.
"""

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

PyTree = Any
DATA_AXIS = "data"
MODEL_AXIS = "model"


def make_mesh(devices: Sequence[jax.Device] | None = None, *, model: int = 1) -> Mesh:
    """The run's mesh over ``devices`` (default: all devices of all processes).

    Args:
      devices: the devices, in order.
      model: devices each state leaf is split over (``'model'`` axis); 1: a 1-D data mesh.

    Raises:
      ValueError: when ``model`` does not divide the number of devices.
    """
    devices = jax.devices() if devices is None else list(devices)
    if model == 1:
        return Mesh(np.asarray(devices), (DATA_AXIS,))
    if model < 1 or len(devices) % model:
        raise ValueError(
            f"mesh.model must be >= 1 and divide the number of devices ({len(devices)}), got "
            f"{model}"
        )
    grid = np.asarray(devices).reshape(len(devices) // model, model)
    return Mesh(grid, (DATA_AXIS, MODEL_AXIS))


def mesh_from_config(mesh_config: Any) -> Mesh:
    """The mesh of a config's ``mesh`` block.

    ``mesh.model`` devices split each state leaf; ``mesh.data`` is how many such groups there
    are (0: all devices / ``mesh.model``). A single-process run may use fewer than all its
    devices (the first ``data * model``); a multi-process run uses them all.

    Raises:
      ValueError: naming the field, when the devices cannot be arranged so.
    """
    model = int(mesh_config.get("model", 1)) if mesh_config is not None else 1
    data = int(mesh_config.get("data", 0)) if mesh_config is not None else 0
    n = jax.device_count()
    if model < 1 or n % model:
        raise ValueError(f"mesh.model must be >= 1 and divide the {n} devices, got {model}")
    data = data or n // model
    if data * model > n or (jax.process_count() > 1 and data * model != n):
        raise ValueError(
            f"mesh.data x mesh.model must be at most the {n} devices (all of them with several "
            f"processes), got mesh.data={data}, mesh.model={model}"
        )
    return make_mesh(jax.devices()[: data * model], model=model)


def fsdp_spec(shape: Sequence[int], mesh: Mesh) -> PartitionSpec:
    """How a state leaf of ``shape`` is placed on ``mesh``.

    Split on its largest dimension that the ``'model'`` axis divides (the first such on ties);
    replicated when none does or the mesh has no ``'model'`` axis.
    """
    if MODEL_AXIS not in mesh.axis_names:
        return PartitionSpec()
    size = mesh.shape[MODEL_AXIS]
    best = None
    for axis, dim in enumerate(shape):
        if dim % size == 0 and dim >= size and (best is None or dim > shape[best]):
            best = axis
    if best is None:
        return PartitionSpec()
    return PartitionSpec(*([None] * best + [MODEL_AXIS]))


def state_shardings(tree: PyTree, mesh: Mesh) -> PyTree:
    """``NamedSharding`` per leaf of ``tree`` (arrays or shape structs) as ``fsdp_spec`` says."""
    return jax.tree.map(lambda x: NamedSharding(mesh, fsdp_spec(np.shape(x), mesh)), tree)


def host(tree: PyTree) -> PyTree:
    """Numpy copy of ``tree``, whatever the sharding (multi-process: gathers split leaves)."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    def fetch(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            if x.is_fully_replicated:
                return np.asarray(x.addressable_data(0))
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return jax.device_get(x)

    return jax.tree.map(fetch, tree)


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding that keeps a full copy on every device."""
    return NamedSharding(mesh, PartitionSpec())


def data_sharded(mesh: Mesh) -> NamedSharding:
    """Sharding that splits the leading (batch) axis across every device of the mesh."""
    if MODEL_AXIS in mesh.axis_names:
        return NamedSharding(mesh, PartitionSpec((DATA_AXIS, MODEL_AXIS)))
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh, field: str = "training.batch_size") -> None:
    """Raises ValueError unless ``batch_size`` splits evenly over the mesh's devices."""
    n = mesh.devices.size
    if batch_size % n:
        raise ValueError(
            f"{field} must be divisible by the number of devices ({n}), got {batch_size}"
        )


def data_shard() -> tuple[int, int]:
    """``(process index, process count)``: which rows of each batch this process reads."""
    return jax.process_index(), jax.process_count()


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Places a host batch on the mesh, split along the leading axis.

    With one process ``batch`` is the whole batch; with several it is this process's rows
    (``data_shard``), and the result is the global batch they make together.
    """
    if jax.process_count() == 1:
        return jax.device_put(batch, data_sharded(mesh))
    sharding = data_sharded(mesh)
    return {
        key: jax.make_array_from_process_local_data(
            sharding, value, (value.shape[0] * jax.process_count(), *value.shape[1:])
        )
        for key, value in batch.items()
    }


def batch_put(mesh: Mesh) -> Callable[[dict[str, np.ndarray]], Any] | None:
    """How an input pipeline should hand host batches to the jitted steps on ``mesh``.

    For ``jaxprune.data.prefetch.prefetch(..., put=batch_put(mesh))``:

    * a mesh of CPU devices: ``None``. Numpy batches go straight into the jitted step, whose
      ``in_shardings`` place them on the C++ dispatch path (about 30 us a batch; with JAX 0.10
      ``jax.device_put`` of the same dict costs about 0.5 ms of Python, a sixth of a LeNet
      step). The values are the same bits either way.
    * accelerators, and every mesh of a multi-process run: ``shard_batch``, so the
      host-to-device copy of the next batches runs on the prefetch thread, ahead of the step
      that needs them.
    """
    if jax.process_count() == 1 and all(d.platform == "cpu" for d in mesh.devices.flat):
        return None
    return functools.partial(shard_batch, mesh=mesh)


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """Places every leaf of ``tree`` on all devices of the mesh."""
    return jax.device_put(tree, replicated(mesh))


def place_state(tree: PyTree, mesh: Mesh) -> PyTree:
    """Places a train state (or any tree of its leaves) as ``state_shardings`` says."""
    return jax.device_put(tree, state_shardings(tree, mesh))


def jit_train_step(step: Callable, mesh: Mesh, state_sharding: PyTree | None = None) -> Callable:
    """Jits ``step(state, batch) -> (state, metrics)`` with the state donated.

    Args:
      step: the train step.
      mesh: the run's mesh.
      state_sharding: the state's shardings (``state_shardings``); None: replicated.
    """
    rep, data = replicated(mesh), data_sharded(mesh)
    state = rep if state_sharding is None else state_sharding
    return jax.jit(step, in_shardings=(state, data), out_shardings=(state, rep), donate_argnums=0)


def jit_eval_step(step: Callable, mesh: Mesh) -> Callable:
    """Jits ``step(state, batch) -> metrics`` with the batch sharded on the mesh.

    The state keeps the placement it has (replicated or split as ``state_shardings`` says).
    """
    rep, data = replicated(mesh), data_sharded(mesh)
    if MODEL_AXIS in mesh.axis_names:
        return jax.jit(step, in_shardings=(None, data), out_shardings=rep)
    return jax.jit(step, in_shardings=(rep, data), out_shardings=rep)
