"""Structured (filter / channel) pruning that really shrinks a model.

Unstructured masks leave the dense shapes in place; structured pruning removes whole output
channels (conv filters, dense units) so that the pruned network is a narrower dense network
(Li et al. 2017 "Pruning Filters for Efficient ConvNets"; Liu et al. 2017 "Learning Efficient
Convolutional Networks through Network Slimming"; Liu et al. 2019 "Rethinking the Value of Network
Pruning"). This module is model-agnostic: the topology comes in as a list of :class:`ChannelGroup`
(``jaxprune.models.channels.channel_groups`` builds it for the zoo), and everything here works on
the Flax ``variables`` dict ``{'params': ..., 'batch_stats': ...}`` addressed by '/'-joined paths
(``'params/Conv_3/kernel'``, ``'batch_stats/BatchNorm_3/mean'``).

Pipeline::

    groups = channels.channel_groups(model, variables)
    ratios = layer_ratios(groups, 0.5, overrides=[("Conv_0$", 0.0)])
    kept = select_top(filter_l1_norms(variables, groups), ratios)   # Li et al.
    # or: kept, t = slimming_select(variables, groups, 0.7)          # network slimming
    masked = params * channel_masks(variables, groups, kept)         # same function, wide shapes
    narrow_vars = shrink(variables, groups, kept)                    # same function, narrow shapes

Decisions:

* **Counts** (:func:`n_kept`). A group of ``n`` channels at ratio ``r`` keeps, with
  ``rounding="round"`` (the default of :func:`select_top`), ``max(1, n - round(r * n))`` (the
  pruned count rounded half up); with ``rounding="floor"``, ``max(1, floor((1 - r) * n))``, the
  ``int(n * (1 - r))`` of Li et al.'s released code. Li et al.'s ResNet-56-A/B widths (28 of 32 and
  57 of 64 filters at r = 0.1, not 29 and 58) and their published FLOPs (1.12e8, 9.09e7) need
  ``"floor"``; the run config's ``structured.rounding`` (default ``"floor"``) picks it for
  ``l1_filter``. Both are computed exactly from the decimal ``repr(r)`` (float arithmetic can
  lose a channel: ``int(10 * (1 - 0.9)) == 0``). Ratios are allowed in ``[0, 1]``: ratio 1 is
  accepted and keeps a single channel, because a layer with zero channels disconnects the
  network (every layer always keeps at least one channel).
* **Ties** in :func:`select_top` go to the lower channel index (stable descending sort).
* **Network slimming** (:func:`slimming_select`) uses one global threshold ``t`` on ``|gamma|``
  over all groups: ``t`` is the ``round(ratio * N)``-th smallest ``|gamma|`` (``-inf`` when nothing
  is pruned) and exactly the channels with ``|gamma| > t`` survive, so gammas tied with ``t`` are
  all pruned (more than ``round(ratio * N)`` channels can go when there are ties). A group left
  empty is *rescued*: it keeps its single largest-``|gamma|`` channel (lower index on ties).
* **Masks** (:func:`channel_masks`) are bool trees shaped like ``variables['params']``, False on
  the producer slices of dropped channels (kernel output slices, conv/dense bias, BatchNorm scale
  and bias). Consumer slices stay True: they only ever see a zero input. With the mask applied a
  dropped channel outputs exactly 0 after BatchNorm in eval mode (``0 * ... + 0``) and in train
  mode, so the masked wide model computes the same function as the shrunk narrow one.
* **Shrinking** (:func:`shrink`) slices every producer leaf on its axis and every consumer leaf on
  its input axis. A flatten between producer and consumer is described by ``repeat`` (NHWC
  flatten: the consumer row of channel ``c`` at spatial position ``p`` is ``p * size + c``).
  Slices are applied one after another, so one leaf can be a producer of one group and a consumer
  of another (VGG ``Conv_1/kernel``), or a consumer of several groups on different axes; two
  groups slicing the same axis of the same leaf is an error. Leaves whose *collection* is absent
  from ``variables`` (e.g. ``batch_stats`` when only ``{'params': ...}`` is passed) are skipped; a
  missing path inside a present collection is an error. The result is a plain nested dict of
  numpy arrays.
* Kept indices are validated (every group present, no unknown group, 1-D integer, in range, no
  duplicates, not empty) and sorted before use; all shape checks run before anything is sliced.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

import jax
import numpy as np

from jaxprune.pruning.tree import PyTree, path_name

__all__ = [
    "ChannelGroup",
    "channel_masks",
    "filter_l1_norms",
    "kept_widths",
    "layer_ratios",
    "n_kept",
    "select_top",
    "shrink",
    "slimming_select",
]


@dataclasses.dataclass(frozen=True)
class ChannelGroup:
    """A set of output channels that is pruned together, and the leaves it touches.

    Attributes:
      name: the producing layer, e.g. ``'Conv_3'``, ``'BasicBlock_4/Conv_0'``, ``'Dense_0'``.
      size: number of channels (output units) in the group.
      producers: ``(path, axis)`` pairs sliced on the output-channel axis, e.g.
        ``('params/Conv_3/kernel', 3)``, ``('params/BatchNorm_3/scale', 0)``,
        ``('batch_stats/BatchNorm_3/mean', 0)``.
      consumers: ``(path, axis, repeat)`` triples, the input-channel axis of the next layer(s);
        ``repeat > 1`` when a flatten sits in between: the consumer index of channel ``c`` at
        spatial position ``p`` is ``p * size + c`` and ``repeat`` is the number of positions.
      kernel: path of the kernel whose output slices score the filters (L1 norm).
      bn_scale: path of the BatchNorm scale (gamma) used by network slimming, or None.
    """

    name: str
    size: int
    producers: tuple[tuple[str, int], ...]
    consumers: tuple[tuple[str, int, int], ...]
    kernel: str
    bn_scale: str | None = None

    def __post_init__(self):
        if not isinstance(self.size, int | np.integer) or self.size < 1:
            raise ValueError(
                f"ChannelGroup {self.name!r}: size must be an int >= 1, got {self.size!r}"
            )
        producers = tuple((str(p), int(a)) for p, a in self.producers)
        consumers = tuple((str(p), int(a), int(r)) for p, a, r in self.consumers)
        for path, _, repeat in consumers:
            if repeat < 1:
                raise ValueError(
                    f"ChannelGroup {self.name!r}: consumer {path!r} repeat must be >= 1, "
                    f"got {repeat}"
                )
        object.__setattr__(self, "size", int(self.size))
        object.__setattr__(self, "producers", producers)
        object.__setattr__(self, "consumers", consumers)


# --------------------------------------------------------------------------- helpers


def leaf_at(variables: Mapping[str, Any], path: str, missing: str | None = None) -> Any:
    """The leaf of ``variables`` at the '/'-joined ``path`` (``'params/Conv_3/kernel'``).

    Raises:
      ValueError: with the message ``missing`` (or one naming ``path``) if it is absent.
    """
    node: Any = variables
    for key in path.split("/"):
        if not isinstance(node, Mapping) or key not in node:
            raise ValueError(missing or f"path {path!r} not found in variables")
        node = node[key]
    return node


def _get(variables: Mapping[str, Any], path: str, group: str) -> Any:
    return leaf_at(variables, path, f"group {group!r}: path {path!r} not found in variables")


def _collection_present(variables: Mapping[str, Any], path: str) -> bool:
    collection = path.split("/", 1)[0]
    return collection in variables and bool(variables[collection])


def _n_prune(ratio: float, n: int) -> int:
    """``round(ratio * n)`` with halves rounded up, exact for the decimal ``repr(ratio)``."""
    return math.floor(Fraction(repr(float(ratio))) * n + Fraction(1, 2))


ROUNDINGS = ("round", "floor")


def n_kept(ratio: float, n: int, rounding: str = "round") -> int:
    """Channels a group of ``n`` keeps at pruning ratio ``ratio`` (see the module docstring).

    ``"round"``: ``max(1, n - round(ratio * n))``, halves rounded up. ``"floor"``:
    ``max(1, floor((1 - ratio) * n))``, Li et al.'s ``int(n * (1 - ratio))``. Both exact for the
    decimal ``repr(ratio)``. E.g. ``n_kept(0.1, 32) == 29`` but ``n_kept(0.1, 32, "floor") == 28``.

    Raises:
      ValueError: for an unknown ``rounding``.
    """
    if rounding == "round":
        return max(1, n - _n_prune(ratio, n))
    if rounding == "floor":
        return max(1, math.floor((1 - Fraction(repr(float(ratio)))) * n))
    raise ValueError(f"rounding must be one of {list(ROUNDINGS)}, got {rounding!r}")


def _check_ratio(ratio: Any, what: str) -> float:
    try:
        value = float(ratio)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number in [0, 1], got {ratio!r}") from None
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{what} must be in [0, 1] (1 keeps a single channel), got {ratio!r}")
    return value


def _check_groups(groups: Sequence[ChannelGroup]) -> list[ChannelGroup]:
    groups = list(groups)
    names = [g.name for g in groups]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"channel group names must be unique, duplicated: {duplicates}")
    return groups


def _check_kept(groups: Sequence[ChannelGroup], kept: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Validates ``kept`` against ``groups``; returns sorted int64 index arrays by group name."""
    groups = _check_groups(groups)
    names = {g.name for g in groups}
    unknown = sorted(set(kept) - names)
    if unknown:
        raise ValueError(f"kept has unknown channel groups {unknown}; groups are {sorted(names)}")
    result = {}
    for group in groups:
        if group.name not in kept:
            raise ValueError(f"kept is missing channel group {group.name!r}")
        idx = np.asarray(kept[group.name])
        if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
            raise ValueError(
                f"kept[{group.name!r}] must be a 1-D integer index array, got dtype {idx.dtype} "
                f"shape {idx.shape}"
            )
        idx = idx.astype(np.int64)
        if idx.size == 0:
            raise ValueError(f"kept[{group.name!r}] is empty; every group must keep >= 1 channel")
        if idx.min() < 0 or idx.max() >= group.size:
            raise ValueError(
                f"kept[{group.name!r}] has indices out of range [0, {group.size}): "
                f"{idx[(idx < 0) | (idx >= group.size)].tolist()}"
            )
        if np.unique(idx).size != idx.size:
            raise ValueError(f"kept[{group.name!r}] has duplicate indices: {idx.tolist()}")
        result[group.name] = np.sort(idx)
    return result


