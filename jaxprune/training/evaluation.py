"""Test-set evaluation without a host round-trip per batch.

``evaluate(eval_step, state, dataset, batch_size, mesh, limit=0)`` is what the runner calls;
``evaluate_params(apply_fn, variables, dataset)`` is the same for any Flax model's variables.
Both return ``{'test_loss', 'test_accuracy'}``: the means over the evaluated examples of the
softmax cross-entropy and of ``argmax == label``.

How it runs:

* Evaluation batches are ``dataset.eval_batches(batch_size, split)``: in order, the last one
  padded with weight 0. With ``limit > 0`` only the first ``limit`` examples count (later rows
  get weight 0; batches wholly past the limit are skipped).
* The batches of a split are placed on the mesh once and kept (per dataset, batch size, split,
  limit and mesh) when they take at most ``DEVICE_CACHE_BYTES``; later evaluations of the run
  only dispatch the eval step. Larger splits are streamed through a background prefetch
  (``jaxprune.data.prefetch``), the next batch being built and placed while the current one is
  evaluated.
* The per-batch sums (``eval_step``'s ``loss_sum``, ``correct``, ``count``) stay on the device
  until the last batch is dispatched; one ``device_get`` then fetches them all, and they are added
  up in float64, in batch order. So the results are exactly those of fetching and adding each
  batch's sums in turn (the loop this replaces), without waiting for every batch.
"""

from __future__ import annotations

import functools
import inspect
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from jaxprune.data import dataset as data_lib
from jaxprune.data import prefetch as prefetch_lib
from jaxprune.training import sharding
from jaxprune.training.model_fns import ModelFns

PyTree = Any
Batch = dict[str, np.ndarray]

# Device-resident copies of evaluation splits at most this large are kept between evaluations.
DEVICE_CACHE_BYTES = 256 * 1024 * 1024

_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_cache_lock = threading.Lock()


def _host_batches(dataset: Any, batch_size: int, split: str, limit: int) -> Iterator[Batch]:
    """``dataset.eval_batches`` with rows at or past ``limit`` weighted 0 (``limit`` 0: none).

    In a multi-process run, only this process's rows of each batch (``sharding.data_shard``).
    """
    shard = sharding.data_shard()
    kwargs = {} if shard == (0, 1) else {"shard": shard}
    first, rows = data_lib.check_shard(shard, batch_size)
    seen = 0
    for batch in dataset.eval_batches(batch_size, split=split, **kwargs):
        if limit:
            if seen >= limit:
                break
            keep = np.arange(seen + first, seen + first + rows) < limit
            batch = dict(batch, weight=batch["weight"] * keep)
        seen += batch_size
        yield batch


