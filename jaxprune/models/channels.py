"""Channel topology of the zoo for structured pruning: which leaves each prunable width touches.

:func:`channel_groups` returns one :class:`~jaxprune.pruning.structured.ChannelGroup` per entry
of the model's ``widths`` field, in that order, so ``kept_widths(groups, kept)`` can be passed
straight back as ``widths`` (:func:`narrow`, :func:`shrink_model`):

* :class:`~jaxprune.models.lenet.LeNet300`: ``Dense_0``, ``Dense_1`` (consumed by the next Dense).
* :class:`~jaxprune.models.lenet.LeNet5`: ``Conv_0`` (consumed by ``Conv_1``), ``Conv_1``
  (consumed by ``Dense_0`` through the NHWC flatten: ``repeat`` = spatial positions, 16 on MNIST),
  ``Dense_0`` (consumed by ``Dense_1``).
* :class:`~jaxprune.models.vgg.VGG`: every ``Conv_i`` with ``BatchNorm_i``; the last conv feeds
  ``Dense_0`` through the global average pool (``repeat`` 1).
* :class:`~jaxprune.models.resnet_cifar.ResNet`: the inner width of each block,
  ``BasicBlock_i/Conv_0`` with ``BasicBlock_i/BatchNorm_0``, consumed by ``BasicBlock_i/Conv_1``.
  Block outputs (stem, ``Conv_1``, shortcuts) are tied together by the residual sums and are not
  prunable here.
* :class:`~jaxprune.models.resnet_imagenet.ResNetImageNet`: the same for basic blocks
  (ResNet-18/34); a bottleneck has two groups, ``Conv_0`` (1x1, consumed by the 3x3 ``Conv_1``)
  and ``Conv_1`` (consumed by the 1x1 ``Conv_2``). Block outputs stay.
* :class:`~jaxprune.models.mobilenet.MobileNetV1`: the stem ``Conv_0`` and every block's
  ``pointwise`` output; a channel removed there also removes the next block's depthwise filter
  and its BatchNorm entry (one filter per channel), and its row of the next ``pointwise`` kernel
  (of ``Dense_0`` after the last block).

Sizes and ``repeat`` come from the actual leaf shapes in ``variables`` (consumer rows / group size),
so any input resolution and ``width`` work. Models built with ``linear=True`` have no BatchNorm:
their groups have only the conv producers and ``bn_scale=None``. BatchNorm ``batch_stats`` paths
are listed whenever the model has BatchNorm parameters, even if ``variables`` has no
``batch_stats`` (``shrink`` then skips them).

:class:`~jaxprune.models.wrn.WideResNet`: the inner width of each pre-activation block,
``WideBasicBlock_i/Conv_0`` with ``WideBasicBlock_i/BatchNorm_1``, consumed by its ``Conv_1``.
:class:`~jaxprune.models.fastgrnn.FastGRNN`: one group, the hidden units (``W``/``W2`` and
``U``/``U2`` columns and both biases; read by the ``U``/``U1`` rows and the classifier). Any
other model class (user models) raises ``NotImplementedError``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn

from jaxprune.models import mobilenet, resnet_cifar, resnet_imagenet, wrn
from jaxprune.models.fastgrnn import FastGRNN
from jaxprune.models.lenet import LeNet5, LeNet300
from jaxprune.models.mobilenet import MobileNetV1
from jaxprune.models.resnet_cifar import ResNet
from jaxprune.models.resnet_imagenet import ResNetImageNet
from jaxprune.models.vgg import VGG, conv_widths
from jaxprune.models.wrn import WideResNet
from jaxprune.pruning import structured
from jaxprune.pruning.structured import ChannelGroup

_SUPPORTED = "LeNet300, LeNet5, VGG, ResNet, ResNetImageNet, MobileNetV1, WideResNet, FastGRNN"


def _leaf(variables: Mapping[str, Any], path: str) -> Any:
    missing = f"variables has no {path!r}; are they the variables of this model?"
    return structured.leaf_at(variables, path, missing)


def _has(variables: Mapping[str, Any], path: str) -> bool:
    try:
        _leaf(variables, path)
    except ValueError:
        return False
    return True


def _group(
    variables: Mapping[str, Any],
    layer: str,
    consumers: Sequence[tuple[str, int]],
    norm: str | None = None,
    channelwise: Sequence[tuple[str, str]] = (),
) -> ChannelGroup:
    """Builds the group of ``layer`` (a Conv/Dense scope) optionally followed by BatchNorm ``norm``.

    Args:
      variables: the model's variables (shapes are read from them).
      layer: scope of the producing Conv/Dense, e.g. ``'BasicBlock_2/Conv_0'``.
      consumers: ``(kernel path without 'params/', input axis)`` of the consuming layers.
      norm: scope of the BatchNorm after ``layer``, if the model has one there.
      channelwise: ``(depthwise conv, its BatchNorm)`` scopes between ``layer`` and the
        consumers that keep one filter per channel (MobileNet): sliced like ``layer``'s outputs.
    """
    kernel = f"params/{layer}/kernel"
    size = int(_leaf(variables, kernel).shape[-1])
    producers = [(kernel, _leaf(variables, kernel).ndim - 1)]
    if _has(variables, f"params/{layer}/bias"):
        producers.append((f"params/{layer}/bias", 0))
    bn_scale = None
    if norm is not None and _has(variables, f"params/{norm}/scale"):
        bn_scale = f"params/{norm}/scale"
        producers += [(bn_scale, 0), (f"params/{norm}/bias", 0)]
        producers += [(f"batch_stats/{norm}/mean", 0), (f"batch_stats/{norm}/var", 0)]
    for conv, conv_norm in channelwise:
        producers.append((f"params/{conv}/kernel", 3))
        if _has(variables, f"params/{conv_norm}/scale"):
            producers += [(f"params/{conv_norm}/scale", 0), (f"params/{conv_norm}/bias", 0)]
            producers += [
                (f"batch_stats/{conv_norm}/mean", 0),
                (f"batch_stats/{conv_norm}/var", 0),
            ]
    consumer_entries = []
    for path, axis in consumers:
        rows = int(_leaf(variables, f"params/{path}").shape[axis])
        if rows % size:
            raise ValueError(
                f"consumer params/{path} has {rows} input rows on axis {axis}, not a multiple of "
                f"the {size} channels of {layer}"
            )
        consumer_entries.append((f"params/{path}", axis, rows // size))
    return ChannelGroup(
        name=layer,
        size=size,
        producers=tuple(producers),
        consumers=tuple(consumer_entries),
        kernel=kernel,
        bn_scale=bn_scale,
    )


def channel_groups(model: nn.Module, variables: Mapping[str, Any]) -> list[ChannelGroup]:
    """Returns the prunable channel groups of a zoo model, in the order of its ``widths`` field.

    Args:
      model: a ``LeNet300``, ``LeNet5``, ``VGG`` or ``ResNet`` (e.g. from ``get_model``).
      variables: its Flax variables ``{'params': ..., 'batch_stats': ...}`` (from ``model.init``
        or training); ``batch_stats`` may be absent.

    Returns:
      One ``ChannelGroup`` per ``widths`` entry.

    Raises:
      NotImplementedError: for any other model class (named in the message).
      ValueError: if ``variables`` has no ``'params'`` or lacks a layer of the model.
    """
    if not isinstance(variables, Mapping) or "params" not in variables:
        keys = list(variables) if isinstance(variables, Mapping) else type(variables).__name__
        raise ValueError(
            f"variables must be the Flax variables dict {{'params': ...}}, got keys {keys}"
        )
    if isinstance(model, LeNet300):
        return [
            _group(variables, "Dense_0", [("Dense_1/kernel", 0)]),
            _group(variables, "Dense_1", [("Dense_2/kernel", 0)]),
        ]
    if isinstance(model, LeNet5):
        return [
            _group(variables, "Conv_0", [("Conv_1/kernel", 2)]),
            _group(variables, "Conv_1", [("Dense_0/kernel", 0)]),
            _group(variables, "Dense_0", [("Dense_1/kernel", 0)]),
        ]
    if isinstance(model, VGG):
        n = len(conv_widths(model.cfg))
        return [
            _group(
                variables,
                f"Conv_{i}",
                [(f"Conv_{i + 1}/kernel", 2) if i + 1 < n else ("Dense_0/kernel", 0)],
                norm=f"BatchNorm_{i}",
            )
            for i in range(n)
        ]
    if isinstance(model, ResNetImageNet):
        kind, blocks = resnet_imagenet.CONFIGS[model.depth]
        groups = []
        for i in range(sum(blocks)):
            if kind == "basic":
                block = f"BasicBlock_{i}"
                groups.append(
                    _group(
                        variables,
                        f"{block}/Conv_0",
                        [(f"{block}/Conv_1/kernel", 2)],
                        norm=f"{block}/BatchNorm_0",
                    )
                )
            else:
                block = f"Bottleneck_{i}"
                for j in (0, 1):
                    groups.append(
                        _group(
                            variables,
                            f"{block}/Conv_{j}",
                            [(f"{block}/Conv_{j + 1}/kernel", 2)],
                            norm=f"{block}/BatchNorm_{j}",
                        )
                    )
        return groups
    if isinstance(model, MobileNetV1):
        n = len(mobilenet.BLOCKS)
        layers = ["Conv_0"] + [f"DepthwiseSeparable_{i}/pointwise" for i in range(n)]
        norms = ["BatchNorm_0"] + [f"DepthwiseSeparable_{i}/pointwise_norm" for i in range(n)]
        groups = []
        for i, (layer, norm) in enumerate(zip(layers, norms, strict=True)):
            if i < n:  # feeds block i: its depthwise filters, then its pointwise rows
                block = f"DepthwiseSeparable_{i}"
                channelwise = [(f"{block}/depthwise", f"{block}/depthwise_norm")]
                consumers = [(f"{block}/pointwise/kernel", 2)]
            else:  # the last block feeds the classifier through the global average pool
                channelwise, consumers = [], [("Dense_0/kernel", 0)]
            groups.append(_group(variables, layer, consumers, norm, channelwise))
        return groups
    if isinstance(model, FastGRNN):
        # A hidden unit: its W and U columns and biases make it; its U row and classifier row
        # read it. Pruned (all zero), it stays 0 from h_0 = 0 on, so removing it is exact.
        w = "W2" if model.w_rank is not None else "W"
        u_in, u_out = ("U1", "U2") if model.u_rank is not None else ("U", "U")
        kernel = f"params/{w}/kernel"
        size = int(_leaf(variables, kernel).shape[-1])
        producers = (
            (kernel, 1),
            (f"params/{u_out}/kernel", 1),
            ("params/bias_gate", 0),
            ("params/bias_update", 0),
        )
        consumers = ((f"params/{u_in}/kernel", 0, 1), ("params/Dense_0/kernel", 0, 1))
        return [ChannelGroup("hidden", size, producers, consumers, kernel, None)]
    if isinstance(model, WideResNet):
        n = 3 * wrn.blocks_per_stage(model.depth)
        return [
            _group(
                variables,
                f"WideBasicBlock_{i}/Conv_0",
                [(f"WideBasicBlock_{i}/Conv_1/kernel", 2)],
                norm=f"WideBasicBlock_{i}/BatchNorm_1",  # BatchNorm_0 is the pre-activation
            )
            for i in range(n)
        ]
    if isinstance(model, ResNet):
        n = 3 * resnet_cifar.blocks_per_stage(model.depth)
        return [
            _group(
                variables,
                f"BasicBlock_{i}/Conv_0",
                [(f"BasicBlock_{i}/Conv_1/kernel", 2)],
                norm=f"BasicBlock_{i}/BatchNorm_0",
            )
            for i in range(n)
        ]
    raise NotImplementedError(
        f"structured pruning topology is not defined for {type(model).__name__}; "
        f"supported: {_SUPPORTED}"
    )


def narrow(model: nn.Module, widths: Sequence[int]) -> nn.Module:
    """Returns ``model`` with explicit ``widths`` (other fields such as ``width`` kept).

    For ``ResNet``, ``width`` still scales the stem and stage (block output) widths; ``widths``
    sets the inner width of each block.

    Raises:
      NotImplementedError: if the model class is not supported (see :func:`channel_groups`).
      ValueError: if ``widths`` has non-positive entries (the length is checked at ``init``).
    """
    if not isinstance(
        model,
        LeNet300 | LeNet5 | VGG | ResNet | ResNetImageNet | MobileNetV1 | WideResNet | FastGRNN,
    ):
        raise NotImplementedError(
            f"narrow is not defined for {type(model).__name__}; supported: {_SUPPORTED}"
        )
    widths = tuple(int(w) for w in widths)
    if any(w < 1 for w in widths):
        raise ValueError(f"widths entries must be >= 1, got {widths}")
    return model.clone(widths=widths)


def shrink_model(
    model: nn.Module, variables: Mapping[str, Any], kept: Mapping[str, Any]
) -> tuple[nn.Module, dict[str, Any]]:
    """Returns ``(narrow_model, narrow_variables)`` keeping the channels ``kept`` of each group.

    Args:
      model: a supported zoo model.
      variables: its Flax variables.
      kept: ``{group name: kept indices}`` for every group of :func:`channel_groups`.

    Raises:
      ValueError: for invalid ``kept`` (see ``jaxprune.pruning.structured.shrink``).
    """
    groups = channel_groups(model, variables)
    narrow_variables = structured.shrink(variables, groups, kept)
    return narrow(model, structured.kept_widths(groups, kept)), narrow_variables