def _slices(
    variables: Mapping[str, Any],
    groups: Sequence[ChannelGroup],
    kept: dict[str, np.ndarray],
    consumers: bool,
) -> list[tuple[str, int, np.ndarray, str]]:
    """Returns ``(path, axis, indices, group)`` for every slice, after checking every shape."""
    slices = []
    seen: dict[tuple[str, int], str] = {}
    for group in groups:
        entries = [(p, a, 1, "producer") for p, a in group.producers]
        if consumers:
            entries += [(p, a, r, "consumer") for p, a, r in group.consumers]
        for path, axis, repeat, role in entries:
            if not _collection_present(variables, path):
                continue
            leaf = _get(variables, path, group.name)
            shape = np.shape(leaf)
            if not -len(shape) <= axis < len(shape):
                raise ValueError(
                    f"group {group.name!r}: {role} {path!r} has shape {shape}, no axis {axis}"
                )
            axis %= len(shape)
            expected = group.size * repeat
            if shape[axis] != expected:
                raise ValueError(
                    f"group {group.name!r}: {role} {path!r} has shape {shape}, expected "
                    f"{expected} on axis {axis} (size {group.size} x repeat {repeat})"
                )
            if (path, axis) in seen:
                raise ValueError(
                    f"leaf {path!r} axis {axis} is sliced by two channel groups: "
                    f"{seen[(path, axis)]!r} and {group.name!r}"
                )
            seen[(path, axis)] = group.name
            idx = kept[group.name]
            if repeat > 1:
                idx = (np.arange(repeat)[:, None] * group.size + idx[None, :]).ravel()
            slices.append((path, axis, idx, group.name))
    return slices