def _split_bytes(dataset: Any, batch_size: int, split: str, limit: int) -> int | None:
    """Bytes of the padded evaluation batches of ``split`` (None when unknown)."""
    try:
        size = dataset.split_size(split)
        shape = tuple(dataset.input_shape)
    except Exception:  # noqa: BLE001 - a dataset without these facts is just not cached
        return None
    if limit:
        size = min(size, limit)
    rows = -(-size // batch_size) * batch_size
    # float32 image, int32 label, float32 weight per row.
    return rows * (4 * int(np.prod(shape)) + 8)


def _mesh_key(mesh: Mesh) -> tuple:
    return (tuple(d.id for d in mesh.devices.flat), tuple(mesh.axis_names), mesh.devices.shape)


def device_batches(
    dataset: Any, batch_size: int, mesh: Mesh, *, split: str = "test", limit: int = 0
) -> Iterator[dict[str, jax.Array]] | list[dict[str, jax.Array]]:
    """The evaluation batches of ``split`` placed on ``mesh`` (sharded on the batch axis).

    A list kept for later calls when the split is small enough (``DEVICE_CACHE_BYTES``),
    otherwise a prefetching iterator (close it if you stop early) of batches placed as
    ``sharding.batch_put`` says (numpy batches on CPU meshes: the jitted step places them).
    """
    nbytes = _split_bytes(dataset, batch_size, split, limit)
    per_dataset = None
    if nbytes is not None and nbytes <= DEVICE_CACHE_BYTES:
        try:
            with _cache_lock:
                per_dataset = _cache.setdefault(dataset, {})
        except TypeError:  # not weak-referenceable: no cache
            per_dataset = None
    if per_dataset is None:
        return prefetch_lib.prefetch(
            _host_batches(dataset, batch_size, split, limit), put=sharding.batch_put(mesh)
        )
    put = functools.partial(sharding.shard_batch, mesh=mesh)
    key = (batch_size, split, int(limit), _mesh_key(mesh))
    batches = per_dataset.get(key)
    if batches is None:
        batches = [put(b) for b in _host_batches(dataset, batch_size, split, limit)]
        with _cache_lock:
            per_dataset[key] = batches
    return batches


def clear_cache() -> None:
    """Drops every device-resident evaluation split."""
    with _cache_lock:
        _cache.clear()


def _means(sums: list[dict[str, Any]]) -> dict[str, float]:
    """Adds the fetched per-batch sums in float64, in order, and divides by the count."""
    loss_sum = correct = count = 0.0
    for out in sums:
        loss_sum += float(out["loss_sum"])
        correct += float(out["correct"])
        count += float(out["count"])
    if count == 0:
        raise ValueError("evaluation saw no examples (empty split or limit)")
    return {"test_loss": loss_sum / count, "test_accuracy": correct / count}


def evaluate(
    eval_step: Callable[[Any, dict[str, jax.Array]], dict[str, jax.Array]],
    state: Any,
    dataset: Any,
    batch_size: int,
    mesh: Mesh,
    limit: int = 0,
    *,
    split: str = "test",
) -> dict[str, float]:
    """Mean loss and accuracy of ``eval_step`` over ``split`` (one device-to-host transfer).

    Args:
      eval_step: jitted ``step(state, batch) -> {'loss_sum', 'correct', 'count'}`` (weighted sums,
        ``jaxprune.training.steps.eval_step_fn`` under ``sharding.jit_eval_step``).
      state: its first argument (e.g. the ``TrainState``).
      dataset: a ``jaxprune.data.Dataset``.
      batch_size: evaluation batch size (divisible by the mesh's device count).
      mesh: the data-parallel mesh the batches are sharded on.
      limit: evaluate only the first ``limit`` examples (0: the whole split).
      split: ``'test'`` or ``'train'``.

    Returns:
      ``{'test_loss': float, 'test_accuracy': float}``.
    """
    batches = device_batches(dataset, batch_size, mesh, split=split, limit=limit)
    try:
        sums = [eval_step(state, batch) for batch in batches]
    finally:
        if isinstance(batches, prefetch_lib.Prefetcher):
            batches.close()
    return _means(jax.device_get(sums))


def _takes_train(apply_fn: Callable[..., Any], variables: PyTree, image: jax.Array) -> bool:
    """Whether ``apply_fn(variables, images, train=False)`` is the way to call it."""
    module = getattr(apply_fn, "__self__", None)
    if isinstance(module, nn.Module):
        # A Linen module's bound ``apply`` takes **kwargs; the engine's rule reads ``__call__``.
        return ModelFns.of(module).takes_train
    try:
        parameters = inspect.signature(apply_fn).parameters
    except (TypeError, ValueError):
        parameters = {}
    if "train" in parameters:
        return True
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return False
    try:  # **kwargs: only a trial trace can tell
        jax.eval_shape(lambda v, x: apply_fn(v, x, train=False), variables, image)
        return True
    except TypeError:
        return False


def eval_sums_fn(
    apply_fn: Callable[..., Any], takes_train: bool
) -> Callable[[PyTree, dict[str, jax.Array]], dict[str, jax.Array]]:
    """``(variables, batch) -> {'loss_sum', 'correct', 'count'}`` for a plain ``apply_fn``."""

    def step(variables: PyTree, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        if takes_train:
            logits = apply_fn(variables, batch["image"], train=False)
        else:
            logits = apply_fn(variables, batch["image"])
        weights = batch["weight"].astype(jnp.float32)
        losses = optax.softmax_cross_entropy_with_integer_labels(
            logits.astype(jnp.float32), batch["label"]
        )
        correct = (jnp.argmax(logits, axis=-1) == batch["label"]).astype(jnp.float32)
        return {
            "loss_sum": jnp.sum(losses * weights),
            "correct": jnp.sum(correct * weights),
            "count": jnp.sum(weights),
        }

    return step


def evaluate_params(
    apply_fn: Callable[..., Any],
    variables: PyTree,
    dataset: Any,
    *,
    batch_size: int = 256,
    split: str = "test",
    limit: int = 0,
    mesh: Mesh | None = None,
) -> dict[str, float]:
    """Mean loss and accuracy of a model's ``variables`` on ``split`` of ``dataset``.

    Args:
      apply_fn: e.g. a Linen module's ``apply``; called as
        ``apply_fn(variables, images, train=False)`` when it takes ``train`` (checked on the
        module's ``__call__``, the signature, or a trial trace), else ``apply_fn(variables,
        images)``. Must return logits ``[B, num_classes]``.
      variables: its first argument, e.g. ``{'params': ..., 'batch_stats': ...}`` (masked
        params evaluate the pruned model).
      dataset: a ``jaxprune.data.Dataset``.
      batch_size: evaluation batch size (divisible by the number of devices).
      split: ``'test'`` or ``'train'``.
      limit: evaluate only the first ``limit`` examples (0: the whole split).
      mesh: data-parallel mesh (default: all devices).

    Returns:
      ``{'test_loss': float, 'test_accuracy': float}`` (the keys name the metric, whatever the
      split).
    """
    mesh = sharding.make_mesh() if mesh is None else mesh
    sharding.check_batch_size(batch_size, mesh, field="batch_size")
    image = jnp.zeros((1, *dataset.input_shape), jnp.float32)
    takes_train = _takes_train(apply_fn, variables, image)
    step = sharding.jit_eval_step(eval_sums_fn(apply_fn, takes_train), mesh)
    variables = sharding.replicate(variables, mesh)
    return evaluate(step, variables, dataset, batch_size, mesh, limit, split=split)