def _to_numpy_dict(tree: Any) -> Any:
    if isinstance(tree, Mapping):
        return {key: _to_numpy_dict(value) for key, value in tree.items()}
    return np.asarray(tree)


# --------------------------------------------------------------------------- scores and selection


def filter_l1_norms(
    variables: Mapping[str, Any], groups: Sequence[ChannelGroup]
) -> dict[str, np.ndarray]:
    """Li et al. filter scores: the L1 norm of each output slice of every group's ``kernel``.

    The output axis is the kernel's producer axis when the kernel is listed in ``producers``,
    else the last axis (Conv/Dense kernels). Sums run in float64.

    Args:
      variables: Flax variables ``{'params': ...}``.
      groups: the channel groups.

    Returns:
      ``{group name: float64 array of shape (size,)}``.

    Raises:
      ValueError: if a kernel path is missing or its output axis does not have ``size`` entries.
    """
    norms = {}
    for group in _check_groups(groups):
        kernel = np.asarray(_get(variables, group.kernel, group.name), dtype=np.float64)
        axis = dict(group.producers).get(group.kernel, -1) % max(kernel.ndim, 1)
        if kernel.ndim == 0 or kernel.shape[axis] != group.size:
            raise ValueError(
                f"group {group.name!r}: kernel {group.kernel!r} has shape {kernel.shape}, "
                f"expected {group.size} output channels on axis {axis}"
            )
        other = tuple(a for a in range(kernel.ndim) if a != axis)
        norms[group.name] = np.abs(kernel).sum(axis=other)
    return norms


def select_top(
    scores: Mapping[str, Any], ratios: Mapping[str, float], rounding: str = "round"
) -> dict[str, np.ndarray]:
    """Keeps the highest-scoring channels of every group.

    Group ``g`` with ``n`` channels keeps the ``n_kept(ratios[g], n, rounding)`` highest scores:
    ``max(1, n - round(ratios[g] * n))`` (half up) by default, ``max(1, floor((1 - r) * n))`` with
    ``rounding="floor"`` (Li et al.); ties go to the lower index. Groups missing from ``ratios``
    keep everything.

    Example::

        select_top({"a": [3.0, 1.0, 3.0, 2.0]}, {"a": 0.5})  # {"a": array([0, 2])}

    Args:
      scores: ``{group name: 1-D scores}``.
      ratios: ``{group name: pruned fraction in [0, 1]}``; ratio 1 keeps one channel.
      rounding: ``"round"`` or ``"floor"`` (see :func:`n_kept`).

    Returns:
      ``{group name: sorted int64 array of kept indices}``.

    Raises:
      ValueError: for a ratio outside ``[0, 1]`` or NaN, a ratio for an unknown group, scores
        that are not 1-D, are empty or contain NaN (each message names the group), or an unknown
        ``rounding``.
    """
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {list(ROUNDINGS)}, got {rounding!r}")
    unknown = sorted(set(ratios) - set(scores))
    if unknown:
        raise ValueError(f"ratios name groups without scores: {unknown}; groups: {sorted(scores)}")
    kept = {}
    for name, score in scores.items():
        score = np.asarray(score, dtype=np.float64)
        if score.ndim != 1 or score.size == 0:
            raise ValueError(f"scores[{name!r}] must be a non-empty 1-D array, got {score.shape}")
        if np.isnan(score).any():
            raise ValueError(f"scores[{name!r}] contains NaN")
        ratio = _check_ratio(ratios.get(name, 0.0), f"ratio for group {name!r}")
        n_keep = n_kept(ratio, score.size, rounding)
        order = np.argsort(-score, kind="stable")
        kept[name] = np.sort(order[:n_keep]).astype(np.int64)
    return kept


def layer_ratios(
    groups: Sequence[ChannelGroup | str],
    default: float,
    overrides: Sequence[tuple[str, float]] | Mapping[str, float] = (),
    skip: Sequence[str] | str = (),
) -> dict[str, float]:
    """Per-group pruning ratios from a default, regex overrides and regex skips.

    For each group name: 0 if any ``skip`` regex ``re.search``-es it; else the ratio of the first
    ``overrides`` regex that matches; else ``default``. E.g. Li et al.'s VGG-16-A (50% of
    ``Conv_0`` and ``Conv_7..Conv_12``, the rest untouched)::

        layer_ratios(groups, 0.0, overrides=[(r"^Conv_(0|7|8|9|10|11|12)$", 0.5)])

    Args:
      groups: channel groups (or their names).
      default: ratio for groups matched by nothing, in ``[0, 1]``.
      overrides: ``(regex, ratio)`` pairs in priority order (a mapping is taken in its order).
      skip: regexes of groups that are not pruned (ratio 0).

    Returns:
      ``{group name: ratio}`` for every group, in group order.

    Raises:
      ValueError: for an invalid regex or a ratio outside ``[0, 1]`` (naming it).
    """
    names = [g if isinstance(g, str) else g.name for g in groups]
    default = _check_ratio(default, "default ratio")
    if isinstance(overrides, Mapping):
        overrides = list(overrides.items())
    if isinstance(skip, str):
        skip = [skip]

    def compile_(pattern: Any, what: str) -> re.Pattern:
        if not isinstance(pattern, str):
            raise ValueError(f"{what} must be a regex string, got {pattern!r}")
        try:
            return re.compile(pattern)
        except re.error as error:
            raise ValueError(f"{what} {pattern!r} is not a valid regex: {error}") from None

    compiled = []
    for entry in overrides:
        if isinstance(entry, str) or len(entry) != 2:
            raise ValueError(f"overrides entries must be (regex, ratio) pairs, got {entry!r}")
        pattern, ratio = entry
        compiled.append(
            (
                compile_(pattern, "override regex"),
                _check_ratio(ratio, f"override ratio for {pattern!r}"),
            )
        )
    skips = [compile_(pattern, "skip regex") for pattern in skip]
    ratios = {}
    for name in names:
        if any(p.search(name) for p in skips):
            ratios[name] = 0.0
            continue
        ratios[name] = next((r for p, r in compiled if p.search(name)), default)
    return ratios


def slimming_select(
    variables: Mapping[str, Any], groups: Sequence[ChannelGroup], ratio: float
) -> tuple[dict[str, np.ndarray], float]:
    """Network slimming (Liu et al. 2017): one global threshold on BatchNorm ``|gamma|``.

    With ``N`` channels over all groups, ``n_prune = round(ratio * N)`` (half up). The threshold
    ``t`` is the ``n_prune``-th smallest ``|gamma|`` (``-inf`` when ``n_prune == 0``) and exactly
    the channels with ``|gamma| > t`` are kept, so channels tied with ``t`` are all pruned. Then
    every group that would keep nothing keeps its single largest-``|gamma|`` channel (lower index on
    ties): a layer is never emptied, so the total kept can exceed ``N - n_prune``.

    Args:
      variables: Flax variables ``{'params': ...}`` holding the BatchNorm scales.
      groups: channel groups; each must have a ``bn_scale``.
      ratio: global pruned fraction of channels, in ``[0, 1]``.

    Returns:
      ``(kept, t)``: ``{group name: sorted int64 kept indices}`` and the threshold.

    Raises:
      ValueError: for groups without ``bn_scale`` (all named), a bad ratio, a scale whose shape is
        not ``(size,)``, or NaN scales.
    """
    groups = _check_groups(groups)
    ratio = _check_ratio(ratio, "slimming ratio")
    missing = [g.name for g in groups if g.bn_scale is None]
    if missing:
        raise ValueError(f"network slimming needs a BatchNorm scale; groups without: {missing}")
    gammas = {}
    for group in groups:
        gamma = np.abs(np.asarray(_get(variables, group.bn_scale, group.name), dtype=np.float64))
        if gamma.shape != (group.size,):
            raise ValueError(
                f"group {group.name!r}: bn_scale {group.bn_scale!r} has shape {gamma.shape}, "
                f"expected ({group.size},)"
            )
        if np.isnan(gamma).any():
            raise ValueError(f"group {group.name!r}: bn_scale {group.bn_scale!r} contains NaN")
        gammas[group.name] = gamma
    if not groups:
        return {}, -math.inf
    everything = np.concatenate(list(gammas.values()))
    n_prune = _n_prune(ratio, everything.size)
    threshold = -math.inf if n_prune == 0 else float(np.sort(everything)[n_prune - 1])
    kept = {}
    for name, gamma in gammas.items():
        idx = np.flatnonzero(gamma > threshold)
        if idx.size == 0:
            idx = np.array([int(np.argmax(gamma))])
        kept[name] = idx.astype(np.int64)
    return kept, threshold


# --------------------------------------------------------------------------- masks and shrinking


def channel_masks(
    variables: Mapping[str, Any], groups: Sequence[ChannelGroup], kept: Mapping[str, Any]
) -> PyTree:
    """Bool mask shaped like ``variables['params']``: False on the dropped channels' producers.

    The producer slices (kernel output slices, biases, BatchNorm scale and bias) of every dropped
    channel are False, everything else True; ``apply_mask(params, mask)`` then computes the same
    function as :func:`shrink`'s narrow variables in the narrow model (the dropped channels output
    exactly zero; consumer weights only ever see that zero).

    Args:
      variables: Flax variables ``{'params': ..., ...}``.
      groups: the channel groups.
      kept: ``{group name: kept indices}`` for every group.

    Returns:
      A pytree with the structure of ``variables['params']`` and a numpy bool array per leaf.

    Raises:
      ValueError: for invalid ``kept`` or leaf shapes that do not match the groups.
    """
    kept = _check_kept(groups, kept)
    if "params" not in variables:
        raise ValueError(f"variables must have a 'params' collection, got keys {list(variables)}")
    masks: dict[str, np.ndarray] = {}
    for path, axis, idx, _ in _slices(variables, groups, kept, consumers=False):
        if not path.startswith("params/"):
            continue
        shape = np.shape(_get(variables, path, ""))
        mask = masks.get(path, np.ones(shape, bool))
        keep = np.zeros(shape[axis], bool)
        keep[idx] = True
        masks[path] = mask & np.expand_dims(keep, [a for a in range(len(shape)) if a != axis])

    def leaf_mask(path, leaf):
        name = "params/" + path_name(path)
        return masks.get(name, np.ones(np.shape(leaf), bool))

    return jax.tree_util.tree_map_with_path(leaf_mask, variables["params"])


def shrink(
    variables: Mapping[str, Any], groups: Sequence[ChannelGroup], kept: Mapping[str, Any]
) -> dict[str, Any]:
    """Returns the narrow variables: producers and consumers sliced to the kept channels.

    Every producer leaf is sliced to ``kept[g]`` on its axis; every consumer leaf on its axis to
    ``p * size + c`` for all positions ``p < repeat`` and kept ``c`` (in that order, which is the
    NHWC flatten of the narrow layer). Other leaves are copied unchanged. Works on numpy and jax
    arrays.

    Args:
      variables: Flax variables ``{'params': ..., 'batch_stats': ...}`` (``batch_stats`` optional).
      groups: the channel groups.
      kept: ``{group name: kept indices}`` for every group.

    Returns:
      A nested dict with the structure of ``variables`` holding numpy arrays.

    Raises:
      ValueError: for invalid ``kept``, a missing path, or leaf shapes that do not match the
        groups (all checked before anything is sliced).
    """
    kept = _check_kept(groups, kept)
    slices = _slices(variables, groups, kept, consumers=True)
    result = _to_numpy_dict(variables)
    for path, axis, idx, _ in slices:
        *parents, last = path.split("/")
        node = result
        for key in parents:
            node = node[key]
        node[last] = np.take(node[last], idx, axis=axis)
    return result


def kept_widths(groups: Sequence[ChannelGroup], kept: Mapping[str, Any]) -> tuple[int, ...]:
    """Returns the number of kept channels of each group, in group order.

    Raises:
      ValueError: for invalid ``kept`` (missing group, bad indices).
    """
    kept = _check_kept(groups, kept)
    return tuple(int(kept[g.name].size) for g in groups)
